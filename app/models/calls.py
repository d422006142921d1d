"""Outbound calling: the call-centre interface, lines, caller-ID numbers, seats and call records.

Limits that two calls could race for (a number's daily cap and rate limit, the attempts on one callee per
day) are `CallCounter` rows moved by one conditional UPSERT each ("add one unless already at the limit"),
so two concurrent dials can never both take the last slot, on SQLite and PostgreSQL alike. A line's
concurrency limit is checked under a row lock on the line.

A CallRecord's status only moves forward along CALL_STATUS_ORDER; every provider callback is stored once
(`CallEvent`, unique per interface and event key), so replays are ignored and out-of-order callbacks
cannot move a call back.
"""

from __future__ import annotations

import datetime as dt
import uuid

from flask_appbuilder.models.sqla import Model
from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin, utcnow

# OutboundInterface.provider
SIMULATOR, HTTP = "simulator", "http"
PROVIDERS = (SIMULATOR, HTTP)

# CallNumber.status
NUMBER_ACTIVE, NUMBER_SUSPENDED, NUMBER_FLAGGED = "active", "suspended", "flagged"
NUMBER_STATUSES = (NUMBER_ACTIVE, NUMBER_SUSPENDED, NUMBER_FLAGGED)

# CallRecord.status, in the only order it may move; the last four are final.
CALL_REQUESTED, CALL_DIALING, CALL_RINGING, CALL_ANSWERED = "requested", "dialing", "ringing", "answered"
CALL_ENDED, CALL_NO_ANSWER, CALL_BUSY, CALL_FAILED = "ended", "no_answer", "busy", "failed"
CALL_STATUS_ORDER = (CALL_REQUESTED, CALL_DIALING, CALL_RINGING, CALL_ANSWERED)
CALL_FINAL = (CALL_ENDED, CALL_NO_ANSWER, CALL_BUSY, CALL_FAILED)
CALL_STATUSES = CALL_STATUS_ORDER + CALL_FINAL
CALL_ACTIVE = (CALL_REQUESTED, CALL_DIALING, CALL_RINGING, CALL_ANSWERED)

# Why a click-to-call was refused (CallRefused.reason); the UI translates each.
REFUSAL_REASONS = (
    "no_seat",  # the employee has no active seat
    "line_disabled",  # the seat's line or its interface is disabled
    "outside_hours",  # outside the line's calling windows
    "do_not_call",  # the callee is on the do-not-call list
    "callee_limit",  # the callee was dialled the maximum times today
    "no_number",  # no caller-ID number of the line is under its caps
    "line_busy",  # the line's concurrency limit is reached
    "no_phone",  # the opportunity / customer has no usable phone
    "provider_error",  # the provider refused or could not be reached
)

# CallCounter.kind
COUNTER_NUMBER_DAY, COUNTER_NUMBER_WINDOW, COUNTER_CALLEE_DAY = "number_day", "number_window", "callee_day"


def new_uid() -> str:
    return uuid.uuid4().hex


class OutboundInterface(TimestampMixin, Model):
    """外呼接口: how we reach one call-centre provider. Secrets come from env vars or an encrypted field."""

    __tablename__ = "call_interface"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    provider: Mapped[str] = mapped_column(String(20), nullable=False, default=SIMULATOR)
    base_url: Mapped[str | None] = mapped_column(String(255))
    access_key_env: Mapped[str | None] = mapped_column(String(64))
    secret_env: Mapped[str | None] = mapped_column(String(64))
    encrypted_secret: Mapped[str | None] = mapped_column(Text)  # Fernet token; never shown back
    callback_secret_env: Mapped[str | None] = mapped_column(String(64))
    encrypted_callback_secret: Mapped[str | None] = mapped_column(Text)  # Fernet token; never shown back
    connect_timeout: Mapped[int] = mapped_column(Integer, nullable=False, default=3)  # seconds
    read_timeout: Mapped[int] = mapped_column(Integer, nullable=False, default=10)  # seconds
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Provider options as JSON; the simulator takes e.g. {"outcome": "answer", "talk_seconds": 60,
    # "ring_seconds": 5, "fail_numbers": [...], "transcript": true} so the demo and tests can steer it.
    options: Mapped[str | None] = mapped_column(Text)

    def __str__(self) -> str:
        return self.name


class CallLine(TimestampMixin, Model):
    """外呼线路: a trunk on one interface, with a concurrency limit and calling windows."""

    __tablename__ = "call_line"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    interface_id: Mapped[int] = mapped_column(ForeignKey("call_interface.id"), nullable=False)
    trunk: Mapped[str | None] = mapped_column(String(100))  # provider's trunk / gateway id
    concurrency_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Allowed calling windows in the business time zone, e.g. "09:00-12:00,13:30-20:30"; empty: any time.
    calling_windows: Mapped[str | None] = mapped_column(String(255), default="09:00-21:00")
    # Privacy numbers (AXB): the callee sees a bound middle number instead of the caller-ID.
    privacy_binding: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    binding_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=30)

    interface = relationship("OutboundInterface")

    def __str__(self) -> str:
        return self.name


class CallNumber(TimestampMixin, Model):
    """外呼号码: a caller-ID number of a line, under a daily cap and a per-period rate limit."""

    __tablename__ = "call_number"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)  # E.164
    line_id: Mapped[int] = mapped_column(ForeignKey("call_line.id"), nullable=False, index=True)
    area: Mapped[str | None] = mapped_column(String(64))  # region it presents as; matched to the callee's
    daily_cap: Mapped[int] = mapped_column(Integer, nullable=False, default=200)
    rate_limit: Mapped[int | None] = mapped_column(Integer)  # calls per period; None: no limit
    rate_period_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=NUMBER_ACTIVE)
    status_note: Mapped[str | None] = mapped_column(String(255))  # why suspended / flagged

    line = relationship("CallLine", backref="numbers")

    def __str__(self) -> str:
        return self.number


class Seat(TimestampMixin, ScopedMixin, Model):
    """坐席: a seat of a line, bound to at most one employee; an employee has at most one active seat."""

    __tablename__ = "call_seat"
    __scope_owner__ = "employee_id"
    __table_args__ = (
        Index("uq_call_seat_active_employee", "employee_id", unique=True,
              postgresql_where=text("active"), sqlite_where=text("active")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seat_no: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    line_id: Mapped[int] = mapped_column(ForeignKey("call_line.id"), nullable=False, index=True)
    employee_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id"))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    line = relationship("CallLine", backref="seats")
    employee = relationship("Employee")

    def __str__(self) -> str:
        return self.seat_no


class DoNotCall(TimestampMixin, Model):
    """The do-not-call list (E.164): never dialled while listed (until `expires_at`, when set)."""

    __tablename__ = "call_dnc"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(20), nullable=False, default="manual")  # manual/import
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class CallCounter(Model):
    """Atomic counters behind the caps: (kind, key, window start) → count. See the module docstring."""

    __tablename__ = "call_counter"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)  # number id or callee phone
    window: Mapped[dt.datetime] = mapped_column(DateTime, primary_key=True)  # start of the day / period
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CallRecord(TimestampMixin, ScopedMixin, Model):
    """通话记录: one outbound call, from the click to the last callback."""

    __tablename__ = "call_record"
    __scope_owner__ = "employee_id"
    __scope_org__ = "org_unit_id"
    __table_args__ = (
        Index("ix_call_record_employee_started", "employee_id", "started_at"),
        Index("ix_call_record_started", "started_at"),
        Index("ix_call_record_line_status", "line_id", "status"),
        Index("ix_call_record_callee_started", "callee_phone", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True, nullable=False, default=new_uid)  # ours
    provider_call_id: Mapped[str | None] = mapped_column(String(64), index=True)
    interface_id: Mapped[int] = mapped_column(ForeignKey("call_interface.id"), nullable=False)
    line_id: Mapped[int] = mapped_column(ForeignKey("call_line.id"), nullable=False)
    number_id: Mapped[int | None] = mapped_column(ForeignKey("call_number.id"), index=True)  # caller-ID
    seat_id: Mapped[int | None] = mapped_column(ForeignKey("call_seat.id"))
    employee_id: Mapped[int] = mapped_column(ForeignKey("employee.id"), nullable=False)
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_unit.id"), index=True)  # agent's, at call
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunity.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"), index=True)
    callee_phone: Mapped[str] = mapped_column(String(20), nullable=False)  # stored whole, shown masked
    privacy_number: Mapped[str | None] = mapped_column(String(20))  # AXB middle number, when bound
    binding_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=CALL_REQUESTED)
    result: Mapped[str | None] = mapped_column(String(32))  # provider's hang-up cause / our error code
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    rang_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    answered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    duration_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # talk time
    recording_url: Mapped[str | None] = mapped_column(String(500))
    # JSON list of {"speaker": "agent"|"customer", "start": s, "end": s, "text": "..."} when given.
    transcript: Mapped[str | None] = mapped_column(Text)
    follow_up_id: Mapped[int | None] = mapped_column(ForeignKey("follow_up.id"))  # set once when connected

    interface = relationship("OutboundInterface")
    line = relationship("CallLine")
    number = relationship("CallNumber")
    seat = relationship("Seat")
    employee = relationship("Employee")
    org_unit = relationship("OrgUnit")
    opportunity = relationship("Opportunity", backref="calls")
    customer = relationship("Customer")

    @property
    def connected(self) -> bool:
        return self.answered_at is not None

    def __str__(self) -> str:
        return f"#{self.id}"


class CallEvent(Model):
    """Every accepted status callback, once: (interface, event key) is unique, so replays are no-ops."""

    __tablename__ = "call_event"
    __table_args__ = (UniqueConstraint("interface_id", "event_key", name="uq_call_event_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    interface_id: Mapped[int] = mapped_column(ForeignKey("call_interface.id"), nullable=False)
    event_key: Mapped[str] = mapped_column(String(128), nullable=False)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("call_record.id"), index=True)  # None: unknown
    correlation: Mapped[str | None] = mapped_column(String(64), index=True)  # our uid as the provider sent it
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # moved the call forward
    payload: Mapped[str | None] = mapped_column(Text)
