"""Score-aware dispatch: likelier wins to the better recent converters, within a band of round robin.

The strategy (DispatchRule.strategy == "score_aware") works on the same eligible members as the others
(capacity, quota, cooling, working hours, resigned / on leave / paused all exclude alike). Within them:

* Each lead's probability is Opportunity.win_probability; an unscored lead counts at the average of the
  batch's scored leads of its product line, else of all the batch's scored leads, else the history's
  win rate (won ÷ closed of the loaded history), else 0.5.
* Each person's conversion rate for a product line is won ÷ closed among the opportunities they owned
  that closed in the last `dispatch.conversion_days` days, smoothed toward the team's rate for that line
  (the team: the rule's members): (won + K·team) / (closed + K), K = SMOOTHING. A newcomer with 1 win
  out of 1 is not a star: with a team at 25 %, (1 + 20·0.25) / 21 = 0.286, below a veteran's 30 of 100
  → (30 + 5) / 120 = 0.292.
  The rates of a whole batch come from ONE aggregate query (`load_rates`).
* Fairness: over the rule's assignments to its eligible members (persisted in the rule's state under
  "counts", the round robin's counter, so switching between the two keeps the history), each person's
  count stays within ± fairness_band % of the round-robin share. A batch is planned greedily but fairly:
  the rule's leads are taken highest probability first (app.services.dispatch_plan.plan reorders them
  within the slots the rule's leads hold in the batch, so other rules see the same interleaving), each
  going to the best converter whose count is still below the ceiling ceil(share·(1+band)) of the batch's
  end; once the leads left are no more than what those below the floor floor(share·(1−band)) are owed,
  the owed get them (best converter first). One heap per product line keyed by rate: O(n log m).

Expected wins (the dry run's comparison): Σ over the leads assigned to a person of
p(win) × (the assignee's rate ÷ the team's rate for that product line); a lead left to a pool counts
nothing. A person converting at the team's rate leaves p unchanged; a better converter raises it.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from app.models.sales import LOST, WON, Opportunity

SMOOTHING = 20  # K: how many closed opportunities of the team's rate a person's own history is mixed with
DEFAULT_BAND = 25
DEFAULT_PRIOR = 0.5


def _r(x: float) -> float:
    return round(x, 4)


@dataclass
class Rates:
    """Won and closed counts per (employee, product line) over the last `days` days."""

    days: int
    counts: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (emp, line): (won, closed)
    _teams: dict[tuple, float] = field(default_factory=dict)
    _lines: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self):
        for (_, line), (won, closed) in self.counts.items():
            w, c = self._lines.get(line, (0, 0))
            self._lines[line] = (w + won, c + closed)

    @property
    def overall(self) -> float | None:
        won = sum(w for w, _ in self._lines.values())
        closed = sum(c for _, c in self._lines.values())
        return won / closed if closed else None

    def team(self, key, member_ids, line: int) -> float:
        """The team's (raw) rate for `line`: the members' won ÷ closed; without history, the line's across
        everyone loaded, else 0."""
        cache_key = (key, line)
        rate = self._teams.get(cache_key)
        if rate is None:
            won = closed = 0
            for m in member_ids:
                w, c = self.counts.get((m, line), (0, 0))
                won, closed = won + w, closed + c
            if not closed:
                won, closed = self._lines.get(line, (0, 0))
            rate = self._teams[cache_key] = won / closed if closed else 0.0
        return rate

    def rate(self, employee_id: int, line: int, team: float) -> float:
        won, closed = self.counts.get((employee_id, line), (0, 0))
        return (won + SMOOTHING * team) / (closed + SMOOTHING)

    def history(self, employee_id: int, line: int) -> tuple[int, int]:
        return self.counts.get((employee_id, line), (0, 0))


def load_rates(session, now: dt.datetime, employee_ids, days: int) -> Rates:
    """ONE aggregate query: per (owner, product line), won and closed among the opportunities that closed
    in the last `days` days. (An index on opportunity (closed_at, owner_id, product_line_id, status) keeps
    it to the recent rows on PostgreSQL; see the README.)"""
    ids = sorted(set(employee_ids))
    if not ids:
        return Rates(days)
    since = now - dt.timedelta(days=days)
    rows = session.execute(
        select(Opportunity.owner_id, Opportunity.product_line_id,
               func.sum(case((Opportunity.status == WON, 1), else_=0)), func.count())
        .where(Opportunity.closed_at >= since, Opportunity.status.in_((WON, LOST)),
               Opportunity.owner_id.in_(ids))
        .group_by(Opportunity.owner_id, Opportunity.product_line_id)).all()
    return Rates(days, {(o, line): (int(w or 0), int(c)) for o, line, w, c in rows})


def probabilities(opportunities, rates: Rates | None) -> dict[int, tuple[float, bool]]:
    """opportunity id → (probability, estimated?) for the batch (see the module's docstring)."""
    by_line: dict[int, list[float]] = {}
    for o in opportunities:
        p = getattr(o, "win_probability", None)
        if p is not None:
            by_line.setdefault(o.product_line_id, []).append(p)
    scored = [p for ps in by_line.values() for p in ps]
    prior = (sum(scored) / len(scored) if scored
             else (rates.overall if rates and rates.overall is not None else DEFAULT_PRIOR))
    line_prior = {line: sum(ps) / len(ps) for line, ps in by_line.items()}
    result = {}
    for o in opportunities:
        p = getattr(o, "win_probability", None)
        result[o.id] = (p, False) if p is not None else (line_prior.get(o.product_line_id, prior), True)
    return result


class ScorePicker:
    """One score-aware rule's eligible salespeople: per product line a heap by conversion rate (best
    first), the members at the batch's ceiling dropped from it as they reach it; a second heap per line
    of those owed leads (below the floor). `start(n)` is told how many of the batch's leads the rule has
    before the first pick. Same interface as dispatch_plan._Picker (pick, block, excluded, candidates)."""

    def __init__(self, rule_plan, rates: Rates, rng):
        self.plan = rule_plan
        self.rng = rng
        self.rates = rates
        self.strategy = rule_plan.strategy
        self.candidates = [m.id for m in rule_plan.members]
        self.member_ids = set(self.candidates)
        self.excluded: dict[str, str] = {}
        self.eligible = []
        for index, m in enumerate(rule_plan.members):
            reason = m.blocked()
            if reason:
                self.excluded[str(m.id)] = reason
            else:
                self.eligible.append(index)
        band = rule_plan.rule.fairness_band
        self.band = DEFAULT_BAND if band is None else band
        self.counts = rule_plan.state.setdefault("counts", {})
        known = [self.counts[str(rule_plan.members[i].id)] for i in self.eligible
                 if str(rule_plan.members[i].id) in self.counts]
        floor = min(known, default=0)
        for index in self.eligible:
            self.counts.setdefault(str(rule_plan.members[index].id), floor)  # a newcomer starts level
        self.team_ids = [m.id for m in rule_plan.members]
        self.leads: dict[int, tuple[float, bool, int]] = {}  # opportunity id → (p, estimated, rank)
        self.start(0)

    def start(self, leads: int) -> None:
        """The batch holds `leads` of this rule's leads: fix the band's floor and ceiling for its end."""
        members = self.plan.members
        self.of = leads
        self.remaining = leads
        self.n = len(self.eligible)
        self.total = sum(self.counts[str(members[i].id)] for i in self.eligible)
        share = (self.total + leads) / self.n if self.n else 0.0
        self.share_end = share
        self.hi = math.ceil(share * (1 + self.band / 100) - 1e-9)
        self.lo = math.floor(share * (1 - self.band / 100) + 1e-9)
        self.owed = {}
        for i in self.eligible:
            short = self.lo - self.counts[str(members[i].id)]
            if short > 0:
                self.owed[members[i].id] = short
        self.owed_total = sum(self.owed.values())
        self.heaps: dict[int, list] = {}
        self.owed_heaps: dict[int, list] = {}
        self.ranking: dict[int, list[int]] = {}  # line → eligible indexes, best converter first
        self.line_rates: dict[int, tuple[float, dict[int, float]]] = {}

    def close(self) -> None:
        self.eligible = []
        self.start(self.of)

    def _rates(self, line: int) -> tuple[float, dict[int, float]]:
        if line not in self.line_rates:
            team = self.rates.team(self.plan.rule.id, self.team_ids, line)
            members = self.plan.members
            self.line_rates[line] = (team, {i: self.rates.rate(members[i].id, line, team)
                                            for i in self.eligible})
            self.ranking[line] = sorted(self.eligible, key=lambda i: -self.line_rates[line][1][i])
        return self.line_rates[line]

    def _heap(self, line: int, owed: bool) -> list:
        heaps = self.owed_heaps if owed else self.heaps
        heap = heaps.get(line)
        if heap is None:
            _, rates = self._rates(line)
            members = self.plan.members
            heap = heaps[line] = [(-rates[i], self.rng.random(), i) for i in self.eligible
                                  if not owed or members[i].id in self.owed]
            heapq.heapify(heap)
        return heap

    def _drop(self, m) -> None:
        short = self.owed.pop(m.id, 0)
        self.owed_total -= short

    def block(self, m, reason: str) -> None:
        """`m` filled up (through this rule or another): out of this rule for the rest of the batch."""
        self.excluded = {**self.excluded, str(m.id): reason}
        self._drop(m)

    def _top(self, heap: list, cooling, owed: bool):
        members, aside, chosen = self.plan.members, [], None
        while heap:
            m = members[heap[0][2]]
            if m.blocked():
                self._drop(m)
                heapq.heappop(heap)
            elif (m.id not in self.owed) if owed else self.counts[str(m.id)] >= self.hi:
                heapq.heappop(heap)
            elif m.id in cooling:
                aside.append(heapq.heappop(heap))
            else:
                chosen = m
                break
        for entry in aside:
            heapq.heappush(heap, entry)
        return chosen

    def pick(self, cooling, opp=None):
        self.last_score = None
        self.remaining -= 1
        if not self.n or opp is None:
            return None
        line = opp.product_line_id
        team, rates = self._rates(line)
        mode = "best"
        chosen = None
        if self.owed_total > 0 and self.remaining + 1 <= self.owed_total:
            chosen = self._top(self._heap(line, True), cooling, True)
            mode = "owed"
        if chosen is None:
            mode = "best"
            chosen = self._top(self._heap(line, False), cooling, False)
        if chosen is None:
            # Everyone free is at the ceiling (others being full or cooling): the best converter still free.
            free = [i for i in self.eligible if not self.plan.members[i].blocked()
                    and self.plan.members[i].id not in cooling]
            if not free:
                return None
            chosen = self.plan.members[max(free, key=lambda i: rates[i])]
            mode = "over"
        key = str(chosen.id)
        self.counts[key] += 1
        self.total += 1
        if chosen.id in self.owed:
            self.owed[chosen.id] -= 1
            self.owed_total -= 1
            if not self.owed[chosen.id]:
                del self.owed[chosen.id]
        chosen.open_count += 1
        chosen.dispatched_today += 1
        if chosen.blocked():
            self._drop(chosen)
        self.last_score = self._explain(opp, line, team, rates, chosen, mode, cooling)
        return chosen

    def _explain(self, opp, line, team, rates, chosen, mode, cooling) -> dict:
        """What the trace needs to say why `chosen` beat the others (ids; names are resolved on screen)."""
        members = self.plan.members
        p, estimated, rank = self.leads.get(opp.id, (None, True, 0))
        won, closed = self.rates.history(chosen.id, line)
        score = {"p": _r(p) if p is not None else None, "est": int(estimated), "rank": rank, "of": self.of,
                 "line": line, "days": self.rates.days, "rate": _r(self.rates.rate(chosen.id, line, team)),
                 "won": won, "closed": closed, "team": _r(team), "mode": mode,
                 "count": self.counts[str(chosen.id)], "total": self.total, "n": self.n, "band": self.band,
                 "lo": self.lo, "hi": self.hi}
        # The other: the best converter ranked above the chosen one and still free (passed over: at the
        # ceiling, cooling, or the chosen one was owed leads), else the next one below (a lower rate).
        ranking = self.ranking[line]
        mine = self.rates.rate(chosen.id, line, team)
        other, why = None, None
        for i in ranking[:16]:
            m = members[i]
            if rates[i] <= mine:
                break
            if not m.blocked():
                other = m
                why = "cooling" if m.id in cooling else ("owed" if mode == "owed" else "ceiling")
                break
        if other is None:
            for i in ranking[:32]:
                m = members[i]
                if m.id != chosen.id and rates[i] <= mine and not m.blocked():
                    other, why = m, ("lower" if rates[i] < mine else "level")
                    break
        if other is not None:
            score.update({"other": other.id, "other_rate": _r(self.rates.rate(other.id, line, team)),
                          "other_why": why, "other_count": self.counts.get(str(other.id), 0)})
        return score


def expected_wins(decisions, probability: dict[int, tuple[float, bool]], opportunities, ctx) -> float:
    """Σ p(win) × (assignee's rate ÷ the team's rate for the product line) over the assigned leads."""
    rates = ctx.rates
    if rates is None:
        return 0.0
    lines = {o.id: o.product_line_id for o in opportunities}
    teams = {p.rule.id: [m.id for m in p.members] for p in ctx.rules}
    total = 0.0
    for d in decisions:
        if not d.to_owner:
            continue
        p, _ = probability.get(d.opportunity_id, (DEFAULT_PRIOR, True))
        line = lines[d.opportunity_id]
        team = rates.team(d.rule_id, teams.get(d.rule_id, []), line)
        total += p * (rates.rate(d.to_owner.id, line, team) / team if team > 0 else 1.0)
    return total
