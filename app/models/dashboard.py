"""The manager dashboard's daily aggregates (app.services.dashboard_refresh keeps them current).

Each table holds sums per business day and per the dashboard's filter dimensions (org unit, person,
product line, source, campaign), so a dashboard over any period adds up a few hundred rows instead of
scanning the opportunities. They declare the same data-scope columns as the rows they sum
(`__scope_owner__`, `__scope_org__`), so app.security.scope restricts them like the lists behind them.

Also here: the indexes on other domains' tables that the aggregation and the live pool figures read by.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import Date, DateTime, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import ScopedMixin
from app.models.calls import CallRecord
from app.models.qa import QaInspection
from app.models.sales import AssignmentLog, FollowUp, Opportunity
from app.models.sms import SmsMessage

#: Time-to-first-contact histogram buckets: lower bounds in minutes (the last one is open-ended).
FIRST_CONTACT_BUCKETS = (0, 5, 10, 15, 30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080)
#: Idle-age buckets of owned opportunities: lower bounds in days.
IDLE_BUCKETS = (0, 1, 3, 7, 14, 30)


class _Dims:
    """The filter dimensions every aggregate row carries."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    org_unit_id: Mapped[int | None] = mapped_column(Integer)
    product_line_id: Mapped[int | None] = mapped_column(Integer)
    source_id: Mapped[int | None] = mapped_column(Integer)
    campaign: Mapped[str | None] = mapped_column(String(100))


class DashCohortDay(_Dims, ScopedMixin, Model):
    """Opportunities by the business day they came in, and what became of them since (the funnel)."""

    __tablename__ = "dash_cohort_day"
    __scope_owner__ = "owner_id"
    __scope_org__ = "org_unit_id"
    __table_args__ = (Index("ix_dash_cohort_day_day", "day"),
                      Index("ix_dash_cohort_day_owner_day", "owner_id", "day"))

    owner_id: Mapped[int | None] = mapped_column(Integer)
    leads: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    assigned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    contacted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    contacted_24h: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    won: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lost: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DashFirstContactDay(_Dims, ScopedMixin, Model):
    """How long the day's new opportunities waited for their first follow-up: a histogram (medians)."""

    __tablename__ = "dash_first_contact_day"
    __scope_owner__ = "owner_id"
    __scope_org__ = "org_unit_id"
    __table_args__ = (Index("ix_dash_first_contact_day_day", "day"),
                      Index("ix_dash_first_contact_day_owner_day", "owner_id", "day"))

    owner_id: Mapped[int | None] = mapped_column(Integer)
    bucket: Mapped[int] = mapped_column(Integer, nullable=False)  # FIRST_CONTACT_BUCKETS lower bound
    n: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DashActivityDay(_Dims, ScopedMixin, Model):
    """What each person did on a business day: follow-ups, dispatches received, calls, QA scores."""

    __tablename__ = "dash_activity_day"
    __scope_owner__ = "employee_id"
    __scope_org__ = "org_unit_id"
    __table_args__ = (Index("ix_dash_activity_day_day", "day"),
                      Index("ix_dash_activity_day_employee_day", "employee_id", "day"))

    employee_id: Mapped[int | None] = mapped_column(Integer)
    follow_ups: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dispatched: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recycled: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # taken back from them
    dials: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    connected: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    talk_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    qa_scored: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    qa_score_sum: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DashIdleSnapshot(ScopedMixin, Model):
    """Owned opportunities by idle age, as of the last refresh (replaced whole each time)."""

    __tablename__ = "dash_idle_snapshot"
    __scope_owner__ = "owner_id"
    __scope_org__ = "org_unit_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_unit_id: Mapped[int | None] = mapped_column(Integer)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    product_line_id: Mapped[int | None] = mapped_column(Integer)
    source_id: Mapped[int | None] = mapped_column(Integer)
    campaign: Mapped[str | None] = mapped_column(String(100))
    bucket: Mapped[int] = mapped_column(Integer, nullable=False)  # IDLE_BUCKETS lower bound, days
    n: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DashSmsDay(Model):
    """SMS by the business day they were sent (all campaigns and notifications)."""

    __tablename__ = "dash_sms_day"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    segments: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost: Mapped[float] = mapped_column(Numeric(14, 4), nullable=False, default=0)


class DashRefreshState(Model):
    """One row: when the aggregates were last brought up to date, and from when the next refresh looks
    for changes (each source's high-water mark)."""

    __tablename__ = "dash_refresh_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    as_of: Mapped[dt.datetime | None] = mapped_column(DateTime)
    mark: Mapped[dt.datetime | None] = mapped_column(DateTime)  # changes at or after it are looked at
    # JSON {table: highest id seen}: rows inserted since, whatever time they carry (back-dated imports).
    id_marks: Mapped[str | None] = mapped_column(Text)
    days_refreshed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # by the last refresh
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # +1 per refresh (cache keys)


# The indexes the refresh finds changed and new rows by, and the live pool figures read by.
Index("ix_opportunity_updated_at", Opportunity.__table__.c.updated_at)
Index("ix_opportunity_created_at", Opportunity.__table__.c.created_at)
Index("ix_follow_up_created_at", FollowUp.__table__.c.created_at)
Index(
    "ix_follow_up_opportunity_created", FollowUp.__table__.c.opportunity_id, FollowUp.__table__.c.created_at
)
Index(
    "ix_assignment_log_reason_created", AssignmentLog.__table__.c.reason, AssignmentLog.__table__.c.created_at
)
Index("ix_call_record_updated_at", CallRecord.__table__.c.updated_at)
Index("ix_qa_inspection_updated_at", QaInspection.__table__.c.updated_at)
Index("ix_qa_inspection_scored_at", QaInspection.__table__.c.scored_at)
Index(
    "ix_sms_message_sent_at",
    SmsMessage.__table__.c.sent_at,
    postgresql_where=text("sent_at IS NOT NULL"),
    sqlite_where=text("sent_at IS NOT NULL"),
)
# Live pool counts: an index-only count of the opportunities in each public pool.
Index(
    "ix_opportunity_pooled",
    Opportunity.__table__.c.pool_id,
    postgresql_where=text("status = 'pooled'"),
    sqlite_where=text("status = 'pooled'"),
)
