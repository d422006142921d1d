"""Transactional notifications: one message per (event, key), sent by RQ with retry and back-off, failures
visible; the dispatch engine's assignments notified by the watermark job (the engine untouched)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, insert, select, update

from app.clock import utcnow
from app.extensions import db
from app.jobs.sms_notifications import notify_assignments_job, notify_event, reconcile_notifications_job
from app.jobs.worker import app_worker_class
from app.models.employee import Employee
from app.models.sales import AssignmentLog
from app.models.sms import SensitiveWord, SinkMessage, SmsChannel, SmsMessage, SmsTemplate
from app.services.dispatch import dispatch_waiting
from app.services.errors import DomainError
from app.services.sms import notification_sending, notification_triggers, notifications
from app.services.sms.notification_triggers import ASSIGNMENT_REASONS, WATERMARK_KEY
from app.services.sms.notifications import ASSIGNED, notify
from tests.conftest import login

BODY = "{name}您好，您有新的商机：{customer}，请尽快跟进"


@pytest.fixture
def channel(session):
    # The only enabled channel (the seeded demo channel is switched off): no fallback unless a test adds one.
    session.execute(update(SmsChannel).values(enabled=False))
    ch = SmsChannel(name="sink", provider="sink", signature="测试教育", priority=1)
    session.add(ch)
    session.commit()
    return ch


@pytest.fixture
def template(session, channel):
    tpl = SmsTemplate(name="assigned", kind="notification", channel_id=channel.id, body=BODY,
                      variables="name,customer", status="approved", event=ASSIGNED)
    session.add(tpl)
    session.commit()
    return tpl


def queue_of(app) -> Queue:
    return Queue("high", connection=Redis.from_url(app.config["REDIS_URL"]))


def work(app, session) -> None:
    session.commit()
    app_worker_class(app, SimpleWorker)([queue_of(app)], connection=queue_of(app).connection).work(burst=True)
    session.expire_all()


def messages(session):
    return session.scalars(select(SmsMessage).order_by(SmsMessage.id)).all()


def test_notify_is_idempotent_per_event_and_key(session, template):
    first = notify(session, ASSIGNED, 7, "13812345678", {"name": "张三", "customer": "李四"})
    session.commit()
    again = notify(session, ASSIGNED, 7, "+8613812345678", {"name": "张三", "customer": "李四"})
    other = notify(session, ASSIGNED, 8, "+8613812345678", {"name": "张三", "customer": "王五"})
    session.commit()
    assert first.created and not again.created and other.created
    assert again.message_id == first.message_id
    rows = messages(session)
    assert [(m.event_key, m.status, m.phone, m.kind) for m in rows] == [
        (f"{ASSIGNED}:7", "pending", "+8613812345678", "notification"),
        (f"{ASSIGNED}:8", "pending", "+8613812345678", "notification")]
    assert rows[0].content == "【测试教育】" + BODY.format(name="张三", customer="李四")
    assert rows[0].channel_id == template.channel_id and rows[0].template_id == template.id


def test_unknown_event_missing_template_or_variable_write_nothing(session, template):
    with pytest.raises(DomainError):
        notify(session, "birthday", 1, "+8613812345678", {})
    with pytest.raises(DomainError):
        notify(session, "order_paid", 1, "+8613812345678", {"name": "x"})  # no approved template
    with pytest.raises(DomainError) as err:
        notify(session, ASSIGNED, 1, "+8613812345678", {"name": "张三"})
    assert "customer" in err.value.message
    template.status = "pending"
    session.commit()
    with pytest.raises(DomainError):
        notify(session, ASSIGNED, 2, "+8613812345678", {"name": "张三", "customer": "李四"})
    session.rollback()
    assert messages(session) == []


def test_messages_that_must_not_go_are_recorded_cancelled_with_the_reason(session, template):
    session.add(SensitiveWord(word="发票", action="block"))
    session.commit()
    notify(session, ASSIGNED, 1, "12345", {"name": "张三", "customer": "李四"})
    notify(session, ASSIGNED, 2, "+8613812345678", {"name": "张三", "customer": "代开發 票"})
    session.commit()
    assert [(m.status, m.cancel_reason) for m in messages(session)] == [
        ("cancelled", "invalid_number"), ("cancelled", "sensitive_word")]


def test_the_job_sends_once_even_when_enqueued_twice(app, session, template):
    notified = notify_event(ASSIGNED, "x1", "+8613812345678", {"name": "张三", "customer": "李四"},
                            queue=queue_of(app))
    from app.jobs.sms_notifications import enqueue_notification

    enqueue_notification(notified.message_id, queue_of(app))  # a duplicate delivery of the job
    work(app, session)
    msg = session.get(SmsMessage, notified.message_id)
    assert (msg.status, msg.attempts, msg.error_code) == ("sent", 1, None)
    sunk = session.scalars(select(SinkMessage)).all()
    assert [(s.correlation, s.phone) for s in sunk] == [(msg.uid, "+8613812345678")]
    assert msg.provider_id == sunk[0].provider_id
    # A repeated event records and sends nothing more.
    again = notify_event(ASSIGNED, "x1", "+8613812345678", {"name": "张三", "customer": "李四"},
                         queue=queue_of(app))
    work(app, session)
    assert not again.created and session.scalar(select(func.count()).select_from(SinkMessage)) == 1


@pytest.mark.config(CRM_SMS_NOTIFY_RETRY_INTERVALS=[0, 0])
def test_retryable_failures_are_retried_then_marked_failed_and_listed(app, session, client, template,
                                                                      channel):
    channel.options = json.dumps({"timeout": True})
    session.commit()
    notified = notify_event(ASSIGNED, "t1", "+8613812345678", {"name": "张三", "customer": "李四"},
                            queue=queue_of(app))
    work(app, session)
    msg = session.get(SmsMessage, notified.message_id)
    assert (msg.status, msg.attempts, msg.error_code) == ("failed", 3, "provider_timeout")
    assert session.scalar(select(func.count()).select_from(SinkMessage)) == 0

    login(client, "admin")
    html = client.get("/failednotificationview/list/").get_data(as_text=True)
    assert "provider_timeout" in html and ASSIGNED in html
    assert "+8613812345678" not in html and "138****5678" in html  # masked


@pytest.mark.config(CRM_SMS_NOTIFY_RETRY_INTERVALS=[0, 0])
def test_a_refused_number_fails_at_once_without_retries(app, session, template, channel):
    channel.options = json.dumps({"fail_numbers": ["+8613812345678"]})
    session.commit()
    refused = notify_event(ASSIGNED, "r1", "+8613812345678", {"name": "张三", "customer": "李四"},
                           queue=queue_of(app))
    fine = notify_event(ASSIGNED, "r2", "+8613812345679", {"name": "张三", "customer": "李四"},
                        queue=queue_of(app))
    work(app, session)
    msg = session.get(SmsMessage, refused.message_id)
    assert (msg.status, msg.attempts, msg.error_code) == ("failed", 1, "SINK_REJECTED")
    assert session.get(SmsMessage, fine.message_id).status == "sent"


def test_failed_notifications_page_needs_report_permission(app, session, client, template):
    login(client, "sales11")
    resp = client.get("/failednotificationview/list/")
    assert resp.status_code == 403


def _new_assignment_logs(session, after: int):
    rows = session.execute(
        select(AssignmentLog.id, Employee.phone)
        .join(Employee, Employee.id == AssignmentLog.to_owner_id)
        .where(AssignmentLog.id > after, AssignmentLog.reason.in_(ASSIGNMENT_REASONS))).all()
    return {f"{ASSIGNED}:{r.id}": r.phone for r in rows if r.phone}


def test_dispatch_assignments_are_notified_once_from_the_watermark(app, session, template):
    redis = Redis.from_url(app.config["REDIS_URL"])
    baseline = notification_triggers.notify_assignments(session, redis=redis)
    assert baseline.created == []  # the first run starts from now: no history is notified
    start = baseline.watermark

    result = dispatch_waiting(session, max_batches=1, limit=25)  # the engine itself, as the job runs it
    session.commit()
    assert result.assigned > 0
    expected = _new_assignment_logs(session, start)
    assert expected

    queue = queue_of(app)
    queue.enqueue(notify_assignments_job)
    work(app, session)
    got = {m.event_key: m.phone for m in messages(session)}
    assert got == expected
    assert all(m.status == "sent" for m in messages(session))
    assert session.scalar(select(func.count()).select_from(SinkMessage)) == len(expected)

    # Run again, and again with the Redis watermark lost: nothing is notified twice.
    assert notification_triggers.notify_assignments(session, redis=redis).created == []
    redis.delete(WATERMARK_KEY)
    again = notification_triggers.notify_assignments(session, redis=redis)
    assert again.created == [] and again.watermark == max(int(k.rsplit(":", 1)[1]) for k in expected)
    assert session.scalar(select(func.count()).select_from(SmsMessage)) == len(expected)


def test_notify_and_receipts_on_postgresql(pg_app):
    from app.extensions import db
    from app.services.sms.providers import Receipt
    from app.services.sms.receipts import apply_receipts

    with pg_app.app_context():
        session = db.session
        ch = SmsChannel(name="sink", provider="sink", signature="测试教育", priority=1)
        session.add(ch)
        session.flush()
        session.add(SmsTemplate(name="assigned", kind="notification", channel_id=ch.id, body=BODY,
                                variables="name,customer", status="approved", event=ASSIGNED))
        session.commit()
        first = notify(session, ASSIGNED, 1, "+8613812345678", {"name": "张三", "customer": "李四"})
        again = notify(session, ASSIGNED, 1, "+8613812345678", {"name": "张三", "customer": "李四"})
        session.commit()
        assert first.created and not again.created and first.message_id == again.message_id
        status = notification_sending.send_notification(session, first.message_id)
        session.commit()
        msg = session.get(SmsMessage, first.message_id)
        assert status == "sent" and msg.provider_id
        out = apply_receipts(session, ch.id, [Receipt(msg.provider_id, "delivered"),
                                              Receipt(msg.uid, "sent")])
        session.commit()
        assert out.as_dict() == {"applied": 1, "ignored": 1, "unmatched": 0}
        session.expire_all()
        assert session.get(SmsMessage, first.message_id).status == "delivered"
        session.remove()


# --- a killed worker's "sending" notifications are reconciled -----------------------------------------
def left_sending(session, message_id: int, lease_left_s: float) -> SmsMessage:
    """What a worker killed after its claim leaves behind: "sending" under its claim, with a lease."""
    session.execute(update(SmsMessage).where(SmsMessage.id == message_id).values(
        status="sending", claim="dead" * 8, attempts=1,
        send_after=utcnow() + dt.timedelta(seconds=lease_left_s)))
    session.commit()
    return session.get(SmsMessage, message_id)


def test_notifications_left_sending_by_a_killed_worker_are_reconciled(app, session, template, channel):
    vars_ = {"name": "张三", "customer": "李四"}
    queue = queue_of(app)
    handed = notify_event(ASSIGNED, "k1", "+8613812340001", vars_, queue=queue)  # the sink got it
    lost = notify_event(ASSIGNED, "k2", "+8613812340002", vars_, queue=queue)  # died before the hand-over
    alive = notify_event(ASSIGNED, "k3", "+8613812340003", vars_, queue=queue)  # its worker still runs
    queue.empty()  # the jobs died with the worker
    msg = left_sending(session, handed.message_id, -1)
    with db.engine.begin() as conn:
        conn.execute(insert(SinkMessage).values(channel_id=channel.id, correlation=msg.uid,
                                                provider_id="sink-" + msg.uid, phone=msg.phone,
                                                content=msg.content))
    left_sending(session, lost.message_id, -1)
    left_sending(session, alive.message_id, 60)

    queue.enqueue(reconcile_notifications_job)
    work(app, session)  # the reconciler, then the re-queued send

    rows = {m.id: m for m in messages(session)}
    first = rows[handed.message_id]
    assert (first.status, first.provider_id, first.attempts) == ("sent", "sink-" + msg.uid, 1)
    assert (rows[lost.message_id].status, rows[lost.message_id].attempts) == ("sent", 2)
    assert (rows[alive.message_id].status, rows[alive.message_id].claim) == ("sending", "dead" * 8)
    sunk = session.execute(select(SinkMessage.phone, func.count()).group_by(SinkMessage.phone)).all()
    assert dict(sunk) == {"+8613812340001": 1, "+8613812340002": 1}  # none twice
    # A second run finds nothing to do; once the live lease runs out, that one is settled too.
    assert notification_sending.reconcile_notifications(session).again == []
    later = notification_sending.reconcile_notifications(session, now=utcnow() + dt.timedelta(seconds=61))
    assert later.again == [alive.message_id]


# --- fallback to the next channel ---------------------------------------------------------------------
def add_channel(session, name: str, priority: int, **kw) -> SmsChannel:
    ch = SmsChannel(name=name, provider="sink", signature="测试教育", priority=priority, **kw)
    session.add(ch)
    session.commit()
    return ch


@pytest.mark.config(CRM_SMS_NOTIFY_RETRY_INTERVALS=[0, 0])
def test_a_refused_notification_falls_back_once_per_channel(app, session, client, template, channel):
    phone = "+8613812345678"
    channel.options = json.dumps({"fail_numbers": [phone]})
    second = add_channel(session, "备用一", 5, options=json.dumps({"fail_numbers": [phone]}))
    add_channel(session, "停用", 6, enabled=False)
    third = add_channel(session, "备用二", 7)
    notified = notify_event(ASSIGNED, "f1", phone, {"name": "张三", "customer": "李四"}, queue=queue_of(app))
    work(app, session)

    msg = session.get(SmsMessage, notified.message_id)
    assert (msg.status, msg.channel_id, msg.attempts) == ("sent", third.id, 3)  # one try per channel
    sunk = session.execute(select(SinkMessage.channel_id, SinkMessage.correlation)).all()
    assert sunk == [(third.id, msg.uid)]  # the same message id, handed over once
    tried = notification_sending.channels_tried(session, msg.id)
    assert [c.id for c in tried] == [channel.id, second.id, third.id]

    # With every channel refusing, it ends failed after each was tried once, and the page says which.
    third.options = json.dumps({"fail_numbers": [phone]})
    session.commit()
    failed = notify_event(ASSIGNED, "f2", phone, {"name": "张三", "customer": "李四"}, queue=queue_of(app))
    work(app, session)
    msg = session.get(SmsMessage, failed.message_id)
    assert (msg.status, msg.error_code, msg.attempts) == ("failed", "SINK_REJECTED", 3)
    assert msg.channel_id == third.id
    login(client, "admin")
    html = client.get("/failednotificationview/list/").get_data(as_text=True)
    assert "sink → 备用一 → 备用二" in html and "Channels tried" in html
    assert "停用" not in html


@pytest.mark.config(CRM_SMS_NOTIFY_RETRY_INTERVALS=[0, 0])
def test_exhausted_retries_fall_back_to_the_next_channel(app, session, template, channel):
    channel.options = json.dumps({"timeout": True})
    backup = add_channel(session, "备用", 5)
    notified = notify_event(ASSIGNED, "t9", "+8613812345670", {"name": "张三", "customer": "李四"},
                            queue=queue_of(app))
    work(app, session)
    msg = session.get(SmsMessage, notified.message_id)
    # three timed-out tries on the first channel (the sink confirms it took none), then the backup
    assert (msg.status, msg.channel_id, msg.attempts) == ("sent", backup.id, 4)
    assert session.execute(select(SinkMessage.channel_id)).scalars().all() == [backup.id]


# --- follow-up due ------------------------------------------------------------------------------------
FOLLOW_BODY = "{name}您好，客户{customer}约定的跟进时间{due}已到，请及时跟进"


def test_follow_ups_falling_due_remind_the_owner_once(app, session, channel):
    from app.jobs.sms_notifications import notify_followups_job
    from app.models.sales import OWNED, Opportunity

    session.add(SmsTemplate(name="follow-up", kind="notification", channel_id=channel.id, body=FOLLOW_BODY,
                            variables="name,customer,due", status="approved",
                            event=notifications.FOLLOW_UP_DUE))
    from app.models.metadata import DictItem
    from app.models.sales import Customer
    from tests import factories

    session.execute(update(Opportunity).values(next_followup_at=None))
    unit = factories.org_unit(session)
    product = session.scalar(select(DictItem.id).order_by(DictItem.id).limit(1))
    owned = []
    for n in range(3):
        owner = factories.employee(session, unit)
        customer = Customer(phone=f"+86137000000{n:02d}", name=f"跟进客户{n}")
        session.add(customer)
        session.flush()
        owned.append(Opportunity(customer_id=customer.id, product_line_id=product, status=OWNED,
                                 owner_id=owner.id, org_unit_id=unit.id))
    session.add_all(owned)
    now = utcnow()
    owned[0].next_followup_at = now - dt.timedelta(minutes=2)  # fell due
    owned[1].next_followup_at = now + dt.timedelta(hours=2)  # not yet
    owned[2].next_followup_at = now - dt.timedelta(days=3)  # long overdue before the feature: not sent
    session.commit()
    redis = Redis.from_url(app.config["REDIS_URL"])

    queue_of(app).enqueue(notify_followups_job)
    work(app, session)

    rows = messages(session)
    assert [(m.event, m.phone, m.status) for m in rows] == [
        (notifications.FOLLOW_UP_DUE, owned[0].owner.phone, "sent")]  # to the salesperson, not the customer
    assert owned[0].customer.name in rows[0].content
    # Again, and with the watermark lost: nothing twice.
    assert notification_triggers.notify_followups_due(session, redis=redis).created == []
    redis.delete(notification_triggers.FOLLOWUP_WATERMARK_KEY)
    assert notification_triggers.notify_followups_due(session, redis=redis).created == []
    # The second one falls due later; the first one rescheduled and due again gets a reminder of its own.
    later = now + dt.timedelta(hours=3)
    owned[0].next_followup_at = later - dt.timedelta(minutes=1)
    session.commit()
    scan = notification_triggers.notify_followups_due(session, redis=redis, now=later)
    session.expire_all()
    assert sorted(session.get(SmsMessage, i).phone for i in scan.created) == sorted(
        [owned[0].owner.phone, owned[1].owner.phone])


# --- events from other systems: POST /api/v1/notifications/event --------------------------------------
ORDER_BODY = "{name}您好，您的订单{order}已支付{amount}元，感谢您的信任"
EVENT_URL = "/api/v1/notifications/event"


@pytest.fixture
def order_template(session, channel):
    tpl = SmsTemplate(name="order-paid", kind="notification", channel_id=channel.id, body=ORDER_BODY,
                      variables="name,order,amount", status="approved", event="order_paid")
    session.add(tpl)
    session.commit()
    return tpl


def integration_headers(app, role: str, username: str) -> dict:
    from tests import factories

    sm = app.appbuilder.sm
    user = sm.add_user(username, "Order", "System", f"{username}@example.com", sm.find_role(role),
                       factories.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, username)['key']}"}


def test_other_systems_raise_events_once_per_key(app, session, client, order_template):
    from app.models.sales import Customer

    auth = integration_headers(app, "Notification Integration", "order-system")
    body = {"event": "order_paid", "key": "SO-1001", "phone": "138 1234 5600",
            "variables": {"name": "王女士", "order": "SO-1001", "amount": 199}}
    first = client.post(EVENT_URL, json=body, headers=auth)
    again = client.post(EVENT_URL, json=body, headers=auth)
    assert first.status_code == 201 and again.status_code == 200, first.get_json()
    assert first.get_json()["id"] == again.get_json()["id"] and again.get_json()["created"] is False
    assert "13812345600" not in first.get_data(as_text=True)  # the phone is not echoed
    customer = session.scalars(select(Customer).order_by(Customer.id)).first()
    by_customer = client.post(EVENT_URL, headers=auth, json={
        "event": "order_paid", "key": 1002, "customer_id": customer.id, "variables": {"order": "1002",
                                                                                     "amount": "5"}})
    assert by_customer.status_code == 201, by_customer.get_json()
    work(app, session)
    rows = messages(session)
    assert [(m.event_key, m.phone, m.status) for m in rows] == [
        ("order_paid:SO-1001", "+8613812345600", "sent"), ("order_paid:1002", customer.phone, "sent")]
    assert rows[0].content == "【测试教育】" + ORDER_BODY.format(name="王女士", order="SO-1001", amount=199)
    assert (customer.name or "") in rows[1].content
    assert session.scalar(select(func.count()).select_from(SinkMessage)) == 2


def test_bad_events_answer_400_with_field_errors(app, session, client, order_template):
    auth = integration_headers(app, "Notification Integration", "order-system2")
    cases = [
        ({"event": "opportunity_assigned", "key": "1", "phone": "13812345600", "variables": {}}, "event"),
        ({"event": "order_paid", "phone": "13812345600", "variables": {"order": "1", "amount": "2"}}, "key"),
        ({"event": "order_paid", "key": "1", "phone": "12345", "variables": {"order": "1", "amount": "2"}},
         "phone"),
        ({"event": "order_paid", "key": "1", "variables": {"order": "1", "amount": "2"}}, "phone"),
        ({"event": "order_paid", "key": "1", "customer_id": 10 ** 9,
          "variables": {"order": "1", "amount": "2"}}, "customer_id"),
        ({"event": "order_paid", "key": "1", "phone": "13812345600", "variables": ["x"]}, "variables"),
        ({"event": "order_paid", "key": "1", "phone": "13812345600", "variables": {"order": "1"}},
         "variables"),
    ]
    for body, field_name in cases:
        resp = client.post(EVENT_URL, json=body, headers=auth)
        assert resp.status_code == 400, (body, resp.get_json())
        assert field_name in resp.get_json()["errors"], (body, resp.get_json())
    resp = client.post(EVENT_URL, data="not json", headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "body" in resp.get_json()["errors"]
    # No approved template for the event: 422 with the reason.
    resp = client.post(EVENT_URL, headers=auth, json={"event": "class_reminder", "key": "c1",
                                                      "phone": "13812345600",
                                                      "variables": {"course": "Python", "start": "19:00"}})
    assert resp.status_code == 422 and resp.get_json()["field"] == "event"
    assert session.scalar(select(func.count()).select_from(SmsMessage)) == 0


def test_the_event_endpoint_needs_its_permission(app, session, client, order_template):
    body = {"event": "order_paid", "key": "x", "phone": "13812345600",
            "variables": {"order": "1", "amount": "2"}}
    assert client.post(EVENT_URL, json=body).status_code == 401
    lead_system = integration_headers(app, "Lead Integration", "lead-system")
    assert client.post(EVENT_URL, json=body, headers=lead_system).status_code == 403
    assert session.scalar(select(func.count()).select_from(SmsMessage)) == 0


def test_two_reconcilers_settle_each_orphan_once_on_postgresql(pg_app):
    """Two reconciler runs at once (PostgreSQL): every orphan is taken over by exactly one of them."""
    import threading

    with pg_app.app_context():
        session = db.session
        session.execute(update(SmsChannel).values(enabled=False))
        ch = SmsChannel(name="sink", provider="sink", signature="测试教育", priority=1)
        session.add(ch)
        session.flush()
        session.add(SmsTemplate(name="assigned", kind="notification", channel_id=ch.id, body=BODY,
                                variables="name,customer", status="approved", event=ASSIGNED))
        session.commit()
        people = {"name": "张三", "customer": "李四"}
        ids = [notify(session, ASSIGNED, n, f"+86138123400{n:02d}", people).message_id for n in range(20)]
        session.commit()
        for i in ids:
            left_sending(session, i, -1)
        accepted = [session.get(SmsMessage, i) for i in ids[::2]]
        with db.engine.begin() as conn:
            conn.execute(insert(SinkMessage), [{"channel_id": ch.id, "correlation": m.uid,
                                                "provider_id": "sink-" + m.uid, "phone": m.phone,
                                                "content": m.content} for m in accepted])
        session.remove()
    results = []

    def run() -> None:
        with pg_app.app_context():
            results.append(notification_sending.reconcile_notifications(db.session))
            db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = results[0].sent + results[1].sent
    again = results[0].again + results[1].again
    assert sorted(sent) == sorted(ids[::2]) and sorted(again) == sorted(ids[1::2])  # each once
    with pg_app.app_context():
        statuses = dict(db.session.execute(select(SmsMessage.status, func.count())
                                           .group_by(SmsMessage.status)).all())
        assert statuses == {"sent": 10, "pending": 10}
        assert db.session.scalar(select(func.count()).select_from(SinkMessage)) == 10
        db.session.remove()
