"""Delivery receipts and inbound replies: statuses only move forward; what matches nothing yet is kept.

A message's status moves pending/deferred → sending → sent → delivered | failed. A receipt moves it by
compare-and-set (`UPDATE … WHERE status IN (the statuses below the receipt's)`), so receipts may come
in any order, twice, or concurrently: a late "sent" never overwrites "delivered", a duplicate changes
nothing, and delivered / failed / cancelled are final.

Every receipt is kept as an SmsReceipt row (the log of what the provider told us). One whose message is
not known yet (the receipt overtook our own "sent" commit, or names a provider id we have not stored) is
kept with matched = false; `match_unmatched` applies it once the message appears (the sender calls it
after a batch, and the periodic job sweeps). A request that is refused (bad signature or payload,
text the database cannot store) is kept too, with status "rejected", the reason and its body, so that it
can be looked at.

An inbound reply that is an opt-out keyword puts the number on the blacklist (source "inbound"), clears
the customer's marketing consent and cancels the marketing messages still waiting for that number.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, insert, or_, select, update

from app.clock import utcnow
from app.models.sales import Customer
from app.models.sms import (
    MARKETING,
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_DELIVERED,
    MSG_FAILED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    SmsMessage,
    SmsReceipt,
)
from app.security.input_guards import unstorable_text
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.sms import blacklist
from app.services.sms.providers import Inbound, Receipt, ReceiptError

log = logging.getLogger(__name__)

RECEIPT, INBOUND = "receipt", "inbound"
REJECTED = "rejected"  # SmsReceipt.status of a refused request
# The statuses a receipt may move a message from (anything else: stale, duplicate or final).
MOVES_FROM = {
    MSG_SENT: (MSG_PENDING, MSG_DEFERRED, MSG_SENDING),
    MSG_DELIVERED: (MSG_PENDING, MSG_DEFERRED, MSG_SENDING, MSG_SENT),
    MSG_FAILED: (MSG_PENDING, MSG_DEFERRED, MSG_SENDING, MSG_SENT),
}
CHUNK = 500
PAYLOAD_KEEP = 4000  # characters of a raw body kept with a refused request


@dataclass
class ReceiptOutcome:
    applied: int = 0  # moved a message forward
    ignored: int = 0  # matched, but stale or a duplicate
    unmatched: int = 0  # kept for later matching

    def as_dict(self) -> dict:
        return {"applied": self.applied, "ignored": self.ignored, "unmatched": self.unmatched}


@dataclass
class InboundOutcome:
    received: int = 0
    opted_out: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"received": self.received, "opted_out": len(self.opted_out)}


def _advance(session, message_id: int, receipt: Receipt, now) -> bool:
    """Move one message forward by compare-and-set; False when the receipt is stale or a duplicate."""
    # The provider had the message: it was sent, even when this receipt overtook our own record of it.
    values: dict = {"status": receipt.status, "sent_at": func.coalesce(SmsMessage.sent_at, receipt.at or now)}
    if receipt.status == MSG_DELIVERED:
        values["delivered_at"] = receipt.at or now
    elif receipt.status == MSG_FAILED:
        values["error_code"] = receipt.error_code or "undelivered"
    result = session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id, SmsMessage.status.in_(MOVES_FROM[receipt.status]))
        .values(**values).execution_options(synchronize_session=False))
    return bool(result.rowcount)


def _find(session, correlations: Iterable[str]) -> dict[str, int]:
    """correlation (our uid or the provider's id) → message id, for those that exist."""
    wanted = list(dict.fromkeys(c for c in correlations if c))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start:start + CHUNK]
        for mid, uid, provider_id in session.execute(
                select(SmsMessage.id, SmsMessage.uid, SmsMessage.provider_id)
                .where(or_(SmsMessage.uid.in_(part), SmsMessage.provider_id.in_(part)))):
            found[uid] = mid
            if provider_id:
                found[provider_id] = mid
    return found


def _check_storable(where: str, items: list, fields: dict[str, str]) -> None:
    """ReceiptError naming the first field (`receipts[0].id`) whose text the database cannot store (a
    NUL, an unpaired surrogate), whichever adapter parsed it: a refusal that is kept, not a failed write."""
    for n, item in enumerate(items):
        for attr, name in fields.items():
            value = getattr(item, attr)
            if isinstance(value, str) and unstorable_text(value):
                field = f"{where}[{n}].{name}"
                raise ReceiptError(f"{field}: contains a character that cannot be stored", field)


def apply_receipts(session, channel_id: int | None, receipts: list[Receipt]) -> ReceiptOutcome:
    """Apply a batch of parsed receipts and keep each as an SmsReceipt row. The caller commits."""
    _check_storable("receipts", receipts, {"correlation": "id", "phone": "phone", "error_code": "code"})
    now, outcome = utcnow(), ReceiptOutcome()
    found = _find(session, (r.correlation for r in receipts))
    rows = []
    for r in receipts:
        mid = found.get(r.correlation)
        if mid is None:
            outcome.unmatched += 1
        elif _advance(session, mid, r, now):
            outcome.applied += 1
        else:
            outcome.ignored += 1
        rows.append({"channel_id": channel_id, "kind": RECEIPT, "correlation": r.correlation,
                     "phone": r.phone, "status": r.status, "text": r.error_code, "matched": mid is not None,
                     "payload": json.dumps({"at": r.at.isoformat() if r.at else None}), "received_at": now})
    if rows:
        session.execute(insert(SmsReceipt), rows)
    return outcome


def match_unmatched(session, correlations: Iterable[str] | None = None, limit: int = 5000) -> int:
    """Apply kept receipts whose message now exists (all of them, or those naming `correlations`);
    return how many were matched. Oldest first, and the compare-and-set keeps the order harmless.
    The caller commits."""
    query = (select(SmsReceipt.id, SmsReceipt.correlation, SmsReceipt.status, SmsReceipt.text,
                    SmsReceipt.payload)
             .where(SmsReceipt.kind == RECEIPT, SmsReceipt.matched.is_(False),
                    SmsReceipt.correlation.is_not(None), SmsReceipt.status != REJECTED)
             .order_by(SmsReceipt.id).limit(limit))
    if correlations is not None:
        wanted = list(dict.fromkeys(c for c in correlations if c))
        if not wanted:
            return 0
        query = query.where(SmsReceipt.correlation.in_(wanted))
    pending = session.execute(query).all()
    found = _find(session, (row.correlation for row in pending))
    now, matched = utcnow(), []
    for row in pending:
        mid = found.get(row.correlation)
        if mid is None:
            continue
        receipt = Receipt(row.correlation, row.status, error_code=row.text, at=_stored_time(row.payload))
        _advance(session, mid, receipt, now)
        matched.append(row.id)
    for start in range(0, len(matched), CHUNK):
        session.execute(update(SmsReceipt).where(SmsReceipt.id.in_(matched[start:start + CHUNK]))
                        .values(matched=True).execution_options(synchronize_session=False))
    return len(matched)


def _stored_time(raw: str | None) -> dt.datetime | None:
    """The provider's time kept in a receipt's payload (None when it gave none)."""
    try:
        at = json.loads(raw or "{}").get("at")
        return dt.datetime.fromisoformat(at) if at else None
    except (ValueError, AttributeError):
        return None


def record_inbound(session, channel_id: int | None, replies: list[Inbound]) -> InboundOutcome:
    """Keep each reply; an opt-out keyword puts the number on the blacklist, clears the marketing consent
    of its customer and of the customer that one was merged into, and cancels marketing still waiting
    for either. The caller commits."""
    _check_storable("replies", replies, {"phone": "phone", "text": "text"})
    now, outcome = utcnow(), InboundOutcome()
    rows = []
    for reply in replies:
        try:
            phone = normalise_phone(reply.phone)
        except DomainError:
            phone = None
        opt_out = phone is not None and blacklist.is_opt_out(reply.text, session=session)
        rows.append({"channel_id": channel_id, "kind": INBOUND, "phone": (phone or reply.phone)[:20],
                     "text": reply.text[:500], "status": "opt_out" if opt_out else "reply",
                     "matched": True, "received_at": now})
        outcome.received += 1
        if not opt_out:
            continue
        blacklist.add(session, phone, reason=f"Inbound reply: {reply.text[:200]}", source="inbound")
        # The customer with that number, and the one it was merged into: the person behind both.
        people = [i for row in session.execute(select(Customer.id, Customer.merged_into_id)
                                               .where(Customer.phone == phone)) for i in row if i]
        session.execute(update(Customer).where(Customer.id.in_(people), Customer.marketing_consent.is_(True))
                        .values(marketing_consent=False).execution_options(synchronize_session=False))
        session.execute(update(SmsMessage)
                        .where(or_(SmsMessage.phone == phone, SmsMessage.customer_id.in_(people)),
                               SmsMessage.kind == MARKETING,
                               SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED)))
                        .values(status=MSG_CANCELLED, cancel_reason="opted_out")
                        .execution_options(synchronize_session=False))
        outcome.opted_out.append(phone)
    if rows:
        session.execute(insert(SmsReceipt), rows)
    return outcome


def record_rejected(session, channel_id: int | None, kind: str, reason: str, body: bytes) -> None:
    """Keep a refused request (bad signature or payload) for inspection: the reason and the first
    PAYLOAD_KEEP bytes of its body, as text (bytes that are not UTF-8, and NULs, which PostgreSQL's text
    cannot hold, become U+FFFD). The caller commits."""
    payload = body[:PAYLOAD_KEEP].decode("utf-8", "replace").replace("\x00", "\ufffd")
    session.execute(insert(SmsReceipt).values(
        channel_id=channel_id, kind=kind, status=REJECTED, text=reason[:500].replace("\x00", "\ufffd"),
        matched=False, payload=payload, received_at=utcnow()))
    log.warning("sms %s refused (channel %s): %s", kind, channel_id, reason)
