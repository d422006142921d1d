"""Streaming CSV export of exactly what the user may list: the list's filters and data scope, phones
masked unless the role sees full numbers, times as people read them, audited, capped at
CRM_EXPORT_MAX_ROWS; memory stays flat however many rows."""

from __future__ import annotations

import csv
import io

from flask import Response, current_app, stream_with_context
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.urltools import get_filter_args
from flask_appbuilder.views import expose

from app.extensions import db
from app.security.masking import can_view_full_phone, mask_phone
from app.security.scope import current_viewer
from app.services import audit
from app.views import times


def _session_closed_after(stream, session):
    """A streamed body reads its rows after the request's teardown closed `session`, which reopens a
    transaction: close it again when the stream ends, or PostgreSQL keeps that connection "idle in
    transaction" (holding a snapshot and locks) for good."""
    try:
        yield from stream
    finally:
        session.close()


class CsvExportMixin:
    """`/<view>/export/` for a CrmModelView (export_columns, else list_columns)."""

    # --- export: streaming CSV of exactly what the user may list ---------------------------------
    @expose("/export/")
    @has_access
    @permission_name("export")
    def export(self):
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        joined = self._filters.get_joined_filters(self._base_filters)
        columns = self.export_columns or self.list_columns
        query = self.datamodel.apply_all(db.session.query(self.datamodel.obj), joined)
        count = query.order_by(None).count()
        limit = current_app.config["CRM_EXPORT_MAX_ROWS"]
        full_phone = can_view_full_phone(current_viewer())
        audit.record(db.session, "export", target_type=self.class_permission_name,
                     summary=f"{min(count, limit)} rows; columns {','.join(columns)}; "
                             f"full phones: {full_phone}")
        db.session.commit()
        labels = [str(self.label_columns.get(c, c)) for c in columns]
        phones = set(self.phone_columns)

        def rows():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            buffer.write("\ufeff")  # Excel opens UTF-8 CSV correctly with a BOM
            writer.writerow(labels)
            for n, item in enumerate(query.yield_per(1000)):
                if limit and n >= limit:
                    break
                values = []
                for col in columns:
                    value = getattr(item, col, "")
                    value = value() if callable(value) else value
                    if col in phones and not full_phone:
                        value = mask_phone(value)
                    values.append(str(times.local_dt(value)))  # times as people read them
                writer.writerow(values)
                if buffer.tell() > 64_000:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        filename = f"{self.class_permission_name.lower()}.csv"
        return Response(
            stream_with_context(_session_closed_after(rows(), query.session)),
            mimetype="text/csv; charset=utf-8",
            headers={"Content-Disposition": f"attachment; filename={filename}"},
        )
