"""The RQ entry points of the job runner: `execute` runs one JobRun (app.services.runner), and
`watchdog_job` (every minute, app.jobs.schedule) re-enqueues runs whose worker died."""

from __future__ import annotations

import importlib
import logging

from rq import get_current_job

from app.clock import utcnow
from app.extensions import db
from app.services import runner

log = logging.getLogger(__name__)

#: Modules whose @runner.handler registrations the worker needs (imported on first use).
HANDLER_MODULES = ("app.jobs.leads", "app.jobs.dispatch", "app.jobs.sms", "app.jobs.exports",
                   "app.jobs.marketing", "app.jobs.learning", "app.jobs.tags", "app.jobs.scoring")


def load_handlers() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)


def execute(run_id: int) -> str | None:
    """Execute job run `run_id` (enqueued by runner.start, by a retry, or by the watchdog)."""
    load_handlers()
    job = get_current_job()
    return runner.execute(db.session, run_id, job.id if job is not None else None)


def watchdog_job() -> list[str]:
    """Re-enqueue or fail the runs whose worker died (see runner.watchdog)."""
    actions = runner.watchdog(db.session, utcnow())
    db.session.commit()
    return actions
