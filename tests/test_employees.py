"""Employees through the real pages and REST API: phone normalisation, field errors for bad input with
nothing written, manager cycles, disabled level items, delete rules and the mark-resigned action."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select

from app.models.employee import HR_RESIGNED, Employee
from app.models.metadata import DictItem, DictType
from app.models.org import OrgUnit
from app.services.employees import LEVEL_DICT
from tests import factories
from tests.conftest import login
from tests.helpers import field_errors, flashes


# --- helpers ----------------------------------------------------------------------------------------
class FormPage(HTMLParser):
    """What a browser would submit from a page's form, and the options each dropdown offers."""

    def __init__(self, html: str):
        super().__init__()
        self.values: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self._select = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") not in ("submit", "button"):
            if a.get("type") != "checkbox" or "checked" in a:
                self.values[a["name"]] = a.get("value") or ""
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
            self.options[self._select] = []
        elif tag == "option" and self._select:
            self.options[self._select].append(a.get("value", ""))
            if "selected" in a:
                self.values[self._select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select" and self._select:
            self.values.setdefault(self._select, (self.options[self._select] or [""])[0])
            self._select = None


def row(session, emp_id: int) -> dict:
    """The employee's row as the database has it now."""
    session.expire_all()
    return dict(session.execute(select(Employee.__table__).where(Employee.id == emp_id)).mappings().one())


def employee_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Employee))


def unit(session, code: str) -> OrgUnit:
    return session.scalar(select(OrgUnit).where(OrgUnit.code == code))


def level(session, code: str) -> DictItem:
    return factories.dict_item(session, LEVEL_DICT, code)


def add_form(team: OrgUnit, **values) -> dict:
    data = {"employee_no": "N0001", "name": "新员工", "phone": "138 1234 5678", "email": "new@example.com",
            "org_unit": team.id, "position": "Salesperson", "level": "__None", "manager": "__None",
            "hired_on": "2025-02-03", "left_on": "", "hr_status": "active", "user": "__None"}
    data.update(values)
    return {k: str(v) for k, v in data.items()}


@pytest.fixture
def team(session):
    return unit(session, "T-K12-1")


# --- create and edit --------------------------------------------------------------------------------
def test_create_through_form_normalises_phone(client, session, team):
    login(client, "admin")
    resp = client.post("/employeeview/add", data=add_form(team))
    assert resp.status_code == 302, field_errors(resp.text) or flashes(resp.text)
    emp = session.scalar(select(Employee).where(Employee.employee_no == "N0001"))
    assert emp.phone == "+8613812345678"
    assert (emp.org_unit_id, emp.hired_on, emp.hr_status) == (team.id, dt.date(2025, 2, 3), "active")


def test_create_through_api_normalises_phone_and_defaults_status(client, session, team):
    login(client, "admin")
    p2 = level(session, "P2").id
    resp = client.post("/api/v1/employee/", json={"employee_no": "N0002", "name": "API 员工",
                                                   "phone": "138 1234 5678", "org_unit": team.id,
                                                   "hired_on": "2025-02-03", "level": p2})
    assert resp.status_code == 201, resp.get_json()
    stored = row(session, resp.get_json()["id"])
    assert stored["phone"] == "+8613812345678"
    assert stored["hr_status"] == "active"
    assert stored["level_id"] == p2


def test_edit_through_form_and_api_normalises_phone(client, session, team):
    emp = factories.employee(session, team)
    login(client, "admin")
    page = FormPage(client.get(f"/employeeview/edit/{emp.id}").text)
    resp = client.post(f"/employeeview/edit/{emp.id}", data={**page.values, "phone": "139 8765 4321"})
    assert resp.status_code == 302, field_errors(resp.text) or flashes(resp.text)
    assert row(session, emp.id)["phone"] == "+8613987654321"

    resp = client.put(f"/api/v1/employee/{emp.id}", json={"phone": "+86 (136) 0000-1111"})
    assert resp.status_code == 200, resp.get_json()
    assert row(session, emp.id)["phone"] == "+8613600001111"


BAD_INPUT = [
    ("phone", "12345", "not a valid phone number"),
    ("phone", "call me", "not a phone number"),
    ("email", "not-an-email", "is not an e-mail address"),
    ("left_on", "2025-01-01", "leaving date is before the hiring date"),  # hired 2025-02-03
]


@pytest.mark.parametrize("field,value,message", BAD_INPUT)
def test_bad_input_refused_in_form_with_field_error(client, session, team, field, value, message):
    count = employee_count(session)
    login(client, "admin")
    resp = client.post("/employeeview/add", data=add_form(team, **{field: value}))
    assert resp.status_code == 200
    assert message in field_errors(resp.text).get(field, ""), field_errors(resp.text)
    assert employee_count(session) == count

    emp = factories.employee(session, team)
    before = row(session, emp.id)
    page = FormPage(client.get(f"/employeeview/edit/{emp.id}").text)
    resp = client.post(f"/employeeview/edit/{emp.id}",
                       data={**page.values, "hired_on": "2025-02-03", field: value})
    assert resp.status_code == 200
    assert message in field_errors(resp.text).get(field, ""), field_errors(resp.text)
    assert row(session, emp.id) == before


@pytest.mark.parametrize("field,value,message", BAD_INPUT)
def test_bad_input_refused_by_api_with_422(client, session, team, field, value, message):
    count = employee_count(session)
    login(client, "admin")
    body = {"employee_no": "N0003", "name": "坏数据", "phone": "138 1234 5678", "org_unit": team.id,
            "hired_on": "2025-02-03", field: value}
    resp = client.post("/api/v1/employee/", json=body)
    assert resp.status_code == 422
    assert resp.get_json()["field"] == field and message in resp.get_json()["message"]
    assert employee_count(session) == count

    emp = factories.employee(session, team)
    before = row(session, emp.id)
    resp = client.put(f"/api/v1/employee/{emp.id}", json={"hired_on": "2025-02-03", field: value})
    assert resp.status_code == 422 and resp.get_json()["field"] == field
    assert row(session, emp.id) == before


def test_manager_cycle_refused(client, session, team):
    b = factories.employee(session, team, name="Boss B")
    a = factories.employee(session, team, name="Report A", manager=b)
    c = factories.employee(session, team, name="Report C", manager=a)
    before = {e.id: row(session, e.id) for e in (a, b, c)}
    login(client, "admin")

    page = FormPage(client.get(f"/employeeview/edit/{b.id}").text)
    resp = client.post(f"/employeeview/edit/{b.id}", data={**page.values, "manager": str(a.id)})
    assert resp.status_code == 200
    message = "cannot report to themself or to one of their reports"
    assert message in field_errors(resp.text).get("manager", "")

    for manager in (a.id, c.id):  # direct and indirect report
        resp = client.put(f"/api/v1/employee/{b.id}", json={"manager": manager})
        assert resp.status_code == 422 and resp.get_json()["field"] == "manager", resp.get_json()
    resp = client.put(f"/api/v1/employee/{a.id}", json={"manager": a.id})
    assert resp.status_code == 422 and resp.get_json()["field"] == "manager"
    assert {e_id: row(session, e_id) for e_id in before} == before

    # A legal change goes through: C now reports straight to B.
    resp = client.put(f"/api/v1/employee/{c.id}", json={"manager": b.id})
    assert resp.status_code == 200, resp.get_json()
    assert row(session, c.id)["manager_id"] == b.id


# --- disabled level items ---------------------------------------------------------------------------
def enabled_level_ids(session) -> set[str]:
    session.expire_all()
    ids = session.scalars(select(DictItem.id).join(DictItem.dict_type)
                          .where(DictType.code == LEVEL_DICT, DictItem.enabled.is_(True)))
    return {str(i) for i in ids}


def test_disabled_level_cannot_be_chosen(client, session, team):
    p1 = level(session, "P1")
    p1.enabled = False
    session.commit()
    login(client, "admin")

    offered = FormPage(client.get("/employeeview/add").text).options["level"]
    assert str(p1.id) not in offered
    assert set(offered) - {"__None"} == enabled_level_ids(session)

    count = employee_count(session)
    resp = client.post("/employeeview/add", data=add_form(team, level=p1.id))
    assert resp.status_code == 200 and "level" in field_errors(resp.text)
    resp = client.post("/api/v1/employee/", json={"employee_no": "N0004", "name": "x", "org_unit": team.id,
                                                   "level": p1.id})
    assert resp.status_code == 422, resp.get_json()
    assert "disabled" in resp.get_json()["message"]
    assert employee_count(session) == count

    # Nor may an employee on another level be moved onto it.
    other = factories.employee(session, team)
    other_level = level(session, "P2")
    other.level_id = other_level.id
    session.commit()
    resp = client.put(f"/api/v1/employee/{other.id}", json={"level": p1.id})
    assert resp.status_code == 422
    page = FormPage(client.get(f"/employeeview/edit/{other.id}").text)
    assert str(p1.id) not in page.options["level"]
    resp = client.post(f"/employeeview/edit/{other.id}", data={**page.values, "level": str(p1.id)})
    assert resp.status_code == 200 and "level" in field_errors(resp.text)
    assert row(session, other.id)["level_id"] == other_level.id


def test_employee_keeps_disabled_level_when_saved_unchanged(client, session):
    emp = factories.employee_by_username(session, "sales11")  # seeded on P1
    p1 = level(session, "P1")
    assert emp.level_id == p1.id
    p1.enabled = False
    session.commit()
    login(client, "admin")

    page = FormPage(client.get(f"/employeeview/edit/{emp.id}").text)
    assert page.values["level"] == str(p1.id)  # still shown as the employee's level
    resp = client.post(f"/employeeview/edit/{emp.id}", data={**page.values, "position": "Senior sales"})
    assert resp.status_code == 302, field_errors(resp.text) or flashes(resp.text)
    stored = row(session, emp.id)
    assert (stored["level_id"], stored["position"]) == (p1.id, "Senior sales")

    resp = client.put(f"/api/v1/employee/{emp.id}", json={"name": "改名", "level": p1.id})
    assert resp.status_code == 200, resp.get_json()
    stored = row(session, emp.id)
    assert (stored["level_id"], stored["name"]) == (p1.id, "改名")
    # The add form still does not offer it.
    assert str(p1.id) not in FormPage(client.get("/employeeview/add").text).options["level"]


# --- delete -----------------------------------------------------------------------------------------
def test_delete_refused_for_login_or_reports_allowed_otherwise(client, session, team):
    with_login = factories.employee_by_username(session, "sales12")
    boss = factories.employee(session, team)
    factories.employee(session, team, manager=boss)
    plain = factories.employee(session, team)
    plain2 = factories.employee(session, team)
    gone = [plain.id, plain2.id]
    count = employee_count(session)
    login(client, "admin")

    for emp_id, reason in ((with_login.id, "has a login"), (boss.id, "direct reports")):
        resp = client.delete(f"/api/v1/employee/{emp_id}")
        assert resp.status_code == 409 and "has a login or direct reports" in resp.get_json()["message"]
        resp = client.post(f"/employeeview/delete/{emp_id}", follow_redirects=True)
        assert any("has a login or direct reports" in m for m in flashes(resp.text)), reason
    assert employee_count(session) == count

    resp = client.delete(f"/api/v1/employee/{gone[0]}")
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(f"/employeeview/delete/{gone[1]}", follow_redirects=True)
    assert resp.status_code == 200 and not flashes(resp.text)
    assert employee_count(session) == count - 2
    assert not session.scalars(select(Employee.id).where(Employee.id.in_(gone))).all()


# --- actions ----------------------------------------------------------------------------------------
@pytest.mark.instant("2026-06-17T07:30:00+08:00")  # still 16 June in UTC: left_on is the business day
def test_mark_resigned_action_sets_status_and_left_on(client, session, team):
    one = factories.employee(session, team)
    two = factories.employee(session, team)
    already_left = factories.employee(session, team)
    already_left.left_on = dt.date(2025, 1, 31)
    session.commit()
    untouched = factories.employee(session, team)
    login(client, "admin")

    resp = client.post("/employeeview/action_post",
                       data={"action": "mark_resigned", "rowid": [one.id, two.id, already_left.id]})
    assert resp.status_code == 302
    today = dt.date(2026, 6, 17)
    for emp, left_on in ((one, today), (two, today), (already_left, dt.date(2025, 1, 31))):
        stored = row(session, emp.id)
        assert (stored["hr_status"], stored["left_on"]) == (HR_RESIGNED, left_on)
    assert row(session, untouched.id)["hr_status"] == "active"

    resp = client.post(f"/employeeview/action/mark_resigned/{untouched.id}")
    assert resp.status_code == 302
    assert (row(session, untouched.id)["hr_status"], row(session, untouched.id)["left_on"]) == (HR_RESIGNED,
                                                                                                  today)


def test_mark_resigned_removes_the_login(client, session):
    emp = factories.employee_by_username(session, "sales13")
    login(client, "admin")
    resp = client.post(f"/employeeview/action/mark_resigned/{emp.id}")
    assert resp.status_code == 302
    assert row(session, emp.id)["hr_status"] == HR_RESIGNED
    other = client.application.test_client()
    resp = login(other, "sales13")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert other.get("/employeeview/list/").status_code == 302


def test_an_optional_dropdown_offers_a_visible_blank_choice(client):
    """FAB's blank choice has no text, which Select2 shows as "__None"; ours reads "—"."""
    login(client, "admin")
    form = client.get("/employeeview/add").text
    for field in ("manager", "level"):
        select = re.search(rf'<select[^>]*name="{field}".*?</select>', form, re.S).group(0)
        assert re.search(r'<option[^>]*value="__None"[^>]*>—</option>', select), select[:300]
