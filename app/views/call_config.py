"""Outbound-call configuration pages and API: outbound interfaces (外呼接口管理), lines, caller-ID numbers,
seats and the do-not-call list. The rules live in app.services.calls.config; every form and API save runs
them through `check_item`.
"""

from __future__ import annotations

from flask_appbuilder import expose
from flask_appbuilder.api import protect, safe
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextAreaFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, PasswordField, SelectField, TextAreaField

from app.extensions import db
from app.models.calls import (
    NUMBER_STATUSES,
    PROVIDERS,
    CallLine,
    CallNumber,
    CallRecord,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.security import policy
from app.services.calls import config, dnc
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use
from app.views.imports import PhoneListMixin, import_summary, import_text, posted_phones
from app.views.uow import json_result

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
    "number": _l("Number"), "line": _l("Call line"), "area": _l("Area"), "daily_cap": _l("Daily cap"),
    "rate_limit": _l("Rate limit (calls per period)"), "rate_period_minutes": _l("Rate period (minutes)"),
    "status": _l("Status"), "status_note": _l("Status note"), "seat_no": _l("Seat no."),
    "employee": _l("Employee"), "active": _l("Active"), "phone": _l("Phone"), "reason": _l("Reason"),
    "source": _l("Source"), "expires_at": _l("Expires at"), "created_at": _l("Created at"),
    "updated_at": _l("Updated at"), "uid": _l("Call id"), "seat": _l("Seat"),
    "callee_phone": _l("Callee"), "opportunity": _l("Opportunity"), "customer": _l("Customer"),
    "org_unit": _l("Org unit"), "result": _l("Result"), "started_at": _l("Started at"),
    "rang_at": _l("Rang at"), "answered_at": _l("Answered at"), "ended_at": _l("Ended at"),
    "duration_seconds": _l("Talk time (s)"), "recording_url": _l("Recording"), "transcript": _l("Transcript"),
    "privacy_number": _l("Privacy number"), "binding_expires_at": _l("Binding expires at"),
    "provider_call_id": _l("Provider call id"),
}


def _secret_state(value) -> str:
    return str(_l("set")) if value else str(_l("not set"))


class ConfigCheckMixin:
    """Form and API saves run the configuration rules of app.services.calls.config; a row that others
    refer to through a column of `in_use_by` is not deleted."""

    in_use_by: tuple = ()

    def check_item(self, item, creating):
        config.validate(db.session, item)

    def check_delete(self, item):
        refuse_delete_in_use(item, *self.in_use_by)


# --- outbound interfaces (外呼接口管理) -------------------------------------------------------------------
class OutboundInterfaceView(ConfigCheckMixin, CrmModelView):
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
    in_use_by = (CallLine.interface_id,)
    formatters_columns = labels.formatters(provider="call.provider")
    description_columns = {
        "new_secret": _l("Stored encrypted and never shown again; leave empty to keep the stored one."),
        "secret_env": _l("When set, the environment variable wins over the stored secret."),
        "options": _l('Simulator: {"outcome": "answer|no_answer|busy|fail|hangup", "ring_seconds": 5, '
                      '"talk_seconds": 60, "transcript": true, "fail_numbers": [], "realtime": true}'),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "provider": SelectField(_l("Provider"), choices=labels.choices("call.provider", PROVIDERS),
                                widget=Select2Widget()),
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


# --- lines, numbers, seats ----------------------------------------------------------------------------
class CallLineView(ConfigCheckMixin, CrmModelView):
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
    in_use_by = (CallNumber.line_id, Seat.line_id, CallRecord.line_id)
    description_columns = {
        "calling_windows": _l("In the business time zone, e.g. 09:00-12:00,13:30-20:30; empty: any time."),
        "privacy_binding": _l("The callee sees a bound middle number (AXB) instead of the caller-ID."),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "enabled": BooleanField(_l("Enabled")),
        "privacy_binding": BooleanField(_l("Privacy number (AXB)")),
    }


class CallNumberView(ConfigCheckMixin, CrmModelView):
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
    in_use_by = (CallRecord.number_id,)
    description_columns = {
        "area": _l("The region it presents as (e.g. 北京, 广州): same-area callees first."),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "status": SelectField(_l("Status"), choices=labels.choices("call_number.status", NUMBER_STATUSES),
                              widget=Select2Widget()),
    }
    formatters_columns = labels.formatters(status="call_number.status")


class SeatView(ConfigCheckMixin, CrmModelView):
    datamodel = SQLAInterface(Seat)
    class_permission_name = policy.SEAT
    list_title = show_title = _l("Seats")
    add_title, edit_title = _l("Add Seat"), _l("Edit Seat")
    list_columns = ["seat_no", "line", "employee", "active"]
    add_columns = edit_columns = list_columns
    show_columns = [*list_columns, "updated_at"]
    search_columns = ["seat_no", "line", "employee", "active"]
    label_columns = LABELS
    in_use_by = (CallRecord.seat_id,)
    add_form_extra_fields = edit_form_extra_fields = {"active": BooleanField(_l("Active"))}


# --- do-not-call --------------------------------------------------------------------------------------
class DoNotCallView(PhoneListMixin, ConfigCheckMixin, CrmModelView):
    datamodel = SQLAInterface(DoNotCall)
    class_permission_name = policy.DO_NOT_CALL
    list_title = show_title = _l("Do-not-call List")
    add_title, edit_title = _l("Add to Do-not-call List"), _l("Edit Do-not-call Entry")
    list_columns = ["phone", "reason", "source", "expires_at", "created_at"]
    show_columns = [*list_columns, "updated_at"]
    add_columns = ["phone", "reason", "expires_at"]
    edit_columns = ["reason", "expires_at"]
    search_columns = ["reason", "source", "expires_at", "created_at"]
    label_columns = LABELS
    formatters_columns = labels.formatters(source="list.source")
    import_title = _l("Import do-not-call numbers")

    def import_phones(self, text, reason):
        return dnc.import_phones(db.session, text, reason)


class DoNotCallApi(ConfigCheckMixin, CrmModelRestApi):
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
        super().check_item(item, creating)

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    def bulk_import(self):
        """Add numbers: {"phones": ["…"], "reason": "…"}."""
        def work():
            text, reason = posted_phones()
            return import_text(lambda lines: dnc.import_phones(db.session, lines, reason, source="api"), text)
        return json_result(work, body=import_summary)

