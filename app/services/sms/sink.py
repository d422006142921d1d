"""The local "sink" provider: the stand-in for an operator network, writing what it accepts to sms_sink.

Its correlation column is unique and holds our message uid, so a message handed over twice cannot be
hidden: the second hand-over fails with an integrity error instead of quietly making a second row. It
can also tell whether it accepted a message (`lookup`), which is what reconciles messages a dead worker
left in "sending".

Misbehaviour, from the channel's `options` JSON (for the demo and the tests):
    {"fail_numbers": ["+8613800000001"],  # these numbers are refused (per-number error SINK_REJECTED)
     "fail_rate": 0.1,                    # this share is refused (SINK_RANDOM), decided by the uid's hash
     "delay_ms": 5,                       # each batch takes this long
     "timeout": true}                     # each batch times out (ProviderError, nothing accepted)

Receipts and replies posted to a sink channel carry no signature (nothing signs for a local stand-in), but
their fields are checked as strictly as any provider's: types, and lengths as the receipt log keeps them
(an id cut to fit would match no message). A field at fault raises PayloadError naming it.
"""

from __future__ import annotations

import json
import time
import zlib

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from app.clock import utcnow
from app.models.sms import SinkMessage, SmsReceipt
from app.services.sms.providers import (
    Inbound,
    OutboundSms,
    ProviderError,
    Receipt,
    ReceiptError,
    SendResult,
)

RECEIPT_STATUSES = ("delivered", "failed", "sent")
# As long as the receipt log keeps them: an id cut to fit would match no message.
ID_MAX = SmsReceipt.__table__.c.correlation.type.length
PHONE_MAX = SmsReceipt.__table__.c.phone.type.length
CODE_MAX = 64  # an operator's error code, as the HTTP adapter keeps it
RAW_PHONE_MAX = 32  # a reply's number as the operator wrote it, before it is normalised


def _options(raw) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class SinkProvider:
    def __init__(self, engine, channel_id: int | None = None, options=None, timeout_seconds: float = 10):
        self.engine = engine
        self.channel_id = channel_id
        opts = _options(options)
        self.fail_numbers = frozenset(opts.get("fail_numbers") or ())
        self.fail_rate = float(opts.get("fail_rate") or 0)
        self.delay = float(opts.get("delay_ms") or 0) / 1000
        self.timeout = bool(opts.get("timeout"))
        self.timeout_seconds = timeout_seconds

    @classmethod
    def from_channel(cls, channel, engine=None) -> SinkProvider:
        if engine is None:
            from app.extensions import db

            engine = db.engine
        return cls(engine, channel.id, channel.options, channel.timeout_seconds or 10)

    def _refused(self, msg: OutboundSms) -> str | None:
        if msg.phone in self.fail_numbers:
            return "SINK_REJECTED"
        if self.fail_rate and (zlib.crc32(msg.uid.encode()) % 10_000) < self.fail_rate * 10_000:
            return "SINK_RANDOM"
        return None

    def send_batch(self, messages: list[OutboundSms]) -> list[SendResult]:
        if self.delay:
            time.sleep(self.delay)
        if self.timeout:
            time.sleep(min(self.timeout_seconds, 0.05))
            raise ProviderError("sink: timed out", retryable=True)
        results, rows, now = [], [], utcnow()
        for msg in messages:
            code = self._refused(msg)
            if code:
                results.append(SendResult(msg.uid, False, error_code=code))
                continue
            provider_id = "sink-" + msg.uid
            rows.append({"channel_id": self.channel_id, "correlation": msg.uid, "provider_id": provider_id,
                         "phone": msg.phone, "content": msg.content, "accepted_at": now})
            results.append(SendResult(msg.uid, True, provider_id=provider_id))
        if rows:
            try:
                with self.engine.begin() as conn:  # its own transaction: the "network" is not ours
                    conn.execute(insert(SinkMessage), rows)
            except IntegrityError as exc:
                # A correlation id seen before: a duplicate hand-over. Never hidden; nothing accepted.
                raise ProviderError(f"sink: duplicate correlation id ({exc.orig})", retryable=False) from None
        return results

    def lookup(self, uids: list[str]) -> dict[str, str]:
        """uid → provider id for the messages of `uids` this sink accepted."""
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(uids), 500):
                part = uids[start:start + 500]
                found.update(conn.execute(select(SinkMessage.correlation, SinkMessage.provider_id)
                                          .where(SinkMessage.correlation.in_(part))).all())
        return found

    def parse_receipts(self, body: bytes, headers: dict) -> list[Receipt]:
        """{"receipts": [{"id", "status": delivered|failed|sent, "phone"?, "code"?}]}; PayloadError naming
        the first field at fault (types and lengths as the receipt log stores them)."""
        out = []
        for n, item in enumerate(_items(body, "receipts")):
            where = f"receipts[{n}]"
            status = item.get("status")
            if not isinstance(status, str) or status not in RECEIPT_STATUSES:
                raise PayloadError(f"{where}.status", f"must be one of {', '.join(RECEIPT_STATUSES)}")
            out.append(Receipt(_text(item, "id", where, ID_MAX, required=True), status,
                               _text(item, "phone", where, PHONE_MAX), _text(item, "code", where, CODE_MAX)))
        return out

    def parse_inbound(self, body: bytes, headers: dict) -> list[Inbound]:
        """{"replies": [{"phone", "text"}]}; PayloadError naming the first field at fault."""
        out = []
        for n, item in enumerate(_items(body, "replies")):
            where = f"replies[{n}]"
            phone = _text(item, "phone", where, RAW_PHONE_MAX, required=True)
            if not isinstance(item.get("text"), str):
                raise PayloadError(f"{where}.text", "must be a string")
            out.append(Inbound(phone, item["text"]))
        return out


class PayloadError(ReceiptError):
    """A field that is missing, of the wrong type or too long: 400 naming it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}", field)


def _items(body: bytes, key: str) -> list[dict]:
    """The list of objects under `key` in a JSON object body."""
    try:
        data = json.loads(body or b"")
    except ValueError:
        raise PayloadError("body", "is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("body", "must be a JSON object")
    items = data.get(key)
    if not isinstance(items, list):
        raise PayloadError(key, "a list is required")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise PayloadError(f"{key}[{n}]", "must be an object")
    return items


def _text(item: dict, key: str, where: str, limit: int, required: bool = False) -> str | None:
    """A string (or whole number) field of at most `limit` characters."""
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{where}.{key}", "required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(f"{where}.{key}", "must be a string")
    value = str(value)
    if len(value) > limit:
        raise PayloadError(f"{where}.{key}", f"at most {limit} characters")
    return value
