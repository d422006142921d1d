"""Ownership service (app.services.ownership): claim, give back, assign, transfer, follow-ups, stages.

Each test arranges a small sales division of its own under the seeded company, with one circulation
rule and two pools whose numbers are set here, so that every expectation follows from the arranged data:

    HQ ── Test division ── Team A (a1 P1, a2 P2, manager)
                        └─ Team B (b1 P2)
       └─ Outside (x1)

    pool "k12" (division, k12_math, 3 claims a day), pool "any" (division, any product line, 10 a day),
    pool "outside" (Outside, 10 a day); rule (division): idle 7 d, protect 3 d + 1 d per follow-up up to
    5 d, capacity 5 (P1: 3), cooling 2 d, remind 24 h.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models.employee import HR_RESIGNED, Employee
from app.models.org import OrgUnit
from app.models.sales import (
    ASSIGN,
    CLAIM,
    GIVE_BACK,
    LOST,
    OWNED,
    POOLED,
    TRANSFER,
    WAITING,
    WON,
    AssignmentLog,
    CirculationRule,
    ClaimCounter,
    Customer,
    FollowUp,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.services import circulation, opportunities, ownership
from app.services.errors import DomainError
from tests import factories as f
from tests.helpers import utc

AT = "2026-03-02T12:00:00+08:00"  # a Monday, noon in Shanghai, the company's time zone
NOW = utc(AT)  # naive UTC, as stored: the clock and NOW agree
pytestmark = pytest.mark.instant(AT)
DAY = dt.timedelta(days=1)
_phones = itertools.count(1)


@dataclass
class World:
    div: int
    team_a: int
    team_b: int
    outside: int
    a1: int
    a2: int
    b1: int
    x1: int
    manager: int
    pool: int  # division, k12_math, 3 a day
    pool_any: int  # division, any product line
    pool_outside: int
    rule: int
    math: int
    english: int
    stages: dict[str, int]
    reasons: dict[str, int]
    types: dict[str, int]

    def emp(self, session, name: str) -> Employee:
        return session.get(Employee, getattr(self, name))


def build_world(session) -> World:
    hq = session.scalar(select(OrgUnit).where(OrgUnit.code == "HQ"))
    div = f.org_unit(session, "Test division", parent=hq, kind="division")
    team_a = f.org_unit(session, "Team A", parent=div)
    team_b = f.org_unit(session, "Team B", parent=div)
    outside = f.org_unit(session, "Outside", parent=hq, kind="department")
    p1 = f.dict_item(session, "employee_level", "P1")
    p2 = f.dict_item(session, "employee_level", "P2")
    manager = f.employee(session, team_a, "Manager A")
    people = {}
    staff = (("a1", team_a, p1), ("a2", team_a, p2), ("b1", team_b, p2), ("x1", outside, p2))
    for name, unit, level in staff:
        emp = f.employee(session, unit, name, manager=manager if unit is team_a else None)
        emp.level_id = level.id
        session.add(SalesProfile(employee_id=emp.id, weight=100))
        people[name] = emp
    math = f.dict_item(session, "product_line", "k12_math")
    english = f.dict_item(session, "product_line", "adult_english")
    pool = Pool(name="k12 test pool", org_unit_id=div.id, product_line_id=math.id, daily_claim_limit=3)
    pool_any = Pool(name="any test pool", org_unit_id=div.id, product_line_id=None, daily_claim_limit=10)
    pool_outside = Pool(name="outside test pool", org_unit_id=outside.id, daily_claim_limit=10)
    rule = CirculationRule(name="test division rule", org_unit_id=div.id, idle_days=7, protect_days=3,
                           protect_extend_days=1, protect_max_days=5, remind_hours=24, capacity=5,
                           capacity_by_level=json.dumps({"P1": 3}), cooling_days=2)
    session.add_all([pool, pool_any, pool_outside, rule])
    session.commit()

    def codes(type_code):
        from app.models.metadata import DictItem, DictType

        return dict(session.execute(select(DictItem.code, DictItem.id).join(DictItem.dict_type)
                                    .where(DictType.code == type_code)).all())

    return World(div=div.id, team_a=team_a.id, team_b=team_b.id, outside=outside.id, manager=manager.id,
                 pool=pool.id, pool_any=pool_any.id, pool_outside=pool_outside.id, rule=rule.id,
                 math=math.id, english=english.id, stages=codes("opportunity_stage"),
                 reasons=codes("lost_reason"), types=codes("followup_type"),
                 **{k: v.id for k, v in people.items()})


def opportunity(session, w: World, pool: int | None = None, product_line: int | None = None,
                stage: str = "new", name: str | None = None, **fields) -> int:
    """A customer and a pooled (or, with pool=None, waiting) opportunity."""
    n = next(_phones)
    customer = Customer(phone=f"+86137{n:08d}", name=name)
    session.add(customer)
    session.flush()
    pool_row = session.get(Pool, pool) if pool else None
    opp = Opportunity(customer_id=customer.id, product_line_id=product_line or w.math,
                      stage_id=w.stages[stage], status=POOLED if pool else WAITING, pool_id=pool,
                      org_unit_id=pool_row.org_unit_id if pool_row else None, **fields)
    session.add(opp)
    session.commit()
    return opp.id


def owned(session, w: World, owner: str, n: int = 1, product_line: int | None = None, at=NOW) -> list[int]:
    """`n` opportunities assigned to `owner` by the manager (through the service, counters included)."""
    ids = [opportunity(session, w, product_line=product_line) for _ in range(n)]
    ownership.assign(session, ids, w.emp(session, owner), at, "arrange")
    session.commit()
    return ids


def profile(session, emp_id: int) -> SalesProfile:
    session.expire_all()
    return session.get(SalesProfile, emp_id)


def logs(session, opp_id: int) -> list[AssignmentLog]:
    return list(session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id == opp_id)
                                .order_by(AssignmentLog.id)))


def snapshot(session, ids) -> list[tuple]:
    """What a refused call must leave untouched: the opportunities, their logs, counters, cooling."""
    session.expire_all()
    rows = [(o.id, o.status, o.owner_id, o.pool_id, o.org_unit_id, o.claimed_at, o.protected_until)
            for o in session.scalars(select(Opportunity).where(Opportunity.id.in_(ids)))]
    return [rows,
            session.scalar(select(func.count(AssignmentLog.id))),
            session.execute(select(ClaimCounter.employee_id, ClaimCounter.pool_id, ClaimCounter.claimed)
                            .order_by(ClaimCounter.employee_id, ClaimCounter.pool_id)).all(),
            session.execute(select(SalesProfile.employee_id, SalesProfile.open_count)
                            .order_by(SalesProfile.employee_id)).all(),
            session.execute(select(OwnerCooling.opportunity_id, OwnerCooling.employee_id)).all()]


@pytest.fixture
def world(session) -> World:
    return build_world(session)


def refused(session, call, *args, match: str) -> DomainError:
    with pytest.raises(DomainError, match=match) as info:
        call(session, *args)
    session.rollback()
    return info.value


# --- rules ------------------------------------------------------------------------------------------
def test_the_most_specific_enabled_rule_applies(session, world):
    w = world
    a_path = session.get(OrgUnit, w.team_a).path
    b_path = session.get(OrgUnit, w.team_b).path
    level_a = f.dict_item(session, "intention_level", "A").id
    level_b = f.dict_item(session, "intention_level", "B").id
    div_math = CirculationRule(name="div math", org_unit_id=w.div, product_line_id=w.math, idle_days=5)
    team = CirculationRule(name="team A", org_unit_id=w.team_a, idle_days=3)
    team_math_a = CirculationRule(name="team A math A", org_unit_id=w.team_a, product_line_id=w.math,
                                  intention_level_id=level_a, idle_days=2)
    team_disabled = CirculationRule(name="team B off", org_unit_id=w.team_b, idle_days=1, enabled=False)
    session.add_all([div_math, team, team_math_a, team_disabled])
    session.commit()
    cases = {
        (a_path, w.math, level_a): team_math_a.id,  # deepest unit, product line and level specific
        (a_path, w.math, level_b): team.id,  # deeper unit beats the division's product-line rule
        (a_path, w.english, None): team.id,
        (b_path, w.math, level_a): div_math.id,  # team B's own rule is disabled
        (b_path, w.english, None): w.rule,
        (session.get(OrgUnit, w.outside).path, w.math, None): None,
        (None, w.math, None): None,
    }
    for args, expected in cases.items():
        rule = circulation.circulation_rule_for(session, *args)
        assert (rule.id if rule else None) == expected, args


# --- claim ------------------------------------------------------------------------------------------
def test_claim_takes_ownership_with_clocks_protection_counters_and_log(session, world):
    w = world
    ids = [opportunity(session, w, pool=w.pool), opportunity(session, w, pool=w.pool_any)]
    result = ownership.claim(session, w.emp(session, "a1"), ids, NOW, ownership.Actor(7, "sales-a1"))
    session.commit()
    assert sorted(result.moved) == ids
    session.expire_all()
    for opp_id, pool in zip(ids, (w.pool, w.pool_any), strict=True):
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.owner_id, opp.pool_id, opp.org_unit_id) == (OWNED, w.a1, None, w.team_a)
        assert opp.assigned_at == opp.claimed_at == opp.idle_since == NOW
        assert opp.protected_until == NOW + 3 * DAY  # the rule's protect_days
        [log] = logs(session, opp_id)
        assert (log.reason, log.from_pool_id, log.to_owner_id, log.actor_id, log.actor_name,
                log.circulation_rule_id) == (CLAIM, pool, w.a1, 7, "sales-a1", w.rule)
    assert profile(session, w.a1).open_count == 2
    counters = dict(session.execute(select(ClaimCounter.pool_id, ClaimCounter.claimed)
                                    .where(ClaimCounter.employee_id == w.a1)).all())
    assert counters == {w.pool: 1, w.pool_any: 1}


def test_a_batch_larger_than_what_is_left_today_is_refused_whole(session, world):
    w = world
    ids = [opportunity(session, w, pool=w.pool) for _ in range(6)]
    limit = session.get(Pool, w.pool).daily_claim_limit  # 3
    a2 = w.emp(session, "a2")
    profile(session, w.a2).capacity = 100  # this test is about the daily limit only
    session.commit()
    ownership.claim(session, a2, ids[:2], NOW, "a2")
    session.commit()
    before = snapshot(session, ids)
    exc = refused(session, ownership.claim, a2, ids[2:4], NOW, "a2", match="claim 1 more today")
    assert exc.status == 409 and "Nothing was claimed" in exc.message
    assert snapshot(session, ids) == before  # not one of the two claimed, no counter, no log
    # What is left can be claimed; the next company day (local midnight) starts afresh.
    ownership.claim(session, a2, ids[2:3], NOW, "a2")
    session.commit()
    refused(session, ownership.claim, a2, ids[3:4], NOW + dt.timedelta(hours=11), "a2", match="claim 0 more")
    next_day = NOW + dt.timedelta(hours=12)  # 2026-03-03 00:00 in Shanghai
    ownership.claim(session, a2, ids[3:6], next_day, "a2")
    session.commit()
    assert session.scalar(select(ClaimCounter.claimed).where(
        ClaimCounter.employee_id == w.a2, ClaimCounter.day == dt.date(2026, 3, 3))) == limit
    # More than the whole limit at once is refused too.
    more = [opportunity(session, w, pool=w.pool) for _ in range(limit + 1)]
    before = snapshot(session, more)
    refused(session, ownership.claim, w.emp(session, "b1"), more, NOW, "b1", match="you asked for 4")
    assert snapshot(session, more) == before


def test_claim_only_from_pools_of_ones_own_units_and_product_line(session, world):
    w = world
    outside = opportunity(session, w, pool=w.pool_outside)
    english_in_math_pool = opportunity(session, w, pool=w.pool, product_line=w.english)
    fine = opportunity(session, w, pool=w.pool_any)
    owned_one = owned(session, w, "a2")[0]
    ids = [fine, outside, english_in_math_pool, owned_one]
    before = snapshot(session, ids)
    exc = refused(session, ownership.claim, w.emp(session, "b1"), ids, NOW, "b1", match="may not claim from")
    assert f"#{outside}" in exc.message and f"#{english_in_math_pool}" in exc.message
    assert f"#{owned_one} is not in a public pool" in exc.message
    assert snapshot(session, ids) == before
    # Someone outside the division may not claim from the division's pools, even one row.
    refused(session, ownership.claim, w.emp(session, "x1"), [fine], NOW, "x1", match="may not claim from")
    ownership.claim(session, w.emp(session, "x1"), [outside], NOW, "x1")  # their own unit's pool
    ownership.claim(session, w.emp(session, "b1"), [fine], NOW, "b1")  # team B claims the division's
    session.commit()
    session.expire_all()
    assert session.get(Opportunity, outside).owner_id == w.x1
    assert session.get(Opportunity, fine).owner_id == w.b1
    # A resigned employee claims nothing; a frozen opportunity is not claimable.
    frozen = opportunity(session, w, pool=w.pool_any, locked=True)
    refused(session, ownership.claim, w.emp(session, "a2"), [frozen], NOW, "a2", match="frozen")
    a1 = w.emp(session, "a1")
    a1.hr_status = HR_RESIGNED
    session.commit()
    refused(session, ownership.claim, a1, [english_in_math_pool], NOW, "a1", match="resigned")


def test_capacity_is_never_exceeded_by_a_claim(session, world):
    w = world
    a1 = w.emp(session, "a1")  # P1: the rule's capacity_by_level gives 3
    assert circulation.capacity_of(a1, profile(session, w.a1), session.get(CirculationRule, w.rule)) == 3
    owned(session, w, "a1", 2)
    ids = [opportunity(session, w, pool=w.pool_any) for _ in range(4)]
    before = snapshot(session, ids)
    exc = refused(session, ownership.claim, a1, ids[:2], NOW, "a1", match="Capacity")
    assert "hold 3" in exc.message and "hold 2" in exc.message
    assert snapshot(session, ids) == before
    ownership.claim(session, a1, ids[:1], NOW, "a1")
    session.commit()
    assert profile(session, w.a1).open_count == 3
    refused(session, ownership.claim, a1, ids[1:2], NOW, "a1", match="Capacity")
    # A personal capacity overrides the rule's.
    profile(session, w.a1).capacity = 4
    session.commit()
    ownership.claim(session, w.emp(session, "a1"), ids[1:2], NOW, "a1")
    session.commit()
    assert profile(session, w.a1).open_count == 4
    # a2 is P2: the rule's plain capacity (5) applies.
    assert circulation.capacity_of(w.emp(session, "a2"), profile(session, w.a2),
                                 session.get(CirculationRule, w.rule)) == 5


def test_capacity_counts_won_only_when_the_rule_says_so(session, world):
    w = world
    a1 = w.emp(session, "a1")
    first, second = owned(session, w, "a1", 2)
    opportunities.set_stage(session, first, w.stages["won"], None, NOW, "a1")
    session.commit()
    assert (profile(session, w.a1).open_count, profile(session, w.a1).won_count) == (1, 1)
    rule = session.get(CirculationRule, w.rule)
    rule.capacity_counts_won = True
    session.commit()
    opportunities.set_stage(session, second, w.stages["won"], None, NOW, "a1")
    session.commit()
    assert (profile(session, w.a1).open_count, profile(session, w.a1).won_count) == (1, 2)
    pooled = [opportunity(session, w, pool=w.pool_any) for _ in range(3)]
    refused(session, ownership.claim, a1, pooled, NOW, "a1", match="Capacity")  # 1 + 3 > 3
    ownership.claim(session, a1, pooled[:2], NOW, "a1")
    session.commit()


# --- give back and cooling --------------------------------------------------------------------------
def test_give_back_goes_to_the_best_pool_and_the_ex_owner_cools_off(session, world):
    w = world
    math_opp, english_opp = owned(session, w, "a1")[0], owned(session, w, "a1", product_line=w.english)[0]
    a1 = w.emp(session, "a1")
    later = NOW + dt.timedelta(hours=5)
    assert ownership.give_back(session, a1, math_opp, "wants a different teacher", later, "a1").id == w.pool
    assert ownership.give_back(session, a1, english_opp, "no budget", later, "a1").id == w.pool_any
    session.commit()
    session.expire_all()
    for opp_id, pool in ((math_opp, w.pool), (english_opp, w.pool_any)):
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.owner_id, opp.pool_id, opp.org_unit_id, opp.protected_until) == (
            POOLED, None, pool, w.div, None)
        log = logs(session, opp_id)[-1]
        assert (log.reason, log.from_owner_id, log.to_pool_id, log.circulation_rule_id) == (
            GIVE_BACK, w.a1, pool, w.rule)
        assert session.get(OwnerCooling, (opp_id, w.a1)).until == later + 2 * DAY
    assert logs(session, math_opp)[-1].note == "wants a different teacher"
    assert profile(session, w.a1).open_count == 0
    # The ex-owner may not reclaim during cooling; someone else may; after it, the ex-owner may.
    exc = refused(session, ownership.claim, a1, [math_opp], later + DAY, "a1", match="claim them again")
    assert f"#{math_opp} after 2026-03-04 17:00" in exc.message  # when, in the business time zone
    ownership.claim(session, a1, [english_opp], later + 2 * DAY + dt.timedelta(minutes=1), "a1")
    ownership.claim(session, w.emp(session, "a2"), [math_opp], later + DAY, "a2")
    session.commit()


def test_give_back_needs_a_reason_the_owner_and_a_pool(session, world):
    w = world
    opp_id = owned(session, w, "a1")[0]
    before = snapshot(session, [opp_id])
    exc = refused(session, ownership.give_back, w.emp(session, "a1"), opp_id, "  ", NOW, "a1", match="why")
    assert exc.field == "reason"
    refused(session, ownership.give_back, w.emp(session, "a2"), opp_id, "mine now", NOW, "a2",
            match="not yours")
    assert snapshot(session, [opp_id]) == before
    # The rule's recycle_to_pool wins over the nearest pool.
    session.get(CirculationRule, w.rule).recycle_to_pool_id = w.pool_outside
    session.commit()
    assert ownership.give_back(session, w.emp(session, "a1"), opp_id, "r", NOW, "a1").id == w.pool_outside
    session.rollback()
    # No pool over the unit and no rule pool: the configured fallback pool (销售总公海).
    session.get(CirculationRule, w.rule).recycle_to_pool_id = None
    for pool in session.scalars(select(Pool).where(Pool.org_unit_id == w.div)):
        pool.enabled = False
    session.commit()
    pool = ownership.give_back(session, w.emp(session, "a1"), opp_id, "r", NOW, "a1")
    assert pool.name == "销售总公海"
    session.rollback()


# --- follow-ups and protection ----------------------------------------------------------------------
def test_follow_up_restarts_the_idle_clock_and_sets_the_next_one(session, world):
    w = world
    opp_id = owned(session, w, "a1")[0]
    at = NOW + 2 * DAY
    follow_up = opportunities.add_follow_up(session, opp_id, w.emp(session, "a1"), w.types["call"],
                                        "asked about price", "interested", at + DAY, at)
    session.commit()
    session.expire_all()
    opp = session.get(Opportunity, opp_id)
    assert (opp.last_followup_at, opp.next_followup_at, opp.idle_since) == (at, at + DAY, at)
    row = session.get(FollowUp, follow_up.id)
    assert (row.employee_id, row.type_id, row.content, row.result) == (w.a1, w.types["call"],
                                                                       "asked about price", "interested")


@pytest.mark.parametrize(("args", "field", "match"), [
    (("called", None, NOW - dt.timedelta(minutes=1)), "next_followup_at", "in the future"),
    (("   ", None, None), "content", "Write what happened"),
    (("x" * 4001, None, None), "content", "4000"),
    (("called", "r" * 101, None), "result", "100"),
])
def test_a_bad_follow_up_is_refused_and_writes_nothing(session, world, args, field, match):
    w = world
    opp_id = owned(session, w, "a1")[0]
    content, result, next_at = args
    session.expire_all()
    before = session.get(Opportunity, opp_id).idle_since
    exc = refused(session, opportunities.add_follow_up, opp_id, w.emp(session, "a1"), None, content, result,
                  next_at, NOW, match=match)
    assert exc.field == field
    session.expire_all()
    assert session.get(Opportunity, opp_id).idle_since == before
    assert session.get(Opportunity, opp_id).last_followup_at is None
    assert session.scalar(select(func.count(FollowUp.id)).where(FollowUp.opportunity_id == opp_id)) == 0


def test_each_follow_up_extends_protection_up_to_the_hard_maximum(session, world):
    w = world
    opp_id = opportunity(session, w, pool=w.pool)
    ownership.claim(session, w.emp(session, "a1"), [opp_id], NOW, "a1")
    session.commit()
    rule = session.get(CirculationRule, w.rule)
    expected = NOW + dt.timedelta(days=rule.protect_days)
    hard_max = NOW + dt.timedelta(days=rule.protect_max_days)
    for hour in range(1, 5):
        opportunities.add_follow_up(session, opp_id, w.emp(session, "a1"), None, f"call {hour}", None, None,
                                NOW + dt.timedelta(hours=hour))
        session.commit()
        expected = min(expected + dt.timedelta(days=rule.protect_extend_days), hard_max)
        session.expire_all()
        assert session.get(Opportunity, opp_id).protected_until == expected
    assert expected == hard_max  # 3 d + 1 d + 1 d reached the 5 d maximum; the later calls added nothing


def test_protection_starts_with_a_claim_not_an_assignment(session, world):
    w = world
    opp_id = owned(session, w, "a1")[0]
    opportunities.add_follow_up(session, opp_id, w.emp(session, "a1"), None, "call", None, None, NOW + DAY)
    session.commit()
    session.expire_all()
    assert session.get(Opportunity, opp_id).protected_until is None


# --- stages -----------------------------------------------------------------------------------------
def test_won_and_lost_close_the_opportunity_and_keep_the_counters(session, world):
    w = world
    won, lost, moving = owned(session, w, "a1", 3)
    assert profile(session, w.a1).open_count == 3
    opportunities.set_stage(session, moving, w.stages["contacted"], None, NOW, "a1")
    opportunities.set_stage(session, won, w.stages["won"], None, NOW + DAY, "a1")
    session.commit()
    before = snapshot(session, [lost])
    exc = refused(session, opportunities.set_stage, lost, w.stages["lost"], None, NOW, "a1", match="Required")
    assert exc.field == "lost_reason"
    assert snapshot(session, [lost]) == before
    opportunities.set_stage(session, lost, w.stages["lost"], w.reasons["price"], NOW + DAY, "a1")
    session.commit()
    session.expire_all()
    assert session.get(Opportunity, moving).status == OWNED
    assert session.get(Opportunity, moving).stage_changed_at == NOW
    for opp_id, status in ((won, WON), (lost, LOST)):
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.closed_at, opp.owner_id) == (status, NOW + DAY, w.a1)
    assert session.get(Opportunity, lost).lost_reason_id == w.reasons["price"]
    prof = profile(session, w.a1)
    assert (prof.open_count, prof.won_count) == (1, 1)
    # Closed is closed: no new stage, no follow-up, no assignment.
    refused(session, opportunities.set_stage, won, w.stages["contacted"], None, NOW, "a1",
            match="already closed")
    refused(session, opportunities.add_follow_up, lost, w.emp(session, "a1"), None, "x", None, None, NOW,
            match="closed")
    refused(session, ownership.assign, [won], w.emp(session, "a2"), NOW, "m", None, match="Closed")


# --- manager: assign, transfer, freeze --------------------------------------------------------------
def test_manager_assigns_from_pool_waiting_and_another_owner_as_an_override(session, world):
    w = world
    from_pool = opportunity(session, w, pool=w.pool)
    waiting = opportunity(session, w)
    from_a2 = owned(session, w, "a2")[0]
    full = owned(session, w, "a1", 3)  # a1 is at capacity (3)
    actor = ownership.Actor(99, "manager-a")
    result = ownership.assign(session, [from_pool, waiting, from_a2, full[0]], w.emp(session, "a1"),
                              NOW + DAY, actor, "covering for a2")
    session.commit()
    assert sorted(result.moved) == sorted([from_pool, waiting, from_a2]) and result.skipped == [full[0]]
    assert result.notes == ["override: over capacity (6/3)"]
    session.expire_all()
    for opp_id, (from_owner, from_pool_id) in {from_pool: (None, w.pool), waiting: (None, None),
                                                 from_a2: (w.a2, None)}.items():
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.owner_id, opp.org_unit_id, opp.assigned_at) == (
            OWNED, w.a1, w.team_a, NOW + DAY)
        log = logs(session, opp_id)[-1]
        assert (log.reason, log.from_owner_id, log.from_pool_id, log.to_owner_id, log.actor_id,
                log.actor_name) == (ASSIGN, from_owner, from_pool_id, w.a1, 99, "manager-a")
        assert log.note.startswith("covering for a2; override: over capacity")
    assert profile(session, w.a1).open_count == 6 and profile(session, w.a2).open_count == 0
    # Nobody resigned receives an opportunity.
    a2 = w.emp(session, "a2")
    a2.hr_status = HR_RESIGNED
    session.commit()
    before = snapshot(session, [from_pool])
    refused(session, ownership.assign, [from_pool], a2, NOW, actor, None, match="resigned")
    assert snapshot(session, [from_pool]) == before


def test_transfer_all_on_resignation_moves_everything_to_the_successor(session, world):
    w = world
    mine = owned(session, w, "a1", 3) + owned(session, w, "a1", 2, product_line=w.english)
    won = owned(session, w, "a1")[0]
    opportunities.set_stage(session, won, w.stages["won"], None, NOW, "a1")
    others = owned(session, w, "a2")
    a1 = w.emp(session, "a1")
    a1.hr_status = HR_RESIGNED
    session.commit()
    chunks = []
    result = ownership.transfer_all(session, a1, w.emp(session, "b1"), NOW + DAY, ownership.Actor(5, "mgr"),
                                    "a1 resigned", on_chunk=lambda r: chunks.append(r.count), chunk=2)
    session.commit()
    assert sorted(result.moved) == sorted(mine) and chunks == [2, 4, 5]
    assert result.notes == []  # b1 (P2, capacity 5) holds exactly 5
    session.expire_all()
    assert set(session.scalars(select(Opportunity.id).where(Opportunity.owner_id == w.b1))) == set(mine)
    assert session.scalar(select(func.count(Opportunity.id)).where(
        Opportunity.owner_id == w.a1, Opportunity.status == OWNED)) == 0
    assert session.get(Opportunity, won).owner_id == w.a1  # the closed one keeps who won it
    assert {session.get(Opportunity, i).owner_id for i in others} == {w.a2}
    for opp_id in mine:
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.org_unit_id, opp.assigned_at) == (OWNED, w.team_b, NOW + DAY)
        log = logs(session, opp_id)[-1]
        assert (log.reason, log.from_owner_id, log.to_owner_id, log.actor_id, log.actor_name, log.note) == (
            TRANSFER, w.a1, w.b1, 5, "mgr", "a1 resigned")
    assert (profile(session, w.a1).open_count, profile(session, w.b1).open_count) == (0, 5)
    # Run again: nothing left, nothing doubled.
    assert ownership.transfer_all(session, a1, w.emp(session, "b1"), NOW + DAY, "mgr").count == 0
    assert session.scalar(select(func.count(AssignmentLog.id)).where(AssignmentLog.reason == TRANSFER)) == 5


def test_transfer_all_back_to_waiting_cools_the_ex_owner(session, world):
    w = world
    mine = owned(session, w, "a1", 3)
    a1 = w.emp(session, "a1")
    result = ownership.transfer_all(session, a1, None, NOW, "mgr")
    session.commit()
    assert sorted(result.moved) == mine
    session.expire_all()
    for opp_id in mine:
        opp = session.get(Opportunity, opp_id)
        assert (opp.status, opp.owner_id, opp.pool_id, opp.is_recycled) == (WAITING, None, None, True)
        assert opp.org_unit_id == w.team_a  # still visible to the team's manager while it waits
        assert session.get(OwnerCooling, (opp_id, w.a1)).until == NOW + 2 * DAY
        assert logs(session, opp_id)[-1].reason == TRANSFER
    assert profile(session, w.a1).open_count == 0
    refused(session, ownership.transfer_all, a1, a1, NOW, "mgr", match="someone else")


def test_frozen_opportunities_stay_put_until_a_manager_moves_them(session, world):
    w = world
    opp_id = owned(session, w, "a1")[0]
    result = ownership.set_locked(session, [opp_id], True, NOW, "mgr")
    session.commit()
    assert result.moved == [opp_id]
    refused(session, ownership.give_back, w.emp(session, "a1"), opp_id, "bye", NOW, "a1", match="frozen")
    ownership.assign(session, [opp_id], w.emp(session, "a2"), NOW, "mgr")  # the manager still can
    session.commit()
    assert ownership.set_locked(session, [opp_id], True, NOW, "mgr").skipped == [opp_id]
    ownership.set_locked(session, [opp_id], False, NOW, "mgr")
    session.commit()
    session.expire_all()
    opp = session.get(Opportunity, opp_id)
    assert (opp.locked, opp.owner_id) == (False, w.a2)


def test_missing_profile_is_created_paused_with_counted_counters(session, world):
    w = world
    newcomer = f.employee(session, session.get(OrgUnit, w.team_a), "newcomer")
    ids = owned(session, w, "a1", 2)
    ownership.assign(session, ids, newcomer, NOW, "mgr")
    session.commit()
    prof = profile(session, newcomer.id)
    assert (prof.paused, prof.open_count) == (True, 2)  # not sent leads by dispatch until set up


def test_about_to_recycle_follows_each_opportunitys_own_rule(session, world):
    w = world
    team_rule = CirculationRule(name="team A english", org_unit_id=w.team_a, product_line_id=w.english,
                                idle_days=3, remind_hours=12)
    session.add(team_rule)
    session.commit()
    math = owned(session, w, "a1", 4)
    english = owned(session, w, "a1", 2, product_line=w.english)
    now = NOW + 10 * DAY
    arranged = {  # opportunity → (idle_since, protected_until, locked, stage)
        math[0]: (now - 7 * DAY + dt.timedelta(hours=23), None, False, "new"),  # inside 24 h: soon
        math[1]: (now - 7 * DAY + dt.timedelta(hours=25), None, False, "new"),  # not yet
        math[2]: (now - 8 * DAY, now + 2 * DAY, False, "new"),  # protected beyond the window
        math[3]: (now - 8 * DAY, None, False, "trial"),  # exempt stage
        english[0]: (now - 3 * DAY + dt.timedelta(hours=11), None, False, "new"),  # 12 h window: soon
        english[1]: (now - 3 * DAY + dt.timedelta(hours=13), None, True, "new"),  # frozen
    }
    for opp_id, (idle, protected, locked, stage) in arranged.items():
        opp = session.get(Opportunity, opp_id)
        opp.idle_since, opp.protected_until = idle, protected
        opp.locked, opp.stage_id = locked, w.stages[stage]
    session.commit()
    soon = set(session.scalars(select(Opportunity.id).where(
        Opportunity.id.in_(arranged), circulation.due_within(session, now))))
    assert soon == {math[0], english[0]}
    # The per-row computation agrees.
    for opp_id in arranged:
        opp = session.get(Opportunity, opp_id)
        rule = circulation.circulation_rule_for(session, session.get(OrgUnit, opp.org_unit_id).path,
                                              opp.product_line_id, opp.intention_level_id)
        due = circulation.recycle_due_at(session, opp, rule)
        assert (due is not None and due - circulation.remind_window(rule) <= now) == (opp_id in soon)


def test_the_session_is_usable_after_a_refusal(session, world):
    """A refused call leaves nothing pending: the caller's next statement works."""
    w = world
    opp_id = opportunity(session, w, pool=w.pool_outside)
    refused(session, ownership.claim, w.emp(session, "a1"), [opp_id], NOW, "a1", match="may not claim")
    assert db.session.get(Opportunity, opp_id).status == POOLED
