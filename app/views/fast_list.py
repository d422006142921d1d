"""Lists that stay fast on big tables: what CrmModelView's HTML list does instead of FAB's.

FAB counts every matching row for every page and loads related columns one row at a time (N+1). Here:

- **Eager loading**: the relationships shown (list columns, dotted ones too, and a view's `list_eager`
  paths such as "opportunity.customer") are loaded with `selectinload`: one query per relationship,
  whatever the page size.
- **Capped count**: `SELECT count(*) FROM (SELECT 1 … LIMIT cap + 1)`; beyond the cap the list shows
  "10,000+" and a link that asks for the exact count (`count_<View>=exact`).
- **Keyset paging**: when the list is ordered by its primary key or by a NOT NULL column of its own
  (the default orders: id desc, created_at desc, started_at desc), "next" and "previous" carry the last
  (first) row's key: `after_<View>=<id>` or `<id>~<value>` (a time as microseconds since 1970) /
  `before_<View>=…`, and the page is read with
  `WHERE (col, id) < (value, id) ORDER BY col DESC, id DESC LIMIT n` — as fast on page 5,000 as on
  page 1. Numbered page links (OFFSET) are offered only while the offset is small. Filters, the order,
  the page size and the data scope (base filters) apply to keyset pages exactly as to offset pages.

Bad cursor or count arguments answer 400 naming the argument.
"""

from __future__ import annotations

import datetime as dt
import math

from flask import abort, current_app, g, request, url_for
from flask_appbuilder.widgets import ListWidget
from flask_babel import gettext as _
from sqlalchemy import Date, DateTime, Integer, String, func, literal, nulls_last, tuple_
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import selectinload

COUNT_CAP = 10_000  # CRM_LIST_COUNT_CAP
MAX_OFFSET = 10_000  # CRM_LIST_MAX_OFFSET: numbered (OFFSET) page links only up to this many rows
INT32_MAX = 2**31 - 1
PAGE_SIZES = (25, 50, 100, 200)
#: columns of long free text: they wrap; every other column stays on one line.
WRAP_COLUMNS = ("content", "summary", "note", "consult_note", "transcript", "before", "after")
AFTER, BEFORE, COUNT = "after_", "before_", "count_"
EPOCH = dt.datetime(1970, 1, 1)


class FastListWidget(ListWidget):
    template = "crm/fast_list_widget.html"


def bad_argument(name: str, reason: str):
    abort(400, description=f"{name}: {reason}")


def _whole(name: str, text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= INT32_MAX:
        bad_argument(name, _("not a valid position in the list"))
    return int(text)


def _key_value(name: str, column, text: str):
    """The order column's value in a cursor, typed as the column; 400 when it is not one."""
    kind = column.type
    try:
        if isinstance(kind, DateTime):  # microseconds since 1970 (stored times are naive UTC)
            if not text.lstrip("-").isdigit() or len(text) > 19:
                raise ValueError(text)
            return EPOCH + dt.timedelta(microseconds=int(text))
        if isinstance(kind, Date):
            return dt.date.fromisoformat(text)
        if isinstance(kind, Integer):
            return -_whole(name, text[1:]) if text.startswith("-") else _whole(name, text)
    except (ValueError, OverflowError):
        bad_argument(name, _("not a valid position in the list"))
    if len(text) > 1000:
        bad_argument(name, _("not a valid position in the list"))
    return text


def _key_text(value) -> str:
    if isinstance(value, dt.datetime):
        return str((value - EPOCH) // dt.timedelta(microseconds=1))
    return value.isoformat() if isinstance(value, dt.date) else str(value)


class FastListMixin:
    """The HTML list of a ModelView with eager loading, a capped count and keyset paging."""

    list_widget = FastListWidget
    #: relationship paths loaded with each page besides the list columns' (for formatters that use them).
    list_eager: tuple[str, ...] = ()
    #: list columns of long text that wrap (the others never do).
    list_wrap_columns: tuple[str, ...] = WRAP_COLUMNS
    #: nullable order columns whose empty values sort last either way (e.g. an unscored win probability).
    nulls_last_columns: tuple[str, ...] = ()
    #: "customer" / "opportunity": the list takes ?segment=<id> (app/views/segments_filter.py) and shows
    #: the segment dropdown above it.
    segment_subject: str | None = None

    # --- what the list may do ----------------------------------------------------------------------
    def _keyset_column(self, order_column: str):
        """The model column the list is ordered by when keyset paging can follow it, else None."""
        if not order_column or "." in order_column:
            return None
        column = sa_inspect(self.datamodel.obj).columns.get(order_column)
        if column is None or not isinstance(column.type, Integer | DateTime | Date | String):
            return None
        return column if column.primary_key or not column.nullable else None

    def _cursor(self, name: str, column):
        """("after" | "before", value, id) from the request's cursor argument, else None."""
        found = [(arg, request.args[arg]) for arg in (AFTER + name, BEFORE + name) if arg in request.args]
        if not found:
            return None
        if len(found) > 1:
            bad_argument(found[1][0], _("give either %(a)s or %(b)s", a=AFTER + name, b=BEFORE + name))
        arg, raw = found[0]
        if column is None:
            bad_argument(arg, _("this order of the list pages by page number only"))
        if column.primary_key:
            return arg[:-len(name) - 1], _whole(arg, raw), _whole(arg, raw)
        pk_text, sep, value_text = raw.partition("~")
        if not sep:
            bad_argument(arg, _("not a valid position in the list"))
        return arg[:-len(name) - 1], _key_value(arg, column, value_text), _whole(arg, pk_text)

    def _count_cap(self) -> int:
        return int(current_app.config.get("CRM_LIST_COUNT_CAP", COUNT_CAP))

    def _max_offset(self) -> int:
        return int(current_app.config.get("CRM_LIST_MAX_OFFSET", MAX_OFFSET))

    def _eager_options(self) -> list:
        options = []
        for path in dict.fromkeys([*self.list_columns, *self.list_eager]):
            model, option = self.datamodel.obj, None
            for part in path.split("."):
                rel = sa_inspect(model).relationships.get(part)
                if rel is None:
                    break
                attr = getattr(model, part)
                option = selectinload(attr) if option is None else option.selectinload(attr)
                model = rel.mapper.class_
            if option is not None:
                options.append(option)
        return options

    # --- the page --------------------------------------------------------------------------------
    def _page_rows(self, base, order_column, order_direction, column, cursor, page, page_size):
        """(rows, more): the page's rows in list order; `more` says a row follows them (offset or
        "after"), or precedes them ("before")."""
        dm = self.datamodel
        descending = order_direction != "asc"
        query = base
        forward = True
        if cursor is not None:
            direction, value, last_id = cursor
            forward = direction == "after"
            pk = dm.get_pk()
            smaller = descending == forward
            if column.primary_key:
                key, bound = pk, literal(last_id, pk.type)
            else:
                col = getattr(dm.obj, column.key)
                key = tuple_(col, pk)
                bound = tuple_(literal(value, column.type), literal(last_id, pk.type))
                # Redundant, but an index on the column alone can seek with it (a row comparison needs
                # an index on (column, id)).
                query = query.filter(col <= value if smaller else col >= value)
            query = query.filter(key < bound if smaller else key > bound)
        direction = order_direction if forward else ("asc" if descending else "desc")
        if order_column in self.nulls_last_columns:
            col, pk = getattr(dm.obj, order_column), dm.get_pk()
            asc = direction == "asc"
            query = query.order_by(nulls_last(col.asc() if asc else col.desc()),
                                   pk.asc() if asc else pk.desc())
        else:
            query = dm.apply_order_by(query, order_column, direction, aliases_mapping={},
                                      bypass_many_to_many=True, add_pk=True)
        if cursor is None and page:
            query = query.offset(page * page_size)
        rows = query.options(*self._eager_options()).limit(page_size + 1).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        if not forward:
            rows.reverse()
        return rows, more

    def _count(self, base, name: str) -> tuple[int, bool]:
        """(count, capped): the exact count when asked for, else counted up to the cap (cap + 1, True
        when there are more)."""
        query = base.order_by(None)
        wanted = request.args.get(COUNT + name)
        if wanted is not None and wanted != "exact":
            bad_argument(COUNT + name, _("the only value is %(value)s", value="exact"))
        if wanted == "exact":
            return query.count(), False
        cap = self._count_cap()
        # The primary key, not a literal: a query with no WHERE on the model (an admin's unfiltered list)
        # would otherwise lose its FROM and count one row.
        limited = query.with_entities(*sa_inspect(self.datamodel.obj).primary_key).limit(cap + 1).subquery()
        counted = self.datamodel.session.query(func.count()).select_from(limited).scalar()
        return counted, counted > cap

    def _get_list_widget(self, filters, actions=None, order_column="", order_direction="", page=None,
                         page_size=None, widgets=None, **kwargs):
        widgets = widgets or {}
        actions = actions or self.actions
        page, page_size = page or 0, page_size or self.page_size
        if not order_column and self.base_order:
            order_column, order_direction = self.base_order
        name = type(self).__name__
        dm = self.datamodel
        joined = filters.get_joined_filters(self._base_filters)
        base = dm.apply_filters(dm.session.query(dm.obj), dm.get_inner_filters(joined))
        column = self._keyset_column(order_column)
        cursor = self._cursor(name, column)
        rows, more = self._page_rows(base, order_column, order_direction, column, cursor, page, page_size)
        # Held until the request ends: the session's identity map is weak, and formatters that look a
        # row up again (session.get) then find it there instead of querying once per row.
        g.crm_list_rows = rows
        count, capped = self._count(base, name)
        pks = [self._serialize_pk_if_composite(pk) for pk in dm.get_keys(rows)]
        widgets["list"] = self.list_widget(
            label_columns=self.label_columns,
            include_columns=self.list_columns,
            value_columns=list(dm.get_values(rows, self.list_columns)),
            order_columns=self.order_columns,
            formatters_columns=self.formatters_columns,
            page=page,
            page_size=page_size,
            count=count,
            pks=pks,
            actions=actions,
            filters=filters,
            modelview_name=name,
            count_label=f"{count - 1:,}+" if capped else f"{count:,}",
            exact_count_url=self._link(name, keep_page=True, **{COUNT + name: "exact"}) if capped else None,
            pager=self._pager(name, rows, more, cursor, column, count, capped, page, page_size),
            page_sizes=[(size, self._link(name, **{f"psize_{name}": size}), size == page_size)
                        for size in PAGE_SIZES],
            wrap_columns=set(self.list_wrap_columns),
            segment_filter=self._segment_dropdown(),
            **kwargs,
        )
        return widgets

    def _segment_dropdown(self) -> dict | None:
        if self.segment_subject is None:
            return None
        from app.views import segments_filter

        return segments_filter.dropdown(lambda pk: segments_filter.list_url(request.endpoint, pk))

    # --- links -------------------------------------------------------------------------------------
    def _link(self, name: str, keep_page: bool = False, **changes) -> str:
        args = request.args.copy()
        if not keep_page:
            for key in (f"page_{name}", AFTER + name, BEFORE + name):
                args.pop(key, None)
        for key, value in changes.items():
            args[key] = value
        return url_for(request.endpoint, **{**(request.view_args or {}), **args.to_dict(flat=False)})

    def _row_cursor(self, row, column) -> str:
        pk = str(getattr(row, self.datamodel.get_pk_name()))
        return pk if column.primary_key else f"{pk}~{_key_text(getattr(row, column.key))}"

    def _pager(self, name, rows, more, cursor, column, count, capped, page, page_size) -> list[dict]:
        """The page links: « ‹ numbered pages (while OFFSET is cheap) › and » (when the end is known)."""
        backwards = cursor is not None and cursor[0] == "before"
        has_next = bool(rows) and (backwards or more)
        keyset = column is not None and bool(rows)
        max_offset = self._max_offset()
        pages = math.ceil(count / page_size) if count else 1

        def offset_link(p):
            return self._link(name) if p == 0 else self._link(name, **{f"page_{name}": p})

        items = [{"label": "«", "url": offset_link(0) if page else None, "title": _("First page")}]
        if page == 0:
            prev = None
        elif keyset and page > 1:
            prev = self._link(name, **{f"page_{name}": page - 1,
                                       BEFORE + name: self._row_cursor(rows[0], column)})
        else:
            prev = offset_link(page - 1)
        items.append({"label": "‹", "url": prev, "title": _("Previous page")})
        for p in range(max(0, page - 3), min(pages, page + 4) if not capped else page + 4):
            if p == page:
                items.append({"label": str(p + 1), "url": None, "active": True})
            elif p * page_size <= max_offset and p * page_size < count:
                items.append({"label": str(p + 1), "url": offset_link(p)})
        if page >= pages and not any(i.get("active") for i in items):
            items.append({"label": str(page + 1), "url": None, "active": True})
        if has_next:
            nxt = (self._link(name, **{f"page_{name}": page + 1,
                                       AFTER + name: self._row_cursor(rows[-1], column)})
                   if keyset else offset_link(page + 1))
        else:
            nxt = None
        items.append({"label": "›", "url": nxt, "title": _("Next page")})
        last = pages - 1
        reachable = not capped and last > page and last * page_size <= max_offset
        last_url = offset_link(last) if reachable else None
        items.append({"label": "»", "url": last_url, "title": _("Last page")})
        return items
