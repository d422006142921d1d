"""Phone masking: numbers show as 138****1234 unless the user may view full numbers."""

from __future__ import annotations

import phonenumbers

FULL_PHONE_PERMISSION = ("can_view_full", "Phone")


def national_digits(phone: str | None) -> str:
    if not phone:
        return ""
    try:
        parsed = phonenumbers.parse(phone, None)
        return str(parsed.national_number)
    except phonenumbers.NumberParseException:
        return "".join(ch for ch in phone if ch.isdigit())


def mask_phone(phone: str | None) -> str:
    """Keep the first 3 and last 4 digits of the national number: +8613812341234 → 138****1234."""
    digits = national_digits(phone)
    if not digits:
        return ""
    if len(digits) <= 7:  # short numbers: only the last two digits stay visible
        return "*" * max(len(digits) - 2, 1) + digits[-2:] if len(digits) > 2 else "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def can_view_full_phone(viewer) -> bool:
    return viewer.can(*FULL_PHONE_PERMISSION)


def shown_phone(phone: str | None, viewer) -> str:
    return (phone or "") if can_view_full_phone(viewer) else mask_phone(phone)
