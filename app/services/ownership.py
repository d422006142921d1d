"""Who owns an opportunity, and every way that changes: claim, give back, assign, transfer; freezing.
(Follow-ups and stages, which close an opportunity as won or lost, are app.services.opportunities'.)

Each function locks what it reads — the opportunity rows (SELECT … FOR UPDATE, in id order), the claim
counter and the sales profiles involved (in employee id order; the dispatch engine uses the same order,
opportunities first, so the two cannot deadlock) — checks everything before it writes anything, then
writes the opportunities, one AssignmentLog row per opportunity moved and the SalesProfile counters in
the caller's transaction. The caller commits, or rolls back on DomainError. On SQLite, a single writer,
FOR UPDATE is a no-op.

Counters: `SalesProfile.open_count` is the load measured against capacity (库容): owned open
opportunities, plus the won ones when the rule says capacity counts won (`capacity_counts_won`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select
from sqlalchemy.orm import lazyload

from app import clock
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import (
    ASSIGN,
    CLAIM,
    GIVE_BACK,
    OPEN_STATUSES,
    OWNED,
    POOLED,
    TRANSFER,
    WAITING,
    WON,
    AssignmentLog,
    ClaimCounter,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.services import audit
from app.services.circulation import RuleCache, capacity_of, circulation_rule_for
from app.services.errors import DomainError
from app.services.org import ancestor_ids, unit_path
from app.services.pools import best_pool
from app.services.sql import dialect_insert

CHUNK = 500  # opportunities per chunk of a bulk transfer
MAX_BATCH = 1000  # opportunities per claim / assign call


@dataclass(frozen=True)
class Actor:
    """Who made a change: a login user (id, username) or a named system process."""

    id: int | None
    name: str


def as_actor(actor) -> Actor:
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        return Actor(None, actor)
    if actor is None:
        return Actor(None, "system")
    return Actor(getattr(actor, "id", None), getattr(actor, "username", None) or str(actor))


@dataclass
class Moved:
    """What a bulk change did."""

    moved: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already where they were asked to go
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.moved)


# --- locking helpers --------------------------------------------------------------------------------
def lock_opportunities(session, ids) -> list[Opportunity]:
    """The opportunities with these ids, locked FOR UPDATE in id order and read afresh."""
    ids = sorted({n for n in map(int, ids) if 0 < n < 2**31})  # no row has an id beyond 32 bits
    if not ids:
        return []
    query = (select(Opportunity).where(Opportunity.id.in_(ids)).order_by(Opportunity.id)
             .options(lazyload("*")).execution_options(populate_existing=True)
             .with_for_update(of=Opportunity))
    return list(session.scalars(query).all())


def require_all(found: list[Opportunity], wanted) -> None:
    """A 404 naming the wanted ids that were not found."""
    missing = sorted({int(i) for i in wanted} - {o.id for o in found})
    if missing:
        raise DomainError("No such opportunity: %(ids)s", status=404, ids=", ".join(f"#{i}" for i in missing))


def lock_profiles(session, employee_ids) -> dict[int, SalesProfile]:
    """The sales profiles of these employees, locked in id order; missing ones are created paused (so
    that the dispatch engine does not start sending leads to someone nobody set up for it), with their
    counters counted from the opportunities they hold."""
    ids = sorted({i for i in employee_ids if i is not None})
    if not ids:
        return {}
    have = set(session.scalars(select(SalesProfile.employee_id).where(SalesProfile.employee_id.in_(ids))))
    missing = [i for i in ids if i not in have]
    if missing:
        counts = defaultdict(Counter)
        for owner, status, n in session.execute(
            select(Opportunity.owner_id, Opportunity.status, func.count())
            .where(Opportunity.owner_id.in_(missing), Opportunity.status.in_((OWNED, WON)))
            .group_by(Opportunity.owner_id, Opportunity.status)
        ):
            counts[owner][status] = n
        stmt = dialect_insert(session, SalesProfile).values([
            {"employee_id": i, "paused": True, "weight": 100, "open_count": counts[i][OWNED],
             "won_count": counts[i][WON], "dispatched_today": 0} for i in missing])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["employee_id"]))
    query = (select(SalesProfile).where(SalesProfile.employee_id.in_(ids)).order_by(SalesProfile.employee_id)
             .options(lazyload("*")).execution_options(populate_existing=True)
             .with_for_update(of=SalesProfile))
    return {p.employee_id: p for p in session.scalars(query)}


def _log(session, rows: list[dict]) -> None:
    if rows:
        session.execute(insert(AssignmentLog.__table__), rows)


def _log_row(now, actor: Actor, opp_id, reason, *, from_owner=None, to_owner=None, from_pool=None,
             to_pool=None, rule_id=None, note=None, trace=None) -> dict:
    return {"created_at": now, "opportunity_id": opp_id, "reason": reason, "from_owner_id": from_owner,
            "to_owner_id": to_owner, "from_pool_id": from_pool, "to_pool_id": to_pool,
            "dispatch_rule_id": None, "circulation_rule_id": rule_id, "actor_id": actor.id,
            "actor_name": (actor.name or "")[:128] or None, "note": (note or "")[:255] or None,
            "trace": json.dumps(trace, separators=(",", ":"), ensure_ascii=False) if trace else None}


def _cool(session, rows: list[dict]) -> None:
    """Upsert OwnerCooling rows ({opportunity_id, employee_id, until})."""
    if not rows:
        return
    stmt = dialect_insert(session, OwnerCooling).values(rows)
    session.execute(stmt.on_conflict_do_update(index_elements=["opportunity_id", "employee_id"],
                                               set_={"until": stmt.excluded.until}))


def _active(employee: Employee | None, what: str) -> Employee:
    if employee is None:
        if what == "successor":
            raise DomainError("Choose the successor", field="employee")
        raise DomainError("Choose the salesperson", field="employee")
    if employee.hr_status == HR_RESIGNED:
        raise DomainError("%(name)s has resigned and cannot hold opportunities", field="employee",
                          status=409, name=str(employee))
    return employee


def batch_ids(opportunity_ids) -> list[int]:
    """The opportunity ids of one call, as whole numbers, at least one and at most MAX_BATCH."""
    try:
        ids = sorted({int(i) for i in opportunity_ids or ()})
    except (TypeError, ValueError):
        raise DomainError("Opportunity ids must be whole numbers", field="ids", status=400) from None
    if not ids:
        raise DomainError("Choose at least one opportunity", field="ids", status=400)
    if len(ids) > MAX_BATCH:
        raise DomainError("At most %(limit)s opportunities at a time", field="ids", status=400,
                          limit=MAX_BATCH)
    return ids


def _take(opp: Opportunity, employee: Employee, now: dt.datetime) -> None:
    """Make `employee` the owner (the fields every way of taking ownership sets)."""
    opp.status = OWNED
    opp.owner_id = employee.id
    opp.pool_id = None
    opp.org_unit_id = employee.org_unit_id
    opp.assigned_at = now
    opp.idle_since = now
    opp.dispatch_after = None
    opp.recycle_reminded_at = None
    opp.protected_until = None
    opp.claimed_at = None


# --- claim ------------------------------------------------------------------------------------------
def claim(session, employee: Employee, opportunity_ids, now: dt.datetime, actor=None) -> Moved:
    """Claim pooled opportunities for `employee`: all of them or, if any check fails, none."""
    actor = as_actor(actor)
    ids = batch_ids(opportunity_ids)
    _active(employee, "salesperson")
    opps = lock_opportunities(session, ids)
    require_all(opps, ids)
    emp_path = unit_path(session, employee.org_unit_id)
    allowed_units = set(ancestor_ids(emp_path))
    pools = {p.id: p for p in session.scalars(
        select(Pool).where(Pool.id.in_({o.pool_id for o in opps if o.pool_id})))}
    problems = []
    for opp in opps:
        pool = pools.get(opp.pool_id)
        if opp.status != POOLED or pool is None:
            problems.append(DomainError("#%(id)s is not in a public pool", id=opp.id))
        elif opp.locked:
            problems.append(DomainError("#%(id)s is frozen by a manager", id=opp.id))
        elif (not pool.enabled or pool.org_unit_id not in allowed_units
              or pool.product_line_id not in (None, opp.product_line_id)):
            problems.append(DomainError("#%(id)s is in pool %(pool)s, which you may not claim from",
                                        id=opp.id, pool=pool.name))
    if problems:
        # One refusal per opportunity, each in the request's language, joined with "; ".
        raise DomainError("%(problems)s", field="ids", status=409,
                          problems="; ".join(str(p) for p in problems))
    cooling = dict(session.execute(
        select(OwnerCooling.opportunity_id, OwnerCooling.until)
        .where(OwnerCooling.employee_id == employee.id, OwnerCooling.opportunity_id.in_(ids),
               OwnerCooling.until > now)).all())
    if cooling:
        items = ", ".join(f"#{i} after {clock.format_datetime(until, seconds=False)}"  # business time zone
                          for i, until in sorted(cooling.items()))
        raise DomainError("You held these before and may claim them again only later: %(items)s",
                          field="ids", status=409, items=items)

    # The pools' daily limits: a batch larger than what is left today is refused whole.
    day = clock.local_date(now)
    per_pool = Counter(o.pool_id for o in opps)
    counters = {c.pool_id: c for c in session.scalars(
        select(ClaimCounter).where(ClaimCounter.employee_id == employee.id, ClaimCounter.day == day,
                                   ClaimCounter.pool_id.in_(per_pool))
        .order_by(ClaimCounter.pool_id).execution_options(populate_existing=True).with_for_update())}
    for pool_id, n in sorted(per_pool.items()):
        used = counters[pool_id].claimed if pool_id in counters else 0
        left = max(pools[pool_id].daily_claim_limit - used, 0)
        if n > left:
            raise DomainError(
                "Pool %(pool)s: you may claim %(left)s more today "
                "(limit %(limit)s a day); you asked for %(count)s. Nothing was claimed.",
                field="ids", status=409, pool=pools[pool_id].name, left=left,
                limit=pools[pool_id].daily_claim_limit, count=n)

    # Capacity: never exceeded by a claim.
    rules = RuleCache(session)
    profile = lock_profiles(session, [employee.id])[employee.id]
    load = profile.open_count
    opp_rules = {}
    for opp in opps:
        rule = opp_rules[opp.id] = rules(employee.org_unit_id, opp.product_line_id, opp.intention_level_id)
        load += 1
        capacity = capacity_of(employee, profile, rule)
        if capacity is not None and load > capacity:
            raise DomainError(
                "Capacity: you may hold %(capacity)s opportunities and hold %(held)s; "
                "claiming %(count)s would exceed it. Nothing was claimed.", field="ids", status=409,
                capacity=capacity, held=profile.open_count, count=len(opps))

    # Everything checked: write. The counters first, guarded again in SQL against a concurrent claim.
    for pool_id, n in sorted(per_pool.items()):
        limit = pools[pool_id].daily_claim_limit
        stmt = dialect_insert(session, ClaimCounter).values(
            employee_id=employee.id, pool_id=pool_id, day=day, claimed=n)
        stmt = stmt.on_conflict_do_update(
            index_elements=["employee_id", "pool_id", "day"],
            set_={"claimed": ClaimCounter.claimed + n},
            where=ClaimCounter.claimed + n <= limit,
        ).returning(ClaimCounter.claimed)
        if session.execute(stmt).first() is None:
            raise DomainError("Pool %(pool)s: today's claim limit was reached meanwhile",
                              field="ids", status=409, pool=pools[pool_id].name)
    logs = []
    for opp in opps:
        rule = opp_rules[opp.id]
        from_pool = opp.pool_id
        _take(opp, employee, now)
        opp.claimed_at = now
        if rule is not None and rule.protect_days:
            opp.protected_until = now + dt.timedelta(days=rule.protect_days)
        logs.append(_log_row(now, actor, opp.id, CLAIM, to_owner=employee.id, from_pool=from_pool,
                             rule_id=rule.id if rule else None))
    profile.open_count += len(opps)
    session.flush()
    _log(session, logs)
    return Moved(moved=[o.id for o in opps])


# --- give back --------------------------------------------------------------------------------------
def give_back(session, employee: Employee, opportunity_id: int, reason_text: str | None,
              now: dt.datetime, actor=None) -> Pool:
    """The owner returns an opportunity to the public pool, with a reason; they cool off from it."""
    actor = as_actor(actor)
    reason_text = (reason_text or "").strip()
    if not reason_text:
        raise DomainError("Say why you give it back", field="reason")
    opps = lock_opportunities(session, [opportunity_id])
    require_all(opps, [opportunity_id])
    opp = opps[0]
    if opp.status != OWNED or opp.owner_id != employee.id:
        raise DomainError("#%(id)s is not yours to give back", status=409, id=opp.id)
    if opp.locked:
        raise DomainError("#%(id)s is frozen by a manager and cannot be given back", status=409, id=opp.id)
    path = unit_path(session, opp.org_unit_id)
    rule = circulation_rule_for(session, path, opp.product_line_id, opp.intention_level_id)
    pool = None
    if rule is not None and rule.recycle_to_pool_id:
        pool = session.scalar(select(Pool).where(Pool.id == rule.recycle_to_pool_id, Pool.enabled.is_(True)))
    pool = pool or best_pool(session, path, opp.product_line_id)
    if pool is None:
        raise DomainError("There is no public pool to give it back to: ask an administrator to set "
                          "dispatch.fallback_pool", status=409)
    profile = lock_profiles(session, [employee.id])[employee.id]
    opp.status = POOLED
    opp.owner_id = None
    opp.pool_id = pool.id
    opp.org_unit_id = pool.org_unit_id
    opp.protected_until = None
    opp.recycle_reminded_at = None
    opp.dispatch_after = None
    profile.open_count = max(profile.open_count - 1, 0)
    if rule is not None and rule.cooling_days:
        _cool(session, [{"opportunity_id": opp.id, "employee_id": employee.id,
                         "until": now + dt.timedelta(days=rule.cooling_days)}])
    session.flush()
    _log(session, [_log_row(now, actor, opp.id, GIVE_BACK, from_owner=employee.id, to_pool=pool.id,
                            rule_id=rule.id if rule else None, note=reason_text)])
    return pool


# --- manager: assign, transfer ----------------------------------------------------------------------
def assign(session, opportunity_ids, to_employee: Employee, now: dt.datetime, actor=None,
           note: str | None = None) -> Moved:
    """A manager assigns / reassigns open opportunities (from a pool, waiting, or another owner).

    An override: capacity and cooling do not stop it, but the log says when capacity was exceeded.
    """
    actor = as_actor(actor)
    ids = batch_ids(opportunity_ids)
    _active(to_employee, "salesperson")
    opps = lock_opportunities(session, ids)
    require_all(opps, ids)
    closed = [o.id for o in opps if o.status not in OPEN_STATUSES]
    if closed:
        raise DomainError("Closed (won or lost) opportunities cannot be assigned: %(ids)s", field="ids",
                          status=409, ids=", ".join(f"#{i}" for i in closed))
    result = Moved(skipped=[o.id for o in opps if o.status == OWNED and o.owner_id == to_employee.id])
    opps = [o for o in opps if o.id not in result.skipped]
    if not opps:
        return result
    profiles = lock_profiles(session, [to_employee.id, *{o.owner_id for o in opps if o.status == OWNED}])
    target = profiles[to_employee.id]
    rules = RuleCache(session)
    base_note = (note or "").strip()
    logs = []
    for opp in opps:
        rule = rules(to_employee.org_unit_id, opp.product_line_id, opp.intention_level_id)
        from_owner = opp.owner_id if opp.status == OWNED else None
        from_pool = opp.pool_id if opp.status == POOLED else None
        if from_owner is not None:
            profiles[from_owner].open_count = max(profiles[from_owner].open_count - 1, 0)
        _take(opp, to_employee, now)
        target.open_count += 1
        capacity = capacity_of(to_employee, target, rule)
        text = base_note
        over = None
        if capacity is not None and target.open_count > capacity:
            over = f"override: over capacity ({target.open_count}/{capacity})"
            text = f"{text}; {over}" if text else over
        logs.append(_log_row(now, actor, opp.id, ASSIGN, from_owner=from_owner, to_owner=to_employee.id,
                             from_pool=from_pool, rule_id=rule.id if rule else None, note=text))
        result.moved.append(opp.id)
    if over:
        result.notes.append(over)  # where the batch left them
    session.flush()
    _log(session, logs)
    return result


def transfer_all(session, from_employee: Employee, to_employee: Employee | None, now: dt.datetime,
                 actor=None, note: str | None = None, on_chunk=None, chunk: int = CHUNK) -> Moved:
    """Move every open opportunity `from_employee` owns — e.g. when they resign — to a named successor,
    or (to_employee None) back to waiting for the dispatch engine, the ex-owner cooling off from them.

    Works in chunks of `chunk` opportunities; `on_chunk(moved_so_far)` runs after each (a job may commit
    there: a rerun picks up whatever is still owned, so an interrupted transfer resumes where it stopped).
    """
    actor = as_actor(actor)
    if from_employee is None:
        raise DomainError("Choose whose opportunities to transfer", field="from_employee")
    if to_employee is not None:
        _active(to_employee, "successor")
        if to_employee.id == from_employee.id:
            raise DomainError("The successor must be someone else", field="to_employee")
    result = Moved()
    rules = RuleCache(session)
    text = (note or "").strip() or None
    after = 0
    while True:
        ids = session.scalars(
            select(Opportunity.id)
            .where(Opportunity.owner_id == from_employee.id, Opportunity.status == OWNED,
                   Opportunity.id > after)
            .order_by(Opportunity.id).limit(chunk)).all()
        if not ids:
            break
        after = ids[-1]
        opps = [o for o in lock_opportunities(session, ids)
                if o.status == OWNED and o.owner_id == from_employee.id]
        if not opps:
            continue
        profiles = lock_profiles(session, [from_employee.id, to_employee.id if to_employee else None])
        logs, cooling = [], []
        for opp in opps:
            if to_employee is not None:
                rule = rules(to_employee.org_unit_id, opp.product_line_id, opp.intention_level_id)
                _take(opp, to_employee, now)
                logs.append(_log_row(now, actor, opp.id, TRANSFER, from_owner=from_employee.id,
                                     to_owner=to_employee.id, rule_id=rule.id if rule else None, note=text))
            else:
                rule = rules(opp.org_unit_id, opp.product_line_id, opp.intention_level_id)
                opp.status = WAITING
                opp.owner_id = None
                opp.pool_id = None
                opp.is_recycled = True
                opp.dispatch_after = None
                opp.protected_until = None
                opp.recycle_reminded_at = None
                if rule is not None and rule.cooling_days:
                    cooling.append({"opportunity_id": opp.id, "employee_id": from_employee.id,
                                    "until": now + dt.timedelta(days=rule.cooling_days)})
                logs.append(_log_row(now, actor, opp.id, TRANSFER, from_owner=from_employee.id,
                                     rule_id=rule.id if rule else None,
                                     note=text or "back to waiting for dispatch"))
        moved = len(opps)
        source = profiles[from_employee.id]
        source.open_count = max(source.open_count - moved, 0)
        if to_employee is not None:
            profiles[to_employee.id].open_count += moved
        _cool(session, cooling)
        session.flush()
        _log(session, logs)
        result.moved.extend(o.id for o in opps)
        if on_chunk is not None:
            on_chunk(result)
    if to_employee is not None and result.moved:
        profile = session.get(SalesProfile, to_employee.id)
        rule = rules(to_employee.org_unit_id, None, None)
        capacity = capacity_of(to_employee, profile, rule)
        if capacity is not None and profile.open_count > capacity:
            result.notes.append(f"{to_employee} now holds {profile.open_count}, over capacity {capacity}")
    return result


# --- freezing ---------------------------------------------------------------------------------------
def set_locked(session, opportunity_ids, locked: bool, now: dt.datetime, actor=None) -> Moved:
    """Freeze (or unfreeze) opportunities: circulation and claims leave a frozen one where it is."""
    actor = as_actor(actor)
    ids = batch_ids(opportunity_ids)
    opps = lock_opportunities(session, ids)
    require_all(opps, ids)
    result = Moved()
    for opp in opps:
        if opp.locked == locked:
            result.skipped.append(opp.id)
            continue
        opp.locked = locked
        result.moved.append(opp.id)
    for opp_id in result.moved:
        audit.record(session, "update", target_type="opportunity", target_id=opp_id,
                     summary=f"#{opp_id} {'locked' if locked else 'unlocked'} by {actor.name}",
                     before={"locked": not locked}, after={"locked": locked})
    session.flush()
    return result
