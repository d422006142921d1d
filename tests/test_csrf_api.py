"""Issue 11 item 7: an API write authenticated by the browser session needs the CSRF token; JWTs and API
keys (in the Authorization header, which a cross-site page cannot set) need none."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app import clock
from app.models.sales import OWNED, FollowUp
from app.services.seed import DEMO_PASSWORD
from tests import factories as f
from tests.conftest import api_token

pytestmark = pytest.mark.config(WTF_CSRF_ENABLED=True)

SALESPERSON = "sales11"


def _token(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def _browser(app):
    """A salesperson logged in through the login form; returns (client, the page's CSRF token)."""
    client = app.test_client()
    token = _token(client.get("/login/").text)
    resp = client.post("/login/", data={"username": SALESPERSON, "password": DEMO_PASSWORD,
                                        "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    return client, token


def _own_opportunity(session) -> int:
    me = f.employee_by_username(session, SALESPERSON)
    opp = f.OPPORTUNITY.create(session, status=OWNED, owner_id=me.id, org_unit_id=me.org_unit_id,
                               assigned_at=clock.utcnow())
    session.commit()
    return opp.id


def _follow_ups(session, opp_id: int) -> int:
    session.expire_all()
    return session.scalar(select(func.count(FollowUp.id)).where(FollowUp.opportunity_id == opp_id))


def test_a_cookie_only_api_write_is_refused_and_writes_nothing(app, session):
    opp_id = _own_opportunity(session)
    client, _token_unused = _browser(app)
    body = {"id": opp_id, "content": "forged by another site"}
    resp = client.post("/api/v1/opportunity/follow_up", json=body)
    assert resp.status_code == 400 and resp.is_json
    assert resp.get_json()["field"] == "csrf_token"
    resp = client.post("/api/v1/opportunity/follow_up", json=body, headers={"X-CSRFToken": "forged"})
    assert resp.status_code == 400 and resp.get_json()["field"] == "csrf_token"
    assert _follow_ups(session, opp_id) == 0
    # reading needs no token
    assert client.get(f"/api/v1/opportunity/{opp_id}").status_code == 200


def test_the_page_token_lets_the_session_write(app, session):
    opp_id = _own_opportunity(session)
    client, token = _browser(app)
    resp = client.post("/api/v1/opportunity/follow_up", json={"id": opp_id, "content": "called"},
                       headers={"X-CSRFToken": token})
    assert resp.status_code == 200, resp.get_json()
    assert _follow_ups(session, opp_id) == 1


def test_jwt_and_api_keys_need_no_csrf_token(app, session):
    opp_id = _own_opportunity(session)
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), SALESPERSON)}"}
    resp = app.test_client().post("/api/v1/opportunity/follow_up", json={"id": opp_id, "content": "jwt"},
                                  headers=jwt)
    assert resp.status_code == 200, resp.get_json()

    user = app.appbuilder.sm.find_user(username=SALESPERSON)
    key = app.appbuilder.sm.create_api_key(user, "test key")["key"]
    resp = app.test_client().post("/api/v1/opportunity/follow_up", json={"id": opp_id, "content": "key"},
                                  headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.get_json()
    assert _follow_ups(session, opp_id) == 2

    # a browser that also holds a JWT sends it in the header: no token asked for
    client, _token_unused = _browser(app)
    resp = client.post("/api/v1/opportunity/follow_up", json={"id": opp_id, "content": "both"}, headers=jwt)
    assert resp.status_code == 200, resp.get_json()
    assert _follow_ups(session, opp_id) == 3
