"""Channel save rules: signature, provider, credentials, limits, opt-out text, options JSON."""

from __future__ import annotations

import json

from app.services.errors import DomainError
from app.services.sms.secrets import ENV_NAME

PROVIDERS = ("sink", "http")
SIGNATURE_MIN, SIGNATURE_MAX = 2, 12
# option name → (type check, message)
SINK_OPTIONS = {
    "fail_numbers": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                     "a list of phone numbers"),
    "fail_rate": (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1,
                  "a number from 0 to 1"),
    "delay_ms": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 60_000,
                 "whole milliseconds from 0 to 60000"),
    "timeout": (lambda v: isinstance(v, bool), "true or false"),
}


def parse_options(raw: str | None) -> dict:
    """The options JSON object ({} when empty); DomainError(field="options") otherwise."""
    if raw is None or not str(raw).strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise DomainError(f"Options are not valid JSON: {exc}", field="options") from None
    if not isinstance(value, dict):
        raise DomainError('Options must be a JSON object, e.g. {"delay_ms": 5}', field="options")
    return value


def check_options(provider: str, raw: str | None) -> None:
    options = parse_options(raw)
    if provider == "sink":
        unknown = sorted(set(options) - set(SINK_OPTIONS))
        if unknown:
            raise DomainError(f"Unknown sink options: {', '.join(unknown)} "
                              f"(known: {', '.join(SINK_OPTIONS)})", field="options")
        for key, value in options.items():
            ok, what = SINK_OPTIONS[key]
            if not ok(value):
                raise DomainError(f"Option {key} must be {what}", field="options")


def _range(value, low: int, high: int, field: str, label: str) -> None:
    if value is None or not (low <= value <= high):
        raise DomainError(f"{label} must be from {low} to {high}", field=field)


def check_channel(channel) -> None:
    """The save rules of a channel (DomainError with the field at fault); trims text fields."""
    if channel.provider not in PROVIDERS:
        raise DomainError(f"Provider must be one of {', '.join(PROVIDERS)}", field="provider")
    signature = (channel.signature or "").strip().strip("【】[]").strip()
    if not (SIGNATURE_MIN <= len(signature) <= SIGNATURE_MAX):
        raise DomainError(f"The signature has {SIGNATURE_MIN}–{SIGNATURE_MAX} characters (without 【】)",
                          field="signature")
    if any(c in signature for c in "【】[]"):
        raise DomainError("The signature cannot contain brackets", field="signature")
    channel.signature = signature
    for field in ("access_key_env", "secret_env", "callback_secret_env"):
        name = (getattr(channel, field) or "").strip() or None
        if name is not None and not ENV_NAME.match(name):
            raise DomainError(f"{name!r} is not an environment variable name (A-Z, 0-9, _)", field=field)
        setattr(channel, field, name)
    if channel.provider == "http":
        from app.services.signing import check_base_url

        try:
            channel.base_url = check_base_url((channel.base_url or "").strip())
        except ValueError as exc:
            raise DomainError(str(exc), field="base_url") from None
        if not channel.access_key_env:
            raise DomainError("The HTTP provider needs the environment variable holding the key id",
                              field="access_key_env")
        if not channel.secret_env and not channel.encrypted_secret:
            raise DomainError("Name the environment variable holding the secret, or enter the secret",
                              field="secret_env")
    _range(channel.rate_limit, 1, 10_000, "rate_limit", "The rate limit (messages/s)")
    _range(channel.batch_size, 1, 1_000, "batch_size", "The batch size")
    _range(channel.timeout_seconds, 1, 120, "timeout_seconds", "The timeout (seconds)")
    _range(channel.priority, 0, 10_000, "priority", "The priority")
    if channel.price_per_segment is None or channel.price_per_segment < 0:
        raise DomainError("The price per segment cannot be negative", field="price_per_segment")
    channel.opt_out_text = (channel.opt_out_text or "").strip()
    if not channel.opt_out_text:
        raise DomainError("Enter the opt-out text marketing messages end with, e.g. 拒收请回复R",
                          field="opt_out_text")
    check_options(channel.provider, channel.options)
