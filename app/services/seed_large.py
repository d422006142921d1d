"""Demo data with a past (`flask crm seed-demo --size large`): 90 days of sales-floor history on top of the
demo organisation (app.services.seed), so every dashboard tile has something to show.

About 30,000 opportunities (one lead each, a few customers with two product lines), dispatched to the
salespeople of the product line's teams, then played forward in time through the funnel
new → contacted → interested → trial → negotiating → won (each step a chance that depends on the
salesperson's and the team's skill; a few per cent are won), with the follow-ups and calls (connected ones
with talk time, unanswered attempts, some QA-inspected) each step takes; idle ones are recycled into the
product line's public pool after the circulation rule's 7 days, and some of those are claimed again; some
are lost; what is still open now waits for its next follow-up (some overdue). SMS campaigns every two
weeks, with deliveries, failures, opt-outs and their cost (app.services.seed_large_sms).

Deterministic (a fixed random seed, times relative to `now`), fast (every row built in Python, then
written with multi-row INSERTs in chunks, ids assigned here and the PostgreSQL sequences moved past
them) and idempotent: the first large lead's client key marks it done, so a second run adds nothing.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict

from sqlalchemy import func, insert, select, text

from app import clock
from app.models.calls import CallCounter, CallLine, CallNumber, CallRecord, Seat
from app.models.employee import Employee
from app.models.metadata import DictItem, DictType
from app.models.org import OrgUnit
from app.models.qa import QaInspection, QaScorecard
from app.models.sales import (
    AssignmentLog,
    CirculationRule,
    ClaimCounter,
    Customer,
    DispatchRule,
    FollowUp,
    Lead,
    Opportunity,
    Pool,
    SalesProfile,
)
from app.services import seed
from app.services.seed_large_activity import Activity

LARGE_COUNT = 30_000
DAYS = 90
MARKER = "demo-large:0"  # the client key of the first large lead: present ⇒ already seeded
CHUNK = 2000

# product line → (its weight among new leads, the teams that sell it, its public pool)
LINES = {"k12_math": (35, ("T-K12-1", "T-K12-2"), "K12 公海"),
         "k12_english": (25, ("T-K12-1", "T-K12-2"), "K12 公海"),
         "adult_english": (22, ("T-ADULT-1", "T-ADULT-2"), "成人英语公海"),
         "programming": (18, ("T-CODE-1", "T-CODE-2"), "少儿编程公海")}
SOURCES = {"douyin": 30, "baidu": 20, "web_form": 18, "wechat": 15, "referral": 10, "offline": 7}
CAMPAIGN_NAMES = {"douyin": "抖音信息流", "baidu": "百度搜索", "web_form": "官网试听", "wechat": "公众号",
                  "referral": "老带新", "offline": "线下地推"}
LEVELS = {"A": 15, "B": 35, "C": 38, "D": 12}
LEVEL_FACTOR = {"A": 1.35, "B": 1.1, "C": 0.85, "D": 0.6}
REGIONS = {"上海": 22, "北京": 20, "广州": 15, "深圳": 13, "成都": 10, "杭州": 10, "武汉": 10}
STEPS = ("contacted", "interested", "trial", "negotiating", "won")  # after "new"
P_STEP = (0.84, 0.45, 0.42, 0.52, 0.44)  # base chance of reaching each of them from the one before
GAP_DAYS = (0.12, 1.6, 3.0, 3.2, 2.6)  # median wait before each step (the first: hours to first contact)
LOST_REASONS = ("price", "competitor", "no_need", "unreachable")
IDLE_DAYS = 7  # the demo circulation rule's
HOURS = [1, 1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 9, 9, 10, 10, 9, 8, 8, 10, 11, 9, 5, 2]  # leads by local hour
NOTES = {
    "contacted": ["首次电话沟通，了解孩子年级与学习情况", "已电话联系，客户对课程有初步了解",
                  "电话接通，介绍课程体系"],
    "interested": ["客户对课程感兴趣，发送课程资料", "家长认可教学方式，约下周再沟通",
                   "已加微信，发送试听课介绍"],
    "trial": ["已预约周末试听课", "试听课已完成，家长反馈不错", "安排一对一测评与试听"],
    "negotiating": ["沟通报价与优惠方案", "家长在对比其他机构，跟进优惠", "确认课时包与上课时间"],
    "won": ["客户已报名缴费", "签约成功，已安排班主任对接"],
    "idle": ["客户说再考虑一下", "暂时没有时间，过段时间再联系", "家长出差，下周再约"],
    "lost": ["客户明确表示不需要", "已报名其他机构", "价格超出预算，暂不考虑"],
    "no_answer": ["多次电话未接通", "电话无人接听，已发短信"],
}


def _pick(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class _Ids:
    """Ids handed out here, after the highest already in each table."""

    def __init__(self, session, models):
        self.next = {m: (session.scalar(select(func.max(m.id))) or 0) + 1 for m in models}

    def __call__(self, model) -> int:
        value = self.next[model]
        self.next[model] = value + 1
        return value


def bulk_insert(session, model, rows: list[dict]) -> None:
    """Multi-row INSERTs of `rows` (all with the same keys) in chunks."""
    table = model.__table__
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(table), rows[start:start + CHUNK])


def _move_sequences(session, models) -> None:
    """PostgreSQL: move each id sequence past the ids given here (SQLite needs nothing)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for model in models:
        name = model.__tablename__
        session.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                             f"(SELECT coalesce(max(id), 1) FROM {name}))"))


def already_seeded(session) -> bool:
    return session.scalar(select(Lead.id).where(Lead.client_key == MARKER)) is not None


class _World:
    """What the demo organisation has: dictionaries, salespeople by team, pools, rules, seats, QA."""

    def __init__(self, session, rng: random.Random):
        self.items = {(t, c): i for t, c, i in session.execute(
            select(DictType.code, DictItem.code, DictItem.id).join(DictItem.dict_type))}
        units = {code: (uid, path) for code, uid, path in session.execute(
            select(OrgUnit.code, OrgUnit.id, OrgUnit.path))}
        self.unit_code = {uid: code for code, (uid, _p) in units.items()}
        level = {i: c for (t, c), i in self.items.items() if t == "employee_level"}
        self.team = defaultdict(list)  # team code → [employee]
        self.person = {}
        team_skill = {code: rng.uniform(0.85, 1.15) for code in units}
        staff = select(Employee).join(SalesProfile, SalesProfile.employee_id == Employee.id)
        for emp in session.scalars(staff.order_by(Employee.id)):
            code = self.unit_code.get(emp.org_unit_id)
            if code not in team_skill:
                continue
            lvl = level.get(emp.level_id, "P2")
            self.person[emp.id] = {
                "id": emp.id, "unit": emp.org_unit_id, "team": code, "level": lvl,
                "skill": team_skill[code] * rng.lognormvariate(0, 0.18),  # conversion
                "speed": rng.lognormvariate(0, 0.5),  # >1: slower to first contact
                "weight": rng.uniform(0.7, 1.3) * (1.15 if lvl == "P2" else 1.0)}
            self.team[code].append(self.person[emp.id])
        self.pools = {name: (pid, unit) for name, pid, unit in session.execute(
            select(Pool.name, Pool.id, Pool.org_unit_id))}
        self.dispatch_rules = {line: rid for rid, line in session.execute(
            select(DispatchRule.id, DispatchRule.match_product_line_id))}
        rule = session.scalar(select(CirculationRule).order_by(CirculationRule.id))
        self.circulation_rule = rule.id if rule else None
        self.capacity = {"P1": 100, "P2": 150}
        self.seats = {emp: (sid, line) for sid, emp, line in session.execute(
            select(Seat.id, Seat.employee_id, Seat.line_id).where(Seat.active.is_(True)))}
        self.numbers = defaultdict(list)
        for nid, line in session.execute(select(CallNumber.id, CallNumber.line_id)
                                         .where(CallNumber.status == "active")):
            self.numbers[line].append(nid)
        self.line_interface = dict(session.execute(select(CallLine.id, CallLine.interface_id)).all())
        scorecard = session.scalar(select(QaScorecard).order_by(QaScorecard.id))
        self.scorecard = scorecard.id if scorecard else None
        qa_unit = units.get("T-QA", (None, None))[0]
        self.inspectors = list(session.scalars(select(Employee.id).where(Employee.org_unit_id == qa_unit)))

    def interface_of(self, line_id: int) -> int:
        return self.line_interface[line_id]

    def item(self, kind: str, code: str) -> int | None:
        return self.items.get((kind, code))


def seed_large(session, now: dt.datetime | None = None, count: int = LARGE_COUNT, days: int = DAYS,
               seed_value: int = 20260901) -> dict:
    """Add `count` opportunities with their history over the last `days` days; commits. Needs the demo
    organisation (seed.seed_demo) first. A second run finds its marker and adds nothing."""
    if already_seeded(session):
        return {"skipped": "already seeded"}
    now = now or clock.utcnow()
    rng = random.Random(seed_value)
    world = _World(session, rng)
    if not any(world.team.get(t) for _w, teams, _p in LINES.values() for t in teams):
        raise RuntimeError("no salespeople in the demo teams: run `flask crm seed-demo` first")
    models = (Customer, Lead, Opportunity, FollowUp, AssignmentLog, CallRecord, QaInspection)
    ids = _Ids(session, models)
    history = History(world, ids, rng, now, days)
    for n in range(count):
        history.opportunity(n, count)
    history.keep_capacity()
    from app.services.seed_large_sms import seed_sms_history

    sms = seed_sms_history(session, history.customers, rng, now, days)
    for model, rows in ((Customer, history.customers), (Opportunity, history.opps), (Lead, history.leads),
                        (FollowUp, history.activity.follow_ups), (AssignmentLog, history.logs),
                        (CallRecord, history.activity.calls), (QaInspection, history.activity.inspections)):
        bulk_insert(session, model, rows)
    _move_sequences(session, models)
    _counters(session, history, now)
    session.commit()
    status = Counter(o["status"] for o in history.opps)
    return {"opportunities": len(history.opps), "won": status["won"], "lost": status["lost"],
            "owned": status["owned"], "pooled": status["pooled"], "leads": len(history.leads),
            "follow_ups": len(history.activity.follow_ups), "calls": len(history.activity.calls),
            "qa_inspections": len(history.activity.inspections), "assignment_logs": len(history.logs), **sms}


def _counters(session, history, now: dt.datetime) -> None:
    """Sales profile counters as the services keep them, today's claims and dialled slots."""
    today = clock.local_date(now)
    day_start, _ = clock.day_bounds(now)
    owned, won, dispatched = Counter(), Counter(), Counter()
    for o in history.opps:
        if o["status"] == "owned":
            owned[o["owner_id"]] += 1
        elif o["status"] == "won":
            won[o["owner_id"]] += 1
    for log in history.logs:
        if log["reason"] == "dispatch" and log["created_at"] >= day_start:
            dispatched[log["to_owner_id"]] += 1
    for profile in session.scalars(select(SalesProfile)):
        profile.open_count = session.scalar(select(func.count(Opportunity.id)).where(
            Opportunity.owner_id == profile.employee_id, Opportunity.status == "owned"))
        profile.won_count = session.scalar(select(func.count(Opportunity.id)).where(
            Opportunity.owner_id == profile.employee_id, Opportunity.status == "won"))
        profile.quota_day, profile.dispatched_today = today, dispatched[profile.employee_id]
    claims = Counter((log["to_owner_id"], log["from_pool_id"]) for log in history.logs
                     if log["reason"] == "claim" and log["created_at"] >= day_start)
    for (emp, pool), n in claims.items():
        counter = session.get(ClaimCounter, (emp, pool, today))
        if counter is None:
            session.add(ClaimCounter(employee_id=emp, pool_id=pool, day=today, claimed=n))
        else:
            counter.claimed += n
    slots = Counter()
    for call in history.activity.calls:
        if call["started_at"] >= day_start:
            slots[("number_day", str(call["number_id"]))] += 1
            slots[("callee_day", call["callee_phone"])] += 1
    for (kind, key), n in slots.items():
        counter = session.get(CallCounter, (kind, key, day_start))
        if counter is None:
            session.add(CallCounter(kind=kind, key=key, window=day_start, count=n))
        else:
            counter.count += n
    session.flush()


class History:
    """Builds the rows of every opportunity's life, in memory, as dicts ready for bulk_insert."""

    def __init__(self, world: _World, ids: _Ids, rng: random.Random, now: dt.datetime, days: int):
        self.world, self.ids, self.rng, self.now, self.days = world, ids, rng, now, days
        self.start = now - dt.timedelta(days=days)
        self.customers, self.opps, self.leads, self.logs = [], [], [], []
        self.activity = Activity(world, ids, rng, now)
        self.returning = []  # (customer row, its product lines) that may come back for another line

    # --- arrival --------------------------------------------------------------------------------------
    def _created(self) -> dt.datetime:
        """When a lead arrives: more of them lately (marketing grew), fewer at weekends, daytime peaks."""
        rng = self.rng
        while True:
            back = self.days * (1 - rng.random() ** 0.8)  # skewed towards the recent past
            day = clock.local_date(self.now - dt.timedelta(days=back))
            if day.weekday() >= 5 and rng.random() < 0.35:
                continue
            hour = rng.choices(range(24), weights=HOURS)[0]
            at = clock.to_utc(dt.datetime.combine(day, dt.time(hour, rng.randrange(60), rng.randrange(60))))
            if self.start < at < self.now - dt.timedelta(minutes=20):
                return at

    def _customer(self, n: int, line: str, region: str) -> dict:
        rng = self.rng
        if self.returning and rng.random() < 0.05:
            row, lines = self.returning[rng.randrange(len(self.returning))]
            if line not in lines:
                lines.add(line)
                return row
        parent = "" if line == "adult_english" else "家长"
        name = rng.choice(seed.SURNAMES) + rng.choice(seed.GIVEN) + parent
        row = {"id": self.ids(Customer), "phone": f"+86158{n:08d}", "name": name, "region": region,
               "registered_user_id": None, "marketing_consent": rng.random() > 0.03, "merged_into_id": None,
               "merged_at": None}
        self.customers.append(row)
        self.returning.append((row, {line}))
        return row

    def opportunity(self, n: int, count: int) -> None:
        rng, world = self.rng, self.world
        line = _pick(rng, {k: v[0] for k, v in LINES.items()})
        source, level, region = _pick(rng, SOURCES), _pick(rng, LEVELS), _pick(rng, REGIONS)
        created = self._created()
        customer = self._customer(n, line, region)
        customer["created_at"] = customer["updated_at"] = min(customer.get("created_at", created), created)
        local = clock.to_local(created)
        campaign = f"{local:%Y-%m}-{CAMPAIGN_NAMES[source]}"
        opp = {"id": self.ids(Opportunity), "customer_id": customer["id"],
               "product_line_id": world.item("product_line", line), "intention_level_id": world.item(
                   "intention_level", level), "source_id": world.item("lead_source", source),
               "campaign": campaign, "region": region, "is_recycled": False, "recycle_count": 0,
               "dispatch_after": None, "claimed_at": None, "protected_until": None,
               "recycle_reminded_at": None, "lost_reason_id": None, "locked": False, "closed_at": None,
               "next_followup_at": None, "last_followup_at": None, "pool_id": None, "created_at": created}
        self.leads.append({
            "id": self.ids(Lead), "customer_id": customer["id"], "opportunity_id": opp["id"],
            "name": customer["name"], "phone": customer["phone"], "source_id": opp["source_id"],
            "campaign": campaign, "product_line_id": opp["product_line_id"], "region": region,
            "consult_note": rng.choice(["咨询课程价格", "想预约试听", "了解上课时间", "咨询师资", None]),
            "raw_payload": None, "channel": rng.choices(("form", "api", "import"), (6, 3, 1))[0],
            "client_key": f"demo-large:{n}", "import_id": None, "created_by_id": None, "created_at": created,
            "updated_at": created})
        team = world.team[rng.choice(LINES[line][1])] or world.team[LINES[line][1][0]]
        owner = rng.choices(team, weights=[p["weight"] for p in team])[0]
        at = self.activity.working(created + dt.timedelta(minutes=rng.uniform(0.5, 12)))
        at = min(at, self.now - dt.timedelta(minutes=rng.uniform(1, 10)))
        rule = world.dispatch_rules.get(opp["product_line_id"])
        self._log(opp, at, "dispatch", to_owner=owner["id"], rule=rule)
        self._own(opp, owner, at)
        chance = LEVEL_FACTOR[level]
        self._life(opp, customer, line, owner, at, 0, chance, recycles=0)
        opp["updated_at"] = max(opp["created_at"], opp.get("stage_changed_at") or created,
                                opp["last_followup_at"] or created)
        self.opps.append(opp)

    # --- ownership ------------------------------------------------------------------------------------
    def _own(self, opp: dict, owner: dict, at: dt.datetime) -> None:
        opp.update(status="owned", owner_id=owner["id"], pool_id=None, org_unit_id=owner["unit"],
                   assigned_at=at, idle_since=at)

    def _log(self, opp: dict, at: dt.datetime, reason: str, to_owner=None, from_owner=None, from_pool=None,
             to_pool=None, rule=None) -> None:
        self.logs.append({
            "id": self.ids(AssignmentLog), "created_at": at, "opportunity_id": opp["id"], "reason": reason,
            "from_owner_id": from_owner, "to_owner_id": to_owner, "from_pool_id": from_pool,
            "to_pool_id": to_pool,
            "dispatch_rule_id": rule if reason == "dispatch" else None,
            "circulation_rule_id": self.world.circulation_rule if reason == "recycle" else None,
            "actor_id": None, "actor_name": "seed-demo" if reason in ("dispatch", "recycle") else None,
            "note": None, "trace": None})

    def _recycle(self, opp: dict, line: str, at: dt.datetime) -> None:
        pool_id, unit = self.world.pools[LINES[line][2]]
        self._log(opp, at, "recycle", from_owner=opp["owner_id"], to_pool=pool_id)
        opp.update(status="pooled", owner_id=None, pool_id=pool_id, org_unit_id=unit, is_recycled=True,
                   recycle_count=opp["recycle_count"] + 1, next_followup_at=None, protected_until=None,
                   idle_since=at)  # assigned_at stays: when it was last assigned, as the services keep it

    # --- the funnel -----------------------------------------------------------------------------------
    def _life(self, opp, customer, line, owner, since, step, chance, recycles) -> None:
        """Play the opportunity forward from `since` with `owner`, stage index `step` (0 = new)."""
        rng, act, now = self.rng, self.activity, self.now
        stage_codes = ("new",) + STEPS
        opp.setdefault("stage_id", self.world.item("opportunity_stage", "new"))
        opp.setdefault("stage_changed_at", opp["created_at"])
        last = since
        while step < len(STEPS):
            gap = dt.timedelta(days=GAP_DAYS[step] * rng.lognormvariate(0, 0.6) * (owner["speed"] if step == 0
                                                                                 else 1))
            due = act.working(last + gap)
            if due > now:  # still ahead: the next follow-up is planned (a few let it slip: overdue)
                late = rng.random() < 0.12
                opp["next_followup_at"] = (now - dt.timedelta(hours=rng.uniform(1, 60))) if late else due
                return
            won = rng.random() < min(0.97, P_STEP[step] * (owner["skill"] * chance) ** 0.5)
            if won:
                step += 1
                code = stage_codes[step]
                act.contact(opp, customer, owner, due, code, first=step == 1)
                opp.update(stage_id=self.world.item("opportunity_stage", code), stage_changed_at=due)
                last = due
                if step < len(STEPS) and rng.random() < 0.4:  # a note in between (WeChat, SMS)
                    act.note(opp, owner, due + dt.timedelta(hours=rng.uniform(3, 30)), code)
                if code == "won":
                    opp.update(status="won", closed_at=due, next_followup_at=None)
                    return
                continue
            # The step did not happen: no answer, lost, or the opportunity goes idle.
            if step == 0:
                act.no_answer(opp, customer, owner, last, due)
            reason = "unreachable" if step == 0 else rng.choice(LOST_REASONS[:3])
            if rng.random() < (0.3 if step == 0 else 0.5):
                lost_at = due + dt.timedelta(days=rng.uniform(0, 3))
                if lost_at < now:
                    act.note(opp, owner, lost_at, "lost", result="输单")
                    opp.update(status="lost", closed_at=lost_at, stage_id=self.world.item(
                        "opportunity_stage", "lost"), stage_changed_at=lost_at, next_followup_at=None,
                        lost_reason_id=self.world.item("lost_reason", reason))
                    return
            elif step > 0:
                act.note(opp, owner, due, "idle")
            last = max(last, opp["last_followup_at"] or last)
            opp["idle_since"] = max(opp["idle_since"], last)
            recycle_at = opp["idle_since"] + dt.timedelta(days=IDLE_DAYS, minutes=rng.uniform(5, 120))
            if stage_codes[step] == "trial" or recycle_at > now:  # trial is exempt; or not idle long enough
                opp["next_followup_at"] = (now - dt.timedelta(days=rng.uniform(0.5, 5))
                                           if rng.random() < 0.3 else None)
                return
            self._recycle(opp, line, recycle_at)
            claim_at = recycle_at + dt.timedelta(days=rng.uniform(0.2, 12))
            if recycles >= 1 or rng.random() > 0.45 or claim_at > now:
                return
            team = [p for t in LINES[line][1] for p in self.world.team[t] if p["id"] != owner["id"]]
            if not team:
                return
            owner = rng.choice(team)
            claim_at = act.working(claim_at)
            if claim_at > now:
                return
            self._log(opp, claim_at, "claim", to_owner=owner["id"], from_pool=opp["pool_id"])
            self._own(opp, owner, claim_at)
            opp.update(claimed_at=claim_at, protected_until=claim_at + dt.timedelta(days=3))
            return self._life(opp, customer, line, owner, claim_at, step, chance * 0.8, recycles + 1)

    def keep_capacity(self) -> None:
        """Hold each salesperson below their capacity (库容), as the recycling and dispatch would: the
        longest idle of an overfull holding go back to the pool."""
        held = defaultdict(list)
        for opp in self.opps:
            if opp["status"] == "owned":
                held[opp["owner_id"]].append(opp)
        lines = {v: k for k, v in ((code, self.world.item("product_line", code)) for code in LINES)}
        for owner_id, opps in held.items():
            person = self.world.person[owner_id]
            limit = int(self.world.capacity.get(person["level"], 150) * self.rng.uniform(0.75, 0.97))
            opps.sort(key=lambda o: o["idle_since"])
            for opp in opps[:max(0, len(opps) - limit)]:
                at = min(self.now - dt.timedelta(minutes=30),
                         opp["idle_since"] + dt.timedelta(days=IDLE_DAYS))
                self._recycle(opp, lines[opp["product_line_id"]], max(at, opp["idle_since"]))
