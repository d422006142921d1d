"""Transactional notifications: an event (opportunity assigned, follow-up due, order paid, class reminder …)
is sent with the approved notification template bound to it (SmsTemplate.event).

`notify(session, event, key, phone, variables)` makes at most one SmsMessage per (event, key) — its
`event_key` is unique, so a repeated or concurrent call returns the message already made. Where it goes
from there: app.services.sms.notification_sending (one send with retries, leases and channel fallback);
which CRM events make notifications: app.services.sms.notification_triggers (assignments, follow-ups
due); other systems raise theirs through the API (EXTERNAL_EVENTS).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from app.clock import utcnow
from app.models.sms import (
    APPROVED,
    MSG_CANCELLED,
    MSG_PENDING,
    NOTIFICATION,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.sms import blacklist, templates, words
from app.services.sql import dialect_insert

# Events and the variables each one offers its template.
EVENTS = {
    "opportunity_assigned": ("name", "customer", "opportunity", "product"),
    "follow_up_due": ("name", "customer", "due"),
    "order_paid": ("name", "order", "amount"),
    "class_reminder": ("name", "course", "start"),
}
ASSIGNED = "opportunity_assigned"
FOLLOW_UP_DUE = "follow_up_due"
EXTERNAL_EVENTS = ("order_paid", "class_reminder")  # the others are raised inside the CRM
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
    """INSERT … ON CONFLICT (event_key) DO NOTHING: a concurrent notify of the same key makes no second
    message."""
    return dialect_insert(session, SmsMessage).on_conflict_do_nothing(index_elements=["event_key"],
                                                                      index_where=_KEYED)


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

    return bool(config_value(session, SKIP_BLACKLISTED_KEY))
