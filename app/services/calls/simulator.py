"""The local simulator provider: for the demo and the tests, it "dials" nothing and reports a scripted
call through signed status callbacks (delivered by app.jobs.calls through the same verify+apply path as
the HTTP endpoint).

Steered by the interface's `options` JSON:
    {"outcome": "answer",          # answer / no_answer / busy / fail / hangup (rings, caller hangs up)
     "ring_seconds": 5, "talk_seconds": 60,
     "transcript": true,           # or a list of {"speaker", "start", "end", "text"}
     "fail_numbers": ["+86…"],     # these callees fail
     "refuse": false,              # dial itself refused (ProviderError)
     "realtime": true}             # pace the callbacks like a real call (false: all at once)
Without a callback secret configured, it signs with one derived from SECRET_KEY.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from app.models.calls import CALL_ANSWERED, CALL_BUSY, CALL_ENDED, CALL_FAILED, CALL_NO_ANSWER, CALL_RINGING
from app.services.calls.providers import (
    CallStatusEvent,
    DialRequest,
    DialResult,
    ProviderError,
    options_of,
    parse_events,
    verify_callback,
)

OUTCOMES = ("answer", "no_answer", "busy", "fail", "hangup")
DEFAULT_TRANSCRIPT = [
    ("agent", "您好，我是学而优教育的课程顾问，请问现在方便吗？"),
    ("customer", "方便，你说。"),
    ("agent", "您之前咨询过我们的课程，想了解一下孩子现在的学习情况。"),
    ("customer", "数学有点跟不上，想找个老师辅导。"),
    ("agent", "好的，我们可以先安排一节免费试听课。"),
    ("customer", "可以，周末有时间。"),
]


def _secret_key(secret_key):
    if secret_key is None:
        from flask import current_app

        secret_key = current_app.config["SECRET_KEY"]
    return secret_key.encode() if isinstance(secret_key, str) else secret_key


class SimulatorProvider:
    def __init__(self, interface_id: int, options: dict, callback_secret: str):
        self.interface_id = interface_id
        self.options = options
        self.callback_secret = callback_secret

    @classmethod
    def from_interface(cls, interface, secret_key=None) -> SimulatorProvider:
        from app.services.calls.http import interface_credentials

        callback = interface_credentials(interface, secret_key)[2]
        if not callback:
            callback = hmac.new(_secret_key(secret_key), f"calls-simulator-{interface.id}".encode(),
                                hashlib.sha256).hexdigest()
        return cls(interface.id, options_of(interface), callback)

    def dial(self, request: DialRequest) -> DialResult:
        if self.options.get("refuse"):
            raise ProviderError("simulator: dial refused")
        privacy = None
        if request.privacy_minutes:
            digest = int(hashlib.sha256(request.uid.encode()).hexdigest(), 16)
            privacy = f"+86170{digest % 10**8:08d}"
        return DialResult("sim-" + request.uid, privacy)

    def parse_callback(self, body: bytes, headers) -> list[CallStatusEvent]:
        return parse_events(verify_callback(self.callback_secret, body, headers))

    @property
    def realtime(self) -> bool:
        return bool(self.options.get("realtime", True))

    def script(self, uid: str, call_id: str, callee: str, started: dt.datetime) -> list[tuple[float, dict]]:
        """The callbacks of one call: (seconds after the dial, event) in order."""
        opts = self.options
        outcome = opts.get("outcome") if opts.get("outcome") in OUTCOMES else "answer"
        if callee in (opts.get("fail_numbers") or ()):
            outcome = "fail"
        ring = float(opts.get("ring_seconds", 5) or 0)
        talk = int(opts.get("talk_seconds", 60) or 0)

        def event(offset: float, status: str, **extra) -> tuple[float, dict]:
            at = started + dt.timedelta(seconds=offset)
            return offset, {"event_id": f"{call_id}:{status}", "call_id": call_id, "correlation": uid,
                            "status": status, "time": at.isoformat() + "Z", **extra}

        if outcome == "fail":
            return [event(0.5, CALL_FAILED, result="network_error")]
        if outcome == "busy":
            return [event(1, CALL_BUSY, result="user_busy")]
        steps = [event(1, CALL_RINGING)]
        if outcome == "no_answer":
            return [*steps, event(1 + ring, CALL_NO_ANSWER, result="no_answer")]
        if outcome == "hangup":
            return [*steps, event(1 + ring, CALL_ENDED, result="caller_cancel", duration=0)]
        answered = 1 + ring
        end = {"result": "normal_clearing", "duration": talk,
               "recording_url": f"https://recordings.example.invalid/{call_id}.mp3"}
        transcript = self._transcript(talk)
        if transcript:
            end["transcript"] = transcript
        return [*steps, event(answered, CALL_ANSWERED), event(answered + talk, CALL_ENDED, **end)]

    def _transcript(self, talk: int) -> list | None:
        given = self.options.get("transcript")
        if isinstance(given, list):
            return given
        if not given or talk <= 0:
            return None
        step = talk / len(DEFAULT_TRANSCRIPT)
        return [{"speaker": who, "start": round(n * step, 1), "end": round(n * step + step * 0.8, 1),
                 "text": text} for n, (who, text) in enumerate(DEFAULT_TRANSCRIPT)]
