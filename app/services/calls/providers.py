"""Call-centre providers behind one small interface: dial a call, verify and parse a status callback.

`provider_for(interface)` returns the adapter of an OutboundInterface. `dial` answers a DialResult (the
provider's call id, and the AXB middle number when a privacy binding was asked for) or raises
ProviderError (refused, timed out, unreachable). `parse_callback` checks the HMAC signature made with the
interface's callback secret and answers the events of the body, or raises CallbackError
(SignatureError → 401, anything else → 400).

Callback wire format, shared by every adapter (the simulator posts exactly this):
    {"events": [{"event_id": "…", "call_id": "<provider id>", "correlation": "<our uid>",
                 "status": "ringing|answered|ended|no_answer|busy|failed", "time": "2026-11-25T08:00:00Z",
                 "duration": 61, "result": "normal_clearing", "recording_url": "https://…",
                 "transcript": [{"speaker": "agent", "start": 0.0, "end": 2.5, "text": "…"}]}]}
signed with the headers X-Call-Timestamp, X-Call-Nonce and X-Call-Signature = hex HMAC-SHA256 over
TIMESTAMP \\n NONCE \\n hex(sha256(body)).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Protocol

from app.models.calls import (
    CALL_ANSWERED,
    CALL_BUSY,
    CALL_DIALING,
    CALL_ENDED,
    CALL_FAILED,
    CALL_NO_ANSWER,
    CALL_RINGING,
    HTTP,
    SIMULATOR,
)
from app.services import signing

CALLBACK_WINDOW = 300  # seconds a callback's timestamp may be away from our clock
HEADERS = signing.Headers("X-Call-Key", "X-Call-Timestamp", "X-Call-Nonce", "X-Call-Signature")
H_KEY, H_TIMESTAMP, H_NONCE, H_SIGNATURE = HEADERS
EVENT_STATUSES = (CALL_DIALING, CALL_RINGING, CALL_ANSWERED, CALL_ENDED, CALL_NO_ANSWER, CALL_BUSY,
                  CALL_FAILED)
# Common provider spellings → ours.
STATUS_ALIASES = {"ring": CALL_RINGING, "alerting": CALL_RINGING, "connected": CALL_ANSWERED,
                  "answer": CALL_ANSWERED, "hangup": CALL_ENDED, "completed": CALL_ENDED,
                  "noanswer": CALL_NO_ANSWER, "no-answer": CALL_NO_ANSWER, "error": CALL_FAILED}
MAX_EVENTS = 100
MAX_DURATION = 86_400  # seconds: a call longer than a day is no call
ID_MAX, EVENT_KEY_MAX, URL_MAX = 64, 128, 500  # as CallEvent and CallRecord keep them


@dataclass(frozen=True)
class DialRequest:
    uid: str  # our call uid: the provider's correlation id
    callee: str  # E.164
    caller_id: str  # E.164 caller-ID number
    seat_no: str | None = None
    trunk: str | None = None
    privacy_minutes: int | None = None  # ask for an AXB binding of this many minutes


@dataclass(frozen=True)
class DialResult:
    call_id: str
    privacy_number: str | None = None


@dataclass(frozen=True)
class CallStatusEvent:
    event_key: str  # unique per interface: replays carry the same key
    status: str
    correlation: str | None = None  # our uid
    call_id: str | None = None  # the provider's id
    at: dt.datetime | None = None
    duration: int | None = None
    result: str | None = None
    recording_url: str | None = None
    transcript: list | None = None
    raw: dict = field(default_factory=dict, compare=False)


class ProviderError(Exception):
    """The provider refused the dial or could not be reached."""


class CallbackError(Exception):
    """A callback that is not acceptable (payload): answer 400; `field` names what is at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class SignatureError(CallbackError):
    """A callback not signed with the interface's callback secret, or stale: answer 401."""


class Provider(Protocol):
    def dial(self, request: DialRequest) -> DialResult: ...

    def parse_callback(self, body: bytes, headers) -> list[CallStatusEvent]: ...


def provider_for(interface, secret_key=None) -> Provider:
    if interface.provider == SIMULATOR:
        from app.services.calls.simulator import SimulatorProvider

        return SimulatorProvider.from_interface(interface, secret_key)
    if interface.provider == HTTP:
        from app.services.calls.http import HttpCallProvider

        return HttpCallProvider.from_interface(interface, secret_key)
    raise ProviderError(f"unknown provider {interface.provider!r}")


# --- options and signatures -------------------------------------------------------------------------
def options_of(interface) -> dict:
    raw = interface.options
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


sign_request, sign_callback, parse_time = signing.sign_request, signing.sign_callback, signing.parse_time


def callback_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers a provider sends with a status callback (the simulator and the tests sign with it)."""
    return signing.callback_headers(HEADERS, secret, body, now)


def verify_callback(secret: str | None, body: bytes, headers, now: float | None = None) -> dict:
    """The callback's JSON object once its signature and timestamp check out."""
    try:
        return signing.verify_callback(HEADERS, secret, body, headers, CALLBACK_WINDOW, now)
    except signing.BadSignature as exc:
        raise SignatureError(str(exc), exc.field) from None
    except signing.BadBody as exc:
        raise CallbackError(str(exc), "body") from None


def _status(value) -> str | None:
    text = str(value or "").strip().lower()
    text = STATUS_ALIASES.get(text, text)
    return text if text in EVENT_STATUSES else None


def _key(row: dict, name: str, n: int, limit: int) -> str | None:
    """An id field of an event: a string or whole number of at most `limit` characters, or None."""
    value = row.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > limit:
        raise CallbackError(f"events[{n}].{name} must be a string of at most {limit} characters",
                            f"events[{n}].{name}")
    return str(value)


def parse_events(data: dict) -> list[CallStatusEvent]:
    """The events of a verified callback body (see the module docstring); CallbackError naming the first
    field at fault: a signed body is trusted to come from the provider, not to be well formed."""
    rows = data.get("events")
    if not isinstance(rows, list) or not rows:
        raise CallbackError("'events' must be a non-empty list", "events")
    if len(rows) > MAX_EVENTS:
        raise CallbackError(f"At most {MAX_EVENTS} events per request", "events")
    events = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CallbackError(f"events[{n}] is not an object", f"events[{n}]")
        status = _status(row.get("status"))
        correlation = _key(row, "correlation", n, ID_MAX)
        call_id = _key(row, "call_id", n, ID_MAX)
        if status is None or not (correlation or call_id):
            raise CallbackError(f"events[{n}] needs a known status and a call_id or correlation",
                                f"events[{n}].status" if status is None else f"events[{n}].call_id")
        duration = row.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)
                                     or not 0 <= duration <= MAX_DURATION):  # NaN compares false
            raise CallbackError(f"events[{n}].duration must be a number of seconds from 0 to {MAX_DURATION}",
                                f"events[{n}].duration")
        transcript = row.get("transcript")
        if transcript is not None and (not isinstance(transcript, list)
                                       or not all(isinstance(part, dict) for part in transcript)):
            raise CallbackError(f"events[{n}].transcript must be a list of objects",
                                f"events[{n}].transcript")
        result = row.get("result")
        if result is not None and (isinstance(result, bool) or not isinstance(result, str | int)):
            raise CallbackError(f"events[{n}].result must be a string", f"events[{n}].result")
        url = row.get("recording_url")
        if url not in (None, "") and (not isinstance(url, str) or len(url) > URL_MAX
                                      or not url.lower().startswith(("https://", "http://"))):
            raise CallbackError(f"events[{n}].recording_url must be an http(s) URL of at most {URL_MAX} "
                                "characters", f"events[{n}].recording_url")
        key = _key(row, "event_id", n, EVENT_KEY_MAX) or f"{call_id or correlation}:{status}"
        events.append(CallStatusEvent(
            event_key=key, status=status, correlation=correlation, call_id=call_id,
            at=parse_time(row.get("time")), duration=int(duration) if duration is not None else None,
            result=str(result)[:32] if result else None,
            recording_url=url or None, transcript=transcript, raw=row))
    return events


def callback_body(events: list[dict]) -> bytes:
    return json.dumps({"events": events}, ensure_ascii=False, separators=(",", ":")).encode()
