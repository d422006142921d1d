"""The dispatch engine on the real app (SQLite), through the real RQ job and a real SimpleWorker.

Every test arranges salespeople of its own (teams under HQ, outside the demo's sales division, so only the
capacities it sets apply), disables the demo's dispatch rules and retires the demo's waiting leads, then
computes what it expects from what it arranged.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from collections import Counter, namedtuple

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, insert, select, update

from app.clock import local_date, utcnow
from app.jobs.dispatch import DISPATCH_JOB_ID, dispatch_waiting_job, enqueue_dispatch
from app.jobs.worker import app_worker_class
from app.models.employee import HR_ON_LEAVE, HR_RESIGNED
from app.models.metadata import ConfigItem
from app.models.org import OrgUnit
from app.models.sales import (
    DISPATCH,
    LEAST_LOADED,
    LOST,
    OWNED,
    POOL_STRATEGY,
    POOLED,
    ROUND_ROBIN,
    TO_POOL,
    WAITING,
    WEIGHTED,
    AssignmentLog,
    CirculationRule,
    Customer,
    DispatchRule,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.services import dispatch, dispatch_plan
from app.services.seed import DEMO_LEADS
from tests import factories as f
from tests.helpers import instant

_phones = itertools.count(1)
Opp = namedtuple("Opp", "id source_id campaign product_line_id region intention_level_id is_recycled")


# --- arranging ----------------------------------------------------------------------------------------
@pytest.fixture
def quiet(session):
    """No demo dispatch rule and no demo lead waiting: the test's own rules and leads are all there is."""
    session.execute(update(DispatchRule).values(enabled=False))
    session.execute(update(Opportunity).where(Opportunity.status == WAITING).values(status=LOST))
    session.commit()
    return session


def hq(session) -> OrgUnit:
    return session.scalar(select(OrgUnit).where(OrgUnit.code == "HQ"))


def team(session, parent=None, kind="team") -> OrgUnit:
    return f.org_unit(session, parent=parent or hq(session), kind=kind)


def people(session, unit, n, hr_status="active", level=None, **profile) -> list[int]:
    """`n` employees of `unit` with sales profiles; returns their ids."""
    ids = []
    for _ in range(n):
        emp = f.employee(session, unit, hr_status=hr_status)
        if level:
            emp.level_id = f.dict_item(session, "employee_level", level).id
        session.add(SalesProfile(employee_id=emp.id, **{"weight": 100, **profile}))
        ids.append(emp.id)
    session.commit()
    return ids


def line(session, code="k12_math") -> int:
    return f.dict_item(session, "product_line", code).id


def make_rule(session, unit, strategy, campaign, priority=1, **kw) -> DispatchRule:
    rule = DispatchRule(name=f"rule {campaign} {strategy} {priority}", priority=priority, strategy=strategy,
                        match_campaign=campaign, target_org_unit_id=unit.id if unit else None, **kw)
    session.add(rule)
    session.commit()
    return rule


def make_pool(session, name) -> Pool:
    pool = Pool(name=name, org_unit_id=hq(session).id)
    session.add(pool)
    session.commit()
    return pool


def make_waiting(session, n, campaign, product_line="k12_math", **columns) -> list[int]:
    """`n` waiting opportunities (each with a customer of its own), inserted set-wise; their ids."""
    now = utcnow()
    phones = [f"+8615{next(_phones):09d}" for _ in range(n)]
    session.execute(insert(Customer), [{"phone": p, "created_at": now, "updated_at": now} for p in phones])
    customers = session.scalars(select(Customer.id).where(Customer.phone.in_(phones))).all()
    session.execute(insert(Opportunity), [
        {"customer_id": c, "product_line_id": line(session, product_line), "campaign": campaign,
         "status": WAITING, "created_at": now, "updated_at": now, **columns} for c in customers])
    ids = session.scalars(select(Opportunity.id).where(Opportunity.customer_id.in_(customers))
                          .order_by(Opportunity.id)).all()
    session.commit()
    return ids


def give(session, employee_id, n) -> None:
    """`employee_id` already owns `n` opportunities (counter kept as the services keep it)."""
    ids = make_waiting(session, n, "PRE-OWNED")
    session.execute(update(Opportunity).where(Opportunity.id.in_(ids))
                    .values(status=OWNED, owner_id=employee_id, assigned_at=utcnow()))
    profile = session.get(SalesProfile, employee_id)
    profile.open_count += n
    session.commit()


def set_config(session, key, value) -> None:
    item = session.scalar(select(ConfigItem).where(ConfigItem.key == key))
    item.value = value if isinstance(value, str) else json.dumps(value)
    session.commit()


def fallback_pool_id(session) -> int:
    name = session.scalar(select(ConfigItem.value).where(ConfigItem.key == "dispatch.fallback_pool"))
    return session.scalar(select(Pool.id).where(Pool.name == name))


# --- running ------------------------------------------------------------------------------------------
def queue_of(app) -> Queue:
    return Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))


def work(app, session, queue: Queue) -> None:
    session.commit()  # SQLite: an open read transaction here would lock the worker's writes out
    assert app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    session.expire_all()


def run_job(app, session, **kwargs) -> dict:
    """One dispatch run through RQ: enqueue_dispatch (or the job with `kwargs`), then a burst worker."""
    queue = queue_of(app)
    if kwargs:
        job = queue.enqueue(dispatch_waiting_job, **kwargs)
    else:
        enqueue_dispatch(queue)
        job = queue.fetch_job(DISPATCH_JOB_ID)
    work(app, session, queue)
    assert job.get_status(refresh=True) == "finished", job.latest_result().exc_string
    return job.return_value()


def owners(session, ids) -> dict[int, int | None]:
    return dict(session.execute(select(Opportunity.id, Opportunity.owner_id)
                                .where(Opportunity.id.in_(ids))).all())


def logs(session, ids) -> dict[int, list[AssignmentLog]]:
    rows = session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id.in_(ids))
                           .order_by(AssignmentLog.id)).all()
    result = {i: [] for i in ids}
    for row in rows:
        result[row.opportunity_id].append(row)
    return result


def the_log(session, opp_id) -> tuple[AssignmentLog, dict]:
    (row,) = logs(session, [opp_id])[opp_id]
    return row, json.loads(row.trace)


def assert_counters_match(session, employee_ids) -> None:
    """SalesProfile.open_count is exactly what each employee owns."""
    owned = dict(session.execute(
        select(Opportunity.owner_id, func.count())
        .where(Opportunity.status == OWNED, Opportunity.owner_id.in_(employee_ids))
        .group_by(Opportunity.owner_id)).all())
    counters = dict(session.execute(select(SalesProfile.employee_id, SalesProfile.open_count)
                                    .where(SalesProfile.employee_id.in_(employee_ids))).all())
    assert counters == {e: owned.get(e, 0) for e in employee_ids}


# --- rules --------------------------------------------------------------------------------------------
def test_rules_apply_in_priority_order_first_match_wins_else_fallback_pool(app, quiet):
    session = quiet
    team_a, team_b = team(session), team(session)
    a, b = people(session, team_a, 2), people(session, team_b, 2)
    pool = make_pool(session, "PRI pool")
    # Created first, yet tried last: the order is the priority, not the id.
    broad = make_rule(session, team_b, ROUND_ROBIN, "PRI-", priority=20)
    to_pool = make_rule(session, None, POOL_STRATEGY, "PRI-X", priority=15, target_pool_id=pool.id)
    narrow = make_rule(session, team_a, ROUND_ROBIN, "PRI-", priority=10, match_region="上海")
    shanghai = make_waiting(session, 3, "PRI-1", region="上海")
    beijing = make_waiting(session, 3, "PRI-1", region="北京")
    x_beijing = make_waiting(session, 2, "PRI-X1", region="北京")
    x_shanghai = make_waiting(session, 2, "PRI-X1", region="上海")
    unmatched = make_waiting(session, 2, "OTHER-1")

    queue = queue_of(app)
    for _ in range(3):  # a burst of requests makes one queued run
        enqueue_dispatch(queue)
    assert queue.count == 1
    result = run_job(app, session)

    assert result == {"taken": 12, "assigned": 8, "pooled": 4, "held": 0}
    expected = {**{i: (narrow.id, set(a), None) for i in shanghai + x_shanghai},
                **{i: (broad.id, set(b), None) for i in beijing},
                **{i: (to_pool.id, None, pool.id) for i in x_beijing},
                **{i: (None, None, fallback_pool_id(session)) for i in unmatched}}
    for opp_id, (rule_id, team_members, pool_id) in expected.items():
        opp = session.get(Opportunity, opp_id)
        log, trace = the_log(session, opp_id)
        assert log.dispatch_rule_id == rule_id and trace["rule"] == rule_id
        if team_members:
            assert opp.status == OWNED and opp.owner_id in team_members and opp.pool_id is None
            assert log.reason == DISPATCH and log.to_owner_id == opp.owner_id == trace["chosen"]
        else:
            assert opp.status == POOLED and opp.pool_id == pool_id and opp.owner_id is None
            assert log.reason == TO_POOL and log.to_pool_id == pool_id and log.to_owner_id is None
    assert the_log(session, unmatched[0])[1]["why"] == "no rule matched"
    assert_counters_match(session, a + b)


def test_nobody_eligible_goes_to_the_rules_pool_else_the_fallback_pool(app, quiet):
    session = quiet
    unit = team(session)
    paused = people(session, unit, 2, paused=True)
    own_pool = make_pool(session, "NE pool")
    make_rule(session, unit, ROUND_ROBIN, "NE-A", target_pool_id=own_pool.id)
    make_rule(session, unit, WEIGHTED, "NE-B")
    with_pool, without = make_waiting(session, 2, "NE-A1"), make_waiting(session, 2, "NE-B1")

    assert run_job(app, session) == {"taken": 4, "assigned": 0, "pooled": 4, "held": 0}

    for ids, pool_id in ((with_pool, own_pool.id), (without, fallback_pool_id(session))):
        for opp_id in ids:
            assert session.get(Opportunity, opp_id).pool_id == pool_id
            log, trace = the_log(session, opp_id)
            assert log.to_pool_id == pool_id
            assert trace["why"] == "no eligible salesperson"
            assert trace["candidates"] == paused
            assert trace["excluded"] == {str(e): "paused" for e in paused}


# --- strategies ---------------------------------------------------------------------------------------
def test_round_robin_spreads_n_leads_over_k_people_within_one_across_batches_and_runs(app, quiet):
    session = quiet
    unit = team(session)
    members = people(session, unit, 7)
    make_rule(session, unit, ROUND_ROBIN, "RR-")
    first = make_waiting(session, 45, "RR-1")
    assert run_job(app, session, batch_size=16)["assigned"] == 45  # 3 batches
    counts = Counter(owners(session, first).values())
    assert max(counts[m] for m in members) - min(counts[m] for m in members) <= 1

    second = make_waiting(session, 55, "RR-2")
    assert run_job(app, session, batch_size=16)["assigned"] == 55
    counts = Counter(owners(session, first + second).values())
    assert sum(counts.values()) == 100 and set(counts) == set(members)
    assert max(counts.values()) - min(counts.values()) <= 1  # 100 over 7: 14 or 15 each
    assert_counters_match(session, members)


def test_round_robin_breaks_ties_at_random_not_by_employee_id(app, quiet):
    session = quiet
    unit = team(session)
    members = people(session, unit, 6)
    make_rule(session, unit, ROUND_ROBIN, "TIE-")
    make_waiting(session, 1, "TIE-1")
    now = utcnow()
    opps = dispatch.take_batch(session, now, 10)

    def first_pick(seed):
        ctx = dispatch.load_context(session, now, [o.id for o in opps], lock=False, rng=random.Random(seed))
        (decision,) = dispatch_plan.plan(opps, ctx)
        session.rollback()
        return decision.to_owner.id

    picks = {seed: first_pick(seed) for seed in range(60)}
    assert first_pick(0) == picks[0]  # the same seed, the same choice
    # Everyone stands level at the start; over 60 seeds each of the 6 comes first at least once.
    assert set(picks.values()) == set(members)
    s1, s2 = next((s1, s2) for s1 in picks for s2 in picks if picks[s1] != picks[s2])
    assert first_pick(s1) != first_pick(s2)
    assert session.scalar(select(func.count(AssignmentLog.id))) == 0  # planning wrote nothing


def test_weighted_shares_within_2_percent_at_100k_decisions_in_memory(app, quiet):
    session = quiet
    unit = team(session)
    weights = [50, 100, 150, 200, 500]
    members = [people(session, unit, 1, weight=w)[0] for w in weights]
    rule = make_rule(session, unit, WEIGHTED, "W-")
    ctx = dispatch.load_context(session, utcnow(), [], lock=False, rng=random.Random(3))
    session.rollback()
    k12 = line(session)
    leads = [Opp(i, None, "W-1", k12, None, None, False) for i in range(100_000)]
    chosen = Counter()
    for start in range(0, len(leads), dispatch.BATCH_SIZE):  # batch after batch on the same counters
        for decision in dispatch_plan.plan(leads[start:start + dispatch.BATCH_SIZE], ctx):
            assert decision.rule_id == rule.id
            chosen[decision.to_owner.id] += 1
    assert sum(chosen.values()) == 100_000
    for member, weight in zip(members, weights, strict=True):
        share = weight / sum(weights)
        assert abs(chosen[member] / 100_000 - share) <= 0.02 * share, (member, chosen[member])


def test_weighted_end_to_end_follows_the_weights(app, quiet):
    session = quiet
    unit = team(session)
    weights = [100, 200, 300]
    members = [people(session, unit, 1, weight=w)[0] for w in weights]
    make_rule(session, unit, WEIGHTED, "WE-")
    ids = make_waiting(session, 600, "WE-1")
    assert run_job(app, session, batch_size=50)["assigned"] == 600
    counts = Counter(owners(session, ids).values())
    for member, weight in zip(members, weights, strict=True):
        expected = 600 * weight / sum(weights)
        assert abs(counts[member] - expected) <= max(1, 0.02 * expected), counts
    assert_counters_match(session, members)


def test_least_loaded_picks_the_most_remaining_capacity(app, quiet):
    session = quiet
    unit = team(session)
    members = people(session, unit, 4, capacity=10)
    preload = dict(zip(members, [0, 3, 6, 9], strict=True))
    for member, n in preload.items():
        if n:
            give(session, member, n)
    make_rule(session, unit, LEAST_LOADED, "LL-")
    ids = make_waiting(session, 6, "LL-1")
    assert run_job(app, session)["assigned"] == 6

    # Expected: each lead goes to someone with the most room left (water filling).
    room = {m: 10 - n for m, n in preload.items()}
    expected_room = dict(room)
    for _ in ids:
        most = max(expected_room.values())
        expected_room[next(m for m, r in expected_room.items() if r == most)] -= 1
    got = Counter(owners(session, ids).values())
    final_room = {m: room[m] - got[m] for m in members}
    assert sorted(final_room.values()) == sorted(expected_room.values())
    assert all(got[m] == 0 for m in members if room[m] < max(final_room.values()))
    assert {json.loads(row.trace)["strategy"] for rows in logs(session, ids).values() for row in rows} == {
        LEAST_LOADED}
    assert_counters_match(session, members)


# --- eligibility --------------------------------------------------------------------------------------
def test_each_ineligible_salesperson_is_excluded_with_the_reason_in_the_trace(app, quiet):
    session = quiet
    now = utcnow()
    dept = team(session, kind="department")
    sub_rule, sub_level = team(session, parent=dept), team(session, parent=dept)
    session.add_all([
        CirculationRule(name="dept capacity", org_unit_id=dept.id, capacity=100),
        CirculationRule(name="sub capacity", org_unit_id=sub_rule.id, capacity=1),  # the deepest rule wins
        CirculationRule(name="level capacity", org_unit_id=sub_level.id, capacity=50,
                        capacity_by_level=json.dumps({"P1": 1})),
    ])
    session.commit()
    (resigned,) = people(session, dept, 1, hr_status=HR_RESIGNED)
    (on_leave,) = people(session, dept, 1, hr_status=HR_ON_LEAVE)
    (paused,) = people(session, dept, 1, paused=True)
    (full_profile,) = people(session, dept, 1, capacity=2)
    (quota,) = people(session, dept, 1, daily_quota=1, dispatched_today=1, quota_day=local_date(now))
    (cooling,) = people(session, dept, 1)
    ok = people(session, dept, 2)
    (full_rule, override_ok) = people(session, sub_rule, 1) + people(session, sub_rule, 1, capacity=5)
    (full_level,) = people(session, sub_level, 1, level="P1")
    (level_ok,) = people(session, sub_level, 1, level="P2")
    for member, n in ((full_profile, 2), (full_rule, 1), (full_level, 1), (override_ok, 1), (level_ok, 1)):
        give(session, member, n)
    make_rule(session, dept, ROUND_ROBIN, "EL-")
    ids = make_waiting(session, 12, "EL-1")
    session.add_all([OwnerCooling(opportunity_id=i, employee_id=cooling, until=now + dt.timedelta(days=2))
                     for i in ids])
    # A cooling that is over excludes no one.
    session.add_all([OwnerCooling(opportunity_id=i, employee_id=ok[0], until=now - dt.timedelta(minutes=1))
                     for i in ids])
    session.commit()

    assert run_job(app, session)["assigned"] == 12

    eligible = ok + [override_ok, level_ok]
    assert Counter(owners(session, ids).values()) == {e: 3 for e in eligible}  # round robin: 12 over 4
    excluded = {resigned: "resigned", on_leave: "on_leave", paused: "paused", full_profile: "capacity",
                full_rule: "capacity", full_level: "capacity", quota: "quota", cooling: "cooling"}
    everyone = sorted(set(excluded) | set(eligible))
    for opp_id in ids:
        _, trace = the_log(session, opp_id)
        assert sorted(trace["candidates"]) == everyone
        assert trace["excluded"] == {str(e): reason for e, reason in excluded.items()}
        assert trace["chosen"] in eligible
    assert_counters_match(session, everyone)


def test_a_resigned_employee_never_receives_a_lead_whatever_the_strategy(app, quiet):
    session = quiet
    unit = team(session)
    # The most weight, the most room: every strategy would favour them, were they eligible.
    (resigned,) = people(session, unit, 1, hr_status=HR_RESIGNED, weight=1000, capacity=1000)
    active = people(session, unit, 2, capacity=50)
    for strategy in (ROUND_ROBIN, WEIGHTED, LEAST_LOADED):
        make_rule(session, unit, strategy, f"RES-{strategy}")
    ids = [i for s in (ROUND_ROBIN, WEIGHTED, LEAST_LOADED) for i in make_waiting(session, 20, f"RES-{s}-1")]
    assert run_job(app, session, batch_size=25)["assigned"] == 60
    assert set(owners(session, ids).values()) == set(active)
    for rows in logs(session, ids).values():
        assert json.loads(rows[0].trace)["excluded"] == {str(resigned): "resigned"}
    assert session.scalar(
        select(func.count(AssignmentLog.id)).where(AssignmentLog.to_owner_id == resigned)) == 0


def test_working_hours_only_rules_wait_for_the_working_hours(app, quiet, traveller):
    session = quiet
    unit = team(session)
    members = people(session, unit, 2)
    pool = make_pool(session, "OH pool")
    make_rule(session, unit, ROUND_ROBIN, "OH-A", working_hours_only=True, target_pool_id=pool.id)
    make_rule(session, unit, ROUND_ROBIN, "OH-B")
    hours = dispatch.working_hours(session)
    set_config(session, "dispatch.working_hours", {**hours, "start": "09:00", "end": "18:00"})

    traveller.move_to(instant("2026-06-17T08:59:00+08:00"))  # a minute before the working hours
    off_hours, any_time = make_waiting(session, 2, "OH-A1"), make_waiting(session, 2, "OH-B1")
    assert run_job(app, session) == {"taken": 4, "assigned": 2, "pooled": 2, "held": 0}
    assert set(owners(session, any_time).values()) <= set(members)
    for opp_id in off_hours:
        assert session.get(Opportunity, opp_id).pool_id == pool.id
        _, trace = the_log(session, opp_id)
        assert trace["excluded"] == {str(m): "off_hours" for m in members}

    traveller.move_to(instant("2026-06-17T09:00:00+08:00"))  # they open
    in_hours = make_waiting(session, 2, "OH-A2")
    assert run_job(app, session)["assigned"] == 2
    assert set(owners(session, in_hours).values()) <= set(members)

    traveller.move_to(instant("2026-06-17T18:00:00+08:00"))  # they close: the end is not in them
    after_hours = make_waiting(session, 2, "OH-A3")
    assert run_job(app, session) == {"taken": 2, "assigned": 0, "pooled": 2, "held": 0}
    assert {session.get(Opportunity, opp_id).pool_id for opp_id in after_hours} == {pool.id}


def test_capacity_and_daily_quota_bind_during_a_run_and_the_quota_resets_the_next_day(app, quiet):
    session = quiet
    now = utcnow()
    full_team, quota_team = team(session), team(session)
    capped = people(session, full_team, 2, capacity=3)
    quota = people(session, quota_team, 2, daily_quota=2)
    make_rule(session, full_team, ROUND_ROBIN, "CAP-")
    make_rule(session, quota_team, WEIGHTED, "QUO-")
    cap_ids, quota_ids = make_waiting(session, 10, "CAP-1"), make_waiting(session, 7, "QUO-1")

    result = dispatch.dispatch_batch(session, now, rng=random.Random(5))
    assert (result.assigned, result.pooled) == (6 + 4, 4 + 3)
    assert Counter(owners(session, cap_ids).values()) == {capped[0]: 3, capped[1]: 3, None: 4}
    assert Counter(owners(session, quota_ids).values()) == {quota[0]: 2, quota[1]: 2, None: 3}
    # Those left over were passed over for being full / at quota, and the trace says so.
    for opp_id in cap_ids[-4:]:
        assert the_log(session, opp_id)[1]["excluded"] == {str(m): "capacity" for m in capped}
    for opp_id in quota_ids[-3:]:
        assert the_log(session, opp_id)[1]["excluded"] == {str(m): "quota" for m in quota}
    assert_counters_match(session, capped + quota)

    tomorrow = now + dt.timedelta(days=1)
    more = make_waiting(session, 4, "QUO-2")
    assert dispatch.dispatch_batch(session, tomorrow, rng=random.Random(5)).assigned == 4
    assert Counter(owners(session, more).values()) == {quota[0]: 2, quota[1]: 2}
    assert {p.dispatched_today for p in map(lambda e: session.get(SalesProfile, e), quota)} == {2}


# --- dry run ------------------------------------------------------------------------------------------
def _snapshot(session) -> dict:
    tables = [Opportunity, AssignmentLog, SalesProfile, DispatchRule, OwnerCooling]
    return {t.__tablename__: [tuple(r) for r in session.execute(select(t.__table__)).all()] for t in tables}


def test_dry_run_writes_nothing_and_predicts_the_real_run_with_the_same_seed(app, session):
    # The demo's own set-up: its rules (all strategies, pools), capacities by level, its waiting leads;
    # plus some cooling ex-owners and a paused salesperson.
    now = utcnow()
    waiting = session.scalars(select(Opportunity.id).where(Opportunity.status == WAITING)
                              .order_by(Opportunity.id)).all()
    assert len(waiting) == DEMO_LEADS
    profiles = session.scalars(select(SalesProfile).order_by(SalesProfile.employee_id)).all()
    profiles[0].paused = True
    profiles[1].daily_quota = 3
    session.add_all([OwnerCooling(opportunity_id=o, employee_id=p.employee_id,
                                  until=now + dt.timedelta(days=1))
                     for o in waiting[::5] for p in profiles[2:12]])
    session.commit()
    before = _snapshot(session)

    report = dispatch.simulate(session, now=now, seed=11)

    assert _snapshot(session) == before
    assert report["waiting"] == DEMO_LEADS
    assert report["assigned"] + report["pooled"] + report["held"] == DEMO_LEADS
    assert report["exclusions"]["paused"] > 0 and report["exclusions"]["cooling"] > 0

    result = dispatch.dispatch_batch(session, now, limit=10_000, rng=random.Random(11))
    assert (result.assigned, result.pooled, result.held) == (report["assigned"], report["pooled"],
                                                               report["held"])
    owned = Counter(session.scalars(select(Opportunity.owner_id).where(Opportunity.id.in_(waiting),
                                                                        Opportunity.status == OWNED)).all())
    assert {p["employee_id"]: p["count"] for p in report["per_person"]} == dict(owned)
    pools = dict(session.execute(select(Pool.id, Pool.name)).all())
    pooled = Counter(pools[p] for p in session.scalars(select(Opportunity.pool_id).where(
        Opportunity.id.in_(waiting), Opportunity.status == POOLED)).all())
    assert report["per_pool"] == dict(pooled)
    assert profiles[0].employee_id not in owned
    assert session.scalar(select(func.count(AssignmentLog.id))) == DEMO_LEADS


# --- held ---------------------------------------------------------------------------------------------
def test_held_opportunities_wait_for_the_hold_not_every_batch(app, quiet):
    session = quiet
    set_config(session, "dispatch.fallback_pool", "")  # no pool to fall back on
    unit = team(session)
    members = people(session, unit, 2, paused=True)
    make_rule(session, unit, ROUND_ROBIN, "HOLD-")
    ids = make_waiting(session, 3, "HOLD-1")
    started = utcnow()

    assert run_job(app, session, batch_size=2) == {"taken": 3, "assigned": 0, "pooled": 0, "held": 3}
    for opp_id in ids:
        opp = session.get(Opportunity, opp_id)
        assert opp.status == WAITING and opp.dispatch_after >= started + dispatch.HOLD
    assert logs(session, ids) == {i: [] for i in ids}  # nothing changed hands: nothing logged

    # The next runs within the hold leave them alone.
    assert run_job(app, session)["taken"] == 0
    soon = utcnow() + dispatch.HOLD / 2
    assert dispatch.dispatch_batch(session, soon).taken == 0
    assert dispatch.waiting_count(session, soon) == 0

    session.get(SalesProfile, members[0]).paused = False
    session.commit()
    later = utcnow() + dispatch.HOLD + dt.timedelta(seconds=1)
    assert dispatch.waiting_count(session, later) == 3
    assert dispatch.dispatch_batch(session, later).assigned == 3
    assert set(owners(session, ids).values()) == {members[0]}
