"""SMS providers behind one small interface: send a batch, parse delivery receipts and inbound replies.

`provider_for(channel)` returns the adapter of a channel. Adapters raise ProviderError for a whole-batch
failure (timeout, refused request); per-number outcomes come back as SendResult rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboundSms:
    uid: str  # our message uid: the provider's correlation id
    phone: str  # E.164
    content: str  # rendered text, signature included


@dataclass(frozen=True)
class SendResult:
    uid: str
    ok: bool
    provider_id: str | None = None
    error_code: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class Receipt:
    correlation: str  # our uid, or the provider's id when that is all the provider sends
    status: str  # delivered / failed
    phone: str | None = None
    error_code: str | None = None
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Inbound:
    phone: str
    text: str
    at: dt.datetime | None = None


class ProviderError(Exception):
    """The whole batch failed (timeout, refused, unreachable); `retryable` says whether to try again."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class ReceiptError(Exception):
    """A receipt / inbound request that is not acceptable (bad signature or payload): answer 4xx;
    `field` names what is at fault (`receipts[0].id`), when one field is."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Provider(Protocol):
    def send_batch(self, messages: list[OutboundSms]) -> list[SendResult]: ...

    def parse_receipts(self, body: bytes, headers: dict) -> list[Receipt]: ...

    def parse_inbound(self, body: bytes, headers: dict) -> list[Inbound]: ...


def provider_for(channel, engine=None) -> Provider:
    """The adapter of `channel` (by its provider kind)."""
    if channel.provider == "sink":
        from app.services.sms.sink import SinkProvider

        return SinkProvider.from_channel(channel, engine)
    if channel.provider == "http":
        from app.services.sms.http import HttpProvider

        return HttpProvider.from_channel(channel)
    raise ProviderError(f"unknown provider {channel.provider!r}", retryable=False)
