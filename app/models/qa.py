"""Call quality inspection (质检): scorecards, sampling plans, inspections and appeals.

A scorecard starts from `base_score` and each check item adds or deducts its points (result clamped to
0–100). Automatic items (keywords, silence, speech rate) are scored by the machine from the transcript;
the inspector scores every item and the inspector's score is the one that counts. The agent may appeal
once; the inspector's decision on the appeal is final and logged.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin

# QaCheckItem.kind: "manual" is judged by the inspector only; the others are also checked by the machine.
CHECK_MANUAL, CHECK_FORBIDDEN, CHECK_REQUIRED, CHECK_SILENCE, CHECK_SPEECH_RATE = (
    "manual", "forbidden_words", "required_words", "silence", "speech_rate")
CHECK_KINDS = (CHECK_MANUAL, CHECK_FORBIDDEN, CHECK_REQUIRED, CHECK_SILENCE, CHECK_SPEECH_RATE)

# QaPlan.mode / period
SAMPLE_COUNT, SAMPLE_PERCENT = "count", "percent"
PERIODS = ("day", "week", "month")

# QaInspection.status
QA_PENDING, QA_SCORED, QA_APPEALED, QA_FINAL = "pending", "scored", "appealed", "final"
QA_STATUSES = (QA_PENDING, QA_SCORED, QA_APPEALED, QA_FINAL)
# QaInspection.appeal_decision
APPEAL_UPHELD, APPEAL_REJECTED = "upheld", "rejected"  # upheld: the agent was right, score revised


class QaScorecard(TimestampMixin, Model):
    __tablename__ = "qa_scorecard"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    base_score: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    items = relationship("QaCheckItem", back_populates="scorecard", order_by="QaCheckItem.position",
                         cascade="all, delete-orphan")

    def __str__(self) -> str:
        return self.name


class QaCheckItem(TimestampMixin, Model):
    __tablename__ = "qa_check_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scorecard_id: Mapped[int] = mapped_column(ForeignKey("qa_scorecard.id", ondelete="CASCADE"),
                                              nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default=CHECK_MANUAL)
    # Signed: negative deducts when the item is violated / failed, positive adds when it is met.
    points: Mapped[int] = mapped_column(Integer, nullable=False, default=-10)
    keywords: Mapped[str | None] = mapped_column(Text)  # one per line (forbidden / required words)
    # silence: longest allowed gap in seconds; speech_rate: max characters per minute of agent speech.
    threshold: Mapped[float | None] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    scorecard = relationship("QaScorecard", back_populates="items")

    def __str__(self) -> str:
        return self.name


qa_plan_inspector = Table(
    "qa_plan_inspector",
    Model.metadata,
    Column("plan_id", Integer, ForeignKey("qa_plan.id", ondelete="CASCADE"), primary_key=True),
    Column("employee_id", Integer, ForeignKey("employee.id", ondelete="CASCADE"), primary_key=True),
)


class QaPlan(TimestampMixin, ScopedMixin, Model):
    """A sampling plan: which calls of which agents get inspected each period, by whom."""

    __tablename__ = "qa_plan"
    __scope_org__ = "org_unit_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    scorecard_id: Mapped[int] = mapped_column(ForeignKey("qa_scorecard.id"), nullable=False)
    org_unit_id: Mapped[int] = mapped_column(ForeignKey("org_unit.id"), nullable=False)  # its subtree
    mode: Mapped[str] = mapped_column(String(8), nullable=False, default=SAMPLE_COUNT)
    amount: Mapped[float] = mapped_column(Float, nullable=False, default=5)  # calls per agent, or percent
    min_duration: Mapped[int | None] = mapped_column(Integer)  # seconds of talk
    max_duration: Mapped[int | None] = mapped_column(Integer)
    connected_only: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    period: Mapped[str] = mapped_column(String(8), nullable=False, default="week")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_sampled_period: Mapped[str | None] = mapped_column(String(16))  # e.g. "2026-W47"

    scorecard = relationship("QaScorecard")
    org_unit = relationship("OrgUnit")
    inspectors = relationship("Employee", secondary=qa_plan_inspector)

    def __str__(self) -> str:
        return self.name


class QaInspection(TimestampMixin, ScopedMixin, Model):
    """One call under inspection: machine score, inspector's score, the agent's appeal and its decision."""

    __tablename__ = "qa_inspection"
    __scope_owner__ = "agent_id"
    __scope_org__ = "org_unit_id"
    __scope_creator__ = "inspector_id"  # the assigned inspector sees it whatever their scope
    __table_args__ = (
        UniqueConstraint("call_id", name="uq_qa_inspection_call"),  # a call is inspected once
        Index("ix_qa_inspection_inspector_status", "inspector_id", "status"),
        Index("ix_qa_inspection_agent_scored", "agent_id", "scored_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("call_record.id"), nullable=False)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("qa_plan.id"), index=True)  # None: picked by hand
    period: Mapped[str | None] = mapped_column(String(16))
    scorecard_id: Mapped[int] = mapped_column(ForeignKey("qa_scorecard.id"), nullable=False)
    agent_id: Mapped[int] = mapped_column(ForeignKey("employee.id"), nullable=False)
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_unit.id"), index=True)
    inspector_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id"))
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=QA_PENDING)
    machine_score: Mapped[int | None] = mapped_column(Integer)
    machine_results: Mapped[str | None] = mapped_column(Text)  # JSON {item_id: {passed, hits, note}}
    score: Mapped[int | None] = mapped_column(Integer)  # the inspector's; the one that counts
    item_results: Mapped[str | None] = mapped_column(Text)  # JSON per item: {item_id: {passed, note}}
    comment: Mapped[str | None] = mapped_column(Text)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    appeal_reason: Mapped[str | None] = mapped_column(Text)
    appealed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    appeal_decision: Mapped[str | None] = mapped_column(String(10))
    decision_note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id"))

    call = relationship("CallRecord", backref="inspections")
    plan = relationship("QaPlan")
    scorecard = relationship("QaScorecard")
    agent = relationship("Employee", foreign_keys=[agent_id])
    inspector = relationship("Employee", foreign_keys=[inspector_id])
    decided_by = relationship("Employee", foreign_keys=[decided_by_id])
    org_unit = relationship("OrgUnit")

    def __str__(self) -> str:
        return f"QA #{self.id}"
