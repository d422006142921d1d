"""The win-probability model itself: naive Bayes over frequency tables, pure functions over feature dicts.

The same code trains on the company's history (app.services.scoring, features from SQL) and on the
synthetic history of bench/scoring.py.

A row is `{variable: value}`: a value is a string (a dictionary item's code, a campaign, a region, a bin
label such as "2-3"), None when unknown, or for a multi-valued variable ("tags") a list of tag codes.

Naive Bayes as Odoo's predictive lead scoring (crm.lead.scoring.frequency) does it: count, per variable and
value, how many closed opportunities were won and lost; then an opportunity's log-odds of winning are the
prior log-odds log(won / lost) plus, per variable, log P(value | won) − log P(value | lost). Differences:

- Laplace smoothing with α = 1 over the values seen (Odoo adds 0.1 to each count). A value never seen in
  training, and an unknown value, is no evidence (effect 0) — as Odoo skips values it has no frequency of.
- Tags are binary features (Bernoulli naive Bayes): carrying tag t moves the log-odds by
  log[P(t|won)/P(t|lost)] − log[P(¬t|won)/P(¬t|lost)]; the effect of carrying none of them is folded into
  the model's base, so a tag's effect reads "compared with not carrying it". Only tags carried by at least
  MIN_TAG_SUPPORT closed opportunities are learnt (a tag the history never saw says nothing).
- Each effect is stored with the counts (tables["variables"][v]["effects"]), so scoring is a lookup and
  the three largest |effects| of an opportunity are its explanation (`explain`).

`train_history` is the whole training with its honest evaluation (see its docstring): a time split, and a
calibration step kept only when the evaluation says it helps.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.services import scoring_eval

ALPHA = 1.0
MIN_TAG_SUPPORT = 3
MULTI = frozenset({"tags"})
METHOD = "naive_bayes"
TEST_SHARE = 0.2  # the latest 20 % of the closed opportunities (by closed_at) are the evaluation's test


@dataclass
class Counts:
    """Won / lost frequencies of closed opportunities, per variable and value (additive)."""

    won: int = 0
    lost: int = 0
    values: dict = field(default_factory=dict)  # variable → value → [won, lost]
    known: dict = field(default_factory=dict)  # variable → [won, lost] of rows whose value is known

    def add(self, row: dict, won: bool, variables: Iterable[str]) -> None:
        k = 0 if won else 1
        if won:
            self.won += 1
        else:
            self.lost += 1
        for var in variables:
            value = row.get(var)
            if var in MULTI:
                self.known.setdefault(var, [0, 0])[k] += 1
                table = self.values.setdefault(var, {})
                for item in set(value or ()):
                    table.setdefault(item, [0, 0])[k] += 1
            elif value is not None:
                self.known.setdefault(var, [0, 0])[k] += 1
                self.values.setdefault(var, {}).setdefault(value, [0, 0])[k] += 1

    def plus(self, *others: Counts) -> Counts:
        total = Counts(self.won, self.lost)
        for counts in (self, *others):
            if counts is not self:
                total.won += counts.won
                total.lost += counts.lost
            for var, pair in counts.known.items():
                mine = total.known.setdefault(var, [0, 0])
                mine[0] += pair[0]
                mine[1] += pair[1]
            for var, table in counts.values.items():
                into = total.values.setdefault(var, {})
                for value, pair in table.items():
                    mine = into.setdefault(value, [0, 0])
                    mine[0] += pair[0]
                    mine[1] += pair[1]
        return total


def fit(counts: Counts, variables: Iterable[str], alpha: float = ALPHA) -> dict:
    """The fitted tables (JSON-ready) of `counts` for `variables`; needs at least one won and one lost."""
    if not counts.won or not counts.lost:
        raise ValueError("naive Bayes needs won and lost opportunities")
    prior = math.log(counts.won / counts.lost)
    base, out = prior, {}
    for var in variables:
        table = counts.values.get(var, {})
        known_won, known_lost = counts.known.get(var, [0, 0])
        effects: dict[str, float] = {}
        if var in MULTI:
            kept = {t: c for t, c in table.items() if c[0] + c[1] >= MIN_TAG_SUPPORT}
            for tag, (w, lo) in kept.items():
                pw = (w + alpha) / (known_won + 2 * alpha)
                pl = (lo + alpha) / (known_lost + 2 * alpha)
                absent = math.log((1 - pw) / (1 - pl))
                base += absent
                effects[tag] = round(math.log(pw / pl) - absent, 6)
            table = kept
        elif table:
            k = len(table)
            for value, (w, lo) in table.items():
                pw = (w + alpha) / (known_won + alpha * k)
                pl = (lo + alpha) / (known_lost + alpha * k)
                effects[value] = round(math.log(pw / pl), 6)
        out[var] = {"won": known_won, "lost": known_lost, "values": table, "effects": effects}
    return {"alpha": alpha, "won": counts.won, "lost": counts.lost, "prior": round(prior, 6),
            "base": round(base, 6), "variables": out, "calibration": None}


def contributions(tables: dict, row: dict) -> list[tuple[str, str, float]]:
    """(variable, value, effect) of every piece of evidence in `row` the model knows (effect ≠ 0)."""
    found = []
    for var, spec in tables["variables"].items():
        effects = spec["effects"]
        value = row.get(var)
        if var in MULTI:
            for tag in sorted(set(value or ())):
                if effects.get(tag):
                    found.append((var, tag, effects[tag]))
        elif value is not None and effects.get(value):
            found.append((var, value, effects[value]))
    return found


def log_odds(tables: dict, row: dict) -> float:
    """The raw naive-Bayes log-odds of winning."""
    return tables["base"] + sum(effect for _var, _value, effect in contributions(tables, row))


def probability(tables: dict, row: dict) -> float:
    """P(win) of `row`: σ(log-odds), through the calibration when the model has one."""
    return scoring_eval.platt(log_odds(tables, row), tables.get("calibration"))


def top_factors(tables: dict, row: dict, limit: int = 3) -> list[tuple[str, str, float]]:
    """The `limit` pieces of evidence that moved the log-odds most, largest |effect| first. With a
    calibration the effects are scaled by its slope: they are what each moved the final log-odds by."""
    slope = (tables.get("calibration") or {}).get("a", 1.0)
    found = [(var, value, effect * slope) for var, value, effect in contributions(tables, row)]
    found.sort(key=lambda f: (-abs(f[2]), f[0], f[1]))
    return found[:limit]


# --- training with its evaluation ----------------------------------------------------------------------
Stream = Callable[[], Iterable[tuple[dt.datetime, dict, bool]]]


def split_positions(closed: int) -> tuple[int, int]:
    """(calibration start, test start) as positions in the closed opportunities sorted by closed_at: the
    test is the latest TEST_SHARE of them, the calibration slice the latest TEST_SHARE of the rest. By
    count rather than by time span, so a history that grew lately (most of it closed in the last
    months) still trains on the larger part."""
    split = int(closed * (1 - TEST_SHARE))
    return int(split * (1 - TEST_SHARE)), split


def train_history(stream: Stream, cal_at: dt.datetime, split_at: dt.datetime, variables: list[str],
                  alpha: float = ALPHA) -> tuple[dict, dict]:
    """(tables, evaluation) from closed opportunities `stream()` yields as (closed_at, row, won).

    `stream` is called twice (first the counts, then the scores), so a history larger than memory is
    read twice rather than held. A: closed before `cal_at`, B: from `cal_at` to `split_at`, C: from
    `split_at` on (the closed_at at split_positions: the time split):

    - the evaluation: naive Bayes on A+B scores C (the "later months" no model saw) → AUC, ECE and bins;
      its calibration is Platt scaling fitted on B with the model of A alone (one slice earlier, the same
      distance the real model has to the opportunities it scores);
    - the model kept: naive Bayes on A+B+C, with Platt scaling fitted on C with the model of A+B;
    - the calibration is kept only when the evaluation says so (its ECE on C is lower than the raw one).
    """
    parts = {"A": Counts(), "B": Counts(), "C": Counts()}
    for closed_at, row, won in stream():
        parts["A" if closed_at < cal_at else "B" if closed_at < split_at else "C"].add(row, won, variables)
    everything = parts["A"].plus(parts["B"], parts["C"])
    tables = fit(everything, variables, alpha)
    before = parts["A"].plus(parts["B"])
    model_a = fit(parts["A"], variables, alpha) if parts["A"].won and parts["A"].lost else None
    model_ab = fit(before, variables, alpha) if before.won and before.lost else None
    s_b, y_b, s_c, y_c = [], [], [], []
    if model_ab is not None:
        for closed_at, row, won in stream():
            if closed_at >= split_at:
                s_c.append(log_odds(model_ab, row))
                y_c.append(won)
            elif closed_at >= cal_at and model_a is not None:
                s_b.append(log_odds(model_a, row))
                y_b.append(won)
    raw = scoring_eval.evaluate([scoring_eval.sigmoid(s) for s in s_c], y_c)
    evaluation = {"split_at": split_at.isoformat(), "train": before.won + before.lost, **raw,
                  "calibrated": False, "raw": {"auc": raw["auc"], "ece": raw["ece"]},
                  "with_calibration": None}
    platt_b = scoring_eval.fit_platt(s_b, y_b)
    if platt_b is not None and y_c:
        cal = scoring_eval.evaluate([scoring_eval.platt(s, platt_b) for s in s_c], y_c)
        evaluation["with_calibration"] = {"auc": cal["auc"], "ece": cal["ece"], "platt": platt_b}
        final = scoring_eval.fit_platt(s_c, y_c)
        better = cal["ece"] is not None and raw["ece"] is not None and cal["ece"] < raw["ece"]
        if final is not None and better:
            evaluation.update(cal, calibrated=True)
            tables["calibration"] = final
    return tables, evaluation
