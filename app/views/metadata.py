"""Metadata: dictionaries that drive dropdowns, and typed configuration items."""

from __future__ import annotations

from flask import flash, redirect
from flask_appbuilder.actions import action
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from wtforms import SelectField

from app.extensions import db
from app.models.metadata import CONFIG_VALUE_TYPES, ConfigItem, DictItem, DictType
from app.security import policy
from app.services.errors import DomainError
from app.services.metadata import parse_config_value
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView

DICT_LABELS = {
    "code": _l("Code"), "name_zh": _l("Name (Chinese)"), "name_en": _l("Name (English)"),
    "description": _l("Description"), "dict_type": _l("Dictionary"), "label_zh": _l("Label (Chinese)"),
    "label_en": _l("Label (English)"), "sort": _l("Sort order"), "enabled": _l("Enabled"),
    "items": _l("Items"), "key": _l("Key"), "value_type": _l("Value type"), "value": _l("Value"),
    "created_at": _l("Created at"), "updated_at": _l("Updated at"),
}


def _check_dict_item_delete(item):
    raise DomainError("Dictionary items stay for the records that use them: disable it instead", status=409)


def _check_dict_type_delete(item):
    if item.items:
        raise DomainError("%(name)s still has items: disable them instead", status=409, name=str(item))


class DictItemView(CrmModelView):
    datamodel = SQLAInterface(DictItem)
    class_permission_name = policy.METADATA
    list_title = show_title = _l("Dictionary Items")
    add_title, edit_title = _l("Add Dictionary Item"), _l("Edit Dictionary Item")
    list_columns = ["dict_type", "code", "label_zh", "label_en", "sort", "enabled"]
    add_columns = edit_columns = ["dict_type", "code", "label_zh", "label_en", "sort", "enabled"]
    search_columns = ["dict_type", "code", "label_zh", "label_en", "enabled"]
    order_columns = ["code", "sort", "enabled"]
    base_order = ("sort", "asc")
    label_columns = DICT_LABELS

    def check_delete(self, item):
        _check_dict_item_delete(item)

    def _set_enabled(self, items, enabled: bool):
        items = items if isinstance(items, list) else [items]
        for item in items:
            item.enabled = enabled
        db.session.commit()
        flash(str(_l("%(n)d item(s) updated", n=len(items))), "success")
        return redirect(self.get_redirect())

    @action("enable_items", _l("Enable"), None, "fa-check")
    def enable_items(self, items):
        return self._set_enabled(items, True)

    @action("disable_items", _l("Disable"), None, "fa-ban")
    def disable_items(self, items):
        return self._set_enabled(items, False)

    method_permission_name = {**policy.METHOD_PERMISSIONS, "enable_items": "write", "disable_items": "write"}


class DictTypeView(CrmModelView):
    datamodel = SQLAInterface(DictType)
    class_permission_name = policy.METADATA
    list_title = show_title = _l("Dictionaries")
    add_title, edit_title = _l("Add Dictionary"), _l("Edit Dictionary")
    list_columns = ["code", "name_zh", "name_en", "description"]
    add_columns = edit_columns = ["code", "name_zh", "name_en", "description"]
    show_columns = ["code", "name_zh", "name_en", "description", "updated_at"]
    search_columns = ["code", "name_zh", "name_en"]
    related_views = [DictItemView]
    label_columns = DICT_LABELS

    def check_delete(self, item):
        _check_dict_type_delete(item)


def _check_config(item):
    parse_config_value(item.value_type, item.value)


class ConfigItemView(CrmModelView):
    datamodel = SQLAInterface(ConfigItem)
    class_permission_name = policy.CONFIG
    list_title = show_title = _l("Configuration")
    add_title, edit_title = _l("Add Config Item"), _l("Edit Config Item")
    list_columns = ["key", "value_type", "value", "description", "updated_at"]
    add_columns = edit_columns = ["key", "value_type", "value", "description"]
    search_columns = ["key", "value_type", "description"]
    base_order = ("key", "asc")
    label_columns = DICT_LABELS
    add_form_extra_fields = edit_form_extra_fields = {
        "value_type": SelectField(_l("Value type"),
                                  choices=labels.choices("config.value_type", CONFIG_VALUE_TYPES),
                                  widget=Select2Widget())
    }
    formatters_columns = {"value_type": labels.formatter("config.value_type"),
                          "description": labels.config_description}

    def check_form(self, form, pk):
        parse_config_value(form.value_type.data, form.value.data)

    def check_item(self, item, creating):
        _check_config(item)


class DictTypeApi(CrmModelRestApi):
    datamodel = SQLAInterface(DictType)
    resource_name = "dict_type"
    class_permission_name = policy.METADATA
    list_columns = show_columns = ["id", "code", "name_zh", "name_en", "description"]
    add_columns = edit_columns = ["code", "name_zh", "name_en", "description"]

    def check_delete(self, item):
        _check_dict_type_delete(item)


class DictItemApi(CrmModelRestApi):
    datamodel = SQLAInterface(DictItem)
    resource_name = "dict_item"
    class_permission_name = policy.METADATA
    list_columns = show_columns = ["id", "dict_type.code", "code", "label_zh", "label_en", "sort", "enabled"]
    add_columns = edit_columns = ["dict_type", "code", "label_zh", "label_en", "sort", "enabled"]
    search_columns = ["dict_type", "code", "enabled"]

    def check_delete(self, item):
        _check_dict_item_delete(item)


class ConfigItemApi(CrmModelRestApi):
    datamodel = SQLAInterface(ConfigItem)
    resource_name = "config_item"
    class_permission_name = policy.CONFIG
    list_columns = show_columns = ["id", "key", "value_type", "value", "description", "updated_at"]
    add_columns = edit_columns = ["key", "value_type", "value", "description"]
    search_columns = ["key", "value_type"]

    def check_item(self, item, creating):
        _check_config(item)
