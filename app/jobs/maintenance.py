"""Housekeeping jobs."""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app
from sqlalchemy import delete, select

from app.clock import utcnow
from app.extensions import db
from app.models.audit import AuditLog
from app.models.inbox import InboxNotification
from app.services import reference
from app.services.metadata import config_value

log = logging.getLogger(__name__)

CHUNK_SIZE = 5_000
READ_RETENTION_KEY = "inbox.read_retention_days"


def purge_audit_log(chunk_size: int = CHUNK_SIZE) -> int:
    """Delete audit_log rows older than CRM_AUDIT_RETENTION_DAYS; return how many were deleted."""
    days = int(current_app.config["CRM_AUDIT_RETENTION_DAYS"])
    if days < 1:
        raise ValueError(f"CRM_AUDIT_RETENTION_DAYS must be at least 1, not {days}")
    cutoff = utcnow() - dt.timedelta(days=days)
    total = _purge(AuditLog, AuditLog.created_at < cutoff, chunk_size)
    log.info("purge_audit_log: deleted %d rows created before %s (UTC)", total, cutoff.isoformat())
    return total


def purge_read_notifications(chunk_size: int = CHUNK_SIZE) -> int:
    """Delete inbox notifications read more than `inbox.read_retention_days` (config item) ago; unread
    ones stay whatever their age. Returns how many were deleted."""
    days = config_value(db.session, READ_RETENTION_KEY)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        log.warning("purge_read_notifications: %s is %r, not a whole number of days >= 1: using %s",
                    READ_RETENTION_KEY, days, reference.default(READ_RETENTION_KEY))
        days = reference.default(READ_RETENTION_KEY)
    cutoff = utcnow() - dt.timedelta(days=days)
    total = _purge(InboxNotification, InboxNotification.read_at < cutoff, chunk_size)
    log.info("purge_read_notifications: deleted %d read before %s (UTC)", total, cutoff.isoformat())
    return total


def _purge(model, condition, chunk_size: int) -> int:
    """Delete the rows of `model` matching `condition`, oldest id first, `chunk_size` ids at a time with a
    commit after each chunk: no long lock, flat memory, and safe to kill and run again at any point."""
    oldest_first = select(model.id).where(condition).order_by(model.id).limit(chunk_size)
    total = 0
    while True:
        ids = db.session.scalars(oldest_first).all()
        if not ids:
            break
        db.session.execute(delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False))
        db.session.commit()
        total += len(ids)
        if len(ids) < chunk_size:
            break
    return total


def purge_export_files() -> int:
    """Delete the files of export jobs that ended more than CRM_EXPORT_RETENTION_DAYS ago (the runs stay,
    as the record); returns how many files were deleted."""
    from app.services import exports

    removed = exports.purge(db.session)
    log.info("purge_export_files: deleted %d export files", removed)
    return removed
