"""The SMS platform: channels, templates, sensitive words, the blacklist, campaigns and messages.

Exactly-once sending rests on SmsMessage: one row per recipient, unique per campaign and phone, whose
status only moves forward by compare-and-set (pending → sending → sent → delivered / failed, or
cancelled with a reason); the provider is given the message's `uid` as its correlation id.
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
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import TimestampMixin, utcnow

# SmsTemplate.kind
MARKETING, NOTIFICATION, VERIFICATION = "marketing", "notification", "verification"
TEMPLATE_KINDS = (MARKETING, NOTIFICATION, VERIFICATION)
# SmsTemplate.status
DRAFT, PENDING_REVIEW, APPROVED, REJECTED = "draft", "pending", "approved", "rejected"
TEMPLATE_STATUSES = (DRAFT, PENDING_REVIEW, APPROVED, REJECTED)
# SmsCampaign.status
CAMPAIGN_DRAFT, CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING, CAMPAIGN_PAUSED = (
    "draft", "scheduled", "running", "paused")
CAMPAIGN_CANCELLED, CAMPAIGN_COMPLETED, CAMPAIGN_FAILED = "cancelled", "completed", "failed"
CAMPAIGN_STATUSES = (CAMPAIGN_DRAFT, CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING, CAMPAIGN_PAUSED,
                     CAMPAIGN_CANCELLED, CAMPAIGN_COMPLETED, CAMPAIGN_FAILED)
# SmsMessage.status, in the only order it may move (cancelled and failed are final)
MSG_PENDING, MSG_DEFERRED, MSG_SENDING, MSG_SENT, MSG_DELIVERED, MSG_FAILED, MSG_CANCELLED = (
    "pending", "deferred", "sending", "sent", "delivered", "failed", "cancelled")
MESSAGE_STATUSES = (MSG_PENDING, MSG_DEFERRED, MSG_SENDING, MSG_SENT, MSG_DELIVERED, MSG_FAILED,
                    MSG_CANCELLED)
# SmsMessage.cancel_reason
CANCEL_REASONS = ("blacklisted", "opted_out", "no_consent", "duplicate", "invalid_number", "sensitive_word",
                  "frequency_limit", "campaign_cancelled", "template_not_approved")
# SensitiveWord.action
BLOCK, MASK = "block", "mask"


def new_uid() -> str:
    return uuid.uuid4().hex


class SmsChannel(TimestampMixin, Model):
    __tablename__ = "sms_channel"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    provider: Mapped[str] = mapped_column(String(20), nullable=False, default="sink")  # sink / http
    signature: Mapped[str] = mapped_column(String(12), nullable=False)  # 【签名】 without brackets
    base_url: Mapped[str | None] = mapped_column(String(255))
    access_key_env: Mapped[str | None] = mapped_column(String(64))  # env var holding the key id
    secret_env: Mapped[str | None] = mapped_column(String(64))  # env var holding the secret
    encrypted_secret: Mapped[str | None] = mapped_column(Text)  # Fernet token; never shown back
    callback_secret_env: Mapped[str | None] = mapped_column(String(64))
    rate_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=100)  # messages/s
    batch_size: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=10)
    opt_out_text: Mapped[str] = mapped_column(String(30), nullable=False, default="拒收请回复R")
    price_per_segment: Mapped[float] = mapped_column(Numeric(10, 4), nullable=False, default=0.045)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=100)  # lower first; fallback order
    # Provider options as JSON; the sink takes {"fail_numbers": [...], "fail_rate": 0.1, "delay_ms": 5,
    # "timeout": false} so that the demo and the tests can make it misbehave.
    options: Mapped[str | None] = mapped_column(Text)

    def __str__(self) -> str:
        return self.name


class SmsTemplate(TimestampMixin, Model):
    __tablename__ = "sms_template"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(12), nullable=False, default=MARKETING)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("sms_channel.id"))
    body: Mapped[str] = mapped_column(Text, nullable=False)  # named variables: {name}
    variables: Mapped[str | None] = mapped_column(String(255))  # declared, comma separated
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=DRAFT)
    review_note: Mapped[str | None] = mapped_column(String(255))
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    event: Mapped[str | None] = mapped_column(String(40), index=True)  # notification trigger

    channel = relationship("SmsChannel")

    def __str__(self) -> str:
        return self.name


class SensitiveWord(TimestampMixin, Model):
    __tablename__ = "sms_sensitive_word"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    word: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    category: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(5), nullable=False, default=BLOCK)
    allowed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # allow-list entry

    def __str__(self) -> str:
        return self.word


class BlacklistEntry(TimestampMixin, Model):
    __tablename__ = "sms_blacklist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(20), nullable=False, default="manual")  # inbound/manual/import

    def __str__(self) -> str:
        return self.phone


class SmsCampaign(TimestampMixin, Model):
    __tablename__ = "sms_campaign"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    template_id: Mapped[int] = mapped_column(ForeignKey("sms_template.id"), nullable=False)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("sms_channel.id"))
    audience: Mapped[str] = mapped_column(Text, nullable=False)  # JSON {"kind": segment|upload|filter …}
    # The audience segment; at launch its members are copied to sms_audience_entry (the snapshot).
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id", name="fk_sms_campaign_segment"))
    variables: Mapped[str | None] = mapped_column(Text)  # JSON defaults for template variables
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=CAMPAIGN_DRAFT)
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_by: Mapped[str | None] = mapped_column(String(128))
    # Resumable preparation: the last audience key (customer id / upload line) turned into messages.
    cursor: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prepared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    template = relationship("SmsTemplate")
    channel = relationship("SmsChannel")
    segment = relationship("Segment")

    def __str__(self) -> str:
        return self.name


class SmsMessage(Model):
    __tablename__ = "sms_message"
    __table_args__ = (
        # One live message per campaign and phone; a repeated recipient is kept as a cancelled
        # "duplicate" row beside it (every recipient is recorded), so the index leaves those out.
        Index("uq_sms_message_campaign_phone", "campaign_id", "phone", unique=True,
              sqlite_where=text("coalesce(cancel_reason, '') <> 'duplicate'"),
              postgresql_where=text("coalesce(cancel_reason, '') <> 'duplicate'")),
        Index("ix_sms_message_campaign_status", "campaign_id", "status"),
        # Notifications only (no campaign): the reconciler's "sending with an expired lease"; a campaign's
        # million rows stay out (the sender finds them by campaign and status).
        Index("ix_sms_message_status_after", "status", "send_after", sqlite_where=text("campaign_id IS NULL"),
              postgresql_where=text("campaign_id IS NULL")),
        Index("uq_sms_message_uid", "uid", unique=True,
              sqlite_where=text("uid IS NOT NULL"), postgresql_where=text("uid IS NOT NULL")),
        # Idempotent notifications: only they carry a key, so campaign rows' NULLs stay out of the index.
        Index("uq_sms_message_event_key", "event_key", unique=True,
              sqlite_where=text("event_key IS NOT NULL"), postgresql_where=text("event_key IS NOT NULL")),
        # Looked up only when set (receipts): unsent messages' NULLs stay out of the index.
        Index("ix_sms_message_provider_id", "provider_id", sqlite_where=text("provider_id IS NOT NULL"),
              postgresql_where=text("provider_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The provider's correlation id. A notification gets it when made; a campaign message when it is
    # first claimed for sending (see campaign_sending.claim): a million prepared rows, many never sent, stay
    # out of its unique index.
    uid: Mapped[str | None] = mapped_column(String(32), default=new_uid)
    # No foreign keys (migration 0007): per-row FK triggers cost more than the insert of a campaign's
    # million rows on PostgreSQL; the ids come from rows the writer has just read.
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    template_id: Mapped[int | None] = mapped_column(Integer)
    channel_id: Mapped[int | None] = mapped_column(Integer)
    customer_id: Mapped[int | None] = mapped_column(Integer)
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    content: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    kind: Mapped[str] = mapped_column(String(12), nullable=False, default=MARKETING)
    event: Mapped[str | None] = mapped_column(String(40))  # transactional: what triggered it
    event_key: Mapped[str | None] = mapped_column(String(128))  # idempotent notifications (unique index)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=MSG_PENDING)
    cancel_reason: Mapped[str | None] = mapped_column(String(24))
    error_code: Mapped[str | None] = mapped_column(String(64))
    provider_id: Mapped[str | None] = mapped_column(String(64))
    send_after: Mapped[dt.datetime | None] = mapped_column(DateTime)  # quiet hours / retry back-off
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # While status is "sending": the token of the sender run that claimed it (its heartbeat lives in
    # Redis); a claim whose heartbeat is gone belongs to a dead worker and is reconciled with the provider.
    claim: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    campaign = relationship("SmsCampaign", primaryjoin="foreign(SmsMessage.campaign_id) == SmsCampaign.id")


class SmsReceipt(Model):
    """Delivery receipts and inbound replies as received (kept when they match no message yet)."""

    __tablename__ = "sms_receipt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("sms_channel.id"))
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # receipt / inbound
    correlation: Mapped[str | None] = mapped_column(String(64), index=True)  # our uid or provider id
    phone: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[str | None] = mapped_column(Text)
    matched: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, index=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class SinkMessage(Model):
    """What the local "sink" provider accepted: the stand-in for the operator's network."""

    __tablename__ = "sms_sink"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int | None] = mapped_column(Integer)
    correlation: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # our uid
    provider_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    accepted_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class SmsAudienceEntry(Model):
    """One line of an uploaded audience list, read back in line order by the preparation job."""

    __tablename__ = "sms_audience_entry"
    __table_args__ = (UniqueConstraint("campaign_id", "line", name="uq_sms_audience_campaign_line"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key (migration 0016): a segment's snapshot inserts millions of rows at once.
    campaign_id: Mapped[int] = mapped_column(Integer, nullable=False)
    line: Mapped[int] = mapped_column(Integer, nullable=False)
    phone: Mapped[str] = mapped_column(String(40), nullable=False)  # as uploaded
    name: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(Integer)  # a segment's snapshot: the member
