"""RQ entry points of the dispatch engine. Thin: they call app.services.dispatch and report progress."""

from __future__ import annotations

from rq import get_current_job

from app.extensions import db
from app.services import audit
from app.services.dispatch import BATCH_SIZE, dispatch_waiting

DISPATCH_JOB_ID = "dispatch-waiting"


def _report(result) -> None:
    job = get_current_job()
    if job is not None:
        job.meta.update({"taken": result.taken, "assigned": result.assigned, "pooled": result.pooled,
                         "held": result.held})
        job.save_meta()


def dispatch_waiting_job(max_batches: int | None = None, batch_size: int = BATCH_SIZE) -> dict:
    """Dispatch what is waiting, batch by batch; safe to run in several workers at once."""
    with audit.acting_as(None, "dispatch"):
        result = dispatch_waiting(db.session, max_batches=max_batches, limit=batch_size, progress=_report)
    return {"taken": result.taken, "assigned": result.assigned, "pooled": result.pooled, "held": result.held}


def current_run(connection):
    """The dispatch job running or queued now, else the last one finished (None if none is known)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    found = []
    for job_id in (DISPATCH_JOB_ID + "-next", DISPATCH_JOB_ID):
        try:
            found.append(Job.fetch(job_id, connection=connection))
        except NoSuchJobError:
            continue
    active = [j for j in found if j.get_status() in ("queued", "started", "deferred", "scheduled")]
    return (active or found or [None])[0]


def enqueue_dispatch(queue) -> None:
    """Ask for a dispatch run; a burst of new leads makes one queued job, not one per lead.

    While a run is going, one follow-up run is queued behind it, so a lead that arrives after the
    running job took its last batch is not left for the scheduler's next minute.
    """
    for job_id in (DISPATCH_JOB_ID, DISPATCH_JOB_ID + "-next"):
        job = queue.fetch_job(job_id)
        status = job.get_status(refresh=True) if job is not None else None
        if status in ("queued", "deferred", "scheduled"):
            return
        if status != "started":
            queue.enqueue(dispatch_waiting_job, job_id=job_id, result_ttl=600)
            return


def circulation_scan_job() -> dict:
    """Apply the circulation rules (scheduled); re-dispatch what was recycled."""
    from app.extensions import rq
    from app.services.circulation import scan

    with audit.acting_as(None, "circulation"):
        result = scan(db.session)
    if result.recycled:
        enqueue_dispatch(rq.queue("default"))
    _notify_reminders(result.reminders)
    return {"recycled": result.recycled, "reminded": result.reminded,
            "by_rule": {str(k): v for k, v in result.by_rule.items()}}


def _notify_reminders(reminders: list[dict]) -> None:
    """Hook for owner notifications (SMS/notification centre arrive with the SMS platform issue)."""
    job = get_current_job()
    if job is not None and reminders:
        job.meta["reminders"] = len(reminders)
        job.save_meta()
