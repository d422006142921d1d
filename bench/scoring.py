"""Win probability, evaluated honestly: a synthetic history whose true win probabilities are known.

    python bench/scoring.py                   # 200,000 closed opportunities over 12 months
    python bench/scoring.py --rows 50000 --json

The generating process is over the model's own variables (source, campaign, product line, region,
intention level, the stage before closing, follow-up / call / lesson counts, tags). A hidden engagement
level drives the counts, the stage and some tags together (so they are correlated, and a tag can repeat
what a count says, as "attended ≥ 3 lessons" does), and intention depends on the source. The true
P(win) is a logistic function of what the model can see — main effects, two interactions and a slow drift
of the overall win rate over the year — so the best possible ranking is known: `oracle_auc` is the AUC of
the true probabilities on the same later months the model is scored on.

It runs in memory: the same pure functions the app trains and scores with (app.services.scoring_model:
the frequency tables, the time split, the calibration step; app.services.scoring_eval: AUC and ECE) over
feature dicts shaped exactly as app.services.scoring_features.features() returns them. The database path
(SQL features, set-wise scoring) is covered by tests/test_scoring.py and tests/test_scoring_job.py.

Printed: rows, AUC and ECE of the model (raw naive Bayes and with the calibration step, and which the
evaluation kept), the oracle AUC, the time taken; `--json` prints one line
{"rows": N, "auc": x, "oracle_auc": y, "ece": z}. Target: auc ≥ oracle_auc − 0.03 and ece ≤ 0.05.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from app.services import scoring_eval, scoring_model  # noqa: E402
from app.services.scoring_features import (  # noqa: E402
    FOLLOW_UP_BINS,
    LESSON_BINS,
    VARIABLES,
    bin_label,
    calls_value,
)

START = dt.datetime(2025, 6, 1)
DAYS = 365
SOURCES = {"web_form": 0.0, "douyin": -0.5, "baidu": -0.2, "wechat": 0.2, "referral": 0.9, "offline": 0.4,
           "landing_page": -0.1, "chat": 0.1}
SOURCE_SHARE = {"web_form": 12, "douyin": 25, "baidu": 15, "wechat": 14, "referral": 6, "offline": 5,
                "landing_page": 15, "chat": 8}
LINES = {"k12_math": 0.1, "k12_english": 0.0, "adult_english": -0.3, "programming": 0.2}
REGIONS = {f"region-{i:02d}": round(0.06 * (i - 5), 2) for i in range(12)}
INTENTION = {"A": 0.9, "B": 0.3, "C": -0.3, "D": -1.0}
STAGES = {"new": -1.0, "contacted": -0.4, "interested": 0.1, "trial": 0.5, "negotiating": 0.9}
TAGS = {"price_page": 0.5, "vip": 0.8, "idle_30": -0.6, "trial_3": 0.3, "unreached": -0.4}


def _pick(rng: random.Random, weights: dict) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _poisson(rng: random.Random, mean: float) -> int:
    threshold, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def opportunity(rng: random.Random, campaigns: dict) -> tuple[dt.datetime, dict, float]:
    """(closed_at, features, true P(win)) of one synthetic closed opportunity."""
    created = START + dt.timedelta(days=rng.random() * DAYS)
    source = _pick(rng, SOURCE_SHARE)
    campaign = rng.choice(campaigns[source])
    line = rng.choice(list(LINES))
    region = rng.choice(list(REGIONS))
    shift = {"referral": 1.0, "offline": 0.6, "douyin": -0.6}.get(source, 0.0)  # intention follows source
    intention = "ABCD"[min(3, max(0, int(1.6 - shift + rng.gauss(0, 1.0))))]
    z = rng.gauss(0, 1) + {"A": 0.5, "B": 0.2, "C": 0.0, "D": -0.4}[intention]  # hidden engagement
    follow_ups = _poisson(rng, math.exp(0.8 + 0.5 * z))
    calls = _poisson(rng, math.exp(0.5 + 0.3 * z))
    connected = calls and rng.random() < 1 / (1 + math.exp(-(0.5 + 1.2 * z)))
    lessons = _poisson(rng, math.exp((0.2 if line in ("k12_math", "programming") else -0.6) + 0.7 * z))
    stage = list(STAGES)[min(4, max(0, int(1.8 + 1.1 * z + rng.gauss(0, 0.9))))]
    tags = [t for t, on in (("price_page", rng.random() < 0.15 + 0.1 * (z > 0)), ("vip", rng.random() < 0.05),
                            ("idle_30", rng.random() < 0.25 - 0.1 * (z > 0)), ("trial_3", lessons >= 3),
                            ("unreached", calls >= 3 and not connected)) if on]
    month = (created - START).days / 30.0
    logit = (-2.3 + 0.02 * month + SOURCES[source] + campaigns["effect"][campaign] + LINES[line]
             + REGIONS[region] + INTENTION[intention] + STAGES[stage]
             + 0.22 * min(follow_ups, 8) - 0.6 * (follow_ups == 0)
             + (0.35 if connected else -0.25 if calls else -0.1) + 0.25 * min(lessons, 6)
             + sum(TAGS[t] for t in tags)
             + (0.5 if line == "adult_english" and source == "wechat" else 0.0)  # interactions
             + (0.4 if stage == "trial" and lessons >= 3 else 0.0))
    p = 1 / (1 + math.exp(-logit))
    closed = created + dt.timedelta(days=1 + rng.random() * 40)
    row = {"source": source, "campaign": campaign, "product_line": line, "region": region,
           "intention_level": intention, "stage": stage, "follow_ups": bin_label(follow_ups, FOLLOW_UP_BINS),
           "calls": calls_value(calls, bool(connected)), "learning": bin_label(lessons, LESSON_BINS),
           "tags": tags}
    return closed, row, p


def history(rows: int, seed: int = 14) -> list[tuple[dt.datetime, dict, bool, float]]:
    rng = random.Random(seed)
    campaigns: dict = {"effect": {}}
    for source in SOURCES:
        campaigns[source] = [f"{source}-c{i}" for i in range(5)]
        for name in campaigns[source]:
            campaigns["effect"][name] = round(rng.gauss(0, 0.3), 3)
    out = []
    for _ in range(rows):
        closed, row, p = opportunity(rng, campaigns)
        out.append((closed, row, rng.random() < p, p))
    return out


def run(rows: int) -> dict:
    data = history(rows)
    times = sorted(r[0] for r in data)
    cal_at, split_at = (times[k] for k in scoring_model.split_positions(len(times)))
    began = time.perf_counter()
    tables, evaluation = scoring_model.train_history(lambda: ((c, row, won) for c, row, won, _p in data),
                                                     cal_at, split_at, list(VARIABLES))
    seconds = time.perf_counter() - began
    split_at = dt.datetime.fromisoformat(evaluation["split_at"])
    later = [(p, won) for c, _row, won, p in data if c >= split_at]
    oracle = scoring_eval.auc([p for p, _ in later], [won for _, won in later])
    return {"rows": rows, "auc": evaluation["auc"], "oracle_auc": round(oracle, 4), "ece": evaluation["ece"],
            "calibrated": evaluation["calibrated"], "raw": evaluation["raw"],
            "with_calibration": evaluation["with_calibration"], "test": evaluation["test"],
            "train": evaluation["train"], "win_rate": round(sum(r[2] for r in data) / rows, 4),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    result = run(args.rows)
    if args.json:
        print(json.dumps({k: result[k] for k in ("rows", "auc", "oracle_auc", "ece")}))
        return
    cal = result["with_calibration"] or {}
    print(f"{result['rows']:,} closed opportunities over {DAYS} days, win rate {result['win_rate']:.1%}; "
          f"trained on {result['train']:,}, scored {result['test']:,} later ones ({result['seconds']} s)")
    print(f"  naive Bayes raw        AUC {result['raw']['auc']}  ECE {result['raw']['ece']}")
    print(f"  with Platt calibration AUC {cal.get('auc')}  ECE {cal.get('ece')}")
    print(f"  kept: {'calibrated' if result['calibrated'] else 'raw'} → AUC {result['auc']} "
          f"(oracle {result['oracle_auc']}), ECE {result['ece']}")
    ok = result["auc"] >= result["oracle_auc"] - 0.03 and result["ece"] <= 0.05
    print(f"  target auc ≥ oracle − 0.03 and ece ≤ 0.05: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
