"""Lead intake: the back-office form, file imports and the REST endpoint all come through `intake`.

A lead attaches to the customer with the same normalised phone (created if new). If that customer
already has an open opportunity in the lead's product line, the lead joins it and its owner keeps it
("sticky ownership", logged); otherwise a new opportunity waits for the dispatch engine. The config item
`leads.duplicate_policy` = "reject" refuses such a duplicate instead. Lead files: app.services.lead_import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.clock import utcnow
from app.models.marketing import MarketingCampaign
from app.models.sales import (
    OPEN_STATUSES,
    OWNED,
    STICKY,
    WAITING,
    AssignmentLog,
    Customer,
    Lead,
    Opportunity,
)
from app.services import customers, inputs, metadata
from app.services.errors import DomainError
from app.services.phones import normalise_phone

SOURCE, PRODUCT_LINE, INTENTION, STAGE = "lead_source", "product_line", "intention_level", "opportunity_stage"
FIELDS = ("name", "phone", "source", "campaign", "product_line", "region", "intention_level",
          "consult_note", "client_key")
PHONE_MAX = 32  # as typed, before it is normalised


@dataclass
class LeadInput:
    phone: str
    product_line_id: int
    name: str | None = None
    source_id: int | None = None
    campaign: str | None = None
    region: str | None = None
    intention_level_id: int | None = None
    consult_note: str | None = None
    client_key: str | None = None
    raw_payload: dict | None = None
    created_by_id: int | None = None  # the employee who entered it (form, import)
    campaign_id: int | None = None  # the marketing campaign, when the caller knows it (a landing page)
    landing_page_id: int | None = None


@dataclass
class IntakeResult:
    lead: Lead
    opportunity: Opportunity
    created_opportunity: bool = False
    sticky: bool = False
    replayed: bool = False  # the client key was seen before: nothing new was written


def _codes(session, type_code: str) -> dict[str, int]:
    """code → id of the enabled items of a dictionary (labels are accepted too)."""
    result = {}
    for item in metadata.dict_items(session, type_code):
        result[item.code] = item.id
        result[item.label_zh] = item.id
        result[item.label_en] = item.id
    return result


class Vocabulary:
    """The dictionary lookups one batch of leads needs, read once."""

    def __init__(self, session):
        self.sources = _codes(session, SOURCE)
        self.product_lines = _codes(session, PRODUCT_LINE)
        self.intentions = _codes(session, INTENTION)


def parse(row: dict, vocab: Vocabulary, region: str = "CN") -> tuple[LeadInput | None, dict]:
    """Validate one lead given as strings; returns (input, {}) or (None, problems by field)."""
    problems: dict[str, str] = {}

    def text(name, limit):
        value = row.get(name)
        value = None if value is None else str(value).strip()
        if value and len(value) > limit:
            problems[name] = f"at most {limit} characters"
        return value or None

    phone = None
    raw_phone = row.get("phone")
    try:
        if raw_phone is not None and len(str(raw_phone)) > PHONE_MAX:
            problems["phone"] = f"at most {PHONE_MAX} characters"
        else:
            phone = normalise_phone(raw_phone, region)
            if phone is None:
                problems["phone"] = "required"
    except DomainError as exc:
        problems["phone"] = exc.message

    def choice(name, table, required=False):
        value = row.get(name)
        value = None if value is None else str(value).strip()
        if not value:
            if required:
                problems[name] = "required"
            return None
        if value not in table:
            problems[name] = f"unknown or disabled option {inputs.quote(value)}"
            return None
        return table[value]

    values = LeadInput(
        phone=phone,
        product_line_id=choice("product_line", vocab.product_lines, required=True),
        name=text("name", 64),
        source_id=choice("source", vocab.sources),
        campaign=text("campaign", 100),
        region=text("region", 64),
        intention_level_id=choice("intention_level", vocab.intentions),
        consult_note=text("consult_note", 4000),
        client_key=text("client_key", 128),
        raw_payload=row.get("raw_payload") if isinstance(row.get("raw_payload"), dict) else None,
    )
    return (None, problems) if problems else (values, {})


def _customer(session, values: LeadInput) -> Customer:
    customer = customers.by_phone(session, values.phone)  # a merged customer's phone: the survivor
    if customer is None:
        try:
            with session.begin_nested():
                customer = Customer(phone=values.phone, name=values.name, region=values.region)
                session.add(customer)
        except IntegrityError:  # created meanwhile by a concurrent intake
            customer = session.scalar(select(Customer).where(Customer.phone == values.phone))
    elif values.name and not customer.name:
        customer.name = values.name
    return customer


def _stage_new(session) -> int | None:
    items = metadata.dict_items(session, STAGE)
    return next((i.id for i in items if i.code == "new"), items[0].id if items else None)


def intake(session, values: LeadInput, channel: str, actor: str = "system",
           import_id: int | None = None) -> IntakeResult:
    """Record one validated lead (see the module docstring). The caller commits.

    A concurrent intake may write the same client key, customer or open opportunity first (the unique
    indexes refuse the second writer): the lead is then recorded again against what that one wrote,
    i.e. replayed or sticky, never a second opportunity.
    """
    try:
        with session.begin_nested():
            return _intake(session, values, channel, actor, import_id)
    except IntegrityError:
        return _intake(session, values, channel, actor, import_id)


def attribute_campaign(session, values: LeadInput) -> None:
    """Every lead carries its campaign: a campaign id given by the caller (a landing page's) sets the
    tracking code; a tracking code typed, imported or posted finds the campaign that has it."""
    if values.campaign_id is not None:
        code = session.scalar(
            select(MarketingCampaign.code).where(MarketingCampaign.id == values.campaign_id))
        values.campaign_id = None if code is None else values.campaign_id
        values.campaign = code or values.campaign
    elif values.campaign:
        values.campaign_id = session.scalar(
            select(MarketingCampaign.id).where(MarketingCampaign.code == values.campaign))


def _intake(session, values: LeadInput, channel: str, actor: str, import_id: int | None) -> IntakeResult:
    if values.client_key:
        existing = session.scalar(select(Lead).where(Lead.client_key == values.client_key))
        if existing is not None:
            return IntakeResult(existing, existing.opportunity, replayed=True)
    attribute_campaign(session, values)
    now = utcnow()
    customer = _customer(session, values)
    opportunity = session.scalar(select(Opportunity).where(
        Opportunity.customer_id == customer.id, Opportunity.product_line_id == values.product_line_id,
        Opportunity.status.in_(OPEN_STATUSES)))
    created = sticky = False
    if opportunity is not None:
        if metadata.config_value(session, "leads.duplicate_policy") == "reject":
            raise DomainError("This customer already has an open opportunity in that product line",
                              field="phone", status=409)
        sticky = True
        if opportunity.status == OWNED:
            session.add(AssignmentLog(
                created_at=now, opportunity_id=opportunity.id, reason=STICKY,
                from_owner_id=opportunity.owner_id, to_owner_id=opportunity.owner_id, actor_name=actor,
                note=f"new {channel} lead for the same customer and product line"))
    else:
        opportunity = Opportunity(
            customer_id=customer.id, product_line_id=values.product_line_id, stage_id=_stage_new(session),
            intention_level_id=values.intention_level_id, source_id=values.source_id,
            campaign=values.campaign, campaign_id=values.campaign_id, region=values.region, status=WAITING)
        session.add(opportunity)
        created = True
    payload = json.dumps(values.raw_payload, ensure_ascii=False) if values.raw_payload else None
    lead = Lead(customer=customer, opportunity=opportunity, name=values.name, phone=values.phone,
                source_id=values.source_id, campaign=values.campaign, campaign_id=values.campaign_id,
                landing_page_id=values.landing_page_id, product_line_id=values.product_line_id,
                region=values.region, consult_note=values.consult_note, channel=channel,
                client_key=values.client_key, import_id=import_id, created_by_id=values.created_by_id,
                raw_payload=payload)
    session.add(lead)
    session.flush()
    return IntakeResult(lead, opportunity, created_opportunity=created, sticky=sticky)
