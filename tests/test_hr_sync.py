"""POST /api/v1/hr/sync through the real app, authenticated as the seeded "HR Integration" role by API key.

Policy under test (app.services.employees): each row stands on its own — a bad row is reported by its index
and the field at fault and leaves nothing behind; the good rows of the same batch are kept; re-sending a
batch changes nothing."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.employee import Employee
from app.models.org import OrgUnit
from tests import factories
from tests.conftest import api_token, login

URL = "/api/v1/hr/sync"


@pytest.fixture
def hr_headers(app, session):
    """An account with the seeded "HR Integration" role and an API key of its own."""
    sm = app.appbuilder.sm
    role = sm.find_role("HR Integration")
    assert role is not None
    user = sm.add_user("hr-system", "HR", "System", "hr-system@example.com", role, factories.PASSWORD)
    key = sm.create_api_key(user, "hr")["key"]
    return {"Authorization": f"Bearer {key}"}


def person(no: str, unit: str = "T-K12-1", manager: str | None = None, **extra) -> dict:
    n = int("".join(c for c in no if c.isdigit()) or 0)
    row = {"employee_no": no, "name": f"同步员工{no}", "org_unit_code": unit, "phone": f"139 {n:04d} {n:04d}",
           "email": f"{no.lower()}@example.com", "position": "Salesperson", "level_code": "P1",
           "hired_on": "2025-03-01", "hr_status": "active", "manager_no": manager}
    row.update(extra)
    return row


def stored(session, *nos: str) -> dict[str, dict]:
    """employee_no → the row in the database, with the manager's employee_no."""
    session.expire_all()
    emps = session.scalars(select(Employee).where(Employee.employee_no.in_(nos)))
    return {e.employee_no: {"name": e.name, "phone": e.phone, "email": e.email, "org_unit": e.org_unit.code,
                            "level": e.level.code if e.level else None, "hired_on": e.hired_on,
                            "left_on": e.left_on, "hr_status": e.hr_status,
                            "manager_no": e.manager.employee_no if e.manager else None} for e in emps}


def employee_audit(session) -> list[tuple[str, str]]:
    session.expire_all()
    rows = session.execute(select(AuditLog.action, AuditLog.target_id)
                           .where(AuditLog.target_type == "employee",
                                  AuditLog.action.in_(("create", "update"))))
    return sorted((a, t) for a, t in rows)


def employee_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Employee))


# --- authentication ---------------------------------------------------------------------------------
def test_hr_integration_key_may_sync_others_may_not(client, session, hr_headers):
    batch = [person("H0001")]
    assert client.post(URL, json=batch).status_code == 401
    token = api_token(client, "sales11")  # a Salesperson
    resp = client.post(URL, json=batch, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    resp = client.post(URL, json=batch, headers={"Authorization": "Bearer crm_not-a-real-key"})
    assert resp.status_code == 401
    assert stored(session, "H0001") == {}

    resp = client.post(URL, json=batch, headers=hr_headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["created"] == 1
    assert set(stored(session, "H0001")) == {"H0001"}
    # The key opens the sync, not the employee list.
    assert client.get("/api/v1/employee/", headers=hr_headers).status_code == 403


# --- idempotent upsert ------------------------------------------------------------------------------
def batch_with_managers() -> list[dict]:
    # Reports come before their managers; the top of the chain reports to the seeded director (E0002).
    return [
        person("H0101", manager="H0102"),
        person("H0103", unit="T-ADULT-1", manager="H0102"),
        person("H0102", unit="D-K12", manager="H0104", level_code="M1"),
        person("H0104", unit="SALES", manager="E0002", level_code="M2", hr_status="on_leave"),
        person("H0105", unit="T-CODE-2", manager=None, email=None, phone=None, position=None),
    ]


def test_batch_creates_employees_with_managers_in_any_order(client, session, hr_headers):
    batch = batch_with_managers()
    resp = client.post(URL, json=batch, headers=hr_headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"created": 5, "updated": 0, "unchanged": 0, "failed": 0, "errors": []}

    rows = stored(session, *(r["employee_no"] for r in batch))
    assert set(rows) == {r["employee_no"] for r in batch}
    for r in batch:
        got = rows[r["employee_no"]]
        n = int(r["employee_no"][1:])
        assert got == {
            "name": r["name"], "org_unit": r["org_unit_code"], "level": r["level_code"],
            "phone": f"+86139{n:04d}{n:04d}" if r["phone"] else None, "email": r["email"],
            "hired_on": dt.date(2025, 3, 1), "left_on": None, "hr_status": r["hr_status"],
            "manager_no": r["manager_no"],
        }


def test_resending_changes_nothing_and_a_changed_batch_updates_only_changed_rows(client, session, hr_headers):
    batch = batch_with_managers()
    assert client.post(URL, json=batch, headers=hr_headers).status_code == 200
    nos = [r["employee_no"] for r in batch]
    first = stored(session, *nos)
    audit_before = employee_audit(session)
    assert {a for a, _ in audit_before} >= {"create"}

    resp = client.post(URL, json=batch, headers=hr_headers)
    assert resp.status_code == 200
    assert resp.get_json() == {"created": 0, "updated": 0, "unchanged": len(batch), "failed": 0, "errors": []}
    assert stored(session, *nos) == first
    assert employee_audit(session) == audit_before

    changed = [dict(r) for r in batch]
    changed[0]["phone"] = "+86 139 8888 0101"        # H0101: new number
    changed[3]["manager_no"] = None                  # H0104: no longer reports to the director
    changed[2]["phone"] = "+86-139-0102-0102"        # H0102: the same number written differently
    resp = client.post(URL, json=changed, headers=hr_headers)
    assert resp.status_code == 200
    assert resp.get_json() == {"created": 0, "updated": 2, "unchanged": len(batch) - 2, "failed": 0,
                               "errors": []}
    after = stored(session, *nos)
    assert after["H0101"]["phone"] == "+8613988880101"
    assert after["H0104"]["manager_no"] is None
    assert {no: v for no, v in after.items() if no not in ("H0101", "H0104")} == {
        no: v for no, v in first.items() if no not in ("H0101", "H0104")}
    ids = dict(session.execute(select(Employee.employee_no, Employee.id)
                               .where(Employee.employee_no.in_(["H0101", "H0104"]))).all())
    new_audit = Counter(employee_audit(session)) - Counter(audit_before)
    assert new_audit == Counter(("update", str(ids[no])) for no in ("H0101", "H0104"))


# --- bad rows ---------------------------------------------------------------------------------------
def test_mixed_batch_reports_bad_rows_by_index_and_keeps_good_ones(client, session, hr_headers):
    count = employee_count(session)
    batch = [
        person("H0201"),                                   # 0 good
        person("H0202", unit="NO-SUCH-UNIT"),              # 1 unknown org unit
        person("H0203", phone="12345"),                    # 2 bad phone
        person("H0204", hired_on="2025-13-01"),            # 3 bad date
        person("H0201", name="Duplicate of row 0"),        # 4 duplicate employee_no within the batch
        person("H0205", manager="H9999"),                  # 5 unknown manager
        person("H0206", manager="H0207"),                  # 6 ┐ a reporting cycle inside the batch
        person("H0207", manager="H0206"),                  # 7 ┘
        person("H0208", manager="H0201"),                  # 8 good, reports to row 0
        person("H0209", manager="H0203"),                  # 9 reports to a rejected row: nothing to point at
    ]
    resp = client.post(URL, json=batch, headers=hr_headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["created"], body["updated"], body["unchanged"]) == (2, 0, 0)
    expected = {1: "org_unit_code", 2: "phone", 3: "hired_on", 4: "employee_no", 5: "manager_no",
                6: "manager_no", 7: "manager_no", 9: "manager_no"}
    assert body["failed"] == len(expected)
    assert {e["index"]: set(e["errors"]) for e in body["errors"]} == {i: {f} for i, f in expected.items()}
    for error in body["errors"]:
        assert error["employee_no"] == batch[error["index"]]["employee_no"]
    messages = {e["index"]: e["errors"] for e in body["errors"]}
    assert "NO-SUCH-UNIT" in messages[1]["org_unit_code"]
    assert "repeats row 0" in messages[4]["employee_no"]
    assert "cycle" in messages[6]["manager_no"] and "cycle" in messages[7]["manager_no"]

    rows = stored(session, *(r["employee_no"] for r in batch))
    assert set(rows) == {"H0201", "H0208"}
    assert rows["H0201"]["name"] == batch[0]["name"]  # the duplicate row did not overwrite it
    assert rows["H0208"]["manager_no"] == "H0201"
    assert employee_count(session) == count + 2


def test_all_rows_bad_is_422_and_writes_nothing(client, session, hr_headers):
    count = employee_count(session)
    audit_before = employee_audit(session)
    batch = [person("H0301", phone="not a phone"), person("H0302", unit="NOPE"), {"name": "no number"}]
    resp = client.post(URL, json=batch, headers=hr_headers)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["failed"] == 3 and body["created"] == 0
    assert [e["index"] for e in body["errors"]] == [0, 1, 2]
    assert "employee_no" in body["errors"][2]["errors"]
    assert employee_count(session) == count
    assert employee_audit(session) == audit_before


@pytest.mark.parametrize("kwargs", [
    {"data": "employee_no=H1", "content_type": "application/x-www-form-urlencoded"},
    {"data": "[{not json", "content_type": "application/json"},
])
def test_non_json_body_is_400_json(client, session, hr_headers, kwargs):
    count = employee_count(session)
    resp = client.post(URL, headers=hr_headers, **kwargs)
    assert resp.status_code == 400
    assert resp.is_json and "JSON" in resp.get_json()["message"]
    assert employee_count(session) == count


@pytest.mark.parametrize("body", [{"employee_no": "H0401"}, "H0401", 42,
                                  {"employees": {"employee_no": "H1"}}])
def test_body_that_is_not_a_list_is_400(client, session, hr_headers, body):
    count = employee_count(session)
    resp = client.post(URL, json=body, headers=hr_headers)
    assert resp.status_code == 400
    assert "list" in resp.get_json()["message"]
    assert employee_count(session) == count


def test_wrapped_list_is_accepted(client, session, hr_headers):
    resp = client.post(URL, json={"employees": [person("H0501")]}, headers=hr_headers)
    assert resp.status_code == 200 and resp.get_json()["created"] == 1
    assert set(stored(session, "H0501")) == {"H0501"}


# --- resignation ------------------------------------------------------------------------------------
def test_resignation_through_sync_ends_the_login(client, app, session, hr_headers):
    emp = factories.employee_by_username(session, "sales14")
    row = {"employee_no": emp.employee_no, "name": emp.name, "org_unit_code": emp.org_unit.code,
           "phone": emp.phone, "email": emp.email, "position": emp.position,
           "level_code": emp.level.code if emp.level else None,
           "hired_on": emp.hired_on.isoformat() if emp.hired_on else None,
           "hr_status": "active", "manager_no": emp.manager.employee_no if emp.manager else None}
    # The HR system's view of a current employee matches ours: nothing to do.
    resp = client.post(URL, json=[row], headers=hr_headers)
    assert resp.get_json()["unchanged"] == 1, resp.get_json()

    browser = app.test_client()
    assert login(browser, "sales14").headers["Location"] == "/"
    assert browser.get("/employeeview/list/").status_code == 200
    token = api_token(client, "sales14")
    assert client.get("/api/v1/org_unit/", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    resp = client.post(URL, json=[{**row, "hr_status": "resigned", "left_on": "2026-01-15"}],
                       headers=hr_headers)
    assert resp.status_code == 200 and resp.get_json()["updated"] == 1
    assert stored(session, emp.employee_no)[emp.employee_no]["hr_status"] == "resigned"
    assert stored(session, emp.employee_no)[emp.employee_no]["left_on"] == dt.date(2026, 1, 15)

    # The live session and the JWT stop working on the next request; a new form login is refused.
    resp = browser.get("/employeeview/list/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert client.get("/api/v1/org_unit/", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    fresh = app.test_client()
    resp = login(fresh, "sales14")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert fresh.get("/employeeview/list/").status_code == 302
    resp = client.post("/api/v1/security/login",
                       json={"username": "sales14", "password": "Demo-Pass-2026", "provider": "db"})
    assert resp.status_code == 401


def test_org_unit_is_referenced_by_code(client, session, hr_headers):
    """A row names its unit by code; an id in that place is an unknown code."""
    unit = session.scalar(select(OrgUnit).where(OrgUnit.code == "T-QA"))
    resp = client.post(URL, json=[person("H0601", unit="T-QA"), person("H0602", unit=str(unit.id))],
                       headers=hr_headers)
    body = resp.get_json()
    assert body["created"] == 1 and [e["index"] for e in body["errors"]] == [1]
    assert stored(session, "H0601")["H0601"]["org_unit"] == "T-QA"
