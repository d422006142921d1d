"""A resignation reported through POST /api/v1/hr/sync starts the "transfer all opportunities" flow
(app.services.hr_transfer) by the config item hr.resignation_policy.

Policy under test: "manager" → to the manager (none, or resigned too → back to dispatch, said so);
"team_pool" → the public pool of the person's unit, per product line (none → dispatch); "dispatch" → back
to waiting, a dispatch run requested; an unknown value applies "manager". One audit entry names the policy
and the counts, each move has its AssignmentLog row, the manager is told in the inbox; the same sync sent
again does nothing more.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.employee import Employee
from app.models.inbox import RESIGNATION_TRANSFER, InboxNotification
from app.models.jobs import DISPATCH, QUEUED, JobRun
from app.models.sales import OWNED, POOLED, TRANSFER, WAITING, AssignmentLog, Opportunity
from app.services import hr_transfer, reference
from tests import factories
from tests.conftest import login

URL = "/api/v1/hr/sync"


@pytest.fixture
def hr_headers(app, session):
    sm = app.appbuilder.sm
    user = sm.add_user("hr-system", "HR", "System", "hr-system@example.com", sm.find_role("HR Integration"),
                       factories.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, 'hr')['key']}"}


@pytest.fixture
def team(app, session):
    """A department with a team: a manager (with a login) and a salesperson owning three open
    opportunities (two K12 maths, one coding) and a won one."""
    dept = factories.org_unit(session, kind="department")
    unit = factories.org_unit(session, parent=dept)
    manager = factories.employee(session, unit, name="王经理")
    factories.login_user(app, session, manager, "Sales Manager")
    seller = factories.salesperson(app, session, unit, name="李销售", manager=manager)
    maths = factories.dict_item(session, reference.PRODUCT_LINE, "k12_math")
    coding = factories.dict_item(session, reference.PRODUCT_LINE, "programming")
    opps = [factories.OPPORTUNITY.create(session, status=OWNED, owner_id=seller.id, org_unit_id=unit.id,
                                         product_line_id=line.id) for line in (maths, maths, coding)]
    won = factories.OPPORTUNITY.create(session, status="won", owner_id=seller.id, org_unit_id=unit.id)
    session.commit()
    return {"dept": dept, "unit": unit, "manager": manager, "seller": seller, "opps": opps, "won": won,
            "maths": maths, "coding": coding}


def resign(client, headers, emp: Employee, unit, manager: Employee | None = None):
    row = {"employee_no": emp.employee_no, "name": emp.name, "org_unit_code": unit.code,
           "hr_status": "resigned", "left_on": "2026-06-16",
           "manager_no": manager.employee_no if manager else None}
    return client.post(URL, json={"employees": [row]}, headers=headers)


def states(session, opps) -> list[tuple]:
    session.expire_all()
    return [(o.status, o.owner_id, o.pool_id) for o in (session.get(Opportunity, x.id) for x in opps)]


def audits(session, emp: Employee) -> list[dict]:
    rows = session.scalars(select(AuditLog).where(AuditLog.action == hr_transfer.ACTION,
                                                  AuditLog.target_id == str(emp.id)))
    return [json.loads(r.after) for r in rows]


def inbox_of(session, emp: Employee) -> list[InboxNotification]:
    return list(session.scalars(select(InboxNotification).where(
        InboxNotification.recipient_id == emp.user_id, InboxNotification.kind == RESIGNATION_TRANSFER)))


def logs(session, opps) -> list[AssignmentLog]:
    return list(session.scalars(select(AssignmentLog).where(
        AssignmentLog.opportunity_id.in_([o.id for o in opps]), AssignmentLog.reason == TRANSFER)))


def test_manager_policy_moves_everything_open_to_the_manager_once(app, client, session, hr_headers, team):
    seller, manager = team["seller"], team["manager"]
    resp = resign(client, hr_headers, seller, team["unit"], manager)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["transfers"] == [{"employee_no": seller.employee_no, "policy": "manager",
                                             "to_manager": 3, "pooled": 0, "dispatched": 0, "notes": []}]
    assert states(session, team["opps"]) == [(OWNED, manager.id, None)] * 3
    assert session.get(Opportunity, team["won"].id).owner_id == seller.id  # closed ones stay
    moves = [(g.from_owner_id, g.to_owner_id) for g in logs(session, team["opps"])]
    assert moves == [(seller.id, manager.id)] * 3
    (entry,) = audits(session, seller)
    assert (entry["policy"], entry["to_manager"], entry["configured"]) == ("manager", 3, "manager")
    (note,) = inbox_of(session, manager)
    assert note.param_values == {"name": "李销售", "to_you": 3, "pooled": 0, "dispatched": 0}

    # The same sync again: nothing more (no audit, no notification, no log rows).
    again = resign(client, hr_headers, seller, team["unit"], manager)
    assert again.status_code == 200 and "transfers" not in again.get_json()
    assert len(audits(session, seller)) == 1 and len(inbox_of(session, manager)) == 1
    assert len(logs(session, team["opps"])) == 3

    # The notification reads in the manager's language.
    web = app.test_client()
    assert login(web, manager.user.username, factories.PASSWORD).status_code == 302
    web.get("/lang/zh")
    listed = web.get("/api/v1/inbox/?page_size=10").get_json()
    assert any("李销售" in n["title"] and "离职" in n["title"] for n in listed["result"]), listed


@pytest.mark.parametrize("case", ["no_manager", "manager_resigned"])
def test_manager_policy_without_an_active_manager_falls_back_to_dispatch(app, client, session, hr_headers,
                                                                         team, case):
    seller, manager = team["seller"], team["manager"]
    if case == "manager_resigned":
        manager.hr_status = "resigned"
        session.commit()
    resp = resign(client, hr_headers, seller, team["unit"], manager if case == "manager_resigned" else None)
    assert resp.status_code == 200, resp.get_json()
    (transfer,) = resp.get_json()["transfers"]
    assert (transfer["policy"], transfer["to_manager"], transfer["dispatched"]) == ("manager", 0, 3)
    assert "back to dispatch" in transfer["notes"][0]
    assert states(session, team["opps"]) == [(WAITING, None, None)] * 3
    assert all("back to dispatch" in g.note for g in logs(session, team["opps"]))
    assert inbox_of(session, manager) == []
    assert session.scalar(select(func.count()).select_from(JobRun).where(
        JobRun.kind == DISPATCH, JobRun.status == QUEUED)) == 1


def test_team_pool_policy_pools_per_product_line_and_dispatches_the_rest(app, client, session, hr_headers,
                                                                         team):
    factories.set_config(session, "hr.resignation_policy", "team_pool")
    seller = team["seller"]
    # Pools over the team: one of the department for any line, a deeper one of the team for K12 maths.
    maths_pool = factories.POOL.create(session, org_unit_id=team["unit"].id, product_line_id=team["maths"].id)
    dept_pool = factories.POOL.create(session, org_unit_id=team["dept"].id)
    factories.POOL.create(session, org_unit_id=team["unit"].id, product_line_id=team["maths"].id,
                          enabled=False)
    session.commit()
    resp = resign(client, hr_headers, seller, team["unit"], team["manager"])
    (transfer,) = resp.get_json()["transfers"]
    assert (transfer["pooled"], transfer["dispatched"]) == (3, 0)
    assert states(session, team["opps"]) == [(POOLED, None, maths_pool.id)] * 2 + [
        (POOLED, None, dept_pool.id)]
    assert [g.to_pool_id for g in logs(session, team["opps"])] == [maths_pool.id] * 2 + [dept_pool.id]
    (note,) = inbox_of(session, team["manager"])
    assert note.param_values["pooled"] == 3


def test_team_pool_policy_without_a_pool_of_the_line_sends_it_to_dispatch(app, client, session, hr_headers,
                                                                          team):
    factories.set_config(session, "hr.resignation_policy", "team_pool")
    maths_pool = factories.POOL.create(session, org_unit_id=team["unit"].id, product_line_id=team["maths"].id)
    session.commit()
    (transfer,) = resign(client, hr_headers, team["seller"], team["unit"], team["manager"]).get_json()[
        "transfers"]
    assert (transfer["pooled"], transfer["dispatched"]) == (2, 1)
    assert "without a public pool" in transfer["notes"][0]
    assert states(session, team["opps"]) == [(POOLED, None, maths_pool.id)] * 2 + [(WAITING, None, None)]


def test_dispatch_policy_sends_everything_back_and_requests_a_dispatch_run(app, client, session, hr_headers,
                                                                           team):
    factories.set_config(session, "hr.resignation_policy", "dispatch")
    Queue("high", connection=Redis.from_url(app.config["REDIS_URL"])).empty()
    (transfer,) = resign(client, hr_headers, team["seller"], team["unit"], team["manager"]).get_json()[
        "transfers"]
    assert (transfer["policy"], transfer["dispatched"]) == ("dispatch", 3)
    assert states(session, team["opps"]) == [(WAITING, None, None)] * 3
    run = session.scalar(select(JobRun).where(JobRun.kind == DISPATCH, JobRun.status == QUEUED))
    assert run is not None and run.rq_job_id in Queue("high", connection=Redis.from_url(
        app.config["REDIS_URL"])).job_ids
    (entry,) = audits(session, team["seller"])
    assert (entry["policy"], entry["dispatched"]) == ("dispatch", 3)
    assert inbox_of(session, team["manager"])[0].param_values["dispatched"] == 3


def test_an_unknown_policy_value_applies_manager_and_says_so(app, client, session, hr_headers, team, caplog):
    factories.set_config(session, "hr.resignation_policy", "to_the_moon")
    (transfer,) = resign(client, hr_headers, team["seller"], team["unit"], team["manager"]).get_json()[
        "transfers"]
    assert (transfer["policy"], transfer["to_manager"]) == ("manager", 3)
    assert "unknown policy 'to_the_moon'" in transfer["notes"][0]
    assert audits(session, team["seller"])[0]["configured"] == "to_the_moon"
    assert "hr.resignation_policy is 'to_the_moon'" in caplog.text


def test_a_new_employee_synced_as_resigned_or_a_bad_row_starts_nothing(app, client, session, hr_headers,
                                                                       team):
    row = {"employee_no": "NEW-1", "name": "新人", "org_unit_code": team["unit"].code,
           "hr_status": "resigned"}
    bad = {"employee_no": team["seller"].employee_no, "name": "李销售", "org_unit_code": "NO-SUCH-UNIT",
           "hr_status": "resigned"}
    resp = client.post(URL, json={"employees": [row, bad]}, headers=hr_headers)
    assert resp.status_code == 200 and "transfers" not in resp.get_json()
    assert states(session, team["opps"]) == [(OWNED, team["seller"].id, None)] * 3
