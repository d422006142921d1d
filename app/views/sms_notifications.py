"""POST /api/v1/notifications/event — other systems (orders, classes) raise a notification event.

Authenticated by API key or JWT; the account needs can_write on SmsNotification (the seeded
"Notification Integration" role). Idempotent per (event, key): the same event sent again answers 200 with
the message already made, never a second text. The phone is never echoed back.
"""

from __future__ import annotations

from flask import current_app, request
from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, protect, safe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.jobs.sms_notifications import notify_event
from app.models.sales import Customer
from app.security import policy
from app.security.scope import current_viewer, restrict
from app.services import inputs
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.sms.notifications import EVENTS, EXTERNAL_EVENTS
from app.views.uow import error_json, run

MAX_KEY = 100
MAX_VALUE = 200
MAX_EVENT = 40
MAX_PHONE = 32  # as typed, before it is normalised


def _event_case(event: str) -> dict:
    """The variables a body of `event` must give (`name` comes from the customer when not given)."""
    needed = [n for n in EVENTS[event] if n != "name"]
    if not needed:
        return {"properties": {"event": {"enum": [event]}}}
    return {"properties": {"event": {"enum": [event]}, "variables": {"type": "object", "required": needed}},
            "required": ["variables"]}


#: the body as the OpenAPI document declares it (app.views.openapi). The phone pattern is what the
#: document promises to take (E.164 mobile numbers); a national number of CRM_DEFAULT_REGION is taken too.
EVENT_BODY = {
    "type": "object",
    "required": ["event", "key"],
    "properties": {
        "event": {"type": "string", "enum": list(EXTERNAL_EVENTS)},
        "key": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_KEY, "pattern": r"\S"},
                          {"type": "integer"}],
                "description": "Unique per event (e.g. the order number): one text per (event, key)"},
        "phone": {"type": "string", "pattern": r"^\+861[38][0-9]{9}$",
                  "description": "The number to text, unless customer_id is given"},
        "customer_id": {"type": "integer", "minimum": 1, "maximum": inputs.INT_MAX,
                        "description": "The customer to text (their phone and name)"},
        "variables": {"type": "object", "additionalProperties": {
            "oneOf": [{"type": "string", "maxLength": MAX_VALUE}, {"type": "number"}]}},
    },
    "anyOf": [{"required": ["phone"]}, {"required": ["customer_id"]}],
    "oneOf": [_event_case(event) for event in EXTERNAL_EVENTS],
}


def parse_event(session, body, region: str, viewer=None) -> tuple[dict, dict]:
    """(the call's arguments, {field: problem}) from the request body."""
    problems: dict[str, str] = {}
    if not isinstance(body, dict):
        return {}, {"body": "must be a JSON object"}
    event = inputs.text(problems, "event", body.get("event"), MAX_EVENT, required=True)
    if event is not None and event not in EXTERNAL_EVENTS:
        problems["event"] = f"must be one of {', '.join(EXTERNAL_EVENTS)}"
        event = None
    key = inputs.text(problems, "key", body.get("key"), MAX_KEY, numbers=True)
    if key is None and "key" not in problems:
        problems["key"] = "required (a string or number unique per event, e.g. the order number)"
    variables = body.get("variables", {})
    if not isinstance(variables, dict):
        problems["variables"] = "must be a JSON object"
        variables = {}
    else:
        bad = [k for k, v in variables.items() if not inputs.scalar(v, MAX_VALUE)]
        if bad:
            problems["variables"] = f"values must be strings or numbers of at most {MAX_VALUE} characters: " \
                                    f"{inputs.quote(', '.join(sorted(bad)), 200)}"
        elif event in EVENTS:
            missing = [n for n in EVENTS[event] if n != "name" and n not in variables]
            if missing:
                problems["variables"] = f"missing: {', '.join(missing)}"
    phone, customer_id, name = body.get("phone"), body.get("customer_id"), None
    if phone in (None, "") and customer_id in (None, ""):
        problems["phone"] = "give the phone or the customer_id"
    elif phone not in (None, ""):
        raw = inputs.text(problems, "phone", phone, MAX_PHONE, numbers=True)
        try:
            phone = normalise_phone(raw, region) if raw is not None else None
        except DomainError as exc:
            problems["phone"] = exc.message
    else:
        customer_id = inputs.whole_number(problems, "customer_id", customer_id)
        if customer_id is not None:
            q = select(Customer.phone, Customer.name).where(Customer.id == customer_id)
            if viewer is not None:
                q = restrict(q, Customer, viewer)
            row = session.execute(q).first()
            if row is None:
                problems["customer_id"] = "no such customer"
            elif not row.phone:
                problems["customer_id"] = "the customer has no phone"
            else:
                phone, name = row.phone, row.name
    if problems:
        return {}, problems
    values = {str(k): str(v) for k, v in variables.items()}
    if name and "name" not in values:
        values["name"] = name
    return {"event": event, "key": key, "phone": phone, "variables": values,
            "customer_id": customer_id if isinstance(customer_id, int) else None}, {}


class NotificationEventApi(BaseApi):
    resource_name = "notifications"
    class_permission_name = policy.SMS_NOTIFICATION
    method_permission_name = {"event": "write"}
    openapi_spec_tag = "SMS notifications"

    @expose("/event", methods=["POST"])
    @protect()
    @safe
    def event(self):
        """Raise a notification event (order paid, class reminder); one text per (event, key).
        ---
        post:
          responses:
            201:
              description: The message was made and queued
            200:
              description: This (event, key) was notified already; the message made then
            400:
              description: A message per bad field (errors)
            422:
              description: The event cannot be notified (e.g. no approved template for it)
        """
        args, problems = parse_event(db.session, request.get_json(silent=True),
                                     current_app.config["CRM_DEFAULT_REGION"], current_viewer())
        if problems:
            return self.response(400, message="Invalid notification event", errors=problems)
        try:
            notified, refused = run(notify_event, args["event"], args["key"], args["phone"],
                                    args["variables"], customer_id=args["customer_id"])
        except IntegrityError:  # the same event raced in twice: the other request made the message
            db.session.rollback()
            return self.response(409, message="Sent concurrently: send it again")
        if refused is not None and refused.field == "variables":
            return self.response(400, message="Invalid notification event",
                                 errors={"variables": refused.message})
        if refused is not None:
            return error_json(refused)
        return self.response(201 if notified.created else 200, id=notified.message_id,
                             created=notified.created, status=notified.status)
