"""Transactional notifications: one message per (event, key), sent by RQ with retry and back-off, failures
visible; the dispatch engine's assignments notified by the watermark job (the engine untouched)."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.jobs.sms_notifications import notify_assignments_job, notify_event
from app.jobs.worker import app_worker_class
from app.models.employee import Employee
from app.models.sales import AssignmentLog
from app.models.sms import SensitiveWord, SinkMessage, SmsChannel, SmsMessage, SmsTemplate
from app.services.dispatch import dispatch_waiting
from app.services.errors import DomainError
from app.services.sms import notifications
from app.services.sms.notifications import ASSIGNED, ASSIGNMENT_REASONS, WATERMARK_KEY, notify
from tests.conftest import login

BODY = "{name}您好，您有新的商机：{customer}，请尽快跟进"


@pytest.fixture
def channel(session):
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
    assert resp.status_code in (302, 403)


def _new_assignment_logs(session, after: int):
    rows = session.execute(
        select(AssignmentLog.id, Employee.phone)
        .join(Employee, Employee.id == AssignmentLog.to_owner_id)
        .where(AssignmentLog.id > after, AssignmentLog.reason.in_(ASSIGNMENT_REASONS))).all()
    return {f"{ASSIGNED}:{r.id}": r.phone for r in rows if r.phone}


def test_dispatch_assignments_are_notified_once_from_the_watermark(app, session, template):
    redis = Redis.from_url(app.config["REDIS_URL"])
    baseline = notifications.notify_assignments(session, redis=redis)
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
    assert notifications.notify_assignments(session, redis=redis).created == []
    redis.delete(WATERMARK_KEY)
    again = notifications.notify_assignments(session, redis=redis)
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
        status = notifications.send_notification(session, first.message_id)
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
