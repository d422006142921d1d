"""SMS history for the large demo seed (app.services.seed_large): a marketing campaign every two weeks to
a sample of the customers known by then, its messages delivered, failed or cancelled, and the opt-out
replies they drew (an inbound receipt, the number on the blacklist, the customer's consent withdrawn).

Each campaign's audience is the demo segment DEMO_SEGMENT (made here when missing); its description
records the snapshot as a launched campaign's does (criteria, count, time). The history keeps no snapshot
rows: its messages say who it went to."""

from __future__ import annotations

import datetime as dt
import json
import random

from sqlalchemy import func, select

from app.models.bigdata import CUSTOMER, Segment
from app.models.metadata import DictItem, DictType
from app.models.sms import (
    APPROVED,
    BlacklistEntry,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsReceipt,
    SmsTemplate,
)

DEMO_SEGMENT = "营销同意的 K12 客户"
K12_LINES = ("k12_math", "k12_english")
EVERY_DAYS = 14
REACH = 0.35  # share of the customers known at launch a campaign goes to
OPT_OUT = 0.006  # of delivered messages
THEMES = ["春季试听课", "暑期班预售", "期中提分营", "少儿编程体验周", "成人英语口语打卡", "老带新福利",
          "开学季优惠"]
BODY = ("{name}您好，学而优教育{theme}火热报名中，专业老师一对一规划学习方案，前50名赠送试听课与学习资料，"
        "详询课程顾问。拒收请回复R")


def demo_segment(session) -> Segment:
    """The demo's campaign audience: customers who agreed to marketing messages with a K12 opportunity."""
    from app.services import segments

    segment = session.scalar(select(Segment).where(Segment.name == DEMO_SEGMENT))
    if segment is None:
        lines = session.scalars(select(DictItem.id).join(DictItem.dict_type).where(
            DictType.code == "product_line", DictItem.code.in_(K12_LINES)).order_by(DictItem.id)).all()
        criteria = segments.validate({"consent": True, "product_lines": list(lines)})
        segment = Segment(name=DEMO_SEGMENT, subject=CUSTOMER, created_by="marketing",
                          description="演示：短信营销活动的受众", criteria=json.dumps(criteria))
        session.add(segment)
        session.flush()
    return segment


def _audience(segment: Segment, count: int, at: dt.datetime) -> str:
    """A launched campaign's audience description (app.services.sms.campaign_segment.ensure_snapshot)."""
    return json.dumps({"kind": "segment", "segment_id": segment.id, "name": segment.name,
                       "subject": segment.subject, "criteria": json.loads(segment.criteria), "count": count,
                       "snapshot_at": at.replace(microsecond=0).isoformat()}, ensure_ascii=False)


def seed_sms_history(session, customers: list[dict], rng: random.Random, now: dt.datetime, days: int) -> dict:
    """Add the campaigns, messages, opt-out receipts and blacklist entries; marks opted-out customers
    (rows not inserted yet) as without marketing consent."""
    from app.services.seed_large import bulk_insert

    channel = session.scalar(select(SmsChannel).order_by(SmsChannel.priority, SmsChannel.id))
    template = session.scalar(select(SmsTemplate).where(SmsTemplate.kind == "marketing", SmsTemplate.status
                                                        == APPROVED).order_by(SmsTemplate.id))
    if channel is None or template is None:
        return {"sms_campaigns": 0, "sms_messages": 0, "sms_opt_outs": 0}
    next_id = (session.scalar(select(func.max(SmsMessage.id))) or 0) + 1
    blacklisted = set(session.scalars(select(BlacklistEntry.phone)))
    segment = demo_segment(session)
    messages, receipts, blacklist, campaigns = [], [], [], 0
    ordered = sorted(customers, key=lambda c: c["created_at"])
    launch = now - dt.timedelta(days=days - 5)
    while launch < now - dt.timedelta(days=1):
        theme = THEMES[campaigns % len(THEMES)]
        campaign = SmsCampaign(
            name=f"{theme}（{launch:%m-%d}）", template_id=template.id, channel_id=channel.id,
            audience=_audience(segment, 0, launch), segment_id=segment.id,
            variables=json.dumps({"theme": theme}),
            status="completed", scheduled_at=launch, started_at=launch,
            finished_at=launch + dt.timedelta(hours=2), created_by="marketing", prepared=True,
            created_at=launch - dt.timedelta(days=1), updated_at=launch + dt.timedelta(hours=2))
        session.add(campaign)
        session.flush()
        campaigns += 1
        known = [c for c in ordered if c["created_at"] < launch]
        reached = rng.sample(known, int(len(known) * REACH))
        campaign.audience = _audience(segment, len(reached), launch)
        for customer in reached:
            content = BODY.format(name=customer["name"], theme=theme)
            sent = launch + dt.timedelta(seconds=rng.uniform(0, 5400))
            row = {"id": next_id, "uid": f"lgsms{next_id:027d}", "campaign_id": campaign.id,
                   "template_id": template.id, "channel_id": channel.id, "customer_id": customer["id"],
                   "phone": customer["phone"], "content": content, "segments": 1 if len(content) <= 70 else 2,
                   "kind": "marketing", "event": None, "event_key": None, "status": "delivered",
                   "cancel_reason": None, "error_code": None, "provider_id": f"sink-lg{next_id}",
                   "send_after": None, "attempts": 1, "claim": None, "created_at": launch,
                   "sent_at": sent, "delivered_at": sent + dt.timedelta(seconds=rng.uniform(2, 90))}
            next_id += 1
            roll = rng.random()
            if not customer["marketing_consent"] or customer["phone"] in blacklisted:
                row.update(status="cancelled", cancel_reason="opted_out" if customer["phone"] in blacklisted
                           else "no_consent", uid=None, provider_id=None, sent_at=None, delivered_at=None,
                           attempts=0)
            elif roll < 0.025:
                row.update(status="failed", error_code=rng.choice(("MK:0001", "UNDELIV", "BLACK")),
                           delivered_at=None, provider_id=row["provider_id"] if roll < 0.012 else None)
            elif roll < 0.045:
                row.update(status="sent", delivered_at=None)
            elif roll < 0.045 + OPT_OUT:
                replied = row["delivered_at"] + dt.timedelta(minutes=rng.uniform(1, 600))
                if replied < now:
                    receipts.append({"channel_id": channel.id, "kind": "inbound", "correlation": None,
                                     "phone": customer["phone"], "status": "opt_out", "text": "R",
                                     "payload": None, "matched": True, "received_at": replied})
                    blacklist.append({"phone": customer["phone"], "reason": "回复R退订", "source": "inbound",
                                      "created_at": replied, "updated_at": replied})
                    blacklisted.add(customer["phone"])
                    customer["marketing_consent"] = False
            messages.append(row)
        launch += dt.timedelta(days=EVERY_DAYS)
    bulk_insert(session, SmsMessage, messages)
    bulk_insert(session, SmsReceipt, receipts)
    bulk_insert(session, BlacklistEntry, blacklist)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        session.execute(text("SELECT setval(pg_get_serial_sequence('sms_message', 'id'), "
                             "(SELECT coalesce(max(id), 1) FROM sms_message))"))
    return {"sms_campaigns": campaigns, "sms_messages": len(messages), "sms_opt_outs": len(blacklist)}
