"""Outbound-call configuration as commands: outbound interfaces (外呼接口), lines, caller-ID numbers, seats
and do-not-call entries.

Each kind has one `validate_*` rule set (normalise the item in place, or raise DomainError with the field
at fault) and `save(session, item)` runs it, then writes — validate, then run, as Superset's commands do.
The admin forms and the REST API validate through the same functions (the view's `check_item`), and a
CLI or a job calls `save`: no path writes configuration the rules have not seen. The caller commits.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from app.models.calls import (
    NUMBER_ACTIVE,
    NUMBER_STATUSES,
    PROVIDERS,
    SIMULATOR,
    CallLine,
    CallNumber,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.services.calls import dnc
from app.services.calls.dialing import format_windows, parse_windows
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.signing import check_base_url
from app.services.sms.secrets import ENV_NAME, encrypt

# (new secret typed in the form, "remove it" box, encrypted column)
SECRET_FIELDS = (("new_secret", "clear_secret", "encrypted_secret"),
                 ("new_callback_secret", "clear_callback_secret", "encrypted_callback_secret"))
TIMEOUT_RANGE = (1, 120)  # seconds
CONCURRENCY_RANGE = (1, 10000)
MINUTES_RANGE = (1, 1440)


def _refuse(error: DomainError, field: str) -> DomainError:
    """`error` on `field` (unless it names its own): the caller writes DomainError("…") so that
    `pybabel extract -k DomainError` still finds the message."""
    error.field = error.field or field
    return error


def _unique(session, column, item, error: DomainError) -> None:
    """Raise `error` (on `column`'s field) when another row than `item` already has its value in the
    unique `column`."""
    model = column.class_
    clash = select(model.id).where(column == getattr(item, column.key), model.id != (item.id or 0))
    if session.scalar(clash) is not None:
        raise _refuse(error, column.key)


def _required_text(item, field: str, error: DomainError) -> None:
    """Strip `item.<field>`; raise `error` (on that field) when nothing is left."""
    setattr(item, field, (getattr(item, field) or "").strip())
    if not getattr(item, field):
        raise _refuse(error, field)


def _chosen(item, relation: str, error: DomainError) -> None:
    """Raise `error` (on that field) unless `item.<relation>` is set, as an object or by its id."""
    if getattr(item, relation) is None and getattr(item, f"{relation}_id") is None:
        raise _refuse(error, relation)


def _within(value, bounds: tuple[int, int]) -> bool:
    return value is not None and bounds[0] <= value <= bounds[1]


def _apply_secrets(item) -> None:
    """A secret typed in replaces the stored one (encrypted); the "remove" box clears it."""
    for typed, clear, column in SECRET_FIELDS:
        new = (getattr(item, typed, None) or "").strip()
        if new:
            setattr(item, column, encrypt(new))
        elif getattr(item, clear, False):
            setattr(item, column, None)


def validate_interface(session, item: OutboundInterface) -> None:
    _apply_secrets(item)
    _required_text(item, "name", DomainError("Enter a name"))
    if item.provider not in PROVIDERS:
        raise DomainError("Choose one of %(values)s", field="provider", values=", ".join(PROVIDERS))
    for env in ("access_key_env", "secret_env", "callback_secret_env"):
        value = (getattr(item, env) or "").strip() or None
        if value and not ENV_NAME.match(value):
            raise DomainError("An environment variable name like CALLS_SECRET", field=env)
        setattr(item, env, value)
    if item.provider != SIMULATOR:
        try:
            item.base_url = check_base_url(item.base_url)
        except ValueError as exc:
            raise DomainError(str(exc), field="base_url") from None
        if not (item.callback_secret_env or item.encrypted_callback_secret):
            raise DomainError("The HTTP provider needs a callback secret (env var or stored)",
                              field="callback_secret_env")
    for field in ("connect_timeout", "read_timeout"):
        if not _within(getattr(item, field), TIMEOUT_RANGE):
            raise DomainError("Between 1 and 120 seconds", field=field)
    if item.options:
        try:
            parsed = json.loads(item.options)
        except ValueError:
            raise DomainError("Options must be JSON", field="options") from None
        if not isinstance(parsed, dict):
            raise DomainError('Options must be a JSON object like {"outcome": "answer"}', field="options")
    _unique(session, OutboundInterface.name, item, DomainError("This name is taken", status=409))


def validate_line(session, item: CallLine) -> None:
    _required_text(item, "name", DomainError("Enter a name"))
    _chosen(item, "interface", DomainError("Choose the outbound interface"))
    item.calling_windows = format_windows(parse_windows(item.calling_windows))
    if not _within(item.concurrency_limit, CONCURRENCY_RANGE):
        raise DomainError("Between 1 and 10000", field="concurrency_limit")
    if not _within(item.binding_minutes, MINUTES_RANGE):
        raise DomainError("Between 1 and 1440 minutes", field="binding_minutes")
    _unique(session, CallLine.name, item, DomainError("This name is taken", status=409))


def validate_number(session, item: CallNumber) -> None:
    item.number = normalise_phone(item.number, field="number")
    if not item.number:
        raise DomainError("Enter the caller-ID number", field="number")
    _chosen(item, "line", DomainError("Choose the line"))
    if item.daily_cap is None or item.daily_cap < 0:
        raise DomainError("Zero or more", field="daily_cap")
    if item.rate_limit is not None and item.rate_limit < 1:
        raise DomainError("One or more, or empty for no limit", field="rate_limit")
    if not _within(item.rate_period_minutes, MINUTES_RANGE):
        raise DomainError("Between 1 and 1440 minutes", field="rate_period_minutes")
    if item.status not in NUMBER_STATUSES:
        raise DomainError("Choose one of %(values)s", field="status", values=", ".join(NUMBER_STATUSES))
    item.status_note = (item.status_note or "").strip() or None
    if item.status != NUMBER_ACTIVE and not item.status_note:
        raise DomainError("Say why the number is suspended or flagged", field="status_note")
    item.area = (item.area or "").strip() or None
    _unique(session, CallNumber.number, item, DomainError("This number is already configured", status=409))


def validate_seat(session, item: Seat) -> None:
    _required_text(item, "seat_no", DomainError("Enter the seat number"))
    _chosen(item, "line", DomainError("Choose the line"))
    _unique(session, Seat.seat_no, item, DomainError("This seat number is taken", status=409))
    employee_id = item.employee.id if item.employee is not None else item.employee_id
    if item.active and employee_id is not None:
        other = session.scalar(select(Seat).where(Seat.employee_id == employee_id, Seat.active.is_(True),
                                                  Seat.id != (item.id or 0)))
        if other is not None:
            raise DomainError("This employee already has the active seat %(seat)s", field="employee",
                              status=409, seat=other.seat_no)


def validate_dnc_entry(session, item: DoNotCall) -> None:
    dnc.check_entry(item)
    _unique(session, DoNotCall.phone, item,
            DomainError("This number is already on the do-not-call list", status=409))


VALIDATORS = {
    OutboundInterface: validate_interface,
    CallLine: validate_line,
    CallNumber: validate_number,
    Seat: validate_seat,
    DoNotCall: validate_dnc_entry,
}


def validate(session, item) -> None:
    """The rules of `item`'s kind (normalising it in place); DomainError when it breaks one."""
    with session.no_autoflush:  # a rule's query must not flush the unchecked change
        VALIDATORS[type(item)](session, item)


def save(session, item):
    """Validate `item`, then write it (new or changed); the caller commits."""
    validate(session, item)
    session.add(item)
    session.flush()
    return item
