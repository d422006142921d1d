"""The dispatch engine: places waiting opportunities with salespeople (or pools) by rule and strategy.

One batch is one transaction:
  1. take up to N waiting opportunities, locked with FOR UPDATE SKIP LOCKED (concurrent workers get
     disjoint batches; SQLite, a single writer, needs no lock);
  2. lock the matched rules and their members' sales profiles (in id order: no deadlocks), and read
     the counters they guard (open opportunities, today's dispatches, strategy state), the batch's
     membership of the segments the rules match on (one query per segment) and, when a score-aware
     rule is in force, the conversion rates (one aggregate query; app.services.dispatch_score);
  3. plan every assignment in memory (app.services.dispatch_plan, also used by the dry-run);
  4. write set-wise: the opportunities, their AssignmentLog rows with the trace, the counters.
A worker killed at any point loses nothing: the transaction rolls back and the rows are waiting again.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update

from app import clock
from app.clock import utcnow
from app.models.bigdata import Segment
from app.models.employee import HR_ACTIVE, Employee
from app.models.org import OrgUnit
from app.models.sales import (
    DISPATCH,
    LEAST_LOADED,
    OWNED,
    POOLED,
    ROUND_ROBIN,
    SCORE_AWARE,
    TO_POOL,
    WAITING,
    WEIGHTED,
    AssignmentLog,
    CirculationRule,
    DispatchRule,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.services import dispatch_score, metadata, reference
from app.services.dispatch_plan import ON_LEAVE, PAUSED, RESIGNED, Context, Decision, Member, RulePlan, plan

BATCH_SIZE = 2000
HOLD = dt.timedelta(minutes=10)  # an opportunity no rule could place waits this long before a retry
DEFAULT_HOURS = reference.default("dispatch.working_hours")  # in the business time zone (app.clock)


@dataclass
class BatchResult:
    taken: int = 0
    assigned: int = 0
    pooled: int = 0
    held: int = 0
    batch: str = ""


# --- loading ----------------------------------------------------------------------------------------
_OPP_COLUMNS = (Opportunity.id, Opportunity.source_id, Opportunity.campaign, Opportunity.product_line_id,
                Opportunity.region, Opportunity.intention_level_id, Opportunity.is_recycled,
                Opportunity.win_probability)
SUBSTITUTED = (ROUND_ROBIN, WEIGHTED, LEAST_LOADED)  # the dry run's "score-aware instead" replaces these


def _waiting(now):
    return and_(Opportunity.status == WAITING,
                or_(Opportunity.dispatch_after.is_(None), Opportunity.dispatch_after <= now))


def working_hours(session) -> dict:
    hours = metadata.config_value(session, "dispatch.working_hours", None) or {}
    return {**DEFAULT_HOURS, **(hours if isinstance(hours, dict) else {})}


def in_working_hours(hours: dict, now_utc: dt.datetime) -> bool:
    local = clock.to_local(now_utc)
    start, end = (dt.time.fromisoformat(hours[k]) for k in ("start", "end"))
    return start <= local.time() < end


def _capacities(session, employees: list[tuple]) -> dict[int, int | None]:
    """Capacity of each employee: the deepest enabled circulation rule over their unit that sets one."""
    rules = session.execute(
        select(CirculationRule.capacity, CirculationRule.capacity_by_level, OrgUnit.path)
        .join(OrgUnit, OrgUnit.id == CirculationRule.org_unit_id)
        .where(CirculationRule.enabled.is_(True),
               or_(CirculationRule.capacity.is_not(None), CirculationRule.capacity_by_level.is_not(None)))
    ).all()
    rules = sorted(rules, key=lambda r: -len(r.path))
    result = {}
    for emp_id, unit_path, level_code in employees:
        result[emp_id] = None
        for capacity, by_level, path in rules:
            if unit_path.startswith(path):
                levels = json.loads(by_level) if by_level else {}
                result[emp_id] = levels.get(level_code, capacity)
                if result[emp_id] is not None:
                    break
    return result


def load_context(session, now: dt.datetime, opportunity_ids: list[int], lock: bool,
                 rng: random.Random | None = None, score_aware: bool = False, rates: bool = False) -> Context:
    """Rules, members with their counters, pools, cooling, segment membership and (for score-aware rules,
    or when `rates`) conversion rates for one batch (locked when `lock`). `score_aware`: plan the
    round-robin, weighted and least-loaded rules as score-aware ones (the dry run's comparison)."""
    # populate_existing: the rows just read (and locked) win over copies the session may already hold.
    rule_query = (select(DispatchRule).where(DispatchRule.enabled.is_(True)).order_by(DispatchRule.id)
                  .execution_options(populate_existing=True))
    if lock:
        rule_query = rule_query.with_for_update()
    rules = sorted(session.scalars(rule_query).all(), key=lambda r: (r.priority, r.id))
    units = {r.target_org_unit_id for r in rules if r.target_org_unit_id}
    paths = dict(session.execute(select(OrgUnit.id, OrgUnit.path).where(OrgUnit.id.in_(units))).all())
    from app.models.metadata import DictItem

    rows = []
    if paths:
        # Columns, not entities: a SalesProfile entity drags in its employee's eager joins, and a session
        # that already holds the rows would hand back its stale copies instead of the locked ones.
        member_query = (
            select(SalesProfile.employee_id, SalesProfile.paused, SalesProfile.weight, SalesProfile.capacity,
                   SalesProfile.open_count, SalesProfile.daily_quota, SalesProfile.dispatched_today,
                   SalesProfile.quota_day, Employee.name, Employee.org_unit_id, Employee.hr_status,
                   OrgUnit.path, DictItem.code)
            .join(Employee, Employee.id == SalesProfile.employee_id)
            .join(OrgUnit, OrgUnit.id == Employee.org_unit_id)
            .outerjoin(DictItem, DictItem.id == Employee.level_id)
            .where(or_(*[OrgUnit.path.startswith(p) for p in paths.values()]))
            .order_by(SalesProfile.employee_id)
        )
        if lock:
            member_query = member_query.with_for_update(of=SalesProfile)
        rows = session.execute(member_query).all()
    capacities = _capacities(session, [(r.employee_id, r.path, r.code) for r in rows])
    hours = working_hours(session)
    open_now = in_working_hours(hours, now)
    today = clock.local_date(now)  # daily quotas reset at midnight in the business time zone
    members_by_path = []
    for profile in rows:
        name, unit_id, hr_status, path = profile.name, profile.org_unit_id, profile.hr_status, profile.path
        unavailable = None
        if hr_status != HR_ACTIVE:
            unavailable = ON_LEAVE if hr_status == "on_leave" else RESIGNED
        elif profile.paused:
            unavailable = PAUSED
        capacity = profile.capacity if profile.capacity is not None else capacities.get(profile.employee_id)
        members_by_path.append((path, Member(
            id=profile.employee_id, name=name, org_unit_id=unit_id, weight=max(profile.weight, 0),
            capacity=capacity, open_count=profile.open_count, daily_quota=profile.daily_quota,
            dispatched_today=profile.dispatched_today if profile.quota_day == today else 0,
            unavailable=unavailable)))
    plans = []
    for rule in rules:
        path = paths.get(rule.target_org_unit_id)
        # One Member object per employee, shared by every rule that reaches them: one set of counters.
        members = [m for member_path, m in members_by_path if path and member_path.startswith(path)]
        state = json.loads(rule.state) if rule.state else {}
        override = SCORE_AWARE if score_aware and rule.strategy in SUBSTITUTED else None
        plans.append(RulePlan(rule, members, state, override))
    if not open_now:
        for plan in plans:
            if plan.rule.working_hours_only:
                plan.state["_off_hours"] = True
    cooling: dict[int, set[int]] = defaultdict(set)
    if opportunity_ids:
        # A range, not IN (2,000 ids): the batch is taken in id order, and cooling rows are few.
        wanted = set(opportunity_ids)
        for opp_id, emp_id in session.execute(
            select(OwnerCooling.opportunity_id, OwnerCooling.employee_id)
            .where(OwnerCooling.opportunity_id.between(min(wanted), max(wanted)), OwnerCooling.until > now)
        ):
            if opp_id in wanted:
                cooling[opp_id].add(emp_id)
    pool_units = dict(session.execute(select(Pool.id, Pool.org_unit_id).where(Pool.enabled.is_(True))).all())
    fallback_name = metadata.config_value(session, "dispatch.fallback_pool", None)
    fallback = session.scalar(select(Pool.id).where(Pool.name == fallback_name)) if fallback_name else None
    segments = {}
    segment_ids = {r.match_segment_id for r in rules if r.match_segment_id is not None}
    if segment_ids and opportunity_ids:
        from app.services.segments import opportunities_among

        for segment in session.scalars(select(Segment).where(Segment.id.in_(segment_ids))):
            segments[segment.id] = opportunities_among(session, segment, opportunity_ids, now)
    conversion = None
    if rates or any(p.strategy == SCORE_AWARE for p in plans):
        days = metadata.config_value(session, "dispatch.conversion_days", None) or 90
        conversion = dispatch_score.load_rates(session, now, [m.id for _, m in members_by_path], int(days))
    return Context(plans, fallback, pool_units, cooling, rng or random.Random(), segments, conversion)


# --- the batch --------------------------------------------------------------------------------------
def take_batch(session, now: dt.datetime, limit: int) -> list:
    query = select(*_OPP_COLUMNS).where(_waiting(now)).order_by(Opportunity.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Opportunity)
    return session.execute(query).all()


def dispatch_batch(session, now: dt.datetime | None = None, limit: int = BATCH_SIZE,
                   rng: random.Random | None = None) -> BatchResult:
    """Dispatch one batch and commit it."""
    now = now or utcnow()
    batch = uuid.uuid4().hex[:12]
    opportunities = take_batch(session, now, limit)
    result = BatchResult(taken=len(opportunities), batch=batch)
    if not opportunities:
        session.rollback()
        return result
    ctx = load_context(session, now, [o.id for o in opportunities], lock=True, rng=rng)
    decisions = plan(opportunities, ctx, batch)
    _write(session, decisions, ctx, now)
    session.commit()
    result.assigned = sum(1 for d in decisions if d.to_owner)
    result.pooled = sum(1 for d in decisions if d.to_pool_id)
    result.held = sum(1 for d in decisions if d.held)
    return result


def _set_rows(conn, table, rows: list[dict], values: dict) -> None:
    """UPDATE the waiting opportunities rows[i]["id"] with rows[i]'s columns and the shared `values`.

    PostgreSQL gets one statement (the rows as one JSON document, read by json_to_recordset): a statement
    per row costs a round trip each even when pipelined. Elsewhere an executemany (SQLite runs it
    in-process). Every per-row column is an integer.
    """
    if not rows:
        return
    names = [c for c in rows[0] if c != "id"]
    if conn.dialect.name == "postgresql":
        sets = [f"{c} = v.{c}" for c in names] + [f"{c} = :s_{c}" for c in values]
        result = conn.execute(text(
            f"UPDATE {table.name} AS t SET {', '.join(sets)} "
            f"FROM json_to_recordset(CAST(:rows AS json)) AS v({', '.join(c + ' integer' for c in rows[0])}) "
            f"WHERE t.id = v.id AND t.status = :waiting"
        ).bindparams(*[bindparam(f"s_{c}", type_=table.c[c].type) for c in values]),
            {"rows": json.dumps(rows, separators=(",", ":")), "waiting": WAITING,
             **{f"s_{c}": v for c, v in values.items()}})
    else:
        result = conn.execute(update(table).where(table.c.id == bindparam("oid"), table.c.status == WAITING)
                              .values(**{c: bindparam(f"v_{c}") for c in names}, **values),
                              [{"oid": r["id"], **{f"v_{c}": r[c] for c in names}} for r in rows])
    if result.rowcount != len(rows):
        # Someone else moved one of these rows meanwhile (they are locked on PostgreSQL, so only an
        # unlocked database can get here): give the whole batch up rather than log what did not happen.
        raise RuntimeError(f"dispatch: {len(rows) - result.rowcount} of {len(rows)} opportunities "
                           "were no longer waiting; batch rolled back")


_LOG_COLUMNS = ("opportunity_id", "reason", "to_owner_id", "to_pool_id", "dispatch_rule_id")


def _insert_logs(conn, rows: list[tuple], traces: list[str], created_at: dt.datetime, actor: str) -> None:
    """INSERT AssignmentLog rows: `rows` hold the _LOG_COLUMNS, `traces` the trace JSON of each."""
    if not rows:
        return
    table = AssignmentLog.__table__
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), [{**dict(zip(_LOG_COLUMNS, row, strict=True)), "trace": trace,
                                      "created_at": created_at, "actor_name": actor}
                                     for row, trace in zip(rows, traces, strict=True)])
        return
    # One INSERT … SELECT from two JSON arrays paired by position: the columns (one json.dumps) and the
    # traces, already JSON, spliced in as they are (a json value keeps its text): no per-row escaping.
    conn.execute(text(
        f"INSERT INTO {table.name} (created_at, actor_name, {', '.join(_LOG_COLUMNS)}, trace) "
        "SELECT :created_at, :actor, (c.v->>0)::integer, c.v->>1, (c.v->>2)::integer, (c.v->>3)::integer, "
        "(c.v->>4)::integer, t.v::text "
        "FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS c(v, n) "
        "JOIN json_array_elements(CAST(:traces AS json)) WITH ORDINALITY AS t(v, n) ON t.n = c.n"
    ).bindparams(bindparam("created_at", type_=table.c.created_at.type)),
        {"created_at": created_at, "actor": actor, "rows": json.dumps(rows, separators=(",", ":")),
         "traces": f"[{','.join(traces)}]"})


def _trace_texts(decisions: list[Decision]) -> list[str]:
    """The traces as JSON. Decisions of one rule share their candidate list and (until someone fills up)
    their exclusions: each shared part is serialised once, and only the choice is added per decision."""
    heads: dict[tuple, str] = {}
    texts = []
    for d in decisions:
        trace = d.trace
        key = tuple((k, id(v) if isinstance(v, (dict, list)) else v)
                    for k, v in trace.items() if k != "chosen")
        head = heads.get(key)
        if head is None:
            head = heads[key] = json.dumps({k: v for k, v in trace.items() if k != "chosen"},
                                           separators=(",", ":"))
        texts.append(head if "chosen" not in trace else f'{head[:-1]},"chosen":{trace["chosen"]}}}')
    return texts


def _write(session, decisions: list[Decision], ctx: Context, now: dt.datetime) -> None:
    owned = [d for d in decisions if d.to_owner]
    pooled = [d for d in decisions if d.to_pool_id]
    held = [d for d in decisions if d.held]
    conn = session.connection()
    table = Opportunity.__table__
    _set_rows(conn, table,
              [{"id": d.opportunity_id, "owner_id": d.to_owner.id, "org_unit_id": d.to_owner.org_unit_id}
               for d in owned],
              {"status": OWNED, "pool_id": None, "assigned_at": now, "idle_since": now,
               "dispatch_after": None, "updated_at": now})
    _set_rows(conn, table,
              [{"id": d.opportunity_id, "pool_id": d.to_pool_id,
                "org_unit_id": ctx.pool_units.get(d.to_pool_id)} for d in pooled],
              {"status": POOLED, "owner_id": None, "dispatch_after": None, "updated_at": now})
    _set_rows(conn, table, [{"id": d.opportunity_id} for d in held],
              {"dispatch_after": now + HOLD, "updated_at": now})
    placed = [d for d in decisions if not d.held]
    _insert_logs(conn, [(d.opportunity_id, DISPATCH if d.to_owner else TO_POOL,
                         d.to_owner.id if d.to_owner else None, d.to_pool_id, d.rule_id) for d in placed],
                 _trace_texts(placed), now, "dispatch")
    members = {d.to_owner.id: d.to_owner for d in owned}
    if members:
        # The profiles are locked for this batch: the in-memory counters are the truth.
        profile = SalesProfile.__table__
        counters = [{"eid": m.id, "open_count": m.open_count, "dispatched_today": m.dispatched_today}
                    for m in members.values()]
        if conn.dialect.name == "postgresql":
            conn.execute(text(
                "UPDATE sales_profile AS p SET open_count = v.open_count, "
                "dispatched_today = v.dispatched_today, quota_day = :day "
                "FROM json_to_recordset(CAST(:rows AS json)) "
                "AS v(eid integer, open_count integer, dispatched_today integer) WHERE p.employee_id = v.eid"
            ).bindparams(bindparam("day", type_=profile.c.quota_day.type)),
                {"rows": json.dumps(counters), "day": clock.local_date(now)})
        else:
            conn.execute(update(profile).where(profile.c.employee_id == bindparam("eid"))
                         .values(quota_day=clock.local_date(now)), counters)
    touched = {d.rule_id for d in owned}
    for rule_plan in ctx.rules:
        if rule_plan.rule.id in touched:
            state = {k: v for k, v in rule_plan.state.items() if not k.startswith("_")}
            rule_plan.rule.state = json.dumps(state, separators=(",", ":"))
    session.flush()


def dispatch_waiting(session, max_batches: int | None = None, limit: int = BATCH_SIZE,
                     progress=None) -> BatchResult:
    """Dispatch batch after batch until nothing is waiting (or `max_batches`)."""
    total = BatchResult()
    done = 0
    while max_batches is None or done < max_batches:
        result = dispatch_batch(session, limit=limit)
        done += 1
        if not result.taken:
            break
        total.taken += result.taken
        total.assigned += result.assigned
        total.pooled += result.pooled
        total.held += result.held
        if progress:
            progress(total)
        if result.taken < limit:
            break
    return total


# --- dry run ----------------------------------------------------------------------------------------
def simulate(session, now: dt.datetime | None = None, limit: int = 100_000, seed: int = 0) -> dict:
    """How the current rules would dispatch what is waiting now, and the expected wins of that against
    the same rules planned score-aware (app.services.dispatch_score); writes nothing."""
    now = now or utcnow()
    opportunities = session.execute(
        select(*_OPP_COLUMNS).where(_waiting(now)).order_by(Opportunity.id).limit(limit)).all()
    ids = [o.id for o in opportunities]
    ctx = load_context(session, now, ids, lock=False, rng=random.Random(seed), rates=True)
    decisions = plan(opportunities, ctx, "dry-run")
    session.rollback()  # nothing planned above may reach the database
    alternative = load_context(session, now, ids, lock=False, rng=random.Random(seed), score_aware=True,
                               rates=True)
    alternative_decisions = plan(opportunities, alternative, "dry-run")
    session.rollback()
    chances = dispatch_score.probabilities(opportunities, ctx.rates)
    current = dispatch_score.expected_wins(decisions, chances, opportunities, ctx)
    scored = dispatch_score.expected_wins(alternative_decisions, chances, opportunities, alternative)
    names = {m.id: m.name for p in ctx.rules for m in p.members}
    teams = dict(session.execute(select(OrgUnit.id, OrgUnit.name)).all())
    pools = dict(session.execute(select(Pool.id, Pool.name)).all())
    rules = {p.rule.id: p.rule.name for p in ctx.rules}
    per_person, per_team, per_rule, per_pool, excluded = Counter(), Counter(), Counter(), Counter(), Counter()
    for d in decisions:
        per_rule[rules.get(d.rule_id, "—")] += 1
        if d.to_owner:
            per_person[(d.to_owner.id, names[d.to_owner.id], teams.get(d.to_owner.org_unit_id))] += 1
            per_team[teams.get(d.to_owner.org_unit_id)] += 1
        elif d.to_pool_id:
            per_pool[pools.get(d.to_pool_id)] += 1
        for reason in d.trace.get("excluded", {}).values():
            excluded[reason] += 1
    return {
        "waiting": len(opportunities),
        "assigned": sum(per_person.values()),
        "pooled": sum(per_pool.values()),
        "held": sum(1 for d in decisions if d.held),
        "per_rule": dict(per_rule),
        "per_team": dict(per_team.most_common()),
        "per_pool": dict(per_pool),
        "per_person": [{"employee_id": k[0], "name": k[1], "team": k[2], "count": n}
                       for k, n in per_person.most_common()],
        "exclusions": dict(excluded),
        "samples": [d.trace | {"opportunity_id": d.opportunity_id} for d in decisions[:20]],
        "expected_wins": {
            "current": round(current, 2), "score_aware": round(scored, 2),
            "difference": round(scored - current, 2),
            "percent": round(100 * (scored - current) / current, 1) if current else None,
            "conversion_days": ctx.rates.days if ctx.rates else None,
        },
        "score_aware_samples": [d.trace | {"opportunity_id": d.opportunity_id}
                                for d in alternative_decisions if "score" in d.trace][:20],
    }


def waiting_count(session, now: dt.datetime | None = None) -> int:
    return session.scalar(select(func.count(Opportunity.id)).where(_waiting(now or utcnow())))
