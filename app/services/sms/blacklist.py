"""The phone blacklist (E.164, one row per number) and opt-out keywords in inbound replies.

Marketing never goes to a blacklisted number; an inbound reply that is just an opt-out keyword ("R",
"TD", "退订", "STOP" …, configurable as the JSON list in config item `sms.opt_out_keywords`) puts the
sender on the list.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from app.clock import utcnow
from app.models.sms import BlacklistEntry
from app.services import reference
from app.services.errors import DomainError
from app.services.phones import ListImport, import_phone_list, normalise_phone
from app.services.sms.words import normalise
from app.services.sql import dialect_insert

CONFIG_KEY = "sms.opt_out_keywords"
OPT_OUT_KEYWORDS = tuple(reference.default(CONFIG_KEY))
SOURCES = ("manual", "import", "inbound", "api")
CHUNK = 500


def is_blocked(session, phones: Iterable[str]) -> set[str]:
    """Which of `phones` (E.164) are on the blacklist: one query per 500 numbers."""
    wanted = list(dict.fromkeys(p for p in phones if p))
    found: set[str] = set()
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        found.update(session.scalars(select(BlacklistEntry.phone).where(BlacklistEntry.phone.in_(chunk))))
    return found


def _insert(session):
    return dialect_insert(session, BlacklistEntry).on_conflict_do_nothing(index_elements=["phone"])


def add(session, phone: str, reason: str | None = None, source: str = "manual") -> bool:
    """Put `phone` on the list; False when it already was (idempotent, safe under concurrency).

    The caller commits. `phone` is normalised to E.164 (DomainError(field="phone") when invalid).
    """
    e164 = normalise_phone(phone)
    if e164 is None:
        raise DomainError("Enter a phone number", field="phone")
    now = utcnow()
    result = session.execute(_insert(session).values(
        phone=e164, reason=(reason or None) and reason[:255], source=source, created_at=now, updated_at=now))
    return bool(result.rowcount)


def remove(session, phone: str) -> bool:
    e164 = normalise_phone(phone)
    return bool(session.execute(delete(BlacklistEntry).where(BlacklistEntry.phone == e164)).rowcount)


def check_entry(entry: BlacklistEntry) -> None:
    """Save rules of a hand-edited entry: the phone in E.164, known source."""
    entry.phone = normalise_phone(entry.phone)
    if not entry.phone:
        raise DomainError("Enter a phone number", field="phone")
    if not entry.source:
        entry.source = "manual"
    if entry.source not in SOURCES:
        raise DomainError("Source must be one of %(values)s", field="source", values=", ".join(SOURCES))


def import_phones(session, text: str, reason: str | None = None, source: str = "import") -> ListImport:
    """Numbers from a list (one a line; "phone,reason" allowed); idempotent. The caller commits."""
    return import_phone_list(text, lambda phone, why, src: add(session, phone, why, src), reason, source)


def _key(text: str) -> str:
    return normalise(text)


def opt_out_keywords(session=None) -> tuple[str, ...]:
    """The configured keywords (config item `sms.opt_out_keywords`, a JSON list) or the defaults."""
    if session is None:
        return OPT_OUT_KEYWORDS
    from app.services.metadata import config_value

    value = config_value(session, CONFIG_KEY)
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        return tuple(value)
    return OPT_OUT_KEYWORDS


def is_opt_out(text: str | None, keywords: Iterable[str] | None = None, session=None) -> bool:
    """Whether an inbound reply is an opt-out: the whole reply, normalised (case, width, punctuation
    and spaces ignored), equals one of the keywords ("r", " TD。", "退订!" do; "Really?" does not)."""
    if not text:
        return False
    if keywords is None:
        keywords = opt_out_keywords(session)
    key = _key(text)
    return bool(key) and key in {_key(k) for k in keywords}
