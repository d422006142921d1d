"""Outbound calling: admin CRUD (外呼接口管理, lines, numbers, seats, do-not-call), call records,
click-to-call (browser JSON with CSRF, and the JWT API) and the providers' signed status callbacks.

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
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextAreaFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access, has_access_api
from flask_appbuilder.utils.limit import Limit
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, SelectField, TextAreaField

from app.clock import utcnow
from app.extensions import db
from app.models.calls import (
    NUMBER_ACTIVE,
    NUMBER_STATUSES,
    PROVIDERS,
    SIMULATOR,
    CallLine,
    CallNumber,
    CallRecord,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.models.sales import Customer, Opportunity
from app.security import policy
from app.security.masking import mask_phone
from app.security.scope import current_viewer, restrict
from app.services.calls import callbacks, dnc
from app.services.calls.dialing import CallRefused, click_to_call, parse_windows
from app.services.calls.providers import CallbackError, ProviderError, SignatureError
from app.services.errors import DomainError
from app.services.phones import normalise_phone
from app.services.signing import check_base_url
from app.services.sms.secrets import ENV_NAME, encrypt
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use
from app.views.sales import PageShowMixin
from app.views.sms_admin import _import_page

log = logging.getLogger(__name__)
MAX_CALLBACK_BODY = 1024 * 1024
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
STATUS_LABELS = {
    "requested": _l("Requested"), "dialing": _l("Dialling"), "ringing": _l("Ringing"),
    "answered": _l("Answered"), "ended": _l("Ended"), "no_answer": _l("No answer"), "busy": _l("Busy"),
    "failed": _l("Failed"),
}
LABELS = {
    "name": _l("Name"), "provider": _l("Provider"), "base_url": _l("Base URL"),
    "access_key_env": _l("Key id env var"), "secret_env": _l("Secret env var"),
    "encrypted_secret": _l("Stored secret"), "new_secret": _l("New secret"),
    "clear_secret": _l("Remove the stored secret"), "callback_secret_env": _l("Callback secret env var"),
    "encrypted_callback_secret": _l("Stored callback secret"),
    "new_callback_secret": _l("New callback secret"),
    "clear_callback_secret": _l("Remove the stored callback secret"),
    "connect_timeout": _l("Connect timeout (s)"), "read_timeout": _l("Read timeout (s)"),
    "enabled": _l("Enabled"), "options": _l("Options (JSON)"), "interface": _l("Outbound interface"),
    "trunk": _l("Trunk"), "concurrency_limit": _l("Concurrency limit"),
    "calling_windows": _l("Calling windows"),
    "privacy_binding": _l("Privacy number (AXB)"), "binding_minutes": _l("Binding minutes"),
    "number": _l("Number"), "line": _l("Line"), "area": _l("Area"), "daily_cap": _l("Daily cap"),
    "rate_limit": _l("Rate limit (calls per period)"), "rate_period_minutes": _l("Rate period (minutes)"),
    "status": _l("Status"), "status_note": _l("Status note"), "seat_no": _l("Seat no."),
    "employee": _l("Employee"), "active": _l("Active"), "phone": _l("Phone"), "reason": _l("Reason"),
    "source": _l("Source"), "expires_at": _l("Expires at (UTC)"), "created_at": _l("Created at (UTC)"),
    "updated_at": _l("Updated at (UTC)"), "uid": _l("Call id"), "seat": _l("Seat"),
    "callee_phone": _l("Callee"), "opportunity": _l("Opportunity"), "customer": _l("Customer"),
    "org_unit": _l("Org unit"), "result": _l("Result"), "started_at": _l("Started at (UTC)"),
    "rang_at": _l("Rang at (UTC)"), "answered_at": _l("Answered at (UTC)"), "ended_at": _l("Ended at (UTC)"),
    "duration_seconds": _l("Talk time (s)"), "recording_url": _l("Recording"), "transcript": _l("Transcript"),
    "privacy_number": _l("Privacy number"), "binding_expires_at": _l("Binding expires at (UTC)"),
    "provider_call_id": _l("Provider call id"),
}


def _secret_state(value) -> str:
    return str(_l("set")) if value else str(_l("not set"))


def refusal_body(exc: CallRefused) -> dict:
    message = REFUSAL_MESSAGES.get(exc.reason)
    return {"reason": exc.reason, "message": str(message) if message else exc.message}


# --- outbound interfaces (外呼接口管理) -------------------------------------------------------------------
def check_interface(item) -> None:
    secrets = (("new_secret", "clear_secret", "encrypted_secret"),
               ("new_callback_secret", "clear_callback_secret", "encrypted_callback_secret"))
    for attr, clear, column in secrets:
        new = (getattr(item, attr, None) or "").strip()
        if new:
            setattr(item, column, encrypt(new))
        elif getattr(item, clear, False):
            setattr(item, column, None)
    item.name = (item.name or "").strip()
    if not item.name:
        raise DomainError("Enter a name", field="name")
    if item.provider not in PROVIDERS:
        raise DomainError("Choose one of %(values)s", field="provider", values=", ".join(PROVIDERS))
    for env in ("access_key_env", "secret_env", "callback_secret_env"):
        value = (getattr(item, env) or "").strip() or None
        if value and not ENV_NAME.match(value):
            raise DomainError("An environment variable name like CALLS_SECRET", field=env)
        setattr(item, env, value)
    if item.provider != SIMULATOR:
        try:
            item.base_url = check_base_url(item.base_url)
        except ValueError as exc:
            raise DomainError(str(exc), field="base_url") from None
        if not (item.callback_secret_env or item.encrypted_callback_secret):
            raise DomainError("The HTTP provider needs a callback secret (env var or stored)",
                              field="callback_secret_env")
    for field in ("connect_timeout", "read_timeout"):
        value = getattr(item, field)
        if value is None or not 1 <= value <= 120:
            raise DomainError("Between 1 and 120 seconds", field=field)
    if item.options:
        try:
            parsed = json.loads(item.options)
        except ValueError:
            raise DomainError("Options must be JSON", field="options") from None
        if not isinstance(parsed, dict):
            raise DomainError('Options must be a JSON object like {"outcome": "answer"}', field="options")
    if db.session.scalar(select(OutboundInterface.id).where(OutboundInterface.name == item.name,
                                                            OutboundInterface.id != (item.id or 0))):
        raise DomainError("This name is taken", field="name", status=409)


class OutboundInterfaceView(CrmModelView):
    datamodel = SQLAInterface(OutboundInterface)
    class_permission_name = policy.OUTBOUND_INTERFACE
    list_title = show_title = _l("Outbound Interfaces")
    add_title, edit_title = _l("Add Outbound Interface"), _l("Edit Outbound Interface")
    list_columns = ["name", "provider", "base_url", "enabled", "encrypted_secret",
                    "encrypted_callback_secret"]
    add_columns = edit_columns = ["name", "provider", "enabled", "base_url", "access_key_env", "secret_env",
                                  "new_secret", "clear_secret", "callback_secret_env", "new_callback_secret",
                                  "clear_callback_secret", "connect_timeout", "read_timeout", "options"]
    show_columns = ["name", "provider", "enabled", "base_url", "access_key_env", "secret_env",
                    "encrypted_secret", "callback_secret_env", "encrypted_callback_secret", "connect_timeout",
                    "read_timeout", "options", "updated_at"]
    search_columns = ["name", "provider", "enabled"]
    label_columns = LABELS
    description_columns = {
        "new_secret": _l("Stored encrypted and never shown again; leave empty to keep the stored one."),
        "secret_env": _l("When set, the environment variable wins over the stored secret."),
        "options": _l('Simulator: {"outcome": "answer|no_answer|busy|fail|hangup", "ring_seconds": 5, '
                      '"talk_seconds": 60, "transcript": true, "fail_numbers": [], "realtime": true}'),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "provider": SelectField(_l("Provider"), choices=[(p, p) for p in PROVIDERS], widget=Select2Widget()),
        "new_secret": PasswordField(_l("New secret"), widget=BS3PasswordFieldWidget()),
        "clear_secret": BooleanField(_l("Remove the stored secret")),
        "new_callback_secret": PasswordField(_l("New callback secret"), widget=BS3PasswordFieldWidget()),
        "clear_callback_secret": BooleanField(_l("Remove the stored callback secret")),
        "enabled": BooleanField(_l("Enabled")),
        "options": TextAreaField(_l("Options (JSON)"), widget=BS3TextAreaFieldWidget()),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for col in ("encrypted_secret", "encrypted_callback_secret"):
            self.formatters_columns[col] = _secret_state

    def check_item(self, item, creating):
        check_interface(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, CallLine.interface_id)


# --- lines, numbers, seats ----------------------------------------------------------------------------
def check_line(item) -> None:
    item.name = (item.name or "").strip()
    if not item.name:
        raise DomainError("Enter a name", field="name")
    if item.interface is None and item.interface_id is None:
        raise DomainError("Choose the outbound interface", field="interface")
    windows = parse_windows(item.calling_windows)
    item.calling_windows = ",".join(f"{s:%H:%M}-{'24:00' if e.second else f'{e:%H:%M}'}"
                                    for s, e in windows) or None
    if item.concurrency_limit is None or not 1 <= item.concurrency_limit <= 10000:
        raise DomainError("Between 1 and 10000", field="concurrency_limit")
    if item.binding_minutes is None or not 1 <= item.binding_minutes <= 1440:
        raise DomainError("Between 1 and 1440 minutes", field="binding_minutes")
    clash = select(CallLine.id).where(CallLine.name == item.name, CallLine.id != (item.id or 0))
    if db.session.scalar(clash):
        raise DomainError("This name is taken", field="name", status=409)


class CallLineView(CrmModelView):
    datamodel = SQLAInterface(CallLine)
    class_permission_name = policy.CALL_LINE
    list_title = show_title = _l("Call Lines")
    add_title, edit_title = _l("Add Call Line"), _l("Edit Call Line")
    list_columns = ["name", "interface", "trunk", "concurrency_limit", "calling_windows", "enabled",
                    "privacy_binding"]
    add_columns = edit_columns = ["name", "interface", "trunk", "concurrency_limit", "enabled",
                                  "calling_windows", "privacy_binding", "binding_minutes"]
    show_columns = [*add_columns, "updated_at"]
    search_columns = ["name", "interface", "enabled"]
    label_columns = LABELS
    description_columns = {
        "calling_windows": _l("In the business time zone, e.g. 09:00-12:00,13:30-20:30; empty: any time."),
        "privacy_binding": _l("The callee sees a bound middle number (AXB) instead of the caller-ID."),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "enabled": BooleanField(_l("Enabled")),
        "privacy_binding": BooleanField(_l("Privacy number (AXB)")),
    }

    def check_item(self, item, creating):
        check_line(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, CallNumber.line_id, Seat.line_id, CallRecord.line_id)


def check_number(item) -> None:
    item.number = normalise_phone(item.number, field="number")
    if not item.number:
        raise DomainError("Enter the caller-ID number", field="number")
    if item.line is None and item.line_id is None:
        raise DomainError("Choose the line", field="line")
    if item.daily_cap is None or item.daily_cap < 0:
        raise DomainError("Zero or more", field="daily_cap")
    if item.rate_limit is not None and item.rate_limit < 1:
        raise DomainError("One or more, or empty for no limit", field="rate_limit")
    if item.rate_period_minutes is None or not 1 <= item.rate_period_minutes <= 1440:
        raise DomainError("Between 1 and 1440 minutes", field="rate_period_minutes")
    if item.status not in NUMBER_STATUSES:
        raise DomainError("Choose one of %(values)s", field="status", values=", ".join(NUMBER_STATUSES))
    item.status_note = (item.status_note or "").strip() or None
    if item.status != NUMBER_ACTIVE and not item.status_note:
        raise DomainError("Say why the number is suspended or flagged", field="status_note")
    item.area = (item.area or "").strip() or None
    if db.session.scalar(select(CallNumber.id).where(CallNumber.number == item.number,
                                                     CallNumber.id != (item.id or 0))):
        raise DomainError("This number is already configured", field="number", status=409)


class CallNumberView(CrmModelView):
    datamodel = SQLAInterface(CallNumber)
    class_permission_name = policy.CALL_NUMBER
    list_title = show_title = _l("Caller-ID Numbers")
    add_title, edit_title = _l("Add Caller-ID Number"), _l("Edit Caller-ID Number")
    list_columns = ["number", "line", "area", "daily_cap", "rate_limit", "rate_period_minutes", "status",
                    "status_note"]
    add_columns = edit_columns = list_columns
    show_columns = [*list_columns, "updated_at"]
    search_columns = ["number", "line", "area", "status"]
    label_columns = LABELS
    description_columns = {
        "area": _l("The region it presents as (e.g. 北京, 广州): same-area callees first."),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "status": SelectField(_l("Status"), choices=[(s, s) for s in NUMBER_STATUSES],
                              widget=Select2Widget()),
    }

    def check_item(self, item, creating):
        check_number(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, CallRecord.number_id)


def check_seat(item) -> None:
    item.seat_no = (item.seat_no or "").strip()
    if not item.seat_no:
        raise DomainError("Enter the seat number", field="seat_no")
    if item.line is None and item.line_id is None:
        raise DomainError("Choose the line", field="line")
    if db.session.scalar(select(Seat.id).where(Seat.seat_no == item.seat_no, Seat.id != (item.id or 0))):
        raise DomainError("This seat number is taken", field="seat_no", status=409)
    employee_id = item.employee.id if item.employee is not None else item.employee_id
    if item.active and employee_id is not None:
        other = db.session.scalar(select(Seat).where(Seat.employee_id == employee_id, Seat.active.is_(True),
                                                     Seat.id != (item.id or 0)))
        if other is not None:
            raise DomainError("This employee already has the active seat %(seat)s", field="employee",
                              status=409, seat=other.seat_no)


class SeatView(CrmModelView):
    datamodel = SQLAInterface(Seat)
    class_permission_name = policy.SEAT
    list_title = show_title = _l("Seats")
    add_title, edit_title = _l("Add Seat"), _l("Edit Seat")
    list_columns = ["seat_no", "line", "employee", "active"]
    add_columns = edit_columns = list_columns
    show_columns = [*list_columns, "updated_at"]
    search_columns = ["seat_no", "line", "employee", "active"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = {"active": BooleanField(_l("Active"))}

    def check_item(self, item, creating):
        check_seat(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, CallRecord.seat_id)


# --- do-not-call --------------------------------------------------------------------------------------
def check_dnc_item(item) -> None:
    dnc.check_entry(item)
    if db.session.scalar(select(DoNotCall.id).where(DoNotCall.phone == item.phone,
                                                    DoNotCall.id != (item.id or 0))):
        raise DomainError("This number is already on the do-not-call list", field="phone", status=409)


class DoNotCallView(CrmModelView):
    datamodel = SQLAInterface(DoNotCall)
    class_permission_name = policy.DO_NOT_CALL
    list_title = show_title = _l("Do-not-call List")
    add_title, edit_title = _l("Add to Do-not-call List"), _l("Edit Do-not-call Entry")
    list_columns = ["phone", "reason", "source", "expires_at", "created_at"]
    show_columns = [*list_columns, "updated_at"]
    add_columns = ["phone", "reason", "expires_at"]
    edit_columns = ["reason", "expires_at"]
    search_columns = ["reason", "source", "expires_at", "created_at"]
    base_order = ("created_at", "desc")
    phone_columns = ("phone",)
    label_columns = LABELS
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write"}
    list_template = "sms/list.html"
    list_links = [("bulk_import", "Import numbers", "fa-upload", "can_write")]

    def check_item(self, item, creating):
        if creating:
            item.source = "manual"
        check_dnc_item(item)

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def bulk_import(self):
        return _import_page(
            self, lambda text: dnc.import_phones(db.session, text, request.form.get("reason") or None),
            _l("Import do-not-call numbers"), "phones", "DoNotCallView.list")


class DoNotCallApi(CrmModelRestApi):
    datamodel = SQLAInterface(DoNotCall)
    resource_name = "do_not_call"
    class_permission_name = policy.DO_NOT_CALL
    list_columns = show_columns = ["id", "phone", "reason", "source", "expires_at", "created_at"]
    add_columns = ["phone", "reason", "expires_at"]
    edit_columns = ["reason", "expires_at"]
    search_columns = ["source", "reason"]
    phone_columns = ("phone",)
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write"}
    openapi_spec_tag = "Do-not-call"

    def check_item(self, item, creating):
        if creating:
            item.source = "api"
        check_dnc_item(item)

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    def bulk_import(self):
        """Add numbers: {"phones": ["…"], "reason": "…"}."""
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("phones"), list):
            return self.response(400, message='Send {"phones": [...], "reason": "…"}')
        reason = data.get("reason") if isinstance(data.get("reason"), str) else None
        text = "\n".join(str(p).replace(",", " ") for p in data["phones"])
        result = dnc.import_phones(db.session, text, reason, source="api")
        db.session.commit()
        return self.response(200, added=result.added, existing=result.existing,
                             errors=[{"line": n, "message": m} for n, m in result.errors])


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
        "status": lambda s: STATUS_LABELS.get(s, s),
        "opportunity": lambda o: f"#{o.id}" if o is not None else "",
        "recording_url": lambda url: _recording_link(url),
    }

    def page_context(self, item) -> dict:
        return {"item": item, "transcript": _transcript_lines(item.transcript if item else None)}


def _recording_link(url):
    from markupsafe import Markup, escape

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
def _int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DomainError("Ids must be whole numbers", status=400) from None


def dial_from_request(body) -> tuple[int, dict]:
    """The shared body of both click-to-call endpoints: (HTTP status, JSON body)."""
    if not isinstance(body, dict):
        return 400, {"message": 'Send {"opportunity_id": …} or {"customer_id": …}'}
    if "phone" in body or "callee" in body:
        return 400, {"message": "Send an opportunity or customer id, never a phone number"}
    try:
        opp_id, customer_id = _int(body.get("opportunity_id")), _int(body.get("customer_id"))
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
    try:
        call = click_to_call(db.session, viewer.employee_id, utcnow(), opportunity_id=opp_id,
                             customer_id=customer_id)
    except CallRefused as exc:
        return exc.status, refusal_body(exc)
    except DomainError as exc:
        db.session.rollback()
        return exc.status, exc.as_dict()
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
        """
        interface = db.session.get(OutboundInterface, interface_id)
        if interface is None:
            return self.response(404, message="No such interface")
        if request.content_length is not None and request.content_length > MAX_CALLBACK_BODY:
            return self.response(413, message="Body too large")
        body = request.get_data(cache=False)
        try:
            outcome = callbacks.receive(db.session, interface, body, request.headers)
        except CallbackError as exc:
            db.session.rollback()
            status = 401 if isinstance(exc, SignatureError) else 400
            log.warning("call callback refused (interface %s, %s): %s; body %r", interface_id, status, exc,
                        body[:500])
            return self.response(status, message=str(exc))
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
