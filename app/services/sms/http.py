"""The HTTP adapter: a provider shaped like the common Chinese cloud SMS APIs.

Sending — `POST {base_url}/v1/sms/send`, JSON:
    {"sign_name": "某某教育", "messages": [{"id": "<our uid>", "phone": "+8613800138000", "content": "…"}]}
answered with one result per number:
    {"code": "OK", "request_id": "…", "results": [{"id": "<uid>", "code": "OK", "message_id": "…"},
                                                  {"id": "<uid>", "code": "InvalidPhone", "message": "…"}]}
Every request is signed: HMAC-SHA256 with the channel's secret over
    METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(sha256(body))
and the headers X-Sms-Key (key id), X-Sms-Timestamp (unix seconds), X-Sms-Nonce, X-Sms-Signature (hex).

Callbacks — delivery receipts and inbound replies POSTed to us — are signed the same way with the
channel's callback secret, over TIMESTAMP \\n NONCE \\n hex(sha256(body)) (the provider cannot know our
path), and refused when the signature is wrong or the timestamp is more than CALLBACK_WINDOW away:
    {"receipts": [{"id": "<uid>", "message_id": "…", "phone": "…", "status": "DELIVERED",
                   "code": "DELIVRD", "time": "2026-11-25T08:00:00Z"}]}
    {"replies": [{"phone": "+8613800138000", "text": "TD", "time": "…"}]}

HTTPS is required, except for a base URL on the loopback (a local stand-in or test server).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from app.services import signing
from app.services.sms.providers import (
    Inbound,
    OutboundSms,
    ProviderError,
    Receipt,
    ReceiptError,
    SendResult,
)

SEND_PATH = "/v1/sms/send"
CALLBACK_WINDOW = 300  # seconds a callback's timestamp may be away from our clock
HEADERS = signing.Headers("X-Sms-Key", "X-Sms-Timestamp", "X-Sms-Nonce", "X-Sms-Signature")
H_KEY, H_TIMESTAMP, H_NONCE, H_SIGNATURE = HEADERS
# Per-number codes worth another try later (the provider was busy, not the number wrong).
RETRYABLE_CODES = frozenset({"Throttled", "SystemBusy", "Timeout", "InternalError", "missing_result"})
# Provider receipt statuses → ours (only what moves a message forward: delivered / failed / sent).
RECEIPT_STATUSES = {
    "DELIVERED": "delivered", "DELIVRD": "delivered", "SUCCESS": "delivered",
    "FAILED": "failed", "UNDELIVERED": "failed", "REJECTED": "failed", "EXPIRED": "failed",
    "SENT": "sent", "ACCEPTED": "sent", "SUBMITTED": "sent",
}


class SignatureError(ReceiptError):
    """The callback is not signed by the provider (bad or missing signature, stale timestamp): 401."""


body_digest, sign_request, sign_callback = signing.body_digest, signing.sign_request, signing.sign_callback
check_base_url, _parse_time = signing.check_base_url, signing.parse_time


def callback_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers a provider sends with a callback (the demo and the tests sign with this)."""
    return signing.callback_headers(HEADERS, secret, body, now)


class HttpProvider:
    """One channel's connection to a cloud SMS API (see the module docstring for the wire format)."""

    def __init__(self, base_url: str, key_id: str, secret: str, sign_name: str, *,
                 callback_secret: str | None = None, timeout: float = 10.0):
        self.base_url = check_base_url(base_url)
        self.key_id, self.secret, self.sign_name = key_id, secret, sign_name
        self.callback_secret = callback_secret
        self.timeout = timeout

    @classmethod
    def from_channel(cls, channel, secret_key: str | bytes | None = None) -> HttpProvider:
        """The adapter of an SmsChannel: key id and callback secret from the environment variables the
        channel names, the secret from its variable or else the encrypted one stored on the channel
        (app.services.sms.secrets; `secret_key` defaults to the app's SECRET_KEY)."""
        from app.services.sms.secrets import credentials

        creds = credentials(channel, secret_key)
        if not creds.access_key or not creds.secret:
            raise ProviderError(f"Channel {channel.name}: credentials are not configured", retryable=False)
        try:
            return cls(channel.base_url, creds.access_key, creds.secret, channel.signature,
                       callback_secret=creds.callback_secret, timeout=channel.timeout_seconds or 10)
        except ValueError as exc:
            raise ProviderError(f"Channel {channel.name}: {exc}", retryable=False) from None

    # --- sending -----------------------------------------------------------------------------------
    def send_batch(self, messages: list[OutboundSms]) -> list[SendResult]:
        if not messages:
            return []
        body = json.dumps({"sign_name": self.sign_name,
                           "messages": [{"id": m.uid, "phone": m.phone, "content": m.content}
                                        for m in messages]},
                          ensure_ascii=False, separators=(",", ":")).encode()
        answer = self._post(SEND_PATH, body)
        if answer.get("code") != "OK":
            code = str(answer.get("code") or "unknown")
            raise ProviderError(f"Provider refused the batch: {code} {answer.get('message') or ''}".strip(),
                                retryable=code in RETRYABLE_CODES)
        by_uid = {}
        for row in answer.get("results") or []:
            if isinstance(row, dict) and row.get("id"):
                by_uid[str(row["id"])] = row
        results = []
        for m in messages:
            row = by_uid.get(m.uid)
            if row is None:  # not answered for: whether it went is unknown, the uid lets a retry dedup
                results.append(SendResult(m.uid, False, error_code="missing_result", retryable=True))
            elif row.get("code") == "OK":
                results.append(SendResult(m.uid, True, provider_id=str(row.get("message_id") or "") or None))
            else:
                code = str(row.get("code") or "unknown")[:64]
                results.append(SendResult(m.uid, False, error_code=code, retryable=code in RETRYABLE_CODES))
        return results

    def _post(self, path: str, body: bytes) -> dict:
        signed = signing.request_headers(HEADERS, self.key_id, self.secret, "POST",
                                         urlsplit(self.base_url + path).path, body)
        request = urllib.request.Request(
            self.base_url + path, data=body, method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", **signed})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            # 429 and 5xx: the provider is busy or broken, try again; other 4xx: our request is wrong.
            retryable = exc.code == 429 or exc.code >= 500
            raise ProviderError(f"Provider answered HTTP {exc.code}", retryable=retryable) from None
        except TimeoutError:
            raise ProviderError(f"Provider timed out after {self.timeout}s", retryable=True) from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise ProviderError(f"Provider unreachable: {exc}", retryable=True) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ProviderError("Provider answered something that is not JSON", retryable=True) from None
        if not isinstance(answer, dict):
            raise ProviderError("Provider answered an unexpected JSON shape", retryable=True)
        return answer

    # --- callbacks ---------------------------------------------------------------------------------
    def verify_callback(self, body: bytes, headers, now: float | None = None) -> dict:
        """The callback's JSON object once its signature and timestamp check out; else ReceiptError."""
        try:
            return signing.verify_callback(HEADERS, self.callback_secret, body, headers, CALLBACK_WINDOW, now)
        except signing.BadSignature as exc:
            raise SignatureError(str(exc), field=exc.field) from None
        except signing.BadBody as exc:
            raise ReceiptError(str(exc)) from None

    def parse_receipts(self, body: bytes, headers) -> list[Receipt]:
        rows = self.verify_callback(body, headers).get("receipts")
        if not isinstance(rows, list) or not rows:
            raise ReceiptError("'receipts' must be a non-empty list")
        receipts = []
        for n, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ReceiptError(f"receipts[{n}] is not an object")
            correlation = row.get("id") or row.get("message_id")
            status = RECEIPT_STATUSES.get(str(row.get("status") or "").upper())
            if not correlation or status is None:
                raise ReceiptError(f"receipts[{n}] needs an id and a known status")
            code = row.get("code")
            receipts.append(Receipt(correlation=str(correlation)[:64], status=status,
                                    phone=str(row["phone"])[:20] if row.get("phone") else None,
                                    error_code=str(code)[:64] if code and status == "failed" else None,
                                    at=_parse_time(row.get("time"))))
        return receipts

    def parse_inbound(self, body: bytes, headers) -> list[Inbound]:
        rows = self.verify_callback(body, headers).get("replies")
        if not isinstance(rows, list) or not rows:
            raise ReceiptError("'replies' must be a non-empty list")
        replies = []
        for n, row in enumerate(rows):
            if not isinstance(row, dict) or not row.get("phone") or not isinstance(row.get("text"), str):
                raise ReceiptError(f"replies[{n}] needs a phone and a text")
            replies.append(Inbound(phone=str(row["phone"])[:20], text=row["text"][:500],
                                   at=_parse_time(row.get("time"))))
        return replies
