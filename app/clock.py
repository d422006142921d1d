"""The one clock: what time it is (UTC) and the business time zone people read times in.

Everything stored is naive UTC (`utcnow()`); everything a person reads is in the business time zone,
one setting (`BUSINESS_TIMEZONE`, default Asia/Shanghai) that also drives Flask-Babel's formatting.
Services take `now` as an argument where a caller may pass an instant; when they don't, they ask here.
Tests move this clock with time-machine (tests/conftest.py): nothing else reads the system time.
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"
_zone: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE)


def configure(name: str | None) -> ZoneInfo:
    """Set the business time zone (create_app calls this with BUSINESS_TIMEZONE); a bad name is refused
    at start-up rather than discovered on the first page."""
    global _zone
    try:
        _zone = ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"BUSINESS_TIMEZONE {name!r} is not a known IANA time zone") from exc
    return _zone


# --- now ----------------------------------------------------------------------------------------------
def utcnow() -> dt.datetime:
    """Naive UTC now: every timestamp column stores UTC without tzinfo, on SQLite and PostgreSQL."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def timestamp() -> float:
    """Seconds since the epoch (signatures, rate-limit windows): the same clock as utcnow()."""
    return time.time()


def today() -> dt.date:
    """The business calendar day now."""
    return local_date(utcnow())


# --- the business time zone ---------------------------------------------------------------------------
def business_timezone() -> ZoneInfo:
    return _zone


def to_local(value: dt.datetime) -> dt.datetime:
    """A stored (naive UTC) or aware instant in the business time zone (aware)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(_zone)


def to_utc(value: dt.datetime) -> dt.datetime:
    """A wall-clock time typed by a person (naive = business time zone, or aware) as naive UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone)
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def local_date(now: dt.datetime) -> dt.date:
    """The business calendar day at `now` (naive UTC): daily limits reset at local midnight."""
    return to_local(now).date()


def day_bounds(now: dt.datetime | dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the business calendar day containing `now` (naive UTC) or of that date, as naive
    UTC."""
    day = now if not isinstance(now, dt.datetime) else local_date(now)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=_zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=_zone)
    return to_utc(start), to_utc(end)


# --- what people and API clients read -----------------------------------------------------------------
def format_datetime(value: dt.datetime | None, seconds: bool = True) -> str:
    """A stored instant as a person reads it: business time zone, no microseconds."""
    if value is None:
        return ""
    return to_local(value).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def isoformat(value: dt.datetime | None) -> str | None:
    """A stored instant for the API: ISO 8601 with the business zone's offset, whole seconds."""
    if value is None:
        return None
    return to_local(value).replace(microsecond=0).isoformat()


def process_local_now() -> dt.datetime:
    """Naive wall-clock time of this process's zone: only for FAB's API keys, whose model compares
    `expires_on` with `datetime.now()` (FAB's convention, not ours)."""
    return dt.datetime.now()
