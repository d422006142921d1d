"""Test data by factories: one `ModelFactory` per model (Redash's tests/factories.py pattern), so that a
test of one thing builds the few rows it needs instead of leaning on the demo seed.

    unit = ORG_UNIT.create(session, kind="department")
    opp = OPPORTUNITY.create(session, customer=CUSTOMER.create(session, region="上海"))

Every field has a valid default; a default that needs another row (an org unit, a product line …) makes
one when the test gives neither the column (`org_unit_id=`) nor the relationship (`org_unit=`).
Dictionary items come from the reference data when it is there (`reference_item`), else are made.
`FACTORIES` maps each model to its factory (tests/test_factories.py checks every model has one).
The functions further down (org_unit, employee, login_user, make_line …) are the older shortcuts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

from flask_appbuilder.security.sqla.models import Role
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app import clock
from app.clock import utcnow
from app.models.audit import AuditLog
from app.models.bigdata import CustomerEvent, CustomerTag, OpportunityTag, ScoringModel, Segment, Tag
from app.models.calls import (
    CALL_ENDED,
    CALL_RINGING,
    COUNTER_CALLEE_DAY,
    CallCounter,
    CallEvent,
    CallLine,
    CallNumber,
    CallRecord,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.models.commerce import Order, OrderItem, Product, ShopEvent
from app.models.dashboard import (
    DashActivityDay,
    DashCohortDay,
    DashFirstContactDay,
    DashIdleSnapshot,
    DashRefreshState,
    DashSmsDay,
)
from app.models.employee import CrmUser, Employee
from app.models.inbox import JOB_FINISHED, InboxNotification
from app.models.jobs import QUEUED, JobRun
from app.models.learning import LearningActivity, LearningSummary
from app.models.marketing import CampaignSpend, ChatMessage, ChatSession, LandingPage, MarketingCampaign
from app.models.metadata import ConfigItem, DictItem, DictType
from app.models.org import OrgUnit
from app.models.qa import QA_PENDING, QaCheckItem, QaInspection, QaPlan, QaScorecard
from app.models.sales import (
    DISPATCH,
    ROUND_ROBIN,
    WAITING,
    AssignmentLog,
    CirculationRule,
    ClaimCounter,
    Customer,
    DispatchRule,
    FollowUp,
    Lead,
    LeadImport,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.models.security import SCOPE_OWN, RoleDataScope
from app.models.sms import (
    DRAFT,
    MARKETING,
    MSG_PENDING,
    BlacklistEntry,
    SensitiveWord,
    SinkMessage,
    SmsAudienceEntry,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsReceipt,
    SmsTemplate,
    new_uid,
)
from app.services import reference

_seq = itertools.count(1)
PASSWORD = "Test-Pass-2026"


# --- the pattern ------------------------------------------------------------------------------------
class Sequence:
    """A default numbered per use: Sequence("Unit {}") gives "Unit 7", "Unit 8" … (one counter for the
    whole module, so values stay unique across factories and tests of a process)."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    def __call__(self, session):
        return self.pattern.format(next(_seq))


class ModelFactory:
    """Defaults for one model. A callable default is called with the session, and only when the test
    gives neither that field nor, for `x_id`, the relationship `x`. `complete(session, values)` fills
    fields that depend on others (a call's interface is its line's)."""

    def __init__(self, model, complete=None, **defaults):
        self.model = model
        self.complete = complete
        self.defaults = defaults

    def values(self, session, overrides: dict) -> dict:
        values = {}
        for key, default in self.defaults.items():
            if key in overrides or (key.endswith("_id") and key[:-3] in overrides):
                continue
            values[key] = default(session) if callable(default) else default
        values.update(overrides)
        if self.complete is not None:
            self.complete(session, values)
        return values

    def build(self, session, **overrides):
        """A new row added to the session, not yet committed."""
        obj = self.model(**self.values(session, overrides))
        session.add(obj)
        return obj

    def create(self, session, **overrides):
        """A new row, committed."""
        obj = self.build(session, **overrides)
        session.commit()
        return obj


def _new(factory: ModelFactory):
    """A default: the id of a new row of `factory`."""
    return lambda session: factory.create(session).id


def _now(delta: dt.timedelta = dt.timedelta(0)):
    return lambda session: utcnow() + delta


def reference_item(session, type_code: str, code: str | None = None) -> DictItem:
    """An enabled item of a dictionary (the one with `code`, else the first): the reference data's when
    it is there, else one made for the test (with its dictionary type when that is missing too)."""
    query = (select(DictItem).join(DictItem.dict_type)
             .where(DictType.code == type_code, DictItem.enabled.is_(True)))
    if code is not None:
        query = query.where(DictItem.code == code)
    item = session.scalars(query.order_by(DictItem.sort, DictItem.id).limit(1)).first()
    if item is not None:
        return item
    dtype = session.scalar(select(DictType).where(DictType.code == type_code))
    if dtype is None:
        dtype = DICT_TYPE.create(session, code=type_code)
    return DICT_ITEM.create(session, dict_type_id=dtype.id, **({"code": code} if code else {}))


def _item(type_code: str, code: str | None = None):
    return lambda session: reference_item(session, type_code, code).id


# --- metadata, org, people --------------------------------------------------------------------------
DICT_TYPE = ModelFactory(DictType, code=Sequence("test_dict_{}"), name_zh=Sequence("测试字典{}"),
                         name_en=Sequence("Test dictionary {}"))
DICT_ITEM = ModelFactory(DictItem, dict_type_id=_new(DICT_TYPE), code=Sequence("item_{}"),
                         label_zh=Sequence("选项{}"), label_en=Sequence("Option {}"), sort=0, enabled=True)
CONFIG_ITEM = ModelFactory(ConfigItem, key=Sequence("test.key_{}"), value_type="str", value="value",
                           description="A config item of a test")
ORG_UNIT = ModelFactory(OrgUnit, name=Sequence("Unit {}"), code=Sequence("U{:05d}"), kind="team")
EMPLOYEE = ModelFactory(Employee, employee_no=Sequence("T{:05d}"), name=Sequence("Employee {}"),
                        org_unit_id=_new(ORG_UNIT), phone=Sequence("+86139{:08d}"), hr_status="active")
USER = ModelFactory(CrmUser, username=Sequence("user_{}"), first_name="Test", last_name=Sequence("User {}"),
                    email=Sequence("user{}@example.com"), active=True,
                    password=lambda session: generate_password_hash(PASSWORD))
ROLE = ModelFactory(Role, name=Sequence("Test role {}"))
ROLE_DATA_SCOPE = ModelFactory(RoleDataScope, role_id=_new(ROLE), scope=SCOPE_OWN)
AUDIT_LOG = ModelFactory(AuditLog, created_at=_now(), actor_name="test", action="update",
                         target_type="employee", target_id=Sequence("{}"), summary="changed by a test")
JOB_RUN = ModelFactory(JobRun, kind=DISPATCH, status=QUEUED, created_at=_now())
INBOX_NOTIFICATION = ModelFactory(InboxNotification, recipient_id=_new(USER), kind=JOB_FINISHED,
                                  msgid="Your job %(job)s has finished", params=json.dumps({"job": "#1"}),
                                  created_at=_now())


# --- sales --------------------------------------------------------------------------------------------
CUSTOMER = ModelFactory(Customer, phone=Sequence("+86137{:08d}"), name=Sequence("Customer {}"),
                        marketing_consent=True)
LEAD_IMPORT = ModelFactory(LeadImport, filename=Sequence("leads-{}.csv"), sha256=Sequence("{:064d}"))
POOL = ModelFactory(Pool, name=Sequence("Pool {}"), org_unit_id=_new(ORG_UNIT), daily_claim_limit=20,
                    enabled=True)
OPPORTUNITY = ModelFactory(Opportunity, customer_id=_new(CUSTOMER),
                           product_line_id=_item(reference.PRODUCT_LINE),
                           stage_id=_item(reference.OPPORTUNITY_STAGE, "new"), status=WAITING)


def _lead_phone(session, values: dict) -> None:
    """A lead carries its customer's phone."""
    if "phone" not in values:
        customer = values.get("customer") or session.get(Customer, values["customer_id"])
        values["phone"] = customer.phone


LEAD = ModelFactory(Lead, complete=_lead_phone, customer_id=_new(CUSTOMER),
                    product_line_id=_item(reference.PRODUCT_LINE), source_id=_item(reference.LEAD_SOURCE),
                    name=Sequence("Lead {}"), channel="form")
FOLLOW_UP = ModelFactory(FollowUp, opportunity_id=_new(OPPORTUNITY), employee_id=_new(EMPLOYEE),
                         type_id=_item(reference.FOLLOWUP_TYPE), content="Called: wants a trial lesson")
ASSIGNMENT_LOG = ModelFactory(AssignmentLog, created_at=_now(), opportunity_id=_new(OPPORTUNITY),
                              reason=DISPATCH, actor_name="test")
SALES_PROFILE = ModelFactory(SalesProfile, employee_id=_new(EMPLOYEE), weight=100, paused=False)
OWNER_COOLING = ModelFactory(OwnerCooling, opportunity_id=_new(OPPORTUNITY), employee_id=_new(EMPLOYEE),
                             until=_now(dt.timedelta(days=3)))
CLAIM_COUNTER = ModelFactory(ClaimCounter, employee_id=_new(EMPLOYEE), pool_id=_new(POOL),
                             day=lambda session: clock.today(), claimed=1)
CIRCULATION_RULE = ModelFactory(CirculationRule, name=Sequence("Circulation rule {}"), enabled=True,
                                org_unit_id=_new(ORG_UNIT), idle_days=7, cooling_days=0)
DISPATCH_RULE = ModelFactory(DispatchRule, name=Sequence("Dispatch rule {}"), priority=100, enabled=True,
                             target_org_unit_id=_new(ORG_UNIT), strategy=ROUND_ROBIN)


# --- calls and QA -------------------------------------------------------------------------------------
INTERFACE = ModelFactory(OutboundInterface, name=Sequence("Interface {}"), provider="simulator")
LINE = ModelFactory(CallLine, name=Sequence("Line {}"), interface_id=_new(INTERFACE), concurrency_limit=30)
NUMBER = ModelFactory(CallNumber, number=Sequence("+86105{:07d}"), line_id=_new(LINE), daily_cap=200)
SEAT = ModelFactory(Seat, seat_no=Sequence("S{:05d}"), line_id=_new(LINE), employee_id=_new(EMPLOYEE),
                    active=True)
DO_NOT_CALL = ModelFactory(DoNotCall, phone=Sequence("+86136{:08d}"), reason="asked not to be called",
                           source="manual")
CALL_COUNTER = ModelFactory(CallCounter, kind=COUNTER_CALLEE_DAY, key=Sequence("+86135{:08d}"),
                            window=lambda session: dt.datetime.combine(clock.today(), dt.time()), count=1)


def _call_parties(session, values: dict) -> None:
    """A call goes through its line's interface, on behalf of its employee's org unit."""
    if "interface_id" not in values and "interface" not in values:
        line = values.get("line") or session.get(CallLine, values["line_id"])
        values["interface_id"] = line.interface_id
    if "org_unit_id" not in values and "org_unit" not in values:
        emp = values.get("employee") or session.get(Employee, values["employee_id"])
        values["org_unit_id"] = emp.org_unit_id


CALL_RECORD = ModelFactory(CallRecord, complete=_call_parties, line_id=_new(LINE), employee_id=_new(EMPLOYEE),
                           callee_phone=Sequence("+86138{:08d}"), status=CALL_ENDED,
                           started_at=_now(-dt.timedelta(minutes=10)), duration_seconds=0)
CALL_EVENT = ModelFactory(CallEvent, interface_id=_new(INTERFACE), event_key=Sequence("event-{}"),
                          status=CALL_RINGING, received_at=_now())
SCORECARD = ModelFactory(QaScorecard, name=Sequence("Scorecard {}"), base_score=100, enabled=True)
CHECK_ITEM = ModelFactory(QaCheckItem, scorecard_id=_new(SCORECARD), name=Sequence("Check {}"),
                          kind="manual", points=-10, position=0)
QA_PLAN = ModelFactory(QaPlan, name=Sequence("QA plan {}"), scorecard_id=_new(SCORECARD),
                       org_unit_id=_new(ORG_UNIT), mode="count", amount=5, period="week")


def _inspected_agent(session, values: dict) -> None:
    """The agent of an inspection is the one who made the call."""
    call = values.get("call") or session.get(CallRecord, values["call_id"])
    values.setdefault("agent_id", call.employee_id)
    values.setdefault("org_unit_id", call.org_unit_id)


QA_INSPECTION = ModelFactory(QaInspection, complete=_inspected_agent, call_id=_new(CALL_RECORD),
                             scorecard_id=_new(SCORECARD), status=QA_PENDING)


# --- SMS ------------------------------------------------------------------------------------------------
SMS_CHANNEL = ModelFactory(SmsChannel, name=Sequence("Channel {}"), provider="sink", signature="测试签名",
                           opt_out_text="拒收请回复R", rate_limit=500, batch_size=100)
SMS_TEMPLATE = ModelFactory(SmsTemplate, name=Sequence("Template {}"), kind=MARKETING,
                            channel_id=_new(SMS_CHANNEL), body="{name}您好，试听课预约中。拒收请回复R",
                            variables="name", status=DRAFT)
SENSITIVE_WORD = ModelFactory(SensitiveWord, word=Sequence("敏感词{}"), action="block", allowed=False)
BLACKLIST_ENTRY = ModelFactory(BlacklistEntry, phone=Sequence("+86134{:08d}"), reason="opted out",
                               source="manual")
SMS_CAMPAIGN = ModelFactory(SmsCampaign, name=Sequence("Campaign {}"), template_id=_new(SMS_TEMPLATE),
                            audience=json.dumps({"kind": "filter", "region": "测试区"}, ensure_ascii=False),
                            status="draft", created_by="test")
SMS_MESSAGE = ModelFactory(SmsMessage, phone=Sequence("+86133{:08d}"), content="【测试签名】您好",
                           kind=MARKETING, status=MSG_PENDING, created_at=_now())
SMS_RECEIPT = ModelFactory(SmsReceipt, kind="inbound", phone=Sequence("+86132{:08d}"), text="R",
                           received_at=_now())
SINK_MESSAGE = ModelFactory(SinkMessage, correlation=lambda session: new_uid(),
                            provider_id=Sequence("sink-{}"), phone=Sequence("+86131{:08d}"),
                            content="【测试签名】您好", accepted_at=_now())
SMS_AUDIENCE_ENTRY = ModelFactory(SmsAudienceEntry, campaign_id=_new(SMS_CAMPAIGN),
                                  line=lambda session: next(_seq), phone=Sequence("+86130{:08d}"))

# --- the dashboard's aggregates (app.models.dashboard) ----------------------------------------------------
def _today(session):
    return clock.local_date(utcnow())


DASH_COHORT_DAY = ModelFactory(DashCohortDay, day=_today, leads=1, assigned=1, contacted=1, contacted_24h=1,
                               won=0, lost=0)
DASH_FIRST_CONTACT_DAY = ModelFactory(DashFirstContactDay, day=_today, bucket=30, n=1)
DASH_ACTIVITY_DAY = ModelFactory(DashActivityDay, day=_today, follow_ups=1, dispatched=0, recycled=0, dials=0,
                                 connected=0, talk_seconds=0, qa_scored=0, qa_score_sum=0)
DASH_IDLE_SNAPSHOT = ModelFactory(DashIdleSnapshot, bucket=0, n=1)
DASH_SMS_DAY = ModelFactory(DashSmsDay, day=lambda session: clock.local_date(utcnow()) - dt.timedelta(
    days=next(_seq)), sent=1, delivered=1, failed=0, segments=1, cost=0.045)
DASH_REFRESH_STATE = ModelFactory(DashRefreshState, id=lambda session: next(_seq) + 1000, days_refreshed=0,
                                  version=0)

# --- the systems around the sales domain ------------------------------------------------------------
CAMPAIGN = ModelFactory(MarketingCampaign, code=Sequence("test-campaign-{}"), name=Sequence("Campaign {}"),
                        channel_id=_item(reference.MARKETING_CHANNEL), budget=1000, start_date=_today,
                        active=True)
CAMPAIGN_SPEND = ModelFactory(CampaignSpend, campaign_id=_new(CAMPAIGN), day=_today, amount=100,
                              origin="typed")
LANDING_PAGE = ModelFactory(LandingPage, slug=Sequence("test-page-{}"), title=Sequence("测试落地页 {}"),
                            product_line_id=_item(reference.PRODUCT_LINE), chat_enabled=True, published=False)
CHAT_SESSION = ModelFactory(ChatSession, token=Sequence("chat-token-{}"), status="open", started_at=_now())
CHAT_MESSAGE = ModelFactory(ChatMessage, session_id=_new(CHAT_SESSION), sender="visitor", body="你好",
                            created_at=_now())
PRODUCT = ModelFactory(Product, code=Sequence("SKU-{}"), name=Sequence("Product {}"),
                       product_line_id=_item(reference.PRODUCT_LINE), list_price=100, active=True)
ORDER = ModelFactory(Order, number=Sequence("SO-{}"), opportunity_id=_new(OPPORTUNITY),
                     customer_id=_new(CUSTOMER), status="pending", approval="none", list_total=0,
                     final_total=0, origin="console")
ORDER_ITEM = ModelFactory(OrderItem, order_id=_new(ORDER), product_id=_new(PRODUCT), quantity=1,
                          list_price=100, final_price=100)
SHOP_EVENT = ModelFactory(ShopEvent, event_id=Sequence("evt-{}"), event_type="order.created",
                          outcome="applied", received_at=_now())
LEARNING_ACTIVITY = ModelFactory(LearningActivity, external_id=Sequence("act-{}"), customer_id=_new(CUSTOMER),
                                 course="K12 数学", lesson=Sequence("第 {} 课"), attended=True, progress=10,
                                 occurred_at=_now())
LEARNING_SUMMARY = ModelFactory(LearningSummary, customer_id=_new(CUSTOMER), lessons_attended=1,
                                lessons_missed=0, courses=1, updated_at=_now())
TAG = ModelFactory(Tag, code=Sequence("tag-{}"), name=Sequence("标签 {}"), source="manual",
                   subject="customer",
                   enabled=True, member_count=0)
CUSTOMER_TAG = ModelFactory(CustomerTag, tag_id=_new(TAG), customer_id=_new(CUSTOMER), source="manual",
                            added_at=_now())
OPPORTUNITY_TAG = ModelFactory(OpportunityTag, tag_id=_new(TAG), opportunity_id=_new(OPPORTUNITY),
                               source="manual", added_at=_now())
CUSTOMER_EVENT = ModelFactory(CustomerEvent, external_id=Sequence("evt-{}"), customer_id=_new(CUSTOMER),
                              kind="page_view", detail="https://www.example.com/price", occurred_at=_now())
SEGMENT = ModelFactory(Segment, name=Sequence("Segment {}"), subject="customer", criteria="{}")
SCORING_MODEL = ModelFactory(ScoringModel, method="naive_bayes", variables="[]", tables="{}", won=0, lost=0,
                             active=True)

#: model → its factory.
FACTORIES = {f.model: f for f in list(globals().values()) if isinstance(f, ModelFactory)}


# --- shortcuts ----------------------------------------------------------------------------------------
def org_unit(session, name=None, parent=None, kind="team", code=None) -> OrgUnit:
    n = next(_seq)
    return ORG_UNIT.create(session, name=name or f"Unit {n}", parent=parent, kind=kind,
                           code=code or f"U{n:05d}")


def employee(session, unit, name=None, manager=None, hr_status="active", phone=None, no=None) -> Employee:
    n = next(_seq)
    return EMPLOYEE.create(session, employee_no=no or f"T{n:05d}", name=name or f"Employee {n}",
                           org_unit_id=unit.id, manager_id=manager.id if manager else None,
                           hr_status=hr_status, phone=phone or f"+86139{n:08d}")


def login_user(app, session, emp: Employee, *role_names: str, password: str = PASSWORD):
    """Give `emp` a login with the named roles; returns the user."""
    sm = app.appbuilder.sm
    roles = [sm.find_role(r) for r in role_names]
    assert all(roles), role_names
    user = sm.add_user(f"user{emp.id}", emp.name, "-", f"user{emp.id}@example.com", roles, password)
    assert user, "add_user failed"
    emp.user_id = user.id
    session.commit()
    return user


def salesperson(app, session, unit, *, weight: int = 100, **fields) -> Employee:
    """An active employee of `unit` with a Salesperson login and a sales profile (dispatch can pick them)."""
    emp = employee(session, unit, **fields)
    login_user(app, session, emp, "Salesperson")
    SALES_PROFILE.create(session, employee_id=emp.id, weight=weight)
    return emp


def employee_by_username(session, username: str) -> Employee:
    return session.scalar(select(Employee).join(Employee.user).where(CrmUser.username == username))


def set_config(session, key: str, value) -> ConfigItem:
    """Set a config item's value (JSON unless a str), making the item when the install has none; commits."""
    item = session.scalar(select(ConfigItem).where(ConfigItem.key == key))
    if item is None:
        declared = reference.setting(key).value_type if reference.declared(key) else "json"
        item = CONFIG_ITEM.build(session, key=key, value_type=declared)
    item.value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    session.commit()
    return item


def dict_item(session, type_code: str, code: str) -> DictItem:
    return session.scalar(
        select(DictItem).join(DictItem.dict_type).where(DictType.code == type_code, DictItem.code == code)
    )


# --- calls and QA (issue #5) ---------------------------------------------------------------------------
def make_call_record(session, employee: Employee, **kw):
    """A CallRecord of `employee` (connected, 120 s, started now unless given), on the first call line
    (a simulator interface and a line are created when there is none)."""
    line = session.scalar(select(CallLine).order_by(CallLine.id).limit(1)) or LINE.create(session)
    started = kw.pop("started_at", None) or utcnow() - dt.timedelta(minutes=10)
    duration = kw.pop("duration_seconds", 120)
    connected = kw.pop("connected", True)
    transcript = kw.pop("transcript", None)
    if transcript is not None and not isinstance(transcript, str):
        transcript = json.dumps(transcript, ensure_ascii=False)
    values = dict(
        interface_id=line.interface_id, line_id=line.id, employee_id=employee.id,
        org_unit_id=employee.org_unit_id, callee_phone=f"+86138{next(_seq):08d}", status=CALL_ENDED,
        started_at=started, answered_at=started + dt.timedelta(seconds=5) if connected else None,
        ended_at=started + dt.timedelta(seconds=5 + (duration if connected else 0)),
        duration_seconds=duration if connected else 0, transcript=transcript,
    )
    values.update(kw)
    return CALL_RECORD.create(session, **values)


def make_scorecard(session, items=(), base_score=100, name=None):
    """A QaScorecard with check items given as dicts of QaCheckItem fields (name defaults per kind)."""
    card = SCORECARD.build(session, name=name or f"Scorecard {next(_seq)}", base_score=base_score)
    for position, spec in enumerate(items):
        spec = {"name": f"{spec.get('kind', 'manual')} {position}", "position": position, **spec}
        card.items.append(QaCheckItem(**spec))
    session.commit()
    return card


# --- outbound calling (telephony) --------------------------------------------------------------------
def make_interface(session, provider="simulator", options=None, name=None, **fields):
    n = next(_seq)
    return INTERFACE.create(session, name=name or f"Interface {n}", provider=provider,
                            options=json.dumps(options) if isinstance(options, dict) else options, **fields)


def make_line(session, interface, name=None, calling_windows=None, concurrency_limit=30, **fields):
    n = next(_seq)
    return LINE.create(session, name=name or f"Line {n}", interface_id=interface.id,
                       calling_windows=calling_windows, concurrency_limit=concurrency_limit, **fields)


def make_number(session, line, number=None, area=None, daily_cap=200, **fields):
    n = next(_seq)
    return NUMBER.create(session, number=number or f"+86105{n:07d}", line_id=line.id, area=area,
                         daily_cap=daily_cap, **fields)


def make_seat(session, line, emp, seat_no=None, active=True):
    n = next(_seq)
    return SEAT.create(session, seat_no=seat_no or f"S{n:05d}", line_id=line.id,
                       employee_id=emp.id if emp else None, active=active)
