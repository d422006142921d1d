"""Phone masking: numbers show as 138****1234 everywhere. A role with "view full phone" sees a full number
only on request (a reveal button or API call), and each such look is audited."""

from __future__ import annotations

import re

import phonenumbers

FULL_PHONE_PERMISSION = ("can_view_full", "Phone")
#: A phone number inside free text (audit summaries, before/after values): E.164 ("+" and 8–15 digits) or
#: a mainland mobile number written without its country code.
PHONE_IN_TEXT = re.compile(r"(?<![\w+])(\+\d{8,15}|1[3-9]\d{9})(?!\d)")


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


def phones_in_text(text: str | None) -> list[str]:
    """The phone numbers written in `text`, in order, each once."""
    return list(dict.fromkeys(PHONE_IN_TEXT.findall(text or "")))


def mask_phones_in_text(text: str | None) -> str | None:
    """`text` with every phone number in it masked (the rest unchanged)."""
    if not text:
        return text
    return PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group(1)), text)


def can_view_full_phone(viewer) -> bool:
    return viewer.can(*FULL_PHONE_PERMISSION)
