"""Receipt and inbound endpoints through the real app: signature checked, statuses only move forward,
unknown ids kept and matched later, bad payloads refused with 4xx and kept, opt-out replies honoured."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models.sales import Customer
from app.models.sms import BlacklistEntry, SmsChannel, SmsMessage, SmsReceipt
from app.services.sms.http import callback_headers
from app.services.sms.receipts import match_unmatched

CALLBACK_SECRET = "cb-secret-for-tests"


@pytest.fixture
def channel(session, monkeypatch):
    monkeypatch.setenv("T_SMS_KEY", "AKID")
    monkeypatch.setenv("T_SMS_SECRET", "send-secret")
    monkeypatch.setenv("T_SMS_CB", CALLBACK_SECRET)
    ch = SmsChannel(name="cloud", provider="http", signature="测试", base_url="https://sms.example.com",
                    access_key_env="T_SMS_KEY", secret_env="T_SMS_SECRET", callback_secret_env="T_SMS_CB")
    session.add(ch)
    session.commit()
    return ch


def message(session, channel, phone, status, kind="marketing", provider_id=None):
    msg = SmsMessage(phone=phone, status=status, channel_id=channel.id, kind=kind, provider_id=provider_id,
                     content="【测试】hello")
    session.add(msg)
    session.commit()
    return msg


def post(client, kind, channel_id, payload, secret=CALLBACK_SECRET, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    return client.post(f"/api/v1/sms/{kind}/{channel_id}", data=body, content_type="application/json",
                       headers=callback_headers(secret, body))


def state(session, msg):
    session.expire_all()
    row = session.get(SmsMessage, msg.id)
    return row.status, row.error_code


def test_out_of_order_and_duplicate_receipts_only_move_forward(client, session, channel):
    a = message(session, channel, "+8613800000001", "sending")
    b = message(session, channel, "+8613800000002", "sent")
    resp = post(client, "receipts", channel.id, {"receipts": [
        {"id": a.uid, "status": "DELIVERED"},            # overtakes our own "sent"
        {"id": a.uid, "status": "SENT"},                 # late: must not overwrite delivered
        {"id": b.uid, "status": "FAILED", "code": "MK:0005"},
        {"id": b.uid, "status": "DELIVERED"},            # failed is final
    ]})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"applied": 2, "ignored": 2, "unmatched": 0}
    assert state(session, a) == ("delivered", None)
    assert state(session, b) == ("failed", "MK:0005")
    assert session.get(SmsMessage, a.id).delivered_at is not None

    again = post(client, "receipts", channel.id, {"receipts": [{"id": a.uid, "status": "DELIVERED"}]})
    assert again.get_json() == {"applied": 0, "ignored": 1, "unmatched": 0}
    assert state(session, a) == ("delivered", None)
    assert session.scalar(select(func.count()).select_from(SmsReceipt)
                          .where(SmsReceipt.correlation == a.uid, SmsReceipt.matched.is_(True))) == 3


def test_a_sent_receipt_moves_a_sending_message_and_the_provider_id_also_matches(client, session, channel):
    a = message(session, channel, "+8613800000001", "sending", provider_id="pm-1")
    resp = post(client, "receipts", channel.id, {"receipts": [{"message_id": "pm-1", "status": "SENT"}]})
    assert resp.get_json()["applied"] == 1
    assert state(session, a) == ("sent", None)


def test_cancelled_messages_are_not_revived(client, session, channel):
    c = message(session, channel, "+8613800000003", "cancelled")
    resp = post(client, "receipts", channel.id, {"receipts": [{"id": c.uid, "status": "DELIVERED"}]})
    assert resp.get_json() == {"applied": 0, "ignored": 1, "unmatched": 0}
    assert state(session, c) == ("cancelled", None)


def test_receipts_for_unknown_ids_are_kept_and_matched_when_the_message_appears(client, session, channel):
    early = "f" * 32
    resp = post(client, "receipts", channel.id, {"receipts": [
        {"id": early, "status": "SENT"}, {"id": early, "status": "DELIVERED", "time": "2026-11-25T01:02:03Z"},
        {"id": "e" * 32, "status": "DELIVERED"}]})
    assert resp.get_json() == {"applied": 0, "ignored": 0, "unmatched": 3}
    kept = session.scalars(select(SmsReceipt).where(SmsReceipt.kind == "receipt")).all()
    assert {(r.correlation, r.status, r.matched) for r in kept} == {
        (early, "sent", False), (early, "delivered", False), ("e" * 32, "delivered", False)}

    msg = SmsMessage(uid=early, phone="+8613800000004", status="sending", channel_id=channel.id)
    session.add(msg)
    session.commit()
    assert match_unmatched(session, [early]) == 2
    session.commit()
    assert state(session, msg) == ("delivered", None)
    assert session.get(SmsMessage, msg.id).delivered_at.isoformat() == "2026-11-25T01:02:03"
    unmatched = session.scalars(select(SmsReceipt.correlation).where(SmsReceipt.matched.is_(False))).all()
    assert unmatched == ["e" * 32]
    assert match_unmatched(session) == 0  # the other one still has no message


def _untouched(session, msgs, before):
    session.expire_all()
    return [(m.id, session.get(SmsMessage, m.id).status) for m in msgs] == before


@pytest.mark.parametrize("case,status", [
    ("bad_signature", 401), ("unknown_status", 400), ("not_json", 400), ("missing_list", 400),
    ("one_bad_in_batch", 400)])
def test_bad_receipt_requests_are_refused_logged_and_change_nothing(client, session, channel, case, status):
    a = message(session, channel, "+8613800000001", "sent")
    before = [(a.id, "sent")]
    good = {"id": a.uid, "status": "DELIVERED"}
    if case == "bad_signature":
        resp = post(client, "receipts", channel.id, {"receipts": [good]}, secret="forged")
    elif case == "unknown_status":
        resp = post(client, "receipts", channel.id, {"receipts": [{"id": a.uid, "status": "PERHAPS"}]})
    elif case == "not_json":
        resp = post(client, "receipts", channel.id, None, raw=b"status=DELIVERED")
    elif case == "missing_list":
        resp = post(client, "receipts", channel.id, {"items": [good]})
    else:
        resp = post(client, "receipts", channel.id, {"receipts": [good, {"status": "DELIVERED"}]})
    assert resp.status_code == status
    assert resp.get_json()["message"]
    assert _untouched(session, [a], before)
    rows = session.scalars(select(SmsReceipt)).all()
    assert [(r.status, r.channel_id, r.matched) for r in rows] == [("rejected", channel.id, False)]
    assert rows[0].text == resp.get_json()["message"]


def test_unsigned_request_and_unknown_channel(client, session, channel):
    resp = client.post(f"/api/v1/sms/receipts/{channel.id}", json={"receipts": []})
    assert resp.status_code == 401 and "signature" in resp.get_json()["message"].lower()
    resp = post(client, "receipts", channel.id + 999, {"receipts": []})
    assert resp.status_code == 404
    accepted = select(func.count()).select_from(SmsReceipt).where(SmsReceipt.status != "rejected")
    assert session.scalar(accepted) == 0


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_callbacks_need_no_login_and_no_csrf_token(client, session, channel):
    a = message(session, channel, "+8613800000001", "sent")
    resp = post(client, "receipts", channel.id, {"receipts": [{"id": a.uid, "status": "DELIVERED"}]})
    assert resp.status_code == 200
    assert state(session, a) == ("delivered", None)


@pytest.mark.config(CRM_SMS_CALLBACK_LIMIT="2 per minute")
def test_callbacks_are_rate_limited(client, session, channel):
    codes = [post(client, "inbound", channel.id, {"replies": [{"phone": "+8613800000009", "text": "hi"}]})
             .status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_opt_out_reply_blacklists_clears_consent_and_cancels_waiting_marketing(client, session, channel):
    phone = "+8613812345678"
    customer = Customer(phone=phone, name="客户甲", marketing_consent=True)
    other = Customer(phone="+8613812345679", name="客户乙", marketing_consent=True)
    session.add_all([customer, other])
    session.commit()
    marketing = message(session, channel, phone, "pending")
    notification = message(session, channel, phone, "pending", kind="notification")
    already_sent = message(session, channel, phone, "sent")
    resp = post(client, "inbound", channel.id, {"replies": [
        {"phone": "13812345678", "text": " 退订。"},  # national form, punctuation: still an opt-out
        {"phone": "+8613812345679", "text": "好的，谢谢"}]})
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 2, "opted_out": 1}
    session.expire_all()
    entry = session.scalars(select(BlacklistEntry)).all()
    assert [(e.phone, e.source) for e in entry] == [(phone, "inbound")]
    assert session.get(Customer, customer.id).marketing_consent is False
    assert session.get(Customer, other.id).marketing_consent is True
    assert (session.get(SmsMessage, marketing.id).status,
            session.get(SmsMessage, marketing.id).cancel_reason) == ("cancelled", "opted_out")
    assert session.get(SmsMessage, notification.id).status == "pending"
    assert session.get(SmsMessage, already_sent.id).status == "sent"
    kept = session.execute(select(SmsReceipt.phone, SmsReceipt.status).where(SmsReceipt.kind == "inbound")
                           .order_by(SmsReceipt.id)).all()
    assert [tuple(r) for r in kept] == [(phone, "opt_out"), ("+8613812345679", "reply")]

    # A repeated opt-out is idempotent.
    resp = post(client, "inbound", channel.id, {"replies": [{"phone": phone, "text": "TD"}]})
    assert resp.status_code == 200 and resp.get_json()["opted_out"] == 1
    assert session.scalar(select(func.count()).select_from(BlacklistEntry)) == 1


def test_bad_inbound_payload_is_refused(client, session, channel):
    resp = post(client, "inbound", channel.id, {"replies": [{"text": "TD"}]})
    assert resp.status_code == 400
    assert session.scalar(select(func.count()).select_from(BlacklistEntry)) == 0
    assert session.scalars(select(SmsReceipt.status)).all() == ["rejected"]
