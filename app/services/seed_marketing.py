"""Demo marketing: campaigns whose tracking codes are the campaign texts the demo leads already carry, those
leads and opportunities attributed to them, and 90 days of daily spend, so that the marketing report shows
sensible cost per lead and ROI. Safe to run again; run it after app.services.seed (and seed_large).

    flask crm seed-demo  →  counts["marketing"] = seed_marketing.seed_demo(db.session)
"""

from __future__ import annotations

import datetime as dt
import random
import re
from decimal import Decimal

from sqlalchemy import Numeric, String, case, cast, exists, func, literal, select

from app import clock
from app.models.commerce import NOT_NEEDED, PAID, SHOP, Order
from app.models.marketing import SPEND_IMPORTED, CampaignSpend, MarketingCampaign
from app.models.metadata import DictItem
from app.models.sales import WON, Lead, Opportunity
from app.services import marketing, metadata
from app.services.reference import MARKETING_CHANNEL, PRODUCT_LINE

DAYS = 90
#: The small seed's campaigns (app.services.seed): code → (name, channel).
SMALL = {
    "2026-双十一-1": ("双十一 百度搜索", "search_ads"),
    "2026-双十一-2": ("双十一 抖音信息流", "feed_ads"),
    "2026-双十一-3": ("双十一 公众号推文", "content"),
}
#: The large seed's campaign names (app.services.seed_large: "<YYYY-MM>-<name>") → channel.
LARGE = {"抖音信息流": "feed_ads", "百度搜索": "search_ads", "官网试听": "seo", "公众号": "content",
         "老带新": "referral", "线下地推": "offline"}
#: Always there: the campaign of the demo landing page (app.services.seed_landing looks for this code).
LANDING = {"k12-math-trial": ("K12 数学免费试听落地页", "seo")}
MONTHLY = re.compile(r"^(\d{4})-(\d{2})-(.+)$")
#: What a lead costs per channel (yuan), before ±25 % of daily noise.
COST_PER_LEAD = {"search_ads": 150, "feed_ads": 95, "seo": 20, "content": 35, "referral": 25, "offline": 120,
                 "chat": 30, "other": 50}
FLOOR = Decimal("30.00")  # a day's spend of a campaign that brought no lead yet (small seed, first run)
#: What a won demo deal paid, per product line (a term course of app.services.seed_commerce's catalogue).
DEAL_PRICE = {"k12_math": 2980, "k12_english": 3280, "adult_english": 3600, "programming": 4800}


def _campaigns_wanted(session, today: dt.date) -> list[dict]:
    """(code, name, channel, start, end) of every demo campaign text found on leads."""
    found = set(session.scalars(select(Lead.campaign).distinct().where(Lead.campaign.is_not(None))))
    wanted = []
    for code, (name, channel) in {**SMALL, **LANDING}.items():
        if code in found or code in LANDING:
            wanted.append({"code": code, "name": name, "channel": channel,
                           "start": today - dt.timedelta(days=DAYS - 1), "end": None})
    for code in sorted(found):
        match = MONTHLY.match(code)
        if not match or match.group(3) not in LARGE:
            continue
        year, month, label = int(match.group(1)), int(match.group(2)), match.group(3)
        start = dt.date(year, month, 1)
        end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        wanted.append({"code": code, "name": f"{year}年{month}月 {label}", "channel": LARGE[label],
                       "start": start, "end": end})
    return wanted


def seed_demo(session, today: dt.date | None = None) -> dict:
    """Create the demo campaigns, attribute the demo leads, add the missing days of spend; commits."""
    today = today or clock.today()
    channels = {e.code: e.id for e in metadata.dict_items(session, MARKETING_CHANNEL)}
    lines = {e.code: e.id for e in metadata.dict_items(session, PRODUCT_LINE)}
    counts = {"campaigns": 0, "attributed_leads": 0, "spend_days": 0, "paid_orders": 0}
    wanted = _campaigns_wanted(session, today)
    unattributed = select(func.count(Lead.id)).where(Lead.campaign.in_([s["code"] for s in wanted]),
                                                     Lead.campaign_id.is_(None))
    before = session.scalar(unattributed)
    for spec in wanted:
        campaign = session.scalar(select(MarketingCampaign).where(MarketingCampaign.code == spec["code"]))
        if campaign is None:
            campaign = marketing.create_campaign(session, marketing.CampaignInput(
                code=spec["code"], name=spec["name"], channel_id=channels[spec["channel"]],
                start_date=spec["start"], end_date=spec["end"], budget=0,
                product_line_id=lines.get("k12_math") if spec["channel"] == "search_ads" else None,
                note="演示数据 demo"))
            counts["campaigns"] += 1
        marketing.attach_leads(session, campaign)  # one UPDATE of leads, one of opportunities
        counts["spend_days"] += _spend(session, campaign, spec["channel"], today)
    counts["attributed_leads"] = before - session.scalar(unattributed)
    counts["paid_orders"] = _deal_orders(session)
    session.commit()
    return counts


def _spend(session, campaign: MarketingCampaign, channel: str, today: dt.date) -> int:
    """The campaign's missing days of spend in the last DAYS days: about its leads × the channel's cost per
    lead, spread over its days with some noise (the same on every run)."""
    first = max(campaign.start_date, today - dt.timedelta(days=DAYS - 1))
    last = min(campaign.end_date or today, today)
    if first > last:
        return 0
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    have = set(session.scalars(select(CampaignSpend.day).where(CampaignSpend.campaign_id == campaign.id)))
    leads = session.scalar(select(func.count(Lead.id)).where(Lead.campaign_id == campaign.id)) or 0
    per_day = Decimal(leads * COST_PER_LEAD.get(channel, 50)) / len(days)
    rng = random.Random(campaign.code)
    rows = []
    for day in days:
        noise = Decimal(str(round(rng.uniform(0.75, 1.25), 3)))
        if day in have:
            continue
        amount = max(per_day * noise, FLOOR).quantize(Decimal("0.01"))
        clicks = int(amount / Decimal("2.5"))
        rows.append({"campaign_id": campaign.id, "day": day, "amount": amount, "clicks": clicks,
                     "impressions": clicks * 40, "origin": SPEND_IMPORTED})
    if rows:
        session.execute(CampaignSpend.__table__.insert(), [
            {**r, "created_at": clock.utcnow(), "updated_at": clock.utcnow()} for r in rows])
    total = session.scalar(select(func.sum(CampaignSpend.amount))
                           .where(CampaignSpend.campaign_id == campaign.id)) or 0
    campaign.budget = (Decimal(str(total)) * Decimal("1.2")).quantize(Decimal("1"))
    return len(rows)


def _deal_orders(session) -> int:
    """A paid order for each won demo opportunity of a demo campaign that has none, so that the report has
    revenue to set against the spend (one INSERT … SELECT; numbers DEMO-WON-<opportunity id>)."""
    price = case(*((DictItem.code == code, value) for code, value in DEAL_PRICE.items()), else_=3000)
    demo = select(MarketingCampaign.id).where(MarketingCampaign.note == "演示数据 demo")
    has_order = exists().where(Order.opportunity_id == Opportunity.id)
    now = clock.utcnow()
    total = cast(price, Numeric(14, 2))
    rows = (select(literal("DEMO-WON-") + cast(Opportunity.id, String), Opportunity.id,
                   Opportunity.customer_id, literal(PAID), literal(NOT_NEEDED), total, total, literal(SHOP),
                   func.coalesce(Opportunity.closed_at, literal(now)), literal(now), literal(now))
            .join(DictItem, DictItem.id == Opportunity.product_line_id)
            .where(Opportunity.status == WON, Opportunity.campaign_id.in_(demo), ~has_order))
    columns = ["number", "opportunity_id", "customer_id", "status", "approval", "list_total", "final_total",
               "origin", "paid_at", "created_at", "updated_at"]
    result = session.execute(Order.__table__.insert().from_select(columns, rows))
    return result.rowcount or 0
