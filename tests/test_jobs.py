"""Jobs run through a real RQ queue on the private Redis and a real worker (SimpleWorker, burst)."""

from __future__ import annotations

import datetime as dt

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, insert, select

from app.clock import utcnow
from app.jobs.maintenance import purge_audit_log
from app.jobs.worker import app_worker_class
from app.models.audit import AuditLog


def _work(app, queue: Queue) -> None:
    worker_class = app_worker_class(app, SimpleWorker)
    assert worker_class([queue], connection=queue.connection).work(burst=True)


@pytest.mark.config(CRM_AUDIT_RETENTION_DAYS=30)
def test_purge_audit_log_job_deletes_only_expired_rows_and_is_safe_to_rerun(app, session):
    old = utcnow() - dt.timedelta(days=31)
    session.execute(insert(AuditLog), [{"created_at": old, "action": "export", "summary": f"old {i}"}
                                       for i in range(1234)])
    session.commit()
    recent = session.scalar(select(func.count(AuditLog.id)).where(AuditLog.created_at > old))
    assert recent > 0  # the seed's own rows

    queue = Queue("low", connection=Redis.from_url(app.config["REDIS_URL"]))
    first = queue.enqueue(purge_audit_log, chunk_size=500)
    _work(app, queue)
    assert first.get_status() == "finished" and first.return_value() == 1234
    session.expire_all()
    assert session.scalar(select(func.count(AuditLog.id)).where(AuditLog.created_at <= old)) == 0
    assert session.scalar(select(func.count(AuditLog.id))) == recent

    again = queue.enqueue(purge_audit_log)
    _work(app, queue)
    assert again.return_value() == 0


def test_scheduler_registers_the_purge_job(app):
    from rq.cron import CronScheduler

    from app.jobs.schedule import register

    scheduler = CronScheduler(connection=Redis.from_url(app.config["REDIS_URL"]))
    register(scheduler)
    jobs = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert jobs["purge_audit_log"].queue_name == "low"
    assert jobs["sweep_callbacks_job"].queue_name == "low"


def test_scheduler_runs_the_watchdog_every_minute_and_starts_dispatch_and_circulation_as_job_runs(app):
    from rq.cron import CronScheduler

    from app.jobs.schedule import register

    scheduler = CronScheduler(connection=Redis.from_url(app.config["REDIS_URL"]))
    register(scheduler)
    jobs = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert (jobs["watchdog_job"].queue_name, jobs["watchdog_job"].interval) == ("high", 60)
    assert {"start_dispatch_job", "start_circulation_scan_job"} <= set(jobs)
    assert not {"dispatch_waiting_job", "circulation_scan_job"} & set(jobs)  # not outside the runner


def test_the_circulation_scan_and_dispatch_run_as_job_runs(app, session):
    from app.jobs.dispatch import enqueue_dispatch, start_circulation_scan_job
    from app.models.jobs import CIRCULATION_SCAN, COMPLETED, DISPATCH
    from app.services import runner

    with app.app_context():
        run_id = start_circulation_scan_job()
        assert start_circulation_scan_job() == run_id  # one scan at a time
    queue = Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))
    _work(app, queue)
    session.expire_all()
    scan = runner.latest_run(session, CIRCULATION_SCAN)
    assert scan.id == run_id and scan.status == COMPLETED and scan.summary.startswith("recycled ")
    with app.app_context():
        run = enqueue_dispatch("default")
        assert enqueue_dispatch("default").id == run.id  # a burst of requests: one queued run
    _work(app, queue)
    session.expire_all()
    dispatch = runner.latest_run(session, DISPATCH)
    assert dispatch.id == run.id and dispatch.status == COMPLETED and dispatch.summary.startswith("taken ")
