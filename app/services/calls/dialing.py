"""Click-to-call: who may dial whom now, from which caller-ID, under which caps.

`click_to_call` resolves the callee's phone on the server (the browser never sends one), checks the
refusals in the order of REFUSAL_REASONS' meaning — no seat, line or interface disabled, no phone,
outside the line's calling windows, do-not-call, line busy, callee dialled too often today, no caller-ID
number left — reserves the call in one transaction, commits, and only then asks the provider to dial (no
lock is held over the network).

Caps are CallCounter rows taken by one conditional UPSERT each (`take_slot`): "add one unless the count
has reached the cap", returning the new count or no row. On PostgreSQL the second of two concurrent
UPSERTs on the same row waits for the first and re-checks the WHERE on the committed count, so two calls
never take the last slot; SQLite runs one writer at a time. A refusal rolls the whole reservation back,
so a refused click uses no slot.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import func, select, update

from app import clock
from app.models.calls import (
    CALL_ACTIVE,
    CALL_DIALING,
    CALL_FAILED,
    CALL_REQUESTED,
    COUNTER_CALLEE_DAY,
    COUNTER_NUMBER_DAY,
    COUNTER_NUMBER_WINDOW,
    NUMBER_ACTIVE,
    CallCounter,
    CallLine,
    CallNumber,
    CallRecord,
    Seat,
)
from app.models.employee import Employee
from app.models.sales import OPEN_STATUSES, Customer, Opportunity
from app.services import metadata, reference
from app.services.calls import dnc
from app.services.calls.providers import DialRequest, ProviderError, provider_for
from app.services.errors import DomainError
from app.services.sql import dialect_insert

log = logging.getLogger(__name__)

MAX_ATTEMPTS_KEY = "calls.max_daily_attempts"
DEFAULT_MAX_ATTEMPTS = reference.default(MAX_ATTEMPTS_KEY)
# An active call with no callback for this long no longer counts against the line's concurrency
# (its provider lost track of it, or we missed its final callback). Config item, minutes.
STALE_MINUTES_KEY = "calls.line_busy_minutes"
STALE_MINUTES = reference.default(STALE_MINUTES_KEY)
WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
# 422: the request cannot be served as things are set up; 409: a limit or state of the moment.
REFUSAL_STATUS = {"no_seat": 422, "no_phone": 422}


class CallRefused(DomainError):
    def __init__(self, reason: str, message: str):
        super().__init__(message, status=REFUSAL_STATUS.get(reason, 409))
        self.reason = reason

    def as_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message}


# --- calling windows ---------------------------------------------------------------------------------
def parse_windows(text: str | None) -> list[tuple[dt.time, dt.time]]:
    """"09:00-12:00,13:30-20:30" → [(09:00, 12:00), (13:30, 20:30)]; empty: []. DomainError when bad."""
    windows = []
    for part in (text or "").replace("，", ",").split(","):
        part = part.strip().replace(" ", "")
        if not part:
            continue
        match = WINDOW_RE.match(part)
        if not match:
            raise DomainError("%(window)s is not a window like 09:00-12:00", field="calling_windows",
                              window=repr(part))
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h2 == 24 and m2:
            raise DomainError("%(window)s: a window ends by 24:00", field="calling_windows",
                              window=repr(part))
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            raise DomainError("%(window)s: the end must be after the start", field="calling_windows",
                              window=repr(part))
        windows.append((start, end))
    windows.sort()
    for (_s1, e1), (s2, _e2) in zip(windows, windows[1:], strict=False):
        if s2 < e1:
            raise DomainError("Calling windows must not overlap", field="calling_windows")
    return [(dt.time(s // 60, s % 60), dt.time(23, 59, 59) if e == 1440 else dt.time(e // 60, e % 60))
            for s, e in windows]


def format_windows(windows: list[tuple[dt.time, dt.time]]) -> str | None:
    """The canonical text of parsed windows ("09:00-12:00,13:30-24:00"); None when there are none."""
    return ",".join(f"{s:%H:%M}-{'24:00' if e.second else f'{e:%H:%M}'}" for s, e in windows) or None


def within_windows(session, text: str | None, now: dt.datetime) -> bool:
    windows = parse_windows(text)
    if not windows:
        return True
    local = clock.to_local(now).time()
    return any(start <= local < end or (end == dt.time(23, 59, 59) and local >= start)
               for start, end in windows)


# --- counters ------------------------------------------------------------------------------------------
def take_slot(session, kind: str, key: str, window: dt.datetime, cap: int) -> int | None:
    """Add one to the counter unless it has reached `cap`: the new count, or None (no slot left)."""
    if cap is None or cap <= 0:
        return None
    stmt = dialect_insert(session, CallCounter).values(kind=kind, key=str(key), window=window, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CallCounter.kind, CallCounter.key, CallCounter.window],
        set_={"count": CallCounter.count + 1}, where=CallCounter.count < cap,
    ).returning(CallCounter.count)
    return session.execute(stmt).scalar()


def release_slot(session, kind: str, key: str, window: dt.datetime) -> None:
    session.execute(update(CallCounter)
                    .where(CallCounter.kind == kind, CallCounter.key == str(key),
                           CallCounter.window == window, CallCounter.count > 0)
                    .values(count=CallCounter.count - 1).execution_options(synchronize_session=False))


def day_window(session, now: dt.datetime) -> dt.datetime:
    return clock.day_bounds(now)[0]


def period_window(now: dt.datetime, minutes: int) -> dt.datetime:
    minutes = max(int(minutes or 60), 1)
    epoch = int((now - dt.datetime(1970, 1, 1)).total_seconds() // 60)
    return dt.datetime(1970, 1, 1) + dt.timedelta(minutes=epoch - epoch % minutes)


def _positive_int(session, key: str, default: int) -> int:
    try:
        value = int(metadata.config_value(session, key, default))
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


def max_attempts(session) -> int:
    return _positive_int(session, MAX_ATTEMPTS_KEY, DEFAULT_MAX_ATTEMPTS)


def stale_minutes(session) -> int:
    return _positive_int(session, STALE_MINUTES_KEY, STALE_MINUTES)


# --- the callee ----------------------------------------------------------------------------------------
@dataclass
class Target:
    phone: str | None
    area: str | None
    customer_id: int | None
    opportunity_id: int | None


def phone_area(phone: str | None) -> str | None:
    """The region a number belongs to, by the phonenumbers geocoder (e.g. 广东省广州市).

    Imported on first use: its data costs about 100 MiB, which a process that never dials should not pay.
    """
    if not phone:
        return None
    from phonenumbers import geocoder

    try:
        return geocoder.description_for_number(phonenumbers.parse(phone, None), "zh") or None
    except phonenumbers.NumberParseException:
        return None


def same_area(a: str | None, b: str | None) -> bool:
    """Loose match of two region names: 广州 ~ 广东省广州市, 北京 ~ 北京市."""
    def norm(x: str) -> str:
        return x.strip().removesuffix("市").removesuffix("省")

    if not a or not b:
        return False
    a, b = norm(a), norm(b)
    return bool(a and b) and (a in b or b in a)


def resolve_target(session, employee_id: int, opportunity_id: int | None = None,
                   customer_id: int | None = None) -> Target:
    """The callee of an opportunity or a customer (the caller's own open opportunity of that customer
    is attached, so that a connected call counts as its follow-up). Visibility is the caller's job."""
    opp = None
    if opportunity_id is not None:
        opp = session.get(Opportunity, opportunity_id)
        if opp is None:
            raise DomainError("No such opportunity", status=404)
        customer = session.get(Customer, opp.customer_id)
    else:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise DomainError("No such customer", status=404)
        opp = session.scalar(select(Opportunity)
                             .where(Opportunity.customer_id == customer.id,
                                    Opportunity.owner_id == employee_id,
                                    Opportunity.status.in_(OPEN_STATUSES))
                             .order_by(Opportunity.id.desc()).limit(1))
    phone = customer.phone if customer is not None else None
    area = (customer.region if customer is not None else None) or (opp.region if opp else None) \
        or phone_area(phone)
    return Target(phone, area, customer.id if customer else None, opp.id if opp else None)


# --- caller-ID choice ------------------------------------------------------------------------------------
def candidate_numbers(session, line_id: int, area: str | None, now: dt.datetime) -> list[CallNumber]:
    """The line's active numbers: same area as the callee first, then least used today, then by id."""
    today = day_window(session, now)
    used = (select(CallCounter.count).where(CallCounter.kind == COUNTER_NUMBER_DAY,
                                            CallCounter.key == func.cast(CallNumber.id, CallCounter.key.type),
                                            CallCounter.window == today)
            .correlate(CallNumber).scalar_subquery())
    rows = session.execute(select(CallNumber, func.coalesce(used, 0))
                           .where(CallNumber.line_id == line_id, CallNumber.status == NUMBER_ACTIVE)).all()
    rows.sort(key=lambda r: (not same_area(r[0].area, area), r[1], r[0].id))
    return [r[0] for r in rows]


def take_number(session, line_id: int, area: str | None, now: dt.datetime) -> CallNumber | None:
    """The first candidate with a slot under its daily cap and its rate limit (both taken), or None."""
    today = day_window(session, now)
    for number in candidate_numbers(session, line_id, area, now):
        if take_slot(session, COUNTER_NUMBER_DAY, number.id, today, number.daily_cap) is None:
            continue
        if number.rate_limit is not None:
            period = period_window(now, number.rate_period_minutes)
            if take_slot(session, COUNTER_NUMBER_WINDOW, number.id, period, number.rate_limit) is None:
                release_slot(session, COUNTER_NUMBER_DAY, number.id, today)
                continue
        return number
    return None


def active_calls(session, line_id: int, now: dt.datetime) -> int:
    """The line's calls in progress, leaving out those silent for `calls.line_busy_minutes`."""
    since = now - dt.timedelta(minutes=stale_minutes(session))
    return session.scalar(select(func.count()).select_from(CallRecord)
                          .where(CallRecord.line_id == line_id, CallRecord.status.in_(CALL_ACTIVE),
                                 CallRecord.updated_at >= since)) or 0


# --- the click ------------------------------------------------------------------------------------------
def reserve(session, employee_id: int, target: Target, now: dt.datetime) -> CallRecord:
    """Check every refusal and take the slots; the new call is flushed, not committed. CallRefused."""
    seat = session.scalar(select(Seat).where(Seat.employee_id == employee_id, Seat.active.is_(True)))
    if seat is None:
        raise CallRefused("no_seat", "You have no active seat")
    line = session.get(CallLine, seat.line_id)
    if not line.enabled or not line.interface.enabled:
        raise CallRefused("line_disabled", f"Line {line.name} is disabled")
    if not target.phone:
        raise CallRefused("no_phone", "There is no phone number to call")
    if not within_windows(session, line.calling_windows, now):
        raise CallRefused("outside_hours", f"Outside the calling hours ({line.calling_windows})")
    if dnc.is_listed(session, target.phone, now):
        raise CallRefused("do_not_call", "The number is on the do-not-call list")
    # The line's concurrency limit, under a row lock on the line (PostgreSQL; SQLite has one writer).
    session.execute(select(CallLine.id).where(CallLine.id == line.id).with_for_update())
    if active_calls(session, line.id, now) >= line.concurrency_limit:
        raise CallRefused("line_busy", f"All {line.concurrency_limit} channels of the line are in use")
    limit = max_attempts(session)
    if take_slot(session, COUNTER_CALLEE_DAY, target.phone, day_window(session, now), limit) is None:
        raise CallRefused("callee_limit", f"This number was already dialled {limit} times today")
    number = take_number(session, line.id, target.area, now)
    if number is None:
        raise CallRefused("no_number", "No caller-ID number of the line is under its limits")
    employee = session.get(Employee, employee_id)
    call = CallRecord(interface_id=line.interface_id, line_id=line.id, number_id=number.id, seat_id=seat.id,
                      employee_id=employee_id, org_unit_id=employee.org_unit_id if employee else None,
                      opportunity_id=target.opportunity_id, customer_id=target.customer_id,
                      callee_phone=target.phone, status=CALL_REQUESTED, started_at=now,
                      created_at=now, updated_at=now)
    session.add(call)
    session.flush()
    return call


def release(session, call: CallRecord) -> None:
    """Give back the slots a call took (the provider refused it: nothing was dialled)."""
    now = call.started_at
    release_slot(session, COUNTER_CALLEE_DAY, call.callee_phone, day_window(session, now))
    if call.number_id is not None:
        release_slot(session, COUNTER_NUMBER_DAY, call.number_id, day_window(session, now))
        number = session.get(CallNumber, call.number_id)
        if number is not None and number.rate_limit is not None:
            release_slot(session, COUNTER_NUMBER_WINDOW, call.number_id,
                         period_window(now, number.rate_period_minutes))


def click_to_call(session, employee_id: int, now: dt.datetime, *, opportunity_id: int | None = None,
                  customer_id: int | None = None, secret_key=None) -> CallRecord:
    """Reserve, commit, dial, commit. Raises CallRefused (nothing kept, or the call marked failed when
    the provider refused it). The caller checked that the user may see the opportunity / customer."""
    from app.services.calls import callbacks

    target = resolve_target(session, employee_id, opportunity_id, customer_id)
    try:
        call = reserve(session, employee_id, target, now)
    except DomainError:
        session.rollback()
        raise
    line = call.line
    request = DialRequest(uid=call.uid, callee=call.callee_phone, caller_id=call.number.number,
                          seat_no=call.seat.seat_no if call.seat else None, trunk=line.trunk,
                          privacy_minutes=line.binding_minutes if line.privacy_binding else None)
    session.commit()
    try:
        result = provider_for(call.interface, secret_key).dial(request)
    except ProviderError as exc:
        log.warning("call %s: provider refused: %s", call.uid, exc)
        release(session, call)
        call.status, call.result, call.ended_at = CALL_FAILED, "provider_error", now
        session.commit()
        raise CallRefused("provider_error", f"The call centre refused the call: {exc}") from None
    call.provider_call_id = result.call_id
    if result.privacy_number:
        call.privacy_number = result.privacy_number
        call.binding_expires_at = now + dt.timedelta(minutes=line.binding_minutes)
    if call.status == CALL_REQUESTED:
        call.status = CALL_DIALING
    session.flush()
    callbacks.match_unmatched(session, call)
    session.commit()
    return call


