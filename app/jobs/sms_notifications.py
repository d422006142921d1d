"""RQ entry points of transactional SMS notifications and receipt matching. Thin: they call
app.services.sms.notifications / notification_sending / notification_triggers / receipts and commit.

A notification is sent by `send_notification_job`, enqueued with RQ's Retry: a retryable failure (the
provider timed out, was busy, throttled the number) raises, and RQ runs the job again after the next
interval of CRM_SMS_NOTIFY_RETRY_INTERVALS (seconds; default 10 s, 1 min, 5 min, 15 min). The last
attempt marks the message failed with its error code instead of raising — or, when another enabled
channel follows in priority order, moves it there and queues a new job (its own retries).
"""

from __future__ import annotations

from flask import current_app
from rq import Retry, get_current_job
from sqlalchemy import select

from app.extensions import db, rq
from app.models.sms import SmsMessage
from app.services.sms import notification_sending, notification_triggers, notifications, receipts

DEFAULT_RETRY_INTERVALS = [10, 60, 300, 900]


def retry_policy() -> Retry:
    intervals = list(current_app.config.get("CRM_SMS_NOTIFY_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
    return Retry(max=len(intervals), interval=intervals)


def enqueue_notification(message_id: int, queue=None, tag: str | None = None):
    """Queue the sending of a message. `tag` tells a later job of the same message apart (a fallback
    channel, a reconciled retry): it gets its own job id and a fresh set of RQ retries."""
    queue = queue or rq.queue("high")
    job_id = f"sms-notify-{message_id}" + (f"-{tag}" if tag else "")
    return queue.enqueue(send_notification_job, message_id, job_id=job_id,
                         retry=retry_policy(), result_ttl=3600, failure_ttl=7 * 86400)


def notify_event(event: str, key, phone: str, variables: dict, customer_id: int | None = None,
                 queue=None) -> notifications.Notified:
    """Record the notification of (event, key) and queue its sending (once: a repeat does nothing)."""
    notified = notifications.notify(db.session, event, key, phone, variables, customer_id=customer_id)
    db.session.commit()
    if notified.created and notified.status == "pending":
        enqueue_notification(notified.message_id, queue)
    return notified


def send_notification_job(message_id: int) -> str:
    job = get_current_job()
    last_attempt = job is None or not job.retries_left
    # A retryable failure raises RetryLater with the message back to pending: RQ retries the job.
    status = notification_sending.send_notification(db.session, message_id, last_attempt=last_attempt,
                                             redis=rq.redis)
    db.session.commit()
    if status == "pending":  # fell back to the next channel: a new job, with retries of its own
        channel_id = db.session.scalar(select(SmsMessage.channel_id).where(SmsMessage.id == message_id))
        enqueue_notification(message_id, rq.queue(job.origin) if job is not None else None,
                             tag=f"ch{channel_id}")
    return status


def reconcile_notifications_job(limit: int = 500) -> dict:
    """Scheduled: settle notifications a killed worker left "sending" (lease expired), re-queue the rest."""
    done = notification_sending.reconcile_notifications(db.session, limit=limit)
    for message_id in done.again:
        attempts = db.session.scalar(select(SmsMessage.attempts).where(SmsMessage.id == message_id))
        enqueue_notification(message_id, tag=f"r{attempts}")
    return {"sent": len(done.sent), "again": len(done.again)}


def notify_followups_job(limit: int = 5000) -> dict:
    """Scheduled: remind salespeople of follow-ups that fell due since the last run."""
    scan = notification_triggers.notify_followups_due(db.session, redis=rq.redis, limit=limit)
    for message_id in scan.created:
        enqueue_notification(message_id)
    return {"scanned": scan.scanned, "created": len(scan.created),
            "watermark": scan.watermark.isoformat() if scan.watermark else None}


def notify_assignments_job(limit: int = 1000) -> dict:
    """Scheduled: notify the new owners of opportunities assigned since the last run."""
    scan = notification_triggers.notify_assignments(db.session, redis=rq.redis, limit=limit)
    for message_id in scan.created:
        enqueue_notification(message_id)
    return {"scanned": scan.scanned, "created": len(scan.created), "watermark": scan.watermark}


def match_receipts_job() -> int:
    """Scheduled: apply kept receipts whose message has appeared since."""
    matched = receipts.match_unmatched(db.session)
    db.session.commit()
    return matched
