"""The sales floor through the real app: the workbench, opportunity list and page, the pool page,
follow-up entry, give back / assign / transfer forms, the customer page, the assignment log and the
opportunity REST API — and the data scope on every one of them.

The organisation, pools and rule are those of tests/test_ownership.py (build_world). Times are arranged
relative to `now`, read once at the start of a test; the margins are hours, so the requests made a few
seconds later see the same picture.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import (
    ASSIGN,
    OWNED,
    POOLED,
    TRANSFER,
    AssignmentLog,
    FollowUp,
    Lead,
    Opportunity,
    OwnerCooling,
)
from app.services import opportunities, ownership
from tests import factories as f
from tests.conftest import login
from tests.test_ownership import World, build_world, opportunity, owned

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@contextmanager
def dbs(app):
    """A short app context for arranging or checking rows (requests run outside it)."""
    with app.app_context():
        yield db.session


ROLES = {"a1": "Salesperson", "a2": "Salesperson", "b1": "Salesperson", "x1": "Salesperson",
         "manager": "Sales Manager"}


@pytest.fixture
def world(app) -> World:
    with dbs(app) as s:
        return build_world(s)


def ensure_login(app, w: World, name: str) -> None:
    """The world's people get their login when a test first signs them in (hashing takes time)."""
    with dbs(app) as s:
        emp = w.emp(s, name)
        if emp.user_id is None:
            f.login_user(app, s, emp, ROLES[name])


def client_for(app, w: World, name: str):
    ensure_login(app, w, name)
    client = app.test_client()
    resp = login(client, f"user{getattr(w, name)}", f.PASSWORD)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    client.get("/lang/en")
    return client


def flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as sess:
        return list(sess.pop("_flashes", []))


def table_ids(html: str, table_id: str) -> set[int]:
    match = re.search(rf'id="{table_id}".*?</table>', html, re.S)
    assert match, f"no table {table_id}"
    return {int(i) for i in re.findall(r'data-opportunity="(\d+)"', match.group(0))}


def list_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'name="rowid" value="(\d+)"', html)}


def opp_state(app, opp_id: int) -> tuple:
    with dbs(app) as s:
        o = s.get(Opportunity, opp_id)
        return (o.status, o.owner_id, o.pool_id, o.locked, o.stage_id, o.last_followup_at, o.idle_since,
                o.next_followup_at)


def count(app, model, *where) -> int:
    with dbs(app) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


# --- the workbench ----------------------------------------------------------------------------------
def arrange_day(app, w: World, now: dt.datetime) -> dict:
    """a1's opportunities with clocks around `now`; returns their arranged values by name."""
    with dbs(app) as s:
        _, end = clock.day_bounds(now)
        names = ["due", "overdue", "tomorrow", "none", "soon", "fresh", "protected", "frozen", "trial"]
        ids = dict(zip(names, owned(s, w, "a1", len(names), at=now - DAY), strict=True))
        ids["other"] = owned(s, w, "a2", 1, at=now - DAY)[0]
        ids["won"] = owned(s, w, "a1", 1, at=now - DAY)[0]
        values = {  # name → (next_followup_at, idle_since, protected_until, locked, stage)
            "due": (now + (end - now) / 2, now - DAY, None, False, "contacted"),
            "overdue": (now - 2 * HOUR, now - DAY, None, False, "new"),
            "tomorrow": (end + HOUR, now - DAY, None, False, "new"),
            "none": (None, now - DAY, None, False, "contacted"),
            "soon": (None, now - 7 * DAY + 12 * HOUR, None, False, "new"),
            "fresh": (None, now - 5 * DAY, None, False, "new"),
            "protected": (None, now - 9 * DAY, now + 3 * DAY, False, "new"),
            "frozen": (None, now - 9 * DAY, None, True, "new"),
            "trial": (None, now - 9 * DAY, None, False, "trial"),
            "other": (now + (end - now) / 2, now - 9 * DAY, None, False, "new"),
            "won": (now + (end - now) / 2, now - 9 * DAY, None, False, "new"),
        }
        for name, (next_at, idle, protected, locked, stage) in values.items():
            opp = s.get(Opportunity, ids[name])
            opp.next_followup_at, opp.idle_since, opp.protected_until = next_at, idle, protected
            opp.locked, opp.stage_id = locked, w.stages[stage]
        s.commit()
        opportunities.set_stage(s, ids["won"], w.stages["won"], None, now, "arrange")
        s.commit()
        return {"ids": ids, "values": values, "end": end}


def expected_sets(day: dict, w: World, now: dt.datetime, owner_names) -> dict[str, set[int]]:
    """The filters' definitions applied in plain Python to the arranged values (rule: idle 7 d, reminder
    24 h, exempt stages won/lost/trial)."""
    ids, values, end = day["ids"], day["values"], day["end"]
    mine = {n for n in values if n in owner_names and n != "won"}
    window = 24 * HOUR

    def soon(n):
        _next, idle, protected, locked, stage = values[n]
        return (not locked and stage not in ("won", "lost", "trial") and idle + 7 * DAY - window <= now
                and (protected is None or protected - window <= now))

    return {
        "all": {ids[n] for n in mine},
        "due_today": {ids[n] for n in mine if values[n][0] is not None and now <= values[n][0] < end},
        "overdue": {ids[n] for n in mine if values[n][0] is not None and values[n][0] < now},
        "recycle_soon": {ids[n] for n in mine if soon(n)},
        "stage:contacted": {ids[n] for n in mine if values[n][4] == "contacted"},
    }


def test_workbench_filters_show_exactly_the_right_opportunities(app, world):
    w = world
    now = utcnow()
    day = arrange_day(app, w, now)
    expected = expected_sets(day, w, now, {n for n in day["ids"] if n != "other"})
    assert expected["due_today"] and expected["overdue"] and expected["recycle_soon"]  # not vacuous
    client = client_for(app, w, "a1")
    page = client.get("/workbench/").text
    for key, ids in expected.items():
        html = client.get(f"/workbench/?f={key}").text
        assert table_ids(html, "crm-my-opportunities") == ids, key
        if not key.startswith("stage:"):
            assert re.search(rf'id="crm-count-{key}"[^>]*>(\d+)<', page).group(1) == str(len(ids)), key
    contacted = re.search(r'id="crm-stage-contacted">(\d+)<', page).group(1)
    assert contacted == str(len(expected["stage:contacted"]))
    # The opportunity list's quick filters say the same (the salesperson's scope: their own).
    for key in ("due_today", "overdue", "recycle_soon"):
        assert list_ids(client.get(f"/opportunityview/list/?quick={key}&psize_OpportunityView=100").text) \
            == expected[key], key
    # The team's manager sees the whole team's in the list, a2's included.
    team = expected_sets(day, w, now, set(day["ids"]))
    manager = client_for(app, w, "manager")
    for key in ("due_today", "recycle_soon"):
        assert list_ids(manager.get(f"/opportunityview/list/?quick={key}&psize_OpportunityView=100").text) \
            == team[key], key
    # The export honours the quick filter and the scope.
    with manager.get("/opportunityview/export/?quick=due_today") as resp:  # streamed: close it
        exported = resp.text.lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(exported)))
    assert {int(r[0]) for r in rows[1:]} == team["due_today"]


def test_workbench_lists_the_pools_i_may_claim_from_and_claims(app, world):
    w = world
    with dbs(app) as s:
        mine = [opportunity(s, w, pool=w.pool) for _ in range(4)] + [opportunity(s, w, pool=w.pool_any)]
        english = opportunity(s, w, pool=w.pool, product_line=w.english)  # wrong product line for the pool
        frozen = opportunity(s, w, pool=w.pool_any, locked=True)
        elsewhere = opportunity(s, w, pool=w.pool_outside)
        cooled = opportunity(s, w, pool=w.pool_any)
        s.add(OwnerCooling(opportunity_id=cooled, employee_id=w.b1, until=utcnow() + DAY))
        s.commit()
    client = client_for(app, w, "b1")
    page = client.get("/workbench/").text
    assert table_ids(page, "crm-claimable") == set(mine)
    assert {int(i) for i in re.findall(r'data-pool="(\d+)"', page)} == {w.pool, w.pool_any}
    assert list_ids(client.get("/pool/list/").text) == set(mine)
    # A batch over today's allowance (3 from the k12 pool) is refused whole.
    resp = client.post("/opportunityview/claim", data={"ids": [str(i) for i in mine[:4]]})
    assert resp.status_code == 302
    [(category, message)] = flashes(client)
    assert category == "danger" and "you may claim 3 more today" in message
    assert {opp_state(app, i)[0] for i in mine} == {POOLED}
    # Ids the pool page does not offer are refused too, nothing claimed.
    for other in (english, frozen, elsewhere, cooled):
        client.post("/opportunityview/claim", data={"ids": [str(mine[0]), str(other)]})
        assert flashes(client)[0][0] == "danger"
        assert opp_state(app, mine[0])[0] == POOLED and opp_state(app, other)[0] == POOLED
    resp = client.post("/opportunityview/claim", data={"ids": [str(mine[0]), str(mine[4])]})
    assert flashes(client) == [("success", "Claimed 2 opportunity(ies)")]
    assert opp_state(app, mine[0])[:2] == (OWNED, w.b1) and opp_state(app, mine[4])[:2] == (OWNED, w.b1)
    page = client.get("/workbench/").text
    assert table_ids(page, "crm-my-opportunities") == {mine[0], mine[4]}
    assert re.search(rf'data-pool="{w.pool}".*?class="crm-left">(\d+) / 3<', page, re.S).group(1) == "2"


def test_claim_action_on_the_pool_page_stays_within_what_the_page_offers(app, world):
    w = world
    with dbs(app) as s:
        offered = opportunity(s, w, pool=w.pool_any)
        elsewhere = opportunity(s, w, pool=w.pool_outside)
    client = client_for(app, w, "a1")
    resp = client.post("/pool/action_post", data={"action": "claim_action",
                                                  "rowid": [str(offered), str(elsewhere)]})
    assert resp.status_code == 302
    assert "outside your data scope" in flashes(client)[0][1]
    assert opp_state(app, offered)[0] == POOLED and opp_state(app, elsewhere)[0] == POOLED
    client.post("/pool/action_post", data={"action": "claim_action", "rowid": [str(offered)]})
    assert opp_state(app, offered)[:2] == (OWNED, w.a1)
    # The manager may not claim; the salesperson may not assign.
    manager = client_for(app, w, "manager")
    with dbs(app) as s:
        another = opportunity(s, w, pool=w.pool_any)
    assert manager.post("/pool/action_post", data={"action": "claim_action", "rowid": [str(another)]}) \
        .status_code == 403
    assert client.get(f"/opportunityview/assign?ids={offered}").status_code == 403
    assert opp_state(app, another)[0] == POOLED


# --- follow-ups -------------------------------------------------------------------------------------
@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_quick_follow_up_from_the_opportunity_page(app, world):
    w = world
    with dbs(app) as s:
        opp_id = owned(s, w, "a1")[0]
    ensure_login(app, w, "a1")
    client = app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    client.post("/login/", data={"username": f"user{w.a1}", "password": f.PASSWORD, "csrf_token": token})
    client.get("/lang/en")
    page = client.get(f"/opportunityview/show/{opp_id}").text
    assert 'id="crm-follow-up-form"' in page and 'id="crm-give-back"' in page
    form = {"opportunity": str(opp_id), "content": "called, wants a trial", "result": "interested",
            "type": str(w.types["call"]), "next_followup_at": "2099-05-01T10:30",
            "stage": str(w.stages["interested"])}
    assert client.post("/opportunityview/follow_up", data=form).status_code == 400  # no CSRF token
    assert count(app, FollowUp, FollowUp.opportunity_id == opp_id) == 0
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    before = utcnow()
    resp = client.post("/opportunityview/follow_up", data={**form, "csrf_token": token,
                                                           "next": f"/opportunityview/show/{opp_id}"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/opportunityview/show/{opp_id}")
    status, owner, _pool, _locked, stage, last, idle, next_at = opp_state(app, opp_id)
    assert stage == w.stages["interested"] and last == idle and before <= last <= utcnow()
    assert next_at == dt.datetime(2099, 5, 1, 2, 30)  # 10:30 in Shanghai, stored as UTC
    with dbs(app) as s:
        row = s.scalar(select(FollowUp).where(FollowUp.opportunity_id == opp_id))
        assert (row.content, row.result, row.type_id, row.employee_id) == (
            "called, wants a trial", "interested", w.types["call"], w.a1)
    page = client.get(f"/opportunityview/show/{opp_id}").text
    assert "called, wants a trial" in page
    # A next follow-up in the past: the field's message, nothing written.
    resp = client.post("/opportunityview/follow_up", data={**form, "csrf_token": token, "content": "again",
                                                           "next_followup_at": "2001-01-01T09:00"})
    assert resp.status_code == 302
    assert flashes(client) == [("danger", "Next follow-up: The next follow-up must be in the future")]
    assert count(app, FollowUp, FollowUp.opportunity_id == opp_id) == 1
    assert opp_state(app, opp_id)[5] == last


def test_lost_needs_a_reason_on_the_stage_form(app, world):
    w = world
    with dbs(app) as s:
        opp_id = owned(s, w, "a1")[0]
    client = client_for(app, w, "a1")
    before = opp_state(app, opp_id)
    client.post("/opportunityview/stage", data={"opportunity": opp_id, "stage": w.stages["lost"]})
    assert flashes(client) == [("danger", "Lost reason: Required")]
    assert opp_state(app, opp_id) == before
    client.post("/opportunityview/stage", data={"opportunity": opp_id, "stage": w.stages["lost"],
                                                "lost_reason": w.reasons["no_need"]})
    assert opp_state(app, opp_id)[0] == "lost"
    with dbs(app) as s:
        assert s.get(Opportunity, opp_id).lost_reason_id == w.reasons["no_need"]


# --- data scope on every path -----------------------------------------------------------------------
def test_a_salesperson_cannot_act_on_another_teams_opportunity(app, world):
    w = world
    with dbs(app) as s:
        theirs = owned(s, w, "b1")[0]  # team B
        mine = owned(s, w, "a1")[0]
    before = opp_state(app, theirs)
    logs_before = count(app, AssignmentLog)
    client = client_for(app, w, "a1")
    # Pages
    assert client.get(f"/opportunityview/show/{theirs}").status_code == 404
    assert theirs not in list_ids(client.get("/opportunityview/list/").text)
    assert client.get(f"/customer/show/{opp_customer(app, theirs)}").status_code == 404
    resp = client.post("/opportunityview/follow_up", data={"opportunity": theirs, "content": "x"})
    assert resp.status_code == 404
    assert client.post("/opportunityview/stage", data={"opportunity": theirs,
                                                       "stage": w.stages["contacted"]}).status_code == 404
    resp = client.post("/opportunityview/give_back", data={"ids": f"{mine},{theirs}", "reason": "r"})
    assert resp.status_code == 302 and "outside your data scope" in flashes(client)[0][1]
    resp = client.post("/opportunityview/action_post", data={"action": "give_back_action", "rowid": [theirs]})
    assert "outside your data scope" in flashes(client)[0][1]
    # API
    jwt = api_headers(client, w, "a1")
    assert client.get(f"/api/v1/opportunity/{theirs}", headers=jwt).status_code == 404
    listed = client.get("/api/v1/opportunity/?q=(page_size:100)", headers=jwt).get_json()
    assert {r["id"] for r in listed["result"]} == {mine}
    for path, body in (("follow_up", {"id": theirs, "content": "x"}),
                       ("give_back", {"id": theirs, "reason": "r"}),
                       ("stage", {"id": theirs, "stage": "contacted"})):
        resp = client.post(f"/api/v1/opportunity/{path}", json=body, headers=jwt)
        assert resp.status_code == 404 and "outside your data scope" in resp.get_json()["message"], path
    for path in ("assign", "lock", "transfer_all"):  # not the salesperson's to do at all
        resp = client.post(f"/api/v1/opportunity/{path}", json={"ids": [mine]}, headers=jwt)
        assert resp.status_code == 403, path
    # Nothing changed anywhere.
    assert opp_state(app, theirs) == before and opp_state(app, mine)[:2] == (OWNED, w.a1)
    assert count(app, AssignmentLog) == logs_before
    assert count(app, FollowUp) == 0


def test_a_manager_acts_within_the_team_only(app, world):
    w = world
    with dbs(app) as s:
        team_a = owned(s, w, "a1", 2)
        team_b = owned(s, w, "b1")[0]
        pooled = opportunity(s, w, pool=w.pool)
    manager = client_for(app, w, "manager")
    assert list_ids(manager.get("/opportunityview/list/").text) == set(team_a)
    # Assign: team B's opportunity refused whole; the team's and the pool's go.
    resp = manager.post("/opportunityview/assign", data={"ids": f"{team_a[0]},{team_b}", "employee": w.a2})
    assert resp.status_code == 302 and "outside your data scope" in flashes(manager)[0][1]
    assert opp_state(app, team_a[0])[1] == w.a1 and opp_state(app, team_b)[1] == w.b1
    resp = manager.post("/opportunityview/assign", data={"ids": f"{team_a[0]},{pooled}", "employee": w.b1})
    assert resp.status_code == 404 and "outside your data scope" in resp.text  # b1 is not in the team
    resp = manager.post("/opportunityview/assign", data={"ids": f"{team_a[0]},{pooled}", "employee": w.a2,
                                                         "note": "a1 is overloaded"})
    assert resp.status_code == 302
    assert flashes(manager) == [("success", f"Assigned 2 to {emp_label(app, w.a2)}")]
    assert opp_state(app, team_a[0])[1] == w.a2 and opp_state(app, pooled)[:2] == (OWNED, w.a2)
    with dbs(app) as s:
        log = s.scalar(select(AssignmentLog).where(AssignmentLog.opportunity_id == pooled,
                                                   AssignmentLog.reason == ASSIGN))
        user = f.employee_by_username(s, f"user{w.manager}").user
        assert (log.from_pool_id, log.to_owner_id, log.actor_id, log.actor_name, log.note) == (
            w.pool, w.a2, user.id, user.username, "a1 is overloaded")
    # Freeze through the list action: only what the manager sees.
    manager.post("/opportunityview/action_post", data={"action": "lock_action", "rowid": [team_a[1], team_b]})
    assert "outside your data scope" in flashes(manager)[0][1]
    assert not opp_state(app, team_b)[3] and not opp_state(app, team_a[1])[3]
    manager.post("/opportunityview/action_post", data={"action": "lock_action", "rowid": [team_a[1]]})
    assert opp_state(app, team_a[1])[3]
    # The API the same way.
    jwt = api_headers(manager, w, "manager")
    resp = manager.post("/api/v1/opportunity/assign", json={"ids": [team_b], "employee_id": w.a1},
                        headers=jwt)
    assert resp.status_code == 404 and opp_state(app, team_b)[1] == w.b1
    resp = manager.post("/api/v1/opportunity/lock", json={"ids": [team_b]}, headers=jwt)
    assert resp.status_code == 404 and not opp_state(app, team_b)[3]


def test_transfer_all_of_a_resigned_employee_from_the_form(app, world):
    w = world
    with dbs(app) as s:
        held = owned(s, w, "a1", 3)
        s.get(Employee, w.a1).hr_status = HR_RESIGNED
        s.commit()
    manager = client_for(app, w, "manager")
    form = manager.get("/opportunityview/transfer").text
    assert re.search(rf'<option value="{w.a1}"[^>]*>[^<]*Resigned', form)  # the resigned one is offered
    assert f'<option value="{w.b1}"' not in form  # team B is not the manager's
    resp = manager.post("/opportunityview/transfer", data={"from_employee": w.a1, "to_employee": w.b1})
    assert resp.status_code == 404 and opp_state(app, held[0])[1] == w.a1
    resp = manager.post("/opportunityview/transfer", data={"from_employee": w.a1, "to_employee": w.a1})
    assert resp.status_code == 409 and "has resigned" in resp.text
    resp = manager.post("/opportunityview/transfer", data={"from_employee": w.a1, "to_employee": w.a2,
                                                           "note": "a1 left"})
    assert resp.status_code == 302
    assert flashes(manager) == [("success", f"Transferred 3 opportunity(ies) of {emp_label(app, w.a1)} to "
                                            f"{emp_label(app, w.a2)}")]
    with dbs(app) as s:
        assert set(s.scalars(select(Opportunity.id).where(Opportunity.owner_id == w.a2))) == set(held)
        user = f.employee_by_username(s, f"user{w.manager}").user
        rows = s.scalars(select(AssignmentLog).where(AssignmentLog.reason == TRANSFER)).all()
        assert {(r.opportunity_id, r.from_owner_id, r.to_owner_id, r.actor_id, r.note) for r in rows} == {
            (i, w.a1, w.a2, user.id, "a1 left") for i in held}


def test_give_back_form_needs_a_reason_and_returns_to_the_pool(app, world):
    w = world
    with dbs(app) as s:
        opp_id = owned(s, w, "a1")[0]
    client = client_for(app, w, "a1")
    page = client.get(f"/opportunityview/give_back?ids={opp_id}").text
    assert f'data-opportunity="{opp_id}"' in page
    resp = client.post("/opportunityview/give_back", data={"ids": str(opp_id), "reason": ""})
    assert resp.status_code == 422 and 'data-field="reason"' in resp.text
    assert opp_state(app, opp_id)[:2] == (OWNED, w.a1)
    resp = client.post("/opportunityview/give_back", data={"ids": str(opp_id), "reason": "moved abroad"})
    assert resp.status_code == 302
    assert opp_state(app, opp_id)[:3] == (POOLED, None, w.pool)
    with dbs(app) as s:
        assert s.get(OwnerCooling, (opp_id, w.a1)) is not None


# --- customer page, logs, follow-up list, phones ----------------------------------------------------
def test_customer_page_shows_leads_opportunities_follow_ups_and_history_with_masked_phones(app, world):
    w = world
    with dbs(app) as s:
        mine = owned(s, w, "a1")[0]
        opp = s.get(Opportunity, mine)
        customer_id, phone = opp.customer_id, opp.customer.phone
        theirs = opportunity(s, w, product_line=w.english)
        s.get(Opportunity, theirs).customer_id = customer_id  # the same customer, another product line
        s.add_all([Lead(customer_id=customer_id, opportunity_id=mine, phone=phone, name="Mum",
                        product_line_id=w.math, consult_note="price of the maths course"),
                   Lead(customer_id=customer_id, opportunity_id=theirs, phone=phone, name="Mum",
                        product_line_id=w.english, consult_note="hidden english lead")])
        s.commit()
        ownership.assign(s, [theirs], w.emp(s, "b1"), utcnow(), "arrange")
        opportunities.add_follow_up(s, mine, w.emp(s, "a1"), None, "first call", None, None, utcnow())
        s.commit()
    client = client_for(app, w, "a1")
    page = client.get(f"/customer/show/{customer_id}").text
    assert table_ids(page, "crm-customer-opportunities") == {mine}  # not b1's opportunity
    assert "price of the maths course" in page and "hidden english lead" not in page
    assert "first call" in page
    assert re.search(r'id="crm-customer-history".*?Assigned by a manager', page, re.S)
    masked = phone[3:6] + "****" + phone[-4:]
    assert masked in page and phone not in page and phone[3:] not in page
    # The opportunity page and the list mask the same way; the API shows no phone at all.
    assert phone[3:] not in client.get(f"/opportunityview/show/{mine}").text
    assert phone[3:] not in client.get("/opportunityview/list/").text
    # The assignment log and the follow-up list: the salesperson's own opportunity only.
    assert count(app, AssignmentLog, AssignmentLog.opportunity_id == theirs) > 0
    html = client.get("/assignmentlogview/list/?psize_AssignmentLogView=200").text
    assert f"#{theirs} " not in html and f"#{mine} " in html
    html = client.get("/followupview/list/").text
    assert "first call" in html
    b1 = client_for(app, w, "b1")
    assert "first call" not in b1.get("/followupview/list/").text
    with dbs(app) as s:
        follow_up = s.scalar(select(FollowUp.id).where(FollowUp.opportunity_id == mine))
        log = s.scalar(select(AssignmentLog.id).where(AssignmentLog.opportunity_id == mine))
    assert b1.get(f"/followupview/show/{follow_up}").status_code == 404
    assert b1.get(f"/assignmentlogview/show/{log}").status_code == 404
    assert client.get(f"/assignmentlogview/show/{log}").status_code == 200
    assert b1.get(f"/customer/show/{customer_id}").status_code == 200  # through b1's own opportunity


def test_api_ownership_endpoints_answer_4xx_json_and_write_nothing(app, world):
    w = world
    with dbs(app) as s:
        pooled = [opportunity(s, w, pool=w.pool) for _ in range(4)]
    client = app.test_client()
    jwt = {**api_headers(client, w, "a1"), "Accept-Language": "en"}
    resp = client.post("/api/v1/opportunity/claim", json={"ids": pooled}, headers=jwt)
    assert resp.status_code == 409 and "you asked for 4" in resp.get_json()["message"]
    assert {opp_state(app, i)[0] for i in pooled} == {POOLED}
    assert client.post("/api/v1/opportunity/claim", json=[1], headers=jwt).status_code == 400
    resp = client.post("/api/v1/opportunity/claim", json={"ids": pooled[:2]}, headers=jwt)
    assert resp.status_code == 200 and sorted(resp.get_json()["claimed"]) == pooled[:2]
    resp = client.post("/api/v1/opportunity/follow_up", json={"id": pooled[0], "content": "called",
                                                               "next_followup_at": "2000-01-01T00:00:00Z"},
                       headers=jwt)
    assert resp.status_code == 422 and resp.get_json()["field"] == "next_followup_at"
    assert count(app, FollowUp) == 0
    body = {"id": pooled[0], "content": "called", "type": "call", "stage": "contacted",
            "next_followup_at": "2099-01-01T08:00:00+08:00"}
    resp = client.post("/api/v1/opportunity/follow_up", json=body, headers=jwt)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()["opportunity"]
    # the API answers in ISO 8601 with the business time zone's offset: the same instant as was sent
    assert body["next_followup_at"] == "2099-01-01T08:00:00+08:00"
    assert body["stage_id"] == w.stages["contacted"]
    resp = client.post("/api/v1/opportunity/give_back", json={"id": pooled[1]}, headers=jwt)
    assert resp.status_code == 422
    assert resp.get_json() == {"message": "Say why you give it back", "field": "reason"}
    assert opp_state(app, pooled[1])[:2] == (OWNED, w.a1)
    resp = client.post("/api/v1/opportunity/give_back", json={"id": pooled[1], "reason": "wrong number"},
                       headers=jwt)
    assert resp.status_code == 200 and resp.get_json()["pool"]["id"] == w.pool
    # The pool as the API shows it to a1 now: what is left, minus a1's cooling one.
    resp = client.get("/api/v1/opportunity/pool", headers=jwt)
    assert {r["id"] for r in resp.get_json()["result"]} == set(pooled[2:])
    # Manager: assign and transfer through the API.
    mjwt = api_headers(client, w, "manager")
    resp = client.post("/api/v1/opportunity/assign", json={"ids": pooled[2:], "employee_id": w.a2},
                       headers=mjwt)
    assert resp.status_code == 200 and sorted(resp.get_json()["assigned"]) == pooled[2:]
    resp = client.post("/api/v1/opportunity/transfer_all",
                       json={"from_employee_id": w.a2, "to_employee_id": None}, headers=mjwt)
    assert resp.status_code == 200 and resp.get_json()["moved"] == 2
    assert {opp_state(app, i)[0] for i in pooled[2:]} == {"waiting"}


def opp_customer(app, opp_id: int) -> int:
    with dbs(app) as s:
        return s.get(Opportunity, opp_id).customer_id


def emp_label(app, emp_id: int) -> str:
    with dbs(app) as s:
        return str(s.get(Employee, emp_id))


def api_headers(client, w: World, name: str) -> dict:
    ensure_login(client.application, w, name)
    resp = client.post("/api/v1/security/login", json={"username": f"user{getattr(w, name)}",
                                                        "password": f.PASSWORD, "provider": "db"})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['access_token']}"}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_dictionary_selects_speak_the_readers_language(app, world, lang):
    """The workbench's quick follow-up types and the opportunity page's type, stage and lost-reason
    selects show each item's label in the reader's language only (never "新建 / New")."""
    w = world
    with dbs(app) as s:
        opp_id = owned(s, w, "a1")[0]
    client = client_for(app, w, "a1")
    client.get("/lang/zh_CN" if lang == "zh" else "/lang/en")
    pages = {"workbench": client.get("/workbench/").text,
             "opportunity": client.get(f"/opportunityview/show/{opp_id}").text}
    shown, other = ("Phone call", "电话") if lang == "en" else ("电话", "Phone call")
    for name, html in pages.items():
        options = re.findall(r"<option value=\"\d+\"[^>]*>([^<]*)</option>", html)
        assert f">{shown}</option>" in html and f">{other}</option>" not in html, name
        assert options and not any(" / " in o for o in options), (name, options)
    stage, other_stage = ("New", "新建") if lang == "en" else ("新建", "New")
    opportunity_page = pages["opportunity"]
    assert f">{stage}</option>" in opportunity_page and f">{other_stage}</option>" not in opportunity_page


# --- statements per page ----------------------------------------------------------------------------
def add_working_set(app, w: World, n: int, now: dt.datetime) -> None:
    """`n` more owned opportunities of a1 (both product lines, two intention levels, several stages) and
    `n` more in a1's pools: every per-row lookup the page could make has rows to make it for."""
    from app.models.sales import CirculationRule
    from tests.test_ownership import opportunity as pooled

    with dbs(app) as s:
        levels = [f.dict_item(s, "intention_level", code).id for code in ("A", "B")]
        stages = [w.stages[c] for c in ("new", "contacted")]
        for i in range(n):
            opp = pooled(s, w, product_line=(w.math, w.english)[i % 2])
            row = s.get(Opportunity, opp)
            row.status, row.pool_id, row.owner_id, row.org_unit_id = OWNED, None, w.a1, w.team_a
            row.intention_level_id, row.stage_id = levels[i % 2], stages[i % 2]
            row.idle_since, row.assigned_at = now - (i % 5) * DAY, now - 6 * DAY
            row.next_followup_at = now + (i % 7 - 3) * HOUR + HOUR / 2  # none at "now": the clock ticks
            pooled(s, w, pool=(w.pool, w.pool_any)[i % 2], intention_level_id=levels[i % 2])
        team_rules = select(func.count(CirculationRule.id)).where(CirculationRule.org_unit_id == w.team_a)
        if not s.scalar(team_rules):
            s.add(CirculationRule(name="team A math A", org_unit_id=w.team_a, product_line_id=w.math,
                                  intention_level_id=levels[0], idle_days=2, exempt_stages="contacted"))
            s.get(CirculationRule, w.rule).exempt_stages = "won"
        s.commit()


def test_workbench_runs_the_same_statements_for_5_or_50_opportunities(app, world):
    """No N+1: relationships, recycle times and pool counts are read per page, not per row."""
    from tests.test_fast_lists import counted_statements

    w, now = world, utcnow()
    client = client_for(app, w, "a1")
    counts, shown = {}, {}
    for total, more in ((5, 5), (50, 45)):
        add_working_set(app, w, more, now)
        client.get("/workbench/")  # warm: the login's and the reference data's caches
        with counted_statements(app) as seen:
            page = client.get("/workbench/").text
        shown[total] = (len(table_ids(page, "crm-my-opportunities")), len(table_ids(page, "crm-claimable")))
        # FAB's permission checks (menu, buttons) are per request, not per row: left out of the bound.
        counts[total] = len([s for s in seen if "ab_permission_view" not in s])
    assert shown == {5: (5, 5), 50: (50, 50)}
    assert counts[5] == counts[50], counts
    assert counts[50] <= 45, counts
    # The batched recycle times are what the opportunity page says, row by row.
    from app.services import circulation, workbench

    with dbs(app) as s:
        rows = list(s.scalars(select(Opportunity).where(Opportunity.owner_id == w.a1)))
        expected = {o.id: circulation.recycle_due_at(s, o, circulation.rule_of(s, o)) for o in rows}
        assert workbench.recycle_times(s, rows) == expected
        assert len({v for v in expected.values()}) > 2  # rules with different idle days and an exemption


def test_workbench_shows_the_first_by_next_follow_up_and_links_to_the_full_list(app, world, monkeypatch):
    import html as html_lib

    from app.views import workbench as view

    w, now = world, utcnow()
    add_working_set(app, w, 12, now)
    monkeypatch.setattr(view, "WORKBENCH_ROWS", 5)
    client = client_for(app, w, "a1")
    page = client.get("/workbench/?f=overdue").text
    with dbs(app) as s:
        overdue = list(s.scalars(select(Opportunity.id).where(
            Opportunity.owner_id == w.a1, opportunities.overdue_clause(now))
            .order_by(Opportunity.next_followup_at, Opportunity.id)))
    assert len(overdue) > 5
    table = re.search(r'id="crm-my-opportunities".*?</table>', page, re.S).group(0)
    shown = [int(i) for i in re.findall(r'<tr data-opportunity="(\d+)"', table)]
    assert shown == overdue[:5]
    assert f"Showing 5 of {len(overdue)}." in page
    link = html_lib.unescape(re.search(r'href="([^"]+)" id="crm-all-of-them"', page).group(1))
    assert list_ids(client.get(link + "&psize_OpportunityView=100").text) == set(overdue)
