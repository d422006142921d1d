"""What every page's layout needs besides FAB's: refusals (400, 403, 404) as pages of the console, in its
layout and language with a way back (JSON under /api/), and the language actually in use for the language menu
(FAB's menu assumes English when the session has chosen none, so it never offered English)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from babel import Locale
from flask import current_app, g, jsonify, render_template, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

REFUSALS = {
    400: (_l("Bad request"), _l("The request could not be used. Go back and check what you entered.")),
    403: (_l("Access denied"), _l("Your role does not allow you to open this page. If you need it, ask an "
                                  "administrator for the permission.")),
    404: (_l("Not found"), _l("This page or record does not exist, or it is outside what you may see.")),
}


def current_locale() -> str | None:
    """The key of LANGUAGES this request is rendered in ("zh_CN" is the locale zh_Hans_CN to Babel)."""
    locale = get_locale()
    for key in current_app.config["LANGUAGES"]:
        if Locale.parse(key) == locale:
            return key
    return None


def _back_url(index_url: str) -> str:
    """Where "Back" leads: the page the user came from when it is one of ours, else the home page."""
    referrer = request.referrer or ""
    parts = urlsplit(referrer)
    if referrer and parts.netloc == request.host and parts.path != request.path:
        return referrer
    return index_url


def refusal(exc: HTTPException):
    code = exc.code or 500
    if request.path.startswith("/api/"):
        default = type(exc).description
        message = exc.description if exc.description and exc.description != default else exc.name
        return jsonify(message=message), code
    from app.extensions import appbuilder

    if not hasattr(g, "user"):  # refused before FAB's own before_request loaded the user (a CSRF refusal)
        g.user = current_user
    title, message = REFUSALS[code]
    if code == 400 and exc.description and exc.description != type(exc).description:
        message = exc.description  # the reason, naming the field or argument (app.security.input_guards)
    try:
        index_url = appbuilder.get_url_for_index
        page = render_template("crm/error.html", appbuilder=appbuilder,
                               base_template=appbuilder.base_template, code=code, title=title,
                               message=message, back_url=_back_url(index_url), index_url=index_url)
    except Exception:  # the refusal must reach the user even if the layout cannot be drawn
        log.exception("could not render the %s page", code)
        return exc
    return page, code


def register(app) -> None:
    for code in REFUSALS:
        app.register_error_handler(code, refusal)
    app.jinja_env.globals["current_locale"] = current_locale
