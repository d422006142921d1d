"""Security behaviour through the real app: resigned employees lose every way in, login rate limits,
CSRF, password complexity, phone masking with audited reveals, the audit trail, production settings."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from html.parser import HTMLParser

import pytest
from flask_appbuilder.exceptions import PasswordComplexityValidationError
from flask_appbuilder.security.sqla.models import Role
from redis import Redis
from sqlalchemy import func, select

import config
from app import create_app
from app.extensions import db
from app.models.audit import AuditLog
from app.models.employee import HR_ON_LEAVE, HR_RESIGNED, CrmUser, Employee
from app.models.org import OrgUnit
from app.security import policy
from app.security.passwords import validate_password
from app.services.seed import ADMIN_PASSWORD, DEMO_PASSWORD
from tests import factories as f
from tests.conftest import api_token, login
from tests.helpers import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- helpers ----------------------------------------------------------------------------------------
@contextmanager
def dbs(app):
    """A short app context for arranging or checking rows (requests must not share it: they would share
    its `g` and SQLAlchemy session instead of getting their own)."""
    with app.app_context():
        yield db.session


def employee_of(app, username: str) -> dict:
    with dbs(app) as s:
        emp = f.employee_by_username(s, username)
        return {c.key: getattr(emp, c.key) for c in Employee.__table__.columns} | {
            "unit_code": emp.org_unit.code, "manager_no": emp.manager.employee_no if emp.manager else None,
            "level_code": emp.level.code if emp.level else None}


def set_hr_status(app, username: str, status: str) -> None:
    with dbs(app) as s:
        f.employee_by_username(s, username).hr_status = status
        s.commit()


def audit_mark(app) -> int:
    """The newest audit row's id now: rows written later have larger ids."""
    with dbs(app) as s:
        return s.scalar(select(func.max(AuditLog.id))) or 0


def audit_rows(app, action: str, since: int = 0, **where) -> list[AuditLog]:
    with dbs(app) as s:
        query = select(AuditLog).where(AuditLog.action == action, AuditLog.id > since).order_by(AuditLog.id)
        for name, value in where.items():
            query = query.where(getattr(AuditLog, name) == value)
        rows = list(s.scalars(query))
        s.expunge_all()
        return rows


def audit_count(app) -> int:
    with dbs(app) as s:
        return s.scalar(select(func.count(AuditLog.id)))


def pop_flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as sess:
        return list(sess.pop("_flashes", []))


def signed_in(client) -> bool:
    """Whether the client's session still opens a protected page."""
    resp = client.get("/employeeview/list/")
    if resp.status_code == 200:
        return True
    assert resp.status_code == 302 and "/login" in resp.headers["Location"], resp.status_code
    return False


def password_of(username: str) -> str:
    return ADMIN_PASSWORD if username == "admin" else DEMO_PASSWORD


def english_client(app, username: str, password: str | None = None):
    client = app.test_client()
    resp = login(client, username, password)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    client.get("/lang/en")
    return client


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class _FormParser(HTMLParser):
    """The POST forms of a page, each as the fields a browser would submit unchanged."""

    def __init__(self):
        super().__init__()
        self.forms: list[list[tuple[str, str]]] = []
        self.fields: list[tuple[str, str]] | None = None
        self._select: dict | None = None
        self._textarea = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post":
            self.fields = []
            self.forms.append(self.fields)
        if self.fields is None:
            return
        if tag == "input" and a.get("name"):
            kind = (a.get("type") or "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value") or "y"))
            elif kind not in ("submit", "button", "file"):
                self.fields.append((a["name"], a.get("value") or ""))
        elif tag == "select" and a.get("name"):
            self._select = {"name": a["name"], "multiple": "multiple" in a, "first": None, "chosen": []}
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._select["first"] is None:
                self._select["first"] = value
            if "selected" in a:
                self._select["chosen"].append(value)
        elif tag == "textarea" and a.get("name"):
            self._textarea = True
            self.fields.append((a["name"], ""))

    def handle_data(self, data):
        if self._textarea and self.fields:
            name, value = self.fields.pop()
            self.fields.append((name, value + data))

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            sel, self._select = self._select, None
            chosen = sel["chosen"] or ([] if sel["multiple"] or sel["first"] is None else [sel["first"]])
            self.fields.extend((sel["name"], v) for v in chosen)
        elif tag == "textarea":
            self._textarea = False
        elif tag == "form":
            self.fields = None


def form_fields(html: str, having: str) -> dict[str, list[str]]:
    """The fields of the page's POST form that has a field named `having` (multi-valued: lists)."""
    parser = _FormParser()
    parser.feed(html)
    for form in parser.forms:
        fields: dict[str, list[str]] = {}
        for name, value in form:
            fields.setdefault(name, []).append(value)
        if having in fields:
            return fields
    raise AssertionError(f"no form with a field {having!r}")


def masked(phone: str) -> str:
    """138****1234 from +8613800001234, computed here from the stored number."""
    digits = phone.removeprefix("+86")
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


# --- resigned employees -----------------------------------------------------------------------------
def test_resigned_employee_cannot_log_in_by_form_and_it_is_audited(app):
    set_hr_status(app, "sales11", HR_RESIGNED)
    user_id = employee_of(app, "sales11")["user_id"]
    client = app.test_client()
    resp = login(client, "sales11")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login/")
    assert not signed_in(client)
    failures = audit_rows(app, "login_failure", target_id=str(user_id))
    assert [r.summary for r in failures] == ["sales11: inactive or resigned"]
    assert audit_rows(app, "login_success", target_id=str(user_id)) == []


def test_resigned_employee_cannot_log_in_by_json(app):
    set_hr_status(app, "sales11", HR_RESIGNED)
    resp = app.test_client().post("/api/v1/security/login",
                                  json={"username": "sales11", "password": DEMO_PASSWORD, "provider": "db"})
    assert resp.status_code == 401
    assert "access_token" not in (resp.get_json() or {})


def test_on_leave_employee_can_still_log_in(app):
    set_hr_status(app, "sales11", HR_ON_LEAVE)
    client = app.test_client()
    assert login(client, "sales11").headers["Location"] == "/"
    assert signed_in(client)
    assert api_token(app.test_client(), "sales11")
    assert len(audit_rows(app, "login_success", summary="sales11")) == 2


def resign_in_db(app, username: str) -> None:
    set_hr_status(app, username, HR_RESIGNED)


def resign_by_hr_sync(app, username: str) -> None:
    """The HR system pushes the employee's record with status resigned (through its API key)."""
    with dbs(app):
        sm = app.appbuilder.sm
        hr = sm.add_user("hr-system", "HR", "System", "hr@example.com", [sm.find_role("HR Integration")],
                         f.PASSWORD)
        key = sm.create_api_key(hr, "hr push")["key"]
    emp = employee_of(app, username)
    row = {"employee_no": emp["employee_no"], "name": emp["name"], "org_unit_code": emp["unit_code"],
           "phone": emp["phone"], "email": emp["email"], "position": emp["position"],
           "level_code": emp["level_code"], "manager_no": emp["manager_no"],
           "hired_on": emp["hired_on"].isoformat(), "hr_status": HR_RESIGNED}
    resp = app.test_client().post("/api/v1/hr/sync", json={"employees": [row]},
                                  headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["updated"] == 1


@pytest.mark.parametrize("resign", [resign_in_db, resign_by_hr_sync], ids=["db", "hr_sync"])
def test_resignation_ends_live_session_jwt_and_api_key(app, resign):
    browser = app.test_client()
    assert login(browser, "sales11").status_code == 302
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'sales11')}"}
    with dbs(app) as s:
        key = app.appbuilder.sm.create_api_key(f.employee_by_username(s, "sales11").user, "script")["key"]
    assert key.startswith("crm_")
    by_key = {"Authorization": f"Bearer {key}"}
    api = app.test_client()
    assert signed_in(browser)
    assert api.get("/api/v1/employee/", headers=jwt).status_code == 200
    # The key acts as the employee, within their data scope (a salesperson: own record only).
    resp = api.get("/api/v1/employee/", headers=by_key)
    assert resp.status_code == 200 and resp.get_json()["ids"] == [employee_of(app, "sales11")["id"]]

    resign(app, "sales11")
    assert employee_of(app, "sales11")["hr_status"] == HR_RESIGNED

    assert not signed_in(browser)
    assert api.get("/api/v1/employee/", headers=jwt).status_code == 401
    assert api.get("/api/v1/employee/", headers=by_key).status_code == 401
    # Colleagues are not affected.
    assert api.get("/api/v1/employee/", headers={
        "Authorization": f"Bearer {api_token(app.test_client(), 'sales12')}"}).status_code == 200


# --- login rate limits ------------------------------------------------------------------------------
@pytest.mark.config(AUTH_RATE_LIMIT="3 per minute", CRM_API_LOGIN_LIMIT="3 per minute")
def test_login_rate_limits_form_and_json_separately(app):
    redis = Redis.from_url(app.config["REDIS_URL"])
    assert app.config["RATELIMIT_STORAGE_URI"] == app.config["REDIS_URL"]
    client = app.test_client()
    for _ in range(3):
        assert login(client, "sales11", "Wrong-Pass-2026").status_code == 302
    assert login(client, "sales11").status_code == 429  # even with the right password
    assert redis.keys("LIMITS*"), "the limiter keeps its counts in the app's Redis"

    def json_login(password):
        return client.post("/api/v1/security/login",
                           json={"username": "sales11", "password": password, "provider": "db"})

    for _ in range(3):
        assert json_login("Wrong-Pass-2026").status_code == 401
    assert json_login(DEMO_PASSWORD).status_code == 429


# --- CSRF and unsafe GETs ---------------------------------------------------------------------------
@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_csrf_protects_forms(app):
    client = app.test_client()
    assert login(client, "admin").status_code == 400  # the login form needs its token too
    token = csrf_token(client.get("/login/").text)
    resp = client.post("/login/", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"

    def units_named(name):
        with dbs(app) as s:
            return s.scalar(select(func.count(OrgUnit.id)).where(OrgUnit.name == name))

    data = {"name": "CSRF Unit", "code": "CSRF-1", "kind": "team", "sort": "0"}
    resp = client.post("/orgunitview/add", data=data)
    assert resp.status_code == 400 and "CSRF token is missing" in resp.text
    resp = client.post("/orgunitview/add", data={**data, "csrf_token": "forged"})
    assert resp.status_code == 400
    assert units_named("CSRF Unit") == 0

    token = csrf_token(client.get("/orgunitview/add").text)
    resp = client.post("/orgunitview/add", data={**data, "csrf_token": token})
    assert resp.status_code == 302
    assert units_named("CSRF Unit") == 1

    # JSON API calls authenticate with a token and need no CSRF token.
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}"}
    resp = app.test_client().post("/api/v1/org_unit/", json={"name": "CSRF API Unit", "kind": "team"},
                                  headers=jwt)
    assert resp.status_code == 201, resp.get_json()


def admin_client(app, csrf: bool):
    client = app.test_client()
    data = {"username": "admin", "password": ADMIN_PASSWORD}
    if csrf:
        data["csrf_token"] = csrf_token(client.get("/login/").text)
    assert client.post("/login/", data=data).headers["Location"] == "/"
    return client


@pytest.mark.parametrize("csrf", [pytest.param(True, marks=pytest.mark.config(WTF_CSRF_ENABLED=True)), False],
                         ids=["csrf_on", "csrf_off"])
def test_get_never_deletes(app, csrf):
    with dbs(app) as s:
        pk = f.employee(s, f.org_unit(s)).id
    client = admin_client(app, csrf)
    resp = client.get(f"/employeeview/delete/{pk}")
    assert resp.status_code == 302
    assert pop_flashes(client)[-1][0] == "danger"
    with dbs(app) as s:
        assert s.get(Employee, pk) is not None

    data = {"csrf_token": csrf_token(client.get(f"/employeeview/show/{pk}").text)} if csrf else {}
    assert client.post(f"/employeeview/delete/{pk}", data=data).status_code == 302
    with dbs(app) as s:
        assert s.get(Employee, pk) is None


# --- password complexity ----------------------------------------------------------------------------
def test_user_form_refuses_a_weak_password(app):
    admin = english_client(app, "admin")
    form = admin.get("/users/add").text
    salesperson = re.search(r'<option value="(\d+)">Salesperson</option>', form).group(1)
    data = {"first_name": "Weak", "last_name": "Pass", "username": "weakpass", "active": "y",
            "email": "weakpass@example.com", "roles": [salesperson]}
    with pytest.raises(PasswordComplexityValidationError) as refused:
        validate_password("abc12")
    resp = admin.post("/users/add", data={**data, "password": "abc12", "conf_password": "abc12"})
    assert resp.status_code == 200
    assert str(refused.value) in resp.text
    assert str(refused.value).startswith("Password needs at least 10 characters")

    def users_named(name):
        with dbs(app) as s:
            return s.scalar(select(func.count(CrmUser.id)).where(CrmUser.username == name))

    assert users_named("weakpass") == 0

    strong = "Strong-Pass-2026"
    validate_password(strong)
    resp = admin.post("/users/add", data={**data, "password": strong, "conf_password": strong})
    assert resp.status_code == 302
    assert users_named("weakpass") == 1
    after = [json.loads(r.after) for r in audit_rows(app, "create", target_type="user")]
    assert [a for a in after if a.get("username") == "weakpass"] == [
        {"username": "weakpass", "first_name": "Weak", "last_name": "Pass", "email": "weakpass@example.com",
         "active": True}]


# --- phone masking ----------------------------------------------------------------------------------
def test_phone_is_masked_for_roles_without_full_view(app):
    emp = employee_of(app, "sales11")
    full, shown = emp["phone"], masked(emp["phone"])
    assert shown.startswith("138****") and full.endswith(shown[-4:])
    digits = full.removeprefix("+86")
    manager = english_client(app, "manager1")  # Sales Manager: read and export, no full phone
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'manager1')}"}

    for page in ("/employeeview/list/", f"/employeeview/show/{emp['id']}"):
        text = manager.get(page).text
        assert shown in text and digits not in text, page
    listed = manager.get("/api/v1/employee/?q=(page_size:100)", headers=jwt).get_json()["result"]
    assert next(r for r in listed if r["id"] == emp["id"])["phone"] == shown
    assert manager.get(f"/api/v1/employee/{emp['id']}", headers=jwt).get_json()["result"]["phone"] == shown
    export = manager.get("/employeeview/export/").get_data(as_text=True)
    row = next(r for r in csv.reader(io.StringIO(export.lstrip("\ufeff"))) if r[0] == emp["employee_no"])
    assert row[2] == shown and digits not in export


def test_edit_form_keeps_the_stored_number_when_the_masked_one_comes_back(app):
    sm = app.appbuilder.sm
    with dbs(app):
        sm.add_permission_role(sm.find_role("Sales Manager"),
                               sm.find_permission_view_menu(policy.WRITE, policy.EMPLOYEE))
    emp = employee_of(app, "sales11")
    manager = english_client(app, "manager1")
    html = manager.get(f"/employeeview/edit/{emp['id']}").text
    fields = form_fields(html, "phone")
    assert fields["phone"] == [masked(emp["phone"])]
    assert emp["phone"].removeprefix("+86") not in html
    before_audit = len(audit_rows(app, "update", target_type="employee"))

    resp = manager.post(f"/employeeview/edit/{emp['id']}", data=fields)
    assert resp.status_code == 302, resp.text
    assert pop_flashes(manager)[-1][0] == "success"
    assert employee_of(app, "sales11") == emp  # nothing changed, the full number included
    assert len(audit_rows(app, "update", target_type="employee")) == before_audit

    # A real new number is stored (normalised).
    resp = manager.post(f"/employeeview/edit/{emp['id']}", data={**fields, "phone": "139 0000 1111"})
    assert resp.status_code == 302
    assert employee_of(app, "sales11")["phone"] == "+8613900001111"


def test_full_phone_reveal_is_audited_and_needs_permission(app):
    emp = employee_of(app, "sales11")
    director = english_client(app, "director")  # Sales Director: can_view_full Phone, subtree scope
    pop_flashes(director)
    resp = director.post(f"/employeeview/phone/{emp['id']}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/employeeview/show/{emp['id']}")
    assert [msg for _cat, msg in pop_flashes(director)] == [f"Phone: {emp['phone']}"]
    director_id = employee_of(app, "director")["user_id"]
    views = audit_rows(app, "phone_view", target_id=str(emp["id"]))
    assert len(views) == 1 and views[0].actor_id == director_id and views[0].target_type == policy.EMPLOYEE

    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'director')}"}
    resp = app.test_client().get(f"/api/v1/employee/{emp['id']}/phone", headers=jwt)
    assert resp.status_code == 200 and resp.get_json() == {"phone": emp["phone"]}
    assert len(audit_rows(app, "phone_view", target_id=str(emp["id"]))) == 2

    # A GET cannot reveal; a salesperson cannot reveal at all; nothing more is audited.
    assert director.get(f"/employeeview/phone/{emp['id']}").status_code == 405
    sales = english_client(app, "sales11")
    sales_jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'sales11')}"}
    assert app.test_client().get(f"/api/v1/employee/{emp['id']}/phone", headers=sales_jwt).status_code == 403
    assert sales.post(f"/employeeview/phone/{emp['id']}").status_code == 403
    assert len(audit_rows(app, "phone_view")) == 2


# --- audit trail ------------------------------------------------------------------------------------
def test_permission_changes_are_audited(app):
    sm = app.appbuilder.sm
    mark = audit_mark(app)
    with dbs(app) as s:
        role = sm.find_role("Salesperson")
        role_id = role.id
        pv = sm.find_permission_view_menu(policy.EXPORT, policy.EMPLOYEE)
        granted = str(pv)
        sm.add_permission_role(role, pv)
        kept = sorted(p.id for p in s.get(Role, role_id).permissions)
    rows = audit_rows(app, "permission_change", mark, target_id=str(role_id))
    assert len(rows) == 1
    assert json.loads(rows[0].before) == {"permissions": []}
    assert json.loads(rows[0].after) == {"permissions": [granted]}
    assert rows[0].actor_name == "system"

    # Through the Roles edit form: remove the grant again.
    admin = english_client(app, "admin")
    fields = form_fields(admin.get(f"/roles/edit/{role_id}").text, "name")
    assert sorted(int(p) for p in fields["permissions"]) == kept
    fields["permissions"] = [p for p in fields["permissions"] if int(p) != pv.id]
    assert admin.post(f"/roles/edit/{role_id}", data=fields).status_code == 302
    rows = audit_rows(app, "permission_change", mark, target_id=str(role_id))
    assert len(rows) == 2
    assert json.loads(rows[1].before) == {"permissions": [granted]}
    assert json.loads(rows[1].after) == {"permissions": []}
    assert rows[1].actor_name == "admin"


def test_data_scope_changes_are_audited(app):
    with dbs(app) as s:
        role = s.scalar(select(Role).where(Role.name == "Sales Manager"))
        role_id, old = role.id, role.data_scope.scope
    assert old == policy.ROLES["Sales Manager"]["scope"]
    mark = audit_mark(app)
    admin = english_client(app, "admin")
    assert admin.post(f"/roledatascopeview/edit/{role_id}", data={"scope": "own"}).status_code == 302
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}"}
    resp = app.test_client().put(f"/api/v1/data_scope/{role_id}", json={"scope": "all"}, headers=jwt)
    assert resp.status_code == 200, resp.get_json()
    resp = app.test_client().put(f"/api/v1/data_scope/{role_id}", json={"scope": "galaxy"}, headers=jwt)
    assert resp.status_code == 422 and "scope" in json.dumps(resp.get_json())

    rows = audit_rows(app, "scope_change", mark, target_id=str(role_id))
    assert [(json.loads(r.before), json.loads(r.after), r.actor_name) for r in rows] == [
        ({"scope": old}, {"scope": "own"}, "admin"),
        ({"scope": "own"}, {"scope": "all"}, "admin"),
    ]
    with dbs(app) as s:
        assert s.scalar(select(Role).where(Role.id == role_id)).data_scope.scope == "all"


def test_user_changes_and_exports_are_audited(app):
    mark = audit_mark(app)
    admin = english_client(app, "admin")
    user_id = employee_of(app, "sales11")["user_id"]
    fields = form_fields(admin.get(f"/users/edit/{user_id}").text, "first_name")
    old_name = fields["first_name"][0]
    fields["first_name"] = ["Renamed"]
    assert admin.post(f"/users/edit/{user_id}", data=fields).status_code == 302
    rows = audit_rows(app, "update", mark, target_type="user", target_id=str(user_id))
    assert [(json.loads(r.before), json.loads(r.after)) for r in rows] == [
        ({"first_name": old_name}, {"first_name": "Renamed"})]
    assert rows[0].actor_name == "admin" and rows[0].ip == "127.0.0.1"

    resp = admin.get("/employeeview/export/")
    assert resp.status_code == 200
    exported = len(resp.get_data(as_text=True).strip().splitlines()) - 1
    with dbs(app) as s:
        assert exported == s.scalar(select(func.count(Employee.id)))
    rows = audit_rows(app, "export", mark, target_type=policy.EMPLOYEE)
    assert len(rows) == 1 and rows[0].actor_name == "admin"
    assert rows[0].summary.startswith(f"{exported} rows")


def test_audit_log_is_for_admins_only(app):
    director = english_client(app, "director")
    assert director.get("/auditlogview/list/").status_code == 403
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'director')}"}
    assert app.test_client().get("/api/v1/audit_log/", headers=jwt).status_code == 403

    admin = english_client(app, "admin")
    assert admin.get("/auditlogview/list/").status_code == 200
    admin_jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}"}
    body = app.test_client().get("/api/v1/audit_log/?q=(page_size:100)", headers=admin_jwt).get_json()
    assert body["count"] == audit_count(app)
    assert {"login_success"} <= {r["action"] for r in body["result"]}


# --- production settings ----------------------------------------------------------------------------
REQUIRED = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")


def test_production_refuses_to_start_without_its_secrets(monkeypatch):
    for name in REQUIRED:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError) as refused:
        config.ProductionConfig.check()
    for name in REQUIRED:
        assert name in str(refused.value)
    with pytest.raises(RuntimeError) as refused_app:
        create_app("production")
    assert str(refused_app.value) == str(refused.value)

    monkeypatch.setenv("SECRET_KEY", "a-real-secret")
    with pytest.raises(RuntimeError) as refused:
        config.ProductionConfig.check()
    assert "SECRET_KEY" not in str(refused.value)
    assert "DATABASE_URL" in str(refused.value) and "REDIS_URL" in str(refused.value)


def test_production_settings_when_configured(tmp_path, redis_server):
    """A fresh interpreter, as a server starts: settings are read from the environment at import."""
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_COOKIE_SECURE", "CRM_CONFIG")}
    env.update(SECRET_KEY="a-real-secret", DATABASE_URL=f"sqlite:///{tmp_path}/prod.db",
               REDIS_URL=redis_server.url, CRM_INSTANCE_DIR=str(tmp_path))
    script = (
        "import json, config\n"
        "from app import create_app\n"
        "cls = config.get_config('production')\n"
        "app = create_app('production')\n"
        "print(json.dumps({k: app.config[k] for k in ('SESSION_COOKIE_SECURE', 'REMEMBER_COOKIE_SECURE',"
        " 'SESSION_COOKIE_HTTPONLY', 'SECRET_KEY', 'SQLALCHEMY_DATABASE_URI', 'WTF_CSRF_ENABLED')}"
        " | {'class_secure': cls.SESSION_COOKIE_SECURE}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env(env), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout.strip().splitlines()[-1])
    assert settings == {
        "SESSION_COOKIE_SECURE": True, "REMEMBER_COOKIE_SECURE": True, "SESSION_COOKIE_HTTPONLY": True,
        "SECRET_KEY": "a-real-secret", "SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"],
        "WTF_CSRF_ENABLED": True, "class_secure": True,
    }


def test_user_input_quoted_in_a_form_error_is_escaped(app, client):
    from tests.conftest import login

    login(client, "admin")
    resp = client.post("/employeeview/add", data={
        "employee_no": "X1", "name": "x", "phone": "<b>boom</b>", "org_unit": "1", "hr_status": "active"})
    html = resp.get_data(as_text=True)
    assert "<b>boom</b>" not in html
    assert "&lt;b&gt;boom&lt;/b&gt;" in html
