"""Public lead capture: the landing-page form and the chat widget post here (one public endpoint).

The form token: a landing page (and the chat widget) embeds a token signed with the app's SECRET_KEY,
naming the page and its campaign, valid for `capture.form_token_minutes`. A post without a valid,
unexpired token is refused. The page may be cached, so several visitors can hold the same token: the
post's idempotency key is the token together with the phone (a resubmission by the same visitor answers
with the lead the first one made and writes nothing; another visitor's phone makes another lead).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.services import metadata
from app.services.errors import DomainError

TOKEN_SALT = "crm-capture-form"
TOKEN_MAX = 512  # characters: a real token is about 120


@dataclass(frozen=True)
class FormToken:
    landing_page_id: int | None
    campaign_id: int | None
    nonce: str


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(landing_page_id: int | None, campaign_id: int | None) -> str:
    """A fresh form token for a page (or the chat widget on it); each page view gets its own nonce."""
    return _serializer().dumps({"p": landing_page_id, "c": campaign_id, "n": secrets.token_urlsafe(12)})


def read_token(session, token) -> FormToken:
    """The token's contents; DomainError(field="form_token") when missing, forged or expired."""
    if not isinstance(token, str) or not token or len(token) > TOKEN_MAX:
        raise DomainError("The form token is missing or malformed", field="form_token", status=400)
    max_age = 60 * metadata.config_value(session, "capture.form_token_minutes")
    try:
        data = _serializer().loads(token, max_age=max_age)
    except SignatureExpired:
        raise DomainError("The form has expired: reload the page and send it again", field="form_token",
                          status=400) from None
    except BadSignature:
        raise DomainError("The form token is not valid", field="form_token", status=400) from None
    if not isinstance(data, dict) or not isinstance(data.get("n"), str):
        raise DomainError("The form token is not valid", field="form_token", status=400)
    page, campaign = data.get("p"), data.get("c")
    return FormToken(page if isinstance(page, int) else None, campaign if isinstance(campaign, int) else None,
                     data["n"])
