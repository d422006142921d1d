"""Phone numbers: parsed and stored as E.164 (+8613812341234)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import phonenumbers

from app.services.errors import DomainError


def normalise_phone(raw: str | None, region: str = "CN", field: str = "phone") -> str | None:
    """E.164 form of `raw` (a national number is read in `region`); None for an empty value."""
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise DomainError("%(value)s is not a phone number", field=field, value=repr(text)) from None
    if not phonenumbers.is_valid_number(parsed):
        raise DomainError("%(value)s is not a valid phone number", field=field, value=repr(text))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


LIST_HEADERS = ("phone", "mobile", "手机", "手机号", "号码")


@dataclass
class ListImport:
    added: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message)


def import_phone_list(text: str, add, reason: str | None = None, source: str = "import") -> ListImport:
    """A phone list (one a line; "phone,reason" allowed; a header line and # comments skipped) fed to
    `add(phone, reason, source) -> bool` (True: added, False: already listed). The caller commits."""
    result = ListImport()
    for number, parts in enumerate(csv.reader(io.StringIO((text or "").lstrip("\ufeff"))), start=1):
        parts = [p.strip() for p in parts]
        if not parts or not parts[0] or parts[0].startswith("#"):
            continue
        if number == 1 and parts[0].lower() in LIST_HEADERS:
            continue
        try:
            if add(parts[0], (parts[1] if len(parts) > 1 and parts[1] else reason), source):
                result.added += 1
            else:
                result.existing += 1
        except DomainError as exc:
            result.errors.append((number, exc.message))
    return result
