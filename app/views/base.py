"""Base classes every CRM view and API derives from.

They close the holes FAB leaves open (see shared/FAB-NOTES.md): the data scope applies to lists,
show/edit/delete, actions (FAB fetches action rows without base filters), related-field dropdowns,
exports and the REST API; domain rules give field errors in forms and 4xx JSON in the API.
"""

from __future__ import annotations

import functools

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import ModelRestApi, ModelView
from flask_appbuilder.api import safe
from flask_appbuilder.const import API_URI_RIS_KEY
from flask_appbuilder.hooks import before_request
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from app.extensions import db
from app.models.base import ScopedMixin
from app.models.metadata import DictItem, DictType
from app.security import input_guards, policy
from app.security.masking import can_view_full_phone, mask_phone, mask_phones_in_text
from app.security.scope import DataScopeFilter, current_viewer, restrict, scope_filter
from app.services import audit
from app.services.errors import DomainError
from app.services.metadata import check_dict_choice
from app.views import form_fields, labels, list_args, times
from app.views.api_schema import CrmModel2SchemaConverter
from app.views.export import CsvExportMixin
from app.views.fast_list import FastListMixin

MAX_PAGE_SIZE = 200  # the default of CRM_LIST_MAX_PAGE_SIZE


class EnabledDictItemFilter(BaseFilter):
    """Dropdown filter: the enabled items of one dictionary (value = the DictType code)."""

    name = "Enabled items of a dictionary"
    arg_name = "dict"

    def apply(self, query, value):
        return query.join(DictItem.dict_type).filter(DictType.code == value, DictItem.enabled.is_(True))


def _relations(model):
    return {rel.key: rel.mapper.class_ for rel in sa_inspect(model).relationships}


def _plain_value(formatter):
    """FAB prints an empty value as "None", a flag as "True" and a time as stored (UTC, microseconds):
    show nothing, a yes / no, and the business-zone time instead."""
    def format_value(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return _l("Yes") if value else _l("No")
        return formatter(value) if formatter else times.local_dt(value)

    return format_value


def masked_phone_formatter(value):
    return mask_phone(value)


class CrmViewMixin:
    """What the HTML view and the REST API of a resource share."""

    #: relationship name → DictType code: the dropdown offers that dictionary's enabled items.
    dict_fields: dict[str, str] = {}
    #: columns holding phone numbers: masked in lists, pages, API answers and exports.
    phone_columns: tuple[str, ...] = ()
    method_permission_name = policy.METHOD_PERMISSIONS
    #: stored times are naive UTC, read and typed in the business zone (app/views/times.py).
    times_in_business_zone = True

    @classmethod
    def _scoped(cls, model) -> bool:
        return issubclass(model, ScopedMixin)

    def _init_times(self) -> None:
        """Search filters on datetime columns read business-zone wall time (app/views/times.py)."""
        self.datamodel.filter_converter_class = times.LocalFilterConverter
        # FAB builds a new SQLAInterface (mapper walk) per related object it lists in a form's dropdown, to
        # read its key: one per model is enough (they hold no per-request state).
        dm = self.datamodel
        if not hasattr(dm.get_related_interface, "cache_info"):
            dm.get_related_interface = functools.lru_cache(maxsize=None)(dm.get_related_interface)

    def _rel_filters(self, model) -> dict:
        filters = {}
        for key, target in _relations(model).items():
            if key in self.dict_fields:
                filters[key] = [["id", EnabledDictItemFilter, self.dict_fields[key]]]
            elif issubclass(target, ScopedMixin):
                filters[key] = scope_filter()
        return filters

    def check_item(self, item, creating: bool) -> None:
        """Domain rules for `item` before it is saved; raise DomainError. Override per resource."""

    def check_relations(self, item) -> None:
        """Chosen related rows must be in the user's scope; chosen dictionary items enabled."""
        viewer = current_viewer()
        state = sa_inspect(item)
        for key, target in _relations(type(item)).items():
            hist = state.attrs[key].history
            if not hist.added:
                continue
            chosen = hist.added[0]
            if chosen is None:
                continue
            if sa_inspect(chosen).key is None:  # the API's schema makes up a row for an id that has none
                raise DomainError("No record has this id", field=key, status=400)
            if key in self.dict_fields:
                previous = hist.deleted[0].id if hist.deleted and hist.deleted[0] is not None else None
                check_dict_choice(chosen, self.dict_fields[key], previous, field=key)
            elif issubclass(target, ScopedMixin) and chosen.id is not None:
                visible = restrict(select(target.id).where(target.id == chosen.id), target, viewer)
                if db.session.scalar(visible) is None:
                    raise DomainError("%(name)s is outside your data scope", field=key, status=403,
                                      name=str(chosen))

    def _restore_masked_phones(self, item) -> None:
        """A masked number sent back unchanged (138****1234) keeps the stored number."""
        state = sa_inspect(item)
        for col in self.phone_columns:
            value = getattr(item, col, None)
            if value and "*" in value:
                deleted = state.attrs[col].history.deleted
                setattr(item, col, deleted[0] if deleted else None)

    def _validate(self, item, creating: bool) -> None:
        self._restore_masked_phones(item)
        try:
            with db.session.no_autoflush:  # a check's query must not flush the unchecked change
                self.check_relations(item)
                self.check_item(item, creating)
        except DomainError:
            db.session.rollback()
            raise

    def pre_add(self, item):
        self._validate(item, creating=True)

    def pre_update(self, item):
        self._validate(item, creating=False)

    def pre_delete(self, item):
        try:
            self.check_delete(item)
        except DomainError:
            db.session.rollback()
            raise

    def check_delete(self, item) -> None:
        """Refuse a delete with DomainError. Override per resource."""


def refuse_delete_in_use(item, *columns, instead: str = "disable it instead") -> None:
    """A 409 when rows refer to `item` through any of `columns` (model attributes such as
    CallRecord.line_id): what they record keeps its meaning, whether or not a foreign key says so."""
    for column in columns:
        if db.session.scalar(select(func.count()).where(column == item.id)):
            raise DomainError("%(name)s is used by %(table)s rows: %(instead)s", status=409, name=str(item),
                              table=column.class_.__tablename__, instead=instead)


class CrmModelView(FastListMixin, CsvExportMixin, CrmViewMixin, ModelView):
    """ModelView with data scope everywhere, domain checks as form errors, a CSV export, and lists that
    stay fast on big tables (app/views/fast_list.py)."""

    page_size = 25
    export_columns: list[str] | None = None
    show_template = "crm/show.html"
    list_template = "crm/list.html"
    #: these forms refuse unstorable text (NUL…) as a field error (app/security/input_guards.py).
    text_checked_forms = ("add", "edit")

    def __init__(self, *args, **kwargs):
        model = self.datamodel.obj
        self._init_times()
        if self._scoped(model):
            self.base_filters = list(self.base_filters or []) + scope_filter()
        rel = self._rel_filters(model)
        for attr in ("add_form_query_rel_fields", "edit_form_query_rel_fields",
                     "search_form_query_rel_fields"):
            setattr(self, attr, {**rel, **(getattr(self, attr, None) or {})})
        formatters = {c: masked_phone_formatter for c in self.phone_columns}
        formatters.update(self.formatters_columns or {})
        self.search_form_extra_fields = {**labels.search_fields(formatters, self.search_columns,
                                                                self.label_columns),
                                         **(self.search_form_extra_fields or {})}
        # Actions change rows: they need can_write (FAB would invent a permission per action name).
        actions = [n for n in dir(type(self)) if hasattr(getattr(type(self), n, None), "_action")]
        self.method_permission_name = {**{n: "write" for n in actions}, **self.method_permission_name}
        super().__init__(*args, **kwargs)
        # Every shown column (FAB has filled in the defaults by now) through _plain_value.
        shown = {*self.list_columns, *self.show_columns}
        self.formatters_columns = {c: _plain_value(formatters.get(c)) for c in shown | set(formatters)}

    def render_template(self, template, **kwargs):
        return super().render_template(template, view=self, **kwargs)

    # --- forms: domain rules become field errors -------------------------------------------------
    def _init_forms(self):
        super()._init_forms()
        self.add_form = self._checked_form(times.local_datetime_fields(form_fields.loosened(self.add_form)))
        self.edit_form = self._checked_form(times.local_datetime_fields(form_fields.loosened(self.edit_form)))
        self.search_form = times.local_datetime_fields(self.search_form)

    def _checked_form(self, form_cls):
        view = self

        class CheckedForm(form_cls):
            def validate(self, extra_validators=None):
                if input_guards.refuse_unstorable_text(self):  # before validators that query with it
                    return False
                view._offer_current_choices(self, getattr(self, "_id", None))
                if not super().validate(extra_validators=extra_validators):
                    return False
                try:
                    view.check_form(self, getattr(self, "_id", None))
                except DomainError as exc:
                    field = getattr(self, exc.field, None) if exc.field else None
                    if field is not None:
                        # FAB renders field errors as markup: the message may quote user input.
                        field.errors = [*field.errors, str(escape(exc.message))]
                    else:
                        flash(exc.message, "danger")
                    return False
                return True

        CheckedForm.__name__ = form_cls.__name__
        return CheckedForm

    def _offer_current_choices(self, form, pk) -> None:
        """A disabled dictionary item already on the record stays offered (and selected) in its
        dropdown, so that saving the record unchanged keeps it."""
        item = self.datamodel.get(pk) if pk is not None else None
        for key in self.dict_fields:
            field = getattr(form, key, None)
            current = getattr(item, key, None) if item is not None else None
            if field is None or current is None or not hasattr(field, "query_func"):
                continue

            def with_current(query=field.query_func, current=current):
                objs = list(query())
                return objs if current in objs else [*objs, current]

            field.query_func = with_current
            field._object_list = None

    def prefill_form(self, form, pk):
        self._offer_current_choices(form, pk)
        if not can_view_full_phone(current_viewer()):
            for col in self.phone_columns:
                field = getattr(form, col, None)
                if field is not None and field.data:
                    field.data = mask_phone(field.data)

    def check_form(self, form, pk) -> None:
        """Domain rules on the submitted form (pk is None when adding), so that they show as field
        errors: by default the view's own checks run on a scratch copy of the record, thrown away."""
        with db.session.no_autoflush:
            item = self.datamodel.obj() if pk is None else self.datamodel.get(pk)
            try:
                form.populate_obj(item)
                self._validate(item, creating=pk is None)
            finally:
                db.session.rollback()
                if pk is not None:  # reloaded, so that the real save sees what it changes (history)
                    db.session.refresh(item)

    # --- list arguments: checked, and the page size capped ----------------------------------------
    @before_request
    def _check_list_args(self):
        """FAB orders by any `_oc_` column it is given: 400 for one the list cannot be ordered by (its
        `page_*` / `psize_*` arguments are checked for every page by app/security/input_guards.py)."""
        reason = list_args.html_list_error(type(self).__name__, self.order_columns)
        if reason:
            abort(400, description=reason)

    def _get_list_widget(self, filters, *args, page_size=None, **kwargs):
        if page_size is not None:
            cap = current_app.config.get("CRM_LIST_MAX_PAGE_SIZE", MAX_PAGE_SIZE)
            page_size = max(1, min(int(page_size), cap))
        return super()._get_list_widget(filters, *args, page_size=page_size, **kwargs)

    @expose("/download/<string:filename>")
    @has_access
    def download(self, filename):
        """FAB's file-column download: no CRM model has file columns (and no UPLOAD_FOLDER is set)."""
        abort(404)

    # --- actions: FAB fetches their rows without base filters; we do not --------------------------
    def _scoped_get(self, pk):
        return self.datamodel.get(self._deserialize_pk_if_composite(pk), self._base_filters)

    def _require_action_permission(self, name: str) -> None:
        permission = self.get_action_permission_name(name)
        if not self.appbuilder.sm.has_access(permission, self.class_permission_name):
            abort(403)

    @expose("/action/<string:name>/<pk>", methods=["GET", "POST"])
    def action(self, name, pk):
        if request.method != "POST":
            abort(405)
        self._require_action_permission(name)
        action = self.actions.get(name)
        item = self._scoped_get(pk)
        if action is None or item is None:
            abort(404)
        return action.func(item)

    @expose("/action_post", methods=["POST"])
    def action_post(self):
        name = request.form.get("action", "")
        self._require_action_permission(name)
        action = self.actions.get(name)
        if action is None:
            abort(404)
        pks = request.form.getlist("rowid")
        items = [self._scoped_get(pk) for pk in pks]
        if any(item is None for item in items):
            flash(str(_l("Some of the selected records are outside your data scope; nothing was done.")),
                  "danger")
            return redirect(self.get_redirect())
        return action.func(items)

    def get_action_permission_name(self, name: str) -> str:
        action = self.actions.get(name)
        key = action.func.__name__ if action is not None else name
        return "can_" + self.method_permission_name.get(key, "write")

    # --- full phone number, on request, audited ---------------------------------------------------
    @expose("/phone/<pk>", methods=["POST"])
    @has_access
    def reveal_phone(self, pk):
        return self.reveal(pk, self.class_permission_name, lambda item: [
            (self.label_columns.get(c, c), getattr(item, c)) for c in self.phone_columns if getattr(item, c)])

    def reveal(self, pk, target_type: str, numbers_of):
        """Flash the full numbers of row `pk` (in the viewer's scope): `numbers_of(item)` gives (label,
        number) pairs. Audited; back to the row's page."""
        if not can_view_full_phone(current_viewer()):
            abort(403)
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        numbers = numbers_of(item)
        audit.record(db.session, "phone_view", target_type=target_type, target_id=item.id,
                     summary=f"{item}: {len(numbers)}")
        db.session.commit()
        for label, number in numbers:
            flash(f"{label}: {number}", "info")
        if not numbers:
            flash(str(_l("No phone number in this entry.")), "info")
        return redirect(url_for(f"{self.__class__.__name__}.show", pk=item.id))


class CrmModelRestApi(CrmViewMixin, ModelRestApi):
    """ModelRestApi with the data scope, domain checks as 4xx JSON, and masked phones."""

    allow_browser_login = True
    page_size = 50
    model2schemaconverter = CrmModel2SchemaConverter
    #: free-text columns (notes): the phone numbers typed into them are masked in the JSON
    text_columns: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        model = self.datamodel.obj
        self._init_times()
        if self._scoped(model):
            self.base_filters = list(self.base_filters or []) + scope_filter()
        rel = self._rel_filters(model)
        self.add_query_rel_fields = {**rel, **(self.add_query_rel_fields or {})}
        self.edit_query_rel_fields = {**rel, **(self.edit_query_rel_fields or {})}
        super().__init__(*args, **kwargs)

    @before_request
    def _check_list_args(self):
        """A `q` FAB's parser would fail on with 500 (`(((`, `!`) and a negative or non-numeric page or
        page size answer 400 naming the argument; a page size over FAB_API_MAX_PAGE_SIZE is capped."""
        raw = request.args.get(API_URI_RIS_KEY)
        if not raw:
            return None
        try:
            found = list_args.rison_page_error(list_args.parse_rison(raw))
        except ValueError:
            found = API_URI_RIS_KEY, _("Not a valid Rison or JSON argument")
        return self.response(400, field=found[0], message=found[1]) if found else None

    # --- _info: gettext("") is the catalog's header ("Project-Id-Version: …"), not "" ----------------
    @staticmethod
    def _translated(text) -> str:
        return str(_(text)) if text else ""

    def _get_field_info(self, field, *args, **kwargs):
        info = super()._get_field_info(field, *args, **kwargs)
        info["label"] = self._translated(self.label_columns.get(field.name, ""))
        info["description"] = self._translated(self.description_columns.get(field.name, ""))
        return info

    def _description_columns_json(self, cols=None):
        return {k: self._translated(v) for k, v in self.description_columns.items() if k in (cols or [])}

    def _label_columns_json(self, cols=None):
        cols = cols or []
        return {k: self._translated(v) for k, v in self.label_columns.items() if k in cols}

    def _domain_response(self, call, *args):
        try:
            return call(*args)
        except DomainError as exc:
            db.session.rollback()
            return self.response(exc.status, **exc.as_dict())

    def _check_relation_ids(self) -> None:
        """Related fields take row ids: `3`, or a list of them for a to-many relation. Anything else (an
        object, which FAB would pass on as the related model's keyword arguments, a list for a
        to-one, text) and ids no row can have (beyond 32 bits, PostgreSQL's "integer out of range") are
        refused naming the field, before the schema looks them up."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return
        for rel in sa_inspect(self.datamodel.obj).relationships:
            if rel.key not in body or body[rel.key] is None:
                continue
            value = body[rel.key]
            if rel.uselist != isinstance(value, list):
                raise DomainError("Must be a list of ids of related rows" if rel.uselist
                                  else "Must be the id of a related row", field=rel.key, status=400)
            for one in value if rel.uselist else [value]:
                if isinstance(one, bool) or not isinstance(one, int | str):
                    raise DomainError("Must be the id of a related row", field=rel.key, status=400)
                if not input_guards.storable_id(one):
                    raise DomainError("No record has this id", field=rel.key, status=400)

    def _checked_write(self, call, *args):
        self._check_relation_ids()
        return call(*args)

    def pre_update(self, item):
        """Flushed here, so that a unique value already taken is a 409 naming the column
        (input_guards.integrity_answer) rather than FAB's 422 quoting the database."""
        super().pre_update(item)
        db.session.flush()

    def post_headless(self):
        return self._domain_response(self._checked_write, super().post_headless)

    def put_headless(self, pk):
        return self._domain_response(self._checked_write, super().put_headless, pk)

    def delete_headless(self, pk):
        return self._domain_response(super().delete_headless, pk)

    def _mask(self, row: dict) -> None:
        for col in self.phone_columns:
            if row.get(col):
                row[col] = mask_phone(row[col])
        for col in self.text_columns:
            if row.get(col):
                row[col] = mask_phones_in_text(row[col])

    def pre_get(self, data):
        self._mask(data.get("result") or {})

    def pre_get_list(self, data):
        for row in data.get("result") or []:
            self._mask(row)


__all__ = ["CrmModelRestApi", "CrmModelView", "DataScopeFilter", "EnabledDictItemFilter", "safe"]
