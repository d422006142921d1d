"""Admin CRUD of outbound calling: interfaces (secrets never shown back), lines (calling windows),
caller-ID numbers (E.164, status notes), seats (one employee one active seat), the do-not-call list
(add, import, API) and the scoped, masked call-record pages."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models.calls import CallLine, CallNumber, CallRecord, DoNotCall, OutboundInterface, Seat
from app.services.sms.secrets import decrypt
from tests import factories as f
from tests.conftest import api_token, login
from tests.helpers import field_errors
from tests.test_ownership import build_world


@pytest.fixture
def admin(client):
    login(client, "admin")
    return client


@pytest.fixture
def line(session):
    return f.make_line(session, f.make_interface(session))


def count(session, model, *where) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model).where(*where))


def test_interface_secrets_are_stored_encrypted_and_never_shown_back(admin, session):
    form = {"name": "云呼叫中心", "provider": "http", "enabled": "y", "base_url": "https://cc.example.com/",
            "access_key_env": "CC_KEY", "secret_env": "", "new_secret": "top-secret-1",
            "callback_secret_env": "", "new_callback_secret": "cb-secret-1", "connect_timeout": "3",
            "read_timeout": "10", "options": ""}
    resp = admin.post("/outboundinterfaceview/add", data=form)
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    iface = session.scalar(select(OutboundInterface).where(OutboundInterface.name == "云呼叫中心"))
    assert iface.base_url == "https://cc.example.com"
    assert decrypt(iface.encrypted_secret, "test-secret") == "top-secret-1"
    assert decrypt(iface.encrypted_callback_secret, "test-secret") == "cb-secret-1"
    for url in (f"/outboundinterfaceview/edit/{iface.id}", f"/outboundinterfaceview/show/{iface.id}",
                "/outboundinterfaceview/list/"):
        page = admin.get(url).get_data(as_text=True)
        assert "top-secret-1" not in page and iface.encrypted_secret not in page and "cb-secret-1" not in page
    # an edit leaving the secret empty keeps it
    resp = admin.post(f"/outboundinterfaceview/edit/{iface.id}", data={**form, "new_secret": "",
                                                                       "new_callback_secret": ""})
    assert resp.status_code == 302
    session.expire_all()
    assert decrypt(session.get(OutboundInterface, iface.id).encrypted_secret, "test-secret") == "top-secret-1"


@pytest.mark.parametrize("change,field", [
    ({"base_url": "http://cc.example.com"}, "base_url"),
    ({"new_callback_secret": ""}, "callback_secret_env"),
    ({"access_key_env": "bad name"}, "access_key_env"),
    ({"read_timeout": "0"}, "read_timeout"),
    ({"options": "[1, 2]"}, "options"),
])
def test_interface_form_errors(admin, session, change, field):
    form = {"name": "x", "provider": "http", "base_url": "https://cc.example.com", "access_key_env": "",
            "secret_env": "", "new_secret": "", "callback_secret_env": "", "new_callback_secret": "cb",
            "connect_timeout": "3", "read_timeout": "10", "options": ""}
    resp = admin.post("/outboundinterfaceview/add", data={**form, **change})
    assert resp.status_code == 200 and field in field_errors(resp.get_data(as_text=True))
    assert count(session, OutboundInterface, OutboundInterface.name == "x") == 0


def test_line_calling_windows_are_validated_and_normalised(admin, session):
    iface = f.make_interface(session)
    form = {"name": "主线路", "interface": str(iface.id), "trunk": "", "concurrency_limit": "10",
            "enabled": "y", "calling_windows": "13:30-20:30, 09:00-12:00", "binding_minutes": "30"}
    for bad in ("9点-12点", "12:00-09:00", "09:00-12:00,11:00-13:00"):
        resp = admin.post("/calllineview/add", data={**form, "calling_windows": bad})
        assert resp.status_code == 200
        assert "calling_windows" in field_errors(resp.get_data(as_text=True)), bad
    assert admin.post("/calllineview/add", data=form).status_code == 302
    assert session.scalar(select(CallLine.calling_windows).where(CallLine.name == "主线路")) == \
        "09:00-12:00,13:30-20:30"


def test_numbers_are_e164_and_a_suspended_number_needs_a_note(admin, session, line):
    form = {"number": "010 5800 0001", "line": str(line.id), "area": "北京", "daily_cap": "100",
            "rate_limit": "", "rate_period_minutes": "60", "status": "active", "status_note": ""}
    assert admin.post("/callnumberview/add", data=form).status_code == 302
    assert session.scalar(select(CallNumber.area).where(CallNumber.number == "+861058000001")) == "北京"
    resp = admin.post("/callnumberview/add", data=form)  # the same number again
    assert "number" in field_errors(resp.get_data(as_text=True))
    resp = admin.post("/callnumberview/add", data={**form, "number": "12345"})
    assert "number" in field_errors(resp.get_data(as_text=True))
    resp = admin.post("/callnumberview/add", data={**form, "number": "+861058000002", "status": "flagged"})
    assert "status_note" in field_errors(resp.get_data(as_text=True))
    resp = admin.post("/callnumberview/add", data={**form, "number": "+861058000002", "status": "flagged",
                                                   "status_note": "marked as spam by carriers"})
    assert resp.status_code == 302


def test_one_employee_has_one_active_seat_a_form_error_not_a_500(admin, session, line):
    emp = f.employee(session, f.org_unit(session))
    form = {"seat_no": "S-100", "line": str(line.id), "employee": str(emp.id), "active": "y"}
    assert admin.post("/seatview/add", data=form).status_code == 302
    resp = admin.post("/seatview/add", data={**form, "seat_no": "S-101"})
    assert resp.status_code == 200
    assert "already has the active seat S-100" in field_errors(resp.get_data(as_text=True))["employee"]
    # an inactive second seat is fine, and the seat number is unique
    assert admin.post("/seatview/add", data={**form, "seat_no": "S-101", "active": ""}).status_code == 302
    resp = admin.post("/seatview/add", data={**form, "employee": ""})
    assert "seat_no" in field_errors(resp.get_data(as_text=True))
    inactive = session.scalar(select(Seat).where(Seat.seat_no == "S-101"))
    resp = admin.post(f"/seatview/edit/{inactive.id}", data={**form, "seat_no": "S-101"})
    assert resp.status_code == 200 and "employee" in field_errors(resp.get_data(as_text=True))
    assert count(session, Seat, Seat.employee_id == emp.id, Seat.active.is_(True)) == 1


def test_do_not_call_list_add_import_and_api(admin, client, session):
    resp = admin.post("/donotcallview/add",
                      data={"phone": "13800138000", "reason": "asked", "expires_at": ""})
    assert resp.status_code == 302
    assert session.scalar(select(DoNotCall.source).where(DoNotCall.phone == "+8613800138000")) == "manual"
    resp = admin.post("/donotcallview/add", data={"phone": "+8613800138000", "reason": "", "expires_at": ""})
    assert "phone" in field_errors(resp.get_data(as_text=True))
    page = admin.get("/donotcallview/list/").get_data(as_text=True)
    assert "138****8000" in page and "13800138000" not in page
    text = "phone\n13800138001,complaint\n13800138000\nbad\n"
    resp = admin.post("/donotcallview/import/", data={"text": text,
                                                      "reason": "import"})
    assert resp.status_code == 200
    assert session.scalar(select(DoNotCall.reason).where(DoNotCall.phone == "+8613800138001")) == "complaint"
    token = api_token(client, "admin")
    resp = client.post("/api/v1/do_not_call/import", json={"phones": ["13800138002", "nope"]},
                       headers={"Authorization": f"Bearer {token}"})
    body = resp.get_json()
    assert resp.status_code == 200 and body["added"] == 1 and body["errors"][0]["line"] == 2
    listed = client.get("/api/v1/do_not_call/", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert all("*" in row["phone"] for row in listed["result"])


def test_call_records_are_scoped_masked_and_show_the_transcript(app, session):
    w = build_world(session)
    mine = f.make_call_record(session, w.emp(session, "a1"), callee_phone="+8613711112222",
                              recording_url="https://rec.example/a.mp3",
                              transcript=[{"speaker": "agent", "start": 0, "end": 2, "text": "您好，学而优"}])
    theirs = f.make_call_record(session, w.emp(session, "b1"), callee_phone="+8613733334444")
    emp = w.emp(session, "a1")
    f.login_user(app, session, emp, "Salesperson")
    client = app.test_client()
    client.get("/lang/en")
    client.post("/login/", data={"username": f"user{emp.id}", "password": f.PASSWORD})
    page = client.get("/callrecordview/list/").get_data(as_text=True)
    assert "137****2222" in page and "13711112222" not in page and "137****4444" not in page
    assert 'href="https://rec.example/a.mp3"' in page
    show = client.get(f"/callrecordview/show/{mine.id}").get_data(as_text=True)
    assert "您好，学而优" in show and "137****2222" in show
    assert "137****4444" not in client.get(f"/callrecordview/show/{theirs.id}").get_data(as_text=True)
    token = api_token(client, f"user{emp.id}", f.PASSWORD)
    auth = {"Authorization": f"Bearer {token}"}
    rows = client.get("/api/v1/call_record/", headers=auth).get_json()["result"]
    assert [r["uid"] for r in rows] == [mine.uid] and rows[0]["callee_phone"] == "137****2222"
    assert json.loads(rows[0]["transcript"])[0]["text"] == "您好，学而优"
    # filters by status work on the page
    page = client.get("/callrecordview/list/?_flt_0_status=busy").get_data(as_text=True)
    assert "137****2222" not in page
    assert count(session, CallRecord, CallRecord.id == theirs.id) == 1
