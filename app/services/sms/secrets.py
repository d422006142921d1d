"""Channel credentials: read from environment variables, or a secret stored encrypted in the database.

The stored secret is a Fernet token under a key derived (HKDF-SHA256) from the app's SECRET_KEY: the
database alone does not reveal it, and the UI never shows it back (only whether one is set). Rotating
SECRET_KEY makes stored secrets unreadable: enter them again (`decrypt` then returns None).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
_INFO = b"crm sms channel secrets v1"


def _secret_key(secret_key: str | bytes | None) -> bytes:
    if secret_key is None:
        from flask import current_app

        secret_key = current_app.config["SECRET_KEY"]
    if not secret_key:
        raise RuntimeError("SECRET_KEY is not set: channel secrets cannot be encrypted")
    return secret_key.encode() if isinstance(secret_key, str) else secret_key


def fernet(secret_key: str | bytes | None = None) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(_secret_key(secret_key))
    return Fernet(base64.urlsafe_b64encode(raw))


def encrypt(plain: str, secret_key: str | bytes | None = None) -> str:
    return fernet(secret_key).encrypt(plain.encode()).decode()


def decrypt(token: str | None, secret_key: str | bytes | None = None) -> str | None:
    """The stored secret, or None when there is none or it cannot be read (another SECRET_KEY)."""
    if not token:
        return None
    try:
        return fernet(secret_key).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None


@dataclass(frozen=True)
class Credentials:
    access_key: str | None
    secret: str | None
    callback_secret: str | None


def _env(name: str | None, environ) -> str | None:
    return environ.get(name) if name else None


def credentials(channel, secret_key: str | bytes | None = None, environ=None) -> Credentials:
    """A channel's credentials: each env var when named; the secret falls back to the stored one."""
    environ = os.environ if environ is None else environ
    secret = _env(channel.secret_env, environ) or decrypt(channel.encrypted_secret, secret_key)
    return Credentials(_env(channel.access_key_env, environ), secret,
                       _env(channel.callback_secret_env, environ))
