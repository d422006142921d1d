"""Forced circulation: idle, no-deal and stage-deadline recycling, exemptions, the most specific rule
winning, cooling of the ex-owner, reminders, counters, and the scheduled job on a real RQ worker."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select, update

from app.jobs.dispatch import circulation_scan_job
from app.jobs.worker import app_worker_class
from app.models.sales import (
    AssignmentLog,
    CirculationRule,
    Opportunity,
    OwnerCooling,
    SalesProfile,
)
from app.services.circulation import scan
from app.services.dispatch import dispatch_waiting
from tests.factories import dict_item
from tests.helpers import utc

# The clock and the rules' `now` agree: every test here runs at AT (a Tuesday, inside working hours, so
# the re-dispatch of recycled opportunities places them at once).
AT = "2026-11-24T10:00:00+08:00"
NOW = utc(AT)
pytestmark = pytest.mark.instant(AT)


@pytest.fixture
def owned(session):
    """The 240 demo opportunities, dispatched, with every clock set to NOW."""
    dispatch_waiting(session)
    session.execute(update(Opportunity).values(idle_since=NOW, assigned_at=NOW, protected_until=None))
    session.commit()
    return session.scalars(select(Opportunity).order_by(Opportunity.id)).all()


def _age(session, ids, **clocks):
    session.execute(update(Opportunity).where(Opportunity.id.in_(ids)).values(**clocks))
    session.commit()


def _owners(session, ids) -> dict[int, int | None]:
    return dict(session.execute(select(Opportunity.id, Opportunity.owner_id)
                                .where(Opportunity.id.in_(ids))).all())


def _rule(session):
    return session.scalar(select(CirculationRule).where(CirculationRule.name == "销售事业部默认流转规则"))


def test_idle_opportunities_are_recycled_with_cooling_and_log(session, owned):
    rule = _rule(session)
    idle = [o.id for o in owned[:20]]
    _age(session, idle, idle_since=NOW - dt.timedelta(days=rule.idle_days, minutes=1))
    _age(session, [o.id for o in owned[20:25]], idle_since=NOW - dt.timedelta(days=rule.idle_days - 1))
    owners = _owners(session, idle)
    before = session.scalar(select(func.sum(SalesProfile.open_count)))

    result = scan(session, now=NOW)

    assert result.recycled == 20
    recycled = session.execute(select(Opportunity.id, Opportunity.status, Opportunity.owner_id,
                                      Opportunity.is_recycled, Opportunity.recycle_count)
                               .where(Opportunity.id.in_(idle))).all()
    assert all(r.status == "waiting" and r.owner_id is None and r.is_recycled and r.recycle_count == 1
               for r in recycled)
    logs = session.execute(select(AssignmentLog.opportunity_id, AssignmentLog.from_owner_id,
                                  AssignmentLog.circulation_rule_id)
                           .where(AssignmentLog.reason == "recycle")).all()
    assert {(log.opportunity_id, log.from_owner_id) for log in logs} == set(owners.items())
    assert {log.circulation_rule_id for log in logs} == {rule.id}
    cooling = session.execute(select(OwnerCooling.opportunity_id, OwnerCooling.employee_id,
                                     OwnerCooling.until)).all()
    assert {(c.opportunity_id, c.employee_id) for c in cooling} == set(owners.items())
    assert {c.until for c in cooling} == {NOW + dt.timedelta(days=rule.cooling_days)}
    assert session.scalar(select(func.sum(SalesProfile.open_count))) == before - 20
    # Idempotent: nothing is due any more.
    assert scan(session, now=NOW).recycled == 0


def test_redispatch_never_returns_an_opportunity_to_its_cooling_ex_owner(session, owned):
    rule = _rule(session)
    idle = [o.id for o in owned[:60]]
    owners = _owners(session, idle)
    _age(session, idle, idle_since=NOW - dt.timedelta(days=rule.idle_days + 1))
    scan(session, now=NOW)
    dispatch_waiting(session)
    again = _owners(session, idle)
    assert all(again[i] is not None and again[i] != owners[i] for i in idle)
    for opp_id in idle:
        trace = json.loads(session.scalars(
            select(AssignmentLog.trace).where(AssignmentLog.reason == "dispatch",
                                              AssignmentLog.opportunity_id == opp_id)
            .order_by(AssignmentLog.id.desc())).first())
        assert owners[opp_id] in trace["candidates"]
        assert trace["excluded"][str(owners[opp_id])] == "cooling"


def test_exemptions_locked_protected_and_exempt_stages_are_not_recycled(session, owned):
    rule = _rule(session)
    ids = [o.id for o in owned[:9]]
    _age(session, ids, idle_since=NOW - dt.timedelta(days=rule.idle_days + 3))
    _age(session, ids[0:3], locked=True)
    _age(session, ids[3:6], protected_until=NOW + dt.timedelta(hours=1))
    _age(session, ids[6:9], stage_id=dict_item(session, "opportunity_stage", "trial").id)
    assert scan(session, now=NOW).recycled == 0
    _age(session, ids[3:6], protected_until=NOW - dt.timedelta(hours=1))  # protection ran out
    assert scan(session, now=NOW).recycled == 3


def test_no_deal_and_stage_deadline_rules(session, owned):
    rule = _rule(session)
    rule.idle_days = None
    rule.no_deal_days = 30
    rule.stage_deadline_days = 5
    rule.target_stage_id = dict_item(session, "opportunity_stage", "interested").id
    session.commit()
    no_deal, early_stage = [o.id for o in owned[:4]], [o.id for o in owned[4:8]]
    advanced = [o.id for o in owned[8:12]]
    _age(session, no_deal, assigned_at=NOW - dt.timedelta(days=31),
         stage_id=dict_item(session, "opportunity_stage", "negotiating").id)
    _age(session, early_stage, assigned_at=NOW - dt.timedelta(days=6),
         stage_id=dict_item(session, "opportunity_stage", "contacted").id)
    _age(session, advanced, assigned_at=NOW - dt.timedelta(days=6),
         stage_id=dict_item(session, "opportunity_stage", "interested").id)
    scan(session, now=NOW)
    status = dict(session.execute(select(Opportunity.id, Opportunity.status)
                                  .where(Opportunity.id.in_(no_deal + early_stage + advanced))).all())
    assert [status[i] for i in no_deal + early_stage] == ["waiting"] * 8
    assert [status[i] for i in advanced] == ["owned"] * 4


def test_the_most_specific_rule_governs(session, owned):
    general = _rule(session)
    k12 = owned[0].org_unit.parent  # the department above the owner's team
    line = owned[0].product_line_id
    special = CirculationRule(name="K12 strict", org_unit_id=k12.id, product_line_id=line, idle_days=2,
                              cooling_days=1, exempt_stages="won,lost")
    session.add(special)
    session.commit()
    governed = [o.id for o in owned if o.org_unit.parent_id == k12.id and o.product_line_id == line]
    others = [o.id for o in owned if o.id not in governed]
    _age(session, governed + others, idle_since=NOW - dt.timedelta(days=3))  # past 2 days, not 7
    result = scan(session, now=NOW)
    assert result.by_rule == {special.id: len(governed)}
    assert general.id not in result.by_rule


def test_owners_are_reminded_once_before_recycling(session, owned):
    rule = _rule(session)
    soon = [o.id for o in owned[:5]]
    _age(session, soon, idle_since=NOW - dt.timedelta(days=rule.idle_days) + dt.timedelta(hours=2))
    first = scan(session, now=NOW)
    assert first.recycled == 0 and {r["opportunity_id"] for r in first.reminders} == set(soon)
    assert scan(session, now=NOW).reminded == 0  # once only


def test_scheduled_job_runs_on_a_real_worker_and_queues_a_redispatch(app, session, owned):
    rule = _rule(session)
    _age(session, [o.id for o in owned[:10]], idle_since=dt.datetime(2020, 1, 1))
    connection = Redis.from_url(app.config["REDIS_URL"])
    queue = Queue("default", connection=connection)
    job = queue.enqueue(circulation_scan_job)
    app_worker_class(app, SimpleWorker)([queue], connection=connection).work(burst=True)
    assert job.return_value()["recycled"] == 10
    # The recycled opportunities went straight back through dispatch (the job queued it).
    session.expire_all()
    assert session.scalar(select(func.count()).where(Opportunity.status == "waiting")) == 0
    assert rule.idle_days


def test_an_opportunity_without_a_stage_is_still_recycled(session, owned):
    rule = _rule(session)
    _age(session, [owned[0].id], stage_id=None, idle_since=NOW - dt.timedelta(days=rule.idle_days + 1))
    assert scan(session, now=NOW).recycled == 1
