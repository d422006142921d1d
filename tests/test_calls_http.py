"""The HTTP call-centre adapter against a real HTTP server on 127.0.0.1 that checks our signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.models.calls import OutboundInterface
from app.services.calls.http import DIAL_PATH, HttpCallProvider
from app.services.calls.providers import (
    H_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TIMESTAMP,
    CallbackError,
    DialRequest,
    ProviderError,
    SignatureError,
    callback_body,
    callback_headers,
    provider_for,
)
from app.services.sms.secrets import encrypt

KEY_ID, SECRET, CALLBACK_SECRET = "AK-calls", "calls-secret", "calls-callback-secret"
REFUSED = "+8613900000009"


class FakeCallCentre:
    def __init__(self):
        self.requests: list[dict] = []
        self.answered: list[int] = []  # the status of every answer given, in order
        self.hold = threading.Event()  # "slow" answers only once the test sets it
        self.mode = "normal"
        centre = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                text = "\n".join(("POST", self.path, self.headers.get(H_TIMESTAMP, ""),
                                  self.headers.get(H_NONCE, ""), hashlib.sha256(body).hexdigest()))
                expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
                signed = self.headers.get(H_KEY) == KEY_ID and hmac.compare_digest(
                    expected, self.headers.get(H_SIGNATURE, ""))
                payload = json.loads(body)
                centre.requests.append({"path": self.path, "signed": signed, "body": payload})
                if centre.mode == "slow":
                    centre.hold.wait(30)
                if centre.mode == "broken":
                    return self._answer(503, {"code": "SystemBusy"})
                if not signed:
                    return self._answer(401, {"code": "SignatureDoesNotMatch"})
                if payload["callee"] == REFUSED:
                    return self._answer(200, {"code": "Blacklisted", "message": "carrier blacklist"})
                answer = {"code": "OK", "call_id": "cc-" + payload["id"][:8]}
                if payload.get("privacy"):
                    answer["privacy_number"] = "+8617000000001"
                self._answer(200, answer)

            def _answer(self, status, payload):
                centre.answered.append(status)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def centre():
    server = FakeCallCentre()
    yield server
    server.close()


def interface(url, monkeypatch, **kw) -> OutboundInterface:
    monkeypatch.setenv("TEST_CALLS_KEY", KEY_ID)
    monkeypatch.setenv("TEST_CALLS_SECRET", SECRET)
    values = dict(id=7, name="cc", provider="http", base_url=url, access_key_env="TEST_CALLS_KEY",
                  secret_env="TEST_CALLS_SECRET", connect_timeout=1, read_timeout=1,
                  encrypted_callback_secret=encrypt(CALLBACK_SECRET, "k"))
    values.update(kw)
    return OutboundInterface(**values)


def request(callee="+8613800138000", privacy=None) -> DialRequest:
    return DialRequest(uid="0123456789abcdef", callee=callee, caller_id="+861058000001", seat_no="S1",
                       trunk="T1", privacy_minutes=privacy)


def test_dial_is_signed_and_answers_the_provider_call_id(centre, monkeypatch):
    provider = provider_for(interface(centre.url, monkeypatch), "k")
    assert isinstance(provider, HttpCallProvider)
    result = provider.dial(request())
    assert result.call_id == "cc-01234567" and result.privacy_number is None
    sent = centre.requests[-1]
    assert sent["path"] == DIAL_PATH and sent["signed"]
    assert sent["body"] == {"id": "0123456789abcdef", "callee": "+8613800138000",
                            "caller_id": "+861058000001",
                            "seat": "S1", "trunk": "T1"}
    assert provider.dial(request(privacy=30)).privacy_number == "+8617000000001"
    assert centre.requests[-1]["body"]["privacy"] == {"minutes": 30}


def test_refusals_timeouts_and_errors_are_provider_errors(centre, monkeypatch):
    provider = provider_for(interface(centre.url, monkeypatch), "k")
    with pytest.raises(ProviderError, match="Blacklisted"):
        provider.dial(request(REFUSED))
    centre.mode = "broken"
    with pytest.raises(ProviderError, match="503"):
        provider.dial(request())
    centre.mode = "slow"
    answered = len(centre.answered)
    with pytest.raises(ProviderError, match="timed out"):
        provider.dial(request())
    # it gave up on the interface's read timeout (1 s) while the call centre still held its answer
    assert len(centre.answered) == answered
    centre.hold.set()
    monkeypatch.setenv("TEST_CALLS_SECRET", "wrong")
    centre.mode = "normal"
    with pytest.raises(ProviderError, match="401"):
        provider_for(interface(centre.url, monkeypatch, secret_env="OTHER_UNSET_VAR",
                               encrypted_secret=encrypt("wrong", "k")), "k").dial(request())
    with pytest.raises(ProviderError, match="unreachable"):
        provider_for(interface("http://127.0.0.1:9", monkeypatch), "k").dial(request())
    with pytest.raises(ProviderError, match="https"):
        provider_for(interface("http://calls.example.com", monkeypatch), "k")
    with pytest.raises(ProviderError, match="credentials"):
        provider_for(interface(centre.url, monkeypatch, access_key_env=None), "k").dial(request())


def test_callbacks_are_verified_with_the_stored_callback_secret(monkeypatch):
    provider = provider_for(interface("https://calls.example.com", monkeypatch), "k")
    body = callback_body([{"event_id": "e1", "call_id": "cc-1", "status": "CONNECTED", "time": 1767225600,
                           "duration": 0}])
    events = provider.parse_callback(body, callback_headers(CALLBACK_SECRET, body))
    assert [(e.event_key, e.status, e.call_id) for e in events] == [("e1", "answered", "cc-1")]
    assert events[0].at.isoformat() == "2026-01-01T00:00:00"
    with pytest.raises(SignatureError):
        provider.parse_callback(body, callback_headers("other", body))
    with pytest.raises(SignatureError):  # the env var, when named, wins over the stored secret
        monkeypatch.setenv("TEST_CALLS_CB", "from-env")
        provider_for(interface("https://calls.example.com", monkeypatch, callback_secret_env="TEST_CALLS_CB"),
                     "k").parse_callback(body, callback_headers(CALLBACK_SECRET, body))
    bad = callback_body([{"event_id": "e2", "call_id": "cc-1", "status": "answered", "duration": -3}])
    with pytest.raises(CallbackError, match="duration"):
        provider.parse_callback(bad, callback_headers(CALLBACK_SECRET, bad))
