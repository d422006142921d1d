"""Circulation ("forced circulation"): owned opportunities that sit idle go back to be re-dispatched.

Each owned opportunity is governed by the most specific enabled CirculationRule over it (deepest org
unit, then a product line over none, then an intention level over none). A scan, per rule, selects the
opportunities that rule governs and that are due (idle too long, no deal in time, stage not reached in
time), skipping the exempt ones (locked, exempt stages, protected), and recycles them in chunks: back to
waiting (or to the rule's pool) with the ex-owner cooling, one AssignmentLog row each, counters fixed.
Every chunk is its own transaction, so the scan can be killed and run again at any point.

The same rules answer, for one opportunity, which rule governs it (`circulation_rule_for`), when it will
be recycled (`recycle_due_at`) and a salesperson's capacity (`capacity_of`), for the ownership service
and the pages.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import (
    DateTime,
    Integer,
    and_,
    bindparam,
    false,
    literal,
    not_,
    or_,
    select,
    update,
)

from app import clock
from app.clock import utcnow
from app.models.metadata import DictItem, DictType
from app.models.org import OrgUnit
from app.models.sales import (
    OWNED,
    POOLED,
    RECYCLE,
    WAITING,
    AssignmentLog,
    CirculationRule,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.security.scope import subtree_unit_ids
from app.services import inbox
from app.services.org import ancestor_ids, unit_path
from app.services.sql import id_in, upsert_from_select

CHUNK = 5000
DEFAULT_REMIND_HOURS = 24  # the look-ahead of "about to be recycled" when a rule sets no reminder
REMINDER = "recycle_reminder"


@dataclass
class ScanResult:
    recycled: int = 0
    reminded: int = 0
    by_rule: Counter = field(default_factory=Counter)
    reminders: list[dict] = field(default_factory=list)  # {employee_id, opportunity_id, due}: told


def _stage_ids(session) -> dict[str, tuple[int, int]]:
    """stage code → (item id, sort) of the opportunity stage funnel."""
    rows = session.execute(
        select(DictItem.code, DictItem.id, DictItem.sort).join(DictItem.dict_type)
        .where(DictType.code == "opportunity_stage")).all()
    return {code: (item_id, sort) for code, item_id, sort in rows}


def rule_specificity(path: str, product_line_id, intention_level_id, rule_id: int) -> tuple:
    """Sort key, most specific first: deepest org unit, then a product line over none, then an
    intention level over none; the older rule breaks a tie."""
    return (-len(path), product_line_id is None, intention_level_id is None, rule_id)


def _governs(rule: CirculationRule, path: str):
    """SQL: the opportunity falls under this rule's org subtree, product line and intention level."""
    conditions = [Opportunity.org_unit_id.in_(subtree_unit_ids(path))]
    if rule.product_line_id is not None:
        conditions.append(Opportunity.product_line_id == rule.product_line_id)
    if rule.intention_level_id is not None:
        conditions.append(Opportunity.intention_level_id == rule.intention_level_id)
    return and_(*conditions)


def ordered_rules(session) -> list[tuple[CirculationRule, str]]:
    """Enabled rules with their org paths, most specific first."""
    rows = session.execute(
        select(CirculationRule, OrgUnit.path)
        .join(OrgUnit, OrgUnit.id == CirculationRule.org_unit_id)
        .where(CirculationRule.enabled.is_(True))).all()
    rows.sort(key=lambda r: rule_specificity(r[1], r[0].product_line_id, r[0].intention_level_id, r[0].id))
    return [(rule, path) for rule, path in rows]


def circulation_rule_for(session, org_unit_path: str | None, product_line_id: int | None,
                         intention_level_id: int | None) -> CirculationRule | None:
    """The most specific enabled rule for opportunities of that org unit, product line and intention."""
    units = ancestor_ids(org_unit_path)
    if not units:
        return None
    rows = session.execute(
        select(CirculationRule, OrgUnit.path)
        .join(OrgUnit, OrgUnit.id == CirculationRule.org_unit_id)
        .where(CirculationRule.enabled.is_(True), CirculationRule.org_unit_id.in_(units),
               or_(CirculationRule.product_line_id.is_(None),
                   CirculationRule.product_line_id == product_line_id),
               or_(CirculationRule.intention_level_id.is_(None),
                   CirculationRule.intention_level_id == intention_level_id))
    ).all()
    if not rows:
        return None
    rule, _ = min(rows, key=lambda r: rule_specificity(r[1], r[0].product_line_id, r[0].intention_level_id,
                                                       r[0].id))
    return rule


class RuleCache:
    """circulation_rule_for, asked once per (unit, product line, intention level) within one call:
    `rules(unit_id, product_line_id, intention_level_id)`."""

    def __init__(self, session):
        self.session = session
        self.paths: dict[int, str | None] = {}
        self.rules: dict[tuple, CirculationRule | None] = {}

    def path(self, unit_id):
        if unit_id not in self.paths:
            self.paths[unit_id] = unit_path(self.session, unit_id)
        return self.paths[unit_id]

    def __call__(self, unit_id, product_line_id, intention_level_id):
        key = (unit_id, product_line_id, intention_level_id)
        if key not in self.rules:
            self.rules[key] = circulation_rule_for(self.session, self.path(unit_id), product_line_id,
                                                   intention_level_id)
        return self.rules[key]


def rule_of(session, opp: Opportunity) -> CirculationRule | None:
    """The rule governing this opportunity where it is now."""
    return circulation_rule_for(session, unit_path(session, opp.org_unit_id), opp.product_line_id,
                                opp.intention_level_id)


def recycle_due_at(session, opp: Opportunity, rule: CirculationRule | None,
                   stages: dict | None = None) -> dt.datetime | None:
    """When the idle rule would take this owned opportunity back (None: it will not); `stages`:
    `_stage_ids` read once by a caller asking for many rows."""
    if opp.status != OWNED or opp.locked or rule is None or not rule.idle_days or opp.idle_since is None:
        return None
    if rule.exempt_stages and opp.stage_id in _exempt_stage_ids(rule, stages or _stage_ids(session)):
        return None
    due = opp.idle_since + dt.timedelta(days=rule.idle_days)
    return max(due, opp.protected_until) if opp.protected_until else due


def remind_window(rule: CirculationRule) -> dt.timedelta:
    """How long before recycling the owner is reminded (and the opportunity shows "about to be recycled")."""
    hours = rule.remind_hours if rule.remind_hours is not None else DEFAULT_REMIND_HOURS
    return dt.timedelta(hours=hours)


def capacity_of(employee, profile: SalesProfile | None, rule: CirculationRule | None) -> int | None:
    """The employee's capacity (库容): their personal override, else the rule's capacity for their level."""
    if profile is not None and profile.capacity is not None:
        return profile.capacity
    if rule is None:
        return None
    if rule.capacity_by_level and employee.level is not None:
        try:
            levels = json.loads(rule.capacity_by_level)
        except ValueError:
            levels = {}
        if isinstance(levels, dict) and levels.get(employee.level.code) is not None:
            return int(levels[employee.level.code])
    return rule.capacity


def _exempt_stage_ids(rule: CirculationRule, stages: dict) -> list[int]:
    codes = [c.strip() for c in (rule.exempt_stages or "").split(",") if c.strip()]
    return [stages[c][0] for c in codes if c in stages]


def _due(rule: CirculationRule, now: dt.datetime, stages: dict, lead_time: dt.timedelta = dt.timedelta()):
    """SQL: the rule's recycle conditions, `lead_time` ahead of now (for reminders)."""
    at = now + lead_time
    reasons = []
    if rule.idle_days:
        reasons.append(Opportunity.idle_since < at - dt.timedelta(days=rule.idle_days))
    if rule.no_deal_days:
        reasons.append(Opportunity.assigned_at < at - dt.timedelta(days=rule.no_deal_days))
    if rule.stage_deadline_days and rule.target_stage_id:
        before = _stages_before(rule, stages)
        if before:
            reasons.append(and_(Opportunity.stage_id.in_(before),
                                Opportunity.assigned_at < at - dt.timedelta(days=rule.stage_deadline_days)))
    return or_(*reasons) if reasons else false()


def _stages_before(rule: CirculationRule, stages: dict) -> list[int]:
    """The stage ids before the rule's target stage (what "stage not reached in time" counts)."""
    target_sort = next((s for i, s in stages.values() if i == rule.target_stage_id), None)
    return [i for i, s in stages.values() if target_sort is not None and s < target_sort]


def _exempt(rule: CirculationRule, at: dt.datetime, stages: dict):
    exempt_ids = _exempt_stage_ids(rule, stages)
    conditions = [Opportunity.locked.is_(True),
                  and_(Opportunity.protected_until.is_not(None), Opportunity.protected_until > at)]
    if exempt_ids:  # (a NULL stage must read as "not exempt", not as unknown)
        conditions.append(and_(Opportunity.stage_id.is_not(None), Opportunity.stage_id.in_(exempt_ids)))
    return or_(*conditions)


def _candidates(rule, path, more_specific, now, stages, lead_time=dt.timedelta()):
    query = select(Opportunity.id, Opportunity.owner_id, Opportunity.idle_since).where(
        Opportunity.status == OWNED,
        _governs(rule, path),
        _due(rule, now, stages, lead_time),
        not_(_exempt(rule, now + lead_time, stages)),
    )
    for other, other_path in more_specific:
        query = query.where(not_(_governs(other, other_path)))
    return query


def _recycle_chunk(session, rule: CirculationRule, rows, now: dt.datetime) -> int:
    """Recycle one chunk with four set-based statements over rows this transaction has locked."""
    conn = session.connection()
    opp = Opportunity.__table__
    ids = [r.id for r in rows]
    chosen = and_(id_in(opp.c.id, ids, conn.dialect.name), opp.c.status == OWNED)  # re-checked
    to_pool = rule.recycle_to_pool_id
    trace = json.dumps({"rule": rule.id, "name": rule.name}, ensure_ascii=False, separators=(",", ":"))
    log = AssignmentLog.__table__
    conn.execute(log.insert().from_select(
        ["created_at", "opportunity_id", "reason", "from_owner_id", "to_pool_id", "circulation_rule_id",
         "actor_name", "trace"],
        select(literal(now), opp.c.id, literal(RECYCLE), opp.c.owner_id, literal(to_pool, Integer),
               literal(rule.id), literal("circulation"), literal(trace)).where(chosen)))
    if rule.cooling_days:
        upsert_from_select(conn, OwnerCooling.__table__, ["opportunity_id", "employee_id", "until"],
                           select(opp.c.id, opp.c.owner_id,
                                  literal(now + dt.timedelta(days=rule.cooling_days), DateTime))
                           .where(chosen, opp.c.owner_id.is_not(None)),
                           ["opportunity_id", "employee_id"], ["until"])
    # The rows are locked, so their owners as read are the owners that lose them.
    per_owner = Counter(r.owner_id for r in rows if r.owner_id is not None)
    if per_owner:
        profile = SalesProfile.__table__
        conn.execute(update(profile).where(profile.c.employee_id == bindparam("eid"))
                     .values(open_count=profile.c.open_count - bindparam("n")),
                     [{"eid": e, "n": n} for e, n in sorted(per_owner.items())])  # id order: no deadlock
    values = {"status": POOLED if to_pool else WAITING, "owner_id": None, "pool_id": to_pool,
              "is_recycled": True, "recycle_count": opp.c.recycle_count + 1, "dispatch_after": None,
              "protected_until": None, "recycle_reminded_at": None, "updated_at": now}
    if to_pool:
        values["org_unit_id"] = select(Pool.org_unit_id).where(Pool.id == to_pool).scalar_subquery()
    return conn.execute(update(opp).where(chosen).values(**values)).rowcount


def scan(session, now: dt.datetime | None = None, chunk: int = CHUNK) -> ScanResult:
    """Recycle every due opportunity and send the reminders; commits chunk by chunk."""
    now = now or utcnow()
    stages = _stage_ids(session)
    rules = ordered_rules(session)
    result = ScanResult()
    lock = session.get_bind().dialect.name == "postgresql"
    for index, (rule, path) in enumerate(rules):
        more_specific = rules[:index]
        while True:
            query = _candidates(rule, path, more_specific, now, stages).limit(chunk)
            if lock:
                query = query.with_for_update(skip_locked=True, of=Opportunity)
            rows = session.execute(query).all()
            if not rows:
                session.rollback()
                break
            n = _recycle_chunk(session, rule, rows, now)
            session.commit()
            result.recycled += n
            result.by_rule[rule.id] += n
            if len(rows) < chunk:
                break
        if rule.remind_hours:
            result.reminded += _remind(session, rule, path, more_specific, now, stages, result)
    return result


def _remind(session, rule, path, more_specific, now, stages, result: ScanResult) -> int:
    """Mark (once) the opportunities that will be recycled within the rule's reminder window, and tell
    their owners in the same transaction: "N of your opportunities will be recycled on <date>", one
    notification a day per owner (app.services.inbox)."""
    window = dt.timedelta(hours=rule.remind_hours)
    soon = _candidates(rule, path, more_specific, now, stages, window).where(
        Opportunity.recycle_reminded_at.is_(None)).add_columns(
        Opportunity.assigned_at, Opportunity.protected_until, Opportunity.stage_id)
    rows = session.execute(soon.limit(CHUNK)).all()
    if not rows:
        session.rollback()
        return 0
    session.execute(update(Opportunity).where(Opportunity.id.in_([r.id for r in rows]))
                    .values(recycle_reminded_at=now).execution_options(synchronize_session=False))
    before = _stages_before(rule, stages) if rule.stage_deadline_days and rule.target_stage_id else []
    owners: dict[int, tuple[int, dt.date]] = {}
    for r in rows:
        due = _recycled_at(rule, r, now, now + window, before)
        result.reminders.append({"employee_id": r.owner_id, "opportunity_id": r.id, "due": due})
        count, date = owners.get(r.owner_id, (0, None))
        day = clock.local_date(due)
        owners[r.owner_id] = (count + 1, min(date, day) if date else day)
    inbox.remind_recycling(session, owners, now)
    session.commit()
    return len(rows)


def _recycled_at(rule: CirculationRule, row, now: dt.datetime, at: dt.datetime, before: list[int]
                 ) -> dt.datetime:
    """When the scan will recycle this reminded row: the first of the rule's reasons that falls due
    within the window, not before its protection ends (nor before now)."""
    reasons = []
    if rule.idle_days and row.idle_since is not None:
        reasons.append(row.idle_since + dt.timedelta(days=rule.idle_days))
    if rule.no_deal_days and row.assigned_at is not None:
        reasons.append(row.assigned_at + dt.timedelta(days=rule.no_deal_days))
    if before and row.stage_id in before and row.assigned_at is not None:
        reasons.append(row.assigned_at + dt.timedelta(days=rule.stage_deadline_days))
    due = min((t for t in reasons if t <= at), default=at)
    if row.protected_until is not None:
        due = max(due, row.protected_until)
    return max(due, now)


def due_within(session, now: dt.datetime, lead_time: dt.timedelta | None = None):
    """SQL condition: owned opportunities the scan will recycle by `now + lead_time` (by default each
    rule's own reminder window): what the workbench calls "about to be recycled"."""
    stages = _stage_ids(session)
    rules = ordered_rules(session)
    branches = []
    for index, (rule, path) in enumerate(rules):
        window = lead_time if lead_time is not None else dt.timedelta(
            hours=rule.remind_hours if rule.remind_hours is not None else DEFAULT_REMIND_HOURS)
        due = _candidates(rule, path, rules[:index], now, stages, window).with_only_columns(Opportunity.id)
        branches.append(Opportunity.id.in_(due))
    return or_(*branches) if branches else false()
