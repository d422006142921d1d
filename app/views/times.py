"""How times cross the screen and the API, in one place (the clock is app/clock.py).

Stored times are naive UTC. A person reads and types business-zone wall time, "YYYY-MM-DD HH:MM:SS"
without microseconds; an API client reads ISO 8601 with the business zone's offset and may send an
offset of its own (none = business-zone wall time). The base view classes (app/views/base.py) and
`install(app)` wire this into FAB's list and show pages, its add/edit forms, its REST schemas, `jsonify`
and the Jinja filter `local_dt`, so that no view formats or parses a time by hand.
"""

from __future__ import annotations

import datetime as dt

from dateutil import parser as date_parser
from flask.json.provider import DefaultJSONProvider
from flask_appbuilder.api.convert import Model2SchemaConverter
from flask_appbuilder.fieldwidgets import DateTimePickerWidget
from flask_appbuilder.models.sqla import filters as fab_filters
from markupsafe import Markup
from marshmallow import fields
from wtforms import DateTimeField
from wtforms.fields.core import UnboundField
from wtforms.widgets import html_params

from app import clock

#: what a person may type in a datetime input (the first is also how the input shows a stored time).
INPUT_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]


# --- reading: pages and templates ---------------------------------------------------------------------
def local_dt(value, seconds: bool = True):
    """Jinja filter and FAB formatter: a stored instant in the business zone without microseconds;
    anything else (a date, a string, None) as it is (None as nothing)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return clock.format_datetime(value, seconds=seconds)
    return value


def process_local_dt(value):
    """A time FAB itself stores in the process's local zone (API keys' *_on columns, see
    clock.process_local_now) as a person reads it."""
    return "" if value is None else clock.format_datetime(value.astimezone())


# --- typing: FAB's add / edit forms -------------------------------------------------------------------
class LocalDateTimeWidget(DateTimePickerWidget):
    """FAB's picker printed `field.data` (the stored UTC value, microseconds and all): this one prints
    what the field shows a person."""

    def __call__(self, field, **kwargs):
        kwargs.setdefault("id", field.id)
        kwargs.setdefault("name", field.name)
        return Markup(self.data_template % {"text": html_params(type="text", value=field._value(), **kwargs)})


class LocalDateTimeField(DateTimeField):
    """Shows and reads business-zone wall time; `data` stays naive UTC, like the column it fills."""

    widget = LocalDateTimeWidget()

    def __init__(self, label=None, validators=None, format=None, **kwargs):
        kwargs.pop("widget", None)
        super().__init__(label, validators, format=format or INPUT_FORMATS, **kwargs)

    def _value(self):
        if self.raw_data:
            return " ".join(self.raw_data)
        return local_dt(self.data) if isinstance(self.data, dt.datetime) else ""

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if isinstance(self.data, dt.datetime):
            self.data = clock.to_utc(self.data)


def _swapped(form_cls, field_class, **kwargs):
    """A subclass of `form_cls` whose DateTimeFields are `field_class(…, **kwargs)`, in the same places."""
    swapped = {}
    for name in dir(form_cls):
        unbound = getattr(form_cls, name, None)
        if isinstance(unbound, UnboundField) and unbound.field_class is DateTimeField:
            field = UnboundField(field_class, *unbound.args, **{**unbound.kwargs, **kwargs})
            field.creation_counter = unbound.creation_counter
            swapped[name] = field
    return type(form_cls.__name__, (form_cls,), swapped) if swapped else form_cls


def local_datetime_fields(form_cls):
    """`form_cls` (a form FAB generated) with every DateTimeField read and shown in the business zone.
    Dates (DateField) stay dates."""
    return _swapped(form_cls, LocalDateTimeField)


def adopt_fab_views(appbuilder) -> None:
    """FAB's own model and chart views (users, roles …) are not ours: their times are stamped with the
    process's local clock (`datetime.now()`). Show those in the business zone too, and their inputs
    without microseconds (what a person types there stays the process's wall time, as FAB compares it)."""
    from flask_appbuilder.baseviews import BaseModelView

    for view in appbuilder.baseviews:
        if not isinstance(view, BaseModelView) or getattr(view, "times_in_business_zone", False):
            continue
        shown = {*(getattr(view, "list_columns", None) or ()), *(getattr(view, "show_columns", None) or ())}
        times = dict.fromkeys((c for c in shown if "." not in c and view.datamodel.is_datetime(c)),
                              process_local_dt)
        if times:
            view.formatters_columns = {**times, **(view.formatters_columns or {})}
        for attr in ("add_form", "edit_form", "search_form"):
            form = getattr(view, attr, None)
            if form is not None:
                setattr(view, attr, _swapped(form, DateTimeField, widget=LocalDateTimeWidget()))


# --- searching: FAB's list filters and the REST API's ?q=(filters:…) -----------------------------------
def _local_filter(base):
    """`base` (a FAB datetime filter) reading its value as business-zone wall time unless it carries
    an offset; a value that is no time goes to FAB as it came (FAB ignores it)."""

    class LocalFilter(base):
        def apply(self, query, value):
            if isinstance(value, str):
                try:
                    value = clock.to_utc(date_parser.parse(value))
                except (ValueError, OverflowError):
                    pass
            return super().apply(query, value)

    LocalFilter.__name__ = base.__name__
    return LocalFilter


class LocalFilterConverter(fab_filters.SQLAFilterConverter):
    conversion_table = tuple(
        (kind, [_local_filter(f) for f in filters] if kind == "is_datetime" else filters)
        for kind, filters in fab_filters.SQLAFilterConverter.conversion_table)


# --- the API ------------------------------------------------------------------------------------------
class DateTime(fields.DateTime):
    """ISO 8601 with the business zone's offset out; in, an offset is honoured and none means
    business-zone wall time. Either way it is stored as naive UTC. (Named as marshmallow's: FAB's
    `/_info` tells clients a field's type by its class name.)"""

    def _serialize(self, value, attr, obj, **kwargs):
        return clock.isoformat(value)

    def _deserialize(self, value, attr, data, **kwargs):
        return clock.to_utc(super()._deserialize(value, attr, data, **kwargs))


def _local_field(field):
    """Our DateTime in place of marshmallow's `field`, with its settings."""
    local = DateTime(
        required=field.required, allow_none=field.allow_none, validate=field.validators or None,
        load_only=field.load_only, dump_only=field.dump_only, metadata=field.metadata,
        load_default=field.load_default, dump_default=field.dump_default)
    local.unique = getattr(field, "unique", False)
    return local


class LocalModel2SchemaConverter(Model2SchemaConverter):
    """FAB's model → marshmallow converter with our DateTime for every DateTime column, those of a
    related object serialised whole (`org_unit: {…, created_at}`) too."""

    def _column2field(self, datamodel, column, nested=True, parent_schema_name=None):
        field = super()._column2field(datamodel, column, nested=nested, parent_schema_name=parent_schema_name)
        return _local_field(field) if type(field) is fields.DateTime else field

    def _meta_schema_factory(self, columns, model, class_mixin, parent_schema_name=None):
        schema = super()._meta_schema_factory(columns, model, class_mixin, parent_schema_name)
        for name, field in list(schema._declared_fields.items()):  # the class is new: ours to change
            if type(field) is fields.DateTime:
                schema._declared_fields[name] = _local_field(field)
        return schema


class JSONProvider(DefaultJSONProvider):
    """`jsonify` and FAB's API answers: datetimes as clock.isoformat (Flask's default writes an HTTP
    date, in GMT, for naive values), dates as YYYY-MM-DD."""

    @staticmethod
    def default(o):
        if isinstance(o, dt.datetime):
            return clock.isoformat(o)
        if isinstance(o, dt.date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


def install(app) -> None:
    """The app's JSON provider, the `local_dt` Jinja filter and FAB's own views (create_app calls this
    once every view is registered)."""
    app.json = JSONProvider(app)
    app.add_template_filter(local_dt, "local_dt")
    adopt_fab_views(app.appbuilder)
