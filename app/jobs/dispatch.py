"""Job runs of the dispatch engine and the circulation scan (app.services.runner handlers), and the ways
to ask for them. Thin: they call app.services.dispatch / app.services.circulation.

`dispatch_waiting_job` and `circulation_scan_job` are the same work as plain RQ functions, outside the
runner, for benches and tests that enqueue them directly.
"""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import select

from app.extensions import db
from app.models.jobs import CIRCULATION_SCAN, COMPLETED, DISPATCH, QUEUED, RUNNING, JobRun
from app.services import audit, runner
from app.services.dispatch import BATCH_SIZE, dispatch_waiting

DISPATCH_JOB_ID = "dispatch-waiting"
#: What the dispatch console's "Last run" line calls the run's status (RQ's words, as it always did).
_CONSOLE_STATUS = {QUEUED: "queued", RUNNING: "started", COMPLETED: "finished", "failed": "failed",
                   "cancelled": "canceled"}


def _counts(result) -> dict:
    return {"taken": result.taken, "assigned": result.assigned, "pooled": result.pooled, "held": result.held}


# --- dispatch ---------------------------------------------------------------------------------------
@runner.handler(DISPATCH)
def dispatch_run(ctx: runner.RunContext) -> dict:
    """Dispatch what is waiting, batch by batch (each batch commits); safe in several workers at once."""
    params = ctx.params

    def progress(result) -> None:
        ctx.checkpoint(db.session, done=result.taken, position=_counts(result))
        db.session.commit()

    with audit.acting_as(None, "dispatch"):
        result = dispatch_waiting(db.session, max_batches=params.get("max_batches"),
                                  limit=params.get("batch_size", BATCH_SIZE), progress=progress)
    return _counts(result)


def dispatch_waiting_job(max_batches: int | None = None, batch_size: int = BATCH_SIZE) -> dict:
    """The dispatch work as a plain RQ function (benches, concurrency tests)."""
    with audit.acting_as(None, "dispatch"):
        result = dispatch_waiting(db.session, max_batches=max_batches, limit=batch_size)
    return _counts(result)


def enqueue_dispatch(queue="high") -> JobRun:
    """Ask for a dispatch run (`queue`: an RQ queue or its name); commits the session.

    A burst of new leads makes one queued run, not one per lead. While a run is going, one follow-up run
    is queued behind it, so a lead that arrives after the running one took its last batch is not left
    for the scheduler's next minute. The first run's RQ job is DISPATCH_JOB_ID (the follow-up's
    DISPATCH_JOB_ID + "-next") unless a job of that id is still active.
    """
    from rq.job import Job

    from app.extensions import rq

    name = getattr(queue, "name", queue)
    session = db.session
    queued = session.scalar(select(JobRun).where(JobRun.kind == DISPATCH, JobRun.status == QUEUED).limit(1))
    if queued is not None:
        return queued
    running = session.scalar(select(JobRun.id).where(JobRun.kind == DISPATCH, JobRun.status == RUNNING)
                             .limit(1))
    job_id = DISPATCH_JOB_ID + ("-next" if running else "")
    try:
        job = Job.fetch(job_id, connection=rq.redis)
        if job.get_status(refresh=False) in ("queued", "started", "deferred", "scheduled"):
            job_id = None
    except Exception:  # no such job (the usual case)
        pass
    run = runner.start(session, DISPATCH, queue=name, reuse_running=False, rq_job_id=job_id)
    session.commit()
    return run


def current_run(connection=None):
    """The dispatch run queued or running now, else the last one (None if none), shaped as the dispatch
    console reads it: `get_status().value` and `meta` with taken / assigned / pooled / held."""
    import json

    session = db.session
    run = session.scalar(select(JobRun).where(JobRun.kind == DISPATCH, JobRun.status.in_((QUEUED, RUNNING)))
                         .order_by(JobRun.id).limit(1)) or runner.latest_run(session, DISPATCH)
    if run is None:
        return None
    status = SimpleNamespace(value=_CONSOLE_STATUS.get(run.status, run.status))
    meta = json.loads(run.position) if run.position else {}
    return SimpleNamespace(id=run.id, run=run, meta=meta, get_status=lambda refresh=True: status)


# --- circulation ------------------------------------------------------------------------------------
def _scan() -> dict:
    from app.services.circulation import scan

    with audit.acting_as(None, "circulation"):
        result = scan(db.session)
    if result.recycled:
        enqueue_dispatch("default")
    return {"recycled": result.recycled, "reminded": result.reminded,
            "by_rule": {str(k): v for k, v in result.by_rule.items()}}


@runner.handler(CIRCULATION_SCAN)
def circulation_scan_run(ctx: runner.RunContext) -> dict:
    """Apply the circulation rules (each chunk commits; a second scan finds what is left); re-dispatch
    what was recycled."""
    result = _scan()
    ctx.checkpoint(db.session, done=result["recycled"], position=result)
    db.session.commit()
    return result


def circulation_scan_job() -> dict:
    """The circulation scan as a plain RQ function (tests)."""
    return _scan()


# --- scheduled --------------------------------------------------------------------------------------
def start_dispatch_job() -> int:
    """Scheduled sweep: new leads start a dispatch run themselves; this catches held and recycled ones."""
    return enqueue_dispatch("default").id


def start_circulation_scan_job() -> int:
    """Scheduled: start a circulation scan run (none while one is queued or running)."""
    run = runner.start(db.session, CIRCULATION_SCAN, queue="default")
    db.session.commit()
    return run.id
