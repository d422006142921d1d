"""Call reports, aggregated in SQL: per agent and per team (org unit) — calls, connected calls, connect
rate, talk time — and per caller-ID number — today's usage against its daily cap.

Definitions (the same in every report):
- a call is a CallRecord whose `started_at` falls in the range (every dial, whatever its outcome);
- connected: the callee answered (`answered_at` set); connect rate = connected / calls;
- talk time: the sum of `duration_seconds`; average talk time = talk time / connected calls;
- a number's usage today is its `CallCounter` ("number_day", key = the number's id, window = the start
  of the business day in naive UTC): the very figure the daily cap is enforced against, company-wide.
  Beside it, `visible_today` counts today's CallRecords on that number within the viewer's data scope.

Date ranges are whole days in the business time zone (app.clock); the
scope of the viewer (app.security.scope) is applied in SQL when a viewer is given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import String, and_, case, cast, func, literal, select

from app import clock
from app.models.calls import COUNTER_NUMBER_DAY, CallCounter, CallLine, CallNumber, CallRecord
from app.models.employee import Employee
from app.models.org import OrgUnit
from app.security.scope import Viewer, restrict
from app.services.errors import DomainError

DEFAULT_DAYS = 7
MAX_DAYS = 366


# --- date ranges --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DateRange:
    """Whole business days [first, last] and the same range as naive UTC [since, until)."""

    first: dt.date
    last: dt.date
    since: dt.datetime
    until: dt.datetime
    offset_minutes: int  # the business zone's UTC offset at the start: SQL groups rows into local days

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def as_dict(self) -> dict:
        return {"start": self.first.isoformat(), "end": self.last.isoformat()}


def _parse_day(value, field: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise DomainError("Give the date as YYYY-MM-DD", field=field, status=400) from None


def date_range(session, now: dt.datetime, start=None, end=None,
               default_days: int = DEFAULT_DAYS) -> DateRange:
    """The report range from `start` / `end` (dates or YYYY-MM-DD, both inclusive; default: the last
    `default_days` business days up to today). Bad input raises DomainError (400)."""
    last = _parse_day(end, "end") or clock.local_date(now)
    first = _parse_day(start, "start") or last - dt.timedelta(days=default_days - 1)
    if first > last:
        raise DomainError("The start date is after the end date", field="start", status=400)
    if (last - first).days >= MAX_DAYS:
        raise DomainError("Choose at most %(days)s days", field="start", status=400, days=MAX_DAYS)
    since, until = clock.day_bounds(first)[0], clock.day_bounds(last)[1]
    offset = int(clock.to_local(since).utcoffset().total_seconds() // 60)
    return DateRange(first, last, since, until, offset)


def local_day(session, column, offset_minutes: int):
    """SQL expression: the business-zone calendar day of a naive-UTC timestamp column.

    One fixed offset for the whole range (the zone's offset at its start); exact for zones without
    daylight saving such as Asia/Shanghai."""
    if session.get_bind().dialect.name == "sqlite":
        return func.date(column, f"{offset_minutes:+d} minutes")
    return func.date(column + literal(dt.timedelta(minutes=offset_minutes)))


def as_date(value) -> dt.date:
    """A day as the database returns it (a date on PostgreSQL, an ISO string on SQLite)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def int_param(value, field: str) -> int | None:
    """An optional id from the query string; anything but a whole number raises DomainError (400)."""
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DomainError("Give a whole number", field=field, status=400) from None
    if not 0 < number < 2**31:  # beyond 32 bits no row has it (PostgreSQL: "integer out of range")
        raise DomainError("Give a whole number", field=field, status=400)
    return number


# --- per agent / per team -----------------------------------------------------------------------------
@dataclass
class CallStats:
    key: int | None
    name: str
    calls: int = 0
    connected: int = 0
    talk_seconds: int = 0
    unit: str | None = None  # the agent's org unit (agent rows)

    @property
    def connect_rate(self) -> float | None:
        return round(100.0 * self.connected / self.calls, 1) if self.calls else None

    @property
    def average_talk_seconds(self) -> float | None:
        return round(self.talk_seconds / self.connected, 1) if self.connected else None

    def as_dict(self) -> dict:
        return {"id": self.key, "name": self.name, "unit": self.unit, "calls": self.calls,
                "connected": self.connected, "connect_rate": self.connect_rate,
                "talk_seconds": self.talk_seconds, "average_talk_seconds": self.average_talk_seconds}


def _measures():
    connected = func.coalesce(func.sum(case((CallRecord.answered_at.is_not(None), 1), else_=0)), 0)
    return (func.count(CallRecord.id).label("calls"), connected.label("connected"),
            func.coalesce(func.sum(CallRecord.duration_seconds), 0).label("talk"))


def _in_range(query, rng: DateRange, viewer: Viewer | None):
    query = query.where(CallRecord.started_at >= rng.since, CallRecord.started_at < rng.until)
    return restrict(query, CallRecord, viewer) if viewer is not None else query


def by_agent(session, rng: DateRange, viewer: Viewer | None = None,
             org_unit_id: int | None = None) -> list[CallStats]:
    """One row per agent with calls in the range (most calls first); only calls the viewer may see."""
    inner = _in_range(select(CallRecord.employee_id.label("employee_id"), *_measures()), rng, viewer)
    if org_unit_id is not None:
        inner = inner.where(CallRecord.org_unit_id == org_unit_id)
    inner = inner.group_by(CallRecord.employee_id).subquery()
    query = (select(inner.c.employee_id, Employee.name, OrgUnit.name, inner.c.calls, inner.c.connected,
                    inner.c.talk)
             .join(Employee, Employee.id == inner.c.employee_id)
             .outerjoin(OrgUnit, OrgUnit.id == Employee.org_unit_id)
             .order_by(inner.c.calls.desc(), Employee.name, inner.c.employee_id))
    return [CallStats(key, name, int(calls), int(connected), int(talk), unit=unit)
            for key, name, unit, calls, connected, talk in session.execute(query)]


def by_team(session, rng: DateRange, viewer: Viewer | None = None) -> list[CallStats]:
    """One row per org unit the agents belonged to when they called (most calls first)."""
    inner = _in_range(select(CallRecord.org_unit_id.label("org_unit_id"), *_measures()), rng, viewer)
    inner = inner.group_by(CallRecord.org_unit_id).subquery()
    query = (select(inner.c.org_unit_id, OrgUnit.name, inner.c.calls, inner.c.connected, inner.c.talk)
             .outerjoin(OrgUnit, OrgUnit.id == inner.c.org_unit_id)
             .order_by(inner.c.calls.desc(), OrgUnit.name, inner.c.org_unit_id))
    return [CallStats(key, name or "—", int(calls), int(connected), int(talk))
            for key, name, calls, connected, talk in session.execute(query)]


def totals(rows: list[CallStats]) -> CallStats:
    total = CallStats(None, "")
    for r in rows:
        total.calls += r.calls
        total.connected += r.connected
        total.talk_seconds += r.talk_seconds
    return total


def daily(session, rng: DateRange, viewer: Viewer | None = None) -> list[dict]:
    """Calls and connected calls per business day of the range (days without calls included)."""
    day = local_day(session, CallRecord.started_at, rng.offset_minutes).label("day")
    query = _in_range(select(day, *_measures()), rng, viewer).group_by(day)
    found = {as_date(d): (int(c), int(k), int(t)) for d, c, k, t in session.execute(query)}
    out = []
    for d in rng.days:
        calls, connected, talk = found.get(d, (0, 0, 0))
        out.append({"day": d.isoformat(), "calls": calls, "connected": connected, "talk_seconds": talk})
    return out


# --- per caller-ID number -----------------------------------------------------------------------------
@dataclass
class NumberUsage:
    id: int
    number: str
    area: str | None
    line: str
    status: str
    note: str | None
    daily_cap: int
    used_today: int
    visible_today: int = 0

    @property
    def utilisation(self) -> float | None:
        return round(100.0 * self.used_today / self.daily_cap, 1) if self.daily_cap > 0 else None

    @property
    def remaining(self) -> int:
        return max(self.daily_cap - self.used_today, 0)

    def as_dict(self) -> dict:
        return {"id": self.id, "number": self.number, "area": self.area, "line": self.line,
                "status": self.status, "note": self.note, "daily_cap": self.daily_cap,
                "used_today": self.used_today, "remaining": self.remaining,
                "utilisation": self.utilisation, "visible_today": self.visible_today}


def by_number(session, now: dt.datetime, viewer: Viewer | None = None,
              line_id: int | None = None) -> list[NumberUsage]:
    """Every caller-ID number with today's usage against its daily cap (busiest first)."""
    day_start, day_end = clock.day_bounds(now)
    counter = and_(CallCounter.kind == COUNTER_NUMBER_DAY, CallCounter.key == cast(CallNumber.id, String),
                   CallCounter.window == day_start)
    used = func.coalesce(CallCounter.count, 0)
    query = (select(CallNumber.id, CallNumber.number, CallNumber.area, CallLine.name, CallNumber.status,
                    CallNumber.status_note, CallNumber.daily_cap, used)
             .join(CallLine, CallLine.id == CallNumber.line_id)
             .outerjoin(CallCounter, counter)
             .order_by(used.desc(), CallNumber.number))
    if line_id is not None:
        query = query.where(CallNumber.line_id == line_id)
    rows = [NumberUsage(*(r[:7]), used_today=int(r[7])) for r in session.execute(query)]
    mine = (select(CallRecord.number_id, func.count(CallRecord.id))
            .where(CallRecord.started_at >= day_start, CallRecord.started_at < day_end,
                   CallRecord.number_id.is_not(None))
            .group_by(CallRecord.number_id))
    if viewer is not None:
        mine = restrict(mine, CallRecord, viewer)
    visible = dict(session.execute(mine).all())
    for r in rows:
        r.visible_today = int(visible.get(r.id, 0))
    return rows
