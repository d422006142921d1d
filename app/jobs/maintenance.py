"""Housekeeping jobs."""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app
from sqlalchemy import delete, select

from app.clock import utcnow
from app.extensions import db
from app.models.audit import AuditLog

log = logging.getLogger(__name__)

CHUNK_SIZE = 5_000


def purge_audit_log(chunk_size: int = CHUNK_SIZE) -> int:
    """Delete audit_log rows older than CRM_AUDIT_RETENTION_DAYS; return how many were deleted.

    Deletes `chunk_size` ids at a time and commits each chunk, so the job holds no long lock, keeps
    memory flat, and can be killed and re-run at any point.
    """
    days = int(current_app.config["CRM_AUDIT_RETENTION_DAYS"])
    if days < 1:
        raise ValueError(f"CRM_AUDIT_RETENTION_DAYS must be at least 1, not {days}")
    cutoff = utcnow() - dt.timedelta(days=days)
    oldest_first = (
        select(AuditLog.id).where(AuditLog.created_at < cutoff).order_by(AuditLog.id).limit(chunk_size)
    )
    total = 0
    while True:
        ids = db.session.scalars(oldest_first).all()
        if not ids:
            break
        db.session.execute(
            delete(AuditLog).where(AuditLog.id.in_(ids)).execution_options(synchronize_session=False)
        )
        db.session.commit()
        total += len(ids)
        if len(ids) < chunk_size:
            break
    log.info("purge_audit_log: deleted %d rows created before %s (UTC)", total, cutoff.isoformat())
    return total
