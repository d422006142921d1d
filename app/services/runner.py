"""The job runner: every long job runs as a JobRun row plus an RQ job that executes it.

    run = runner.start(session, "lead_import", target_type="lead_import", target_id=7, started_by=user_id)
    session.commit()  # the RQ job is enqueued now, so the worker always finds the row

    @runner.handler("lead_import")
    def import_leads(ctx):  # in app/jobs/leads.py: thin, one service command per chunk
        ...; ctx.checkpoint(db.session, done=n, position={"line": n}); db.session.commit()

`execute` (app.jobs.runner.execute on the worker) marks the run running, beats its heartbeat on a
connection of its own, calls the handler and records how it ended. A DomainError fails the run with its
message; any other error re-queues it while attempts < CRM_JOB_MAX_ATTEMPTS. The `watchdog` (every
minute) re-enqueues runs whose worker died (stale heartbeat, or an RQ job failed, abandoned or gone),
from their saved position, and fails them in plain words once the attempts are spent.

Each enqueue gets a fresh RQ job id, kept on the row: a worker whose run was taken over (re-enqueued
by the watchdog) finds another id there, and its checkpoints and its ending write nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from app.clock import utcnow
from app.models.jobs import ACTIVE, CANCELLED, COMPLETED, FAILED, FINISHED, QUEUED, RUNNING, JobRun
from app.services import inbox
from app.services.errors import DomainError

log = logging.getLogger(__name__)

ENTRY_POINT = "app.jobs.runner.execute"
JOB_TIMEOUT = 24 * 3600  # a run that is alive beats its heartbeat; RQ's timeout is only a backstop
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_STALE_SECONDS = 60

_handlers: dict[str, Callable[[RunContext], str | None]] = {}
_PENDING = "job_runner_enqueue"  # session.info key: RQ jobs to enqueue once the transaction commits


class Superseded(Exception):
    """This execution no longer owns its run (the watchdog re-enqueued it, or it finished meanwhile)."""


def handler(kind: str):
    """Register `fn(ctx) -> summary | None` as the handler of runs of `kind`."""

    def register(fn):
        _handlers[kind] = fn
        return fn

    return register


def max_attempts() -> int:
    return int(current_app.config.get("CRM_JOB_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))


def stale_seconds() -> float:
    return float(current_app.config.get("CRM_JOB_STALE_SECONDS", DEFAULT_STALE_SECONDS))


def heartbeat_seconds() -> float:
    """How often a running run refreshes heartbeat_at: a few times per stale period, at most every 5 s."""
    return max(0.2, min(5.0, stale_seconds() / 4))


# --- context ------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What a handler knows of its run, and how it reports progress."""

    run_id: int
    kind: str
    target_type: str | None
    target_id: int | None
    params: dict
    position: dict | None
    attempt: int
    started_by: int | None = None
    rq_job_id: str | None = None
    _position_text: str | None = field(default=None, repr=False)

    def checkpoint(self, session, *, done: int | None = None, total: int | None = None,
                   failed: int | None = None, position: dict | None = None) -> None:
        """Stage counts / position / heartbeat on the run IN `session`'s transaction: they commit (or
        roll back) together with the chunk of work the handler commits next. Raises Superseded when
        another execution owns the run now (the chunk must then not be committed)."""
        values: dict = {"heartbeat_at": utcnow()}
        if done is not None:
            values["done"] = done
        if total is not None:
            values["total"] = total
        if failed is not None:
            values["failed"] = failed
        if position is not None:
            values["position"] = json.dumps(position, ensure_ascii=False, default=str)
        stmt = update(JobRun).where(JobRun.id == self.run_id)
        if self.rq_job_id is not None:
            stmt = stmt.where(JobRun.rq_job_id == self.rq_job_id)
        result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
        if result.rowcount == 0:
            raise Superseded(f"run {self.run_id} is no longer executed by RQ job {self.rq_job_id}")
        if position is not None:
            self.position = position

    def cancelled(self, session) -> bool:
        """True once someone cancelled the run (handlers check between chunks and return)."""
        return session.scalar(select(JobRun.status).where(JobRun.id == self.run_id)) == CANCELLED


# --- start / enqueue ----------------------------------------------------------------------------------
def _real_session(session):
    registry = getattr(session, "registry", None)  # a scoped_session: the session of this context
    return registry() if callable(registry) else session


def _after_commit(session) -> None:
    pending = session.info.pop(_PENDING, [])
    for queue_name, run_id, job_id in pending:
        try:
            _enqueue_now(queue_name, run_id, job_id)
        except Exception:  # Redis unreachable: the watchdog finds the queued run without a job
            log.warning("run %s: could not enqueue RQ job %s; the watchdog will", run_id, job_id,
                        exc_info=True)


def _after_rollback(session) -> None:
    session.info.pop(_PENDING, None)


def _enqueue_now(queue_name: str, run_id: int, job_id: str) -> None:
    from app.extensions import rq

    rq.queue(queue_name).enqueue(ENTRY_POINT, run_id, job_id=job_id, job_timeout=JOB_TIMEOUT,
                                 result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                                 description=f"job run #{run_id}")


def _enqueue_on_commit(session, run: JobRun, queue_name: str, job_id: str | None = None) -> None:
    """Give `run` a fresh RQ job id and enqueue that job when `session`'s transaction commits."""
    session = _real_session(session)
    run.rq_job_id = job_id or f"run-{run.id}-{secrets.token_hex(4)}"
    if not session.info.get("job_runner_listening"):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)
        session.info["job_runner_listening"] = True
    session.info.setdefault(_PENDING, []).append((queue_name, run.id, run.rq_job_id))


def _is(column, value):
    return column.is_(None) if value is None else column == value


def start(session, kind: str, *, target_type: str | None = None, target_id: int | None = None,
          params: dict | None = None, started_by: int | None = None, queue: str = "default",
          total: int | None = None, reuse_running: bool = True, rq_job_id: str | None = None) -> JobRun:
    """Record a queued run of `kind` and enqueue its execution once the caller commits.

    Idempotent: while a run of the same kind for the same target (target_type, target_id — None for an
    untargeted kind such as the circulation scan) is queued or running, that run is returned instead.
    `reuse_running=False`: only a queued run is reused (a running one may have passed what this start is
    for: dispatch queues one follow-up run behind a running one). `rq_job_id`: the id of the first RQ job
    (a well-known id other code looks up); retries and the watchdog use fresh ones.
    """
    reusable = ACTIVE if reuse_running else (QUEUED,)
    active = select(JobRun).where(JobRun.kind == kind, _is(JobRun.target_type, target_type),
                                  _is(JobRun.target_id, target_id), JobRun.status.in_(reusable))
    existing = session.scalar(active.order_by(JobRun.id).limit(1))
    if existing is not None:
        return existing
    now = utcnow()
    run = JobRun(kind=kind, target_type=target_type, target_id=target_id, started_by_fk=started_by,
                 status=QUEUED, total=total, done=0, failed=0, attempts=0, queue=queue,
                 params=json.dumps(params, ensure_ascii=False, default=str) if params else None,
                 created_at=now, heartbeat_at=now)
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:  # a concurrent start for the same target won (ux_job_run_active_target)
        existing = session.scalar(active.order_by(JobRun.id).limit(1))
        if existing is None:
            raise
        return existing
    _enqueue_on_commit(session, run, queue, rq_job_id)
    session.flush()
    return run


def cancel(session, run_id: int, actor=None) -> JobRun:
    """Cancel a queued or running run (a running handler stops at its next chunk). The caller commits."""
    run = session.get(JobRun, run_id)
    if run is None:
        raise DomainError("No such job run", status=404)
    if run.status in FINISHED:
        raise DomainError("This job has already ended", field="status", status=409)
    run.status, run.finished_at = CANCELLED, utcnow()
    who = getattr(actor, "username", None) or (str(actor) if actor else None)
    run.summary = f"Cancelled by {who}" if who else "Cancelled"
    if run.rq_job_id:
        job_id = run.rq_job_id

        def drop_queued_job(_session):
            try:
                from rq.job import Job

                from app.extensions import rq

                job = Job.fetch(job_id, connection=rq.redis)
                if job.get_status(refresh=False) in ("queued", "deferred", "scheduled"):
                    job.cancel()
            except Exception:  # gone already, or Redis down: execute ignores a cancelled run anyway
                log.info("run %s: queued RQ job %s not cancelled", run_id, job_id, exc_info=True)

        event.listen(_real_session(session), "after_commit", drop_queued_job, once=True)
    session.flush()
    return run


# --- execute ------------------------------------------------------------------------------------------
class _Heartbeat(threading.Thread):
    """Refreshes heartbeat_at on a connection of its own while the handler runs."""

    def __init__(self, engine, run_id: int, job_id: str | None, interval: float):
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.engine, self.run_id, self.job_id, self.interval = engine, run_id, job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        table = JobRun.__table__
        while not self.stopped.wait(self.interval):
            stmt = update(table).where(table.c.id == self.run_id, table.c.status == RUNNING)
            if self.job_id is not None:
                stmt = stmt.where(table.c.rq_job_id == self.job_id)
            try:
                with self.engine.begin() as conn:
                    conn.execute(stmt.values(heartbeat_at=utcnow()))
            except OperationalError:  # SQLite busy with the handler's chunk: the next beat will do
                log.debug("run %s: heartbeat skipped", self.run_id, exc_info=True)
            except Exception:
                log.warning("run %s: heartbeat failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def describe(exc: BaseException) -> str:
    """An unexpected error in words a person understands (the traceback goes to the worker's log)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rq.timeouts import JobTimeoutException

    if isinstance(exc, OperationalError):
        return "The database could not be reached or refused the work"
    if isinstance(exc, RedisConnectionError):
        return "Redis could not be reached"
    if isinstance(exc, JobTimeoutException):
        return "The job ran longer than the queue allows"
    if isinstance(exc, FileNotFoundError):
        return "A file the job needs is missing"
    if isinstance(exc, MemoryError):
        return "The worker ran out of memory"
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"An unexpected error stopped the job ({type(exc).__name__}{': ' + text if text else ''})"


def _owned(stmt, run_id: int, job_id: str | None):
    stmt = stmt.where(JobRun.id == run_id)
    return stmt.where(JobRun.rq_job_id == job_id) if job_id is not None else stmt


def execute(session, run_id: int, rq_job_id: str | None = None):
    """Run the handler of run `run_id` (the body of app.jobs.runner.execute); returns what it returned.

    `rq_job_id`: the RQ job executing it; a run whose row names another job was taken over, and a run
    already completed, failed or cancelled, does nothing.
    """
    run = session.get(JobRun, run_id, populate_existing=True)
    if run is None or run.status in FINISHED:
        log.info("run %s: nothing to do (%s)", run_id, "missing" if run is None else run.status)
        return None
    if rq_job_id is not None and run.rq_job_id not in (None, rq_job_id):
        log.info("run %s: RQ job %s superseded by %s", run_id, rq_job_id, run.rq_job_id)
        return None
    fn = _handlers.get(run.kind)
    now = utcnow()
    if fn is None:
        run.status, run.finished_at = FAILED, now
        run.last_error = f"No handler is registered for jobs of kind {run.kind!r}"
        inbox.job_ended(session, run)
        session.commit()
        return None
    claimed = session.execute(
        _owned(update(JobRun), run_id, rq_job_id).where(JobRun.status.in_(ACTIVE))
        .values(status=RUNNING, attempts=JobRun.attempts + 1, heartbeat_at=now,
                started_at=run.started_at or now).execution_options(synchronize_session=False))
    session.commit()
    if claimed.rowcount == 0:
        return None
    run = session.get(JobRun, run_id, populate_existing=True)
    ctx = RunContext(run_id=run.id, kind=run.kind, target_type=run.target_type, target_id=run.target_id,
                     params=json.loads(run.params) if run.params else {},
                     position=json.loads(run.position) if run.position else None, attempt=run.attempts,
                     started_by=run.started_by_fk, rq_job_id=rq_job_id)
    beat = _Heartbeat(session.get_bind(), run_id, rq_job_id, heartbeat_seconds())
    beat.start()
    try:
        summary = fn(ctx)
    except Superseded:
        session.rollback()
        log.info("run %s: taken over by another execution; stopping", run_id)
        return None
    except DomainError as exc:
        session.rollback()
        _end(session, run_id, rq_job_id, FAILED, last_error=exc.message)
        log.info("run %s failed: %s", run_id, exc.message)
        return None
    except Exception as exc:
        session.rollback()
        log.exception("run %s (%s): attempt %s failed", run_id, ctx.kind, ctx.attempt)
        _retry_or_fail(session, run_id, rq_job_id, describe(exc))
        return None
    finally:
        beat.stop()
    _end(session, run_id, rq_job_id, COMPLETED, summary=_as_text(summary))
    return summary


def _as_text(summary) -> str | None:
    """A handler's summary for the page: text as it is, a dict as "key value, …"."""
    if summary is None or isinstance(summary, str):
        return summary
    if isinstance(summary, dict):
        return ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, dict | list))
    return str(summary)


def _end(session, run_id: int, job_id: str | None, status: str, **values) -> None:
    """Record how a running run ended (unless it was cancelled or taken over meanwhile)."""
    now = utcnow()
    ended = session.execute(_owned(update(JobRun), run_id, job_id).where(JobRun.status == RUNNING)
                            .values(status=status, finished_at=now, heartbeat_at=now, **values)
                            .execution_options(synchronize_session=False))
    if ended.rowcount:  # the starter's inbox hears how it ended, in the same transaction
        inbox.job_ended(session, session.get(JobRun, run_id, populate_existing=True))
    session.commit()


def _retry_or_fail(session, run_id: int, job_id: str | None, reason: str) -> None:
    run = session.get(JobRun, run_id, populate_existing=True)
    if run is None or run.status != RUNNING or (job_id is not None and run.rq_job_id != job_id):
        session.rollback()
        return
    limit = max_attempts()
    if run.attempts < limit:
        run.status, run.last_error, run.heartbeat_at = QUEUED, f"Attempt {run.attempts}: {reason}", utcnow()
        _enqueue_on_commit(session, run, run.queue or "default")
    else:
        run.status, run.finished_at = FAILED, utcnow()
        run.last_error = (f"The job failed {run.attempts} times (at most {limit} attempts); "
                          f"the last time: {reason}")
        inbox.job_ended(session, run)
    session.commit()


# --- watchdog -----------------------------------------------------------------------------------------
def _rq_state(redis, job_id: str | None) -> tuple[str | None, str | None]:
    """(RQ status of the job or "missing", its last error line) — (None, None) when Redis cannot tell."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    if not job_id:
        return "missing", None
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return "missing", None
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    detail = None
    if status == "failed":
        try:
            result = job.latest_result()
            detail = result.exc_string.strip().splitlines()[-1] if result and result.exc_string else None
        except Exception:
            detail = None
    return status, detail


def _dead_reason(run: JobRun, now: dt.datetime, stale: float, redis) -> str | None:
    """Why `run` (queued or running) is dead, or None when it looks alive."""
    last_sign = run.heartbeat_at or run.started_at or run.created_at
    age = (now - last_sign).total_seconds() if last_sign else stale + 1
    if run.status == RUNNING and age > stale:
        return f"the worker stopped sending heartbeats ({int(age)} seconds without one)"
    if redis is None:
        return None
    status, detail = _rq_state(redis, run.rq_job_id)
    if status is None:
        return None
    if status == "failed":
        if detail and "Abandoned" in detail:
            return "the worker running it died (RQ marked the job abandoned)"
        return "RQ moved the job to its failed registry" + (f" ({detail[:200]})" if detail else "")
    if status in ("stopped", "canceled") and run.status in ACTIVE:
        return f"RQ reports the job {status}"
    if age <= stale:  # just enqueued or just beat: give the enqueue and the worker time
        return None
    if status == "missing":
        return "its RQ job no longer exists"
    if status == "finished":
        return "its RQ job finished without recording the end of the run"
    if status == "started" and run.status == QUEUED:
        return "the worker that picked it up stopped before it began"
    return None


def watchdog(session, now: dt.datetime | None = None) -> list[str]:
    """Find dead runs; re-enqueue them from their saved position, or fail them once their attempts are
    spent. Returns (and logs) what it did. The caller commits; the RQ jobs are enqueued on commit."""
    from app.extensions import rq

    now = now or utcnow()
    stale, limit = stale_seconds(), max_attempts()
    try:
        redis = rq.redis
        redis.ping()
    except Exception:
        log.warning("watchdog: Redis unreachable; judging by heartbeats only", exc_info=True)
        redis = None
    actions = []
    runs = session.scalars(select(JobRun).where(JobRun.status.in_(ACTIVE)).order_by(JobRun.id)
                           .with_for_update(skip_locked=True)).all()
    for run in runs:
        reason = _dead_reason(run, now, stale, redis)
        if reason is None:
            continue
        if run.status == QUEUED and reason.startswith("the worker that picked"):
            run.attempts += 1  # it died before execute could count the attempt
        if run.attempts >= limit:
            run.status, run.finished_at = FAILED, now
            run.last_error = (f"The worker stopped {run.attempts} times while running this job; it is not "
                              f"retried again (at most {limit} attempts). The last time {reason}.")
            message = f"run {run.id} ({run.kind}): failed after {run.attempts} attempts: {reason}"
            inbox.job_ended(session, run)
        else:
            run.status, run.heartbeat_at = QUEUED, now
            run.last_error = f"Attempt {run.attempts}: {reason}; re-enqueued by the watchdog."
            _enqueue_on_commit(session, run, run.queue or "default")
            message = f"run {run.id} ({run.kind}): re-enqueued after attempt {run.attempts}: {reason}"
        log.warning("watchdog: %s", message)
        actions.append(message)
    session.flush()
    return actions


def progress(run: JobRun) -> dict:
    """A run's state for the Jobs page and JSON polling."""
    return {"id": run.id, "kind": run.kind, "status": run.status, "done": run.done, "failed": run.failed,
            "total": run.total, "percent": run.percent, "attempts": run.attempts,
            "last_error": run.last_error, "summary": run.summary}


def latest_run(session, kind: str, target_type: str | None = None, target_id: int | None = None):
    """The newest run of `kind` for a target (any status), or None."""
    stmt = select(JobRun).where(JobRun.kind == kind)
    if target_type is not None:
        stmt = stmt.where(JobRun.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(JobRun.target_id == target_id)
    return session.scalar(stmt.order_by(JobRun.id.desc()).limit(1))
