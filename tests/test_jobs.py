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
