"""An assignment's trace in words: which rule, who was chosen, who was passed over and why, and for a
score-aware rule why the chosen person beat the others.

Traces are stored with ids (app.services.dispatch_plan / dispatch_score write them, app.services.circulation
too); the names are resolved here, for every trace on the page at once: one query for the people (cached
for the request by app.views.sales.remember_names), one for the rules, one for the product lines.
"""

from __future__ import annotations

import json

from flask_babel import gettext as _
from sqlalchemy import select

from app.extensions import db
from app.models.metadata import DictItem
from app.models.sales import DispatchRule
from app.views import labels
from app.views.sales import entry_label, remember_names

MAX_NAMED = 8  # passed-over people named in a sentence; the rest are counted


def _parse(trace) -> dict | None:
    if isinstance(trace, dict):
        return trace
    if not trace:
        return None
    try:
        value = json.loads(trace)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _pct(x) -> str:
    return "—" if x is None else f"{round(100 * float(x))}%"


def explain_all(traces) -> list[str]:
    """The traces (dicts or their JSON) in words, in the request's language; "" for an empty one."""
    parsed = [_parse(t) for t in traces]
    people, rules, lines = set(), set(), set()
    for t in parsed:
        if not t:
            continue
        people.update(int(e) for e in t.get("excluded", {}) if str(e).isdigit())
        for key in ("chosen",):
            if t.get(key) is not None:
                people.add(t[key])
        score = t.get("score") or {}
        if score.get("other") is not None:
            people.add(score["other"])
        if score.get("line") is not None:
            lines.add(score["line"])
        if t.get("rule") is not None and "strategy" in t:
            rules.add(t["rule"])
    names = remember_names("employee", people) if people else {}
    rule_names = dict(db.session.execute(select(DispatchRule.id, DispatchRule.name)
                                         .where(DispatchRule.id.in_(rules))).all()) if rules else {}
    line_names = {i.id: entry_label(i) for i in db.session.scalars(
        select(DictItem).where(DictItem.id.in_(lines)))} if lines else {}

    def name(i):
        return names.get(i, f"#{i}")

    return [_explain(t, name, rule_names, line_names) if t else "" for t in parsed]


def explain(trace) -> str:
    return explain_all([trace])[0]


def _passed_over(t: dict, name) -> str:
    excluded = t.get("excluded") or {}
    if not excluded:
        return ""
    separator = _("dispatch.trace.separator")
    items = [_("%(name)s (%(reason)s)", name=name(int(e)) if str(e).isdigit() else e, reason=_(reason))
             for e, reason in list(excluded.items())[:MAX_NAMED]]
    text = separator.join(items)
    if len(excluded) > MAX_NAMED:
        text += _(" and %(n)d more", n=len(excluded) - MAX_NAMED)
    return " " + _("Passed over: %(list)s.", list=text)


def _explain(t: dict, name, rule_names: dict, line_names: dict) -> str:
    if "strategy" not in t:
        if t.get("name"):  # circulation
            return _("Circulation rule “%(rule)s”.", rule=t["name"])
        return _("No rule matched: to the fallback pool.") if t.get("why") else ""
    rule = rule_names.get(t.get("rule"), f"#{t.get('rule')}")
    strategy = labels.text("dispatch_rule.strategy", t["strategy"])
    if t["strategy"] == "pool":
        return _("Rule “%(rule)s” sends these opportunities to a pool.", rule=rule)
    n = len(t.get("candidates") or [])
    if t.get("chosen") is None:
        return _("Rule “%(rule)s” (%(strategy)s): no eligible salesperson among %(n)d candidates, "
                 "to the pool.", rule=rule, strategy=strategy, n=n) + _passed_over(t, name)
    text = _("Rule “%(rule)s” (%(strategy)s): %(name)s chosen among %(n)d candidates.",
             rule=rule, strategy=strategy, name=name(t["chosen"]), n=n)
    if t.get("score"):
        text += " " + _score(t["score"], name(t["chosen"]), name, line_names)
    return text + _passed_over(t, name)


def _score(s: dict, chosen: str, name, line_names: dict) -> str:
    """Why the chosen person beat the others, e.g. "Win probability 72% (no. 3 of 40 in this batch) →
    Zhang San: K12 maths conversion over the last 90 days 31% …, above Li Si (24%); …"."""
    if s.get("est"):
        head = _("Win probability %(p)s (not scored: the average of its product line; no. %(rank)d of %(of)d "
                 "in this batch)", p=_pct(s.get("p")), rank=s.get("rank", 0), of=s.get("of", 0))
    else:
        head = _("Win probability %(p)s (no. %(rank)d of %(of)d in this batch)", p=_pct(s.get("p")),
                 rank=s.get("rank", 0), of=s.get("of", 0))
    text = head + " → " + _(
        "%(name)s: %(line)s conversion over the last %(days)d days %(rate)s (%(won)d won of %(closed)d "
        "closed, smoothed toward the team's %(team)s)", name=chosen,
        line=line_names.get(s.get("line"), ""), days=s.get("days", 0), rate=_pct(s.get("rate")),
        won=s.get("won", 0), closed=s.get("closed", 0), team=_pct(s.get("team")))
    if s.get("other") is not None:
        values = {"other": name(s["other"]), "other_rate": _pct(s.get("other_rate")), "name": chosen,
                  "other_count": s.get("other_count", 0), "hi": s.get("hi", 0), "lo": s.get("lo", 0)}
        why = s.get("other_why")
        if why == "lower":
            text += _(", above %(other)s (%(other_rate)s)", **values)
        elif why == "level":
            text += _(", level with %(other)s (%(other_rate)s): a draw chose", **values)
        elif why == "cooling":
            text += _("; %(other)s converts better (%(other_rate)s) but is cooling off for this opportunity",
                      **values)
        elif why == "owed":
            text += _("; %(other)s converts better (%(other_rate)s), but %(name)s was below the band's floor "
                      "(%(lo)d) and is owed leads", **values)
        else:
            text += _("; %(other)s converts better (%(other_rate)s) but has reached the band's ceiling "
                      "(%(other_count)d of at most %(hi)d)", **values)
    total, n = s.get("total", 0), s.get("n", 0) or 1
    share = f"{total / n:.1f}".rstrip("0").rstrip(".")
    values = {"name": chosen, "count": s.get("count", 0), "total": total, "band": s.get("band", 0),
              "share": share, "lo": s.get("lo", 0), "hi": s.get("hi", 0)}
    if s.get("mode") == "over":
        text += _("; %(name)s's share %(count)d/%(total)d, above the band's ceiling (%(hi)d): everyone else "
                  "free had reached it", **values)
    else:
        text += _("; %(name)s's share %(count)d/%(total)d, within ±%(band)d%% of the round-robin share "
                  "(%(share)s; %(lo)d–%(hi)d by the end of the batch)", **values)
    return text + "."
