"""Periodic jobs, registered on RQ's CronScheduler by `python run.py scheduler`.

Cron expressions are in the scheduler host's local time (RQ's CronScheduler uses local time).
"""

from __future__ import annotations

from app.jobs.calls import sweep_callbacks_job
from app.jobs.dashboard import refresh_dashboard_job
from app.jobs.dispatch import start_circulation_scan_job, start_dispatch_job
from app.jobs.maintenance import purge_audit_log, purge_export_files, purge_read_notifications
from app.jobs.qa import sample_due_plans_job
from app.jobs.runner import watchdog_job
from app.jobs.scoring import start_scoring_job
from app.jobs.sms import release_slots_job, start_due_campaigns_job
from app.jobs.sms_notifications import (
    match_receipts_job,
    notify_assignments_job,
    notify_followups_job,
    reconcile_notifications_job,
)
from app.jobs.tags import start_tag_refresh_job


def register(scheduler) -> None:
    """Register every periodic job on `scheduler` (an `rq.cron.CronScheduler`)."""
    # Chunked and resumable, but a big backlog takes a while: give it an hour, not RQ's default 3 min.
    scheduler.register(purge_audit_log, "low", cron="30 3 * * *", job_timeout=3600)
    scheduler.register(purge_read_notifications, "low", cron="45 3 * * *", job_timeout=3600)
    scheduler.register(purge_export_files, "low", cron="50 3 * * *", job_timeout=3600)
    # The job runner's watchdog: re-enqueue (or fail, in words) the runs whose worker died.
    scheduler.register(watchdog_job, "high", interval=60, job_timeout=300)
    # New leads start a dispatch run themselves; this sweep catches held and recycled ones. Both start
    # job runs (app.services.runner), which carry the work on their own RQ jobs.
    scheduler.register(start_dispatch_job, "default", interval=60, job_timeout=300)
    scheduler.register(start_circulation_scan_job, "default", cron="*/10 * * * *", job_timeout=300)
    # SMS: notify new owners of assignments (reads the assignment log after a watermark), and apply
    # delivery receipts that arrived before their message was recorded.
    scheduler.register(notify_assignments_job, "high", interval=30, job_timeout=600)
    scheduler.register(match_receipts_job, "low", interval=300, job_timeout=600)
    # SMS: remind owners of follow-ups fallen due; settle notifications a killed worker left "sending";
    # give back the frequency slots of cancelled campaigns and failed campaign messages.
    scheduler.register(notify_followups_job, "high", interval=60, job_timeout=600)
    scheduler.register(reconcile_notifications_job, "high", interval=60, job_timeout=600)
    scheduler.register(release_slots_job, "low", interval=120, job_timeout=1800)
    # SMS campaigns: start those launched for later, and the sending again after quiet hours / back-off.
    scheduler.register(start_due_campaigns_job, "default", interval=60, job_timeout=300)
    # Calls: apply status events that raced the dial creating their call.
    scheduler.register(sweep_callbacks_job, "low", interval=60, job_timeout=600)
    # QA: sample each plan's last completed period once (hourly: the business day may end at any UTC hour).
    scheduler.register(sample_due_plans_job, "low", cron="20 * * * *", job_timeout=3600)
    # The manager dashboard's daily aggregates: only the days that changed since the last refresh.
    scheduler.register(refresh_dashboard_job, "low", interval=120, job_timeout=1800)
    # The big-data layer, nightly: recompute the rule tags, then retrain the win-probability model and
    # score every open opportunity (both job runs: progress on the Jobs page, resumable).
    scheduler.register(start_tag_refresh_job, "low", cron="10 2 * * *", job_timeout=300)
    scheduler.register(start_scoring_job, "low", cron="40 2 * * *", job_timeout=300)
