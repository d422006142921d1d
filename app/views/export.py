"""Exports of any CrmModelView's filtered list, as CSV or .xlsx: exactly what the user may list (the
list's filters and data scope), phones masked unless the role sees full numbers, times in the business
zone, translated headers and labels (the list's own formatters), every export audited.

`/<view>/export/` (CSV) and `/<view>/export/xlsx/` (.xlsx) answer directly up to CRM_EXPORT_STREAM_MAX_ROWS
rows; a bigger export runs as a job of kind "export" (app/jobs/exports.py) that rebuilds the same plan
for the same user at run time, and its file is downloaded from `/exports/download/<run id>` by that
user or an administrator. The rules live in app/services/exports.py.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlencode

from flask import Response, abort, flash, g, redirect, request, send_file, stream_with_context, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.urltools import get_filter_args
from flask_appbuilder.views import expose
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models.jobs import COMPLETED, EXPORT, JobRun
from app.security import policy
from app.security.masking import can_view_full_phone, mask_phone
from app.security.scope import current_viewer
from app.services import audit, exports, runner
from app.views import times

#: request arguments that only page, order or translate a list: not part of what an export selects
#: (an export is in id order, whole).
NOT_FILTERS = ("_l_",)
PAGING = ("page_", "psize_", "after_", "before_", "count_", "_oc_", "_od_")
MEMO_SIZE = 10_000


def _session_closed_after(stream, session):
    """A streamed body reads its rows after the request's teardown closed `session`, which reopens a
    transaction: close it again when the stream ends, or PostgreSQL keeps that connection "idle in
    transaction" (holding a snapshot and locks) for good."""
    try:
        yield from stream
    finally:
        session.close()


def _memo_key(value):
    """What a cell's formatted text may be remembered by: a related row (its identity) or a short code;
    None for anything else (times, numbers, free text are formatted each time)."""
    if isinstance(value, str):
        return value if len(value) <= 32 else None
    identity = getattr(getattr(value, "_sa_instance_state", None), "identity_key", None)
    return identity


def _attr(item, column: str):
    """The value of `column` ("a.b" follows relations; a method is called), as FAB's list reads it."""
    value = item
    for name in column.split("."):
        value = getattr(value, name, None) if value is not None else None
    return value() if callable(value) else value


def request_filters() -> dict:
    """The request's list arguments, for the audit and the job: {name: value or [values]}."""
    out = {}
    for key in request.args:
        if key not in NOT_FILTERS and not key.startswith(PAGING):
            values = request.args.getlist(key)
            out[key] = values[0] if len(values) == 1 else values
    return out


class CsvExportMixin:
    """`/<view>/export/` (CSV) and `/<view>/export/xlsx/` for a CrmModelView (export_columns, else
    list_columns)."""

    def export_plan(self) -> exports.ExportPlan:
        """What an export of this list selects for the current user and request (a real request, or
        the one the export job rebuilds): the list's filters and base filters (data scope, quick
        filters), the columns, translated headers and the cells as the list shows them."""
        # As the list page: filters on searchable columns only (a filter on a masked phone column would
        # let a user probe the full numbers by row counts).
        get_filter_args(self._filters)
        joined = self._filters.get_joined_filters(self._base_filters)
        model = self.datamodel.obj
        query = self.datamodel.apply_all(db.session.query(model), joined)
        columns = list(self.export_columns or self.list_columns)
        relations = {rel.key for rel in sa_inspect(model).relationships}
        eager = sorted({c.split(".")[0] for c in columns} & relations)
        if eager:  # one query per chunk and relation, not one per row
            query = query.options(*(selectinload(getattr(model, name)) for name in eager))
        full = can_view_full_phone(current_viewer())
        headers = [str(self.label_columns.get(c, c)) for c in columns]
        pk = getattr(model, self.datamodel.get_pk_name())
        return exports.ExportPlan(query=query, pk=pk, headers=headers, row=self._export_row(columns, full),
                                  full_phones=full, max_rows=exports.max_rows(), columns=columns)

    def _export_row(self, columns: list[str], full: bool):
        phones = set(self.phone_columns)
        formatters = self.formatters_columns or {}
        memo: dict[str, dict] = {col: {} for col in columns}

        def shown(col: str, value):
            if col in phones:
                return (value if full else mask_phone(value)) or ""
            value = formatters[col](value) if col in formatters else times.local_dt(value)
            return exports.cell(value.striptags() if isinstance(value, Markup) else value)

        def row(item) -> list:
            cells = []
            for col in columns:
                value = _attr(item, col)
                key = _memo_key(value)
                if key is None:
                    cells.append(shown(col, value))
                    continue
                # Labels of related rows and codes repeat row after row: formatted once (per export, a
                # bounded number of entries per column, so memory stays flat).
                seen = memo[col]
                if key not in seen:
                    if len(seen) >= MEMO_SIZE:
                        seen.clear()
                    seen[key] = shown(col, value)
                cells.append(seen[key])
            return cells

        return row

    def export_href(self, fmt: str = "csv") -> str:
        """The export link of this list as the request shows it: the export's own URL and the request's
        filters as one query string (paging and order dropped: an export is whole, in id order)."""
        endpoint = f"{type(self).__name__}.{'export_xlsx' if fmt == 'xlsx' else 'export'}"
        args = [(k, v) for k, v in request.args.items(multi=True)
                if k not in NOT_FILTERS and not k.startswith(PAGING)]
        return url_for(endpoint) + (f"?{urlencode(args)}" if args else "")

    @expose("/export/")
    @has_access
    @permission_name("export")
    def export(self):
        return self._export("csv")

    @expose("/export/xlsx/")
    @has_access
    @permission_name("export")
    def export_xlsx(self):
        return self._export("xlsx")

    def _export(self, fmt: str):
        plan = self.export_plan()
        threshold = exports.stream_max_rows()
        if exports.count(plan.query, threshold + 1) > threshold:
            return self._export_as_job(fmt, plan)
        count = exports.count(plan.query, plan.max_rows or None)
        summary, details = exports.audit_details(type(self).__name__, fmt, count, plan.full_phones,
                                                 request_filters(), plan.columns)
        audit.record(db.session, "export", target_type=self.class_permission_name, summary=summary,
                     after=details)
        db.session.commit()
        filename = f"{self.class_permission_name.lower()}.{fmt}"
        headers = {"Content-Disposition": f"attachment; filename={filename}"}
        if fmt == "xlsx":
            body = exports.xlsx_bytes(plan)
            db.session.close()
            return Response(body, mimetype=exports.MIMETYPES["xlsx"], headers=headers)
        body = _session_closed_after(exports.stream_csv(plan), plan.query.session)
        return Response(stream_with_context(body), mimetype=exports.MIMETYPES["csv"], headers=headers)

    def _export_as_job(self, fmt: str, plan: exports.ExportPlan):
        """A big export runs as a job for this user (one at a time): the job page shows its progress
        and, once done, the download link; the inbox says when."""
        user = g.user
        params = json.loads(json.dumps({
            "view": type(self).__name__, "format": fmt, "user_id": user.id,
            "args": [[k, v] for k, v in request.args.items(multi=True) if k not in NOT_FILTERS],
            "locale": str(get_locale() or ""), "ip": request.remote_addr, "columns": plan.columns}))
        total = exports.count(plan.query, plan.max_rows or None)
        run = runner.start(db.session, EXPORT, target_type="export", target_id=user.id, started_by=user.id,
                           params=params, total=total)
        same = json.loads(run.params or "{}") == params
        db.session.commit()
        if same:
            flash(_("This export has %(n)s rows: it runs as a job. The download link appears here when it "
                    "is done, and your inbox tells you.", n=total), "info")
        else:
            flash(_("You have an export running already: wait for it to finish, or cancel it."), "warning")
        return redirect(url_for("JobsView.show", pk=run.id))


class ExportDownloadView(BaseView):
    """The file of a finished export job: for the user who asked for it, or an administrator."""

    route_base = "/exports"
    class_permission_name = policy.JOB_RUN
    method_permission_name = {"download": "read"}
    base_permissions = [policy.READ]

    @expose("/download/<int:pk>")
    @has_access
    def download(self, pk):
        run = db.session.get(JobRun, pk) if 0 < pk < 2**31 else None
        mine = run is not None and run.started_by_fk == getattr(g.user, "id", None)
        if run is None or run.kind != EXPORT or not (mine or current_viewer().can(policy.VIEW_ALL,
                                                                                  policy.JOB_RUN)):
            abort(404)
        if run.status != COMPLETED:
            abort(409, description=_("This export has not finished"))
        params = json.loads(run.params or "{}")
        fmt = exports.check_format(params.get("format"))
        path = exports.file_path(run.id, fmt)
        if not os.path.exists(path):
            abort(410, description=_("The file of this export was removed after %(days)s days: export again",
                                     days=exports.retention_days()))
        audit.record(db.session, "export_download", target_type=policy.JOB_RUN, target_id=run.id,
                     summary=f"{fmt} file of export job #{run.id} ({params.get('view')})")
        db.session.commit()
        name = f"{str(params.get('view', 'export')).removesuffix('View').lower()}-{run.id}.{fmt}"
        return send_file(path, mimetype=exports.MIMETYPES[fmt], as_attachment=True, download_name=name)
