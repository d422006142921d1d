"""Data authorisation per role (the data scope each role grants)."""

from __future__ import annotations

from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from wtforms import SelectField

from app.models.security import DATA_SCOPES, RoleDataScope
from app.security import policy
from app.services.errors import DomainError
from app.views.base import CrmModelRestApi, CrmModelView

SCOPE_LABELS = {
    "own": _l("Own records"), "own_subordinates": _l("Own + subordinates"), "team": _l("Own team"),
    "org_subtree": _l("Org unit and below"), "all": _l("Everything"),
}


def _check_scope(item):
    if item.scope not in DATA_SCOPES:
        raise DomainError(f"Data scope must be one of {', '.join(DATA_SCOPES)}", field="scope")


class RoleDataScopeView(CrmModelView):
    datamodel = SQLAInterface(RoleDataScope)
    class_permission_name = policy.DATA_SCOPE
    list_title = show_title = _l("Data Scopes")
    list_columns = ["role", "scope"]
    add_columns = ["role", "scope"]
    edit_columns = ["scope"]
    formatters_columns = {"scope": lambda v: SCOPE_LABELS.get(v, v)}
    label_columns = {"role": _l("Role"), "scope": _l("Data scope")}
    add_form_extra_fields = edit_form_extra_fields = {
        "scope": SelectField(_l("Data scope"), choices=[(s, SCOPE_LABELS[s]) for s in DATA_SCOPES],
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
