"""Marketing campaigns and their daily spend: the commands the Marketing pages, the seed and any API call.

A campaign's `code` is its tracking code (the `utm_campaign` of its ad links, the `campaign` text leads
carry): letters of any script, digits, "-" and "_", at most 100, unique. It is immutable once a lead or an
opportunity carries it (by id or by text): renaming it would cut those rows and the live ad links off their
campaign — end the campaign and start a new one instead. A campaign created after leads arrived with its
code adopts them (`attach_leads`).

Spend is one figure per campaign and business day (unique in the table): typing a day again, or importing
it again, replaces that day's figure, so a re-import of the same file changes nothing (app.services
.marketing_import reads the ad platform's CSV). Every change is audited: campaign and typed spend rows by
the audit log's change capture (declared in app.services.audit), an import as one event naming its file
and totals.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import func, or_, select, update

from app import clock
from app.models.marketing import SPEND_TYPED, CampaignSpend, LandingPage, MarketingCampaign
from app.models.metadata import DictItem
from app.models.sales import Lead, Opportunity
from app.services.errors import DomainError
from app.services.metadata import check_dict_choice
from app.services.reference import MARKETING_CHANNEL, PRODUCT_LINE

CODE_MAX = NAME_MAX = 100
#: Letters (any script: 双十一), digits, "-" and "_".
CODE_RE = re.compile(r"^[\w-]+$")
MONEY_MAX = Decimal("999999999999.99")  # Numeric(14, 2)
CENT = Decimal("0.01")
COUNT_MAX = 2**31 - 1
#: Spend may be recorded for at most this many days back (and never for a day still to come).
SPEND_DAYS_BACK = 3 * 366

# --- values ---------------------------------------------------------------------------------------------
def money(raw, field: str = "amount") -> Decimal:
    """A non-negative amount of money (yuan, two decimals, rounded half up) from a number or text such as
    "1,234.50" or "¥88"."""
    if isinstance(raw, bool):
        raise DomainError("Must be an amount such as 1234.50", field=field)
    text = str(raw if raw is not None else "").strip().replace(",", "").lstrip("¥￥").strip()
    if not text:
        raise DomainError("Required", field=field)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise DomainError("Must be an amount such as 1234.50", field=field) from None
    if not value.is_finite():
        raise DomainError("Must be an amount such as 1234.50", field=field)
    value = value.quantize(CENT, rounding=ROUND_HALF_UP)
    if value < 0:
        raise DomainError("Must not be negative", field=field)
    if value > MONEY_MAX:
        raise DomainError("Must be at most %(max)s", field=field, max=str(MONEY_MAX))
    return value


def count(raw, field: str) -> int | None:
    """An optional whole number ≥ 0 (impressions, clicks), "1,234" accepted."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise DomainError("Must be a whole number of at least 0", field=field)
    text = str(raw).strip().replace(",", "")
    if text.endswith(".0"):  # a spreadsheet's number
        text = text[:-2]
    if not (text.isascii() and text.isdigit()) or int(text) > COUNT_MAX:
        raise DomainError("Must be a whole number of at least 0", field=field)
    return int(text)


def check_code(code: str | None) -> str:
    code = (code or "").strip()
    if not code:
        raise DomainError("Required", field="code")
    if len(code) > CODE_MAX:
        raise DomainError("At most %(max)d characters", field="code", max=CODE_MAX)
    if not CODE_RE.match(code):
        raise DomainError("Only letters, digits, \"-\" and \"_\" (it goes into ad links)", field="code")
    return code


def code_in_use(session, campaign: MarketingCampaign, code: str) -> bool:
    """Whether leads or opportunities carry the campaign (by id) or its tracking code (by text)."""
    for model in (Lead, Opportunity):
        conditions = [model.campaign == code]
        if campaign.id is not None:
            conditions.append(model.campaign_id == campaign.id)
        if session.scalar(select(model.id).where(or_(*conditions)).limit(1)) is not None:
            return True
    return False


def check_campaign(session, item: MarketingCampaign, creating: bool) -> None:
    """The rules of a campaign about to be saved (a form's scratch copy, the seed, an API)."""
    item.code = check_code(item.code)
    if not creating and item.id is not None:
        stored = session.scalar(select(MarketingCampaign.code).where(MarketingCampaign.id == item.id))
        if stored is not None and stored != item.code and code_in_use(session, item, stored):
            raise DomainError("Leads already carry the tracking code %(code)s: it cannot change any more "
                              "(end this campaign and start a new one)", field="code", code=stored)
    taken = select(MarketingCampaign.id).where(func.lower(MarketingCampaign.code) == item.code.lower())
    if item.id is not None:
        taken = taken.where(MarketingCampaign.id != item.id)
    if session.scalar(taken.limit(1)) is not None:
        raise DomainError("Another campaign has the tracking code %(code)s", field="code", code=item.code)
    name = (item.name or "").strip()
    if not name:
        raise DomainError("Required", field="name")
    if len(name) > NAME_MAX:
        raise DomainError("At most %(max)d characters", field="name", max=NAME_MAX)
    item.name = name
    _check_item(session, item, "channel", "channel_id", MARKETING_CHANNEL, required=True)
    _check_item(session, item, "product_line", "product_line_id", PRODUCT_LINE, required=False)
    item.budget = money(0 if item.budget is None else item.budget, "budget")
    if item.start_date is None:
        raise DomainError("Required", field="start_date")
    if item.end_date is not None and item.end_date < item.start_date:
        raise DomainError("Must not be before the start date", field="end_date")


def _check_item(session, item, relation: str, column: str, type_code: str, required: bool) -> None:
    chosen = getattr(item, relation)
    if chosen is None and getattr(item, column) is not None:
        chosen = session.get(DictItem, getattr(item, column))
    if chosen is None:
        if required:
            raise DomainError("Required", field=relation)
        return
    previous = None if item.id is None else session.scalar(
        select(getattr(MarketingCampaign, column)).where(MarketingCampaign.id == item.id))
    check_dict_choice(chosen, type_code, previous, field=relation)


def attach_leads(session, campaign: MarketingCampaign) -> int:
    """Leads and opportunities that came in with the campaign's tracking code before the campaign was
    entered now carry it (one UPDATE each); how many leads."""
    leads = session.execute(update(Lead).where(Lead.campaign == campaign.code, Lead.campaign_id.is_(None))
                            .values(campaign_id=campaign.id).execution_options(synchronize_session=False))
    session.execute(update(Opportunity).where(Opportunity.campaign == campaign.code,
                                              Opportunity.campaign_id.is_(None))
                    .values(campaign_id=campaign.id).execution_options(synchronize_session=False))
    return leads.rowcount or 0


@dataclass
class CampaignInput:
    code: str
    name: str
    channel_id: int
    start_date: dt.date
    end_date: dt.date | None = None
    budget: Decimal | str | int = 0
    product_line_id: int | None = None
    active: bool = True
    note: str | None = None


def create_campaign(session, values: CampaignInput, created_by_id: int | None = None) -> MarketingCampaign:
    """Validate and add a campaign; it adopts the leads that already carry its code. The caller commits."""
    item = MarketingCampaign(**values.__dict__, created_by_id=created_by_id)
    with session.no_autoflush:
        check_campaign(session, item, creating=True)
    session.add(item)
    session.flush()
    attach_leads(session, item)
    return item


def update_campaign(session, item: MarketingCampaign, **changes) -> MarketingCampaign:
    """Validate and apply changes to a campaign (refused as a whole). The caller commits."""
    for name, value in changes.items():
        if name not in CampaignInput.__dataclass_fields__:
            raise DomainError("Unknown field", field=name)
        setattr(item, name, value)
    with session.no_autoflush:
        check_campaign(session, item, creating=False)
    return item


def check_delete(session, item: MarketingCampaign) -> None:
    """A campaign that leads, opportunities, spend or landing pages refer to stays (deactivate it)."""
    for column in (Lead.campaign_id, Opportunity.campaign_id, CampaignSpend.campaign_id,
                   LandingPage.campaign_id):
        if session.scalar(select(column).where(column == item.id).limit(1)) is not None:
            raise DomainError("%(name)s is used by %(table)s rows: deactivate it instead", status=409,
                              name=str(item), table=column.class_.__tablename__)


def active_campaigns(session, today: dt.date | None = None) -> list[tuple[str, str]]:
    """(code, name) of the campaigns a new lead may name: active and not ended, by code."""
    today = today or clock.today()
    running = or_(MarketingCampaign.end_date.is_(None), MarketingCampaign.end_date >= today)
    rows = session.execute(select(MarketingCampaign.code, MarketingCampaign.name)
                           .where(MarketingCampaign.active.is_(True), running)
                           .order_by(MarketingCampaign.code))
    return [(code, name) for code, name in rows]


# --- spend ----------------------------------------------------------------------------------------------
def check_day(day: dt.date, campaign: MarketingCampaign, today: dt.date, field: str = "day") -> None:
    """A spend day: not to come, not years back, within the campaign's period."""
    if day > today:
        raise DomainError("Must not be in the future", field=field)
    if (today - day).days > SPEND_DAYS_BACK:
        raise DomainError("Must be within the last %(days)d days", field=field, days=SPEND_DAYS_BACK)
    if day < campaign.start_date or (campaign.end_date is not None and day > campaign.end_date):
        raise DomainError("Outside the period of campaign %(code)s", field=field, code=campaign.code)


@dataclass
class SpendInput:
    campaign: MarketingCampaign
    day: dt.date
    amount: Decimal
    impressions: int | None
    clicks: int | None


def parse_spend(session, campaign_id: int | None, day: dt.date | None, amount, impressions=None,
                clicks=None, today: dt.date | None = None) -> SpendInput:
    """Check one day's spend as typed (DomainError naming the field)."""
    campaign = session.get(MarketingCampaign, campaign_id) if campaign_id is not None else None
    if campaign is None:
        raise DomainError("Required", field="campaign")
    if day is None:
        raise DomainError("Required", field="day")
    check_day(day, campaign, today or clock.today())
    return SpendInput(campaign, day, money(amount), count(impressions, "impressions"),
                      count(clicks, "clicks"))


def record_spend(session, campaign_id: int | None, day: dt.date | None, amount, impressions=None,
                 clicks=None, created_by_id: int | None = None,
                 today: dt.date | None = None) -> CampaignSpend:
    """Type in what a campaign cost on one day: the day's figure is set (created or replaced), audited.
    The caller commits."""
    values = parse_spend(session, campaign_id, day, amount, impressions, clicks, today)
    row = session.scalar(select(CampaignSpend).where(CampaignSpend.campaign_id == values.campaign.id,
                                                     CampaignSpend.day == values.day))
    if row is None:
        row = CampaignSpend(campaign_id=values.campaign.id, day=values.day, created_by_id=created_by_id)
        session.add(row)
    row.amount, row.impressions, row.clicks = values.amount, values.impressions, values.clicks
    row.origin = SPEND_TYPED
    session.flush()
    return row


def check_spend_edit(row: CampaignSpend) -> None:
    """An edited spend figure (the list's edit form): the same rules as typing it."""
    row.amount = money(row.amount)
    row.impressions = count(row.impressions, "impressions")
    row.clicks = count(row.clicks, "clicks")
    row.origin = SPEND_TYPED


def campaign_id_for(session, code: str | None) -> int | None:
    """The campaign with this tracking code, if any."""
    code = (code or "").strip()
    if not code:
        return None
    return session.scalar(select(MarketingCampaign.id).where(MarketingCampaign.code == code))


def campaign_codes(session) -> list[tuple[str, str]]:
    """(code, name) of every campaign, the latest first: the dashboard's campaign filter."""
    rows = session.execute(select(MarketingCampaign.code, MarketingCampaign.name)
                           .order_by(MarketingCampaign.start_date.desc(), MarketingCampaign.code))
    return [(code, name) for code, name in rows]
