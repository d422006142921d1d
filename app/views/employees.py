"""Employees and HR status (pages, REST API, and the HR system's bulk sync endpoint)."""

from __future__ import annotations

from flask import current_app, flash, redirect, request
from flask_appbuilder.actions import action
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import permission_name
from flask_babel import lazy_gettext as _l
from wtforms import SelectField

from app import clock
from app.extensions import db
from app.models.employee import HR_RESIGNED, HR_STATUSES, Employee
from app.security import policy
from app.security.masking import can_view_full_phone
from app.security.scope import current_viewer
from app.services import audit
from app.services.employees import CODE_MAX, LEVEL_DICT, LIMITS, MAX_BATCH, PHONE_MAX, check_employee, hr_sync
from app.services.errors import DomainError
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView
from app.views.uow import error_json, run

HR_LABELS = dict(labels.choices("hr_status"))  # app/views/labels.py


def _number_or_text(limit: int) -> dict:
    return {"oneOf": [{"type": "string", "minLength": 1, "maxLength": limit}, {"type": "integer"}]}


_HR_ROW = {
    "type": "object",
    "required": ["employee_no", "name", "org_unit_code"],
    "description": "A row that breaks these is reported in `errors` by its index; the others are kept.",
    "properties": {
        "employee_no": _number_or_text(LIMITS["employee_no"]),
        "name": {"type": "string", "minLength": 1, "maxLength": LIMITS["name"]},
        "org_unit_code": {"type": "string", "minLength": 1, "maxLength": CODE_MAX},
        "phone": {"oneOf": [{"type": "string", "maxLength": PHONE_MAX}, {"type": "integer"}]},
        "email": {"type": "string", "format": "email", "maxLength": LIMITS["email"]},
        "position": {"type": "string", "maxLength": LIMITS["position"]},
        "level_code": {"type": "string", "maxLength": CODE_MAX},
        "manager_no": _number_or_text(LIMITS["employee_no"]),
        "hired_on": {"type": "string", "format": "date"},
        "left_on": {"type": "string", "format": "date"},
        "hr_status": {"type": "string", "enum": list(HR_STATUSES)},
    },
}
_HR_ROWS = {"type": "array", "maxItems": MAX_BATCH, "items": _HR_ROW}
#: the body of POST /api/v1/hr/sync as the OpenAPI document declares it (app.views.openapi)
HR_SYNC_BODY = {"oneOf": [
    {"type": "object", "required": ["employees"], "properties": {"employees": _HR_ROWS}},
    {**_HR_ROWS, "description": "The rows alone"}]}


def _check_employee(item):
    check_employee(db.session, item, current_app.config["CRM_DEFAULT_REGION"])


def _check_delete(item):
    if item.user_id is not None or item.reports:
        raise DomainError(
            "%(name)s has a login or direct reports: set the HR status to resigned instead", status=409,
            name=str(item),
        )


class EmployeeView(CrmModelView):
    datamodel = SQLAInterface(Employee)
    class_permission_name = policy.EMPLOYEE
    list_title = show_title = _l("Employees")
    add_title, edit_title = _l("Add Employee"), _l("Edit Employee")
    list_columns = ["employee_no", "name", "phone", "org_unit", "position", "level", "manager", "hr_status"]
    show_columns = ["employee_no", "name", "phone", "email", "org_unit", "position", "level", "manager",
                    "hired_on", "left_on", "hr_status", "user", "created_at", "updated_at"]
    add_columns = edit_columns = ["employee_no", "name", "phone", "email", "org_unit", "position", "level",
                                  "manager", "hired_on", "left_on", "hr_status", "user"]
    export_columns = ["employee_no", "name", "phone", "email", "org_unit", "position", "level", "manager",
                      "hired_on", "left_on", "hr_status"]
    search_columns = ["employee_no", "name", "org_unit", "position", "level", "manager", "hr_status"]
    order_columns = ["employee_no", "name", "hr_status"]
    base_order = ("employee_no", "asc")
    dict_fields = {"level": LEVEL_DICT}
    phone_columns = ("phone",)
    add_form_extra_fields = edit_form_extra_fields = {
        "hr_status": SelectField(_l("HR status"), choices=[(s, HR_LABELS[s]) for s in HR_STATUSES],
                                 widget=Select2Widget())
    }
    formatters_columns = {"hr_status": lambda v: HR_LABELS.get(v, v)}
    label_columns = {
        "employee_no": _l("Employee no."), "name": _l("Name"), "phone": _l("Phone"), "email": _l("E-mail"),
        "org_unit": _l("Org unit"), "position": _l("Position"), "level": _l("Level"),
        "manager": _l("Manager"), "hired_on": _l("Hired on"), "left_on": _l("Left on"),
        "hr_status": _l("HR status"), "user": _l("Login user"), "created_at": _l("Created at"),
        "updated_at": _l("Updated at"),
    }

    def check_item(self, item, creating):
        _check_employee(item)

    def check_delete(self, item):
        _check_delete(item)

    @action("mark_resigned", _l("Mark resigned"), _l("Mark the selected employees as resigned? "
                                                     "They lose their login at once."), "fa-user-times")
    def mark_resigned(self, items):
        items = items if isinstance(items, list) else [items]
        for emp in items:
            if emp.hr_status != HR_RESIGNED:
                emp.hr_status = HR_RESIGNED
                emp.left_on = emp.left_on or clock.today()
        db.session.commit()
        flash(str(_l("%(n)d employee(s) marked resigned", n=len(items))), "success")
        return redirect(self.get_redirect())


class EmployeeApi(CrmModelRestApi):
    datamodel = SQLAInterface(Employee)
    resource_name = "employee"
    class_permission_name = policy.EMPLOYEE
    list_columns = ["id", "employee_no", "name", "phone", "email", "org_unit.id", "org_unit.name", "position",
                    "level.code", "manager.id", "manager.employee_no", "hired_on", "left_on", "hr_status"]
    show_columns = list_columns + ["user.username", "created_at", "updated_at"]
    add_columns = edit_columns = ["employee_no", "name", "phone", "email", "org_unit", "position", "level",
                                  "manager", "hired_on", "left_on", "hr_status"]
    search_columns = ["employee_no", "name", "org_unit", "hr_status", "manager", "level"]
    order_columns = ["employee_no", "name", "hr_status"]
    dict_fields = {"level": LEVEL_DICT}
    phone_columns = ("phone",)

    def check_item(self, item, creating):
        _check_employee(item)

    def check_delete(self, item):
        _check_delete(item)

    @expose("/<int:pk>/phone", methods=["GET"])
    @protect()
    @safe
    @permission_name("get")
    def phone(self, pk):
        """The full phone number (needs "view full phone"; every call is audited).
        ---
        get:
          parameters:
          - in: path
            schema:
              type: integer
            name: pk
          responses:
            200:
              description: The full number
            403:
              $ref: '#/components/responses/403'
            404:
              $ref: '#/components/responses/404'
        """
        if not can_view_full_phone(current_viewer()):
            return self.response_403()
        item = self.datamodel.get(pk, self._base_filters)
        if item is None:
            return self.response_404()
        audit.record(db.session, "phone_view", target_type=policy.EMPLOYEE, target_id=pk,
                     summary=f"{item} (API)")
        db.session.commit()
        return self.response(200, phone=item.phone)


class HrSyncApi(BaseApi):
    """POST /api/v1/hr/sync — the HR system pushes employees and their HR status."""

    resource_name = "hr"
    class_permission_name = policy.HR_SYNC
    method_permission_name = {"sync": "write"}
    openapi_spec_tag = "HR sync"
    json_array_bodies = ("sync",)  # the rows alone, as a list (app/security/input_guards.py)

    @expose("/sync", methods=["POST"])
    @protect()
    @safe
    def sync(self):
        """Upsert employees by employee_no. Bad rows are reported by index; good rows are kept.
        ---
        post:
          responses:
            200:
              description: Counts of created / updated / unchanged rows and the rejected rows
            400:
              $ref: '#/components/responses/400'
            422:
              description: Every row was rejected
        """
        body = request.get_json(silent=True)
        if body is None:
            return self.response_400(message="The body must be JSON")
        rows = body.get("employees") if isinstance(body, dict) else body
        region = current_app.config["CRM_DEFAULT_REGION"]

        def sync_and_audit():
            result = hr_sync(db.session, rows, region)
            audit.record(db.session, "hr_sync", target_type="employee",
                         summary=f"created {result.created}, updated {result.updated}, "
                                 f"unchanged {result.unchanged}, failed {len(result.errors)}")
            return result

        result, refused = run(sync_and_audit)
        if refused is not None:
            return error_json(refused)
        status = 422 if rows and len(result.errors) == len(rows) else 200
        return self.response(status, **result.as_dict())
