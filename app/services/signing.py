"""HMAC signatures shared by the provider adapters (the SMS cloud API and the call centre).

A request we send is signed over method, path, timestamp, nonce and the body's SHA-256; a callback the
provider sends us over timestamp, nonce and the body's SHA-256; both HMAC-SHA256 in hex, carried in four
headers whose names each adapter chooses (`Headers`). A callback is accepted within `window` seconds of
our clock. Also here: the base-URL rule (https, or http on the loopback) and callback times.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

from app import clock


class Headers(NamedTuple):
    key: str
    timestamp: str
    nonce: str
    signature: str


class BadSignature(Exception):
    """The callback is not signed by the provider (bad or missing signature, stale timestamp)."""


class BadBody(Exception):
    """The callback is signed but its body is not a JSON object."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _hmac(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign_request(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return _hmac(secret, "\n".join((method.upper(), path, timestamp, nonce, body_digest(body))))


def sign_callback(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    return _hmac(secret, "\n".join((timestamp, nonce, body_digest(body))))


def request_headers(names: Headers, key_id: str, secret: str, method: str, path: str, body: bytes,
                    now: float | None = None) -> dict[str, str]:
    """The headers of a signed request to a provider."""
    timestamp, nonce = str(int(clock.timestamp() if now is None else now)), secrets.token_hex(8)
    return {names.key: key_id, names.timestamp: timestamp, names.nonce: nonce,
            names.signature: sign_request(secret, method, path, timestamp, nonce, body)}


def callback_headers(names: Headers, secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers a provider sends with a callback (the simulator, the demo and the tests sign with it)."""
    timestamp, nonce = str(int(clock.timestamp() if now is None else now)), secrets.token_hex(8)
    return {names.timestamp: timestamp, names.nonce: nonce,
            names.signature: sign_callback(secret, timestamp, nonce, body)}


def header(headers, name: str) -> str | None:
    """A header by name, case-insensitively, from a dict or werkzeug's Headers."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        low = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == low), None)
    return value


def verify_callback(names: Headers, secret: str | None, body: bytes, headers, window: int,
                    now: float | None = None) -> dict:
    """The callback's JSON object once its signature and timestamp check out; BadSignature / BadBody."""
    if not secret:
        raise BadSignature("No callback secret is configured")
    timestamp, nonce = header(headers, names.timestamp), header(headers, names.nonce)
    signature = header(headers, names.signature)
    if not (timestamp and nonce and signature):
        raise BadSignature("Missing signature headers")
    try:
        age = abs((clock.timestamp() if now is None else now) - int(timestamp))
    except ValueError:
        raise BadSignature("Bad timestamp") from None
    if age > window:
        raise BadSignature("Timestamp outside the accepted window")
    if not hmac.compare_digest(sign_callback(secret, timestamp, nonce, body), signature.strip().lower()):
        raise BadSignature("Bad signature")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadBody("Body is not JSON") from None
    if not isinstance(data, dict):
        raise BadBody("Body must be a JSON object")
    return data


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str | None) -> str:
    """The base URL without a trailing slash; ValueError unless https (or http on the loopback)."""
    if not base_url:
        raise ValueError("The HTTP provider needs a base URL")
    parts = urlsplit(base_url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return base_url.rstrip("/")
    raise ValueError("The base URL must use https (http only for a local address)")


def parse_time(value) -> dt.datetime | None:
    """A callback time (epoch seconds or ISO 8601) as naive UTC; None when absent or unreadable."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
