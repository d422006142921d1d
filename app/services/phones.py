"""Phone numbers: parsed and stored as E.164 (+8613812341234)."""

from __future__ import annotations

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
        raise DomainError(f"{text!r} is not a phone number", field=field) from None
    if not phonenumbers.is_valid_number(parsed):
        raise DomainError(f"{text!r} is not a valid phone number", field=field)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
