"""QA reports, aggregated in SQL: the score trend per day or week and the scores per agent and team.

Definitions:
- an inspection counts once the inspector has scored it (`score` set); it belongs to the business day of
  `scored_at`;
- the score is the inspector's `score` — after an appeal is decided it holds the final score (an upheld
  appeal revises it), so the figures always show the score that counts;
- the machine score is averaged over the same inspections (those that have one), shown beside it;
- weeks start on Monday; a week's average is computed from the daily sums and counts, never as an
  average of daily averages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, func, select

from app.models.employee import Employee
from app.models.org import OrgUnit
from app.models.qa import APPEAL_UPHELD, QaInspection
from app.security.scope import Viewer, restrict, subtree_unit_ids
from app.services.calls.reports import DateRange, as_date, local_day
from app.services.errors import DomainError

GROUPS = ("day", "week")


@dataclass
class ScoreBucket:
    """Sums and counts of one group of inspections; averages derive from them."""

    key: object
    name: str = ""
    inspections: int = 0
    score_sum: int = 0
    machine_count: int = 0
    machine_sum: int = 0
    appeals: int = 0
    upheld: int = 0
    unit: str | None = None

    @property
    def average_score(self) -> float | None:
        return round(self.score_sum / self.inspections, 1) if self.inspections else None

    @property
    def average_machine_score(self) -> float | None:
        return round(self.machine_sum / self.machine_count, 1) if self.machine_count else None

    def add(self, other: ScoreBucket) -> None:
        for name in ("inspections", "score_sum", "machine_count", "machine_sum", "appeals", "upheld"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        key = self.key.isoformat() if isinstance(self.key, dt.date) else self.key
        return {"key": key, "name": self.name, "unit": self.unit, "inspections": self.inspections,
                "average_score": self.average_score, "average_machine_score": self.average_machine_score,
                "appeals": self.appeals, "upheld": self.upheld}


def _measures():
    return (func.count(QaInspection.id), func.coalesce(func.sum(QaInspection.score), 0),
            func.count(QaInspection.machine_score), func.coalesce(func.sum(QaInspection.machine_score), 0),
            func.count(QaInspection.appealed_at),
            func.coalesce(func.sum(case((QaInspection.appeal_decision == APPEAL_UPHELD, 1), else_=0)), 0))


def _scored(session, query, rng: DateRange, viewer: Viewer | None, agent_id: int | None,
            org_unit_id: int | None):
    query = query.where(QaInspection.score.is_not(None), QaInspection.scored_at >= rng.since,
                        QaInspection.scored_at < rng.until)
    if agent_id is not None:
        query = query.where(QaInspection.agent_id == agent_id)
    if org_unit_id is not None:
        path = session.scalar(select(OrgUnit.path).where(OrgUnit.id == org_unit_id))
        if path is None:
            raise DomainError("Unknown org unit", field="team", status=400)
        query = query.where(QaInspection.org_unit_id.in_(subtree_unit_ids(path)))
    return restrict(query, QaInspection, viewer) if viewer is not None else query


def _bucket(key, values, name: str = "", unit: str | None = None) -> ScoreBucket:
    n, s, mc, ms, appeals, upheld = (int(v or 0) for v in values)
    return ScoreBucket(key, name, n, s, mc, ms, appeals, upheld, unit)


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def score_trend(session, rng: DateRange, viewer: Viewer | None = None, group: str = "day",
                agent_id: int | None = None, org_unit_id: int | None = None) -> list[ScoreBucket]:
    """The average inspector and machine scores per day (or week) of the range, gaps included.

    `org_unit_id` takes its whole subtree (a department: all its teams)."""
    if group not in GROUPS:
        raise DomainError("Group by day or week", field="group", status=400)
    day = local_day(session, QaInspection.scored_at, rng.offset_minutes).label("day")
    query = _scored(session, select(day, *_measures()), rng, viewer, agent_id, org_unit_id).group_by(day)
    days = {as_date(row[0]): _bucket(as_date(row[0]), row[1:]) for row in session.execute(query)}
    if group == "day":
        return [days.get(d) or ScoreBucket(d) for d in rng.days]
    weeks: dict[dt.date, ScoreBucket] = {}
    for d in rng.days:
        bucket = weeks.setdefault(week_start(d), ScoreBucket(week_start(d)))
        if d in days:
            bucket.add(days[d])
    return list(weeks.values())


def by_agent(session, rng: DateRange, viewer: Viewer | None = None,
             org_unit_id: int | None = None) -> list[ScoreBucket]:
    """Scores per agent in the range (lowest average first: who needs coaching)."""
    inner = _scored(session, select(QaInspection.agent_id.label("agent_id"), *_measures()), rng, viewer,
                    None, org_unit_id).group_by(QaInspection.agent_id).subquery()
    cols = list(inner.c)[1:]
    query = (select(inner.c.agent_id, Employee.name, OrgUnit.name, *cols)
             .join(Employee, Employee.id == inner.c.agent_id)
             .outerjoin(OrgUnit, OrgUnit.id == Employee.org_unit_id))
    rows = [_bucket(r[0], r[3:], name=r[1], unit=r[2]) for r in session.execute(query)]
    return sorted(rows, key=lambda r: (r.average_score, r.name))


def by_team(session, rng: DateRange, viewer: Viewer | None = None) -> list[ScoreBucket]:
    """Scores per org unit of the agents at call time."""
    inner = _scored(session, select(QaInspection.org_unit_id.label("org_unit_id"), *_measures()), rng,
                    viewer, None, None).group_by(QaInspection.org_unit_id).subquery()
    cols = list(inner.c)[1:]
    query = (select(inner.c.org_unit_id, OrgUnit.name, *cols)
             .outerjoin(OrgUnit, OrgUnit.id == inner.c.org_unit_id))
    rows = [_bucket(r[0], r[2:], name=r[1] or "—") for r in session.execute(query)]
    return sorted(rows, key=lambda r: (r.average_score, r.name))


def totals(rows: list[ScoreBucket]) -> ScoreBucket:
    total = ScoreBucket(None)
    for r in rows:
        total.add(r)
    return total
