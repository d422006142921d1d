"""Status callbacks: each event stored once, calls moved forward only, a connected call → a follow-up.

Every accepted event is inserted into CallEvent with ON CONFLICT DO NOTHING on (interface, event key): a
replay inserts nothing and changes nothing. The call is then updated under a row lock: its status moves
only forward along CALL_STATUS_ORDER to a final status (a late "ringing" after "answered" does not move
it back, but its time may fill an empty `rang_at`); the first final wins. An event naming a call we do not
know yet is kept with call_id NULL and applied by `match_unmatched` when the call appears (after the
dial is committed); `sweep_unmatched`, run every minute, applies those that raced the dial (an event
stored while the dial was matching: neither saw the other's uncommitted row). The first event that
shows the call connected records one follow-up of type "call" on its opportunity
(opportunities.add_follow_up: it restarts the circulation clock); `follow_up_id` makes that
happen exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from sqlalchemy import or_, select

from app.clock import utcnow
from app.models.calls import (
    CALL_ANSWERED,
    CALL_FINAL,
    CALL_RINGING,
    CALL_STATUS_ORDER,
    CallEvent,
    CallRecord,
)
from app.models.employee import Employee
from app.services import opportunities
from app.services.calls.providers import MAX_DURATION, CallStatusEvent, parse_time, provider_for
from app.services.errors import DomainError
from app.services.metadata import dict_items
from app.services.sql import dialect_insert

log = logging.getLogger(__name__)
RANK = {status: n for n, status in enumerate(CALL_STATUS_ORDER)}
RANK.update({s: len(CALL_STATUS_ORDER) for s in CALL_FINAL})


@dataclass
class CallbackOutcome:
    applied: int = 0  # moved a call forward
    ignored: int = 0  # a replay, or stale for its call
    unmatched: int = 0  # kept until its call appears

    def as_dict(self) -> dict:
        return {"applied": self.applied, "ignored": self.ignored, "unmatched": self.unmatched}


def receive(session, interface, body: bytes, headers, now: dt.datetime | None = None,
            secret_key=None) -> CallbackOutcome:
    """Verify a callback with the interface's adapter and apply its events. CallbackError /
    SignatureError when refused (nothing written). The caller commits."""
    events = provider_for(interface, secret_key).parse_callback(body, headers)
    return apply_events(session, interface.id, events, now or utcnow())


def apply_events(session, interface_id: int, events: list[CallStatusEvent],
                 now: dt.datetime) -> CallbackOutcome:
    outcome = CallbackOutcome()
    for ev in events:
        correlation = ev.correlation or ev.call_id
        stmt = dialect_insert(session, CallEvent).values(
            interface_id=interface_id, event_key=ev.event_key, correlation=correlation, status=ev.status,
            occurred_at=ev.at, received_at=now, applied=False,
            payload=json.dumps(ev.raw, ensure_ascii=False, default=str),  # whole: read back as JSON
        ).on_conflict_do_nothing(index_elements=[CallEvent.interface_id, CallEvent.event_key]
                                 ).returning(CallEvent.id)
        event_id = session.execute(stmt).scalar()
        if event_id is None:
            outcome.ignored += 1
            continue
        call = _find_call(session, interface_id, ev.correlation, ev.call_id)
        if call is None:
            outcome.unmatched += 1
            continue
        moved = apply_to_call(session, call, ev, now)
        event = session.get(CallEvent, event_id)
        event.call_id, event.applied = call.id, moved
        outcome.applied += int(moved)
        outcome.ignored += int(not moved)
    session.flush()
    return outcome


def _find_call(session, interface_id: int, uid: str | None,
               provider_call_id: str | None) -> CallRecord | None:
    """The call (locked) of an event: by our uid or by the provider's id."""
    clauses = []
    if uid:
        clauses.append(CallRecord.uid == uid)
    if provider_call_id:
        clauses.append(CallRecord.provider_call_id == provider_call_id)
    call_id = session.scalar(select(CallRecord.id)
                             .where(CallRecord.interface_id == interface_id, or_(*clauses))
                             .order_by(CallRecord.id).limit(1))
    if call_id is None:
        return None
    return session.scalar(select(CallRecord).where(CallRecord.id == call_id).with_for_update()
                          .execution_options(populate_existing=True))


def apply_to_call(session, call: CallRecord, ev: CallStatusEvent, now: dt.datetime) -> bool:
    """Move `call` by one event (the call row is locked by the caller); True when its status moved."""
    at = ev.at or now
    moved = RANK[ev.status] > RANK.get(call.status, 0)
    if ev.status == CALL_RINGING:
        call.rang_at = call.rang_at or at
    elif ev.status == CALL_ANSWERED:
        call.answered_at = call.answered_at or at
    elif ev.status in CALL_FINAL and moved:
        call.ended_at = call.ended_at or at
        if ev.duration and call.answered_at is None:  # connected, though "answered" never came
            call.answered_at = at - dt.timedelta(seconds=ev.duration)
        if ev.duration is not None:
            call.duration_seconds = ev.duration
        elif call.answered_at is not None:
            call.duration_seconds = max(int((call.ended_at - call.answered_at).total_seconds()), 0)
        call.result = call.result or ev.result or ev.status
    if ev.recording_url and not call.recording_url:
        call.recording_url = ev.recording_url
    if ev.transcript and not call.transcript:
        call.transcript = json.dumps(ev.transcript, ensure_ascii=False)
    if moved:
        call.status = ev.status
    call.updated_at = now
    if call.answered_at is not None and call.follow_up_id is None:
        _record_follow_up(session, call, now)
    elif call.follow_up_id is not None and ev.status in CALL_FINAL and moved:
        from app.models.sales import FollowUp

        follow_up = session.get(FollowUp, call.follow_up_id)
        if follow_up is not None:
            follow_up.result = f"通话 {call.duration_seconds} 秒"
    session.flush()
    return moved


def _call_type_id(session) -> int | None:
    types = dict_items(session, opportunities.FOLLOWUP_TYPE_DICT, include_disabled=True)
    return next((item.id for item in types if item.code == "call"), None)


def _record_follow_up(session, call: CallRecord, now: dt.datetime) -> None:
    """One follow-up of type "call" for a connected call with an opportunity (exactly once)."""
    if call.opportunity_id is None:
        return
    employee = session.get(Employee, call.employee_id)
    content = f"外呼已接通（通话 #{call.id}）"
    if call.duration_seconds:
        content += f"，通话 {call.duration_seconds} 秒"
    try:
        with session.begin_nested():
            follow_up = opportunities.add_follow_up(session, call.opportunity_id, employee,
                                                _call_type_id(session), content, None, None, now)
    except DomainError as exc:  # e.g. the opportunity was closed meanwhile: the call stays recorded
        log.info("call %s: no follow-up recorded: %s", call.uid, exc.message)
        return
    call.follow_up_id = follow_up.id


def match_unmatched(session, call: CallRecord, now: dt.datetime | None = None) -> int:
    """Apply the kept events naming `call` (by our uid or the provider's id), oldest first."""
    keys = [k for k in (call.uid, call.provider_call_id) if k]
    rows = session.scalars(select(CallEvent)
                           .where(CallEvent.interface_id == call.interface_id, CallEvent.call_id.is_(None),
                                  CallEvent.correlation.in_(keys))
                           .order_by(CallEvent.occurred_at, CallEvent.id)).all()
    now = now or utcnow()
    for row in rows:
        row.call_id, row.applied = call.id, apply_to_call(session, call, _kept_event(row), now)
    return len(rows)


def _kept_event(row: CallEvent) -> CallStatusEvent:
    """A kept event as parse_events read it. Its payload is the event as received (checked then); rows
    kept before the checks, or cut short by an older version, are read as far as they make sense."""
    try:
        raw = json.loads(row.payload or "{}")
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    duration, transcript, url = raw.get("duration"), raw.get("transcript"), raw.get("recording_url")
    if isinstance(duration, bool) or not isinstance(duration, int | float) \
            or not 0 <= duration <= MAX_DURATION:
        duration = None
    return CallStatusEvent(event_key=row.event_key, status=row.status, correlation=row.correlation,
                           at=row.occurred_at or parse_time(raw.get("time")),
                           duration=int(duration) if duration is not None else None,
                           result=str(raw["result"])[:32] if raw.get("result") else None,
                           recording_url=url if isinstance(url, str) else None,
                           transcript=transcript if isinstance(transcript, list) else None)


SWEEP_WINDOW = dt.timedelta(days=1)  # an event older than this whose call never appeared is left kept


def sweep_unmatched(session, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Apply kept events (received within SWEEP_WINDOW) whose call has appeared since; commits per call.
    Returns how many events were applied to a call."""
    now = now or utcnow()
    pairs = session.execute(select(CallEvent.interface_id, CallEvent.correlation).distinct()
                            .where(CallEvent.call_id.is_(None), CallEvent.correlation.isnot(None),
                                   CallEvent.received_at >= now - SWEEP_WINDOW)
                            .limit(limit)).all()
    matched = 0
    for interface_id, correlation in pairs:
        call = _find_call(session, interface_id, correlation, correlation)  # kept: our uid or theirs
        if call is not None:
            matched += match_unmatched(session, call, now)
        session.commit()
    return matched
