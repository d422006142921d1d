"""Outbound calling: call records, click-to-call (browser JSON with CSRF, and the JWT API), the providers'
signed status callbacks, and the menu of the calling pages (configuration pages: app.views.call_config).

Click-to-call takes an opportunity or customer id, never a phone number: the server resolves the phone,
checks the caller's data scope (404 when the record is outside it) and the ("can_call", "CallRecord")
permission; a refusal answers 409 / 422 with {"reason": code, "message": text}.
"""

from __future__ import annotations

import json
import logging

from flask import current_app, request
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access_api
from flask_appbuilder.utils.limit import Limit
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address
from markupsafe import Markup, escape
from sqlalchemy import select

from app.clock import utcnow
from app.extensions import db
from app.models.calls import SIMULATOR, CallRecord, OutboundInterface
from app.models.sales import Customer, Opportunity
from app.security import policy
from app.security.input_guards import INT32_MAX, storable_id
from app.security.masking import mask_phone
from app.security.scope import current_viewer, restrict
from app.services.calls import callbacks
from app.services.calls.dialing import CallRefused, click_to_call
from app.services.calls.providers import CallbackError, ProviderError, SignatureError
from app.services.errors import DomainError
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView
from app.views.call_config import (
    LABELS,
    CallLineView,
    CallNumberView,
    DoNotCallApi,
    DoNotCallView,
    OutboundInterfaceView,
    SeatView,
)
from app.views.request_body import read_capped
from app.views.sales import PageShowMixin
from app.views.uow import run

log = logging.getLogger(__name__)
MAX_CALLBACK_BODY = 1024 * 1024  # chunked bodies too (read_capped)
REFUSAL_MESSAGES = {
    "no_seat": _l("You have no active seat: ask an administrator for one."),
    "line_disabled": _l("Your seat's line is disabled."),
    "outside_hours": _l("Outside the line's calling hours."),
    "do_not_call": _l("This number is on the do-not-call list."),
    "callee_limit": _l("This number was already dialled the maximum number of times today."),
    "no_number": _l("No caller-ID number is available right now (all at their limits)."),
    "line_busy": _l("All channels of the line are in use: try again in a moment."),
    "no_phone": _l("There is no phone number to call."),
    "provider_error": _l("The call centre refused the call."),
}
STATUS_LABELS = dict(labels.choices("call.status"))  # app/views/labels.py


def refusal_body(exc: CallRefused) -> dict:
    message = REFUSAL_MESSAGES.get(exc.reason)
    return {"reason": exc.reason, "message": str(message) if message else exc.message}


# --- call records -------------------------------------------------------------------------------------
def _transcript_lines(raw: str | None) -> list[dict]:
    try:
        rows = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


class CallRecordView(PageShowMixin, CrmModelView):
    """Call records within the data scope (owner: the agent; org: the agent's unit at the call)."""

    datamodel = SQLAInterface(CallRecord)
    class_permission_name = policy.CALL_RECORD
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Call Records")
    add_title, edit_title = _l("Add Call Record"), _l("Edit Call Record")
    list_columns = ["started_at", "employee", "callee_phone", "opportunity", "number", "status", "result",
                    "duration_seconds", "recording_url"]
    show_columns = ["uid", "status", "result", "employee", "seat", "org_unit", "opportunity", "customer",
                    "callee_phone", "number", "line", "privacy_number", "binding_expires_at", "started_at",
                    "rang_at", "answered_at", "ended_at", "duration_seconds", "recording_url",
                    "provider_call_id"]
    export_columns = ["uid", "started_at", "employee", "callee_phone", "opportunity_id", "number", "status",
                      "result", "answered_at", "ended_at", "duration_seconds", "recording_url"]
    search_columns = ["status", "result", "started_at", "employee", "line", "number", "duration_seconds"]
    order_columns = ["started_at", "duration_seconds", "status"]
    base_order = ("started_at", "desc")
    phone_columns = ("callee_phone",)
    label_columns = LABELS
    show_template = "calls/record_show.html"
    formatters_columns = {
        "status": labels.formatter("call.status"),
        "result": labels.formatter("call.result"),
        "opportunity": lambda o: f"#{o.id}" if o is not None else "",
        "recording_url": lambda url: _recording_link(url),
    }

    def page_context(self, item) -> dict:
        return {"item": item, "transcript": _transcript_lines(item.transcript if item else None)}


def _recording_link(url):
    if not url:
        return ""
    if not str(url).startswith(("https://", "http://")):
        return escape(url)
    return Markup('<a href="{0}" target="_blank" rel="noopener noreferrer">{1}</a>').format(url, _("Listen"))


class CallRecordApi(CrmModelRestApi):
    datamodel = SQLAInterface(CallRecord)
    resource_name = "call_record"
    class_permission_name = policy.CALL_RECORD
    base_permissions = ["can_read"]
    list_columns = show_columns = [
        "id", "uid", "status", "result", "employee.id", "employee.name", "seat.seat_no", "opportunity.id",
        "customer.id", "callee_phone", "number.number", "line.name", "started_at", "rang_at", "answered_at",
        "ended_at", "duration_seconds", "recording_url", "transcript"]
    search_columns = ["status", "result", "started_at", "employee"]
    phone_columns = ("callee_phone",)
    openapi_spec_tag = "Call records"


# --- click-to-call ------------------------------------------------------------------------------------
def _target_id(body: dict, field: str) -> int | None:
    """The body's `field`: an id a row can have (a whole number, or its digits, from 1 to 2**31 - 1),
    checked before any query; else a 400 naming the field. Absent or empty: None."""
    value = body.get(field)
    if value is None or value == "":
        return None
    if not storable_id(value) or int(value) < 1:
        raise DomainError("%(name)s must be an id: a whole number from 1 to %(maximum)d", field=field,
                          status=400, name=field, maximum=INT32_MAX)
    return int(value)


def dial_from_request(body) -> tuple[int, dict]:
    """The shared body of both click-to-call endpoints: (HTTP status, JSON body)."""
    if not isinstance(body, dict):
        return 400, {"message": 'Send {"opportunity_id": …} or {"customer_id": …}'}
    if "phone" in body or "callee" in body:
        return 400, {"message": "Send an opportunity or customer id, never a phone number"}
    try:
        opp_id, customer_id = _target_id(body, "opportunity_id"), _target_id(body, "customer_id")
    except DomainError as exc:
        return exc.status, exc.as_dict()
    if (opp_id is None) == (customer_id is None):
        return 400, {"message": "Send exactly one of opportunity_id and customer_id"}
    viewer = current_viewer()
    model, pk = (Opportunity, opp_id) if opp_id is not None else (Customer, customer_id)
    if db.session.scalar(restrict(select(model.id).where(model.id == pk), model, viewer)) is None:
        return 404, {"message": "Not found or outside your data scope"}
    if viewer.employee_id is None:
        return 422, {"reason": "no_seat", "message": str(REFUSAL_MESSAGES["no_seat"])}
    call, refused = run(click_to_call, db.session, viewer.employee_id, utcnow(), opportunity_id=opp_id,
                        customer_id=customer_id)
    if refused is not None:
        body = refusal_body(refused) if isinstance(refused, CallRefused) else refused.as_dict()
        return refused.status, body
    if call.interface.provider == SIMULATOR:
        from app.jobs.calls import enqueue_simulation

        enqueue_simulation(call.id)
    return 201, call_status(call)


def call_status(call: CallRecord) -> dict:
    return {"id": call.id, "uid": call.uid, "status": call.status,
            "status_label": str(STATUS_LABELS.get(call.status, call.status)), "result": call.result,
            "callee": mask_phone(call.callee_phone), "caller_id": call.number.number if call.number else None,
            "privacy_number": call.privacy_number, "duration_seconds": call.duration_seconds,
            "connected": call.connected, "final": call.status not in ("requested", "dialing", "ringing",
                                                                      "answered")}


def visible_call(pk) -> CallRecord | None:
    return db.session.scalar(restrict(select(CallRecord).where(CallRecord.id == pk), CallRecord,
                                      current_viewer()))


class ClickToCallView(BaseView):
    """The browser's click-to-call: JSON, session login, CSRF token in the X-CSRFToken header."""

    route_base = "/calls"
    class_permission_name = policy.CALL_RECORD
    method_permission_name = {"dial": "call", "status": "read"}
    default_view = "status"

    @expose("/dial", methods=["POST"])
    @has_access_api
    def dial(self):
        status, body = dial_from_request(request.get_json(silent=True))
        return current_app.response_class(json.dumps(body, ensure_ascii=False), status=status,
                                          mimetype="application/json")

    @expose("/status/<int:pk>", methods=["GET"])
    @has_access_api
    def status(self, pk):
        call = visible_call(pk)
        if call is None:
            body, code = {"message": "Not found"}, 404
        else:
            body, code = call_status(call), 200
        return current_app.response_class(json.dumps(body, ensure_ascii=False), status=code,
                                          mimetype="application/json")


def _callback_limit() -> str:
    return current_app.config.get("CRM_CALL_CALLBACK_LIMIT", "600 per minute")


class CallApi(BaseApi):
    """POST /api/v1/calls/dial (JWT), GET /api/v1/calls/<id>/status, and the providers' signed callbacks
    POST /api/v1/calls/callback/<interface_id> (no login: the HMAC signature authenticates)."""

    resource_name = "calls"
    class_permission_name = policy.CALL_RECORD
    method_permission_name = {"dial": "call", "status": "read"}
    openapi_spec_tag = "Calls"
    limits = [Limit(_callback_limit, key_func=get_remote_address, methods=("POST",))]

    @expose("/dial", methods=["POST"])
    @protect()
    @safe
    def dial(self):
        """Click-to-call: {"opportunity_id": n} or {"customer_id": n}; never a phone number.
        ---
        post:
          responses:
            201:
              description: The call is placed; its id and status
            404:
              description: Not found or outside your data scope
            409:
              description: Refused ({"reason", "message"})
            422:
              description: Refused ({"reason", "message"})
        """
        status, body = dial_from_request(request.get_json(silent=True))
        return self.response(status, **body)

    @expose("/<int:pk>/status", methods=["GET"])
    @protect()
    @safe
    def status(self, pk):
        """A call's status (within the data scope).
        ---
        get:
          responses:
            200:
              description: The call's status
            404:
              description: Not found
        """
        call = visible_call(pk)
        if call is None:
            return self.response(404, message="Not found")
        return self.response(200, **call_status(call))

    @expose("/callback/<int:interface_id>", methods=["POST"])
    @safe
    def callback(self, interface_id: int):
        """Status callbacks of an interface's provider, signed with its callback secret.
        ---
        post:
          responses:
            200:
              description: How many events moved a call, were ignored (replays, stale) or wait for a match
            400:
              description: The payload is not acceptable
            401:
              description: Bad or missing signature, or a stale timestamp
            404:
              description: No such interface
            413:
              description: The body is over 1 MB
        """
        interface = db.session.get(OutboundInterface, interface_id)
        if interface is None:
            return self.response(404, message="No such interface")
        body = read_capped(MAX_CALLBACK_BODY)
        if body is None:
            log.warning("call callback refused (interface %s, 413): body too large", interface_id)
            return self.response(413, message="Body too large", field="body")
        try:
            outcome = callbacks.receive(db.session, interface, body, request.headers)
        except CallbackError as exc:
            db.session.rollback()
            status = 401 if isinstance(exc, SignatureError) else 400
            log.warning("call callback refused (interface %s, %s): %s; body %r", interface_id, status, exc,
                        body[:500])
            return self.response(status, message=str(exc), **({"field": exc.field} if exc.field else {}))
        except ProviderError as exc:
            db.session.rollback()
            log.warning("call callback: interface %s misconfigured: %s", interface_id, exc)
            return self.response(503, message=str(exc))
        db.session.commit()
        return self.response(200, **outcome.as_dict())


def register(appbuilder) -> None:
    cat = "Calls"
    appbuilder.add_view(CallRecordView, "Call Records", icon="fa-phone", label=_l("Call Records"),
                        category=cat, category_label=_l("Calls"), category_icon="fa-phone")
    appbuilder.add_view(OutboundInterfaceView, "Outbound Interfaces", icon="fa-plug",
                        label=_l("Outbound Interfaces"), category=cat)
    appbuilder.add_view(CallLineView, "Call Lines", icon="fa-sitemap", label=_l("Call Lines"), category=cat)
    appbuilder.add_view(CallNumberView, "Caller-ID Numbers", icon="fa-hashtag", label=_l("Caller-ID Numbers"),
                        category=cat)
    appbuilder.add_view(SeatView, "Seats", icon="fa-headphones", label=_l("Seats"), category=cat)
    appbuilder.add_view(DoNotCallView, "Do-not-call List", icon="fa-ban", label=_l("Do-not-call List"),
                        category=cat)
    appbuilder.add_view_no_menu(ClickToCallView)
    for api in (CallApi, CallRecordApi, DoNotCallApi):
        appbuilder.add_api(api)
