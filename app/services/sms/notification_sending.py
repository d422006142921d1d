"""Sending a transactional notification: one message, claimed by compare-and-set, sent on its channel
within the channel's rate limit, retried by RQ on a retryable failure, then falling back to the next
enabled channel in priority order; `reconcile_notifications` settles messages a killed worker left
"sending". The RQ job (app.jobs.sms_notifications) calls these; the message keeps its attempts and last
error code, and once the retries and channels are used up it is "failed" (the failed-notifications page
lists them).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, or_, select, update

from app.clock import utcnow
from app.models.sms import (
    MSG_DEFERRED,
    MSG_FAILED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    NOTIFICATION,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.services.sms.providers import OutboundSms, ProviderError, provider_for

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """The provider could not take the message now; the job raises this so that RQ retries it."""


LEASE_FLOOR = 30  # seconds a claimed notification stays "sending" before the reconciler may take it over
LEGACY_GRACE = dt.timedelta(minutes=10)  # a "sending" row without a lease (claimed before leases existed)
# Failures after which the message may have reached the provider anyway (a fallback could send it twice).
AMBIGUOUS = ("provider_timeout", "missing_result")


def _lease(channel: SmsChannel | None, wait: float = 0.0) -> dt.timedelta:
    timeout = (channel.timeout_seconds if channel is not None else None) or 10
    return dt.timedelta(seconds=max(LEASE_FLOOR, 2 * timeout + 5) + wait)


def fallback_order(session, template_id: int | None) -> list[SmsChannel]:
    """Every channel in the order a notification tries them: its template's channel, then by priority.

    Disabled channels keep their place (so that a message's position in the order is stable) and are
    skipped when choosing."""
    first = session.scalar(select(SmsTemplate.channel_id).where(SmsTemplate.id == template_id)) \
        if template_id else None
    channels = session.scalars(select(SmsChannel).order_by(SmsChannel.priority, SmsChannel.id)).all()
    return sorted(channels, key=lambda c: c.id != first)  # stable: the rest stay in priority order


def next_channel(session, template_id: int | None, current_id: int | None) -> SmsChannel | None:
    """The first enabled channel after `current_id` in the fallback order (None when none is left).

    The order only moves forward, so a message is tried once per channel, never twice on one."""
    order = fallback_order(session, template_id)
    ids = [c.id for c in order]
    after = ids.index(current_id) + 1 if current_id in ids else 0
    return next((c for c in order[after:] if c.enabled), None)


def channels_tried(session, message_id: int, orders: dict | None = None) -> list[SmsChannel]:
    """The channels a notification has been handed to so far (up to and including its current one).

    `orders` memoises the fallback order per template across calls (a list page asks once per row;
    the message itself comes from the session's identity map when the page loaded it)."""
    msg = session.get(SmsMessage, message_id)
    if msg is None or not msg.attempts or msg.channel_id is None:
        return []
    orders = {} if orders is None else orders
    if msg.template_id not in orders:
        orders[msg.template_id] = fallback_order(session, msg.template_id)
    order = orders[msg.template_id]
    ids = [c.id for c in order]
    if msg.channel_id not in ids:
        return []
    return [c for c in order[:ids.index(msg.channel_id) + 1] if c.enabled or c.id == msg.channel_id]


def send_notification(session, message_id: int, last_attempt: bool = False, redis=None,
                      now: dt.datetime | None = None) -> str:
    """Send one notification message; return its status afterwards. The caller commits.

    The message is claimed by compare-and-set (pending/deferred → sending, attempts + 1, a claim token
    and a lease in `send_after`), so a job run twice sends it once; a worker killed while it is
    "sending" leaves an expired lease that `reconcile_notifications` settles. The send waits its turn
    on the channel's rate limit (shared by all workers) when `redis` is given. A retryable failure puts
    it back to pending with the error code and raises RetryLater — unless this is the last attempt. A
    definite failure (non-retryable, or retries used up) falls back to the next enabled channel in
    priority order: the message goes back to pending on that channel and this returns "pending" (the
    caller queues a new job); with no channel left it is "failed".
    """
    now = now or utcnow()
    msg = session.execute(select(SmsMessage.uid, SmsMessage.phone, SmsMessage.content, SmsMessage.channel_id,
                                 SmsMessage.template_id, SmsMessage.status, SmsMessage.kind)
                          .where(SmsMessage.id == message_id)).first()
    if msg is None:
        return "missing"
    if msg.kind != NOTIFICATION or msg.status not in (MSG_PENDING, MSG_DEFERRED):
        return msg.status
    channel = session.get(SmsChannel, msg.channel_id) if msg.channel_id else None
    if channel is None or not channel.enabled:
        channel = next_channel(session, msg.template_id, msg.channel_id)
    token = uuid.uuid4().hex
    claimed = session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id, SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED)),
               SmsMessage.channel_id.is_(msg.channel_id) if msg.channel_id is None
               else SmsMessage.channel_id == msg.channel_id)
        .values(status=MSG_SENDING, attempts=SmsMessage.attempts + 1, claim=token,
                channel_id=channel.id if channel else msg.channel_id, send_after=now + _lease(channel))
        .execution_options(synchronize_session=False)).rowcount
    if not claimed:
        return session.scalar(select(SmsMessage.status).where(SmsMessage.id == message_id))
    session.commit()  # the claim (and the channel it goes to) is durable before the provider hears of it
    if channel is None:
        return _finish(session, message_id, token, MSG_FAILED, error_code="no_channel")
    if redis is not None:
        from app.services.sms.limits import ChannelRateLimiter

        wait = ChannelRateLimiter(redis).reserve(channel.id, 1, channel.rate_limit)
        if wait > 0:
            session.execute(update(SmsMessage).where(SmsMessage.id == message_id, SmsMessage.claim == token)
                            .values(send_after=utcnow() + _lease(channel, wait)))
            session.commit()
            time.sleep(wait)
    provider = provider_for(channel)
    try:
        result = provider.send_batch([OutboundSms(msg.uid, msg.phone, msg.content or "")])[0]
        ok, provider_id, code, retryable = result.ok, result.provider_id, result.error_code, result.retryable
    except ProviderError as exc:
        ok, provider_id, retryable = False, None, exc.retryable
        code = "provider_timeout" if "timed out" in str(exc) else "provider_error"
    if not ok and code in AMBIGUOUS and getattr(provider, "lookup", None) is not None:
        accepted = provider.lookup([msg.uid])  # it may have gone through anyway: ask before going on
        if msg.uid in accepted:
            ok, provider_id = True, accepted[msg.uid]
    if ok:
        return _sent(session, message_id, token, msg.uid, provider_id)
    code = code or "failed"
    if retryable and not last_attempt:
        _finish(session, message_id, token, MSG_PENDING, error_code=code)
        session.commit()
        raise RetryLater(code)
    ambiguous = code in AMBIGUOUS and getattr(provider, "lookup", None) is None
    fallback = None if ambiguous else next_channel(session, msg.template_id, channel.id)
    if fallback is not None:
        log.info("sms notification %s: %s on channel %s, falling back to channel %s", message_id, code,
                 channel.id, fallback.id)
        return _finish(session, message_id, token, MSG_PENDING, error_code=code, channel_id=fallback.id)
    return _finish(session, message_id, token, MSG_FAILED, error_code=code)


def _sent(session, message_id: int, token: str, uid: str, provider_id: str | None) -> str:
    from app.services.sms.receipts import match_unmatched

    _finish(session, message_id, token, MSG_SENT, provider_id=provider_id, sent_at=utcnow())
    match_unmatched(session, [c for c in (uid, provider_id) if c])
    return MSG_SENT


def _finish(session, message_id: int, token: str, status: str, **values) -> str:
    """Move the message out of "sending" by CAS on our claim (a reconciler that took it over wins)."""
    done = session.execute(update(SmsMessage)
                           .where(SmsMessage.id == message_id, SmsMessage.status == MSG_SENDING,
                                  SmsMessage.claim == token)
                           .values(status=status, claim=None, send_after=None, **values)
                           .execution_options(synchronize_session=False)).rowcount
    if not done:
        return session.scalar(select(SmsMessage.status).where(SmsMessage.id == message_id))
    return status


@dataclass
class Reconciled:
    sent: list[int] = field(default_factory=list)  # the provider had accepted them
    again: list[int] = field(default_factory=list)  # back to pending: queue their sending again


def reconcile_notifications(session, now: dt.datetime | None = None, limit: int = 500) -> Reconciled:
    """Settle notifications left "sending" by a killed worker (their lease in `send_after` expired).

    Each is taken over by CAS on its old claim, then the provider of the channel it was handed to is
    asked by correlation id (our uid): accepted → sent; not accepted → pending, to be sent again. A
    provider that cannot answer gets it back to pending too, on the same channel with the same uid, which
    such a provider deduplicates on (never a fallback channel, which could not). Commits."""
    now = now or utcnow()
    out = Reconciled()
    rows = session.execute(select(SmsMessage.id, SmsMessage.uid, SmsMessage.claim, SmsMessage.channel_id)
                           .where(SmsMessage.campaign_id.is_(None), SmsMessage.kind == NOTIFICATION,
                                  SmsMessage.status == MSG_SENDING,
                                  or_(SmsMessage.send_after < now,
                                      and_(SmsMessage.send_after.is_(None),
                                           SmsMessage.created_at < now - LEGACY_GRACE)))
                           .order_by(SmsMessage.id).limit(limit)).all()
    for row in rows:
        token = uuid.uuid4().hex
        old = SmsMessage.claim.is_(None) if row.claim is None else SmsMessage.claim == row.claim
        took = session.execute(update(SmsMessage)
                               .where(SmsMessage.id == row.id, SmsMessage.status == MSG_SENDING, old)
                               .values(claim=token, send_after=now + _lease(None))
                               .execution_options(synchronize_session=False)).rowcount
        session.commit()
        if not took:
            continue
        channel = session.get(SmsChannel, row.channel_id) if row.channel_id else None
        accepted = {}
        if channel is not None:
            provider = provider_for(channel)
            if getattr(provider, "lookup", None) is not None:
                accepted = provider.lookup([row.uid])
        if row.uid in accepted:
            if _sent(session, row.id, token, row.uid, accepted[row.uid]) == MSG_SENT:
                out.sent.append(row.id)
        elif _finish(session, row.id, token, MSG_PENDING, error_code="reconciled") == MSG_PENDING:
            out.again.append(row.id)
        session.commit()
    return out
