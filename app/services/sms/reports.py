"""SMS reports, aggregated in SQL: per campaign and per channel — messages sent, delivered, failed (by
error code), cancelled (by reason), opt-outs and an estimated cost.

Definitions (the same in every report):
- sent: accepted by the provider (status sent or delivered — a delivered message was sent);
- delivered / failed / cancelled: the message's final status; pending: pending, deferred or sending;
- charged segments: the segments of messages the provider accepted (sent, delivered, and failed ones
  carrying a provider id, i.e. failed after acceptance); cost = charged segments × the channel's price;
- opt-outs of a campaign: distinct numbers that replied with an opt-out keyword after the campaign
  sent them a message; of a channel: opt-out replies received on that channel.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, case, distinct, func, or_, select

from app.models.sms import (
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_DELIVERED,
    MSG_FAILED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsReceipt,
)

OPT_OUT = "opt_out"  # SmsReceipt.status of an inbound opt-out reply (app.services.sms.receipts)


@dataclass
class ReportRow:
    key: int | None
    name: str
    total: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0
    pending: int = 0
    segments: int = 0
    cost: float = 0.0
    opt_outs: int = 0

    @property
    def delivery_rate(self) -> float | None:
        done = self.delivered + self.failed
        return round(100.0 * self.delivered / done, 1) if done else None

    def as_dict(self) -> dict:
        return {"id": self.key, "name": self.name, "total": self.total, "sent": self.sent,
                "delivered": self.delivered, "failed": self.failed, "cancelled": self.cancelled,
                "pending": self.pending, "segments": self.segments, "cost": round(self.cost, 4),
                "opt_outs": self.opt_outs, "delivery_rate": self.delivery_rate}


def _count(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


_CHARGED = or_(SmsMessage.status.in_((MSG_SENT, MSG_DELIVERED)),
               and_(SmsMessage.status == MSG_FAILED, SmsMessage.provider_id.is_not(None)))


def _measures():
    charged_segments = func.coalesce(func.sum(case((_CHARGED, SmsMessage.segments), else_=0)), 0)
    cost = func.coalesce(func.sum(case((_CHARGED, SmsMessage.segments * SmsChannel.price_per_segment),
                                       else_=0)), 0)
    return (func.count(SmsMessage.id), _count(SmsMessage.status.in_((MSG_SENT, MSG_DELIVERED))),
            _count(SmsMessage.status == MSG_DELIVERED), _count(SmsMessage.status == MSG_FAILED),
            _count(SmsMessage.status == MSG_CANCELLED),
            _count(SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED, MSG_SENDING))), charged_segments, cost)


def _window(query, since: dt.datetime | None, until: dt.datetime | None):
    if since is not None:
        query = query.where(SmsMessage.created_at >= since)
    if until is not None:
        query = query.where(SmsMessage.created_at < until)
    return query


def _row(key, name, values) -> ReportRow:
    total, sent, delivered, failed, cancelled, pending, segments, cost = values
    return ReportRow(key, name, int(total), int(sent), int(delivered), int(failed), int(cancelled),
                     int(pending), int(segments), float(cost or 0))


def by_campaign(session, since=None, until=None, campaign_id: int | None = None) -> list[ReportRow]:
    """One row per campaign that has messages (newest campaign first)."""
    query = (select(SmsCampaign.id, SmsCampaign.name, *_measures())
             .join(SmsMessage, SmsMessage.campaign_id == SmsCampaign.id)
             .outerjoin(SmsChannel, SmsChannel.id == SmsMessage.channel_id)
             .group_by(SmsCampaign.id, SmsCampaign.name).order_by(SmsCampaign.id.desc()))
    if campaign_id is not None:
        query = query.where(SmsCampaign.id == campaign_id)
    rows = [_row(r[0], r[1], r[2:]) for r in session.execute(_window(query, since, until))]
    opt_outs = _campaign_opt_outs(session, [r.key for r in rows], since, until)
    for r in rows:
        r.opt_outs = opt_outs.get(r.key, 0)
    return rows


def _campaign_opt_outs(session, campaign_ids, since, until) -> dict[int, int]:
    if not campaign_ids:
        return {}
    query = (select(SmsMessage.campaign_id, func.count(distinct(SmsReceipt.phone)))
             .join(SmsReceipt, and_(SmsReceipt.phone == SmsMessage.phone, SmsReceipt.kind == "inbound",
                                    SmsReceipt.status == OPT_OUT))
             .where(SmsMessage.campaign_id.in_(campaign_ids), SmsMessage.sent_at.is_not(None),
                    SmsReceipt.received_at >= SmsMessage.sent_at)
             .group_by(SmsMessage.campaign_id))
    return dict(session.execute(_window(query, since, until)).all())


def by_channel(session, since=None, until=None) -> list[ReportRow]:
    """One row per channel that has messages (campaigns and notifications alike), in priority order."""
    query = (select(SmsChannel.id, SmsChannel.name, *_measures())
             .join(SmsMessage, SmsMessage.channel_id == SmsChannel.id)
             .group_by(SmsChannel.id, SmsChannel.name, SmsChannel.priority)
             .order_by(SmsChannel.priority, SmsChannel.id))
    rows = [_row(r[0], r[1], r[2:]) for r in session.execute(_window(query, since, until))]
    opt_query = (select(SmsReceipt.channel_id, func.count(SmsReceipt.id))
                 .where(SmsReceipt.kind == "inbound", SmsReceipt.status == OPT_OUT)
                 .group_by(SmsReceipt.channel_id))
    if since is not None:
        opt_query = opt_query.where(SmsReceipt.received_at >= since)
    if until is not None:
        opt_query = opt_query.where(SmsReceipt.received_at < until)
    opt_outs = dict(session.execute(opt_query).all())
    for r in rows:
        r.opt_outs = opt_outs.get(r.key, 0)
    return rows


def failure_reasons(session, campaign_id: int | None = None, channel_id: int | None = None,
                    since=None, until=None) -> list[dict]:
    """Failed messages by error code and cancelled ones by reason, most frequent first."""
    reason = func.coalesce(SmsMessage.error_code, SmsMessage.cancel_reason, "unknown")
    query = (select(SmsMessage.status, reason.label("reason"), func.count(SmsMessage.id).label("n"))
             .where(SmsMessage.status.in_((MSG_FAILED, MSG_CANCELLED)))
             .group_by(SmsMessage.status, reason).order_by(func.count(SmsMessage.id).desc(), reason))
    if campaign_id is not None:
        query = query.where(SmsMessage.campaign_id == campaign_id)
    if channel_id is not None:
        query = query.where(SmsMessage.channel_id == channel_id)
    return [{"status": status, "reason": why, "count": int(n)}
            for status, why, n in session.execute(_window(query, since, until))]


def totals(rows: list[ReportRow]) -> ReportRow:
    total = ReportRow(None, "")
    for r in rows:
        for name in ("total", "sent", "delivered", "failed", "cancelled", "pending", "segments", "cost",
                     "opt_outs"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    return total
