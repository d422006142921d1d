"""Onboarding a person through the one form (and the CLI): employee, login and roles together in one
transaction; refusals on their form field with nothing written; audited; only for administrators."""

from __future__ import annotations

from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.employee import CrmUser, Employee
from app.models.org import OrgUnit
from tests.conftest import login
from tests.helpers import field_errors

URL = "/onboarding/form"


def _form(session, **overrides) -> dict:
    unit = session.scalar(select(OrgUnit).where(OrgUnit.code == "T-K12-1"))
    manager = session.scalar(select(Employee).join(CrmUser, Employee.user)
                             .where(CrmUser.username == "manager1"))
    data = {"employee_no": "E9001", "name": "钱新人", "phone": "13800138123", "email": "qian@example.com",
            "org_unit": str(unit.id), "position": "课程顾问", "manager": str(manager.id),
            "hired_on": "2026-06-15", "username": "qian.xin", "password": "Welcome2026x",
            "roles": ["Salesperson"]}
    data.update(overrides)
    return data


def _counts(session) -> tuple[int, int]:
    return (session.scalar(select(func.count()).select_from(Employee)),
            session.scalar(select(func.count()).select_from(CrmUser)))


def test_one_form_creates_the_employee_the_login_and_roles(app, client, session):
    login(client, "admin")
    page = client.get(URL)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Salesperson" in html and "QA inspector" in html  # roles by their labels
    assert "Lead Integration" not in html and "Lead integration" not in html  # not a person's role

    response = client.post(URL, data=_form(session))
    assert response.status_code == 302, field_errors(response.get_data(as_text=True))
    session.expire_all()
    emp = session.scalar(select(Employee).where(Employee.employee_no == "E9001"))
    assert emp.name == "钱新人" and emp.org_unit.code == "T-K12-1" and emp.position == "课程顾问"
    assert emp.manager.user.username == "manager1" and str(emp.hired_on) == "2026-06-15"
    assert emp.phone == "+8613800138123" and emp.hr_status == "active"
    assert emp.user.username == "qian.xin" and [r.name for r in emp.user.roles] == ["Salesperson"]
    assert emp.user.get_full_name() == "钱新人"
    assert response.headers["Location"].endswith(f"/employeeview/show/{emp.id}")
    event = session.scalar(select(AuditLog).where(AuditLog.target_type == "onboarding"))
    assert event.actor_name and "qian.xin" in event.summary and "Salesperson" in event.summary
    # the new person signs in with the initial password and lands on their pages
    other = app.test_client()
    assert login(other, "qian.xin", "Welcome2026x").status_code == 302
    assert other.get("/workbench/").status_code == 200


def test_refusals_name_their_field_and_write_nothing(app, client, session):
    login(client, "admin")
    before = _counts(session)
    cases = {
        "username": {"username": "admin"},  # taken
        "employee_no": {"employee_no": "E0002"},  # taken
        "password": {"password": "short"},  # too simple
        "email": {"email": "admin@example.com"},  # already a login's
        "phone": {"phone": "12"},
        "roles": {"roles": ["Lead Integration"]},  # other systems' role
    }
    for field, bad in cases.items():
        response = client.post(URL, data=_form(session, **bad))
        assert response.status_code in (200, 422), field
        errors = field_errors(response.get_data(as_text=True))
        assert field in errors, (field, errors)
        assert _counts(session) == before, field


def test_only_administrators_onboard(app, session):
    for username in ("director", "manager1", "sales11", "backoffice1"):
        client = app.test_client()
        login(client, username)
        assert client.get(URL).status_code in (302, 403), username
        client.post(URL, data=_form(session, username=f"x{username}"))
        assert session.scalar(select(CrmUser).where(CrmUser.username == f"x{username}")) is None


def test_the_menu_offers_the_form_in_both_languages(app):
    client = app.test_client()
    login(client, "admin")
    assert "新员工入职" in client.get("/employeeview/list/").get_data(as_text=True)
    assert "新员工入职" in client.get(URL).get_data(as_text=True)
    client.get("/lang/en")
    html = client.get(URL).get_data(as_text=True)
    assert "Onboard a person" in html and "Initial password" in html


def test_the_cli_runs_the_same_command(app, runner, session):
    args = ["crm", "onboard", "--employee-no", "E9002", "--name", "孙新", "--org-unit",
            str(session.scalar(select(OrgUnit.id).where(OrgUnit.code == "T-QA"))), "--username", "sun.xin",
            "--email", "sun@example.com", "--password", "Welcome2026x", "--role", "QA Inspector"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    session.expire_all()
    emp = session.scalar(select(Employee).where(Employee.employee_no == "E9002"))
    assert emp.user.username == "sun.xin" and [r.name for r in emp.user.roles] == ["QA Inspector"]
    again = runner.invoke(args=args)
    assert again.exit_code != 0 and "employee_no" in again.output


def test_onboarding_on_postgresql_is_one_transaction(pg_app):
    """On PostgreSQL too: the form writes the three together, and a refusal leaves nothing."""
    from app.extensions import db

    client = pg_app.test_client()
    login(client, "admin")
    with pg_app.app_context():
        before = _counts(db.session)
        refused = client.post(URL, data=_form(db.session, username="admin"))
        assert "username" in field_errors(refused.get_data(as_text=True))
        assert _counts(db.session) == before
        assert client.post(URL, data=_form(db.session)).status_code == 302
        db.session.expire_all()
        assert _counts(db.session) == (before[0] + 1, before[1] + 1)
        emp = db.session.scalar(select(Employee).where(Employee.employee_no == "E9001"))
        assert emp.user.username == "qian.xin"
        db.session.remove()
