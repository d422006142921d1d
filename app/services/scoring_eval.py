"""How good a win-probability model is, and how to calibrate it: pure functions over (probability, outcome).

- `auc`: the area under the ROC curve, rank-based (Mann-Whitney), ties given their average rank — the chance
  that a won opportunity is scored above a lost one (0.5: no better than a coin; 1: perfect ranking).
- `calibration`: ten equal-width bins of predicted probability; the expected calibration error (ECE) is the
  count-weighted mean |mean predicted − observed win rate| over the bins (0: "70 %" means 7 in 10 are won).
- `fit_platt` / `platt`: Platt scaling, p = σ(a·s + b) over a model's log-odds s, fitted by Newton's method
  on a later slice the model did not learn from. Naive Bayes counts correlated evidence twice (a campaign and
  its source say the same thing), so its raw probabilities are too sure of themselves; the slope a < 1 undoes
  that and the intercept b absorbs a drift of the overall win rate. It only rescales: the ranking (AUC) stays.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

BINS = 10


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def auc(probs: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    """Rank AUC with ties averaged; None when the outcomes are all won or all lost."""
    pos = sum(1 for y in outcomes if y)
    neg = len(outcomes) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(probs)), key=probs.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and probs[order[j + 1]] == probs[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # ranks i+1 … j+1 share their mean
        rank_sum += mean_rank * sum(1 for k in range(i, j + 1) if outcomes[order[k]])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def calibration(probs: Sequence[float], outcomes: Sequence[bool],
                bins: int = BINS) -> tuple[float | None, list]:
    """(ECE, bins): each bin {"low", "high", "count", "predicted": mean p or None, "observed": rate or
    None} (None: an empty bin)."""
    count = [0] * bins
    predicted = [0.0] * bins
    won = [0] * bins
    for p, y in zip(probs, outcomes, strict=True):
        k = min(int(p * bins), bins - 1) if p > 0 else 0
        count[k] += 1
        predicted[k] += p
        won[k] += 1 if y else 0
    total = sum(count)
    rows, ece = [], 0.0
    for k in range(bins):
        mean = predicted[k] / count[k] if count[k] else None
        rate = won[k] / count[k] if count[k] else None
        if count[k]:
            ece += count[k] / total * abs(mean - rate)
        rows.append({"low": round(k / bins, 4), "high": round((k + 1) / bins, 4), "count": count[k],
                     "predicted": None if mean is None else round(mean, 4),
                     "observed": None if rate is None else round(rate, 4)})
    return (round(ece, 4) if total else None), rows


def evaluate(probs: Sequence[float], outcomes: Sequence[bool]) -> dict:
    """{"auc", "ece", "bins", "test", "test_won"} of predictions against what happened."""
    ece, bins = calibration(probs, outcomes)
    value = auc(probs, outcomes)
    return {"test": len(outcomes), "test_won": sum(1 for y in outcomes if y),
            "auc": None if value is None else round(value, 4), "ece": ece, "bins": bins}


def fit_platt(scores: Iterable[float], outcomes: Iterable[bool], iterations: int = 50) -> dict | None:
    """Platt scaling {"a", "b"} for log-odds `scores`, or None when a slice has no won or no lost ones,
    or when the fitted slope is not positive (a calibration must keep the model's order).

    Scores are grouped to 0.01 (a weighted fit: the same answer for any practical purpose, and a million
    rows cost a few hundred groups). Targets are Platt's smoothed ones, (n₊+1)/(n₊+2) and 1/(n₋+2), so a
    small separable slice does not send the slope to infinity.
    """
    groups: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for s, y in zip(scores, outcomes, strict=True):
        groups[round(s, 2)][0 if y else 1] += 1
    pos = sum(g[0] for g in groups.values())
    neg = sum(g[1] for g in groups.values())
    if not pos or not neg:
        return None
    hi, lo = (pos + 1) / (pos + 2), 1 / (neg + 2)
    points = [(s, won, lost) for s, (won, lost) in groups.items()]
    a, b = 1.0, 0.0
    for _ in range(iterations):
        g_a = g_b = h_aa = h_ab = h_bb = 0.0
        for s, w, n_lost in points:
            p = sigmoid(a * s + b)
            d = p * (1 - p)
            # w rows with target hi, l rows with target lo
            r = w * (p - hi) + n_lost * (p - lo)
            n = w + n_lost
            g_a += r * s
            g_b += r
            h_aa += n * d * s * s
            h_ab += n * d * s
            h_bb += n * d
        h_aa += 1e-9
        h_bb += 1e-9
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 0:
            break
        da = (h_bb * g_a - h_ab * g_b) / det
        db = (h_aa * g_b - h_ab * g_a) / det
        a, b = a - da, b - db
        if abs(da) < 1e-7 and abs(db) < 1e-7:
            break
    if a <= 0:  # the scores rank the slice no better than chance (or backwards): rescaling cannot help
        return None
    return {"a": round(a, 6), "b": round(b, 6)}


def platt(score: float, params: dict | None) -> float:
    """The probability of log-odds `score`, through Platt scaling when there is one."""
    if not params:
        return sigmoid(score)
    return sigmoid(params["a"] * score + params["b"])
