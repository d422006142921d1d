"""The notification centre: one row per message to one login user (the bell in the navbar).

Not the SMS notifications of app.services.sms.notifications: these stay inside the console. A title is
stored as an English msgid plus its parameters, so it renders in the reader's language when read.
"""

from __future__ import annotations

import datetime as dt
import json

from flask_appbuilder.models.sqla import Model
from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow

# Kinds of notifications.
RECYCLE_REMINDER = "recycle_reminder"
FOLLOW_UP_DUE = "follow_up_due"
NEW_ASSIGNMENT = "new_assignment"
JOB_FINISHED = "job_finished"
JOB_FAILED = "job_failed"
RESIGNATION_TRANSFER = "resignation_transfer"  # a report resigned: where their opportunities went
# The e-commerce link (app.services.orders): a discounted order waits for approval; an order was paid.
ORDER_APPROVAL, ORDER_PAID = "order_approval", "order_paid"
KINDS = (RECYCLE_REMINDER, FOLLOW_UP_DUE, NEW_ASSIGNMENT, JOB_FINISHED, JOB_FAILED, RESIGNATION_TRANSFER,
         ORDER_APPROVAL, ORDER_PAID)


class InboxNotification(Model):
    """A message in one user's inbox; `dedupe_key` (e.g. subject + business day) makes a re-run a no-op."""

    __tablename__ = "inbox_notification"
    __table_args__ = (
        # One notification per (recipient, kind, dedupe key); NULL keys never collide (no dedupe).
        Index("ux_inbox_notification_dedupe", "recipient_id", "kind", "dedupe_key", unique=True),
        Index("ix_inbox_notification_recipient_created", "recipient_id", "created_at"),
        Index("ix_inbox_notification_recipient_read", "recipient_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    msgid: Mapped[str] = mapped_column(String(255), nullable=False)  # English msgid, rendered on read
    params: Mapped[str | None] = mapped_column(Text)  # JSON object for the msgid's placeholders
    subject_type: Mapped[str | None] = mapped_column(String(40))  # what it is about, e.g. "opportunity"
    subject_id: Mapped[int | None] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    @property
    def param_values(self) -> dict:
        return json.loads(self.params) if self.params else {}

    def __str__(self) -> str:
        return f"{self.kind} #{self.id}"
