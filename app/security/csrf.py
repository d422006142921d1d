"""CSRF for the REST API when a browser session authenticates it.

FAB exempts every API blueprint from Flask-WTF's CSRF check (`BaseApi.create_blueprint`), because JWTs and
API keys come in the Authorization header, which a cross-site page cannot set. But the APIs with
`allow_browser_login` also accept the session cookie, which the browser sends on a cross-site form post.
So a write to the API that carries no Authorization header while a session user is logged in needs the
CSRF token (the `X-CSRFToken` header, or the `csrf_token` form field), exactly as a form does.
"""

from __future__ import annotations

from flask import Flask, current_app, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import CSRFError

API_PREFIX = "/api/"
#: Public endpoints (the lead capture form): no login, their own proof of origin (a signed form token).
PUBLIC_PREFIX = "/api/v1/public/"


def session_write_needs_token():
    """before_request: refuse a cookie-authenticated API write without a valid CSRF token (400 JSON)."""
    config = current_app.config
    if not config.get("WTF_CSRF_ENABLED", True) or request.method not in config["WTF_CSRF_METHODS"]:
        return None
    if not request.path.startswith(API_PREFIX) or request.path.startswith(PUBLIC_PREFIX) or (
            "Authorization" in request.headers):
        return None
    if not current_user.is_authenticated:  # not the session: a signed callback or an anonymous call
        return None
    try:
        current_app.extensions["csrf"].protect()
    except CSRFError:
        response = jsonify(message=_("A browser session must send the CSRF token (X-CSRFToken header) "
                                     "to change data through the API."), field="csrf_token")
        response.status_code = 400
        return response
    return None


def install(app: Flask) -> None:
    app.before_request(session_write_needs_token)
