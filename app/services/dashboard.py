"""The manager dashboard's figures, read from the daily aggregates (app.models.dashboard) and a few cheap
live counts, always within the viewer's data scope and the dashboard's filters.

Definitions (the README's "Manager dashboard" section says the same for people):
- the funnel is a cohort: the opportunities that came in during the period (acquire), those of them with
  at least one follow-up (retain: contacted), and those won (convert), whenever that happened;
- speed to lead: time from an opportunity coming in to its first follow-up; "within 24 h" counts those
  contacted within a day; the median comes from a histogram (FIRST_CONTACT_BUCKETS), interpolated within
  its bucket, so it is exact to the bucket;
- activity (follow-ups, dispatches, calls, QA scores) counts on the day it happened, per person;
- pool state is now: waiting and pooled opportunities and today's claims are counted live (indexed),
  the idle-age distribution comes from the last refresh's snapshot.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import case, false, func, select

from app import clock
from app.models.dashboard import (
    FIRST_CONTACT_BUCKETS,
    IDLE_BUCKETS,
    DashActivityDay,
    DashCohortDay,
    DashFirstContactDay,
    DashIdleSnapshot,
    DashSmsDay,
)
from app.models.employee import Employee
from app.models.org import OrgUnit
from app.models.sales import POOLED, WAITING, ClaimCounter, Opportunity, Pool, SalesProfile
from app.models.sms import BlacklistEntry
from app.security import policy
from app.security.scope import Viewer, restrict, subtree_unit_ids
from app.services import dashboard_refresh
from app.services.dashboard_filters import DEFAULT_DAYS, MAX_DAYS, Filters, parse_filters  # noqa: F401

RANKING_ROWS = 100


# --- where --------------------------------------------------------------------------------------------------
def _org_clause(session, model, org_unit_id: int | None):
    if org_unit_id is None:
        return None
    path = session.scalar(select(OrgUnit.path).where(OrgUnit.id == org_unit_id))
    return false() if path is None else model.org_unit_id.in_(subtree_unit_ids(path))


def _where(session, model, viewer: Viewer, f: Filters, *, days: bool = True):
    """The select's conditions for an aggregate (or Opportunity) under the viewer's scope and filters."""

    def apply(query):
        query = restrict(query, model, viewer)
        if days:
            query = query.where(model.day >= f.start, model.day <= f.end)
        for column, value in (
            ("product_line_id", f.product_line_id),
            ("source_id", f.source_id),
            ("campaign", f.campaign),
        ):
            if value is not None:
                query = query.where(getattr(model, column) == value)
        org = _org_clause(session, model, f.org_unit_id)
        return query if org is None else query.where(org)

    return apply


def _rate(part, whole) -> float | None:
    return round(part / whole, 4) if whole else None


def median_of(histogram: dict[int, int]) -> float | None:
    """The median minutes of a FIRST_CONTACT_BUCKETS histogram, interpolated within its bucket."""
    total = sum(histogram.values())
    if not total:
        return None
    half, seen = total / 2, 0
    bounds = list(FIRST_CONTACT_BUCKETS)
    for i, lower in enumerate(bounds):
        n = histogram.get(lower, 0)
        if n and seen + n >= half:
            upper = bounds[i + 1] if i + 1 < len(bounds) else lower
            return round(lower + (half - seen) / n * (upper - lower), 1)
        seen += n
    return float(bounds[-1])


# --- sections ----------------------------------------------------------------------------------------------
_COHORT = ("leads", "assigned", "contacted", "contacted_24h", "won", "lost")
_ACTIVITY = dashboard_refresh.ACTIVITY


def _sums(model, names):
    return [func.coalesce(func.sum(getattr(model, n)), 0).label(n) for n in names]


def _histograms(session, where, key) -> dict:
    """{key value: {bucket: n}} of the first-contact histogram (key None: one overall)."""
    cols = [key] if key is not None else []
    query = where(
        select(*cols, DashFirstContactDay.bucket, func.sum(DashFirstContactDay.n)).group_by(
            *cols, DashFirstContactDay.bucket
        )
    )
    out: dict = {}
    for row in session.execute(query):
        k = row[0] if key is not None else None
        out.setdefault(k, {})[row[-2]] = int(row[-1])
    return out


def funnel(session, viewer, f) -> tuple[dict, list]:
    where = _where(session, DashCohortDay, viewer, f)
    totals = session.execute(where(select(*_sums(DashCohortDay, _COHORT)))).one()._asdict()
    totals = {k: int(v) for k, v in totals.items()}
    stages = [
        {"stage": "acquire", "count": totals["leads"], "rate": None},
        {
            "stage": "retain",
            "count": totals["contacted"],
            "rate": _rate(totals["contacted"], totals["leads"]),
        },
        {"stage": "convert", "count": totals["won"], "rate": _rate(totals["won"], totals["contacted"])},
    ]
    by_day = session.execute(
        where(
            select(DashCohortDay.day, *_sums(DashCohortDay, ("leads", "contacted", "won"))).group_by(
                DashCohortDay.day
            )
        )
    ).all()
    weeks: dict[dt.date, dict] = {}
    for day, leads, contacted, won in by_day:
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        week = weeks.setdefault(
            day - dt.timedelta(days=day.weekday()), {"leads": 0, "contacted": 0, "won": 0}
        )
        week["leads"] += int(leads)
        week["contacted"] += int(contacted)
        week["won"] += int(won)
    trend = [
        {"week": w.isoformat(), **v, "conversion": _rate(v["won"], v["leads"])}
        for w, v in sorted(weeks.items())
    ]
    return {"stages": stages, "overall_conversion": _rate(totals["won"], totals["leads"]), **totals}, trend


def speed_to_lead(session, viewer, f, totals: dict) -> dict:
    histogram = _histograms(session, _where(session, DashFirstContactDay, viewer, f), None).get(None, {})
    return {
        "leads": totals["leads"],
        "assigned": totals["assigned"],
        "contacted": totals["contacted"],
        "contacted_24h": totals["contacted_24h"],
        "contacted_24h_rate": _rate(totals["contacted_24h"], totals["leads"]),
        "won": totals["won"],
        "median_minutes": median_of(histogram),
        "histogram": [{"bucket_minutes": b, "count": histogram.get(b, 0)} for b in FIRST_CONTACT_BUCKETS],
    }


def _ranking(session, viewer, f, cohort_key, activity_key, hist_key, name_of) -> list[dict]:
    cohort = {
        r[0]: r[1:]
        for r in session.execute(
            _where(session, DashCohortDay, viewer, f)(
                select(cohort_key, *_sums(DashCohortDay, ("leads", "contacted", "won"))).group_by(cohort_key)
            )
        )
    }
    activity = {
        r[0]: r[1:]
        for r in session.execute(
            _where(session, DashActivityDay, viewer, f)(
                select(activity_key, *_sums(DashActivityDay, ("follow_ups", "dials"))).group_by(activity_key)
            )
        )
    }
    hist = _histograms(session, _where(session, DashFirstContactDay, viewer, f), hist_key)
    keys = (set(cohort) | set(activity)) - {None}
    names = name_of(keys) if keys else {}
    rows = []
    for key in keys:
        leads, contacted, won = (int(x) for x in cohort.get(key, (0, 0, 0)))
        follow_ups, dials = (int(x) for x in activity.get(key, (0, 0)))
        rows.append(
            {
                "id": key,
                "name": names.get(key, f"#{key}"),
                "leads": leads,
                "contacts": contacted,
                "follow_ups": follow_ups,
                "dials": dials,
                "won": won,
                "conversion": _rate(won, leads),
                "median_first_contact_minutes": median_of(hist.get(key, {})),
            }
        )
    rows.sort(key=lambda r: (-r["won"], -r["leads"], -r["follow_ups"], r["name"]))
    return rows[:RANKING_ROWS]


def ranking(session, viewer, f) -> dict:
    def units(ids):
        return dict(session.execute(select(OrgUnit.id, OrgUnit.name).where(OrgUnit.id.in_(ids))).all())

    def people(ids):
        return dict(session.execute(select(Employee.id, Employee.name).where(Employee.id.in_(ids))).all())

    teams = _ranking(session, viewer, f, DashCohortDay.org_unit_id, DashActivityDay.org_unit_id,
                     DashFirstContactDay.org_unit_id, units)
    persons = _ranking(session, viewer, f, DashCohortDay.owner_id, DashActivityDay.employee_id,
                       DashFirstContactDay.owner_id, people)
    return {"teams": teams, "people": persons}


def pools(session, viewer, f, now: dt.datetime) -> dict:
    """Now: waiting, pooled per visible pool, claimed today; recycled in the period; idle ages."""
    live = _where(session, Opportunity, viewer, f, days=False)
    waiting = session.scalar(live(select(func.count(Opportunity.id)).where(Opportunity.status == WAITING)))
    pooled = session.execute(
        live(
            select(Opportunity.pool_id, func.count(Opportunity.id))
            .where(Opportunity.status == POOLED)
            .group_by(Opportunity.pool_id)
        )
    ).all()
    visible = restrict(select(Pool.id, Pool.name), Pool, viewer)
    pool_names = dict(session.execute(visible).all())
    per_pool = sorted(
        ({"id": pid, "name": pool_names[pid], "count": n} for pid, n in pooled if pid in pool_names),
        key=lambda r: -r["count"],
    )
    claimed = session.scalar(
        select(func.coalesce(func.sum(ClaimCounter.claimed), 0)).where(
            ClaimCounter.day == clock.local_date(now),
            ClaimCounter.pool_id.in_(visible.with_only_columns(Pool.id)),
        )
    )
    recycled = session.scalar(
        _where(session, DashActivityDay, viewer, f)(
            select(func.coalesce(func.sum(DashActivityDay.recycled), 0))
        )
    )
    idle = dict(
        session.execute(
            _where(session, DashIdleSnapshot, viewer, f, days=False)(
                select(DashIdleSnapshot.bucket, func.sum(DashIdleSnapshot.n)).group_by(
                    DashIdleSnapshot.bucket
                )
            )
        ).all()
    )
    return {
        "waiting": int(waiting or 0),
        "pooled": sum(r["count"] for r in per_pool),
        "per_pool": per_pool,
        "claimed_today": int(claimed or 0),
        "recycled": int(recycled or 0),
        "idle_age": [{"from_days": b, "count": int(idle.get(b, 0))} for b in IDLE_BUCKETS],
    }


def dispatch(session, viewer, f, now: dt.datetime) -> list[dict]:
    """Per team: dispatches per person in the period (spread), capacity and today's quota in use."""
    per_person = session.execute(
        _where(session, DashActivityDay, viewer, f)(
            select(
                DashActivityDay.org_unit_id,
                DashActivityDay.employee_id,
                func.sum(DashActivityDay.dispatched).label("n"),
            ).group_by(DashActivityDay.org_unit_id, DashActivityDay.employee_id)
        )
    ).all()
    teams: dict = {}
    for unit, _emp, n in per_person:
        teams.setdefault(unit, []).append(int(n))
    today = clock.local_date(now)
    quota_used = func.sum(case((SalesProfile.quota_day == today, SalesProfile.dispatched_today), else_=0))
    profiles = session.execute(
        restrict(
            select(
                Employee.org_unit_id,
                func.count(),
                func.sum(SalesProfile.open_count),
                func.sum(SalesProfile.capacity),
                quota_used,
                func.sum(SalesProfile.daily_quota),
            )
            .join(Employee, Employee.id == SalesProfile.employee_id)
            .group_by(Employee.org_unit_id),
            SalesProfile,
            viewer,
        )
    ).all()
    org = _org_clause(session, Employee, f.org_unit_id)
    allowed = None if org is None else set(session.scalars(select(Employee.org_unit_id).where(org)))
    names = dict(session.execute(select(OrgUnit.id, OrgUnit.name)).all()) if profiles or teams else {}
    out = []
    for unit, people, open_count, capacity, used, quota in profiles:
        if allowed is not None and unit not in allowed:
            continue
        counts = teams.pop(unit, [])
        counts += [0] * max(people - len(counts), 0)
        mean = sum(counts) / len(counts) if counts else 0
        out.append(
            {
                "org_unit_id": unit,
                "name": names.get(unit, f"#{unit}"),
                "people": people,
                "dispatched": sum(counts),
                "min": min(counts) if counts else 0,
                "max": max(counts) if counts else 0,
                "mean": round(mean, 2),
                "spread": (max(counts) - min(counts)) if counts else 0,
                "open": int(open_count or 0),
                "capacity": int(capacity) if capacity else None,
                "capacity_use": _rate(int(open_count or 0), int(capacity)) if capacity else None,
                "quota_used_today": int(used or 0),
                "quota_today": int(quota) if quota else None,
                "quota_use": _rate(int(used or 0), int(quota)) if quota else None,
            }
        )
    out.sort(key=lambda r: -r["dispatched"])
    return out


def sms(session, viewer, f) -> dict | None:
    """SMS of the period, company-wide, for those who may read the SMS reports (None for the others)."""
    if not viewer.can(policy.READ, policy.SMS_REPORT):
        return None
    row = session.execute(
        select(*_sums(DashSmsDay, ("sent", "delivered", "failed", "segments", "cost"))).where(
            DashSmsDay.day >= f.start, DashSmsDay.day <= f.end
        )
    ).one()
    start, end = f.bounds()
    opt_outs = session.scalar(
        select(func.count(BlacklistEntry.id)).where(
            BlacklistEntry.source == "inbound",
            BlacklistEntry.created_at >= start,
            BlacklistEntry.created_at < end,
        )
    )
    return {
        "sent": int(row.sent),
        "delivered": int(row.delivered),
        "failed": int(row.failed),
        "delivery_rate": _rate(int(row.delivered), int(row.sent)),
        "segments": int(row.segments),
        "cost": round(float(row.cost), 2),
        "opt_outs": int(opt_outs or 0),
    }


def calls(session, viewer, f) -> dict:
    row = session.execute(
        _where(session, DashActivityDay, viewer, f)(
            select(
                *_sums(DashActivityDay, ("dials", "connected", "talk_seconds", "qa_scored", "qa_score_sum"))
            )
        )
    ).one()
    dials, connected, talk = int(row.dials), int(row.connected), int(row.talk_seconds)
    return {
        "dials": dials,
        "connected": connected,
        "connect_rate": _rate(connected, dials),
        "talk_seconds": talk,
        "average_talk_seconds": round(talk / connected, 1) if connected else None,
        "qa_scored": int(row.qa_scored),
        "qa_average": round(int(row.qa_score_sum) / int(row.qa_scored), 1) if row.qa_scored else None,
    }


def summary(session, viewer: Viewer, f: Filters, now: dt.datetime) -> dict:
    """Every section of the dashboard, as the page and GET /api/v1/dashboard/summary show it."""
    funnel_figures, trend = funnel(session, viewer, f)
    state = dashboard_refresh.state(session)
    return {
        "funnel": {**funnel_figures, "trend": trend},
        "ranking": ranking(session, viewer, f),
        "pools": pools(session, viewer, f, now),
        "speed_to_lead": speed_to_lead(session, viewer, f, funnel_figures),
        "dispatch": dispatch(session, viewer, f, now),
        "sms": sms(session, viewer, f),
        "calls": calls(session, viewer, f),
        "as_of": clock.isoformat(state.as_of) if state is not None and state.as_of else None,
        "filters": f.as_dict(),
    }


def my_figures(session, employee_id: int, org_unit_id: int | None, f: Filters) -> dict:
    """A salesperson's own figures of the period beside their team's median (the workbench)."""

    def person_rows(where):
        cohort = dict(
            (r[0], r[1:])
            for r in session.execute(
                where(
                    select(
                        DashCohortDay.owner_id, *_sums(DashCohortDay, ("leads", "contacted", "won"))
                    ).group_by(DashCohortDay.owner_id)
                )
            )
        )
        follow = dict(
            session.execute(
                select(DashActivityDay.employee_id, func.sum(DashActivityDay.follow_ups))
                .where(
                    DashActivityDay.day >= f.start,
                    DashActivityDay.day <= f.end,
                    DashActivityDay.employee_id.in_(members),
                )
                .group_by(DashActivityDay.employee_id)
            ).all()
        )
        hist = _histograms(
            session,
            lambda q: q.where(
                DashFirstContactDay.day >= f.start,
                DashFirstContactDay.day <= f.end,
                DashFirstContactDay.owner_id.in_(members),
            ),
            DashFirstContactDay.owner_id,
        )
        return cohort, follow, hist

    members = select(Employee.id).where(Employee.org_unit_id == org_unit_id)
    cohort, follow, hist = person_rows(
        lambda q: q.where(
            DashCohortDay.day >= f.start, DashCohortDay.day <= f.end, DashCohortDay.owner_id.in_(members)
        )
    )
    team_ids = set(
        session.scalars(select(SalesProfile.employee_id).where(SalesProfile.employee_id.in_(members)))
    )
    team_ids.add(employee_id)

    def figures(emp):
        leads, contacted, won = (int(x) for x in cohort.get(emp, (0, 0, 0)))
        return {
            "leads": leads,
            "contacted": contacted,
            "follow_ups": int(follow.get(emp, 0) or 0),
            "won": won,
            "conversion": _rate(won, leads),
            "median_first_contact_minutes": median_of(hist.get(emp, {})),
        }

    mine = figures(employee_id)
    team = [figures(e) for e in team_ids]

    def median(values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 4)

    return {
        "mine": mine,
        "team_median": {k: median([t[k] for t in team]) for k in mine},
        "team_size": len(team_ids),
        "filters": f.as_dict(),
    }
