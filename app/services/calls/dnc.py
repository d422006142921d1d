"""The do-not-call list: E.164 numbers never dialled while listed (until `expires_at`, when set)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select

from app.models.base import utcnow
from app.models.calls import DoNotCall
from app.services.errors import DomainError
from app.services.phones import normalise_phone

HEADERS = ("phone", "mobile", "手机", "手机号", "号码")


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


@dataclass
class ImportResult:
    added: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def import_phones(session, text: str, reason: str | None = None, source: str = "import") -> ImportResult:
    """Numbers from a list (one a line; "phone,reason" allowed); idempotent. The caller commits."""
    result = ImportResult()
    for number, parts in enumerate(csv.reader(io.StringIO((text or "").lstrip("\ufeff"))), start=1):
        parts = [p.strip() for p in parts]
        if not parts or not parts[0] or parts[0].startswith("#"):
            continue
        if number == 1 and parts[0].lower() in HEADERS:
            continue
        try:
            if add(session, parts[0], (parts[1] if len(parts) > 1 and parts[1] else reason), source):
                result.added += 1
            else:
                result.existing += 1
        except DomainError as exc:
            result.errors.append((number, exc.message))
    return result
