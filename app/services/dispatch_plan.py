"""The dispatch engine's decisions, in memory: which rule an opportunity matches and who of the rule's
salespeople gets it, by the rule's strategy (round robin, weighted, least loaded, score-aware —
app.services.dispatch_score — or to a pool). A rule with a segment matches only the batch's opportunities
in it (membership evaluated for the whole batch by load_context: `Context.segments`).

No database here: app.services.dispatch loads a batch's rules, members and counters into a `Context`,
calls `plan`, and writes the decisions; the dry-run calls `plan` and writes nothing.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from dataclasses import dataclass, field

from app.models.sales import LEAST_LOADED, POOL_STRATEGY, SCORE_AWARE, WEIGHTED, DispatchRule
from app.services.dispatch_score import Rates, ScorePicker, probabilities

# Why a candidate was passed over (kept short: they are stored in every trace).
RESIGNED, ON_LEAVE, PAUSED, OFF_HOURS, FULL, QUOTA, COOLING = (
    "resigned", "on_leave", "paused", "off_hours", "capacity", "quota", "cooling")


@dataclass
class Member:
    id: int
    name: str
    org_unit_id: int
    weight: int
    capacity: int | None
    open_count: int
    daily_quota: int | None
    dispatched_today: int
    unavailable: str | None = None  # a reason that holds for the whole batch

    def blocked(self) -> str | None:
        if self.unavailable:
            return self.unavailable
        if self.capacity is not None and self.open_count >= self.capacity:
            return FULL
        if self.daily_quota is not None and self.dispatched_today >= self.daily_quota:
            return QUOTA
        return None


@dataclass
class RulePlan:
    rule: DispatchRule
    members: list[Member]
    state: dict
    strategy_override: str | None = None  # the dry run's "what if score-aware" (the rule row is untouched)

    @property
    def strategy(self) -> str:
        return self.strategy_override or self.rule.strategy


@dataclass
class Decision:
    opportunity_id: int
    rule_id: int | None
    to_owner: Member | None = None
    to_pool_id: int | None = None
    trace: dict = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.to_owner is None and self.to_pool_id is None


@dataclass
class Context:
    rules: list[RulePlan]
    fallback_pool_id: int | None
    pool_units: dict[int, int]  # pool id → org unit id
    cooling: dict[int, set[int]]  # opportunity id → ex-owners still cooling
    rng: random.Random
    segments: dict[int, set[int]] = field(default_factory=dict)  # segment id → the batch's ids in it
    rates: Rates | None = None  # conversion rates (loaded when a score-aware rule is in force)


def matches(rule: DispatchRule, opp, segments: dict[int, set[int]] | None = None) -> bool:
    if rule.match_segment_id is not None and opp.id not in (segments or {}).get(rule.match_segment_id, ()):
        return False
    return _matches_fields(rule, opp)


def _matches_fields(rule: DispatchRule, opp) -> bool:
    if rule.match_source_id is not None and opp.source_id != rule.match_source_id:
        return False
    if rule.match_campaign and not (opp.campaign or "").startswith(rule.match_campaign):
        return False
    if rule.match_product_line_id is not None and opp.product_line_id != rule.match_product_line_id:
        return False
    if rule.match_region and (opp.region or "") != rule.match_region:
        return False
    if rule.match_intention_level_id is not None and opp.intention_level_id != rule.match_intention_level_id:
        return False
    if rule.match_recycled == "new" and opp.is_recycled:
        return False
    if rule.match_recycled == "recycled" and not opp.is_recycled:
        return False
    return True


class _Picker:
    """One rule's eligible salespeople in a heap, so that each pick costs O(log n), not O(n).

    The key (lowest first) is, for round robin, the rule's assignments to that person so far; for
    weighted, the middle of the person's next stride (stride scheduling: each pick moves their pass on by
    1/weight, so over any run each share follows the weights within a few leads, however long the run);
    for least-loaded, minus the remaining capacity. Ties go to a random draw made when the key was set:
    never to seniority.
    """

    def __init__(self, rule_plan: RulePlan, rng: random.Random):
        self.plan = rule_plan
        self.rng = rng
        self.strategy = rule_plan.strategy
        state = rule_plan.state
        self.candidates = [m.id for m in rule_plan.members]
        self.member_ids = set(self.candidates)
        # Why each candidate is out; replaced, never changed in place, so traces can share it.
        self.excluded: dict[str, str] = {}
        eligible = []
        for index, m in enumerate(rule_plan.members):
            reason = m.blocked()
            if reason:
                self.excluded[str(m.id)] = reason
            else:
                eligible.append(index)
        if self.strategy == WEIGHTED:
            state.pop("current", None)  # the smooth-weighted state of earlier versions
            self.passes = state.setdefault("pass", {})
            vt = state.get("vt", 0.0)
            for index in eligible:
                key = str(rule_plan.members[index].id)
                # A newcomer, or someone back from a pause, starts level with the others: no catch-up burst.
                self.passes[key] = max(self.passes.get(key, vt), vt)
        elif self.strategy != LEAST_LOADED:
            self.counts = state.setdefault("counts", {})
            known = [self.counts[str(rule_plan.members[i].id)] for i in eligible
                     if str(rule_plan.members[i].id) in self.counts]
            floor = min(known, default=0)
            for index in eligible:
                self.counts.setdefault(str(rule_plan.members[index].id), floor)  # a newcomer starts level
        self.heap = [(self.key(rule_plan.members[i]), rng.random(), i) for i in eligible]
        heapq.heapify(self.heap)

    def key(self, m: Member) -> float:
        if self.strategy == WEIGHTED:
            return self.passes[str(m.id)] + 0.5 / m.weight if m.weight > 0 else float("inf")
        if self.strategy == LEAST_LOADED:
            return float("-inf") if m.capacity is None else m.open_count - m.capacity
        return self.counts[str(m.id)]

    def block(self, m: Member, reason: str) -> None:
        """`m` filled up (through this rule or another): out of this rule for the rest of the batch."""
        self.excluded = {**self.excluded, str(m.id): reason}

    def close(self) -> None:
        self.heap = []

    def pick(self, cooling, opp=None) -> Member | None:
        heap, members = self.heap, self.plan.members
        aside, chosen = [], None
        while heap:
            key, _, index = heap[0]
            m = members[index]
            if m.blocked():  # filled up through another rule: drop it
                heapq.heappop(heap)
                continue
            current = self.key(m)
            if current != key:  # its load changed through another rule: re-file it
                heapq.heapreplace(heap, (current, self.rng.random(), index))
                continue
            entry = heapq.heappop(heap)
            if m.id in cooling:
                aside.append(entry)
                continue
            chosen = m
            break
        for entry in aside:
            heapq.heappush(heap, entry)
        if chosen is None:
            return None
        key = str(chosen.id)
        if self.strategy == WEIGHTED:
            # The virtual time: the lowest pass still in play (someone skipped for cooling keeps theirs).
            top = [self.passes[str(members[heap[0][2]].id)]] if heap else []
            self.plan.state["vt"] = min([self.passes[key], *top])
            if chosen.weight > 0:
                self.passes[key] += 1 / chosen.weight
        elif self.strategy != LEAST_LOADED:
            self.counts[key] += 1
        chosen.open_count += 1
        chosen.dispatched_today += 1
        if not chosen.blocked():
            heapq.heappush(heap, (self.key(chosen), self.rng.random(), index))
        return chosen


def _order(opportunities, rule_plans: list, pickers: dict, ctx: Context) -> list[int]:
    """The order in which the batch is decided: as taken, except that each score-aware rule's leads are
    decided highest probability first, in the slots its leads hold (other rules see the same interleaving).
    Tells each score-aware picker its leads' count, probabilities and ranks."""
    order = list(range(len(opportunities)))
    slots: dict[int, list[int]] = defaultdict(list)
    for i, rule_plan in enumerate(rule_plans):
        if rule_plan is not None and isinstance(pickers.get(rule_plan.rule.id), ScorePicker):
            slots[rule_plan.rule.id].append(i)
    if not slots:
        return order
    chances = probabilities(opportunities, ctx.rates)
    for rule_id, indexes in slots.items():
        picker = pickers[rule_id]
        ranked = sorted(indexes, key=lambda i: (-chances[opportunities[i].id][0], opportunities[i].id))
        picker.start(len(indexes))
        for rank, (slot, i) in enumerate(zip(indexes, ranked, strict=True), start=1):
            order[slot] = i
            opp_id = opportunities[i].id
            picker.leads[opp_id] = (*chances[opp_id], rank)
    return order


def plan(opportunities, ctx: Context, batch: str = "") -> list[Decision]:
    """Decide every opportunity of the batch; updates the in-memory counters as it goes."""
    pickers: dict[int, _Picker | ScorePicker] = {}
    reaches: dict[int, list] = defaultdict(list)  # employee id → the pickers they are in
    for rule_plan in ctx.rules:
        if rule_plan.strategy == POOL_STRATEGY:
            continue
        if rule_plan.strategy == SCORE_AWARE:
            picker = ScorePicker(rule_plan, ctx.rates or Rates(0), ctx.rng)
        else:
            picker = _Picker(rule_plan, ctx.rng)
        if rule_plan.state.get("_off_hours"):
            picker.excluded = {str(m.id): OFF_HOURS for m in rule_plan.members}
            picker.close()
        pickers[rule_plan.rule.id] = picker
        for m in rule_plan.members:
            reaches[m.id].append(picker)
    # Which rule each opportunity matches: opportunities alike in every matched field (and segment
    # membership) match alike.
    segments = [s for _, s in sorted(ctx.segments.items())]
    matched: dict[tuple, RulePlan | None] = {}
    rule_plans = []
    for opp in opportunities:
        fields = (opp.source_id, opp.campaign, opp.product_line_id, opp.region, opp.intention_level_id,
                  opp.is_recycled)
        if segments:
            fields += tuple(opp.id in s for s in segments)
        if fields in matched:
            rule_plan = matched[fields]
        else:
            rule_plan = matched[fields] = next((p for p in ctx.rules if matches(p.rule, opp, ctx.segments)),
                                               None)
        rule_plans.append(rule_plan)
    decisions = []
    for i in _order(opportunities, rule_plans, pickers, ctx):
        opp, rule_plan = opportunities[i], rule_plans[i]
        if rule_plan is None:
            trace = {"batch": batch, "rule": None, "why": "no rule matched"}
            decisions.append(Decision(opp.id, None, to_pool_id=ctx.fallback_pool_id, trace=trace))
            continue
        rule = rule_plan.rule
        trace = {"batch": batch, "rule": rule.id, "strategy": rule_plan.strategy}
        if rule_plan.strategy == POOL_STRATEGY:
            decisions.append(Decision(opp.id, rule.id, to_pool_id=rule.target_pool_id or ctx.fallback_pool_id,
                                      trace=trace))
            continue
        picker = pickers[rule.id]
        cooling = ctx.cooling.get(opp.id, ())
        excluded = picker.excluded
        if cooling and not picker.member_ids.isdisjoint(cooling):
            excluded = {**{str(e): COOLING for e in cooling if e in picker.member_ids}, **excluded}
        trace["candidates"] = picker.candidates
        trace["excluded"] = excluded
        chosen = picker.pick(cooling, opp)
        if chosen is None:
            fallback = rule.target_pool_id or ctx.fallback_pool_id
            trace["why"] = "no eligible salesperson"
            decisions.append(Decision(opp.id, rule.id, to_pool_id=fallback, trace=trace))
            continue
        reason = chosen.blocked()
        if reason:
            for other in reaches[chosen.id]:
                other.block(chosen, reason)
        score = getattr(picker, "last_score", None)
        if score:
            trace["score"] = score
        trace["chosen"] = chosen.id
        decisions.append(Decision(opp.id, rule.id, to_owner=chosen, trace=trace))
    return decisions
