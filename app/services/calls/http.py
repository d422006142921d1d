"""The HTTP adapter: a call-centre API taking JSON over HTTPS, every request HMAC-signed.

Dialling — `POST {base_url}/v1/calls/dial`:
    {"id": "<our uid>", "callee": "+86…", "caller_id": "+86…", "seat": "S001", "trunk": "…",
     "privacy": {"minutes": 30}}            # only with an AXB binding
answered {"code": "OK", "call_id": "…", "privacy_number": "+86…"} or {"code": "<error>", "message": …}.
Signed like the SMS adapter: HMAC-SHA256 with the interface's secret over
    METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(sha256(body))
in X-Call-Key / X-Call-Timestamp / X-Call-Nonce / X-Call-Signature. Connect and read timeouts come from
the interface. Status callbacks: see app.services.calls.providers.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from app.services import signing
from app.services.calls.providers import (
    HEADERS,
    CallStatusEvent,
    DialRequest,
    DialResult,
    ProviderError,
    parse_events,
    verify_callback,
)
from app.services.signing import check_base_url

DIAL_PATH = "/v1/calls/dial"


def interface_credentials(interface, secret_key=None, environ=None):
    """(access key, secret, callback secret): env vars when named, else the encrypted stored values."""
    from app.services.sms.secrets import credentials, decrypt

    creds = credentials(interface, secret_key, environ)
    callback = creds.callback_secret or decrypt(interface.encrypted_callback_secret, secret_key)
    return creds.access_key, creds.secret, callback


class HttpCallProvider:
    def __init__(self, base_url: str, key_id: str | None, secret: str | None, *,
                 callback_secret: str | None = None, connect_timeout: float = 3, read_timeout: float = 10):
        self.base_url = check_base_url(base_url)
        self.key_id, self.secret, self.callback_secret = key_id, secret, callback_secret
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout

    @classmethod
    def from_interface(cls, interface, secret_key=None) -> HttpCallProvider:
        key_id, secret, callback = interface_credentials(interface, secret_key)
        try:
            return cls(interface.base_url, key_id, secret, callback_secret=callback,
                       connect_timeout=interface.connect_timeout or 3,
                       read_timeout=interface.read_timeout or 10)
        except ValueError as exc:
            raise ProviderError(f"Interface {interface.name}: {exc}") from None

    def dial(self, request: DialRequest) -> DialResult:
        if not self.key_id or not self.secret:
            raise ProviderError("The interface's credentials are not configured")
        payload = {"id": request.uid, "callee": request.callee, "caller_id": request.caller_id,
                   "seat": request.seat_no, "trunk": request.trunk}
        if request.privacy_minutes:
            payload["privacy"] = {"minutes": request.privacy_minutes}
        body = json.dumps(payload, separators=(",", ":")).encode()
        answer = self._post(DIAL_PATH, body)
        if answer.get("code") != "OK" or not answer.get("call_id"):
            raise ProviderError(f"Provider refused the call: {answer.get('code') or 'unknown'} "
                                f"{answer.get('message') or ''}".strip())
        privacy = answer.get("privacy_number")
        return DialResult(str(answer["call_id"])[:64], str(privacy)[:20] if privacy else None)

    def _post(self, path: str, body: bytes) -> dict:
        parts = urlsplit(self.base_url + path)
        headers = {"Content-Type": "application/json",
                   **signing.request_headers(HEADERS, self.key_id, self.secret, "POST", parts.path, body)}
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname, parts.port, timeout=self.connect_timeout)
        try:
            conn.connect()  # under the connect timeout
            conn.sock.settimeout(self.read_timeout)
            conn.request("POST", parts.path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except TimeoutError:
            raise ProviderError("Provider timed out") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise ProviderError(f"Provider unreachable: {exc}") from None
        finally:
            conn.close()
        if response.status >= 400:
            raise ProviderError(f"Provider answered HTTP {response.status}")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ProviderError("Provider answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise ProviderError("Provider answered an unexpected JSON shape")
        return answer

    def parse_callback(self, body: bytes, headers) -> list[CallStatusEvent]:
        return parse_events(verify_callback(self.callback_secret, body, headers))
