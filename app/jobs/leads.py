"""Lead intake jobs: the file import (a job run of kind "lead_import", see app.services.runner) and asking
the dispatch engine to run.

Uploaded files wait in the upload directory (app.services.lead_import.upload_dir) until their import has
finished; the web process and the workers must share that directory.
"""

from __future__ import annotations

import logging
import os

from flask import current_app

from app.extensions import db
from app.models.employee import CrmUser
from app.models.jobs import LEAD_IMPORT
from app.models.sales import LeadImport
from app.services import audit, lead_import, runner
from app.services.errors import DomainError

log = logging.getLogger(__name__)


def request_dispatch() -> None:
    """Ask for a dispatch run on the "high" queue (one queued run however many leads arrive).

    The lead is committed already: if Redis or the database refuses, the scheduler's periodic sweep
    dispatches it.
    """
    from app.jobs.dispatch import enqueue_dispatch

    try:
        enqueue_dispatch("high")
    except Exception:  # intake must not fail because the queue is unreachable
        db.session.rollback()
        log.warning("could not start a dispatch run; the periodic sweep will pick the lead up",
                    exc_info=True)


@runner.handler(LEAD_IMPORT)
def import_leads(ctx: runner.RunContext) -> str:
    """Import the upload recorded as LeadImport `ctx.target_id`, chunk by chunk, from where the rows
    already counted stop; each chunk commits with the run's checkpoint."""
    record = db.session.get(LeadImport, ctx.target_id)
    if record is None:
        raise DomainError("Import #%(id)s no longer exists", id=ctx.target_id)
    path = lead_import.stored_path(record)
    if not os.path.exists(path):
        if record.total_rows and lead_import.processed(record) >= record.total_rows:
            return _summary(record)  # finished by an earlier execution that died before its end
        raise DomainError("The uploaded file is no longer stored: upload it again")
    with open(path, "rb") as fh:
        data = fh.read()
    user = db.session.get(CrmUser, record.created_by_id) if record.created_by_id else None
    actor = user.username if user is not None else "import"
    with audit.acting_as(record.created_by_id, actor):
        for line in lead_import.import_chunks(db.session, record, data, actor=actor,
                                              region=current_app.config["CRM_DEFAULT_REGION"]):
            ctx.checkpoint(db.session, done=record.created_rows + record.duplicate_rows,
                           failed=record.error_rows, total=record.total_rows,
                           position={"line": line, "rows": lead_import.processed(record)})
            db.session.commit()
            if ctx.cancelled(db.session):
                return f"Cancelled after line {line}: " + _summary(record)
    ctx.checkpoint(db.session, done=record.created_rows + record.duplicate_rows, failed=record.error_rows,
                   total=record.total_rows)
    db.session.commit()
    os.remove(path)  # imported: the personal data in the file is not kept twice
    if record.created_rows:
        request_dispatch()
    return _summary(record)


def _summary(record: LeadImport) -> str:
    return (f"{record.total_rows} rows: {record.created_rows} created, {record.duplicate_rows} duplicates, "
            f"{record.error_rows} errors")
