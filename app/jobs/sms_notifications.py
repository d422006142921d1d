"""RQ entry points of transactional SMS notifications and receipt matching. Thin: they call
app.services.sms.notifications / receipts and commit.

A notification is sent by `send_notification_job`, enqueued with RQ's Retry: a retryable failure (the
provider timed out, was busy, throttled the number) raises, and RQ runs the job again after the next
interval of CRM_SMS_NOTIFY_RETRY_INTERVALS (seconds; default 10 s, 1 min, 5 min, 15 min). The last
attempt marks the message failed with its error code instead of raising.
"""

from __future__ import annotations

from flask import current_app
from rq import Retry, get_current_job

from app.extensions import db, rq
from app.services.sms import notifications, receipts

DEFAULT_RETRY_INTERVALS = [10, 60, 300, 900]


def retry_policy() -> Retry:
    intervals = list(current_app.config.get("CRM_SMS_NOTIFY_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
    return Retry(max=len(intervals), interval=intervals)


def enqueue_notification(message_id: int, queue=None):
    queue = queue or rq.queue("high")
    return queue.enqueue(send_notification_job, message_id, job_id=f"sms-notify-{message_id}",
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
    status = notifications.send_notification(db.session, message_id, last_attempt=last_attempt)
    db.session.commit()
    return status


def notify_assignments_job(limit: int = 1000) -> dict:
    """Scheduled: notify the new owners of opportunities assigned since the last run."""
    scan = notifications.notify_assignments(db.session, redis=rq.redis, limit=limit)
    for message_id in scan.created:
        enqueue_notification(message_id)
    return {"scanned": scan.scanned, "created": len(scan.created), "watermark": scan.watermark}


def match_receipts_job() -> int:
    """Scheduled: apply kept receipts whose message has appeared since."""
    matched = receipts.match_unmatched(db.session)
    db.session.commit()
    return matched
