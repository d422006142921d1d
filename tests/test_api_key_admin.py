"""Admins issue API keys in the UI (shown once), revoke them, and both are audited."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.models.audit import AuditLog
from tests.conftest import login


def test_issue_use_and_revoke_an_api_key(app, client, session):
    hr_bot = app.appbuilder.sm.find_user(username="hr-bot")
    login(client, "admin")
    resp = client.post("/issueapikeyview/form", data={"user": str(hr_bot.id), "name": "HR system"},
                       follow_redirects=True)
    key = re.search(r"crm_[A-Za-z0-9_-]{20,}", resp.get_data(as_text=True)).group(0)

    system = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert system.get("/api/v1/org_unit/", headers=auth).status_code == 200
    # The key's user may read org units but not employees (HR Integration role).
    assert system.get("/api/v1/employee/", headers=auth).status_code == 403

    listing = client.get("/apikeyview/list/").get_data(as_text=True)
    assert "HR system" in listing and key not in listing  # only the hash is kept
    key_id = session.scalar(select(app.appbuilder.sm.api_key_model.id).where(
        app.appbuilder.sm.api_key_model.name == "HR system"))
    client.post("/apikeyview/action_post", data={"action": "revoke", "rowid": [str(key_id)]})
    assert system.get("/api/v1/org_unit/", headers=auth).status_code == 401

    actions = session.scalars(select(AuditLog.action).where(AuditLog.target_type == "api_key")).all()
    assert actions == ["create", "update"]


def test_only_admins_manage_api_keys(app, session, client):
    keys = app.appbuilder.sm.api_key_model
    before = session.scalars(select(keys.id)).all()
    login(client, "director")
    assert client.get("/apikeyview/list/").status_code == 403
    resp = client.post("/issueapikeyview/form", data={"user": "1", "name": "sneaky"})
    assert resp.status_code == 403
    assert session.scalars(select(keys.id)).all() == before  # no key issued
