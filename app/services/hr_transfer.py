"""A resignation reported by HR sync starts the "transfer all opportunities" flow (离职转移).

Where the resigned person's open opportunities go is the config item `hr.resignation_policy`:
- "manager": to their manager (Employee.manager_id) — with no manager, or a manager who resigned too,
  they go back to dispatch instead (the audit entry and the AssignmentLog notes say so);
- "team_pool": each to the public pool of their org unit (the deepest enabled pool over it, one of the
  opportunity's product line before one of none); those without such a pool go back to dispatch;
- "dispatch": back to waiting for the dispatch engine (the ex-owner cooling off from them), and a
  dispatch run is requested.
An unknown value is read as "manager" (config items have no per-key check) and logged as a warning; the
audit entry records the value found.

It runs inside the HR sync's transaction, in chunks (ownership.CHUNK): the status change and the
transfer commit or roll back together, so a sync sent again (the person already resigned) starts
nothing — the flow runs only on the change to resigned. Each move writes its AssignmentLog row (through
app.services.ownership); the flow writes one audit entry (policy, counts) and tells the manager in
their inbox (once per resignation). A portfolio of tens of thousands would make the sync slow: the
chunks keep memory flat, not time short (a job run is the way out if that day comes).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from app import clock
from app.models.employee import HR_RESIGNED, Employee
from app.models.inbox import RESIGNATION_TRANSFER
from app.models.jobs import DISPATCH
from app.models.org import OrgUnit
from app.models.sales import OWNED, POOLED, TRANSFER, Opportunity, Pool
from app.services import audit, inbox, metadata, ownership, runner
from app.services.circulation import RuleCache
from app.services.org import unit_path
from app.services.pools import pools_over

log = logging.getLogger(__name__)

CONFIG_KEY = "hr.resignation_policy"
MANAGER, TEAM_POOL, TO_DISPATCH = "manager", "team_pool", "dispatch"
POLICIES = (MANAGER, TEAM_POOL, TO_DISPATCH)
ACTION = "resignation_transfer"  # AuditLog.action


def _(message: str) -> str:
    """Marks a msgid for pybabel; the inbox translates it when read."""
    return message


TITLE = _("%(name)s resigned: %(to_you)s opportunities transferred to you, %(pooled)s to public pools, "
          "%(dispatched)s back to dispatch")


@dataclass
class Transfer:
    """What the flow did for one resigned person."""

    employee: Employee
    configured: str  # the config value as found
    policy: str  # the policy applied
    to_manager: int = 0
    pooled: int = 0
    dispatched: int = 0
    manager_id: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"employee_no": self.employee.employee_no, "policy": self.policy,
                "to_manager": self.to_manager, "pooled": self.pooled, "dispatched": self.dispatched,
                "notes": self.notes}


def configured_policy(session) -> tuple[str, str]:
    """(value as configured, policy to apply): an unknown value applies "manager"."""
    value = str(metadata.config_value(session, CONFIG_KEY) or "").strip()
    if value in POLICIES:
        return value, value
    log.warning("%s is %r, not one of %s: applying %r", CONFIG_KEY, value, ", ".join(POLICIES), MANAGER)
    return value, MANAGER


def on_resignations(session, employees: list[Employee], now: dt.datetime | None = None,
                    actor: str = "hr-sync") -> list[Transfer]:
    """Run the flow for each employee HR sync has just marked resigned (the caller commits)."""
    if not employees:
        return []
    now = now or clock.utcnow()
    configured, policy = configured_policy(session)
    done = [transfer(session, emp, configured, policy, now, actor) for emp in employees]
    if any(t.dispatched for t in done):  # enqueued when the sync commits
        runner.start(session, DISPATCH, queue="high", reuse_running=False)
    return done


def transfer(session, employee: Employee, configured: str, policy: str, now: dt.datetime,
             actor: str) -> Transfer:
    result = Transfer(employee, configured, policy)
    if configured != policy:
        result.notes.append(f"unknown policy {configured!r}: applied {policy!r}")
    manager = session.get(Employee, employee.manager_id) if employee.manager_id else None
    note = f"{employee} resigned (HR sync, policy {policy})"
    if policy == MANAGER:
        if manager is None or manager.hr_status == HR_RESIGNED or manager.id == employee.id:
            why = "no manager" if manager is None else f"manager {manager} has resigned too"
            result.notes.append(f"{why}: back to dispatch")
            note = f"{note}; {why}: back to dispatch"
        else:
            result.manager_id = manager.id
            moved = ownership.transfer_all(session, employee, manager, now, actor, note=note)
            result.to_manager = moved.count
    elif policy == TEAM_POOL:
        result.pooled = to_team_pools(session, employee, now, actor, note)
    # What is still theirs (every policy's fallback, and the dispatch policy itself) waits for dispatch.
    result.dispatched = ownership.transfer_all(session, employee, None, now, actor, note=note).count
    if policy == TEAM_POOL and result.dispatched:
        result.notes.append(f"{result.dispatched} without a public pool of their unit: back to dispatch")
    audit.record(session, ACTION, target_type="employee", target_id=employee.id,
                 summary=(f"{employee} resigned: policy {policy}; {result.to_manager} to the manager, "
                          f"{result.pooled} to pools, {result.dispatched} to dispatch"),
                 after={"configured": configured, **result.as_dict(), "manager_id": result.manager_id})
    if manager is not None and manager.hr_status != HR_RESIGNED:
        inbox.notify(session, manager, RESIGNATION_TRANSFER, TITLE,
                     {"name": employee.name, "to_you": result.to_manager, "pooled": result.pooled,
                      "dispatched": result.dispatched},
                     subject=("employee", employee.id),
                     dedupe_key=f"{employee.id}:{employee.left_on or clock.local_date(now)}", now=now)
    session.flush()
    return result


# --- to the team's public pools ---------------------------------------------------------------------
def team_pool(session, org_unit_path: str | None, product_line_id: int | None) -> Pool | None:
    """The deepest enabled pool over the unit, one of that product line before one of none (not the
    configured fallback pool: an opportunity with no pool of its team goes back to dispatch)."""
    rows = session.execute(select(Pool, OrgUnit.path).join(OrgUnit, OrgUnit.id == Pool.org_unit_id)
                           .where(Pool.id.in_(pools_over(org_unit_path, product_line_id)
                                              .with_only_columns(Pool.id)))).all()
    if not rows:
        return None
    return min(rows, key=lambda r: (-len(r[1] or ""), r[0].product_line_id is None, r[0].id))[0]


def to_team_pools(session, employee: Employee, now: dt.datetime, actor: str, note: str,
                  chunk: int = ownership.CHUNK) -> int:
    """Move the employee's open opportunities that have a pool of their unit into it, in chunks (with
    the AssignmentLog rows and counters ownership's own moves write); returns how many moved."""
    who = ownership.as_actor(actor)
    path = unit_path(session, employee.org_unit_id)
    pools: dict[int | None, Pool | None] = {}
    rules = RuleCache(session)
    moved, after = 0, 0
    while True:
        ids = session.scalars(select(Opportunity.id).where(
            Opportunity.owner_id == employee.id, Opportunity.status == OWNED, Opportunity.id > after)
            .order_by(Opportunity.id).limit(chunk)).all()
        if not ids:
            return moved
        after = ids[-1]
        opps = [o for o in ownership.lock_opportunities(session, ids)
                if o.status == OWNED and o.owner_id == employee.id]
        logs, cooling = [], []
        for opp in opps:
            if opp.product_line_id not in pools:
                pools[opp.product_line_id] = team_pool(session, path, opp.product_line_id)
            pool = pools[opp.product_line_id]
            if pool is None:
                continue
            rule = rules(opp.org_unit_id, opp.product_line_id, opp.intention_level_id)
            opp.status, opp.owner_id, opp.pool_id, opp.org_unit_id = POOLED, None, pool.id, pool.org_unit_id
            opp.protected_until = opp.recycle_reminded_at = opp.dispatch_after = None
            if rule is not None and rule.cooling_days:
                cooling.append({"opportunity_id": opp.id, "employee_id": employee.id,
                                "until": now + dt.timedelta(days=rule.cooling_days)})
            logs.append(ownership._log_row(now, who, opp.id, TRANSFER, from_owner=employee.id,
                                           to_pool=pool.id, rule_id=rule.id if rule else None, note=note))
        if logs:
            profile = ownership.lock_profiles(session, [employee.id])[employee.id]
            profile.open_count = max(profile.open_count - len(logs), 0)
            ownership._cool(session, cooling)
            session.flush()
            ownership._log(session, logs)
            moved += len(logs)
