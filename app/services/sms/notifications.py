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
from dataclasses import dataclass, field

from sqlalchemy import and_, false, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.models.base import utcnow
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


def _insert(session):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(SmsMessage).on_conflict_do_nothing(index_elements=["event_key"])
    if name == "sqlite":
        return sqlite_insert(SmsMessage).on_conflict_do_nothing(index_elements=["event_key"])
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
        raise DomainError(f"Unknown notification event {event!r}", field="event")
    ek = event_key(event, key)
    existing = session.execute(select(SmsMessage.id, SmsMessage.status)
                               .where(SmsMessage.event_key == ek)).first()
    if existing is not None:
        return Notified(existing.id, False, existing.status)
    tpl = template_for(session, event)
    if tpl is None:
        raise DomainError(f"No approved notification template for {event!r}", field="event")
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


def send_notification(session, message_id: int, last_attempt: bool = False) -> str:
    """Send one notification message; return its status afterwards. The caller commits.

    The message is claimed by compare-and-set (pending/deferred → sending, attempts + 1), so a job run
    twice sends it once. A retryable failure puts it back to pending with the error code and raises
    RetryLater — unless this is the last attempt, when it becomes failed.
    """
    claimed = session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id, SmsMessage.kind == NOTIFICATION,
               SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED)))
        .values(status=MSG_SENDING, attempts=SmsMessage.attempts + 1)
        .execution_options(synchronize_session=False)).rowcount
    msg = session.execute(select(SmsMessage.uid, SmsMessage.phone, SmsMessage.content, SmsMessage.channel_id,
                                 SmsMessage.template_id, SmsMessage.status)
                          .where(SmsMessage.id == message_id)).first()
    if msg is None:
        return "missing"
    if not claimed:
        return msg.status
    session.commit()  # the claim is durable before the provider hears of the message
    channel = session.get(SmsChannel, msg.channel_id) if msg.channel_id else None
    if channel is None or not channel.enabled:
        channel = channel_for(session, session.get(SmsTemplate, msg.template_id) if msg.template_id else None)
    if channel is None:
        return _finish(session, message_id, MSG_FAILED, error_code="no_channel")
    try:
        result = provider_for(channel).send_batch([OutboundSms(msg.uid, msg.phone, msg.content or "")])[0]
    except ProviderError as exc:
        code = "provider_timeout" if "timed out" in str(exc) else "provider_error"
        if exc.retryable and not last_attempt:
            _finish(session, message_id, MSG_PENDING, error_code=code, channel_id=channel.id)
            session.commit()
            raise RetryLater(str(exc)) from None
        return _finish(session, message_id, MSG_FAILED, error_code=code, channel_id=channel.id)
    if result.ok:
        from app.services.sms.receipts import match_unmatched

        _finish(session, message_id, MSG_SENT, provider_id=result.provider_id, channel_id=channel.id,
                sent_at=utcnow())
        match_unmatched(session, [c for c in (msg.uid, result.provider_id) if c])
        return MSG_SENT
    if result.retryable and not last_attempt:
        _finish(session, message_id, MSG_PENDING, error_code=result.error_code, channel_id=channel.id)
        session.commit()
        raise RetryLater(result.error_code or "retryable")
    return _finish(session, message_id, MSG_FAILED, error_code=result.error_code or "failed",
                   channel_id=channel.id)


def _finish(session, message_id: int, status: str, **values) -> str:
    session.execute(update(SmsMessage).where(SmsMessage.id == message_id, SmsMessage.status == MSG_SENDING)
                    .values(status=status, **values).execution_options(synchronize_session=False))
    return status


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
