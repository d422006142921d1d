"""RQ entry points of lead intake: the file import, and asking the dispatch engine to run.

Uploaded files wait in the upload directory (CRM_UPLOAD_DIR, by default <instance>/uploads/leads) as
"<import id><.csv|.xlsx>" until their import job has finished; the web process and the workers must
share that directory. The LeadImport row is the record of the import (counts, per-line errors).
"""

from __future__ import annotations

import logging
import os

from flask import current_app
from rq import get_current_job

from app.extensions import db, rq
from app.jobs.dispatch import enqueue_dispatch
from app.models.employee import CrmUser
from app.models.sales import LeadImport
from app.services import audit
from app.services.leads import import_file

log = logging.getLogger(__name__)

IMPORT_QUEUE = "default"
IMPORT_TIMEOUT = 3600  # seconds; a 50,000-row file takes minutes, not hours
IMPORT_RESULT_TTL = 7 * 24 * 3600


def upload_dir() -> str:
    path = current_app.config.get("CRM_UPLOAD_DIR") or os.path.join(current_app.instance_path, "uploads",
                                                                    "leads")
    os.makedirs(path, exist_ok=True)
    return path


def stored_path(record: LeadImport) -> str:
    """Where the upload of `record` waits for its job."""
    ext = ".xlsx" if record.filename.lower().endswith(".xlsx") else ".csv"
    return os.path.join(upload_dir(), f"{record.id}{ext}")


def import_job_id(import_id: int) -> str:
    return f"lead-import-{import_id}"


def request_dispatch() -> None:
    """Ask for a dispatch run on the "high" queue (one queued job however many leads arrive).

    The lead is committed already: if Redis is down, the scheduler's periodic sweep dispatches it.
    """
    try:
        enqueue_dispatch(rq.queue("high"))
    except Exception:  # intake must not fail because the queue is unreachable
        log.warning("could not enqueue the dispatch job; the periodic sweep will pick the lead up",
                    exc_info=True)


def enqueue_import(import_id: int):
    """Queue the import of a recorded upload (one job per import; a second request while it is
    queued or running is a no-op)."""
    queue = rq.queue(IMPORT_QUEUE)
    job_id = import_job_id(import_id)
    job = queue.fetch_job(job_id)
    if job is not None and job.get_status(refresh=True) in ("queued", "started", "deferred", "scheduled"):
        return job
    return queue.enqueue(import_leads_job, import_id, job_id=job_id, job_timeout=IMPORT_TIMEOUT,
                         result_ttl=IMPORT_RESULT_TTL, failure_ttl=IMPORT_RESULT_TTL)


def _report(record: LeadImport) -> None:
    job = get_current_job()
    if job is not None:
        job.meta.update({"total": record.total_rows, "created": record.created_rows,
                         "duplicate": record.duplicate_rows, "errors": record.error_rows})
        job.save_meta()


def import_leads_job(import_id: int) -> dict:
    """Import the upload recorded as LeadImport `import_id`; safe to run again (rows are idempotent)."""
    record = db.session.get(LeadImport, import_id)
    if record is None:
        return {"import_id": import_id, "missing": True}
    path = stored_path(record)
    with open(path, "rb") as fh:
        data = fh.read()
    user = db.session.get(CrmUser, record.created_by_id) if record.created_by_id else None
    actor = user.username if user is not None else "import"
    with audit.acting_as(record.created_by_id, actor):
        record = import_file(db.session, record.filename, data, actor=actor, actor_id=record.created_by_id,
                             region=current_app.config["CRM_DEFAULT_REGION"], progress=_report,
                             record=record)
    result = {"import_id": import_id, "total": record.total_rows, "created": record.created_rows,
              "duplicate": record.duplicate_rows, "errors": record.error_rows}
    os.remove(path)  # imported: the personal data in the file is not kept twice
    if record.created_rows:
        request_dispatch()
    return result
