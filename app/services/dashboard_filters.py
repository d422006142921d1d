"""The dashboard's filters: the period (business days), org unit, product line, source and campaign, read
from query arguments with a 400 naming the field when one is malformed (app.services.dashboard)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from app import clock
from app.services import inputs

DEFAULT_DAYS = 30
MAX_DAYS = 366
CAMPAIGN_MAX = 100
#: Query arguments of the dashboard and of GET /api/v1/dashboard/summary.
ARGS = ("from", "to", "org_unit", "product_line", "source", "campaign")
#: Dates outside these are refused (422): nothing of this product happened then.
EARLIEST, LATEST = dt.date(1970, 1, 1), dt.date(2999, 12, 31)


@dataclass(frozen=True)
class Filters:
    start: dt.date
    end: dt.date  # inclusive
    org_unit_id: int | None = None
    product_line_id: int | None = None
    source_id: int | None = None
    campaign: str | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the period in naive UTC."""
        return clock.day_bounds(self.start)[0], clock.day_bounds(self.end)[1]


def _date(problems: dict, name: str, raw: str | None) -> dt.date | None:
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw) if len(raw) == 10 else _bad()
    except ValueError:
        problems[name] = "must be a date (YYYY-MM-DD)"
        return None


def _bad():
    raise ValueError


def _id(problems: dict, name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= inputs.INT_MAX:
        problems[name] = "must be an id (a whole number of at least 1)"
        return None
    return int(raw)


def parse_filters(args, today: dt.date) -> Filters:
    """The dashboard's filters from query arguments: 400 naming the field when one is malformed (an empty
    one too: the page's form leaves its empty fields out first), 422 when the period is upside down, too
    long or out of range. Default: the last 30 days up to today."""
    problems: dict[str, str] = {}
    start, end = _date(problems, "from", args.get("from")), _date(problems, "to", args.get("to"))
    values = {name: _id(problems, name, args.get(name)) for name in ("org_unit", "product_line", "source")}
    campaign = args.get("campaign")
    if campaign is not None and len(campaign) > CAMPAIGN_MAX:
        problems["campaign"] = f"at most {CAMPAIGN_MAX} characters"
    inputs.check(problems, status=400)
    for name, value in (("from", start), ("to", end)):
        if value is not None and not EARLIEST <= value <= LATEST:
            problems[name] = f"must be between {EARLIEST} and {LATEST}"
    inputs.check(problems, status=422)
    start, end = inputs.period(problems, start, end, today, default_days=DEFAULT_DAYS, max_days=MAX_DAYS)
    inputs.check(problems, status=422)
    return Filters(
        start,
        end,
        values["org_unit"],
        values["product_line"],
        values["source"],
        (campaign or "").strip() or None,
    )
