"""The big-data layer: tags on customers and opportunities, behaviour events, saved segments, and the win
probability model.

A Tag is manual (people put it on), rule (a job computes its members from what the system knows) or
import (the big-data system sends its members by signed API). Its members are rows of CustomerTag or
OpportunityTag, each with the source that put it there and when. A Segment is a saved filter (its
criteria: JSON written only by the segment form and API, compiled by app.services.segments) over customers
or opportunities. A ScoringModel is one trained win-probability model (naive Bayes frequency tables) with
its evaluation; the active one scores every open opportunity (Opportunity.win_probability / win_factors).
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin, utcnow

# Tag.source and the source of a membership row
MANUAL, RULE, IMPORTED = "manual", "rule", "import"
TAG_SOURCES = (MANUAL, RULE, IMPORTED)
# Tag.subject and Segment.subject: what the tag / segment is about
CUSTOMER, OPPORTUNITY = "customer", "opportunity"
SUBJECTS = (CUSTOMER, OPPORTUNITY)
# Tag.rule: how a rule tag's members are computed (app.services.tag_rules)
TRIAL_LESSONS = "trial_lessons"  # customer attended ≥ rule_number lessons (learning summary)
IDLE_DAYS = "idle_days"  # open opportunity without a follow-up for ≥ rule_number days
VISITED_PAGE = "visited_page"  # customer has a page_view event whose detail contains rule_text
FROM_CAMPAIGN = "from_campaign"  # customer / opportunity brought by marketing campaign rule_campaign_id
UNREACHED_CALLS = "unreached_calls"  # opportunity called ≥ rule_number times, never connected
TAG_RULES = (TRIAL_LESSONS, IDLE_DAYS, VISITED_PAGE, FROM_CAMPAIGN, UNREACHED_CALLS)
# CustomerEvent.kind
PAGE_VIEW = "page_view"


class Tag(TimestampMixin, Model):
    __tablename__ = "tag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)  # the big-data system's key
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(10), nullable=False, default=MANUAL)
    subject: Mapped[str] = mapped_column(String(12), nullable=False, default=CUSTOMER)
    rule: Mapped[str | None] = mapped_column(String(24))
    rule_number: Mapped[int | None] = mapped_column(Integer)  # lessons, days, calls
    rule_text: Mapped[str | None] = mapped_column(String(200))  # the page (part of its address)
    rule_campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("marketing_campaign.id", name="fk_tag_rule_campaign"))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    computed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # rule: computed; import: sent

    rule_campaign = relationship("MarketingCampaign")

    def __str__(self) -> str:
        return self.name


class CustomerTag(ScopedMixin, Model):
    __tablename__ = "customer_tag"
    __scope_via__ = ("customer_id", "Customer", "id")
    __table_args__ = (Index("ix_customer_tag_customer", "customer_id", "tag_id"),)

    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(10), nullable=False, default=MANUAL)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    added_by: Mapped[str | None] = mapped_column(String(128))

    tag = relationship("Tag", lazy="joined")


class OpportunityTag(ScopedMixin, Model):
    __tablename__ = "opportunity_tag"
    __scope_via__ = ("opportunity_id", "Opportunity", "id")
    __table_args__ = (Index("ix_opportunity_tag_opportunity", "opportunity_id", "tag_id"),)

    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunity.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(10), nullable=False, default=MANUAL)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    added_by: Mapped[str | None] = mapped_column(String(128))

    tag = relationship("Tag", lazy="joined")


class CustomerEvent(ScopedMixin, Model):
    """What a customer did on the company's sites, as the big-data system reports it (page views …)."""

    __tablename__ = "customer_event"
    __scope_via__ = ("customer_id", "Customer", "id")
    __table_args__ = (Index("ix_customer_event_customer_time", "customer_id", "occurred_at"),
                      Index("ix_customer_event_kind_time", "kind", "occurred_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)  # idempotency
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(24), nullable=False, default=PAGE_VIEW)
    detail: Mapped[str | None] = mapped_column(String(500))  # the page's address, the button …
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Segment(TimestampMixin, Model):
    __tablename__ = "segment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(12), nullable=False, default=CUSTOMER)
    criteria: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # app.services.segments
    last_count: Mapped[int | None] = mapped_column(Integer)  # as counted for its author (their scope)
    counted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_by: Mapped[str | None] = mapped_column(String(128))

    def __str__(self) -> str:
        return self.name


class ScoringModel(Model):
    """One trained win-probability model; the newest active one scores (app.services.scoring)."""

    __tablename__ = "scoring_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    method: Mapped[str] = mapped_column(String(24), nullable=False, default="naive_bayes")
    variables: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list of variable codes
    tables: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # JSON: the fitted parameters
    won: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # training history
    lost: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    auc: Mapped[float | None] = mapped_column(Float)  # time-split evaluation on the later months
    ece: Mapped[float | None] = mapped_column(Float)
    evaluation: Mapped[str | None] = mapped_column(Text)  # JSON: split date, counts, calibration bins
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
