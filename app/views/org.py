"""Organisation: the OrgUnit tree (pages and REST API)."""

from __future__ import annotations

from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from wtforms import SelectField

from app.extensions import db
from app.models.org import ORG_KINDS, OrgUnit
from app.security import policy
from app.services.org import check_deletable, check_unit
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView

KIND_LABELS = dict(labels.choices("org_kind"))  # app/views/labels.py


def kind_field():
    return SelectField(_l("Kind"), choices=[(k, KIND_LABELS[k]) for k in ORG_KINDS],
                       widget=Select2Widget())


def _parent_id(item) -> int | None:
    return item.parent.id if item.parent is not None else None


class OrgUnitView(CrmModelView):
    datamodel = SQLAInterface(OrgUnit)
    class_permission_name = policy.ORG_UNIT
    list_title = show_title = _l("Org Units")
    add_title, edit_title = _l("Add Org Unit"), _l("Edit Org Unit")
    list_columns = ["name", "code", "kind", "parent", "depth"]
    show_columns = ["name", "code", "kind", "parent", "path", "depth", "sort", "created_at", "updated_at"]
    add_columns = edit_columns = ["name", "code", "kind", "parent", "sort"]
    search_columns = ["name", "code", "kind", "parent"]
    order_columns = ["name", "code", "kind", "depth"]
    base_order = ("path", "asc")
    add_form_extra_fields = edit_form_extra_fields = {"kind": kind_field()}
    formatters_columns = {"kind": lambda v: KIND_LABELS.get(v, v)}
    label_columns = {
        "name": _l("Name"), "code": _l("Code"), "kind": _l("Kind"), "parent": _l("Parent unit"),
        "path": _l("Path"), "depth": _l("Depth"), "sort": _l("Sort order"),
        "created_at": _l("Created at"), "updated_at": _l("Updated at"),
    }

    def check_form(self, form, pk):
        parent = form.parent.data
        check_unit(db.session, int(pk) if pk else None, form.name.data,
                   parent.id if parent else None, form.kind.data)

    def check_item(self, item, creating):
        check_unit(db.session, None if creating else item.id, item.name, _parent_id(item), item.kind)

    def check_delete(self, item):
        check_deletable(db.session, item)


class OrgUnitApi(CrmModelRestApi):
    datamodel = SQLAInterface(OrgUnit)
    resource_name = "org_unit"
    class_permission_name = policy.ORG_UNIT
    list_columns = ["id", "name", "code", "kind", "parent.id", "parent.name", "path", "depth", "sort"]
    show_columns = list_columns + ["created_at", "updated_at"]
    add_columns = edit_columns = ["name", "code", "kind", "parent", "sort"]
    search_columns = ["name", "code", "kind", "parent", "path"]
    order_columns = ["name", "code", "kind", "depth", "path"]

    def check_item(self, item, creating):
        check_unit(db.session, None if creating else item.id, item.name, _parent_id(item), item.kind)

    def check_delete(self, item):
        check_deletable(db.session, item)
