"""Demo tags: manual tags with a few members, the five example rule tags (computed once), two tags of the
big-data system with members, and page views of demo customers.

Idempotent: tags are found by code, memberships and events are inserted once (events by their fixed
external ids "demo-pv-<customer id>-<n>"), so a second run adds nothing; the rule tags are recomputed
(which changes nothing when nothing else did). Everything goes through the services the app uses.
"""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import func, select

from app import clock
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    MANUAL,
    OPPORTUNITY,
    RULE,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    CustomerTag,
    OpportunityTag,
    Tag,
)
from app.models.marketing import MarketingCampaign
from app.models.metadata import DictItem, DictType
from app.models.sales import OPEN_STATUSES, Customer, Opportunity
from app.services import tag_import, tag_rules, tags
from app.services.reference import MARKETING_CHANNEL
from app.services.sql import dialect_insert

DEMO_CAMPAIGN = "bigdata-demo"  # created only when the demo has no marketing campaign yet
MANUAL_TAGS = (("high-intent", "高意向", CUSTOMER), ("vip-parent", "VIP家长", CUSTOMER),
               ("priority", "重点跟进", OPPORTUNITY))
PAGES = ("https://www.example.com/price", "https://www.example.com/courses/k12-math",
         "https://www.example.com/courses/python", "https://www.example.com/teachers",
         "https://www.example.com/price?plan=term")
EVENT_CUSTOMERS = 30
MANUAL_MEMBERS = 6


def _campaign(session) -> MarketingCampaign:
    """The demo's busiest marketing campaign (the most opportunities), or a demo one."""
    busiest = session.scalar(select(MarketingCampaign)
                             .join(Opportunity, Opportunity.campaign_id == MarketingCampaign.id)
                             .group_by(MarketingCampaign.id)
                             .order_by(func.count().desc(), MarketingCampaign.id).limit(1))
    campaign = busiest or session.scalar(select(MarketingCampaign).order_by(MarketingCampaign.id).limit(1))
    if campaign is None:
        channel = session.scalar(select(DictItem.id).join(DictType).where(DictType.code == MARKETING_CHANNEL)
                                 .order_by(DictItem.id).limit(1))
        campaign = MarketingCampaign(code=DEMO_CAMPAIGN, name="大数据演示活动", channel_id=channel,
                                     start_date=clock.today() - dt.timedelta(days=60), budget=0)
        session.add(campaign)
        session.flush()
    return campaign


def _ensure(session, values: tags.TagValues) -> tuple[Tag, bool]:
    found = tags.by_code(session, values.code)
    if found is not None:
        return found, False
    return tags.save_tag(session, values), True


def _demo_customers(session, limit: int) -> list[int]:
    """Customers with an open opportunity (those the demo's salespeople see), oldest first."""
    return list(session.scalars(select(Customer.id).where(Customer.merged_into_id.is_(None))
                                .where(Customer.id.in_(select(Opportunity.customer_id)
                                                       .where(Opportunity.status.in_(OPEN_STATUSES))))
                                .order_by(Customer.id).limit(limit)))


def _put_on(session, tag: Tag, ids: list[int], now: dt.datetime) -> None:
    model, column = tags.member_model(tag.subject)
    if ids:
        session.execute(dialect_insert(session, model.__table__)
                        .values([{"tag_id": tag.id, column.key: i, "source": MANUAL, "added_at": now,
                                  "added_by": "demo"} for i in ids]).on_conflict_do_nothing())
    tag.member_count = session.scalar(select(func.count()).select_from(model).where(model.tag_id == tag.id))


def seed_demo(session) -> dict:
    """The demo's tags, members and page views; returns counts; commits."""
    now = clock.utcnow()
    created = 0
    customers = _demo_customers(session, EVENT_CUSTOMERS * 2)
    opportunities = list(session.scalars(select(Opportunity.id).where(Opportunity.status.in_(OPEN_STATUSES))
                                         .order_by(Opportunity.id).limit(MANUAL_MEMBERS)))
    for n, (code, name, subject) in enumerate(MANUAL_TAGS):
        tag, new = _ensure(session, tags.TagValues(code=code, name=name, subject=subject))
        created += new
        pool = opportunities if subject == OPPORTUNITY else customers[n * MANUAL_MEMBERS:]
        _put_on(session, tag, pool[:MANUAL_MEMBERS], now)
    campaign = _campaign(session)
    rules = (tags.TagValues(code="trial-3", name="上过 3 节试听课", source=RULE, subject=CUSTOMER,
                            rule=TRIAL_LESSONS, rule_number=3),
             tags.TagValues(code="idle-30", name="30 天未跟进", source=RULE, subject=OPPORTUNITY,
                            rule=IDLE_DAYS, rule_number=30),
             tags.TagValues(code="price-page", name="看过价格页", source=RULE, subject=CUSTOMER,
                            rule=VISITED_PAGE, rule_text="/price"),
             tags.TagValues(code="from-campaign", name=f"来自活动 {campaign.name}"[:64], source=RULE,
                            subject=CUSTOMER, rule=FROM_CAMPAIGN, rule_campaign_id=campaign.id),
             tags.TagValues(code="unreached-3", name="呼叫 3 次未接通", source=RULE, subject=OPPORTUNITY,
                            rule=UNREACHED_CALLS, rule_number=3))
    rule_tags = []
    for values in rules:
        tag, new = _ensure(session, values)
        created += new
        rule_tags.append(tag)
    # The big-data system's page views and its two tags, applied as its API's job would.
    rng = random.Random(7)
    events = []
    for cid in customers[:EVENT_CUSTOMERS]:
        for n in range(1, rng.randint(2, 4)):
            when = now - dt.timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600))
            events.append({"id": f"demo-pv-{cid}-{n}", "customer_id": cid, "kind": "page_view",
                           "detail": rng.choice(PAGES), "occurred_at": when.replace(microsecond=0).isoformat()
                           + "+00:00"})
    tally = tag_import.Tally()
    tag_import.apply_events(session, events, 0, tally, now)
    stored = tally.added
    before = session.scalar(select(func.count()).select_from(Tag))
    imported = tag_import.Tally()
    tag_import.apply_definitions(session, [
        {"code": "bd-high-value", "name": "高价值用户", "subject": CUSTOMER},
        {"code": "bd-churn-risk", "name": "流失风险", "subject": CUSTOMER}], imported, now)
    assignments = [{"tag": "bd-high-value" if i % 3 else "bd-churn-risk", "customer_id": cid, "action": "add",
                    "id": f"demo-bd-{cid}"} for i, cid in enumerate(customers[EVENT_CUSTOMERS // 2:][:20])]
    tag_import.apply_assignments(session, assignments, 0, imported, now)
    created += session.scalar(select(func.count()).select_from(Tag)) - before
    for tag in rule_tags:
        tag_rules.recompute(session, tag, now)
    session.commit()
    members = (session.scalar(select(func.count()).select_from(CustomerTag))
               + session.scalar(select(func.count()).select_from(OpportunityTag)))
    return {"tags": created, "tag_members": members, "customer_events": stored}
