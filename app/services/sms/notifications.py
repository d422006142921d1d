"""Transactional notifications: an event (opportunity assigned, follow-up due, order paid, class reminder …)
is sent with the approved notification template bound to it (SmsTemplate.event).

`notify(session, event, key, phone, variables)` makes at most one SmsMessage per (event, key) — its
`event_key` is unique, so a repeated or concurrent call returns the message already made. The RQ job
(app.jobs.sms_notifications) sends it with `send_notification`, retried with back-off by RQ; the
message keeps its attempts and last error code, and once the retries are used up it is "failed" (the
failed-notifications page lists them).

`notify_assignments` turns new AssignmentLog rows (the dispatch engine's and managers' assignments) into
"opportunity_assigned" notifications for the new owner. It reads the log after a watermark and never
touches the engine: the watermark lives in Redis, and when Redis has lost it, it is recovered from the
newest assignment notification in the database (or starts at the newest log row on the first run).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, false, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app import clock
from app.clock import utcnow
from app.models.employee import Employee
from app.models.sales import ASSIGN, DISPATCH, TRANSFER, AssignmentLog, Customer, Opportunity
from app.models.sms import (
    APPROVED,
    MSG_CANCELLED,
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
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.sms import blacklist, templates, words
from app.services.sms.providers import OutboundSms, ProviderError, provider_for

log = logging.getLogger(__name__)

# Events and the variables each one offers its template.
EVENTS = {
    "opportunity_assigned": ("name", "customer", "opportunity", "product"),
    "follow_up_due": ("name", "customer", "due"),
    "order_paid": ("name", "order", "amount"),
    "class_reminder": ("name", "course", "start"),
}
ASSIGNED = "opportunity_assigned"
ASSIGNMENT_REASONS = (DISPATCH, ASSIGN, TRANSFER)
WATERMARK_KEY = "crm:sms:notify:assignment-watermark"
STALE_AFTER = dt.timedelta(hours=24)  # an assignment older than this is not worth a text any more
RESCAN = dt.timedelta(minutes=5)  # log rows this recent are looked at again (late commits)
RESCAN_ROWS = 20_000  # … among this many ids below the watermark (keeps the look-back an id range)
# Config item: whether notifications, like marketing, skip blacklisted numbers (default: they do not).
SKIP_BLACKLISTED_KEY = "sms.notifications_skip_blacklisted"


def event_key(event: str, key) -> str:
    return f"{event}:{key}"[:128]


def template_for(session, event: str) -> SmsTemplate | None:
    """The approved notification template bound to `event` (the oldest, when there are several)."""
    return session.scalars(select(SmsTemplate).where(
        SmsTemplate.event == event, SmsTemplate.kind == NOTIFICATION, SmsTemplate.status == APPROVED)
        .order_by(SmsTemplate.id).limit(1)).first()


def channel_for(session, template: SmsTemplate | None) -> SmsChannel | None:
    """The template's channel when enabled, else the enabled channel first in priority order."""
    if template is not None and template.channel is not None and template.channel.enabled:
        return template.channel
    return session.scalars(select(SmsChannel).where(SmsChannel.enabled.is_(True))
                           .order_by(SmsChannel.priority, SmsChannel.id).limit(1)).first()


_KEYED = SmsMessage.event_key.isnot(None)  # the unique index on event_key is partial


def _insert(session):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(SmsMessage).on_conflict_do_nothing(index_elements=["event_key"], index_where=_KEYED)
    if name == "sqlite":
        return sqlite_insert(SmsMessage).on_conflict_do_nothing(index_elements=["event_key"],
                                                                index_where=_KEYED)
    return insert(SmsMessage)  # pragma: no cover


@dataclass(frozen=True)
class Notified:
    message_id: int
    created: bool  # False: this (event, key) had a message already
    status: str  # pending, or cancelled with the message's cancel_reason


def notify(session, event: str, key, phone: str, variables: dict, customer_id: int | None = None,
           now: dt.datetime | None = None) -> Notified:
    """Make the message of (event, key) unless it exists; the caller commits and enqueues the send.

    DomainError when the event is unknown, has no approved template, or a template variable is
    missing. A message that must not go (invalid number, blacklisted where configured, sensitive word)
    is still recorded, cancelled with its reason.
    """
    if event not in EVENTS:
        raise DomainError("Unknown notification event %(event)s", field="event", event=repr(event))
    ek = event_key(event, key)
    existing = session.execute(select(SmsMessage.id, SmsMessage.status)
                               .where(SmsMessage.event_key == ek)).first()
    if existing is not None:
        return Notified(existing.id, False, existing.status)
    tpl = template_for(session, event)
    if tpl is None:
        raise DomainError("No approved notification template for %(event)s", field="event", event=repr(event))
    channel = channel_for(session, tpl)
    text = templates.render(tpl.body, variables)
    status, reason = MSG_PENDING, None
    try:
        e164 = normalise_phone(phone)
    except DomainError:
        e164 = None
    if e164 is None:
        status, reason = MSG_CANCELLED, "invalid_number"
    else:
        check = words.matcher(session).check(text)
        if check.blocked:
            status, reason = MSG_CANCELLED, "sensitive_word"
        else:
            text = check.text
            if _skip_blacklisted(session) and blacklist.is_blocked(session, [e164]):
                status, reason = MSG_CANCELLED, "blacklisted"
    content = templates.compose(channel.signature if channel else None, text)
    created = session.execute(_insert(session).values(
        uid=_new_uid(), template_id=tpl.id, channel_id=channel.id if channel else None,
        customer_id=customer_id, phone=(e164 or str(phone or ""))[:20], content=content,
        segments=templates.segments(content), kind=NOTIFICATION, event=event, event_key=ek, status=status,
        cancel_reason=reason, attempts=0, created_at=now or utcnow())).rowcount
    row = session.execute(select(SmsMessage.id, SmsMessage.status).where(SmsMessage.event_key == ek)).one()
    return Notified(row.id, bool(created), row.status)


def _new_uid() -> str:
    from app.models.sms import new_uid

    return new_uid()


def _skip_blacklisted(session) -> bool:
    from app.services.metadata import config_value

    return bool(config_value(session, SKIP_BLACKLISTED_KEY, False))


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


def channels_tried(session, message_id: int) -> list[SmsChannel]:
    """The channels a notification has been handed to so far (up to and including its current one)."""
    msg = session.execute(select(SmsMessage.template_id, SmsMessage.channel_id, SmsMessage.attempts)
                          .where(SmsMessage.id == message_id)).first()
    if msg is None or not msg.attempts or msg.channel_id is None:
        return []
    order = fallback_order(session, msg.template_id)
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


# --- follow-up due ------------------------------------------------------------------------------------
FOLLOW_UP_DUE = "follow_up_due"
FOLLOWUP_WATERMARK_KEY = "crm:sms:notify:followup-watermark"
FOLLOWUP_LOOKBACK = dt.timedelta(hours=1)  # with no watermark (first run, Redis lost it): this far back


@dataclass
class FollowUpScan:
    scanned: int = 0
    created: list[int] = field(default_factory=list)
    watermark: dt.datetime | None = None


def notify_followups_due(session, redis=None, now: dt.datetime | None = None, limit: int = 5000
                         ) -> FollowUpScan:
    """Remind the owning salesperson (Employee.phone) of each owned opportunity whose next follow-up
    fell due since the last scan.

    The event key is opportunity + due time, so a re-run, an overlap or a concurrent scan makes one
    reminder, and a follow-up moved to a new time gets a reminder of its own. The watermark (the due
    time scanned up to) lives in Redis; due times a little before it are looked at again (RESCAN) for
    late commits. Commits the messages, then moves the watermark."""
    from app.models.sales import OWNED

    now = now or utcnow()
    raw = None
    if redis is not None:
        try:
            raw = redis.get(FOLLOWUP_WATERMARK_KEY)
        except Exception:
            raw = None
    mark = dt.datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw) if raw else None
    start = (mark - RESCAN) if mark else now - FOLLOWUP_LOOKBACK
    scan = FollowUpScan(watermark=mark)
    rows = session.execute(
        select(Opportunity.id, Opportunity.next_followup_at, Employee.name.label("employee"), Employee.phone,
               Customer.name.label("customer"), Customer.id.label("customer_id"))
        .join(Employee, Employee.id == Opportunity.owner_id)
        .join(Customer, Customer.id == Opportunity.customer_id)
        .where(Opportunity.status == OWNED, Opportunity.next_followup_at > start,
               Opportunity.next_followup_at <= now)
        .order_by(Opportunity.next_followup_at, Opportunity.id).limit(limit)).all()
    tpl = template_for(session, FOLLOW_UP_DUE) if rows else None
    tz = clock.business_timezone() if rows else None
    for row in rows:
        scan.scanned += 1
        if tpl is None or not row.phone:
            continue
        due = row.next_followup_at.replace(tzinfo=dt.UTC).astimezone(tz).strftime("%m-%d %H:%M")
        variables = {"name": row.employee, "customer": row.customer or f"#{row.customer_id}", "due": due}
        try:
            key = f"{row.id}:{row.next_followup_at:%Y%m%d%H%M}"
            notified = notify(session, FOLLOW_UP_DUE, key, row.phone, variables, now=now)
        except DomainError as exc:
            log.warning("sms notifications: follow-up of opportunity %s not notified: %s", row.id,
                        exc.message)
            continue
        if notified.created and notified.status == MSG_PENDING:
            scan.created.append(notified.message_id)
    session.commit()
    scan.watermark = rows[-1].next_followup_at if len(rows) == limit else now
    if redis is not None:
        try:
            redis.set(FOLLOWUP_WATERMARK_KEY, scan.watermark.isoformat())
        except Exception:
            log.warning("sms notifications: could not store the follow-up watermark")
    return scan


# --- events from other systems ------------------------------------------------------------------------
EXTERNAL_EVENTS = ("order_paid", "class_reminder")  # the others are raised inside the CRM


# --- the assignment hook ---------------------------------------------------------------------------
@dataclass
class AssignmentScan:
    scanned: int = 0
    created: list[int] = field(default_factory=list)  # pending message ids made by this scan
    watermark: int = 0


def _watermark(session, redis) -> tuple[int, bool]:
    """(the last log id looked at, whether one was stored: False on the very first run)."""
    raw = None
    if redis is not None:
        try:
            raw = redis.get(WATERMARK_KEY)
        except Exception:  # Redis down: fall back on the database
            raw = None
    if raw is not None:
        return int(raw), True
    newest = session.scalar(select(SmsMessage.event_key).where(SmsMessage.event == ASSIGNED)
                            .order_by(SmsMessage.id.desc()).limit(1))
    if newest:
        return int(newest.rsplit(":", 1)[1]), True
    # First run: start from now; the history before the feature existed is not notified.
    return session.scalar(select(AssignmentLog.id).order_by(AssignmentLog.id.desc()).limit(1)) or 0, False


def _store_watermark(redis, value: int) -> None:
    if redis is None:
        return
    try:
        redis.set(WATERMARK_KEY, value)
    except Exception:
        log.warning("sms notifications: could not store the assignment watermark %s", value)


def notify_assignments(session, redis=None, limit: int = 1000, now: dt.datetime | None = None
                       ) -> AssignmentScan:
    """Notify the new owners of assignments logged after the watermark (up to `limit` log rows).

    Rows of the last RESCAN are looked at again: a dispatch transaction that took a lower id but
    committed after a later one is not skipped. Safe to run twice or concurrently: each log row makes
    at most one message (the row id is in the event key). Commits the messages, then moves the watermark.
    """
    now = now or utcnow()
    start, stored = _watermark(session, redis)
    scan = AssignmentScan(watermark=start)
    if not stored:
        _store_watermark(redis, start)  # the baseline: what is logged from now on gets notified
    recent = (and_(AssignmentLog.id > start - RESCAN_ROWS, AssignmentLog.created_at >= now - RESCAN)
              if stored else false())
    rows = session.execute(
        select(AssignmentLog.id, AssignmentLog.created_at, AssignmentLog.opportunity_id,
               Employee.name.label("employee"), Employee.phone, Customer.name.label("customer"),
               Customer.id.label("customer_id"), Opportunity.product_line_id)
        .join(Employee, Employee.id == AssignmentLog.to_owner_id)
        .join(Opportunity, Opportunity.id == AssignmentLog.opportunity_id)
        .join(Customer, Customer.id == Opportunity.customer_id)
        .where(AssignmentLog.reason.in_(ASSIGNMENT_REASONS),
               or_(AssignmentLog.id > start, recent))
        .order_by(AssignmentLog.id).limit(limit)).all()
    if not rows:
        return scan
    tpl = template_for(session, ASSIGNED)
    done = set(session.scalars(select(SmsMessage.event_key).where(
        SmsMessage.event_key.in_([event_key(ASSIGNED, r.id) for r in rows if r.id <= start]))))
    for row in rows:
        scan.scanned += 1
        if (tpl is None or not row.phone or row.created_at < now - STALE_AFTER
                or event_key(ASSIGNED, row.id) in done):
            continue
        variables = {"name": row.employee, "customer": row.customer or f"#{row.customer_id}",
                     "opportunity": row.opportunity_id, "product": _product(session, row.product_line_id)}
        try:
            notified = notify(session, ASSIGNED, row.id, row.phone, variables, now=now)
        except DomainError as exc:  # a template whose variables this event does not offer
            log.warning("sms notifications: assignment %s not notified: %s", row.id, exc.message)
            continue
        if notified.created and notified.status == MSG_PENDING:
            scan.created.append(notified.message_id)
    session.commit()
    scan.watermark = max(start, rows[-1].id)
    if scan.watermark != start:
        _store_watermark(redis, scan.watermark)
    return scan


def _product(session, product_line_id: int | None) -> str:
    if product_line_id is None:
        return ""
    from app.models.metadata import DictItem

    return session.scalar(select(DictItem.label_zh).where(DictItem.id == product_line_id)) or ""
