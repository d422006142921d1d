"""Sampling plans: which calls get inspected each period, and by whom.

For one plan and one period (a business-time-zone day, ISO week or month) the sampler takes, per agent,
the calls in the plan's org subtree that match its filters (connected only, talk-time bounds) and wants
`amount` of them (count mode) or ceil(amount % of them) (percent mode). Calls are taken in a
deterministic pseudo-random order (a hash of plan, period and call id), so a re-run picks the same calls;
calls already inspected (by any plan) are skipped, and this plan's earlier picks for the period count
toward the agent's quota — so running twice for a period creates nothing new, and a run that was killed
half-way is completed by the next one. New inspections go to the plan's active inspectors evenly: each
to whoever has the fewest of the plan's inspections in the period (ties by employee id), so the counts
differ by at most one across runs as well.

The scheduled job samples each enabled plan's last COMPLETED period once (`last_sampled_period`);
"Run now" may also sample the current period so far (a later run tops it up).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import clock
from app.models.calls import CallRecord
from app.models.employee import HR_RESIGNED
from app.models.org import OrgUnit
from app.models.qa import PERIODS, QA_PENDING, SAMPLE_COUNT, SAMPLE_PERCENT, QaInspection, QaPlan
from app.security.scope import subtree_unit_ids
from app.services.errors import DomainError
from app.services.qa.checks import run_checks

CURRENT, PREVIOUS = "current", "previous"


def check_plan(plan: QaPlan) -> None:
    """Save rules of a sampling plan (DomainError with the field)."""
    if not (plan.name or "").strip():
        raise DomainError("Enter a name", field="name")
    if plan.mode not in (SAMPLE_COUNT, SAMPLE_PERCENT):
        raise DomainError("Mode must be count or percent", field="mode")
    if plan.period not in PERIODS:
        raise DomainError("Period must be one of %(values)s", field="period", values=", ".join(PERIODS))
    if plan.amount is None or plan.amount <= 0:
        raise DomainError("The amount must be above 0", field="amount")
    if plan.mode == SAMPLE_PERCENT and plan.amount > 100:
        raise DomainError("A percentage is at most 100", field="amount")
    if plan.mode == SAMPLE_COUNT and plan.amount != int(plan.amount):
        raise DomainError("A count is a whole number", field="amount")
    for name in ("min_duration", "max_duration"):
        value = getattr(plan, name)
        if value is not None and value < 0:
            raise DomainError("Must not be negative", field=name)
    low, high = plan.min_duration, plan.max_duration
    if low is not None and high is not None and low > high:
        raise DomainError("The minimum talk time is longer than the maximum", field="max_duration")
    if plan.scorecard is not None and not plan.scorecard.enabled and plan.enabled:
        raise DomainError("The scorecard is disabled", field="scorecard")
    if not plan.inspectors:
        raise DomainError("Choose at least one inspector", field="inspectors")
    plan.name = plan.name.strip()


# --- periods --------------------------------------------------------------------------------------------
def _start_of(period: str, day: dt.date) -> dt.date:
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_start(period: str, start: dt.date) -> dt.date:
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def period_key(period: str, start: dt.date) -> str:
    if period == "day":
        return start.isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


@dataclass(frozen=True)
class Period:
    key: str
    start: dt.datetime  # naive UTC, inclusive
    end: dt.datetime  # naive UTC, exclusive


def check_runnable(plan: QaPlan, which: str) -> None:
    """Whether a person may start a run of `plan` now ("Run now"): the plan is enabled and the period
    choice is one of PREVIOUS / CURRENT."""
    if which not in (PREVIOUS, CURRENT):
        raise DomainError("Choose the previous or the current period", field="which", status=400)
    if not plan.enabled:
        raise DomainError("The plan is disabled", status=409)


def period_at(session, period: str, now: dt.datetime, which: str = CURRENT) -> Period:
    """The business-time-zone period containing `now` (or the one before it)."""
    if period not in PERIODS:
        raise DomainError("Unknown period %(period)s", field="period", period=repr(period))
    start = _start_of(period, clock.local_date(now))
    if which == PREVIOUS:
        start = _start_of(period, start - dt.timedelta(days=1))
    end = _next_start(period, start)
    return Period(period_key(period, start), clock.day_bounds(start)[0], clock.day_bounds(end)[0])


# --- sampling -------------------------------------------------------------------------------------------
@dataclass
class SampleResult:
    plan_id: int
    period: str
    created: int = 0
    agents: int = 0
    by_inspector: dict[int, int] = field(default_factory=dict)  # new ones in this run
    skipped: str | None = None  # why nothing was done


def _order_key(plan_id: int, period: str, call_id: int) -> str:
    return hashlib.sha256(f"{plan_id}:{period}:{call_id}".encode()).hexdigest()


def wanted(plan: QaPlan, eligible: int) -> int:
    """How many of an agent's `eligible` calls the plan inspects."""
    if plan.mode == SAMPLE_PERCENT:
        return min(eligible, math.ceil(eligible * plan.amount / 100 - 1e-9))
    return min(eligible, int(plan.amount))


def _call_filters(plan: QaPlan, period: Period, units) -> list:
    clauses = [CallRecord.started_at >= period.start, CallRecord.started_at < period.end,
               CallRecord.org_unit_id.in_(units)]
    if plan.connected_only:
        clauses.append(CallRecord.answered_at.is_not(None))
    if plan.min_duration is not None:
        clauses.append(CallRecord.duration_seconds >= plan.min_duration)
    if plan.max_duration is not None:
        clauses.append(CallRecord.duration_seconds <= plan.max_duration)
    return clauses


def sample_plan(session, plan_id: int, now: dt.datetime, which: str = CURRENT,
                commit: bool = True) -> SampleResult:
    """Create the plan's inspections for the period (see the module docstring).

    Commits after each agent when `commit` (so a killed run keeps what it did); a call another run took
    meanwhile (the unique call_id) only skips that agent until the next run.
    """
    plan = session.get(QaPlan, plan_id)
    if plan is None:
        raise DomainError("Unknown sampling plan", status=404)
    period = period_at(session, plan.period, now, which)
    result = SampleResult(plan.id, period.key)
    inspectors = sorted(e.id for e in plan.inspectors if e.hr_status != HR_RESIGNED)
    if not inspectors:
        result.skipped = "no active inspector"
        return result
    if not plan.scorecard.enabled:
        result.skipped = "scorecard disabled"
        return result
    unit = session.get(OrgUnit, plan.org_unit_id)
    units = subtree_unit_ids(unit.path)
    filters = _call_filters(plan, period, units)
    mine = (QaInspection.plan_id == plan.id) & (QaInspection.period == period.key)
    load = _reload(session, mine, inspectors)
    items = list(plan.scorecard.items)
    base = plan.scorecard.base_score
    agents = list(session.scalars(select(CallRecord.employee_id).where(*filters).distinct()
                                  .order_by(CallRecord.employee_id)))
    for agent_id in agents:
        calls = session.execute(select(CallRecord.id, QaInspection.plan_id, QaInspection.period)
                                .outerjoin(QaInspection, QaInspection.call_id == CallRecord.id)
                                .where(*filters, CallRecord.employee_id == agent_id)).all()
        have = sum(1 for _id, p, k in calls if p == plan.id and k == period.key)
        free = sorted((c for c, p, _k in calls if p is None),
                      key=lambda c: _order_key(plan.id, period.key, c))
        need = wanted(plan, len(calls)) - have
        result.agents += 1
        if need <= 0 or not free:
            continue
        assigned: list[int] = []
        try:
            with session.begin_nested():
                for call_id in free[:need]:
                    call = session.get(CallRecord, call_id)
                    inspector = min(inspectors, key=lambda i: (load[i], i))
                    score, results = run_checks(base, items, call.transcript)
                    session.add(QaInspection(
                        call_id=call.id, plan_id=plan.id, period=period.key, scorecard_id=plan.scorecard_id,
                        agent_id=call.employee_id, org_unit_id=call.org_unit_id, inspector_id=inspector,
                        status=QA_PENDING, machine_score=score,
                        machine_results=_dump(results)))
                    load[inspector] += 1
                    assigned.append(inspector)
                session.flush()
        except IntegrityError:  # another run took one of these calls: the next run tops the agent up
            load = _reload(session, mine, inspectors)
            continue
        result.created += len(assigned)
        for inspector in assigned:
            result.by_inspector[inspector] = result.by_inspector.get(inspector, 0) + 1
        if commit:
            session.commit()
    if which == PREVIOUS:
        plan.last_sampled_period = period.key
    if commit:
        session.commit()
    return result


def _reload(session, mine, inspectors) -> Counter:
    load = Counter({i: 0 for i in inspectors})
    load.update(dict(session.execute(select(QaInspection.inspector_id, func.count())
                                     .where(mine, QaInspection.inspector_id.in_(inspectors))
                                     .group_by(QaInspection.inspector_id)).all()))
    return load


def _dump(results: dict) -> str:
    return json.dumps(results, ensure_ascii=False, sort_keys=True)


def due_plans(session, now: dt.datetime) -> list[int]:
    """Enabled plans whose last completed period has not been sampled yet."""
    out = []
    for plan in session.scalars(select(QaPlan).where(QaPlan.enabled.is_(True)).order_by(QaPlan.id)):
        if plan.last_sampled_period != period_at(session, plan.period, now, PREVIOUS).key:
            out.append(plan.id)
    return out


def sample_due_plans(session, now: dt.datetime) -> list[SampleResult]:
    return [sample_plan(session, plan_id, now, PREVIOUS) for plan_id in due_plans(session, now)]
