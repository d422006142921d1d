"""The sales domain: customers, leads, opportunities, pools, follow-ups, rules and the assignment log.

Ownership invariant: an open opportunity is either owned (owner_id set, pool_id null), in a public pool
(pool_id set, owner_id null) or waiting for the dispatch engine (both null). Every change of that is one
AssignmentLog row.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
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

# Opportunity.status
WAITING = "waiting"  # for the dispatch engine (new or recycled)
OWNED = "owned"
POOLED = "pooled"
WON = "won"
LOST = "lost"
OPEN_STATUSES = (WAITING, OWNED, POOLED)
STATUSES = (WAITING, OWNED, POOLED, WON, LOST)

# AssignmentLog.reason
DISPATCH = "dispatch"
CLAIM = "claim"
GIVE_BACK = "give_back"
ASSIGN = "assign"
TRANSFER = "transfer"
RECYCLE = "recycle"
STICKY = "sticky"
TO_POOL = "to_pool"
REASONS = (DISPATCH, CLAIM, GIVE_BACK, ASSIGN, TRANSFER, RECYCLE, STICKY, TO_POOL)

# DispatchRule.strategy
ROUND_ROBIN = "round_robin"
WEIGHTED = "weighted"
LEAST_LOADED = "least_loaded"
POOL_STRATEGY = "pool"
SCORE_AWARE = "score_aware"  # likelier wins to better recent converters, within a band of round robin
STRATEGIES = (ROUND_ROBIN, WEIGHTED, LEAST_LOADED, POOL_STRATEGY, SCORE_AWARE)


class Customer(TimestampMixin, ScopedMixin, Model):
    """The person behind leads: one per normalised phone number."""

    __tablename__ = "customer"
    # Visible to whoever may see one of the customer's opportunities.
    __scope_via__ = ("id", "Opportunity", "customer_id")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(64))
    registered_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    region: Mapped[str | None] = mapped_column(String(64))
    marketing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Set when merged into another customer (app.services.customers.merge): lookups by phone or user id
    # follow it; lists and choices leave such a customer out.
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer.id", name="fk_customer_merged_into_id_customer"), index=True)
    merged_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    def __str__(self) -> str:
        # Never the phone: labels land in dropdowns, titles and logs that are not masked.
        return self.name or f"#{self.id}"


class LeadImport(TimestampMixin, Model):
    """One uploaded lead file: what it held and what became of each row."""

    __tablename__ = "lead_import"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    total_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duplicate_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[str | None] = mapped_column(Text)  # JSON: [{"line": n, "errors": {field: msg}}]
    created_by_id: Mapped[int | None] = mapped_column(Integer)

    def __str__(self) -> str:
        return self.filename


class Lead(TimestampMixin, ScopedMixin, Model):
    __tablename__ = "lead"
    __scope_via__ = ("opportunity_id", "Opportunity", "id")
    __scope_creator__ = "created_by_id"  # the back office sees what it entered

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), nullable=False, index=True)
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunity.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    campaign: Mapped[str | None] = mapped_column(String(100))
    # The marketing campaign (by its tracking code, the landing page or the intake) and the landing page.
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("marketing_campaign.id", name="fk_lead_campaign_id"), index=True)
    landing_page_id: Mapped[int | None] = mapped_column(
        ForeignKey("landing_page.id", name="fk_lead_landing_page_id"), index=True)
    product_line_id: Mapped[int] = mapped_column(ForeignKey("dict_item.id"), nullable=False)
    region: Mapped[str | None] = mapped_column(String(64))
    consult_note: Mapped[str | None] = mapped_column(Text)
    raw_payload: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(10), nullable=False, default="form")  # form/import/api
    # Idempotency: the API caller's key, or "import:<sha>:<line>" for file rows.
    client_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    import_id: Mapped[int | None] = mapped_column(ForeignKey("lead_import.id"))
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("employee.id", name="fk_lead_created_by_employee"), index=True)

    customer = relationship("Customer", backref="leads")
    opportunity = relationship("Opportunity", backref="leads")
    source = relationship("DictItem", foreign_keys=[source_id])
    product_line = relationship("DictItem", foreign_keys=[product_line_id])
    marketing_campaign = relationship("MarketingCampaign")
    landing_page = relationship("LandingPage")

    def __str__(self) -> str:
        return f"{self.name or ''} {self.phone}".strip()


class Pool(TimestampMixin, ScopedMixin, Model):
    """A public pool (公海): unowned opportunities of an org unit and product line."""

    __tablename__ = "sales_pool"
    __scope_org__ = "org_unit_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    org_unit_id: Mapped[int] = mapped_column(ForeignKey("org_unit.id"), nullable=False, index=True)
    product_line_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    daily_claim_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=20)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    org_unit = relationship("OrgUnit")
    product_line = relationship("DictItem")

    def __str__(self) -> str:
        return self.name


class Opportunity(TimestampMixin, ScopedMixin, Model):
    __tablename__ = "opportunity"
    __scope_owner__ = "owner_id"
    __scope_org__ = "org_unit_id"
    __table_args__ = (
        Index("ix_opportunity_status_id", "status", "id"),
        # The dispatch queue: without it a backlog makes the planner walk every dispatched row per batch.
        Index("ix_opportunity_waiting", "id", postgresql_where=text("status = 'waiting'"),
              sqlite_where=text("status = 'waiting'")),
        Index("ix_opportunity_status_idle", "status", "idle_since"),
        Index("ix_opportunity_pool_status", "pool_id", "status"),
        # The opportunity list by scope or filter, in id order (app/views/fast_list.py; migration 0013).
        Index("ix_opportunity_owner_id_id", "owner_id", "id"),
        Index("ix_opportunity_owner_status_id", "owner_id", "status", "id"),
        Index("ix_opportunity_org_unit_id_id", "org_unit_id", "id"),
        Index("ix_opportunity_stage_id_id", "stage_id", "id"),
        Index("ix_opportunity_pool_id_id", "pool_id", "id"),
        # Lists sorted by win probability (migration 0016).
        Index("ix_opportunity_win_probability_id", "win_probability", "id"),
        # Sorted likeliest first, unscored last (PostgreSQL: SQLite indexes know no NULLS LAST).
        Index("ix_opportunity_win_probability_desc", text("win_probability DESC NULLS LAST"), text("id DESC"))
        .ddl_if(dialect="postgresql"),
        # Score-aware dispatch: each salesperson's recent conversion per product line, read index-only.
        Index("ix_opportunity_closed_owner", "closed_at", "owner_id", "product_line_id", "status",
              postgresql_where=text("status IN ('won', 'lost')"),
              sqlite_where=text("status IN ('won', 'lost')")),
        # At most one open opportunity per customer and product line.
        Index("uq_opportunity_open", "customer_id", "product_line_id", unique=True,
              postgresql_where=text("status IN ('waiting', 'owned', 'pooled')"),
              sqlite_where=text("status IN ('waiting', 'owned', 'pooled')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), nullable=False, index=True)
    product_line_id: Mapped[int] = mapped_column(ForeignKey("dict_item.id"), nullable=False)
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    intention_level_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    # Copied from the first lead: what dispatch rules match on.
    source_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    campaign: Mapped[str | None] = mapped_column(String(100))
    # First touch: the marketing campaign of the lead that created the opportunity.
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("marketing_campaign.id", name="fk_opportunity_campaign_id"), index=True)
    region: Mapped[str | None] = mapped_column(String(64))

    status: Mapped[str] = mapped_column(String(10), nullable=False, default=WAITING)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id"))
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("sales_pool.id"))
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_unit.id"), index=True)
    is_recycled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    recycle_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Waiting opportunities no rule could place are held back until then, not retried every batch.
    dispatch_after: Mapped[dt.datetime | None] = mapped_column(DateTime)

    assigned_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_followup_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    next_followup_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    # max(assigned_at, last_followup_at): the circulation clock, kept by the services.
    idle_since: Mapped[dt.datetime | None] = mapped_column(DateTime)
    stage_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    protected_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    recycle_reminded_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    lost_reason_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    locked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # The stage it was in when it closed (its stage becomes "won" / "lost"): what the win-probability model
    # learns the stage variable from (app.services.scoring_features).
    closed_from_stage_id: Mapped[int | None] = mapped_column(
        ForeignKey("dict_item.id", name="fk_opportunity_closed_from_stage"))
    # The active scoring model's estimate (0…1) for an open opportunity, and the three variables that moved
    # it most: JSON [{"variable": code, "value": label, "effect": log-odds}, …] (app.services.scoring).
    win_probability: Mapped[float | None] = mapped_column(Float)
    win_factors: Mapped[str | None] = mapped_column(Text)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    customer = relationship("Customer", backref="opportunities", lazy="joined")
    owner = relationship("Employee", lazy="joined")
    pool = relationship("Pool")
    org_unit = relationship("OrgUnit")
    product_line = relationship("DictItem", foreign_keys=[product_line_id], lazy="joined")
    stage = relationship("DictItem", foreign_keys=[stage_id], lazy="joined")
    intention_level = relationship("DictItem", foreign_keys=[intention_level_id])
    source = relationship("DictItem", foreign_keys=[source_id])
    lost_reason = relationship("DictItem", foreign_keys=[lost_reason_id])
    marketing_campaign = relationship("MarketingCampaign")

    def __str__(self) -> str:
        return f"#{self.id} {self.customer}"


class FollowUp(TimestampMixin, ScopedMixin, Model):
    __tablename__ = "follow_up"
    __scope_via__ = ("opportunity_id", "Opportunity", "id")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunity.id"), nullable=False, index=True)
    employee_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id"))
    type_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    content: Mapped[str] = mapped_column(Text, nullable=False)
    result: Mapped[str | None] = mapped_column(String(100))
    next_followup_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    opportunity = relationship("Opportunity", backref="follow_ups")
    employee = relationship("Employee")
    type = relationship("DictItem")


class AssignmentLog(ScopedMixin, Model):
    """One row per ownership change: from, to, why, by which rule, who, when, and the dispatch trace."""

    __tablename__ = "assignment_log"
    __scope_via__ = ("opportunity_id", "Opportunity", "id")
    __table_args__ = (
        Index("ix_assignment_log_opportunity", "opportunity_id", "created_at"),
        Index("ix_assignment_log_from_owner", "from_owner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunity.id"), nullable=False)
    reason: Mapped[str] = mapped_column(String(12), nullable=False)
    from_owner_id: Mapped[int | None] = mapped_column(Integer)
    to_owner_id: Mapped[int | None] = mapped_column(Integer, index=True)
    from_pool_id: Mapped[int | None] = mapped_column(Integer)
    to_pool_id: Mapped[int | None] = mapped_column(Integer)
    dispatch_rule_id: Mapped[int | None] = mapped_column(Integer)
    circulation_rule_id: Mapped[int | None] = mapped_column(Integer)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(255))
    trace: Mapped[str | None] = mapped_column(Text)  # JSON: strategy, candidates, exclusions, choice

    opportunity = relationship("Opportunity", backref="assignment_logs")


class SalesProfile(ScopedMixin, Model):
    """Dispatch settings and counters of one salesperson."""

    __tablename__ = "sales_profile"
    __scope_owner__ = "employee_id"

    employee_id: Mapped[int] = mapped_column(ForeignKey("employee.id", ondelete="CASCADE"), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    daily_quota: Mapped[int | None] = mapped_column(Integer)  # dispatched per day; None: no limit
    capacity: Mapped[int | None] = mapped_column(Integer)  # personal override of the rule's capacity
    # Counters kept by the services in the same transaction as the assignment.
    open_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    won_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    quota_day: Mapped[dt.date | None] = mapped_column(Date)
    dispatched_today: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    employee = relationship("Employee", backref="sales_profile", lazy="joined")

    def __str__(self) -> str:
        return str(self.employee)


class OwnerCooling(Model):
    """An ex-owner may not reclaim, nor be dispatched, this opportunity until `until`."""

    __tablename__ = "owner_cooling"

    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunity.id", ondelete="CASCADE"),
                                                primary_key=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employee.id", ondelete="CASCADE"), primary_key=True)
    until: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)


class ClaimCounter(Model):
    """Claims per employee, pool and day (the pool's daily claim limit)."""

    __tablename__ = "claim_counter"

    employee_id: Mapped[int] = mapped_column(ForeignKey("employee.id", ondelete="CASCADE"), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("sales_pool.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CirculationRule(TimestampMixin, Model):
    """When owned opportunities go back into circulation, and the limits on owning them."""

    __tablename__ = "circulation_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Applies to opportunities of this org unit's subtree, this product line and intention level.
    org_unit_id: Mapped[int] = mapped_column(ForeignKey("org_unit.id"), nullable=False)
    product_line_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    intention_level_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    idle_days: Mapped[int | None] = mapped_column(Integer)
    stage_deadline_days: Mapped[int | None] = mapped_column(Integer)
    target_stage_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    no_deal_days: Mapped[int | None] = mapped_column(Integer)
    protect_days: Mapped[int | None] = mapped_column(Integer)
    protect_extend_days: Mapped[int | None] = mapped_column(Integer)
    protect_max_days: Mapped[int | None] = mapped_column(Integer)
    remind_hours: Mapped[int | None] = mapped_column(Integer)
    capacity: Mapped[int | None] = mapped_column(Integer)
    capacity_by_level: Mapped[str | None] = mapped_column(Text)  # JSON {"P1": 50, "P2": 80}
    capacity_counts_won: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    cooling_days: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    exempt_stages: Mapped[str | None] = mapped_column(String(255), default="won,lost,trial")
    recycle_to_pool_id: Mapped[int | None] = mapped_column(ForeignKey("sales_pool.id"))

    org_unit = relationship("OrgUnit")
    product_line = relationship("DictItem", foreign_keys=[product_line_id])
    intention_level = relationship("DictItem", foreign_keys=[intention_level_id])
    target_stage = relationship("DictItem", foreign_keys=[target_stage_id])
    recycle_to_pool = relationship("Pool")

    def __str__(self) -> str:
        return self.name


class DispatchRule(TimestampMixin, Model):
    """Matches waiting opportunities to a target team and a strategy; first match by priority wins."""

    __tablename__ = "dispatch_rule"
    __table_args__ = (UniqueConstraint("name", name="uq_dispatch_rule_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=100)  # lower first
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    match_source_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    match_campaign: Mapped[str | None] = mapped_column(String(100))  # prefix
    match_product_line_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    match_region: Mapped[str | None] = mapped_column(String(64))
    match_intention_level_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id"))
    match_recycled: Mapped[str] = mapped_column(String(8), nullable=False, default="any")  # any/new/recycled
    target_org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_unit.id"))
    strategy: Mapped[str] = mapped_column(String(16), nullable=False, default=ROUND_ROBIN)
    target_pool_id: Mapped[int | None] = mapped_column(ForeignKey("sales_pool.id"))  # "to pool" / fallback
    working_hours_only: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Matches only opportunities in this segment (of opportunities, or of customers: their opportunities).
    match_segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segment.id", name="fk_dispatch_rule_segment"))
    # Score-aware: each eligible person's share stays within ± this percentage of the round-robin share.
    fairness_band: Mapped[int] = mapped_column(Integer, nullable=False, default=25, server_default="25")
    # Strategy state: round-robin counts / smooth-weighted currents per employee (JSON).
    state: Mapped[str | None] = mapped_column(Text)

    match_source = relationship("DictItem", foreign_keys=[match_source_id])
    match_product_line = relationship("DictItem", foreign_keys=[match_product_line_id])
    match_intention_level = relationship("DictItem", foreign_keys=[match_intention_level_id])
    target_org_unit = relationship("OrgUnit")
    target_pool = relationship("Pool")
    match_segment = relationship("Segment")

    def __str__(self) -> str:
        return self.name
