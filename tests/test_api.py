"""REST API surface: JWT login, OpenAPI and Swagger UI, API keys (valid, revoked, unknown), and the page
size caps of the REST list (FAB_API_MAX_PAGE_SIZE) and of the HTML list (CrmModelView MAX_PAGE_SIZE)."""

from __future__ import annotations

import re
import secrets

import prison
import pytest
from sqlalchemy import func, insert, select

from app.models.employee import Employee
from app.models.org import OrgUnit
from app.services.seed import ADMIN_PASSWORD, DEMO_PASSWORD
from app.views.base import MAX_PAGE_SIZE
from tests import factories
from tests.conftest import api_token, login

ORG_UNITS = "/api/v1/org_unit/"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- JWT --------------------------------------------------------------------------------------------
def test_jwt_login_returns_tokens_that_work(client):
    resp = client.post("/api/v1/security/login", json={"username": "director", "password": DEMO_PASSWORD,
                                                         "provider": "db", "refresh": True})
    assert resp.status_code == 200
    tokens = resp.get_json()
    assert set(tokens) >= {"access_token", "refresh_token"}
    resp = client.get(ORG_UNITS, headers=bearer(tokens["access_token"]))
    assert resp.status_code == 200 and resp.get_json()["count"] > 0
    resp = client.post("/api/v1/security/refresh", headers=bearer(tokens["refresh_token"]))
    assert resp.status_code == 200 and resp.get_json()["access_token"]

    resp = client.post("/api/v1/security/login",
                       json={"username": "director", "password": "Wrong-Pass-2026", "provider": "db"})
    assert resp.status_code == 401
    assert client.get(ORG_UNITS).status_code == 401
    malformed = client.get(ORG_UNITS, headers=bearer("not.a.jwt"))
    assert malformed.status_code == 401 and malformed.get_json()["message"]


# --- OpenAPI and Swagger UI -------------------------------------------------------------------------
def test_openapi_lists_our_resources(client):
    login(client, "admin")
    resp = client.get("/api/v1/_openapi")
    assert resp.status_code == 200
    paths = set(resp.get_json()["paths"])
    for resource in ("org_unit", "employee", "dict_type", "dict_item", "config_item", "audit_log",
                     "data_scope"):
        assert f"/api/v1/{resource}/" in paths, resource
        assert f"/api/v1/{resource}/{{pk}}" in paths, resource
    assert "/api/v1/hr/sync" in paths
    assert "post" in resp.get_json()["paths"]["/api/v1/hr/sync"]
    assert "/api/v1/employee/{pk}/phone" in paths


def test_swagger_ui_served_to_admin(client):
    stranger = client.get("/swagger/v1")  # not for strangers: sent to log in, and back here after
    assert stranger.status_code == 302 and stranger.headers["Location"].startswith("/login/?next=")
    assert stranger.headers["Location"].endswith("/swagger/v1")
    login(client, "admin")
    resp = client.get("/swagger/v1")
    assert resp.status_code == 200
    assert "swagger" in resp.text.lower() and "/api/v1/_openapi" in resp.text


# --- API keys ---------------------------------------------------------------------------------------
def test_api_keys_valid_revoked_and_unknown(app, client, session):
    sm = app.appbuilder.sm
    director = sm.find_user(username="director")
    created = sm.create_api_key(director, "reporting")
    key = created["key"]
    assert key.startswith("crm_")
    resp = client.get(ORG_UNITS, headers=bearer(key))
    assert resp.status_code == 200
    # The key acts as its user: the director's scope (his subtree), not everything.
    director_unit = factories.employee_by_username(session, "director").org_unit
    session.expire_all()
    subtree = set(session.scalars(select(OrgUnit.id).where(OrgUnit.path.startswith(director_unit.path))))
    listed = client.get(f"{ORG_UNITS}?q={prison.dumps({'page_size': 100})}", headers=bearer(key)).get_json()
    assert {r["id"] for r in listed["result"]} == subtree

    assert sm.revoke_api_key(created["uuid"])
    assert client.get(ORG_UNITS, headers=bearer(key)).status_code == 401

    unknown = "crm_" + secrets.token_urlsafe(32)
    assert client.get(ORG_UNITS, headers=bearer(unknown)).status_code == 401


def test_api_key_of_a_resigned_employee_stops_working(app, client, session):
    sm = app.appbuilder.sm
    key = sm.create_api_key(sm.find_user(username="manager2"), "tool")["key"]
    assert client.get(ORG_UNITS, headers=bearer(key)).status_code == 200
    emp = factories.employee_by_username(session, "manager2")
    emp.hr_status = "resigned"
    session.commit()
    assert client.get(ORG_UNITS, headers=bearer(key)).status_code == 401


# --- page size caps ---------------------------------------------------------------------------------
@pytest.fixture
def many_employees(session):
    """Enough employees (in one team, inserted in one statement) to go past both caps."""
    team = session.scalar(select(OrgUnit.id).where(OrgUnit.code == "T-CODE-1"))
    session.execute(insert(Employee), [
        {"employee_no": f"B{n:05d}", "name": f"批量员工{n}", "org_unit_id": team, "hr_status": "active"}
        for n in range(1, 601)
    ])
    session.commit()
    total = session.scalar(select(func.count()).select_from(Employee))
    assert total > 500
    return total


def test_rest_list_page_size_is_capped(app, client, many_employees):
    token = api_token(client, "admin", ADMIN_PASSWORD)
    cap = app.config["FAB_API_MAX_PAGE_SIZE"]
    assert cap == 500
    resp = client.get(f"/api/v1/employee/?q={prison.dumps({'page_size': 100000, 'page': 0})}",
                      headers=bearer(token))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["count"] == many_employees
    assert len(body["result"]) == cap
    # The next page holds the rest: capping loses nothing, it pages.
    resp = client.get(f"/api/v1/employee/?q={prison.dumps({'page_size': 100000, 'page': 1})}",
                      headers=bearer(token))
    assert len(resp.get_json()["result"]) == many_employees - cap


def test_html_list_page_size_is_capped(client, many_employees):
    login(client, "admin")
    resp = client.get("/employeeview/list/?psize_EmployeeView=100000")
    assert resp.status_code == 200
    rows = re.findall(r'name="rowid" value="(\d+)"', resp.text)
    assert len(rows) == MAX_PAGE_SIZE == 200
    assert len(set(rows)) == len(rows)
    # A size under the cap is honoured.
    resp = client.get("/employeeview/list/?psize_EmployeeView=30")
    assert len(re.findall(r'name="rowid" value="(\d+)"', resp.text)) == 30
