"""The marketing domain: campaigns with their spend, landing pages, and chats from the public widget.

A campaign's `code` is its tracking code: the `campaign` text a lead or opportunity carries (dashboard
filters, imports, the lead API) and the `utm_campaign` of its ad links. Leads and opportunities also keep
the campaign's id (first touch: an opportunity keeps the campaign of the lead that created it).
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin, utcnow

# CampaignSpend.origin
SPEND_TYPED, SPEND_IMPORTED = "typed", "imported"

# ChatMessage.sender
VISITOR, AGENT, BOT = "visitor", "agent", "bot"
CHAT_SENDERS = (VISITOR, AGENT, BOT)

# ChatSession.status
CHAT_OPEN, CHAT_CLOSED = "open", "closed"


class MarketingCampaign(TimestampMixin, Model):
    """A marketing campaign (营销活动): a channel, a budget, a period and a tracking code."""

    __tablename__ = "marketing_campaign"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)  # the tracking code
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    channel_id: Mapped[int] = mapped_column(ForeignKey("dict_item.id"), nullable=False, index=True)
    product_line_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    budget: Mapped[float] = mapped_column(Numeric(14, 2), nullable=False, default=0)
    start_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("employee.id", name="fk_mkt_campaign_creator"))

    channel = relationship("DictItem", foreign_keys=[channel_id])
    product_line = relationship("DictItem", foreign_keys=[product_line_id])

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class CampaignSpend(TimestampMixin, Model):
    """What a campaign cost on one day: typed in, or imported from the ad platform's CSV (one row per
    campaign and day, so a re-import replaces rather than adds)."""

    __tablename__ = "campaign_spend"
    __table_args__ = (UniqueConstraint("campaign_id", "day", name="uq_campaign_spend_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("marketing_campaign.id"), nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    amount: Mapped[float] = mapped_column(Numeric(14, 2), nullable=False, default=0)
    impressions: Mapped[int | None] = mapped_column(Integer)
    clicks: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(10), nullable=False, default=SPEND_TYPED)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("employee.id", name="fk_campaign_spend_creator"))

    campaign = relationship("MarketingCampaign", backref="spend")

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.day}"


class LandingPage(TimestampMixin, Model):
    """A public page at /p/<slug> with its TKD (title, keywords, description) and a lead form."""

    __tablename__ = "landing_page"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    title: Mapped[str] = mapped_column(String(80), nullable=False)
    keywords: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(300))
    heading: Mapped[str | None] = mapped_column(String(120))
    content: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(String(500))  # og:image
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("marketing_campaign.id"), index=True)
    product_line_id: Mapped[int] = mapped_column(ForeignKey("dict_item.id"), nullable=False)
    chat_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    published: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    campaign = relationship("MarketingCampaign", backref="landing_pages")
    product_line = relationship("DictItem", foreign_keys=[product_line_id])

    def __str__(self) -> str:
        return f"/p/{self.slug}"


class ChatSession(ScopedMixin, Model):
    """One visitor's chat from the widget; linked to the lead once the visitor leaves name and phone."""

    __tablename__ = "chat_session"
    # Visible with the opportunity its lead joined; before that only to roles that see everything.
    __scope_via__ = ("opportunity_id", "Opportunity", "id")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)  # the visitor's handle
    landing_page_id: Mapped[int | None] = mapped_column(ForeignKey("landing_page.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("marketing_campaign.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("lead.id"), index=True)
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunity.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=CHAT_OPEN)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    last_message_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64))

    landing_page = relationship("LandingPage")
    campaign = relationship("MarketingCampaign")
    lead = relationship("Lead")
    opportunity = relationship("Opportunity")

    def __str__(self) -> str:
        return f"#{self.id}"


class ChatMessage(Model):
    __tablename__ = "chat_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_session.id"), nullable=False, index=True)
    sender: Mapped[str] = mapped_column(String(10), nullable=False)
    employee_id: Mapped[int | None] = mapped_column(
        ForeignKey("employee.id", name="fk_chat_message_employee"))
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)

    session = relationship("ChatSession", backref="messages")
    employee = relationship("Employee")
