"""Lead file imports (/leadimportview/…): upload a .csv or .xlsx, follow its job run's progress, read
the rejected lines. The rules (what is accepted, how rows become leads) are app.services.lead_import."""

from __future__ import annotations

import csv
import io
import json

from flask import Response, abort, flash, g, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from app.extensions import db
from app.models.employee import CrmUser
from app.models.jobs import CANCELLED, COMPLETED, FAILED, LEAD_IMPORT, QUEUED, RUNNING
from app.models.sales import LeadImport
from app.security import policy
from app.services import lead_import, metadata, runner
from app.services.lead_import import HEADERS, MAX_IMPORT_ROWS, MAX_UPLOAD_BYTES
from app.services.leads import INTENTION, PRODUCT_LINE, SOURCE
from app.views import uow
from app.views.base import CrmModelView
from app.views.leads import LEAD_LABELS, NOT_OFFERED

MAX_ERRORS_SHOWN = 500
# The columns of the import template, in order: (field, Chinese header, English header).
TEMPLATE_COLUMNS = [
    ("name", "姓名", "name"), ("phone", "手机号", "phone"), ("source", "线索来源", "source"),
    ("campaign", "活动", "campaign"), ("product_line", "产品线", "product_line"),
    ("region", "地区", "region"),
    ("intention_level", "意向等级", "intention_level"), ("consult_note", "咨询内容", "consult_note"),
]

# --- imports ---------------------------------------------------------------------------------------
#: The import's status, from its latest job run.
_RUN_STATUS = {QUEUED: "queued", RUNNING: "running", COMPLETED: "finished", FAILED: "failed",
               CANCELLED: "cancelled"}


def import_run(record: LeadImport):
    return runner.latest_run(db.session, LEAD_IMPORT, lead_import.TARGET, record.id)


def import_progress(record: LeadImport, run=None) -> dict:
    """Status and progress of an import, from its row and its latest job run."""
    run = run or import_run(record)
    done = lead_import.processed(record)
    total = record.total_rows
    if run is not None:
        status = _RUN_STATUS.get(run.status, run.status)
    else:
        status = "finished" if total and done >= total else "interrupted"
    message = run.last_error if run is not None and status != "finished" else None
    percent = 100 if not total else int(100 * done / total)
    return {"id": record.id, "status": status, "done": done, "total": total, "percent": percent,
            "created": record.created_rows, "duplicate": record.duplicate_rows, "errors": record.error_rows,
            "message": message}


STATUS_LABELS = {"queued": _l("Queued"), "running": _l("Running"), "finished": _l("Finished"),
                 "failed": _l("Failed"), "interrupted": _l("Interrupted"), "cancelled": _l("Cancelled")}
STATUS_CLASSES = {"queued": "default", "running": "info", "finished": "success", "failed": "danger",
                  "interrupted": "warning", "cancelled": "warning"}


def _status_badge(pk):
    record = db.session.get(LeadImport, pk)
    if record is None:
        return ""
    p = import_progress(record)
    return Markup('<span class="label label-{}">{}</span> {}%').format(
        STATUS_CLASSES[p["status"]], STATUS_LABELS[p["status"]], p["percent"])


def _line_errors(record: LeadImport) -> list[dict]:
    return json.loads(record.errors) if record.errors else []


class LeadImportView(CrmModelView):
    """Lead files: upload (.csv / .xlsx), import as an RQ job, progress, per-line errors."""

    datamodel = SQLAInterface(LeadImport)
    class_permission_name = policy.LEAD_IMPORT
    list_title = _l("Lead Imports")
    show_title, add_title, edit_title = _l("Lead Import"), _l("Import Leads"), _l("Edit Lead Import")
    list_columns = ["created_at", "filename", "total_rows", "created_rows", "duplicate_rows", "error_rows",
                    "id"]
    search_columns = ["filename", "created_at"]
    order_columns = ["created_at", "filename", "total_rows"]
    base_order = ("id", "desc")
    label_columns = LEAD_LABELS
    formatters_columns = {"id": _status_badge}
    exclude_route_methods = {"edit", "delete"}  # the record of an import is kept as it is
    method_permission_name = {
        **policy.METHOD_PERMISSIONS, "edit": NOT_OFFERED, "delete": NOT_OFFERED,
        "upload": "write", "rerun": "write", "template_csv": "read", "progress": "read",
        "errors_csv": "read",
    }

    def _record(self, pk) -> LeadImport:
        record = self._scoped_get(pk)
        if record is None:
            abort(404)
        return record

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        return redirect(url_for(".upload"))

    @expose("/upload/", methods=["GET", "POST"])
    @has_access
    def upload(self):
        error = None
        if request.method == "POST":
            upload = request.files.get("file")
            data = upload.read(MAX_UPLOAD_BYTES + 1) if upload is not None else None
            user = getattr(g, "user", None)
            outcome = uow.run(lead_import.accept, db.session, getattr(upload, "filename", None), data,
                              getattr(user, "id", None))
            if outcome.ok:
                accepted = outcome.result
                record = accepted.record
                if accepted.imported_before is not None:
                    flash(str(_l("This file was imported before (import #%(id)d): its rows count as "
                                 "duplicates and create nothing new.", id=accepted.imported_before)), "info")
                flash(str(_l("%(name)s: %(n)d rows queued for import", name=record.filename,
                             n=record.total_rows)), "success")
                return redirect(url_for(".show", pk=record.id))
            error = outcome.error.message
        return self.render_template("crm/lead_import_upload.html", error=error, columns=TEMPLATE_COLUMNS,
                                    headers=sorted(HEADERS), max_rows=MAX_IMPORT_ROWS,
                                    vocab=self._vocabulary(), title=_l("Import leads"))

    @staticmethod
    def _vocabulary() -> dict:
        return {code: metadata.dict_items(db.session, code) for code in (SOURCE, PRODUCT_LINE, INTENTION)}

    @expose("/template.csv")
    @has_access
    def template_csv(self):
        """The import template: the header row (Chinese, or English with ?lang=en)."""
        english = request.args.get("lang", "").lower().startswith("en")
        buffer = io.StringIO()
        buffer.write("\ufeff")  # Excel opens UTF-8 CSV correctly with a BOM
        csv.writer(buffer).writerow([en if english else zh for _, zh, en in TEMPLATE_COLUMNS])
        name = "lead-import-template-en.csv" if english else "lead-import-template.csv"
        return Response(buffer.getvalue(), mimetype="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename={name}"})

    @expose("/show/<pk>")
    @has_access
    def show(self, pk):
        record = self._record(pk)
        errors = _line_errors(record)
        creator = db.session.get(CrmUser, record.created_by_id) if record.created_by_id else None
        run = import_run(record)
        return self.render_template("crm/lead_import.html", record=record, run=run,
                                    progress=import_progress(record, run),
                                    errors=errors[:MAX_ERRORS_SHOWN], error_count=len(errors),
                                    creator=creator, status_labels=STATUS_LABELS,
                                    status_classes=STATUS_CLASSES, labels={**LEAD_LABELS, "row": _l("Row")},
                                    title=_l("Lead import"))

    @expose("/progress/<pk>")
    @has_access
    def progress(self, pk):
        return import_progress(self._record(pk))

    @expose("/errors/<pk>.csv")
    @has_access
    def errors_csv(self, pk):
        """Every rejected line with its field messages."""
        record = self._record(pk)
        buffer = io.StringIO()
        buffer.write("\ufeff")
        writer = csv.writer(buffer)
        writer.writerow(["line", "field", "message"])
        for entry in _line_errors(record):
            for field, message in entry["errors"].items():
                writer.writerow([entry["line"], field, message])
        name = f"lead-import-{record.id}-errors.csv"
        return Response(buffer.getvalue(), mimetype="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename={name}"})

    @expose("/rerun/<pk>", methods=["POST"])
    @has_access
    def rerun(self, pk):
        """Run an interrupted, failed or cancelled import again from where it stopped (rows already
        imported are not imported twice)."""
        record = self._record(pk)
        state = import_progress(record)["status"]
        back = url_for(".show", pk=record.id)
        if state in ("queued", "running", "finished"):
            flash(str(_l("This import is %(state)s", state=STATUS_LABELS[state])), "info")
            return redirect(back)
        return uow.flash_result(lambda: lead_import.rerun(db.session, record), back=back,
                                success=lambda run: _l("Import queued again"))
