"""One audit mechanism for configuration: every create, update and delete of what steers ownership, messaging
and access writes who, when, before and after — from a form, the REST API and the CLI alike — and no secret
reaches the log."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.calls import CallLine, OutboundInterface
from app.models.metadata import ConfigItem
from app.models.sales import DispatchRule, Pool, SalesProfile
from app.models.security import RoleDataScope
from app.models.sms import SensitiveWord, SmsChannel
from app.services.audit import REDACTED, REPLACED
from tests import factories as f
from tests.conftest import api_token, login
from tests.helpers import field_errors


def last_id(session) -> int:
    session.expire_all()
    return session.scalar(select(func.max(AuditLog.id))) or 0


def rows(session, since: int, target_type: str, action: str | None = None) -> list[AuditLog]:
    session.expire_all()
    query = select(AuditLog).where(AuditLog.id > since, AuditLog.target_type == target_type)
    if action:
        query = query.where(AuditLog.action == action)
    return list(session.scalars(query.order_by(AuditLog.id)))


def one(session, since: int, target_type: str, action: str) -> tuple[AuditLog, dict, dict]:
    """The one audit row of `action` on `target_type` since `since`, with its before and after as dicts."""
    found = rows(session, since, target_type, action)
    assert len(found) == 1, [(r.action, r.before, r.after) for r in rows(session, since, target_type)]
    row = found[0]
    return row, json.loads(row.before or "{}"), json.loads(row.after or "{}")


def no_secret(session, since: int, *secrets: str) -> None:
    session.expire_all()
    for row in session.scalars(select(AuditLog).where(AuditLog.id > since)):
        text = " ".join(str(v) for v in (row.summary, row.before, row.after))
        for secret in secrets:
            assert secret not in text, (row.action, row.target_type, text)


@pytest.fixture
def bearer(client):
    return {"Authorization": f"Bearer {api_token(client, 'admin')}"}


def test_api_changes_of_rules_profiles_metadata_and_scopes_are_audited(client, session, bearer):
    rule = session.scalar(select(DispatchRule).order_by(DispatchRule.id))
    circulation = f.CIRCULATION_RULE.create(session)
    profile = session.scalar(select(SalesProfile).order_by(SalesProfile.employee_id))
    scope = session.scalar(select(RoleDataScope).order_by(RoleDataScope.role_id))
    session.commit()
    old_priority, old_weight = rule.priority, profile.weight
    since = last_id(session)

    def put(url, body):
        resp = client.put(url, json=body, headers=bearer)
        assert resp.status_code == 200, resp.get_json()

    put(f"/api/v1/dispatch_rule/{rule.id}", {"priority": old_priority + 1, "working_hours_only": True})
    row, before, after = one(session, since, "dispatch_rule", "update")
    assert (row.actor_name, row.target_id) == ("admin", str(rule.id))
    assert before["priority"] == old_priority and after["priority"] == old_priority + 1
    assert after["working_hours_only"] is True

    put(f"/api/v1/circulation_rule/{circulation.id}", {"idle_days": 11})
    _, before, after = one(session, since, "circulation_rule", "update")
    assert (before, after) == ({"idle_days": 7}, {"idle_days": 11})

    put(f"/api/v1/sales_profile/{profile.employee_id}", {"weight": old_weight + 50, "paused": True})
    _, before, after = one(session, since, "sales_profile", "update")
    assert before["weight"] == old_weight and after == {"weight": old_weight + 50, "paused": True}

    new_scope = "all" if scope.scope != "all" else "team"
    put(f"/api/v1/data_scope/{scope.role_id}", {"scope": new_scope})
    _, _, after = one(session, since, "role", "scope_change")
    assert after == {"scope": new_scope}

    # a circulation rule created and deleted through the API: the whole row, before and after
    created = client.post("/api/v1/circulation_rule/", headers=bearer,
                          json={"name": "API rule", "enabled": True, "org_unit": circulation.org_unit_id,
                                "idle_days": 5, "cooling_days": 2})
    assert created.status_code == 201, created.get_json()
    _, _, after = one(session, since, "circulation_rule", "create")
    assert (after["name"], after["idle_days"]) == ("API rule", 5)
    assert after["org_unit_id"] == circulation.org_unit_id
    resp = client.delete(f"/api/v1/circulation_rule/{created.get_json()['id']}", headers=bearer)
    assert resp.status_code == 200
    _, before, after = one(session, since, "circulation_rule", "delete")
    assert before["name"] == "API rule" and after == {}


def test_config_items_named_like_a_secret_keep_their_value_out_of_the_log(client, session, bearer):
    since = last_id(session)
    resp = client.post("/api/v1/config_item/", headers=bearer,
                       json={"key": "crm.partner_api_token", "value_type": "str", "value": "tok-123456"})
    assert resp.status_code == 201, resp.get_json()
    item_id = resp.get_json()["id"]
    resp = client.put(f"/api/v1/config_item/{item_id}", headers=bearer, json={"value": "tok-654321"})
    assert resp.status_code == 200, resp.get_json()
    _, _, after = one(session, since, "config_item", "create")
    assert after["key"] == "crm.partner_api_token" and "value" not in after
    _, before, after = one(session, since, "config_item", "update")
    assert before["value"] == REDACTED and after["value"] != "tok-654321"
    no_secret(session, since, "tok-123456", "tok-654321")
    # an ordinary item keeps its values in the log
    plain = session.scalar(select(ConfigItem).where(ConfigItem.key == "calls.max_daily_attempts"))
    since = last_id(session)
    resp = client.put(f"/api/v1/config_item/{plain.id}", headers=bearer, json={"value": "6"})
    assert resp.status_code == 200, resp.get_json()
    _, _, after = one(session, since, "config_item", "update")
    assert after == {"value": "6"}


@pytest.fixture
def admin(client):
    login(client, "admin")
    return client


CHANNEL_FORM = {"name": "审计通道", "provider": "sink", "signature": "学而思", "priority": "10",
                "rate_limit": "100", "batch_size": "100", "timeout_seconds": "10",
                "opt_out_text": "拒收请回复R", "price_per_segment": "0.045", "enabled": "y"}


def test_form_changes_of_pools_channels_words_and_call_configuration_are_audited(admin, session):
    org = f.ORG_UNIT.create(session)
    session.commit()
    since = last_id(session)

    # pools: add, edit, delete
    resp = admin.post("/poolview/add", data={"name": "审计公海", "org_unit": str(org.id),
                                              "daily_claim_limit": "20", "enabled": "y"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    pool = session.scalar(select(Pool).where(Pool.name == "审计公海"))
    row, _, after = one(session, since, "pool", "create")
    assert row.actor_name == "admin" and after["daily_claim_limit"] == 20
    resp = admin.post(f"/poolview/edit/{pool.id}", data={"name": "审计公海", "org_unit": str(org.id),
                                                          "daily_claim_limit": "5", "enabled": "y"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    _, before, after = one(session, since, "pool", "update")
    assert (before, after) == ({"daily_claim_limit": 20}, {"daily_claim_limit": 5})
    assert admin.post(f"/poolview/delete/{pool.id}").status_code == 302
    _, before, _ = one(session, since, "pool", "delete")
    assert before["name"] == "审计公海"

    # an SMS channel with a secret: the log says a secret changed, never what it is
    resp = admin.post("/smschannelview/add", data={**CHANNEL_FORM, "new_secret": "chan-secret-42"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    channel = session.scalar(select(SmsChannel).where(SmsChannel.name == "审计通道"))
    _, _, after = one(session, since, "sms_channel", "create")
    assert "encrypted_secret" not in after and after["signature"] == "学而思"
    resp = admin.post(f"/smschannelview/edit/{channel.id}",
                      data={**CHANNEL_FORM, "priority": "3", "new_secret": "chan-secret-43"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    _, before, after = one(session, since, "sms_channel", "update")
    assert (before["priority"], after["priority"]) == (10, 3)
    assert before["encrypted_secret"] == REDACTED and after["encrypted_secret"] == REPLACED

    # a sensitive word
    resp = admin.post("/sensitivewordview/add", data={"word": "审计词", "category": "", "action": "block"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    assert session.scalar(select(SensitiveWord).where(SensitiveWord.word == "审计词")) is not None
    one(session, since, "sensitive_word", "create")

    # outbound calling: an interface with secrets, a line, a number, a seat
    iface_form = {"name": "审计接口", "provider": "http", "enabled": "y", "base_url": "https://cc.example.com/",
                  "access_key_env": "CC_KEY", "secret_env": "", "new_secret": "iface-secret-1",
                  "callback_secret_env": "", "new_callback_secret": "iface-cb-secret-1",
                  "connect_timeout": "3", "read_timeout": "10", "options": ""}
    resp = admin.post("/outboundinterfaceview/add", data=iface_form)
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    iface = session.scalar(select(OutboundInterface).where(OutboundInterface.name == "审计接口"))
    _, _, after = one(session, since, "call_interface", "create")
    assert not {"encrypted_secret", "encrypted_callback_secret"} & after.keys()
    assert after["access_key_env"] == "CC_KEY"  # the name of a variable is no secret
    resp = admin.post("/calllineview/add", data={"name": "审计线路", "interface": str(iface.id),
                                                  "trunk": "t1", "concurrency_limit": "10", "enabled": "y",
                                                  "calling_windows": "", "binding_minutes": "30"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    line = session.scalar(select(CallLine).where(CallLine.name == "审计线路"))
    one(session, since, "call_line", "create")
    resp = admin.post("/callnumberview/add", data={"number": "+861058009999", "line": str(line.id),
                                                    "area": "北京", "daily_cap": "200", "rate_limit": "",
                                                    "rate_period_minutes": "60", "status": "active",
                                                    "status_note": ""})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    one(session, since, "call_number", "create")
    emp = f.EMPLOYEE.create(session)
    session.commit()
    resp = admin.post("/seatview/add", data={"seat_no": "S-AUDIT", "line": str(line.id),
                                              "employee": str(emp.id), "active": "y"})
    assert resp.status_code == 302, field_errors(resp.get_data(as_text=True))
    _, _, after = one(session, since, "seat", "create")
    assert after["employee_id"] == emp.id

    secrets = ["chan-secret-42", "chan-secret-43", "iface-secret-1", "iface-cb-secret-1"]
    session.expire_all()
    secrets += [session.get(SmsChannel, channel.id).encrypted_secret, iface.encrypted_secret,
                iface.encrypted_callback_secret]
    no_secret(session, since, *secrets)


def test_cli_changes_of_dispatch_rules_and_call_configuration_are_audited(runner, session):
    since = last_id(session)
    team = session.scalar(select(DispatchRule).order_by(DispatchRule.id)).target_org_unit_id
    result = runner.invoke(args=["crm", "dispatch-rule", "审计规则", "--strategy", "round_robin",
                                 "--team", str(team), "--round-the-clock"])
    assert result.exit_code == 0, result.output
    row, _, after = one(session, since, "dispatch_rule", "create")
    assert row.actor_name == "crm dispatch-rule" and after["name"] == "审计规则"
    result = runner.invoke(args=["crm", "dispatch-rule", "审计规则", "--priority", "3", "--disabled"])
    assert result.exit_code == 0, result.output
    _, before, after = one(session, since, "dispatch_rule", "update")
    assert (before, after) == ({"enabled": True, "priority": 100}, {"enabled": False, "priority": 3})
    # run again: nothing changes, nothing is logged
    runner.invoke(args=["crm", "dispatch-rule", "审计规则", "--priority", "3", "--disabled"])
    assert len(rows(session, since, "dispatch_rule")) == 2

    result = runner.invoke(args=["crm", "call-config", "interface", "审计接口",
                                 "--set", "provider=simulator"])
    assert result.exit_code == 0, result.output
    row, _, _ = one(session, since, "call_interface", "create")
    assert row.actor_name == "crm call-config"
    result = runner.invoke(args=["crm", "call-config", "line", "审计线路", "--set", "interface=审计接口",
                                 "--set", "concurrency_limit=12"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["crm", "call-config", "line", "审计线路", "--set", "concurrency_limit=8"])
    assert result.exit_code == 0, result.output
    _, before, after = one(session, since, "call_line", "update")
    assert (before, after) == ({"concurrency_limit": 12}, {"concurrency_limit": 8})


# --- phone numbers stay masked on the sales pages and in the audit log ---------------------------------
def _owned_opportunity_with_a_lead(session):
    from app.models.sales import OWNED, Lead, Opportunity

    lead = session.scalar(select(Lead).where(Lead.opportunity_id.is_not(None)).order_by(Lead.id))
    opp = session.get(Opportunity, lead.opportunity_id)
    emp = f.employee_by_username(session, "sales11")
    opp.status, opp.owner_id, opp.org_unit_id = OWNED, emp.id, emp.org_unit_id
    session.commit()
    return opp, lead


@pytest.mark.parametrize("username", ["director", "admin"])
def test_the_leads_tables_mask_phones_even_for_roles_that_may_reveal_them(client, session, username):
    from app.security.masking import mask_phone, national_digits

    opp, lead = _owned_opportunity_with_a_lead(session)
    login(client, username)
    since = last_id(session)
    for url, table in ((f"/opportunityview/show/{opp.id}", 'id="crm-leads"'),
                       (f"/customer/show/{opp.customer_id}", 'id="crm-customer-leads"')):
        page = client.get(url).get_data(as_text=True)
        assert table in page, url
        leads_table = page.split(table, 1)[1].split("</table>", 1)[0]
        assert f'data-lead="{lead.id}"' in leads_table
        assert national_digits(lead.phone) not in leads_table, url
        assert mask_phone(lead.phone) in leads_table, url
    assert rows(session, since, "Lead", "phone_view") == []  # nothing was revealed
    # …a reveal is a deliberate, audited look at one lead
    resp = client.post(f"/leadview/phone/{lead.id}", follow_redirects=True)
    assert resp.status_code == 200 and lead.phone in resp.get_data(as_text=True)
    assert len(rows(session, since, "Lead", "phone_view")) == 1


def test_the_audit_log_masks_phone_numbers_unless_revealed(client, session, bearer):
    from app.models.employee import Employee
    from app.security.masking import mask_phone, national_digits

    emp = session.scalar(select(Employee).where(Employee.phone.is_not(None)).order_by(Employee.id))
    old_phone, new_phone = emp.phone, "+8613912345678"
    since = last_id(session)
    resp = client.put(f"/api/v1/employee/{emp.id}", json={"phone": "13912345678"}, headers=bearer)
    assert resp.status_code == 200, resp.get_json()
    row, before, after = one(session, since, "employee", "update")
    assert (before["phone"], after["phone"]) == (old_phone, new_phone)  # the log itself keeps the truth

    login(client, "admin")
    for url in ("/auditlogview/list/", f"/auditlogview/show/{row.id}"):
        page = client.get(url).get_data(as_text=True)
        assert national_digits(new_phone) not in page and national_digits(old_phone) not in page, url
    assert mask_phone(new_phone) in client.get(f"/auditlogview/show/{row.id}").get_data(as_text=True)
    answer = client.get(f"/api/v1/audit_log/{row.id}", headers=bearer).get_json()["result"]
    assert national_digits(new_phone) not in json.dumps(answer) and mask_phone(new_phone) in answer["after"]

    # the show page offers the reveal; revealing shows the numbers and is itself audited
    page = client.get(f"/auditlogview/show/{row.id}").get_data(as_text=True)
    assert f"/auditlogview/phone/{row.id}" in page
    resp = client.post(f"/auditlogview/phone/{row.id}", follow_redirects=True)
    shown = resp.get_data(as_text=True)
    assert resp.status_code == 200 and new_phone in shown and old_phone in shown
    reveal, _, _ = one(session, since, "audit_log", "phone_view")
    assert (reveal.actor_name, reveal.target_id) == ("admin", str(row.id))
