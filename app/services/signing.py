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
import re
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

from app import clock

# Unix seconds in ASCII digits (10 of them until the year 2286): anything longer is no time of ours, and
# int() of a 400-digit string would overflow once compared with a float clock.
TIMESTAMP = re.compile(r"[0-9]{1,12}")
TIME_RANGE = (dt.datetime(1970, 1, 1), dt.datetime(9000, 1, 1))  # a callback time outside: unreadable


class Headers(NamedTuple):
    key: str
    timestamp: str
    nonce: str
    signature: str


class BadSignature(Exception):
    """The callback is not signed by the provider (bad or missing signature, stale timestamp); `field`
    names the header at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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
    given = zip(names[1:], (timestamp, nonce, signature), strict=True)
    missing = [name for name, value in given if not value]
    if missing:
        raise BadSignature(f"Missing signature headers: {', '.join(missing)}", field=missing[0])
    if not TIMESTAMP.fullmatch(timestamp):
        raise BadSignature(f"{names.timestamp}: not a Unix time in seconds", field=names.timestamp)
    if abs((clock.timestamp() if now is None else now) - int(timestamp)) > window:
        raise BadSignature(f"{names.timestamp}: outside the accepted window of {window} seconds",
                           field=names.timestamp)
    expected = sign_callback(secret, timestamp, nonce, body).encode()
    if not hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace")):
        raise BadSignature(f"{names.signature}: bad signature", field=names.signature)
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
    """A callback time (epoch seconds or ISO 8601) as naive UTC; None when absent or unreadable (of another
    type, or outside TIME_RANGE: so that adding a call's length to it cannot overflow)."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str) or len(str(value)) > 40:
            return None
        if isinstance(value, int | float):
            parsed = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if TIME_RANGE[0] <= parsed < TIME_RANGE[1] else None
