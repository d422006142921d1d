"""The marketing report: per campaign and per channel, over a period of business days, what came in and what
it cost. Every count is one GROUP BY query; nothing walks lead rows in Python.

Cohort: leads and opportunities created in the period (an opportunity counts for the campaign of the lead that
created it: first touch); of those opportunities, `contacted` have at least one follow-up, `won` are won, and
`revenue` is the sum of their paid orders' final totals (a refunded order no longer counts). `spend` is the
campaigns' daily spend on the period's days. Cost per lead = spend / leads, cost per won = spend / won,
ROI = (revenue − spend) / spend; None ("—") when the divisor is 0. Money is Decimal throughout.

Data scope: the counts are of the leads and opportunities the viewer may see. Money (spend, revenue, cost per
lead, cost per won, ROI) is shown only to viewers whose scope is all: spend is the whole company's, and set
against one team's leads it would read as that team's cost.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import case, func, or_, select

from app import clock
from app.models.commerce import PAID, Order
from app.models.marketing import CampaignSpend, MarketingCampaign
from app.models.metadata import DictItem, DictType
from app.models.sales import WON, Lead, Opportunity
from app.models.security import SCOPE_ALL
from app.security.scope import Viewer, restrict
from app.services import inputs, metadata
from app.services.reference import MARKETING_CHANNEL

DEFAULT_DAYS = 30
MAX_DAYS = 366
EARLIEST, LATEST = dt.date(2000, 1, 1), dt.date(2999, 12, 31)
ARGS = ("from", "to", "channel")
CENT, RATIO = Decimal("0.01"), Decimal("0.0001")
ZERO = Decimal("0.00")
COUNTS = ("leads", "opportunities", "contacted", "won")
MONEY = ("revenue", "spend", "cost_per_lead", "cost_per_won", "roi")


@dataclass(frozen=True)
class ReportFilters:
    start: dt.date
    end: dt.date  # inclusive
    channel_id: int | None = None

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the period in naive UTC."""
        return clock.day_bounds(self.start)[0], clock.day_bounds(self.end)[1]

    def as_dict(self) -> dict:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "channel": self.channel_id}


def _date(problems: dict, name: str, raw: str | None) -> dt.date | None:
    if raw is None:
        return None
    try:
        value = dt.date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        value = None
    if value is None:
        problems[name] = "must be a date (YYYY-MM-DD)"
    elif not EARLIEST <= value <= LATEST:
        problems[name] = f"must be between {EARLIEST} and {LATEST}"
        value = None
    return value


def parse_filters(session, args, today: dt.date) -> ReportFilters:
    """The report's filters from query arguments (absent: the last 30 days, every channel); a malformed,
    upside-down or too long one is refused with 400 naming its field."""
    problems: dict[str, str] = {}
    start, end = _date(problems, "from", args.get("from")), _date(problems, "to", args.get("to"))
    channel = args.get("channel")
    channel_id = None
    if channel is not None:
        if not (channel.isascii() and channel.isdigit()) or len(channel) > 10 \
                or not 1 <= int(channel) <= inputs.INT_MAX:
            problems["channel"] = "must be the id of a marketing channel"
        else:
            channel_id = int(channel)
            known = session.scalar(select(DictItem.id).join(DictItem.dict_type)
                                   .where(DictItem.id == channel_id, DictType.code == MARKETING_CHANNEL))
            if known is None:
                problems["channel"] = "no marketing channel has this id"
    inputs.check(problems, status=400)
    start, end = inputs.period(problems, start, end, today, default_days=DEFAULT_DAYS, max_days=MAX_DAYS)
    inputs.check(problems, status=400)
    return ReportFilters(start, end, channel_id)


# --- arithmetic -------------------------------------------------------------------------------------------
def ratio(numerator: Decimal, divisor, places: Decimal = CENT) -> Decimal | None:
    """numerator / divisor, rounded half up; None when the divisor is 0."""
    if not divisor:
        return None
    return (Decimal(numerator) / Decimal(divisor)).quantize(places, rounding=ROUND_HALF_UP)


def derive(row: dict, money_visible: bool) -> dict:
    """Cost per lead, cost per won and ROI of a row holding counts, revenue and spend (money hidden: None)."""
    if not money_visible:
        return {**row, **dict.fromkeys(MONEY)}
    spend, revenue = row["spend"], row["revenue"]
    return {**row, "cost_per_lead": ratio(spend, row["leads"]), "cost_per_won": ratio(spend, row["won"]),
            "roi": ratio(revenue - spend, spend, RATIO)}


def _dec(value) -> Decimal:
    return ZERO if value is None else Decimal(str(value)).quantize(CENT)


# --- the queries ------------------------------------------------------------------------------------------
def _in_channel(column, f: ReportFilters):
    if f.channel_id is None:
        return column.is_not(None)
    return column.in_(select(MarketingCampaign.id).where(MarketingCampaign.channel_id == f.channel_id))


def _counts(session, viewer: Viewer, f: ReportFilters) -> dict[int, dict]:
    start, end = f.bounds()
    out: dict[int, dict] = {}
    leads = restrict(select(Lead.campaign_id, func.count(Lead.id))
                     .where(_in_channel(Lead.campaign_id, f), Lead.created_at >= start,
                            Lead.created_at < end), Lead, viewer).group_by(Lead.campaign_id)
    for campaign_id, n in session.execute(leads):
        out.setdefault(campaign_id, dict.fromkeys(COUNTS, 0))["leads"] = n
    opps = restrict(select(Opportunity.campaign_id, func.count(Opportunity.id),
                           func.count(Opportunity.last_followup_at),
                           func.sum(case((Opportunity.status == WON, 1), else_=0)))
                    .where(_in_channel(Opportunity.campaign_id, f), Opportunity.created_at >= start,
                           Opportunity.created_at < end), Opportunity, viewer)
    opps = opps.group_by(Opportunity.campaign_id)
    for campaign_id, n, contacted, won in session.execute(opps):
        row = out.setdefault(campaign_id, dict.fromkeys(COUNTS, 0))
        row.update(opportunities=n, contacted=contacted, won=int(won or 0))
    return out


def _money(session, f: ReportFilters) -> tuple[dict[int, Decimal], dict[int, Decimal]]:
    start, end = f.bounds()
    revenue = (select(Opportunity.campaign_id, func.sum(Order.final_total))
               .join(Order, Order.opportunity_id == Opportunity.id)
               .where(_in_channel(Opportunity.campaign_id, f), Opportunity.created_at >= start,
                      Opportunity.created_at < end, Order.status == PAID)
               .group_by(Opportunity.campaign_id))
    spend = (select(CampaignSpend.campaign_id, func.sum(CampaignSpend.amount))
             .where(_in_channel(CampaignSpend.campaign_id, f), CampaignSpend.day >= f.start,
                    CampaignSpend.day <= f.end)
             .group_by(CampaignSpend.campaign_id))
    return ({k: _dec(v) for k, v in session.execute(revenue)},
            {k: _dec(v) for k, v in session.execute(spend)})


def _campaigns(session, f: ReportFilters, ids) -> list[MarketingCampaign]:
    """The campaigns with figures in the period, and those running in it."""
    running = (MarketingCampaign.start_date <= f.end) & or_(MarketingCampaign.end_date.is_(None),
                                                            MarketingCampaign.end_date >= f.start)
    query = select(MarketingCampaign).where(or_(MarketingCampaign.id.in_(list(ids)), running))
    if f.channel_id is not None:
        query = query.where(MarketingCampaign.channel_id == f.channel_id)
    return list(session.scalars(query.order_by(MarketingCampaign.code)))


def report(session, viewer: Viewer, f: ReportFilters) -> dict:
    """Rows per campaign, per channel and the totals (see the module docstring)."""
    money_visible = viewer.scope == SCOPE_ALL
    counts = _counts(session, viewer, f)
    revenue, spend = _money(session, f) if money_visible else ({}, {})
    channels = {e.id: e for e in metadata.dict_items(session, MARKETING_CHANNEL, include_disabled=True)}
    rows = []
    for c in _campaigns(session, f, set(counts) | set(spend) | set(revenue)):
        channel = channels.get(c.channel_id)
        rows.append({"campaign_id": c.id, "code": c.code, "name": c.name, "channel_id": c.channel_id,
                     "channel": channel.label if channel else str(c.channel_id),
                     **counts.get(c.id, dict.fromkeys(COUNTS, 0)),
                     "revenue": revenue.get(c.id, ZERO), "spend": spend.get(c.id, ZERO)})
    by_channel: dict[int, dict] = {}
    for row in rows:
        acc = by_channel.setdefault(row["channel_id"], {
            "channel_id": row["channel_id"], "channel": row["channel"], "campaigns": 0,
            **dict.fromkeys(COUNTS, 0), "revenue": ZERO, "spend": ZERO})
        _add(acc, row)
    totals = {"campaigns": 0, **dict.fromkeys(COUNTS, 0), "revenue": ZERO, "spend": ZERO}
    for acc in by_channel.values():
        _add(totals, acc, acc["campaigns"])
    order = {e.id: (e.sort, e.id) for e in channels.values()}
    return {
        "filters": f.as_dict(),
        "money_visible": money_visible,
        "campaigns": [derive(r, money_visible) for r in rows],
        "channels": [derive(r, money_visible) for r in
                     sorted(by_channel.values(), key=lambda r: order.get(r["channel_id"], (0, 0)))],
        "totals": derive(totals, money_visible),
    }


def _add(acc: dict, row: dict, campaigns: int = 1) -> None:
    acc["campaigns"] += campaigns
    for key in (*COUNTS, "revenue", "spend"):
        acc[key] += row[key]


def as_json(data: dict) -> dict:
    """The report with its Decimals as strings ("1234.50"; ROI as a ratio such as "0.2500")."""
    def plain(value):
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(data)

