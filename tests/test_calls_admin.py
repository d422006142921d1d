"""Admin CRUD of outbound calling: interfaces (secrets never shown back), lines (calling windows),
caller-ID numbers (E.164, status notes), seats (one employee one active seat), the do-not-call list
(add, import, API) and the scoped, masked call-record pages."""

from __future__ import annotations

import datetime as dt
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


def test_a_call_record_reads_in_chinese_with_its_line_and_business_time(app, session):
    """The record page names the line 线路 (not the import page's 行号) and shows times in the business
    time zone, without "(UTC)" and without microseconds."""
    w = build_world(session)
    emp = w.emp(session, "a1")
    call = f.make_call_record(session, emp, started_at=dt.datetime(2026, 11, 17, 2, 0, 5, 123456))
    client = app.test_client()  # Chinese by default
    login(client, "admin")
    show = client.get(f"/callrecordview/show/{call.id}").get_data(as_text=True)
    assert "外呼线路" in show and "行号" not in show
    assert "2026-11-17 10:00:05" in show and "123456" not in show and "UTC" not in show


def test_configuration_commands_validate_then_write_without_a_request(app, session):
    """The rules the forms and the API run are a service command a CLI or a job calls as well."""
    from app.services.calls import config
    from app.services.errors import DomainError

    interface = f.make_interface(session)
    line = CallLine(name="  CLI 线路 ", interface_id=interface.id, concurrency_limit=5, binding_minutes=30,
                    calling_windows="13:30-20:30，09:00-12:00")
    config.save(session, line)
    session.commit()
    assert (line.name, line.calling_windows) == ("CLI 线路", "09:00-12:00,13:30-20:30")
    with pytest.raises(DomainError) as refused:
        config.save(session, CallLine(name="CLI 线路", interface_id=interface.id, concurrency_limit=5,
                                      binding_minutes=30))
    assert (refused.value.field, refused.value.status) == ("name", 409)
    session.rollback()
    listed = count(session, DoNotCall)
    with pytest.raises(DomainError) as refused:
        config.save(session, DoNotCall(phone="not a phone"))
    assert refused.value.field == "phone"
    session.rollback()
    assert count(session, CallLine, CallLine.interface_id == interface.id) == 1
    assert count(session, DoNotCall) == listed


def test_call_config_command_creates_and_changes_configuration_through_the_same_rules(runner, session):
    """A deploy script sets up interfaces, lines, numbers and seats with `crm call-config`: the rules the
    forms run refuse the same settings, with the field, and nothing is written; run again, it updates."""
    def call_config(*args):
        return runner.invoke(args=["crm", "call-config", *args])

    def named(model, column, key):
        session.expire_all()
        return session.scalar(select(model).where(column == key))

    interfaces, lines = count(session, OutboundInterface), count(session, CallLine)
    seats = count(session, Seat)
    result = call_config("interface", "主接口", "--set", "provider=http",
                         "--set", "base_url=https://calls.example.com/")
    assert result.exit_code != 0
    assert "callback_secret_env: The HTTP provider needs a callback secret" in result.output
    assert count(session, OutboundInterface) == interfaces
    result = call_config("interface", "主接口", "--set", "provider=http",
                         "--set", "base_url=https://calls.example.com/",
                         "--set", "callback_secret_env=CALLS_CB")
    assert result.exit_code == 0, result.output
    assert "interface" in result.output and "created" in result.output
    interface = named(OutboundInterface, OutboundInterface.name, "主接口")
    # the column defaults a form would show, the URL normalised by the rules
    assert (interface.base_url, interface.connect_timeout, interface.enabled) == \
        ("https://calls.example.com", 3, True)

    result = call_config("line", " 北京线路 ", "--set", "interface=主接口", "--set", "concurrency_limit=20",
                         "--set", "calling_windows=13:30-20:30，09:00-12:00")
    assert result.exit_code == 0, result.output
    line = named(CallLine, CallLine.name, "北京线路")
    assert (line.name, line.interface_id, line.concurrency_limit, line.calling_windows,
            line.binding_minutes) == ("北京线路", interface.id, 20, "09:00-12:00,13:30-20:30", 30)
    # Again with one change: the same row, updated; a cleared window means any time.
    result = call_config("line", "北京线路", "--set", "calling_windows=", "--set", "privacy_binding=yes")
    assert result.exit_code == 0 and "updated" in result.output, result.output
    assert count(session, CallLine) == lines + 1
    assert (line.calling_windows, line.privacy_binding, line.concurrency_limit) == (None, True, 20)

    assert call_config("number", "01058000001", "--set", "line=北京线路", "--set", "area=北京").exit_code == 0
    result = call_config("number", "+861058000001", "--set", "status=suspended")
    assert result.exit_code != 0 and "status_note: Say why the number is suspended" in result.output
    assert call_config("number", "+861058000001", "--set", "status=suspended",
                       "--set", "status_note=carrier complaint").exit_code == 0
    number = named(CallNumber, CallNumber.number, "+861058000001")
    assert (number.number, number.line_id, number.area, number.status, number.daily_cap) == \
        ("+861058000001", line.id, "北京", "suspended", 200)

    emp = f.employee(session, f.org_unit(session))
    seat = ("--set", "line=北京线路", "--set", f"employee={emp.employee_no}")
    assert call_config("seat", "CLI-1", *seat).exit_code == 0
    result = call_config("seat", "CLI-2", *seat)
    assert result.exit_code != 0
    assert "employee: This employee already has the active seat CLI-1" in result.output

    # What is not a setting is refused before anything runs.
    for setting in ("interface=nope", "encrypted_secret=x", "concurrency_limit=many", "enabled=maybe"):
        result = call_config("line", "北京线路", "--set", setting)
        assert result.exit_code != 0 and "--set" in result.output, (setting, result.output)
    assert count(session, Seat) == seats + 1 and count(session, CallLine) == lines + 1


def test_a_line_can_be_saved_disabled_from_the_browser(admin, session):
    """Every checkbox of every form may be left unchecked (an unchecked box sends nothing; FAB would make the
    field of a NOT NULL column required)."""
    iface = f.make_interface(session)
    form = {"name": "备用线路", "interface": str(iface.id), "trunk": "", "concurrency_limit": "5",
            "calling_windows": "", "binding_minutes": "30"}  # no "enabled": the box is unchecked
    resp = admin.post("/calllineview/add", data=form)
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    assert session.scalar(select(CallLine.enabled).where(CallLine.name == "备用线路")) is False
