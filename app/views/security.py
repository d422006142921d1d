"""Data authorisation per role (the data scope each role grants)."""

from __future__ import annotations

import datetime as dt

from flask import flash, redirect
from flask_appbuilder import SimpleFormView
from flask_appbuilder.actions import action
from flask_appbuilder.fields import QuerySelectField
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
from flask_appbuilder.forms import DynamicForm
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.sqla.models import ApiKey
from flask_babel import lazy_gettext as _l
from wtforms import IntegerField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app import clock
from app.extensions import appbuilder, db
from app.models.employee import CrmUser
from app.models.security import DATA_SCOPES, RoleDataScope
from app.security import policy
from app.services.errors import DomainError
from app.views import labels, times
from app.views.base import CrmModelRestApi, CrmModelView

SCOPE_LABELS = dict(labels.choices("data_scope"))  # app/views/labels.py


def _check_scope(item):
    if item.scope not in DATA_SCOPES:
        raise DomainError("Data scope must be one of %(values)s", field="scope",
                          values=", ".join(DATA_SCOPES))


class RoleDataScopeView(CrmModelView):
    datamodel = SQLAInterface(RoleDataScope)
    class_permission_name = policy.DATA_SCOPE
    list_title = show_title = _l("Data Scopes")
    add_title, edit_title = _l("Add Data Scope"), _l("Edit Data Scope")
    list_columns = ["role", "scope"]
    add_columns = ["role", "scope"]
    edit_columns = ["scope"]
    formatters_columns = {**labels.formatters(scope="data_scope"), "role": labels.role_name}
    label_columns = {"role": _l("Role"), "scope": _l("Data scope")}
    add_form_extra_fields = edit_form_extra_fields = {
        "scope": SelectField(_l("Data scope"), choices=labels.choices("data_scope", DATA_SCOPES),
                             widget=Select2Widget())
    }

    def check_item(self, item, creating):
        _check_scope(item)


class RoleDataScopeApi(CrmModelRestApi):
    datamodel = SQLAInterface(RoleDataScope)
    resource_name = "data_scope"
    class_permission_name = policy.DATA_SCOPE
    list_columns = show_columns = ["role.id", "role.name", "scope"]
    add_columns = ["role", "scope"]
    edit_columns = ["scope"]

    def check_item(self, item, creating):
        _check_scope(item)


class ApiKeyView(CrmModelView):
    """API keys for system-to-system calls (e.g. the HR system): list, inspect, revoke."""

    datamodel = SQLAInterface(ApiKey)
    class_permission_name = policy.API_KEY
    base_permissions = ["can_read", "can_write"]
    list_title = show_title = _l("API Keys")
    list_columns = ["name", "user", "key_prefix", "created_on", "last_used_on", "expires_on", "revoked_on"]
    show_columns = list_columns + ["uuid", "scopes"]
    search_columns = ["name", "user", "created_on", "revoked_on"]
    base_order = ("created_on", "desc")
    # FAB stamps these in the process's local zone (not UTC like ours): read them as such.
    formatters_columns = dict.fromkeys(("created_on", "last_used_on", "expires_on", "revoked_on"),
                                       times.process_local_dt)
    label_columns = {
        "name": _l("Name"), "user": _l("User"), "key_prefix": _l("Prefix"), "created_on": _l("Created at"),
        "last_used_on": _l("Last used"), "expires_on": _l("Expires"), "revoked_on": _l("Revoked at"),
        "uuid": "UUID", "scopes": _l("Scopes"), "active": _l("Active key"), "key_hash": _l("Key hash"),
        "lookup_hash": _l("Lookup hash"),
    }
    add_title, edit_title = _l("Add API key"), _l("Edit API key")
    method_permission_name = {**policy.METHOD_PERMISSIONS, "revoke": "write"}

    @action("revoke", _l("Revoke"), _l("Revoke the selected keys? Systems using them stop at once."),
            "fa-ban")
    def revoke(self, items):
        items = items if isinstance(items, list) else [items]
        now = clock.process_local_now()
        for key in items:
            if key.revoked_on is None:
                key.revoked_on = now
        db.session.commit()
        flash(str(_l("%(n)d key(s) revoked", n=len(items))), "success")
        return redirect(self.get_redirect())


def _active_users():
    return db.session.query(CrmUser).filter(CrmUser.active.is_(True)).order_by(CrmUser.username)


class IssueApiKeyForm(DynamicForm):
    user = QuerySelectField(_l("User"), query_func=_active_users, get_pk_func=lambda u: u.id,
                            widget=Select2Widget(),
                            validators=[DataRequired()])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=256)],
                       widget=BS3TextFieldWidget(), description=_l("What uses this key, e.g. HR system"))
    expires_in_days = IntegerField(_l("Expires in (days)"), validators=[Optional(), NumberRange(1, 3650)],
                                   widget=BS3TextFieldWidget(), description=_l("Empty: never expires"))


class IssueApiKeyView(SimpleFormView):
    """Issue a key: it is shown once, here, and only its hash is stored."""

    form = IssueApiKeyForm
    form_title = _l("Issue an API key")
    class_permission_name = policy.API_KEY
    method_permission_name = {"this_form_get": "write", "this_form_post": "write"}

    def form_post(self, form):
        days = form.expires_in_days.data
        expires = clock.process_local_now() + dt.timedelta(days=days) if days else None
        created = appbuilder.sm.create_api_key(form.user.data, form.name.data, expires_on=expires)
        if not created:
            flash(str(_l("The key could not be created")), "danger")
            return
        flash(str(_l("Copy this key now, it is not shown again: %(key)s", key=created["key"])), "warning")
