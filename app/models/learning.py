"""The learning system, read only: what registered customers do in class, imported by API or file.

One LearningActivity per event of the learning system (its `external_id` makes imports idempotent);
LearningSummary keeps each customer's totals, which the customer page, tags and segments read.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, utcnow


class LearningActivity(ScopedMixin, Model):
    __tablename__ = "learning_activity"
    __scope_via__ = ("customer_id", "Customer", "id")
    __table_args__ = (Index("ix_learning_activity_customer_time", "customer_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), nullable=False)
    course: Mapped[str] = mapped_column(String(200), nullable=False)
    lesson: Mapped[str | None] = mapped_column(String(200))
    attended: Mapped[bool | None] = mapped_column(Boolean)  # None: not a class (e.g. homework, video)
    progress: Mapped[int | None] = mapped_column(Integer)  # the course's progress in percent, 0…100
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)

    customer = relationship("Customer")


class LearningSummary(ScopedMixin, Model):
    """Per customer: lessons attended and missed, the best progress, the last time seen in class."""

    __tablename__ = "learning_summary"
    __scope_via__ = ("customer_id", "Customer", "id")

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    lessons_attended: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lessons_missed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    courses: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress: Mapped[int | None] = mapped_column(Integer)
    last_active_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
