"""Click-to-call: caller-ID choice (same area, caps, least used), caps taken atomically, every refusal
through the HTTP endpoint, the data scope, and the browser endpoint's CSRF check."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from app.clock import utcnow
from app.models.calls import (
    CALL_ANSWERED,
    CALL_DIALING,
    CALL_FAILED,
    COUNTER_CALLEE_DAY,
    COUNTER_NUMBER_DAY,
    CallCounter,
    CallRecord,
    DoNotCall,
)
from app.models.metadata import ConfigItem
from app.models.sales import Customer, Opportunity
from app.services.calls import dialing
from app.services.calls.dialing import CallRefused, Target
from app.services.errors import DomainError
from app.services.metadata import cache
from tests import factories as f
from tests.conftest import api_token
from tests.helpers import utc
from tests.test_ownership import build_world, owned

AT = "2026-03-02T12:00:00+08:00"  # a Monday, noon in Shanghai: the clock and NOW agree
NOW = utc(AT)
pytestmark = pytest.mark.instant(AT)


@pytest.fixture
def world(session):
    return build_world(session)


@pytest.fixture
def setup(session, world):
    """A simulator interface (all callbacks at once), a line open at any time, a seat for a1."""
    iface = f.make_interface(session, options={"realtime": False})
    line = f.make_line(session, iface)
    f.make_seat(session, line, world.emp(session, "a1"))
    return iface, line


def client_of(app, session, world, name: str, role: str = "Salesperson"):
    emp = world.emp(session, name)
    if emp.user_id is None:
        f.login_user(app, session, emp, role)
    client = app.test_client()
    client.get("/lang/en")
    resp = client.post("/login/", data={"username": f"user{emp.id}", "password": f.PASSWORD})
    assert resp.status_code == 302
    return client


def counter(session, kind, key) -> int:
    session.expire_all()
    return sum(session.scalars(select(CallCounter.count).where(CallCounter.kind == kind,
                                                               CallCounter.key == str(key))))


# --- caller-ID choice and caps (service) -------------------------------------------------------------
def test_same_area_first_then_least_used_today_and_capped_numbers_skipped(session, world, setup):
    _iface, line = setup
    bj1 = f.make_number(session, line, area="北京", daily_cap=2)
    bj2 = f.make_number(session, line, area="北京市", daily_cap=5)
    gz = f.make_number(session, line, area="广州", daily_cap=10)
    f.make_number(session, line, area="北京", status="suspended", status_note="complaint")
    order = [n.id for n in dialing.candidate_numbers(session, line.id, "北京", NOW)]
    assert order[:2] == [bj1.id, bj2.id] and order[2] == gz.id and len(order) == 3
    taken = [dialing.take_number(session, line.id, "北京", NOW).id for _ in range(7)]
    # least used first among the same area (bj1, bj2 alternate), bj1 stops at its cap of 2, then bj2
    # fills up to its cap, and only then a number of another area is used.
    assert taken == [bj1.id, bj2.id, bj1.id, bj2.id, bj2.id, bj2.id, bj2.id]
    assert dialing.take_number(session, line.id, "北京", NOW).id == gz.id
    assert counter(session, COUNTER_NUMBER_DAY, bj1.id) == 2
    # a callee from elsewhere gets the least used number
    assert dialing.take_number(session, line.id, "成都", NOW).id == gz.id
    # the next business day starts from zero
    assert dialing.take_number(session, line.id, "北京", NOW + dt.timedelta(days=1)).id == bj1.id


def test_rate_limit_per_period_and_no_number_left(session, world, setup):
    _iface, line = setup
    num = f.make_number(session, line, daily_cap=10, rate_limit=2, rate_period_minutes=60)
    assert dialing.take_number(session, line.id, None, NOW) is not None
    assert dialing.take_number(session, line.id, None, NOW + dt.timedelta(minutes=5)) is not None
    assert dialing.take_number(session, line.id, None, NOW + dt.timedelta(minutes=10)) is None
    # the day counter was given back when the rate limit refused
    assert counter(session, COUNTER_NUMBER_DAY, num.id) == 2
    assert dialing.take_number(session, line.id, None, NOW + dt.timedelta(minutes=61)) is not None


def test_take_slot_never_exceeds_the_cap(session):
    window = dt.datetime(2026, 3, 1, 16)
    got = [dialing.take_slot(session, COUNTER_CALLEE_DAY, "+8613700000001", window, 3) for _ in range(5)]
    assert got == [1, 2, 3, None, None]
    assert dialing.take_slot(session, COUNTER_CALLEE_DAY, "+8613700000002", window, 0) is None


def test_area_of_a_callee_by_region_or_geocoder(session, world):
    assert dialing.same_area("广州", "广东省广州市") and dialing.same_area("北京", "北京市")
    assert not dialing.same_area("北京", "上海") and not dialing.same_area(None, "北京")
    assert dialing.phone_area("+8618612345678") == "北京市"
    opp_id = owned(session, world, "a1")[0]
    target = dialing.resolve_target(session, world.a1, opportunity_id=opp_id)
    assert target.area == dialing.phone_area(target.phone)  # the test customer has no region
    session.get(Customer, target.customer_id).region = "成都"
    session.commit()
    target = dialing.resolve_target(session, world.a1, customer_id=target.customer_id)
    assert target.area == "成都" and target.opportunity_id == opp_id  # a1's own opportunity is attached


def test_calling_windows_are_validated_and_read_in_the_business_time_zone(session):
    assert dialing.parse_windows(" 09:00-12:00， 13:30-20:30") == [
        (dt.time(9), dt.time(12)), (dt.time(13, 30), dt.time(20, 30))]
    assert dialing.parse_windows("") == []
    for bad in ("9-12", "12:00-09:00", "09:00-12:00,11:00-13:00", "25:00-26:00", "09:00-24:30"):
        with pytest.raises(DomainError):
            dialing.parse_windows(bad)
    # 04:00 UTC is 12:00 in Shanghai
    assert dialing.within_windows(session, "11:00-12:30", NOW)
    assert not dialing.within_windows(session, "09:00-12:00,13:30-20:30", NOW)
    assert dialing.within_windows(session, "20:00-24:00", dt.datetime(2026, 3, 2, 15, 59))
    # the start is in the window, the end is not
    assert dialing.within_windows(session, "12:00-12:30", NOW)
    assert not dialing.within_windows(session, "12:00-12:30", NOW - dt.timedelta(seconds=1))
    assert not dialing.within_windows(session, "11:00-12:00", NOW)


def test_line_busy_counts_active_calls_but_not_stale_ones(session, world, setup):
    _iface, line = setup
    line.concurrency_limit = 1
    session.commit()
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    target = dialing.resolve_target(session, world.a1, opportunity_id=opp_id)
    call = dialing.reserve(session, world.a1, target, NOW)
    call.status, call.updated_at = CALL_ANSWERED, NOW + dt.timedelta(seconds=1)
    session.commit()
    with pytest.raises(CallRefused) as refused:
        dialing.reserve(session, world.a1, target, NOW + dt.timedelta(minutes=5))
    assert refused.value.reason == "line_busy"
    session.rollback()
    # no callback for longer than calls.line_busy_minutes (default 30): the call no longer holds a channel
    later = NOW + dt.timedelta(minutes=dialing.STALE_MINUTES + 1)
    assert dialing.reserve(session, world.a1, target, later).id != call.id
    session.rollback()
    # an administrator who shortens it frees the channel sooner
    with pytest.raises(CallRefused):
        dialing.reserve(session, world.a1, target, NOW + dt.timedelta(minutes=11))
    session.rollback()
    session.scalar(select(ConfigItem).where(ConfigItem.key == dialing.STALE_MINUTES_KEY)).value = "10"
    session.commit()
    assert dialing.reserve(session, world.a1, target, NOW + dt.timedelta(minutes=11)).id != call.id


def test_a_refused_click_takes_no_slot(session, world, setup):
    _iface, line = setup
    opp_id = owned(session, world, "a1")[0]
    target: Target = dialing.resolve_target(session, world.a1, opportunity_id=opp_id)
    with pytest.raises(CallRefused) as refused:  # the line has no number at all
        dialing.click_to_call(session, world.a1, NOW, opportunity_id=opp_id)
    assert refused.value.reason == "no_number"
    assert counter(session, COUNTER_CALLEE_DAY, target.phone) == 0
    assert session.scalar(select(CallRecord.id).where(CallRecord.line_id == line.id)) is None


# --- the HTTP endpoint -------------------------------------------------------------------------------
def dial(client, **body):
    resp = client.post("/calls/dial", json=body)
    return resp.status_code, resp.get_json()


def test_every_refusal_reason_through_the_endpoint(app, session, world, setup):
    iface, line = setup
    number = f.make_number(session, line, daily_cap=100)
    opp_id = owned(session, world, "a1")[0]
    phone = session.get(Customer, session.get(Opportunity, opp_id).customer_id).phone
    a2 = client_of(app, session, world, "a2")
    owned(session, world, "a2")
    a2_opp = session.scalar(select(Opportunity.id).where(Opportunity.owner_id == world.a2))
    assert dial(a2, opportunity_id=a2_opp) == (422, {
        "reason": "no_seat", "message": "You have no active seat: ask an administrator for one."})
    client = client_of(app, session, world, "a1")

    def refused(reason, status=409):
        code, body = dial(client, opportunity_id=opp_id)
        assert (code, body["reason"]) == (status, reason), body
        assert body["message"]

    line.enabled = False
    session.commit()
    refused("line_disabled")
    line.enabled, iface.enabled = True, False
    session.commit()
    refused("line_disabled")
    iface.enabled, line.calling_windows = True, "12:30-13:00"  # it is 12:00
    session.commit()
    refused("outside_hours")
    line.calling_windows = None
    session.add(DoNotCall(phone=phone, reason="asked"))
    session.commit()
    refused("do_not_call")
    session.query(DoNotCall).update({"expires_at": utcnow() - dt.timedelta(minutes=1)})  # expired: callable
    session.commit()
    number.daily_cap = 0
    session.commit()
    refused("no_number")
    number.daily_cap = 100
    line.concurrency_limit = 1
    session.commit()
    code, body = dial(client, opportunity_id=opp_id)
    assert code == 201 and body["status"] == CALL_DIALING and "*" in body["callee"]
    assert phone not in str(body)
    refused("line_busy")
    line.concurrency_limit = 30
    session.scalar(select(ConfigItem).where(ConfigItem.key == "calls.max_daily_attempts")).value = "2"
    session.commit()
    cache.clear()
    assert dial(client, opportunity_id=opp_id)[0] == 201
    refused("callee_limit")
    assert counter(session, COUNTER_CALLEE_DAY, phone) == 2
    customer = session.get(Customer, session.get(Opportunity, opp_id).customer_id)
    customer.phone = ""
    session.commit()
    refused("no_phone", 422)


def test_provider_refusal_marks_the_call_failed_and_gives_the_slots_back(app, session, world, setup):
    iface, line = setup
    iface.options = '{"refuse": true}'
    session.commit()
    number = f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    code, body = dial(client_of(app, session, world, "a1"), opportunity_id=opp_id)
    assert code == 409 and body["reason"] == "provider_error"
    call = session.scalar(select(CallRecord).where(CallRecord.line_id == line.id))
    assert call.status == CALL_FAILED and call.result == "provider_error"
    assert counter(session, COUNTER_NUMBER_DAY, number.id) == 0
    assert counter(session, COUNTER_CALLEE_DAY, call.callee_phone) == 0


def test_a_salesperson_cannot_dial_another_salespersons_opportunity(app, session, world, setup):
    _iface, line = setup
    f.make_number(session, line)
    theirs = owned(session, world, "b1")[0]
    customer_id = session.get(Opportunity, theirs).customer_id
    client = client_of(app, session, world, "a1")
    assert dial(client, opportunity_id=theirs)[0] == 404
    assert dial(client, customer_id=customer_id)[0] == 404
    assert dial(client, opportunity_id=999999)[0] == 404
    assert session.scalar(select(CallRecord.id).where(CallRecord.line_id == line.id)) is None
    # never a phone number, and exactly one target
    assert dial(client, phone="+8613800138000")[0] == 400
    assert dial(client)[0] == 400
    assert dial(client, opportunity_id="x")[0] == 400


def test_dial_by_customer_and_privacy_binding_and_status(app, session, world, setup):
    _iface, line = setup
    line.privacy_binding, line.binding_minutes = True, 15
    session.commit()
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    customer_id = session.get(Opportunity, opp_id).customer_id
    client = client_of(app, session, world, "a1")
    page = client.get(f"/customer/show/{customer_id}").get_data(as_text=True)
    assert 'id="call-button"' in page and f'{{"customer_id": {customer_id}}}' in page.replace("&#34;", '"')
    code, body = dial(client, customer_id=customer_id)
    assert code == 201 and body["privacy_number"].startswith("+86170")
    call = session.get(CallRecord, body["id"])
    assert call.opportunity_id == opp_id and call.binding_expires_at is not None
    assert call.binding_expires_at - call.started_at == dt.timedelta(minutes=15)
    status = client.get(f"/calls/status/{call.id}")
    assert status.status_code == 200 and status.get_json()["status"] == CALL_DIALING
    # another salesperson cannot read it
    assert client_of(app, session, world, "b1").get(f"/calls/status/{call.id}").status_code == 404


def test_the_jwt_api_dials_and_a_role_without_can_call_cannot(app, session, world, setup):
    _iface, line = setup
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    client_of(app, session, world, "a1")
    emp = world.emp(session, "a1")
    client = app.test_client()
    token = api_token(client, f"user{emp.id}", f.PASSWORD)
    resp = client.post("/api/v1/calls/dial", json={"opportunity_id": opp_id},
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 201, resp.get_json()
    call_id = resp.get_json()["id"]
    resp = client.get(f"/api/v1/calls/{call_id}/status", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.get_json()["status"] == CALL_DIALING
    assert client.post("/api/v1/calls/dial", json={"opportunity_id": opp_id}).status_code == 401
    # QA inspectors read calls but do not call
    qa = client_of(app, session, world, "b1", role="QA Inspector")
    assert qa.post("/calls/dial", json={"opportunity_id": opp_id}).status_code == 403


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_browser_endpoint_needs_the_csrf_token(app, session, world, setup):
    _iface, line = setup
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    emp = world.emp(session, "a1")
    f.login_user(app, session, emp, "Salesperson")
    client = app.test_client()
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    client.post("/login/", data={"username": f"user{emp.id}", "password": f.PASSWORD, "csrf_token": token})
    assert client.post("/calls/dial", json={"opportunity_id": opp_id}).status_code == 400
    assert session.scalar(select(CallRecord.id).where(CallRecord.line_id == line.id)) is None
    page = client.get(f"/opportunityview/show/{opp_id}").get_data(as_text=True)
    assert 'id="call-button"' in page
    token = re.search(r'var token = "([^"]+)"', page).group(1)
    resp = client.post("/calls/dial", json={"opportunity_id": opp_id}, headers={"X-CSRFToken": token})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:300]
