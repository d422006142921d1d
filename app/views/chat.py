"""The chat widget's public endpoints (no login), CORS for the public API, and this domain's registration
(Marketing › Chats and the transcript panel are app.views.chat_agents').

POST /api/v1/public/chat/start, POST and GET /api/v1/public/chat/<token>/messages. The visitor's chat
token is the only credential; every call is rate-limited per client address (CRM_CHAT_IP_LIMIT).
A refusal answers 4xx JSON {"message", "field"}. Phone numbers in messages go out masked.

CORS: the widget may sit on another site, so every answer under /api/v1/public/ (and only there) allows
the origins of CRM_PUBLIC_CORS_ORIGINS (space-separated; "*", the default, allows any) without
credentials — the widget never sends cookies — and answers the preflight of a JSON post.
"""

from __future__ import annotations

import json

from flask import current_app, request
from flask_appbuilder.api import BaseApi, expose, safe
from flask_appbuilder.utils.limit import Limit
from flask_limiter.util import get_remote_address

from app import clock
from app.extensions import db
from app.models.marketing import AGENT
from app.services import chat, chat_bot
from app.services.errors import DomainError
from app.views.request_body import read_capped
from app.views.uow import error_json, json_result

PUBLIC_PREFIX = "/api/v1/public/"
DEFAULT_LIMIT = "60 per minute"
MAX_BODY = 16 * 1024  # a message is at most 1000 characters: anything much bigger is refused unread


def _limit() -> str:
    return current_app.config.get("CRM_CHAT_IP_LIMIT", DEFAULT_LIMIT)


def public_message(message) -> dict:
    """A message as the visitor sees it: phones masked, an agent by name."""
    employee = message.employee if message.sender == AGENT else None
    return {"id": message.id, "sender": message.sender, "body": chat_bot.mask_phones(message.body),
            "name": employee.name if employee is not None else None,
            "at": clock.isoformat(message.created_at)}


def _json_object() -> dict:
    """The request's JSON object (any content type: a plain-text post avoids the CORS preflight)."""
    raw = read_capped(MAX_BODY)
    if raw is None:
        raise DomainError("Body too large", field="body", status=413)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DomainError("The body must be a JSON object", field="body", status=400) from None
    if not isinstance(body, dict):
        raise DomainError("The body must be a JSON object", field="body", status=400)
    return body


class PublicChatApi(BaseApi):
    """The chat widget's endpoints: start a chat, post the visitor's message, poll for new ones."""

    resource_name = "public_chat"
    route_base = "/api/v1/public/chat"
    openapi_spec_tag = "Public chat"
    limits = [Limit(_limit, key_func=get_remote_address, methods=("GET", "POST"))]

    @expose("/start", methods=["POST"])
    @safe
    def start(self):
        """Start a chat: the bot's greeting, the chat's token and a form token for the lead.
        ---
        post:
          security: []
          requestBody:
            required: false
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    page:
                      type: string
                      maxLength: 80
                      nullable: true
                      description: The landing page's slug (the page's campaign comes with it)
                    campaign:
                      type: string
                      maxLength: 100
                      nullable: true
                      description: A campaign's tracking code
                    lang:
                      type: string
                      maxLength: 16
                      nullable: true
                      description: zh or en (zh-CN, en-US … accepted); zh by default
          responses:
            201:
              description: The chat's token, a form token for POST /api/v1/public/lead, and the greeting
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      token:
                        type: string
                      form_token:
                        type: string
                      messages:
                        type: array
                        items:
                          type: object
            400:
              description: The body is not a JSON object, or a field is not text
            403:
              description: Chat is not enabled on this landing page
            404:
              description: No such published landing page, or no such campaign
            413:
              description: Body too large
            422:
              description: A field is too long
            429:
              description: Too many requests from this address
        """
        def work():
            body = _json_object()
            return chat.start(db.session, body.get("page"), body.get("campaign"), body.get("lang"),
                              client_ip=get_remote_address())

        return json_result(work, status=201, body=lambda started: {
            "token": started.chat.token, "form_token": started.form_token,
            "messages": [public_message(m) for m in started.messages]})

    @expose("/<token>/messages", methods=["POST"])
    @safe
    def post_message(self, token: str):
        """The visitor's message; answers it and the bot's reply (none once an agent has answered).
        ---
        post:
          security: []
          parameters:
          - in: path
            name: token
            required: true
            schema:
              type: string
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [body]
                  properties:
                    body:
                      type: string
                      minLength: 1
                      maxLength: 1000
          responses:
            200:
              description: The messages written, and the name and phone the bot has gathered so far
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      messages:
                        type: array
                        items:
                          type: object
                      contact:
                        type: object
                      form_token:
                        type: string
                        nullable: true
            400:
              description: The body is not a JSON object
            404:
              description: No such chat
            409:
              description: The chat is closed
            413:
              description: Body too large
            422:
              description: The message is empty, not text or over 1000 characters
            429:
              description: Too many requests from this address, or the chat's 200 messages are used up
        """
        def work():
            return chat.post_visitor(db.session, token, _json_object().get("body"))

        return json_result(work, body=lambda posted: {
            "messages": [public_message(m) for m in posted.messages], "contact": posted.contact,
            "form_token": posted.form_token})

    @expose("/<token>/messages", methods=["GET"])
    @safe
    def messages(self, token: str):
        """The chat's messages after message `after` (an agent's replies, while the widget is open).
        ---
        get:
          security: []
          parameters:
          - in: path
            name: token
            required: true
            schema:
              type: string
          - in: query
            name: after
            required: false
            schema:
              type: integer
              minimum: 0
              maximum: 2147483647
          responses:
            200:
              description: The newer messages, oldest first, and the chat's status
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      messages:
                        type: array
                        items:
                          type: object
                      status:
                        type: string
            400:
              description: after is not a whole number
            404:
              description: No such chat
            429:
              description: Too many requests from this address
        """
        after = request.args.get("after")
        if after is not None:
            try:
                after = int(after)
            except ValueError:
                return error_json(DomainError("after must be a whole number", field="after", status=400))
            if not 0 <= after <= 2**31 - 1:
                return error_json(DomainError("after must be a whole number", field="after", status=400))

        return json_result(lambda: chat.messages_since(db.session, token, after), body=lambda result: {
            "status": result[0].status, "messages": [public_message(m) for m in result[1]]})


def _allowed_origin(origin: str | None) -> str | None:
    allowed = (current_app.config.get("CRM_PUBLIC_CORS_ORIGINS") or "*").split()
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def public_cors(response):
    """after_request: CORS on the public API only (the widget and the lead form on other sites)."""
    if not request.path.startswith(PUBLIC_PREFIX):
        return response
    origin = _allowed_origin(request.headers.get("Origin"))
    if origin is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    if origin != "*":
        response.headers.add("Vary", "Origin")
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "86400"
    return response


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    from app.views import chat_agents

    appbuilder.add_api(PublicChatApi)
    chat_agents.register(appbuilder)
    app = current_app._get_current_object()  # register runs inside the app's context
    if public_cors not in app.after_request_funcs.get(None, []):
        app.after_request(public_cors)
