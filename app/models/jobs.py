"""Job runs: one row per run of a long job (lead import, campaign preparation and sending, dispatch
runs, the circulation scan, exports), written only through app.services.runner."""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.clock import utcnow

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)  # a run that still has work ahead of it
FINISHED = (COMPLETED, FAILED, CANCELLED)
_ACTIVE_SQL = text("status IN ('queued', 'running')")

# Kinds of runs (a handler is registered per kind with app.services.runner.handler).
LEAD_IMPORT = "lead_import"
SMS_CAMPAIGN_PREPARE = "sms_campaign_prepare"
SMS_CAMPAIGN_SEND = "sms_campaign_send"
DISPATCH = "dispatch"
CIRCULATION_SCAN = "circulation_scan"
EXPORT = "export"
TAG_REFRESH = "tag_refresh"  # compute the rule tags (app.jobs.tags)
TAG_IMPORT = "tag_import"  # apply a batch of tags / events sent by the big-data system (app.jobs.tags)
SCORING = "scoring"  # train the win-probability model and score every open opportunity (app.jobs.scoring)


class JobRun(Model):
    """One run of a long job: what it works on, who started it, how far it got, and how it ended."""

    __tablename__ = "job_run"
    __table_args__ = (
        Index("ix_job_run_status_created", "status", "created_at"),
        Index("ix_job_run_target", "target_type", "target_id"),
        # At most one queued or running run per kind and target (idempotent start under concurrency).
        Index("ux_job_run_active_target", "kind", "target_type", "target_id", unique=True,
              sqlite_where=_ACTIVE_SQL, postgresql_where=_ACTIVE_SQL),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[int | None] = mapped_column(Integer)
    started_by_fk: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=QUEUED)
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # items, not the run
    position: Mapped[str | None] = mapped_column(Text)  # JSON: where a resumed run carries on
    params: Mapped[str | None] = mapped_column(Text)  # JSON
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(20), nullable=False, default="default")  # RQ queue name
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)  # words a person understands
    summary: Mapped[str | None] = mapped_column(Text)

    started_by = relationship("CrmUser", foreign_keys=[started_by_fk])

    @property
    def percent(self) -> int | None:
        """done / total as a whole percentage (None while the total is unknown)."""
        if not self.total:
            return 100 if self.status == COMPLETED else None
        return min(100, int(100 * (self.done + self.failed) / self.total))

    def __str__(self) -> str:
        return f"{self.kind} #{self.id}"
