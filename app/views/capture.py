"""The public lead capture endpoint POST /api/v1/public/lead (landing-page form and chat widget).

No login: the signed form token of the page (app.services.capture) stands in for one. Rate-limited per
client address (CRM_CAPTURE_IP_LIMIT, Flask-Limiter in Redis), so a flood from one address is refused
while posts from others still land; per phone in app.services.capture. CSRF-exempt even for a visitor
who is logged in (app/security/csrf.py PUBLIC_PREFIX): the form token is this form's proof of origin.

JSON in, JSON out (the widget, a page's script); a browser without JavaScript posts the form encoded and
is sent back (303) to the page's thanks page, or to the page with `error` / `message` to show.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote, urlencode

from flask import current_app, redirect, request
from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.utils.limit import Limit
from flask_babel import gettext
from flask_limiter.util import get_remote_address

from app.clock import utcnow
from app.extensions import db
from app.jobs.leads import request_dispatch
from app.services import capture
from app.services.errors import DomainError
from app.views import uow
from app.views.request_body import read_capped

DEFAULT_LIMIT = "20 per minute"
BODY_MAX = 16 * 1024  # the fields and the token take under 2 KB
JSON_TYPE, FORM_TYPE = "application/json", "application/x-www-form-urlencoded"
FORM_ANCHOR = "lead-form"


def _limit() -> str:
    return current_app.config.get("CRM_CAPTURE_IP_LIMIT") or DEFAULT_LIMIT


def _flood_message() -> str:
    return gettext("Too many requests from your network: please wait a minute and send again")


def _parse(body: bytes, browser: bool) -> dict:
    """The posted fields: a JSON object, or a form (the first value of each name)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError("The body is not UTF-8 text", field="body", status=400) from None
    if browser:
        fields: dict = {}
        for name, value in parse_qsl(text, keep_blank_values=True):
            fields.setdefault(name, value)
        return fields
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DomainError("The body must be a JSON object", field="body", status=400)
    return data


def _page_url(slug: str, suffix: str = "", **args) -> str:
    base = (current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    query = f"?{urlencode(args)}" if args else ""
    anchor = f"#{FORM_ANCHOR}" if args else ""
    return f"{base}/p/{quote(slug, safe='')}{suffix}{query}{anchor}"


class PublicLeadApi(BaseApi):
    resource_name = "public"
    openapi_spec_tag = "Public lead capture"
    limits = [Limit(_limit, key_func=get_remote_address, methods=("POST",), error_message=_flood_message)]
    # The body is read here under its own cap (the central guard would parse the form first and leave
    # nothing to read); unstorable text is refused per field by app.services.capture.
    text_checked_body = True

    def _refuse(self, exc: DomainError, fields: dict | None, browser: bool):
        slug = capture.page_slug(db.session, fields) if browser and fields is not None else None
        if slug is not None:
            return redirect(_page_url(slug, error=exc.field or "", message=exc.message), code=303)
        return self.response(exc.status, **exc.as_dict())

    @expose("/lead", methods=["POST"])
    @safe
    def lead(self):
        """A lead from the form of a landing page or from the chat widget (no login: the form token).
        ---
        post:
          description: >-
            The signed `form_token` of the page is required; the same token and phone sent again answer
            with the same reference and write nothing. A form-encoded post (a browser without
            JavaScript) is answered with a redirect to the page instead of JSON when the page is known.
            Limits: CRM_CAPTURE_IP_LIMIT posts per client address, config `capture.per_phone_per_hour`
            accepted posts per phone. Messages follow Accept-Language (zh by default, en).
          security: []
          requestBody:
            required: true
            content:
              application/json:
                schema: &post
                  type: object
                  required: [name, phone, form_token]
                  properties:
                    name: {type: string, minLength: 1, maxLength: 64}
                    phone:
                      type: string
                      maxLength: 32
                      description: A mobile number; national numbers are read in CRM_DEFAULT_REGION
                    consult_note: {type: string, maxLength: 1000}
                    form_token:
                      type: string
                      maxLength: 512
                      description: The signed token of the page (its form and chat widget carry it)
                    website:
                      type: string
                      maxLength: 0
                      description: The honeypot, hidden from people; anything in it answers 400
                    page: {type: string, maxLength: 80, description: The slug of the landing page}
                    utm_campaign:
                      type: string
                      maxLength: 100
                      description: The tracking code of a campaign, used when the token names none
                    chat: {type: string, maxLength: 64, description: The session token of the chat widget}
              application/x-www-form-urlencoded:
                schema: *post
          responses:
            201:
              description: The lead was received
              content:
                application/json:
                  schema: &received
                    type: object
                    properties:
                      status: {type: string, enum: [received]}
                      reference: {type: string, description: Opaque; the same for the same form sent again}
            200:
              description: The same form sent again (same token and phone); nothing was written
              content:
                application/json:
                  schema: *received
            303:
              description: >-
                A form-encoded post: to /p/<slug>/thanks when received, to
                /p/<slug>?error=<field>&message=<text>#lead-form when refused
            400:
              description: >-
                Not a post of our forms: the honeypot `website` filled, a body that is not a JSON
                object or not UTF-8, unstorable text (NUL)
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
            409:
              description: The duplicate policy "reject" refuses a second lead for this phone and course
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
            413:
              description: The body is over 16 KB
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
            415:
              description: Neither JSON nor a form-encoded body
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
            422:
              description: >-
                A field to fix: `field` names it (name, phone, consult_note, utm_campaign, chat, page;
                form_token when missing, forged or expired: reload the page)
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
            429:
              description: >-
                Too many posts from this client address, or (`field` phone) for this phone in the
                last hour
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
        """
        browser = request.mimetype == FORM_TYPE
        if not browser and request.mimetype != JSON_TYPE:
            return self.response(415, message=gettext("Send the form as JSON or form-encoded"), field="body")
        body = read_capped(BODY_MAX)
        if body is None:
            return self.response(413, message=gettext("The request body is too large"), field="body")
        fields = None
        try:
            fields = _parse(body, browser)
        except DomainError as exc:
            return self._refuse(exc, None, browser)
        outcome = uow.run(capture.capture_lead, db.session, fields, get_remote_address(), utcnow(),
                          region=current_app.config["CRM_DEFAULT_REGION"],
                          user_agent=request.headers.get("User-Agent"),
                          referer=request.headers.get("Referer"))
        if outcome.error is not None:
            return self._refuse(outcome.error, fields, browser)
        result = outcome.result
        if result.needs_dispatch:
            request_dispatch()
        if browser and result.landing_page is not None:
            return redirect(_page_url(result.landing_page.slug, "/thanks"), code=303)
        return self.response(200 if result.replayed else 201, status="received", reference=result.reference)


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    appbuilder.add_api(PublicLeadApi)
