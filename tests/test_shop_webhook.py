"""POST /api/v1/shop/webhook through the real app: the signature (good, forged, missing, stale, no secret),
idempotency by event id (also two concurrent posts on PostgreSQL), any order of arrival ending in the same
state, the customer found or taken in as a lead, bad bodies refused with 4xx and kept."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from sqlalchemy import func, select

from app import clock
from app.models.commerce import Order, ShopEvent
from app.models.sales import LOST, WON, Lead, Opportunity, SalesProfile
from app.services.shop_events import HEADERS
from app.services.signing import callback_headers
from tests import factories as f
from tests.test_commerce import owned_opportunity, product

URL = "/api/v1/shop/webhook"
SECRET = "test-shop-secret"  # TestConfig.SHOP_WEBHOOK_SECRET
PAID_AT, REFUNDED_AT = "2026-06-16T08:00:00Z", "2026-06-16T09:30:00Z"


def post(client, payload, secret=SECRET, raw=None, headers=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signed = callback_headers(HEADERS, secret, body) if headers is None else headers
    return client.post(URL, data=body, content_type="application/json", headers=signed)


def snapshot(number, opp=None, price="100", final="100", qty=1, sku="MATH-100", **order):
    body = {"number": number, "items": [{"sku": sku, "quantity": qty, "list_price": price,
                                         "final_price": final}], **order}
    if opp is not None:
        body["opportunity_id"] = opp.id
    return body


def event(event_id, kind, order, occurred_at="2026-06-16T08:00:00Z"):
    return {"event_id": event_id, "type": f"order.{kind}", "occurred_at": occurred_at, "order": order}


@pytest.fixture
def math(session):
    return product(session, "MATH-100", 100)


def order_state(session, number):
    session.expire_all()
    order = session.scalar(select(Order).where(Order.number == number))
    opp = session.get(Opportunity, order.opportunity_id)
    return (order.status, order.paid_at, order.refunded_at, opp.status,
            opp.lost_reason.code if opp.lost_reason else None)


def won_count(session, username="sales11"):
    session.expire_all()
    return session.get(SalesProfile, f.employee_by_username(session, username).id).won_count


# --- the signature --------------------------------------------------------------------------------------
def test_a_signed_event_is_applied_and_answers_its_outcome(client, session, math):
    opp = owned_opportunity(session)
    resp = post(client, event("e-1", "paid", snapshot("SO-1", opp, paid_at=PAID_AT)))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"outcome": "applied", "detail": "paid; opportunity won", "order": "SO-1",
                               "status": "paid", "approval": "none"}
    order = session.scalar(select(Order).where(Order.number == "SO-1"))
    assert (order.origin, order.opportunity_id, order.customer_id, str(order.final_total)) == (
        "shop", opp.id, opp.customer_id, "100.00")
    session.expire_all()
    assert session.get(Opportunity, opp.id).status == WON
    row = session.scalars(select(ShopEvent)).one()
    assert (row.event_id, row.event_type, row.order_number, row.outcome) == ("e-1", "order.paid", "SO-1",
                                                                             "applied")


@pytest.mark.parametrize("case, field", [
    ("forged", "X-Shop-Signature"), ("missing", "X-Shop-Timestamp"), ("no_nonce", "X-Shop-Nonce"),
    ("stale", "X-Shop-Timestamp"), ("unsigned", "X-Shop-Timestamp"),
])
def test_unsigned_forged_or_stale_events_are_refused_and_not_kept(client, session, math, case, field):
    body = json.dumps(event("e-x", "created", snapshot("SO-X", owned_opportunity(session)))).encode()
    headers = callback_headers(HEADERS, SECRET, body)
    if case == "forged":
        headers = callback_headers(HEADERS, "not-the-secret", body)
    elif case == "missing":
        headers.pop("X-Shop-Timestamp")
    elif case == "no_nonce":
        headers.pop("X-Shop-Nonce")
    elif case == "stale":
        headers = callback_headers(HEADERS, SECRET, body, now=clock.timestamp() - 301)
    elif case == "unsigned":
        headers = {}
    resp = post(client, None, raw=body, headers=headers)
    assert resp.status_code == 401 and resp.get_json()["field"] == field, resp.get_json()
    assert session.scalar(select(func.count()).select_from(ShopEvent)) == 0
    assert session.scalar(select(func.count()).select_from(Order)) == 0


@pytest.mark.config(SHOP_WEBHOOK_SECRET="")
def test_without_a_secret_every_call_is_refused(client, session, math):
    resp = post(client, event("e-1", "created", snapshot("SO-1", owned_opportunity(session))), secret="")
    assert resp.status_code == 401
    resp = post(client, event("e-1", "created", snapshot("SO-1", owned_opportunity(session))), secret="x")
    assert resp.status_code == 401 and session.scalar(select(func.count()).select_from(Order)) == 0


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_webhook_needs_no_login_and_no_csrf_token(client, session, math):
    resp = post(client, event("e-1", "created", snapshot("SO-1", owned_opportunity(session))))
    assert resp.status_code == 200 and resp.get_json()["outcome"] == "applied"


@pytest.mark.config(CRM_SHOP_WEBHOOK_LIMIT="2 per minute")
def test_the_webhook_is_rate_limited_per_address(client, session, math):
    opp = owned_opportunity(session)
    codes = [post(client, event(f"e-{i}", "created", snapshot("SO-1", opp))).status_code for i in range(3)]
    assert codes == [200, 200, 429]


# --- idempotency and order of arrival -----------------------------------------------------------------------
def test_the_same_event_twice_changes_nothing_the_second_time(client, session, math):
    opp = owned_opportunity(session)
    paid = event("e-1", "paid", snapshot("SO-1", opp))
    first, again = post(client, paid), post(client, paid)
    assert first.get_json()["outcome"] == "applied"
    assert again.status_code == 200 and again.get_json()["outcome"] == "duplicate"
    assert session.scalar(select(func.count()).select_from(ShopEvent)) == 1
    assert session.scalar(select(func.count()).select_from(Order)) == 1
    late = post(client, event("e-0", "created", snapshot("SO-1", opp)))  # created, after the payment
    assert late.get_json()["outcome"] == "ignored" and late.get_json()["status"] == "paid"


def _flow(client, session, kinds, tag, repeat=False):
    """Post the order's events in the given order (each twice when `repeat`); the end state."""
    opp = owned_opportunity(session)
    order = snapshot(f"SO-{tag}", opp)
    bodies = {"created": order, "paid": {**order, "paid_at": PAID_AT},
              "refunded": {**order, "paid_at": PAID_AT, "refunded_at": REFUNDED_AT},
              "cancelled": order}
    sent = [k for k in kinds for _ in range(2 if repeat else 1)]
    for kind in sent:
        resp = post(client, event(f"{tag}-{kind}", kind, bodies[kind]))
        assert resp.status_code == 200, resp.get_json()
    return order_state(session, f"SO-{tag}")


def test_any_order_of_created_paid_refunded_ends_refunded_and_lost(client, session, math):
    won = won_count(session)
    ends = set()
    for n, kinds in enumerate(itertools.permutations(["created", "paid", "refunded"])):
        ends.add(_flow(client, session, kinds, f"p{n}", repeat=n % 2 == 1))
    assert len(ends) == 1, ends
    status, paid, refunded, opp_status, reason = ends.pop()
    assert (status, opp_status, reason) == ("refunded", LOST, "refunded")
    assert (paid.isoformat(), refunded.isoformat()) == ("2026-06-16T08:00:00", "2026-06-16T09:30:00")
    assert won_count(session) == won  # every win taken back


def test_any_order_of_created_and_paid_ends_paid_and_won(client, session, math):
    ends = {_flow(client, session, kinds, f"q{n}")
            for n, kinds in enumerate(itertools.permutations(["created", "paid"]))}
    assert [(s, o) for s, _p, _r, o, _l in ends] == [("paid", WON)]


def test_a_cancellation_ends_a_pending_order_and_a_late_payment_is_ignored(client, session, math):
    opp = owned_opportunity(session)
    order = snapshot("SO-C", opp)
    assert post(client, event("c-1", "cancelled", order)).get_json()["outcome"] == "applied"
    late = post(client, event("c-2", "paid", order)).get_json()
    assert (late["outcome"], late["status"]) == ("ignored", "cancelled")
    assert post(client, event("c-3", "created", order)).get_json()["outcome"] == "ignored"
    assert session.get(Opportunity, opp.id).status == "owned"
    paid = snapshot("SO-D", opp)
    post(client, event("d-1", "paid", paid))
    refused = post(client, event("d-2", "cancelled", paid)).get_json()
    assert (refused["outcome"], refused["status"]) == ("ignored", "paid")


# --- finding the opportunity; discounts ---------------------------------------------------------------------
def test_an_order_by_phone_finds_the_open_opportunity_or_opens_one_as_a_lead(client, session, math):
    customer = {"phone": "138 0013 8000", "name": "王女士"}
    first = post(client, event("n-1", "created", snapshot("SO-N1", customer=customer)))
    assert first.status_code == 200, first.get_json()
    lead = session.scalars(select(Lead).where(Lead.client_key == "shop:SO-N1")).one()
    assert (lead.channel, lead.phone, lead.name) == ("api", "+8613800138000", "王女士")
    order = session.scalar(select(Order).where(Order.number == "SO-N1"))
    assert order.opportunity_id == lead.opportunity_id
    second = post(client, event("n-2", "created", snapshot("SO-N2", customer={"phone": "13800138000"})))
    assert second.status_code == 200
    again = session.scalar(select(Order).where(Order.number == "SO-N2"))
    assert again.opportunity_id == order.opportunity_id  # the open opportunity of that line
    assert session.scalar(select(func.count()).select_from(Lead).where(Lead.phone == "+8613800138000")) == 1


def test_a_shop_discount_is_recorded_for_review_and_the_payment_still_applied(client, session, math):
    f.set_config(session, "commerce.approval_below_percent", 80)
    opp = owned_opportunity(session)
    resp = post(client, event("s-1", "paid", snapshot("SO-S", opp, final="60", qty=2,
                                                      list_total="200", final_total="120")))
    assert resp.get_json()["status"] == "paid" and resp.get_json()["approval"] == "pending"
    session.expire_all()
    assert session.get(Opportunity, opp.id).status == WON


# --- bad bodies -------------------------------------------------------------------------------------------
BAD = [
    (b"not json", 400, "body"),
    (b"[1, 2]", 400, "body"),
    ({"type": "order.paid", "order": {}}, 400, "event_id"),
    ({"event_id": "b", "type": "order.shipped", "order": {}}, 400, "type"),
    ({"event_id": "b", "type": "order.paid"}, 400, "order"),
    ({"event_id": "b", "type": "order.paid", "order": {"number": "SO-B", "items": []}}, 400, "order.items"),
    (event("b", "paid", snapshot("SO-B", sku="NOPE", customer={"phone": "13800138000"})), 422,
     "order.items[0].sku"),
    (event("b", "paid", snapshot("SO-B", qty=0, customer={"phone": "13800138000"})), 400,
     "order.items[0].quantity"),
    (event("b", "paid", snapshot("SO-B", final="-5", customer={"phone": "13800138000"})), 400,
     "order.items[0].final_price"),
    (event("b", "paid", snapshot("SO-B", final_total="99", customer={"phone": "13800138000"})), 422,
     "order.final_total"),
    (event("b", "paid", snapshot("SO-B")), 400, "order.customer"),
    (event("b", "paid", snapshot("SO-B", opportunity_id=2**31 + 5)), 404, "order.opportunity_id"),
    (event("b", "paid", snapshot("SO-B", opportunity_id=999999)), 422, "order.opportunity_id"),
    (event("b", "paid", snapshot("SO-B", customer={"phone": "12"})), 400, "order.customer.phone"),
    (event("b", "paid", snapshot("SO-B", customer={"registered_user_id": "u-404"})), 422,
     "order.customer.registered_user_id"),
    ({**event("b", "paid", snapshot("SO-B", customer={"phone": "13800138000"})), "occurred_at": "soon"}, 400,
     "occurred_at"),
]


@pytest.mark.parametrize("payload, status, field", BAD)
def test_bad_bodies_are_refused_with_the_field_and_kept(client, session, math, payload, status, field):
    raw = payload if isinstance(payload, bytes) else None
    resp = post(client, payload, raw=raw)
    assert resp.status_code == status and resp.get_json()["field"] == field, resp.get_json()
    rows = session.scalars(select(ShopEvent)).all()
    if raw is not None:  # not a JSON object: refused by the central guard before any signature check
        assert rows == []
    else:
        assert [r.outcome for r in rows] == ["rejected"] and rows[0].event_id.startswith("rejected:")
        assert rows[0].detail.startswith(field)
    assert session.scalar(select(func.count()).select_from(Order)) == 0


def test_a_corrected_event_with_the_same_id_is_applied_after_a_rejection(client, session, math):
    opp = owned_opportunity(session)
    assert post(client, event("r-1", "paid", snapshot("SO-R", opp, sku="NOPE"))).status_code == 422
    assert post(client, event("r-1", "paid", snapshot("SO-R", opp))).get_json()["outcome"] == "applied"


def test_a_body_over_the_cap_is_refused(client, session):
    resp = post(client, None, raw=b"{" + b" " * (256 * 1024) + b"}")
    assert resp.status_code == 413 and resp.get_json()["field"] == "body"


# --- PostgreSQL: two posts of one event at once -------------------------------------------------------------
def test_concurrent_posts_of_one_event_apply_it_once_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        product(db.session, "MATH-100", 100)
        opp = owned_opportunity(db.session)
        opp_id, body = opp.id, json.dumps(event("pg-1", "paid", snapshot("SO-PG", opp))).encode()
        db.session.remove()
    barrier, answers = threading.Barrier(2), []

    def send():
        client = pg_app.test_client()
        barrier.wait()
        resp = client.post(URL, data=body, content_type="application/json",
                           headers=callback_headers(HEADERS, SECRET, body))
        answers.append((resp.status_code, resp.get_json()["outcome"]))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == [(200, "applied"), (200, "duplicate")]
    with pg_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ShopEvent)) == 1
        assert db.session.scalar(select(func.count()).select_from(Order)) == 1
        assert db.session.get(Opportunity, opp_id).status == WON
        db.session.remove()
    refund = json.dumps(event("pg-2", "refunded", snapshot("SO-PG", opportunity_id=opp_id))).encode()
    resp = pg_app.test_client().post(URL, data=refund, content_type="application/json",
                                     headers=callback_headers(HEADERS, SECRET, refund))
    assert resp.status_code == 200 and resp.get_json()["detail"] == "refunded; opportunity lost"
    with pg_app.app_context():
        opp = db.session.get(Opportunity, opp_id)
        assert (opp.status, opp.lost_reason.code) == (LOST, "refunded")


# --- the README's signing examples (standard library; bash + openssl) ---------------------------------------
def readme_shop_headers(secret: str, body: bytes) -> dict:
    """The README's Python example, verbatim but for the clock (the test's instant)."""
    import hashlib
    import hmac
    import secrets

    timestamp, nonce = str(int(clock.timestamp())), secrets.token_hex(8)
    text = "\n".join((timestamp, nonce, hashlib.sha256(body).hexdigest()))
    signature = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Shop-Timestamp": timestamp, "X-Shop-Nonce": nonce,
            "X-Shop-Signature": signature}


CURL_SIGNING = r"""
TS=$1; NONCE=$(openssl rand -hex 8)
DIGEST=$(printf '%s' "$BODY" | openssl dgst -sha256 -hex | sed 's/^.* //')
SIG=$(printf '%s\n%s\n%s' "$TS" "$NONCE" "$DIGEST" \
  | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/^.* //')
echo "$TS $NONCE $SIG"
"""


def test_the_readme_examples_sign_as_the_webhook_verifies(client, session, math):
    import shutil
    import subprocess

    opp = owned_opportunity(session)
    body = json.dumps(event("readme-py", "created", snapshot("SO-PY", opp))).encode()
    resp = client.post(URL, data=body, headers=readme_shop_headers(SECRET, body))
    assert resp.status_code == 200 and resp.get_json()["outcome"] == "applied", resp.get_json()
    if shutil.which("openssl") is None:
        pytest.skip("no openssl for the curl example")
    body = json.dumps(event("readme-sh", "paid", snapshot("SO-PY", opp)), ensure_ascii=False).encode()
    out = subprocess.run(["bash", "-c", CURL_SIGNING, "sign", str(int(clock.timestamp()))], check=True,
                         capture_output=True, text=True,
                         env={"BODY": body.decode(), "SECRET": SECRET, "PATH": "/usr/bin:/bin"}).stdout
    ts, nonce, sig = out.split()
    resp = client.post(URL, data=body, content_type="application/json", headers={
        "X-Shop-Timestamp": ts, "X-Shop-Nonce": nonce, "X-Shop-Signature": sig})
    assert resp.status_code == 200 and resp.get_json()["status"] == "paid", resp.get_json()
