"""The dispatch console: queue figures, run now (queues one job), and the dry run, for directors only."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.jobs.dispatch import DISPATCH_JOB_ID
from app.models.sales import AssignmentLog, DispatchRule, Opportunity
from tests.conftest import login


def test_director_previews_and_starts_dispatch_without_the_preview_writing(app, client, session):
    login(client, "director")
    waiting = session.scalar(select(func.count()).where(Opportunity.status == "waiting"))
    assert waiting == 240
    page = client.get("/dispatch/simulate/").get_data(as_text=True)
    assert "crm-per-team" in page and f"<b>{waiting}</b>" in page
    assert session.scalar(select(func.count()).select_from(AssignmentLog)) == 0
    assert session.scalar(select(func.count()).where(Opportunity.status == "waiting")) == waiting

    for _ in range(3):  # however often it is pressed, one run is queued
        assert client.post("/dispatch/run/").status_code == 302
    queued = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"])).get_job_ids()
    assert queued == [DISPATCH_JOB_ID]
    api = client.get("/api/v1/dispatch/simulate").get_json()
    assert api["waiting"] == waiting and sum(api["per_team"].values()) == api["assigned"]


def test_the_console_is_not_for_team_managers_or_salespeople(client):
    for username in ("manager1", "sales11"):
        login(client, username)
        assert client.get("/dispatch/").status_code == 403
        assert client.get("/api/v1/dispatch/simulate").status_code == 403
        client.get("/logout/")


def _rule_form(rule: DispatchRule, **changes) -> dict:
    """The dispatch rule form as a browser posts it: an unchecked checkbox sends nothing at all."""
    form = {"name": rule.name, "priority": str(rule.priority), "match_recycled": rule.match_recycled,
            "strategy": rule.strategy, "target_org_unit": str(rule.target_org_unit_id),
            "target_pool": str(rule.target_pool_id or "")}
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def test_a_dispatch_rule_can_be_saved_round_the_clock_and_disabled_from_the_browser(client, session):
    login(client, "director")
    seeded = session.scalar(select(DispatchRule).order_by(DispatchRule.id))
    seeded.working_hours_only = True
    session.commit()

    # Editing: both boxes unchecked.
    resp = client.post(f"/dispatchruleview/edit/{seeded.id}", data=_rule_form(seeded))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    session.expire_all()
    edited = session.get(DispatchRule, seeded.id)
    assert (edited.enabled, edited.working_hours_only) == (False, False)

    # Adding: a disabled, round-the-clock rule; then one with both boxes checked.
    resp = client.post("/dispatchruleview/add", data=_rule_form(seeded, name="night shift"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    night = session.scalar(select(DispatchRule).where(DispatchRule.name == "night shift"))
    assert (night.enabled, night.working_hours_only) == (False, False)
    resp = client.post("/dispatchruleview/add", data=_rule_form(seeded, name="day shift", enabled="y",
                                                                working_hours_only="y"))
    assert resp.status_code == 302
    day = session.scalar(select(DispatchRule).where(DispatchRule.name == "day shift"))
    assert (day.enabled, day.working_hours_only) == (True, True)


def test_a_dispatch_rule_is_checked_the_same_way_by_the_form_the_api_and_the_command(app, client, runner,
                                                                                     session):
    login(client, "director")
    seeded = session.scalar(select(DispatchRule).order_by(DispatchRule.id))
    before = session.scalar(select(func.count()).select_from(DispatchRule))
    refusal = "A &#39;to pool&#39; rule needs a pool"

    # The form: a 'to pool' rule without a pool stays on the form with the reason next to the field.
    resp = client.post("/dispatchruleview/add", data=_rule_form(seeded, name="no pool", strategy="pool",
                                                                target_pool=None))
    assert resp.status_code == 200 and refusal in resp.get_data(as_text=True)

    # The API: the same refusal as 422 JSON naming the field.
    body = {"name": "no pool", "priority": 5, "strategy": "pool", "match_recycled": "any",
            "target_org_unit": seeded.target_org_unit_id, "enabled": False, "working_hours_only": False}
    resp = client.post("/api/v1/dispatch_rule/", json=body)
    assert resp.status_code == 422
    assert resp.get_json() == {"message": "A 'to pool' rule needs a pool", "field": "target_pool"}

    # The command line, through the service command the others share.
    result = runner.invoke(args=["crm", "dispatch-rule", "no pool", "--strategy", "pool",
                                 "--team", str(seeded.target_org_unit_id)])
    assert result.exit_code != 0 and "target_pool: A 'to pool' rule needs a pool" in result.output
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(DispatchRule)) == before

    # …and each saves a valid rule, the API and the command a disabled round-the-clock one too.
    resp = client.post("/api/v1/dispatch_rule/", json={**body, "target_pool": seeded.target_pool_id})
    assert resp.status_code == 201, resp.get_json()
    result = runner.invoke(args=["crm", "dispatch-rule", seeded.name, "--disabled", "--working-hours-only"])
    assert result.exit_code == 0, result.output
    session.expire_all()
    saved = session.scalar(select(DispatchRule).where(DispatchRule.name == "no pool"))
    assert (saved.strategy, saved.target_pool_id, saved.enabled) == ("pool", seeded.target_pool_id, False)
    changed = session.get(DispatchRule, seeded.id)
    assert (changed.enabled, changed.working_hours_only) == (False, True)
    result = runner.invoke(args=["crm", "dispatch-rule", seeded.name, "--strategy", "pool", "--pool", "-1"])
    assert result.exit_code != 0 and "needs a pool" in result.output  # no such pool
