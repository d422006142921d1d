"""RQ entry points of SMS campaigns. Thin: they call app.services.sms.campaigns and re-enqueue themselves.

Preparation then sending; both are safe to re-run (an RQ job may run twice, a worker may die): the
preparation resumes from the campaign's cursor, the sender reconciles what a dead worker left.
"""

from __future__ import annotations

import datetime as dt

from rq import get_current_job

from app.extensions import db, rq
from app.services.sms import campaigns

QUEUE = "default"


def _meta(**values) -> None:
    job = get_current_job()
    if job is not None:
        job.meta.update(values)
        job.save_meta()


def prepare_campaign_job(campaign_id: int, chunk: int = campaigns.CHUNK) -> dict:
    result = campaigns.prepare(db.session, campaign_id, rq.redis, chunk=chunk)
    _meta(rows=result.rows, chunks=result.chunks)
    if result.finished:
        enqueue_send(campaign_id)
    return {"rows": result.rows, "chunks": result.chunks, "finished": result.finished,
            "outcomes": dict(result.outcomes)}


def send_campaign_job(campaign_id: int) -> dict:
    result = campaigns.send(db.session, campaign_id, rq.redis)
    if result.stopped == "cancelled":  # what will not be sent gives its frequency slots back now
        campaigns.release_slots(db.session, rq.redis, campaign_id)
    queue = rq.queue(QUEUE)
    if result.next_at is not None:
        # Quiet hours or back-off: come back when the first message may go (RQ's scheduler runs it).
        queue.enqueue_at(result.next_at.replace(tzinfo=dt.UTC), send_campaign_job, campaign_id)
    elif result.wait_for_claims:
        queue.enqueue_in(dt.timedelta(seconds=5), send_campaign_job, campaign_id)
    return {"sent": result.sent, "failed": result.failed, "retried": result.retried,
            "reconciled": result.reconciled, "completed": result.completed, "stopped": result.stopped,
            "next_at": result.next_at.isoformat() if result.next_at else None}


RELEASED_KEY = "sms:slots-released:"  # campaign id → the sweep gave its slots back already
RELEASE_WITHIN = dt.timedelta(days=2)


def release_slots_job() -> dict:
    """Scheduled: give back the frequency slots of campaigns cancelled or completed lately (once each;
    releasing is idempotent anyway). The sender releases failures as it goes; this catches a cancel made
    while no sender ran and a sender killed between a committed failure and its release."""
    from sqlalchemy import select

    from app.clock import utcnow
    from app.models.sms import SmsCampaign

    ids = db.session.scalars(select(SmsCampaign.id).where(
        SmsCampaign.status.in_(("cancelled", "completed")),
        SmsCampaign.finished_at >= utcnow() - RELEASE_WITHIN)).all()
    db.session.commit()
    freed, swept = 0, 0
    for campaign_id in ids:
        if rq.redis.exists(RELEASED_KEY + str(campaign_id)):
            continue
        freed += campaigns.release_slots(db.session, rq.redis, campaign_id)
        rq.redis.set(RELEASED_KEY + str(campaign_id), "1", ex=int(RELEASE_WITHIN.total_seconds()) * 2)
        swept += 1
    return {"campaigns": swept, "freed": freed}


def enqueue_prepare(campaign_id: int, at: dt.datetime | None = None) -> None:
    queue = rq.queue(QUEUE)
    if at is not None:
        queue.enqueue_at(at.replace(tzinfo=dt.UTC), prepare_campaign_job, campaign_id, job_timeout=7200)
    else:
        queue.enqueue(prepare_campaign_job, campaign_id, job_timeout=7200)


def enqueue_send(campaign_id: int) -> None:
    rq.queue(QUEUE).enqueue(send_campaign_job, campaign_id, job_timeout=7200)


def resume_campaign(campaign_id: int) -> None:
    """After resume: finish the preparation if it was cut short, else send."""
    from app.models.sms import SmsCampaign

    campaign = db.session.get(SmsCampaign, campaign_id)
    if campaign is not None and not campaign.prepared:
        enqueue_prepare(campaign_id)
    else:
        enqueue_send(campaign_id)
