"""Data scope: every role × scope sees exactly its rows on every path (list, show, edit, delete, actions,
REST, export, related-field dropdowns, home page counts).

Each test arranges a small organisation of its own and computes the expected visible rows in plain Python
from the arranged data (parent and manager links), independently of the SQL the app uses.

    Dept ── Team A ── Group A1          Outside
         └─ Team B

    boss (Dept) ← viewer (Team A) ← r1 (Team A) ← r2 (Team B)
                                  ← r3 (Group A1)
    mate (Team A, no manager)       stranger (Outside)
"""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass

import prison
import pytest
from flask_appbuilder.security.sqla.models import Role
from sqlalchemy import select

from app.extensions import db
from app.models.employee import HR_RESIGNED, CrmUser, Employee
from app.models.org import OrgUnit
from app.models.security import DATA_SCOPES, RoleDataScope
from app.security import policy
from app.services.seed import demo_logins
from tests import factories as f
from tests.conftest import api_token, login

SCOPES = ("own", "own_subordinates", "team", "org_subtree", "all")
BIG_PAGE = 200  # the HTML list's page-size cap (CrmModelView MAX_PAGE_SIZE)


@contextmanager
def dbs(app):
    """A short app context for arranging or checking rows.

    Requests must not run inside it: they would share its `g` and SQLAlchemy session (flask-login's and
    flask-jwt-extended's user caches, the request's data-scope viewer) instead of getting their own.
    """
    with app.app_context():
        yield db.session


def row(app, emp_id: int) -> dict | None:
    """An employee's columns as stored now."""
    with dbs(app) as s:
        emp = s.get(Employee, emp_id)
        return None if emp is None else {c.key: getattr(emp, c.key) for c in Employee.__table__.columns}


# --- the arranged organisation ----------------------------------------------------------------------
@dataclass
class Org:
    dept: int
    team_a: int
    group_a1: int
    team_b: int
    outside: int
    boss: int
    viewer: int
    r1: int
    r2: int
    r3: int
    mate: int
    stranger: int

    @property
    def employees(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("boss", "viewer", "r1", "r2", "r3", "mate", "stranger")}

    @property
    def units(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("dept", "team_a", "group_a1", "team_b", "outside")}


def arrange_org(session) -> Org:
    dept = f.org_unit(session, name="Scope Dept", kind="department")
    team_a = f.org_unit(session, name="Scope Team A", parent=dept)
    group_a1 = f.org_unit(session, name="Scope Group A1", parent=team_a)
    team_b = f.org_unit(session, name="Scope Team B", parent=dept)
    outside = f.org_unit(session, name="Scope Outside", kind="department")
    boss = f.employee(session, dept, name="Boss")
    viewer = f.employee(session, team_a, name="Viewer", manager=boss)
    r1 = f.employee(session, team_a, name="Report 1", manager=viewer)
    r2 = f.employee(session, team_b, name="Report 2", manager=r1)
    r3 = f.employee(session, group_a1, name="Report 3", manager=viewer)
    mate = f.employee(session, team_a, name="Mate")
    stranger = f.employee(session, outside, name="Stranger")
    return Org(dept.id, team_a.id, group_a1.id, team_b.id, outside.id, boss.id, viewer.id, r1.id, r2.id,
               r3.id, mate.id, stranger.id)


@dataclass
class Snapshot:
    """Every employee and unit in the database, as plain data."""

    emp_unit: dict[int, int]
    emp_manager: dict[int, int | None]
    emp_no: dict[int, str]
    unit_parent: dict[int, int | None]

    @classmethod
    def take(cls, session) -> Snapshot:
        session.expire_all()
        rows = session.execute(select(Employee.id, Employee.org_unit_id, Employee.manager_id,
                                      Employee.employee_no)).all()
        units = session.execute(select(OrgUnit.id, OrgUnit.parent_id)).all()
        return cls({r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}, {r[0]: r[3] for r in rows},
                   dict(units))

    def unit_subtree(self, root: int) -> set[int]:
        found, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            children = [u for u, p in self.unit_parent.items() if p == parent and u not in found]
            found.update(children)
            frontier.extend(children)
        return found

    def reports_of(self, emp: int) -> set[int]:
        found, frontier = {emp}, [emp]
        while frontier:
            boss = frontier.pop()
            direct = [e for e, m in self.emp_manager.items() if m == boss and e not in found]
            found.update(direct)
            frontier.extend(direct)
        return found

    def visible_employees(self, scope: str, viewer: int | None) -> set[int]:
        if scope == "all":
            return set(self.emp_unit)
        if viewer is None:
            return set()
        if scope == "own":
            return {viewer}
        if scope == "own_subordinates":
            return self.reports_of(viewer)
        if scope == "team":
            return {e for e, u in self.emp_unit.items() if u == self.emp_unit[viewer]}
        if scope == "org_subtree":
            units = self.unit_subtree(self.emp_unit[viewer])
            return {e for e, u in self.emp_unit.items() if u in units}
        raise AssertionError(scope)

    def visible_units(self, scope: str, viewer: int | None) -> set[int]:
        """Org units carry no owner: own / own_subordinates fall back to the viewer's own unit."""
        if scope == "all":
            return set(self.unit_parent)
        if viewer is None:
            return set()
        if scope == "org_subtree":
            return self.unit_subtree(self.emp_unit[viewer])
        return {self.emp_unit[viewer]}


# --- arranging roles and users ----------------------------------------------------------------------
def set_scope(session, role_name: str, scope: str) -> None:
    role = session.scalar(select(Role).where(Role.name == role_name))
    if role.data_scope is None:
        role.data_scope = RoleDataScope(scope=scope)
    else:
        role.data_scope.scope = scope
    session.commit()


def grant(app, session, role_name: str, *pairs: tuple[str, str]) -> None:
    sm = app.appbuilder.sm
    role = sm.find_role(role_name)
    for perm, resource in pairs:
        pv = sm.find_permission_view_menu(perm, resource)
        assert pv is not None, (perm, resource)
        sm.add_permission_role(role, pv)
    session.commit()


def writer_role(app, session, scope: str, name: str = "Scoped Writer") -> str:
    """A custom role with read/write on employees and org units and the given data scope."""
    sm = app.appbuilder.sm
    sm.add_role(name)
    grant(app, session, name, (policy.READ, policy.EMPLOYEE), (policy.WRITE, policy.EMPLOYEE),
          (policy.READ, policy.ORG_UNIT))
    set_scope(session, name, scope)
    return name


def user_for(app, session, emp_id: int, *roles: str) -> str:
    emp = session.get(Employee, emp_id)
    return f.login_user(app, session, emp, *roles).username


def client_for(app, username: str, password: str | None = f.PASSWORD):
    client = app.test_client()
    resp = login(client, username, password)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    client.get("/lang/en")  # messages in English for the assertions below
    return client


def bearer(app, username: str, password: str | None = f.PASSWORD) -> dict:
    return {"Authorization": f"Bearer {api_token(app.test_client(), username, password)}"}


# --- reading what a user sees -----------------------------------------------------------------------
def html_list_ids(client, view: str) -> set[int]:
    resp = client.get(f"/{view.lower()}/list/?psize_{view}={BIG_PAGE}")
    assert resp.status_code == 200
    ids = {int(pk) for pk in re.findall(rf'href="/{view.lower()}/show/(\d+)"', resp.text)}
    assert len(ids) < BIG_PAGE, "the list was cut by its page size: the comparison would be meaningless"
    return ids


def api_list_ids(client, resource: str, headers) -> set[int]:
    q = prison.dumps({"page_size": 500})
    resp = client.get(f"/api/v1/{resource}/?q={q}", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["count"] == len(body["ids"]), "more rows than one page"
    return set(body["ids"])


def export_nos(client) -> set[str]:
    resp = client.get("/employeeview/export/")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    header, body = rows[0], rows[1:]
    assert header[0] == "Employee no."
    return {row[0] for row in body}


def home_counts(client) -> tuple[int, int]:
    text = client.get("/").text
    employees = re.search(r'id="crm-employees">(\d+)<', text)
    units = re.search(r'id="crm-units">(\d+)<', text)
    assert employees and units, "home page counts missing"
    return int(employees.group(1)), int(units.group(1))


def select_options(html: str, field: str) -> set[int]:
    match = re.search(rf'<select[^>]*\bname="{field}"[^>]*>(.*?)</select>', html, re.S)
    assert match, f"no <select> named {field}"
    return {int(v) for v in re.findall(r'<option[^>]*value="(\d+)"', match.group(1))}


def hr_status(app, emp_id: int) -> str:
    return row(app, emp_id)["hr_status"]


def pop_flashes(client) -> list[tuple[str, str]]:
    """The flashed (category, message) pairs waiting in the client's session; they are consumed."""
    with client.session_transaction() as sess:
        return list(sess.pop("_flashes", []))


# --- the matrix: Sales Manager with each data scope -------------------------------------------------
def arrange_manager(app) -> tuple[Org, str]:
    """The arranged org, and a login for its viewer holding Sales Manager (given write too, so that
    edit / delete / actions reach the scope check rather than stopping at the permission check)."""
    with dbs(app) as s:
        org = arrange_org(s)
        grant(app, s, "Sales Manager", (policy.WRITE, policy.EMPLOYEE))
        return org, user_for(app, s, org.viewer, "Sales Manager")


def check_reads(app, org: Org, web, api, scope: str) -> Snapshot:
    """Set Sales Manager's scope; every read path shows exactly the rows the scope allows."""
    with dbs(app) as s:
        set_scope(s, "Sales Manager", scope)
        snap = Snapshot.take(s)
    visible = snap.visible_employees(scope, org.viewer)
    units = snap.visible_units(scope, org.viewer)
    arranged = set(org.employees.values())
    # The arranged organisation tells the five scopes apart.
    assert scope == "all" or (arranged - visible and arranged & visible)

    assert home_counts(web) == (len(visible), len(units))
    assert html_list_ids(web, "EmployeeView") == visible
    assert api_list_ids(web, "employee", api) == visible
    assert export_nos(web) == {snap.emp_no[e] for e in visible}
    # Org units (__scope_org__ = "id"): own / own_subordinates / team see the viewer's unit,
    # org_subtree its subtree.
    assert units == {"own": {org.team_a}, "own_subordinates": {org.team_a}, "team": {org.team_a},
                     "org_subtree": {org.team_a, org.group_a1}}.get(scope, set(snap.unit_parent))
    assert html_list_ids(web, "OrgUnitView") == units
    assert api_list_ids(web, "org_unit", api) == units
    for unit in org.units.values():
        expected = 200 if unit in units else 404
        assert web.get(f"/orgunitview/show/{unit}").status_code == expected, (scope, unit)
        assert web.get(f"/api/v1/org_unit/{unit}", headers=api).status_code == expected, (scope, unit)
    for emp in arranged:
        expected = 200 if emp in visible else 404
        assert web.get(f"/employeeview/show/{emp}").status_code == expected, (scope, emp)
        assert web.get(f"/employeeview/edit/{emp}").status_code == expected, (scope, emp)
        assert web.get(f"/api/v1/employee/{emp}", headers=api).status_code == expected, (scope, emp)
    return snap


@pytest.mark.parametrize("scope", SCOPES)
def test_scope_matrix_sales_manager(app, scope):
    org, username = arrange_manager(app)
    web, api = client_for(app, username), bearer(app, username)
    snap = check_reads(app, org, web, api, scope)
    visible = snap.visible_employees(scope, org.viewer)
    arranged = set(org.employees.values())

    for emp in arranged - visible:
        before = row(app, emp)
        assert web.post(f"/employeeview/delete/{emp}").status_code == 404
        assert web.post(f"/employeeview/edit/{emp}", data={"position": "hijacked"}).status_code == 404
        resp = web.put(f"/api/v1/employee/{emp}", json={"position": "hijacked"}, headers=api)
        assert resp.status_code == 404 and resp.get_json()["message"] == "Not found"
        assert web.delete(f"/api/v1/employee/{emp}", headers=api).status_code == 404
        assert web.post(f"/employeeview/action/mark_resigned/{emp}").status_code == 404
        pop_flashes(web)
        resp = web.post("/employeeview/action_post", data={"action": "mark_resigned", "rowid": [str(emp)]})
        assert resp.status_code == 302
        assert [cat for cat, msg in pop_flashes(web) if "outside your data scope" in msg] == ["danger"]
        assert row(app, emp) == before

    # Visible rows can be changed and, when nothing depends on them, deleted.
    target = max(arranged & visible)
    resp = web.put(f"/api/v1/employee/{target}", json={"position": "Checked"}, headers=api)
    assert resp.status_code == 200, resp.get_json()
    assert row(app, target)["position"] == "Checked"
    managers = {m for m in snap.emp_manager.values() if m is not None}
    deletable = sorted(arranged & visible - managers - {org.viewer})
    assert deletable or scope == "own"
    for emp in deletable[:1]:
        assert web.post(f"/employeeview/delete/{emp}").status_code == 302
        assert row(app, emp) is None


def test_scope_matrix_on_postgresql(pg_app):
    """The same reads on PostgreSQL (recursive CTE, path ranges under the "C" collation)."""
    org, username = arrange_manager(pg_app)
    web, api = client_for(pg_app, username), bearer(pg_app, username)
    for scope in SCOPES:
        check_reads(pg_app, org, web, api, scope)


# --- one case per seeded role, with its policy scope ------------------------------------------------
SEEDED = {role: (username, password) for username, password, role in demo_logins()}


@pytest.mark.parametrize("role", sorted(policy.ROLES))
def test_seeded_role_with_its_policy_scope(app, role):
    with dbs(app) as s:
        org = arrange_org(s)
        if role in SEEDED:
            username, password = SEEDED[role]
            viewer = f.employee_by_username(s, username).id
        else:  # a role no demo login holds (HR Integration): give it to an arranged employee
            username, password, viewer = user_for(app, s, org.viewer, role), f.PASSWORD, org.viewer
        snap = Snapshot.take(s)
    scope = policy.ROLES[role]["scope"]
    perms = policy.ROLES[role]["permissions"]
    can_read = perms == "*" or (policy.READ, policy.EMPLOYEE) in perms
    can_export = perms == "*" or (policy.EXPORT, policy.EMPLOYEE) in perms
    visible = snap.visible_employees(scope, viewer)
    web, api = client_for(app, username, password), bearer(app, username, password)

    if not can_read:
        assert web.get("/employeeview/list/").status_code == 403
        assert web.get("/api/v1/employee/", headers=api).status_code == 403
        assert web.get(f"/api/v1/employee/{viewer}", headers=api).status_code == 403
        return
    assert html_list_ids(web, "EmployeeView") == visible
    assert api_list_ids(web, "employee", api) == visible
    assert home_counts(web)[0] == len(visible)
    for emp in org.employees.values():
        expected = 200 if emp in visible else 404
        assert web.get(f"/employeeview/show/{emp}").status_code == expected
        assert web.get(f"/api/v1/employee/{emp}", headers=api).status_code == expected
    if can_export:
        assert export_nos(web) == {snap.emp_no[e] for e in visible}
    else:
        assert web.get("/employeeview/export/").status_code == 403


# --- the FAB action hole ----------------------------------------------------------------------------
def arrange_writer(app, scope: str = "team") -> tuple[Org, str]:
    with dbs(app) as s:
        org = arrange_org(s)
        return org, user_for(app, s, org.viewer, writer_role(app, s, scope))


def test_action_post_refuses_rows_outside_scope(app):
    org, username = arrange_writer(app)
    web = client_for(app, username)
    refused = ("danger", "Some of the selected records are outside your data scope; nothing was done.")

    # Another user's row id, alone or among in-scope ones: refused, nothing changed.
    for rowids in ([org.stranger], [org.mate, org.stranger]):
        resp = web.post("/employeeview/action_post",
                        data={"action": "mark_resigned", "rowid": [str(r) for r in rowids]})
        assert resp.status_code == 302
        assert pop_flashes(web) == [refused]
        assert hr_status(app, org.stranger) == "active"
        assert hr_status(app, org.mate) == "active"

    # In scope: done.
    resp = web.post("/employeeview/action_post",
                    data={"action": "mark_resigned", "rowid": [str(org.mate), str(org.r1)]})
    assert resp.status_code == 302
    assert pop_flashes(web) == [("success", "2 employee(s) marked resigned")]
    for emp in (org.mate, org.r1):
        assert hr_status(app, emp) == HR_RESIGNED and row(app, emp)["left_on"] is not None
    assert hr_status(app, org.stranger) == "active"

    # An unknown action name is a 404, whatever the rows.
    resp = web.post("/employeeview/action_post", data={"action": "drop_tables", "rowid": [str(org.r1)]})
    assert resp.status_code == 404


def test_single_row_action_honours_scope_and_refuses_get(app):
    org, username = arrange_writer(app)
    web = client_for(app, username)

    assert web.post(f"/employeeview/action/mark_resigned/{org.stranger}").status_code == 404
    assert web.get(f"/employeeview/action/mark_resigned/{org.stranger}").status_code == 405
    assert web.get(f"/employeeview/action/mark_resigned/{org.r1}").status_code == 405
    assert hr_status(app, org.stranger) == "active"
    assert hr_status(app, org.r1) == "active"

    assert web.post(f"/employeeview/action/mark_resigned/{org.r1}").status_code == 302
    assert hr_status(app, org.r1) == HR_RESIGNED


def test_action_needs_write_permission(app):
    """A read-only role cannot run an action, even on rows in its scope."""
    with dbs(app) as s:
        org = arrange_org(s)
        set_scope(s, "Sales Manager", "team")
        username = user_for(app, s, org.viewer, "Sales Manager")
    web = client_for(app, username)
    assert web.post("/employeeview/action_post",
                    data={"action": "mark_resigned", "rowid": [str(org.mate)]}).status_code == 403
    assert web.post(f"/employeeview/action/mark_resigned/{org.mate}").status_code == 403
    assert hr_status(app, org.mate) == "active"


# --- related-field dropdowns and chosen relations ---------------------------------------------------
def test_edit_form_dropdowns_offer_only_rows_in_scope(app):
    org, username = arrange_writer(app)
    with dbs(app) as s:
        team = Snapshot.take(s).visible_employees("team", org.viewer)
    web = client_for(app, username)

    for url in (f"/employeeview/edit/{org.mate}", "/employeeview/add"):
        html = web.get(url).text
        assert select_options(html, "manager") == team, url
        assert select_options(html, "org_unit") == {org.team_a}, url

    # The API's field info lists the same choices.
    q = prison.dumps({"keys": ["edit_columns"], "edit_columns": {"manager": {"page_size": 100}}})
    info = web.get(f"/api/v1/employee/_info?q={q}", headers=bearer(app, username)).get_json()
    manager = next(c for c in info["edit_columns"] if c["name"] == "manager")
    assert {v["id"] for v in manager["values"]} == team


def test_edit_form_refuses_an_out_of_scope_manager(app):
    org, username = arrange_writer(app)
    web = client_for(app, username)
    mate = row(app, org.mate)
    data = {"employee_no": mate["employee_no"], "name": mate["name"], "org_unit": str(org.team_a),
            "hr_status": "active", "manager": str(org.stranger)}
    resp = web.post(f"/employeeview/edit/{org.mate}", data=data)
    assert resp.status_code == 200  # the form again, with the field error
    assert "Not a valid choice" in resp.text
    assert row(app, org.mate) == mate

    data["manager"] = str(org.r1)
    assert web.post(f"/employeeview/edit/{org.mate}", data=data).status_code == 302
    assert row(app, org.mate)["manager_id"] == org.r1


def test_api_refuses_out_of_scope_relations(app):
    org, username = arrange_writer(app)
    web, api = app.test_client(), {**bearer(app, username), "Accept-Language": "en-GB,en;q=0.9"}

    new = {"employee_no": "SCOPE-NEW", "name": "New Hire", "org_unit": org.team_a, "hr_status": "active",
           "manager": org.stranger}
    resp = web.post("/api/v1/employee/", json=new, headers=api)
    assert resp.status_code == 403
    stranger_no = row(app, org.stranger)["employee_no"]
    assert resp.get_json() == {"field": "manager",
                               "message": f"Stranger ({stranger_no}) is outside your data scope"}
    new.update(manager=org.viewer, org_unit=org.outside)
    resp = web.post("/api/v1/employee/", json=new, headers=api)
    assert resp.status_code == 403
    assert resp.get_json() == {"field": "org_unit", "message": "Scope Outside is outside your data scope"}
    with dbs(app) as s:
        assert s.scalar(select(Employee).where(Employee.employee_no == "SCOPE-NEW")) is None

    mate = row(app, org.mate)
    for change in ({"manager": org.stranger}, {"org_unit": org.outside}, {"manager": org.boss}):
        resp = web.put(f"/api/v1/employee/{org.mate}", json=change, headers=api)
        assert resp.status_code == 403, (change, resp.get_json())
        assert resp.get_json()["field"] == next(iter(change))
        assert row(app, org.mate) == mate

    # In-scope choices go through.
    new.update(org_unit=org.team_a)
    resp = web.post("/api/v1/employee/", json=new, headers=api)
    assert resp.status_code == 201, resp.get_json()
    resp = web.put(f"/api/v1/employee/{org.mate}", json={"manager": org.r1}, headers=api)
    assert resp.status_code == 200, resp.get_json()
    assert row(app, org.mate)["manager_id"] == org.r1


# --- several roles, users without an employee -------------------------------------------------------
def test_multi_role_user_gets_the_widest_scope(app):
    roles = {"Salesperson": "own", "Back Office": "own_subordinates", "QA Inspector": "org_subtree",
             "Sales Manager": "team"}
    widest = max(roles.values(), key=DATA_SCOPES.index)
    assert widest == "org_subtree"
    with dbs(app) as s:
        org = arrange_org(s)
        for role, scope in roles.items():
            set_scope(s, role, scope)
        username = user_for(app, s, org.viewer, *roles)
        snap = Snapshot.take(s)
    expected = snap.visible_employees(widest, org.viewer)
    assert expected > snap.visible_employees("team", org.viewer)
    web = client_for(app, username)
    assert html_list_ids(web, "EmployeeView") == expected
    assert api_list_ids(web, "employee", bearer(app, username)) == expected


@pytest.mark.parametrize("scope", SCOPES)
def test_user_without_employee_record(app, scope):
    """No employee: nothing to anchor own / team / subtree to, so only the "all" scope sees rows."""
    with dbs(app) as s:
        org = arrange_org(s)
        set_scope(s, "Sales Manager", scope)
        sm = app.appbuilder.sm
        user = sm.add_user("noemployee", "No", "Employee", "noemployee@example.com",
                           [sm.find_role("Sales Manager")], f.PASSWORD)
        assert s.get(CrmUser, user.id).employee is None
        snap = Snapshot.take(s)
    expected = snap.visible_employees(scope, None)
    assert (scope == "all") == bool(expected)
    web = client_for(app, "noemployee")
    assert html_list_ids(web, "EmployeeView") == expected
    assert api_list_ids(web, "employee", bearer(app, "noemployee")) == expected
    assert home_counts(web) == (len(expected), len(snap.visible_units(scope, None)))
    assert web.get(f"/employeeview/show/{org.viewer}").status_code == (200 if scope == "all" else 404)
