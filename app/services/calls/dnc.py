"""The do-not-call list: E.164 numbers never dialled while listed (until `expires_at`, when set)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_, select

from app.clock import utcnow
from app.models.calls import DoNotCall
from app.services.errors import DomainError
from app.services.phones import ListImport, import_phone_list, normalise_phone


def is_listed(session, phone: str, now: dt.datetime | None = None) -> bool:
    now = now or utcnow()
    active = or_(DoNotCall.expires_at.is_(None), DoNotCall.expires_at > now)
    return session.scalar(select(DoNotCall.id).where(DoNotCall.phone == phone, active)) is not None


def check_entry(entry: DoNotCall) -> None:
    phone = normalise_phone(entry.phone)
    if phone is None:
        raise DomainError("Enter a phone number", field="phone")
    entry.phone = phone
    if entry.reason:
        entry.reason = entry.reason.strip()[:255] or None


def add(session, phone: str, reason: str | None = None, source: str = "manual") -> bool:
    """Put a number on the list; False when it already is. The caller commits."""
    phone = normalise_phone(phone)
    if phone is None:
        raise DomainError("Enter a phone number", field="phone")
    if session.scalar(select(DoNotCall.id).where(DoNotCall.phone == phone)) is not None:
        return False
    session.add(DoNotCall(phone=phone, reason=(reason or "").strip()[:255] or None, source=source))
    session.flush()
    return True


def remove(session, phone: str) -> bool:
    phone = normalise_phone(phone)
    return bool(session.execute(delete(DoNotCall).where(DoNotCall.phone == phone)).rowcount)


def import_phones(session, text: str, reason: str | None = None, source: str = "import") -> ListImport:
    """Numbers from a list (one a line; "phone,reason" allowed); idempotent. The caller commits."""
    return import_phone_list(text, lambda phone, why, src: add(session, phone, why, src), reason, source)
