"""RQ entry points of QA sampling. Thin: they call app.services.qa.sampling, which commits per agent, so a
killed run loses nothing and the next run completes it."""

from __future__ import annotations

from app.clock import utcnow
from app.extensions import db
from app.services import audit
from app.services.qa import sampling


def _summary(result: sampling.SampleResult) -> dict:
    return {"plan": result.plan_id, "period": result.period, "created": result.created,
            "agents": result.agents, "skipped": result.skipped,
            "by_inspector": {str(k): v for k, v in result.by_inspector.items()}}


def sample_plan_job(plan_id: int, which: str = sampling.PREVIOUS) -> dict:
    """Sample one plan's current or previous period ("Run now")."""
    with audit.acting_as(None, "qa-sampling"):
        return _summary(sampling.sample_plan(db.session, plan_id, utcnow(), which))


def sample_due_plans_job() -> list[dict]:
    """Scheduled: sample every enabled plan's last completed period, once."""
    with audit.acting_as(None, "qa-sampling"):
        return [_summary(r) for r in sampling.sample_due_plans(db.session, utcnow())]


def enqueue_sample(queue, plan_id: int, which: str):
    """Queue a "Run now" (one queued run per plan and period choice; a second click joins it)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    job_id = f"qa-sample-{plan_id}-{which}"
    try:
        job = Job.fetch(job_id, connection=queue.connection)
        if job.get_status() in ("queued", "started", "deferred", "scheduled"):
            return job
    except NoSuchJobError:
        pass
    return queue.enqueue(sample_plan_job, plan_id, which, job_id=job_id, result_ttl=3600,
                         failure_ttl=7 * 86400, job_timeout=3600)
