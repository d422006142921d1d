"""Channel save rules: signature, provider, credentials, limits, opt-out text, options JSON."""

from __future__ import annotations

import json

from app.services.errors import DomainError
from app.services.sms.secrets import ENV_NAME

PROVIDERS = ("sink", "http")
SIGNATURE_MIN, SIGNATURE_MAX = 2, 12
# option name → type check
SINK_OPTIONS = {
    "fail_numbers": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "fail_rate": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1,
    "delay_ms": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 60_000,
    "timeout": lambda v: isinstance(v, bool),
}


def _bad_option(key: str) -> DomainError:
    """The error for a sink option of the wrong type (one literal message per option, for translation)."""
    if key == "fail_numbers":
        return DomainError("Option %(key)s must be a list of phone numbers", field="options", key=key)
    if key == "fail_rate":
        return DomainError("Option %(key)s must be a number from 0 to 1", field="options", key=key)
    if key == "delay_ms":
        return DomainError("Option %(key)s must be whole milliseconds from 0 to 60000", field="options",
                           key=key)
    return DomainError("Option %(key)s must be true or false", field="options", key=key)


def parse_options(raw: str | None) -> dict:
    """The options JSON object ({} when empty); DomainError(field="options") otherwise."""
    if raw is None or not str(raw).strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise DomainError("Options are not valid JSON: %(error)s", field="options", error=str(exc)) from None
    if not isinstance(value, dict):
        raise DomainError('Options must be a JSON object, e.g. {"delay_ms": 5}', field="options")
    return value


def check_options(provider: str, raw: str | None) -> None:
    options = parse_options(raw)
    if provider == "sink":
        unknown = sorted(set(options) - set(SINK_OPTIONS))
        if unknown:
            raise DomainError("Unknown sink options: %(names)s (known: %(known)s)", field="options",
                              names=", ".join(unknown), known=", ".join(SINK_OPTIONS))
        for key, value in options.items():
            if not SINK_OPTIONS[key](value):
                raise _bad_option(key)


def _outside(value, low: int, high: int) -> bool:
    return value is None or not (low <= value <= high)


def check_channel(channel) -> None:
    """The save rules of a channel (DomainError with the field at fault); trims text fields."""
    if channel.provider not in PROVIDERS:
        raise DomainError("Provider must be one of %(values)s", field="provider", values=", ".join(PROVIDERS))
    signature = (channel.signature or "").strip().strip("【】[]").strip()
    if not (SIGNATURE_MIN <= len(signature) <= SIGNATURE_MAX):
        raise DomainError("The signature has %(low)s–%(high)s characters (without 【】)",
                          field="signature", low=SIGNATURE_MIN, high=SIGNATURE_MAX)
    if any(c in signature for c in "【】[]"):
        raise DomainError("The signature cannot contain brackets", field="signature")
    channel.signature = signature
    for field in ("access_key_env", "secret_env", "callback_secret_env"):
        name = (getattr(channel, field) or "").strip() or None
        if name is not None and not ENV_NAME.match(name):
            raise DomainError("%(name)s is not an environment variable name (A-Z, 0-9, _)", field=field,
                              name=repr(name))
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
    if _outside(channel.rate_limit, 1, 10_000):
        raise DomainError("The rate limit (messages/s) must be from %(low)s to %(high)s", field="rate_limit",
                          low=1, high=10_000)
    if _outside(channel.batch_size, 1, 1_000):
        raise DomainError("The batch size must be from %(low)s to %(high)s", field="batch_size",
                          low=1, high=1_000)
    if _outside(channel.timeout_seconds, 1, 120):
        raise DomainError("The timeout (seconds) must be from %(low)s to %(high)s", field="timeout_seconds",
                          low=1, high=120)
    if _outside(channel.priority, 0, 10_000):
        raise DomainError("The priority must be from %(low)s to %(high)s", field="priority",
                          low=0, high=10_000)
    if channel.price_per_segment is None or channel.price_per_segment < 0:
        raise DomainError("The price per segment cannot be negative", field="price_per_segment")
    channel.opt_out_text = (channel.opt_out_text or "").strip()
    if not channel.opt_out_text:
        raise DomainError("Enter the opt-out text marketing messages end with, e.g. 拒收请回复R",
                          field="opt_out_text")
    check_options(channel.provider, channel.options)
