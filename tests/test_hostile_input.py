"""Hostile input to the endpoints a fuzzer with a login cannot reach, or cannot sign for: SMS receipts and
inbound replies, call-centre callbacks, HR sync, notification events, the template preview and lead intake.

Each bad input answers 4xx JSON naming the field and the reason, writes nothing (a refused receipt or reply
is kept as a "rejected" row with its body, as the README promises), and never 500. Each case runs on SQLite
as a test of its own; with TEST_DATABASE_URL, the `*_on_postgresql` tests run every case of a table again
on PostgreSQL, which refuses what SQLite quietly stores (a string over its column's length, an integer
beyond 32 bits, a NUL)."""

from __future__ import annotations

import io
import itertools
import json

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models.calls import CallEvent, CallRecord
from app.models.employee import Employee
from app.models.sales import Customer, Lead
from app.models.sms import PENDING_REVIEW, BlacklistEntry, SmsChannel, SmsMessage, SmsReceipt, SmsTemplate
from app.services.calls import callbacks
from app.services.calls.providers import H_TIMESTAMP, callback_body, callback_headers
from app.services.calls.simulator import SimulatorProvider
from tests import factories as f
from tests.conftest import api_token

HUGE_ID = 99_999_999_999  # beyond 32 bits: PostgreSQL's integer refuses it
TEN_MB = "名" * (10 * 1024 * 1024 // 3)
_seq = itertools.count(1)


@pytest.fixture
def crm(request):
    """The real app, inside its app context: on SQLite, or on PostgreSQL for a test parametrized with
    `crm="postgresql"` (skipped without TEST_DATABASE_URL)."""
    backend = getattr(request, "param", "sqlite")
    app = request.getfixturevalue("app" if backend == "sqlite" else "pg_app")
    with app.app_context():
        yield app


on_postgresql = pytest.mark.parametrize("crm", ["postgresql"], indirect=True)


@pytest.fixture
def sess(crm):
    return db.session


@pytest.fixture
def client(crm):
    client = crm.test_client()
    client.get("/lang/en")
    return client


def count(sess, model, *where) -> int:
    sess.expire_all()
    return sess.scalar(select(func.count()).select_from(model).where(*where))


def refused(resp, status: int, field: str) -> dict:
    """A 4xx JSON answer that names `field` (in `errors`, `field` or the message) with a reason, and does
    not echo a long hostile value back."""
    assert resp.status_code == status, (field, resp.status_code, resp.get_data(as_text=True)[:500])
    body = resp.get_json()
    assert isinstance(body, dict) and body.get("message"), body
    named = body.get("errors") or {}
    reason = named.get(field) or (body["message"] if body.get("field") == field or field in body["message"]
                                  else None)
    assert reason, (field, body)
    assert len(resp.get_data()) < 4000, "the answer echoes the hostile value"
    return body


def integration_key(crm, role: str) -> dict:
    sm = crm.appbuilder.sm
    username = f"system-{next(_seq)}"
    user = sm.add_user(username, "Other", "System", f"{username}@example.com", sm.find_role(role), f.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, username)['key']}"}


# --- SMS receipts and inbound replies (the sink channel: no signature) ------------------------------------
RECEIPT_CASES = [
    ({"id": "x" * 65, "status": "delivered"}, "receipts[0].id"),
    ({"id": {"a": 1}, "status": "delivered"}, "receipts[0].id"),
    ({"id": "m\x00-1", "status": "delivered"}, "receipts[0].id"),
    ({"id": "m-1", "status": "delivered", "phone": {"a": 1}}, "receipts[0].phone"),
    ({"id": "m-1", "status": "delivered", "phone": "1" * 21}, "receipts[0].phone"),
    ({"id": "m-1", "status": "failed", "code": ["E1"]}, "receipts[0].code"),
    ({"id": "m-1", "status": "failed", "code": "E" * 65}, "receipts[0].code"),
    ({"id": "m-1", "status": ["delivered"]}, "receipts[0].status"),
    ("m-1", "receipts[0]"),
]
INBOUND_CASES = [
    ({"phone": {"a": 1}, "text": "TD"}, "replies[0].phone"),
    ({"phone": "1" * 33, "text": "TD"}, "replies[0].phone"),
    ({"phone": "+8613800000002", "text": ["TD"]}, "replies[0].text"),
    ({"phone": "+8613800000002", "text": "T\x00D"}, "replies[0].text"),
    ({"phone": "+8613800000002"}, "replies[0].text"),
]


@pytest.fixture
def sink(sess):
    channel = SmsChannel(name="sink", provider="sink", signature="测试教育")
    sess.add(channel)
    sess.commit()
    return channel


def post_sms(client, kind: str, channel, payload=None, raw: bytes | None = None, chunked: bool = False):
    body = raw if raw is not None else json.dumps(payload).encode()
    if chunked:  # as gunicorn hands a chunked body over: a stream the server ends, with no length
        return client.post(f"/api/v1/sms/{kind}/{channel.id}", input_stream=io.BytesIO(body),
                           headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                           environ_overrides={"wsgi.input_terminated": True})
    return client.post(f"/api/v1/sms/{kind}/{channel.id}", data=body, content_type="application/json")


def message(sess, channel, status="sent") -> SmsMessage:
    msg = SmsMessage(phone="+8613800000001", status=status, channel_id=channel.id, kind="notification",
                     content="【测试教育】hello")
    sess.add(msg)
    sess.commit()
    return msg


def last_kept(sess) -> SmsReceipt:
    sess.expire_all()
    return sess.scalars(select(SmsReceipt).order_by(SmsReceipt.id.desc())).first()


def kept_body(kept: SmsReceipt):
    """The JSON of a kept body, with the NULs it was sent with (kept as U+FFFD: PostgreSQL's text cannot
    hold a NUL)."""
    return json.loads(kept.payload.replace("\ufffd", "\x00"))


def check_receipt(client, sess, sink, item, field):
    msg = message(sess, sink)
    good = {"id": msg.uid, "status": "delivered"}
    body = refused(post_sms(client, "receipts", sink, {"receipts": [item, good]}), 400, field)
    assert body["field"] == field
    sess.expire_all()
    assert sess.get(SmsMessage, msg.id).status == "sent"  # nothing of the batch applied
    assert count(sess, SmsReceipt, SmsReceipt.status != "rejected") == 0
    kept = last_kept(sess)
    assert (kept.status, kept.kind, kept.channel_id, kept.matched) == ("rejected", "receipt", sink.id, False)
    assert kept.text == body["message"]
    assert kept_body(kept) == {"receipts": [item, good]}  # the refused body, as sent


def check_inbound(client, sess, sink, item, field):
    refused(post_sms(client, "inbound", sink, {"replies": [item]}), 400, field)
    assert count(sess, BlacklistEntry) == 0
    assert count(sess, SmsReceipt, SmsReceipt.status != "rejected") == 0
    kept = last_kept(sess)
    assert (kept.status, kept.kind) == ("rejected", "inbound")
    assert kept_body(kept) == {"replies": [item]}


@pytest.mark.parametrize("item,field", RECEIPT_CASES)
def test_sink_receipts_are_checked_like_any_channels_and_the_refused_body_kept(client, sess, sink, item,
                                                                              field):
    check_receipt(client, sess, sink, item, field)


@pytest.mark.parametrize("item,field", INBOUND_CASES)
def test_sink_inbound_replies_are_checked_and_the_refused_body_kept(client, sess, sink, item, field):
    check_inbound(client, sess, sink, item, field)


@on_postgresql
def test_sink_receipts_and_replies_on_postgresql(client, sess, sink):
    for item, field in RECEIPT_CASES:
        check_receipt(client, sess, sink, item, field)
    for item, field in INBOUND_CASES:
        check_inbound(client, sess, sink, item, field)
    resp = post_sms(client, "receipts", sink, raw=b"\x00\xff\xfe garbage \x00")
    refused(resp, 400, "body")
    assert "garbage" in last_kept(sess).payload


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_is_refused_and_kept_as_a_rejected_request(client, sess, sink, chunked):
    """Over 1 MB, with a Content-Length or chunked (no length to check before reading it)."""
    raw = b'{"receipts": [' + b" " * (1024 * 1024) + b"]}"
    refused(post_sms(client, "receipts", sink, raw=raw, chunked=chunked), 413, "body")
    [kept] = sess.scalars(select(SmsReceipt)).all()
    assert (kept.status, kept.text) == ("rejected", "Body too large")


def test_a_chunked_body_within_the_cap_is_read(client, sess, sink):
    msg = message(sess, sink)
    raw = json.dumps({"receipts": [{"id": msg.uid, "status": "delivered"}]}).encode()
    resp = post_sms(client, "receipts", sink, raw=raw, chunked=True)
    assert resp.get_json() == {"applied": 1, "ignored": 0, "unmatched": 0}


def test_a_body_that_is_not_text_is_kept_readable(client, sess, sink):
    resp = post_sms(client, "receipts", sink, raw=b"\x00\xff\xfe garbage \x00")
    refused(resp, 400, "body")
    [kept] = sess.scalars(select(SmsReceipt)).all()
    assert kept.status == "rejected" and "garbage" in kept.payload and "\x00" not in kept.payload


# --- call-centre status callbacks -------------------------------------------------------------------------
TIMESTAMP_CASES = ["1" + "0" * 400, "9" * 5000, "-1" + "0" * 30, "1e400", " 1 ", "١٢٣"]
DURATION_CASES = ["1e400", "-1e400", "NaN", "1e300", "86401", "true", '"61"', "-1"]
EVENT_CASES = [
    ({"event_id": {"a": 1}, "call_id": "p-1", "status": "ended"}, "events[0].event_id"),
    ({"event_id": "e" * 129, "call_id": "p-1", "status": "ended"}, "events[0].event_id"),
    ({"call_id": ["p-1"], "status": "ended"}, "events[0].call_id"),
    ({"call_id": "p" * 65, "status": "ended"}, "events[0].call_id"),
    ({"correlation": {"uid": 1}, "status": "ended"}, "events[0].correlation"),
    ({"call_id": "p-1", "status": "ended", "recording_url": "javascript:alert(1)"},
     "events[0].recording_url"),
    ({"call_id": "p-1", "status": "ended", "recording_url": "https://x/" + "r" * 500},
     "events[0].recording_url"),
    ({"call_id": "p-1", "status": "ended", "result": {"a": 1}}, "events[0].result"),
    ({"call_id": "p-1", "status": "ended", "transcript": [1, 2]}, "events[0].transcript"),
]
TIME_CASES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", 1e300, -1e18, "not a time", {"t": 1}]


@pytest.fixture
def interface(sess):
    return f.make_interface(sess, options={"realtime": False})


def post_call(client, iface, events=None, raw: bytes | None = None, headers: dict | None = None):
    body = raw if raw is not None else callback_body(events)
    secret = SimulatorProvider.from_interface(iface).callback_secret
    signed = {**callback_headers(secret, body), **(headers or {})}
    return client.post(f"/api/v1/calls/callback/{iface.id}", data=body,
                       headers={"Content-Type": "application/json", **signed})


def check_timestamp(client, sess, interface, timestamp):
    resp = post_call(client, interface, [{"call_id": "p-1", "status": "ringing"}],
                     headers={H_TIMESTAMP: timestamp})
    body = refused(resp, 401, H_TIMESTAMP)
    assert body["field"] == H_TIMESTAMP and "time" in body["message"].lower()
    assert count(sess, CallEvent) == 0


def check_duration(client, sess, interface, duration):
    raw = b'{"events": [{"event_id": "e1", "call_id": "p-1", "status": "ended", "duration": ' \
        + duration.encode() + b"}]}"
    body = refused(post_call(client, interface, raw=raw), 400, "events[0].duration")
    assert body["field"] == "events[0].duration"
    assert count(sess, CallEvent) == 0


def check_event(client, sess, interface, event, field):
    assert refused(post_call(client, interface, [event]), 400, field)["field"] == field
    assert count(sess, CallEvent) == 0


def check_time(client, sess, interface, time):
    event_id = f"e{next(_seq)}"
    resp = post_call(client, interface, [{"event_id": event_id, "call_id": "p-1", "status": "ringing",
                                          "time": time}])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert sess.scalar(select(CallEvent.occurred_at).where(CallEvent.event_key == event_id)) is None


@pytest.mark.parametrize("timestamp", TIMESTAMP_CASES)
def test_a_monstrous_timestamp_is_a_bad_signature(client, sess, interface, timestamp):
    check_timestamp(client, sess, interface, timestamp)


@pytest.mark.parametrize("duration", DURATION_CASES)
def test_a_signed_duration_that_is_not_a_call_length_is_refused(client, sess, interface, duration):
    check_duration(client, sess, interface, duration)


@pytest.mark.parametrize("event,field", EVENT_CASES)
def test_signed_events_with_ids_and_fields_of_the_wrong_shape_are_refused(client, sess, interface, event,
                                                                          field):
    check_event(client, sess, interface, event, field)


@pytest.mark.parametrize("time", TIME_CASES)
def test_an_unreadable_event_time_is_ignored_not_a_crash(client, sess, interface, time):
    check_time(client, sess, interface, time)


@on_postgresql
def test_call_callbacks_on_postgresql(client, sess, interface):
    for timestamp in TIMESTAMP_CASES:
        check_timestamp(client, sess, interface, timestamp)
    for duration in DURATION_CASES:
        check_duration(client, sess, interface, duration)
    for event, field in EVENT_CASES:
        check_event(client, sess, interface, event, field)
    for time in TIME_CASES:
        check_time(client, sess, interface, time)


def test_a_kept_event_with_a_long_transcript_is_applied_when_its_call_appears(client, sess, interface):
    transcript = [{"speaker": "agent", "start": n, "end": n + 1, "text": "您好" * 200} for n in range(60)]
    event = {"event_id": "e1", "call_id": "prov-late", "status": "ended", "duration": 60,
             "transcript": transcript}
    assert post_call(client, interface, [event]).get_json() == {"applied": 0, "ignored": 0, "unmatched": 1}
    agent = f.employee(sess, f.org_unit(sess, "Callers"), "Caller")
    call = f.make_call_record(sess, agent, interface_id=interface.id, provider_call_id="prov-late",
                              connected=False, status="dialing", ended_at=None)
    assert callbacks.match_unmatched(sess, call) == 1
    sess.commit()
    sess.expire_all()
    got = sess.get(CallRecord, call.id)
    assert got.status == "ended" and json.loads(got.transcript) == transcript


# --- notification events ----------------------------------------------------------------------------------
EVENT_URL = "/api/v1/notifications/event"
GOOD_EVENT = {"event": "order_paid", "key": "SO-1", "phone": "13812345600",
              "variables": {"name": "王", "order": "SO-1", "amount": "9"}}
NOTIFICATION_CASES = [
    ({"event": {}}, "event"),
    ({"event": ["order_paid"]}, "event"),
    ({"key": {"a": 1}}, "key"),
    ({"key": 1.5}, "key"),
    ({"phone": {"a": 1}}, "phone"),
    ({"phone": TEN_MB}, "phone"),
    ({"phone": None, "customer_id": HUGE_ID}, "customer_id"),
    ({"phone": None, "customer_id": "1"}, "customer_id"),
    ({"phone": None, "customer_id": 1.0}, "customer_id"),
    ({"variables": {"order": float("nan"), "amount": "1"}}, "variables"),
]


def check_notification(crm, client, sess, change, field):
    auth = integration_key(crm, "Notification Integration")
    refused(client.post(EVENT_URL, json={**GOOD_EVENT, **change}, headers=auth), 400, field)
    assert count(sess, SmsMessage) == 0


@pytest.mark.parametrize("change,field", NOTIFICATION_CASES)
def test_bad_notification_events_name_the_field(crm, client, sess, change, field):
    check_notification(crm, client, sess, change, field)


@on_postgresql
def test_notification_events_on_postgresql(crm, client, sess):
    for change, field in NOTIFICATION_CASES:
        check_notification(crm, client, sess, change, field)


# --- HR sync ----------------------------------------------------------------------------------------------
HR_URL = "/api/v1/hr/sync"
HR_CASES = [
    ({"name": {"a": 1}}, "name"),
    ({"name": TEN_MB}, "name"),
    ({"org_unit_code": {"a": 1}}, "org_unit_code"),
    ({"org_unit_code": ["T-K12-1"]}, "org_unit_code"),
    ({"level_code": {"a": 1}}, "level_code"),
    ({"email": 42}, "email"),
    ({"email": "a@" + "b" * 320 + ".cn"}, "email"),
    ({"phone": {"a": 1}}, "phone"),
    ({"phone": TEN_MB}, "phone"),
    ({"position": ["x"]}, "position"),
    ({"position": "p" * 65}, "position"),
    ({"hired_on": 20250301}, "hired_on"),
    ({"hired_on": TEN_MB}, "hired_on"),
    ({"hr_status": {"a": 1}}, "hr_status"),
    ({"manager_no": {"a": 1}}, "manager_no"),
    ({"employee_no": {"a": 1}}, "employee_no"),
    ({"employee_no": True}, "employee_no"),
    ({"employee_no": "E" * 33}, "employee_no"),
]


def hr_row(no: str, **extra) -> dict:
    return {"employee_no": no, "name": f"同步{no}", "org_unit_code": "T-K12-1", "phone": "13900001234",
            "email": f"{no.lower()}@example.com", "hired_on": "2025-03-01", **extra}


def check_hr_row(crm, client, sess, bad, field):
    auth = integration_key(crm, "HR Integration")
    nos = [f"E9{next(_seq):04d}" for _ in range(3)]
    rows = [hr_row(nos[0]), hr_row(nos[1], **bad), hr_row(nos[2])]
    resp = client.post(HR_URL, json={"employees": rows}, headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert (body["created"], body["failed"]) == (2, 1), body
    [error] = body["errors"]
    assert error["index"] == 1 and error["errors"].get(field), body
    assert len(resp.get_data()) < 4000, "the answer echoes the hostile value"
    sess.expire_all()
    assert set(sess.scalars(select(Employee.employee_no).where(Employee.employee_no.in_(nos)))) == {
        nos[0], nos[2]}


@pytest.mark.parametrize("bad,field", HR_CASES)
def test_each_hr_row_stands_on_its_own_whatever_its_fields_hold(crm, client, sess, bad, field):
    check_hr_row(crm, client, sess, bad, field)


@on_postgresql
def test_hr_rows_on_postgresql(crm, client, sess):
    for bad, field in HR_CASES:
        check_hr_row(crm, client, sess, bad, field)


def test_an_hr_batch_of_only_bad_rows_is_422_and_writes_nothing(crm, client, sess):
    auth = integration_key(crm, "HR Integration")
    before = count(sess, Employee)
    rows = [hr_row("E9101", name=TEN_MB), "not a row", hr_row("E9102", org_unit_code={"x": 1})]
    resp = client.post(HR_URL, json={"employees": rows}, headers=auth)
    assert resp.status_code == 422 and [e["index"] for e in resp.get_json()["errors"]] == [0, 1, 2]
    assert count(sess, Employee) == before


# --- template preview -------------------------------------------------------------------------------------
PREVIEW_CASES = [
    ({"channel_id": "abc"}, "channel_id"),
    ({"channel_id": HUGE_ID}, "channel_id"),
    ({"channel_id": 1.5}, "channel_id"),
    ({"channel_id": 0}, "channel_id"),
    ({"variables": {"name": 1}}, "variables"),
    ({"body": ["x"]}, "body"),
    ({"kind": {"a": 1}}, "kind"),
    ({"sample": {"name": TEN_MB}}, "sample"),
    ({"sample": ["x"]}, "sample"),
]


def check_preview(client, token, draft, field, status=400):
    good = {"body": "{name}您好，课程已开始", "kind": "notification", "variables": "name"}
    resp = client.post("/api/v1/sms_template/preview", json={**good, **draft},
                       headers={"Authorization": f"Bearer {token}"})
    refused(resp, status, field)


def test_a_preview_on_a_channel_that_does_not_exist_is_422_as_documented(client):
    """Well-formed, but naming nothing: the status the document declares for it, not 400."""
    check_preview(client, api_token(client, "admin"), {"channel_id": 987654}, "channel_id", 422)
    spec = client.get("/api/v1/_openapi", headers={"Authorization": f"Bearer {api_token(client, 'admin')}"})
    answers = spec.get_json()["paths"]["/api/v1/sms_template/preview"]["post"]["responses"]
    assert "422" in answers and "400" in answers


@pytest.mark.parametrize("draft,field", PREVIEW_CASES)
def test_the_draft_preview_names_a_bad_field(client, draft, field):
    check_preview(client, api_token(client, "admin"), draft, field)


@on_postgresql
def test_the_draft_preview_on_postgresql(client):
    token = api_token(client, "admin")
    for draft, field in PREVIEW_CASES:
        check_preview(client, token, draft, field)


def test_review_notes_and_samples_of_the_wrong_type_are_refused(client, sess):
    tpl = SmsTemplate(name="pending", kind="notification", body="{name}您好，课程已开始", variables="name",
                      status=PENDING_REVIEW)
    sess.add(tpl)
    sess.commit()
    auth = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    refused(client.post(f"/api/v1/sms_template/{tpl.id}/reject", json={"note": {"a": 1}}, headers=auth),
            400, "note")
    refused(client.post(f"/api/v1/sms_template/{tpl.id}/approve", json={"note": 5}, headers=auth),
            400, "note")
    refused(client.post(f"/api/v1/sms_template/{tpl.id}/preview", json={"sample": {"name": TEN_MB}},
                        headers=auth), 400, "sample")
    sess.expire_all()
    assert sess.get(SmsTemplate, tpl.id).status == PENDING_REVIEW


# --- lead intake ------------------------------------------------------------------------------------------
GOOD_LEAD = {"name": "李家长", "phone": "138 0013 8100", "product_line": "k12_english", "source": "wechat",
             "intention_level": "B", "campaign": "春季", "region": "北京", "consult_note": "咨询英语"}
LEAD_CASES = [
    ({"name": {"a": 1}}, "name"),
    ({"name": "名" * 65}, "name"),
    ({"phone": {"a": 1}}, "phone"),
    ({"phone": "1" * 20_000}, "phone"),
    ({"phone": True}, "phone"),
    ({"product_line": ["k12_english"]}, "product_line"),
    ({"product_line": "k" * 20_000}, "product_line"),
    ({"source": {"a": 1}}, "source"),
    ({"intention_level": 1.5}, "intention_level"),
    ({"campaign": ["x"]}, "campaign"),
    ({"region": "r" * 65}, "region"),
    ({"consult_note": {"a": 1}}, "consult_note"),
    ({"consult_note": "说" * 4001}, "consult_note"),
    ({"client_key": {"a": 1}}, "client_key"),
    ({"extra": TEN_MB}, "body"),
]


def check_lead(client, sess, auth, change, field):
    before = (count(sess, Lead), count(sess, Customer))
    key = {} if "client_key" in change else {"Idempotency-Key": f"k-{next(_seq)}"}
    resp = client.post("/api/v1/lead/", json={**GOOD_LEAD, **change}, headers={**auth, **key})
    refused(resp, 413 if field == "body" else 422, field)
    assert (count(sess, Lead), count(sess, Customer)) == before


@pytest.mark.parametrize("change,field", LEAD_CASES)
def test_lead_intake_refuses_wrong_types_and_lengths(crm, client, sess, change, field):
    check_lead(client, sess, integration_key(crm, "Lead Integration"), change, field)


@on_postgresql
def test_lead_intake_on_postgresql(crm, client, sess):
    auth = integration_key(crm, "Lead Integration")
    for change, field in LEAD_CASES:
        check_lead(client, sess, auth, change, field)


# --- the sales floor's API and the phone lists: every field's type, the required ones -----------------------
SALES_CASES = [
    ("follow_up", {"id": 1, "content": [None, None]}, "content"),
    ("follow_up", {"id": 1, "content": "called", "result": {"a": 1}}, "result"),
    ("follow_up", {"id": 1, "content": "called", "type": [1]}, "type"),
    ("follow_up", {"id": 1, "content": "called", "stage": {"a": 1}}, "stage"),
    ("follow_up", {"id": 1, "content": "called", "next_followup_at": ["2099-01-01"]}, "next_followup_at"),
    ("follow_up", {"id": 1, "content": "called", "next_followup_at": "0001-01-01T00:00:00+14:00"},
     "next_followup_at"),
    ("follow_up", {"id": "1", "content": "called"}, "id"),
    ("follow_up", {"content": "called"}, "id"),
    ("give_back", {"id": 1, "reason": [None]}, "reason"),
    ("give_back", {"id": 1, "reason": "r" * 256}, "reason"),
    ("give_back", {"id": True, "reason": "x"}, "id"),
    ("assign", {"employee_id": 1}, "ids"),
    ("assign", {"ids": "12", "employee_id": 1}, "ids"),
    ("assign", {"ids": [1], "employee_id": 1, "note": {}}, "note"),
    ("assign", {"ids": [1]}, "employee_id"),
    ("claim", {}, "ids"),
    ("claim", {"ids": {"1": 1}}, "ids"),
    ("claim", {"ids": [1.5]}, "ids"),
    ("claim", {"ids": []}, "ids"),
    ("lock", {"ids": [None]}, "ids"),
    ("unlock", {"ids": ["x"]}, "ids"),
    ("stage", {"id": 1, "stage": [1]}, "stage"),
    ("stage", {"id": 1, "stage": "won", "lost_reason": {"a": 1}}, "lost_reason"),
    ("transfer_all", {"to_employee_id": 1}, "from_employee_id"),
    ("transfer_all", {"from_employee_id": 1, "to_employee_id": "2"}, "to_employee_id"),
    ("transfer_all", {"from_employee_id": 1, "note": ["x"]}, "note"),
]


def sales_state(sess) -> tuple:
    from app.models.sales import AssignmentLog, FollowUp, Opportunity

    sess.expire_all()
    owners = tuple(sess.execute(select(Opportunity.id, Opportunity.owner_id, Opportunity.status,
                                       Opportunity.locked).order_by(Opportunity.id)).all())
    return owners, count(sess, FollowUp), count(sess, AssignmentLog)


def check_sales(client, sess, headers, endpoint, body, field):
    before = sales_state(sess)
    resp = client.post(f"/api/v1/opportunity/{endpoint}", json=body, headers=headers)
    answer = refused(resp, 422, field)
    assert answer["field"] == field and field in answer["errors"], answer
    assert sales_state(sess) == before


@pytest.mark.parametrize("endpoint,body,field", SALES_CASES)
def test_the_sales_floor_api_names_a_field_of_the_wrong_type_or_missing(client, sess, endpoint, body, field):
    """A text sent as a list was a 500; ids as strings or objects, a missing `ids`, were taken as none."""
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    check_sales(client, sess, headers, endpoint, body, field)


@on_postgresql
def test_the_sales_floor_api_on_postgresql(client, sess):
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    for endpoint, body, field in SALES_CASES:
        check_sales(client, sess, headers, endpoint, body, field)


MERGE_CASES = [
    ({"merged_id": 2}, "survivor_id"),
    ({"survivor_id": 1, "merged_id": [2]}, "merged_id"),
    ({"survivor_id": 1, "merged_id": 2, "owner_id": "x"}, "owner_id"),
    ({"survivor_id": 1, "merged_id": 2, "dry_run": "yes"}, "dry_run"),
]


@pytest.mark.parametrize("body,field", MERGE_CASES)
def test_customer_merge_names_a_field_of_the_wrong_type(client, sess, body, field):
    """`dry_run: "yes"` was a real merge."""
    before = count(sess, Customer, Customer.merged_into_id.is_not(None))
    resp = client.post("/api/v1/customer/merge", json=body,
                       headers={"Authorization": f"Bearer {api_token(client, 'admin')}"})
    refused(resp, 422, field)
    assert count(sess, Customer, Customer.merged_into_id.is_not(None)) == before


PHONE_LIST_CASES = [
    ("/api/v1/sms_blacklist/import", {"reason": "x"}, "phones"),
    ("/api/v1/sms_blacklist/import", {"phones": "13812345678"}, "phones"),
    ("/api/v1/sms_blacklist/import", {"phones": [13812345678]}, "phones"),
    ("/api/v1/sms_blacklist/import", {"phones": ["1" * 33]}, "phones"),
    ("/api/v1/sms_blacklist/import", {"phones": ["13812345678"], "reason": ["x"]}, "reason"),
    ("/api/v1/sms_blacklist/import", {"phones": ["13812345678"], "reason": "r" * 256}, "reason"),
    ("/api/v1/sms_blacklist/import", {"phones": ["13812345678"] * 1001}, "phones"),
    ("/api/v1/do_not_call/import", {}, "phones"),
    ("/api/v1/do_not_call/import", {"phones": [None]}, "phones"),
    ("/api/v1/do_not_call/import", {"phones": ["13812345678"], "reason": 5}, "reason"),
    ("/api/v1/sms_blacklist/lookup", {}, "phones"),
    ("/api/v1/sms_blacklist/lookup", {"phones": [{"a": 1}]}, "phones"),
]


@pytest.mark.parametrize("url,body,field", PHONE_LIST_CASES)
def test_phone_list_imports_and_lookup_refuse_a_missing_or_wrong_list(client, sess, url, body, field):
    """A body without `phones` was answered as an empty success."""
    from app.models.calls import DoNotCall

    before = (count(sess, BlacklistEntry), count(sess, DoNotCall))
    resp = client.post(url, json=body, headers={"Authorization": f"Bearer {api_token(client, 'admin')}"})
    refused(resp, 422, field)
    assert (count(sess, BlacklistEntry), count(sess, DoNotCall)) == before


def test_the_blacklist_text_import_refuses_an_empty_body_and_reads_any_line_ending(client, sess):
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    refused(client.post("/api/v1/sms_blacklist/import", headers=headers), 422, "phones")
    resp = client.post("/api/v1/sms_blacklist/import", data="13812345671\r13812345672\r\n\"1381234",
                       headers={**headers, "Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.get_json()["added"] == 2, resp.get_json()
    phones = ["1381234567,3", "x\ny", "13812345674"]  # a comma or line break stays in its number
    resp = client.post("/api/v1/sms_blacklist/import", json={"phones": phones}, headers=headers)
    assert resp.status_code == 200 and [e["line"] for e in resp.get_json()["errors"]] == [1, 2]
    assert count(sess, BlacklistEntry) == 3


def test_the_document_declares_what_events_and_hr_sync_require(client):
    spec = client.get("/api/v1/_openapi", headers={"Authorization": f"Bearer {api_token(client, 'admin')}"})
    paths = spec.get_json()["paths"]
    body = lambda path: paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]  # noqa: E731
    event = body("/api/v1/notifications/event")
    assert event["required"] == ["event", "key"] and event["properties"]["customer_id"]["minimum"] == 1
    assert {"required": ["order", "amount"]}.items() <= event["oneOf"][0]["properties"]["variables"].items()
    hr = body("/api/v1/hr/sync")
    assert hr["oneOf"][0]["required"] == ["employees"]
    assert hr["oneOf"][1]["items"]["required"] == ["employee_no", "name", "org_unit_code"]
    assert body("/api/v1/opportunity/give_back")["required"] == ["id", "reason"]
