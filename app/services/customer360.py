"""Customer 360: one timeline of everything that happened with a customer, newest first.

Each source (leads, opportunities and their assignment history, follow-ups, calls, SMS, orders, learning
activity, tags, chats, behaviour events, merges) is read by its own indexed query of at most `limit + 1`
rows before the cursor and the lists are merged here: a page costs about twenty small queries whatever the
customer's history. Events are ordered by (time, source rank, row id), so a cursor taken from the last
event of a page ("load more") names one exact place: every event appears once, even when many share a
second. A plain instant is a cursor too (everything strictly before it).

Scope: the caller has shown the customer is in the viewer's scope (checked again here). Within it, what
belongs to an opportunity is shown only for the opportunities the viewer may see (a salesperson sees
their own opportunity's history, not a colleague's on another product line): leads, orders and chats by
their models' scope declarations, calls by the call's own scope or its opportunity's. A kind whose
resource the viewer may not read (orders without ("can_read", "Order") …) is left out. No phone number
leaves this module: free text (consult notes, follow-ups, SMS content, notes, page addresses) goes
through masking.mask_phones_in_text and phones themselves are never selected.

A customer merged into this one keeps its tags and behaviour events on its own row (the merge moves
leads, calls, SMS, orders and learning): every customer-level source reads this customer's id and the
ids of those merged into it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, false, func, or_, select

from app import clock
from app.models.bigdata import CUSTOMER, OPPORTUNITY, CustomerEvent, CustomerTag, OpportunityTag, Segment, Tag
from app.models.calls import CallRecord
from app.models.commerce import Order
from app.models.employee import Employee
from app.models.learning import LearningActivity
from app.models.marketing import ChatMessage, ChatSession, LandingPage, MarketingCampaign
from app.models.metadata import DictItem
from app.models.sales import (
    LOST,
    OPEN_STATUSES,
    WON,
    AssignmentLog,
    Customer,
    FollowUp,
    Lead,
    Opportunity,
    Pool,
)
from app.models.sms import SmsCampaign, SmsMessage, SmsTemplate
from app.security import policy
from app.security.masking import mask_phones_in_text
from app.security.scope import Viewer, scope_clause
from app.services import segments as segment_rules
from app.services.errors import DomainError

KINDS = ("lead", "opportunity", "follow_up", "call", "sms", "order", "learning", "tag", "chat", "behaviour",
         "customer")
#: kind → the (permission, resource) a viewer needs to see it on the customer page (which needs Customer).
PERMISSIONS = {
    "lead": (policy.READ, policy.LEAD), "opportunity": (policy.READ, policy.OPPORTUNITY),
    "follow_up": (policy.READ, policy.FOLLOW_UP), "call": (policy.READ, policy.CALL_RECORD),
    "sms": (policy.READ, policy.CUSTOMER), "order": (policy.READ, policy.ORDER),
    "learning": (policy.READ, policy.LEARNING), "tag": (policy.READ, policy.TAG),
    "chat": (policy.READ, policy.CHAT), "behaviour": (policy.READ, policy.CUSTOMER),
    "customer": (policy.READ, policy.CUSTOMER),
}
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
MAX_SEGMENTS = 200  # segments are few; past this the summary would cost too many queries
PREVIEW = 120  # characters of a chat's first message
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass
class Event:
    """One thing that happened. `data` holds what the page shows (names resolved, phones masked)."""

    at: dt.datetime  # naive UTC
    kind: str  # one of KINDS
    action: str  # created, assigned, won, paid, … (per kind)
    rank: int  # the source's place in SOURCES: the tie-break between sources at the same instant
    ref: int  # the row's id in its source
    opportunity_id: int | None = None
    data: dict = field(default_factory=dict)

    @property
    def cursor(self) -> str:
        """The cursor that continues after this event."""
        return Cursor(self.at, self.rank, self.ref).token


@dataclass(frozen=True)
class Cursor:
    """A place in the timeline: events strictly after (at, rank, ref) in newest-first order follow it.
    rank -1: everything strictly before `at`."""

    at: dt.datetime
    rank: int = -1
    ref: int = 0

    @property
    def token(self) -> str:
        """`<microseconds since 1970-01-01 UTC>~<rank>~<ref>`: digits only, so that every string of that
        shape (TOKEN) is a place in the timeline."""
        return f"{(self.at - _EPOCH) // dt.timedelta(microseconds=1)}~{self.rank}~{self.ref}"


@dataclass
class Page:
    events: list[Event]
    next: str | None  # the cursor of the next page; None: nothing older


#: A cursor token (the API's document states the same pattern); ranks are those of SOURCES (19 of them).
TOKEN = re.compile(r"^(\d{1,17})~(-1|1[0-8]|[0-9])~(\d{1,18})$")
_OFFSET_AFTER_SPACE = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_cursor(value, blank_is_none: bool = True) -> Cursor | None:
    """A cursor from the API or a caller: a Cursor, a datetime (naive = UTC), a token (`Cursor.token`), or
    an ISO 8601 instant (no offset = business-zone wall time; one beyond what UTC can hold stands for the
    beginning or the end of time). A DomainError (400, field "before") otherwise; a blank one means none
    unless `blank_is_none` is False (the API: `before=` is not a cursor)."""
    if value is None or (blank_is_none and value == ""):
        return None
    if isinstance(value, Cursor):
        return value
    if isinstance(value, dt.datetime):
        return Cursor(clock.to_utc(value) if value.tzinfo else value)
    if not isinstance(value, str) or len(value) > 64 or not value.strip():
        raise DomainError("Not a valid cursor: use the next value of the previous page or an ISO 8601 time",
                          field="before", status=400)
    token = TOKEN.match(value)
    if token:
        return Cursor(_EPOCH + dt.timedelta(microseconds=int(token[1])), int(token[2]), int(token[3]))
    # "+08:00" in a query string arrives as " 08:00" when the client did not encode it.
    text = _OFFSET_AFTER_SPACE.sub(r"\1+\2", value.strip())
    try:
        if ":" not in text:  # a date alone is not an instant
            raise ValueError(value)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DomainError("Not a valid cursor: use the next value of the previous page or an ISO 8601 time",
                          field="before", status=400) from None
    try:
        return Cursor(clock.to_utc(moment))
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        return Cursor(dt.datetime.min if moment.year < 5000 else dt.datetime.max)


def parse_kinds(value) -> tuple[str, ...] | None:
    """Kinds from a comma-separated string or a list; None (or empty) means every kind. A DomainError (400,
    field "kinds") names an unknown one."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str) and len(value) > 400:
        raise DomainError("Unknown kind: %(name)s", field="kinds", status=400, name=value[:40])
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise DomainError("Unknown kind: %(name)s", field="kinds", status=400, name=str(value)[:40])
    kinds = []
    for item in items:
        kind = item.strip() if isinstance(item, str) else None
        if kind not in KINDS:
            raise DomainError("Unknown kind: %(name)s", field="kinds", status=400, name=str(item)[:40])
        kinds.append(kind)
    return tuple(dict.fromkeys(kinds))


def visible_kinds(viewer: Viewer, kinds=None) -> tuple[str, ...]:
    """The kinds asked for (all by default) that the viewer may read."""
    return tuple(k for k in (kinds or KINDS) if viewer.can(*PERMISSIONS[k]))


# --- scope ------------------------------------------------------------------------------------------------
@dataclass
class Context:
    customer: Customer
    customer_ids: list[int]  # the customer and the customers merged into it
    opportunity_ids: list[int]  # its opportunities the viewer may see
    viewer: Viewer


def context(session, customer_id: int, viewer: Viewer) -> Context:
    """The customer (in the viewer's scope, not merged away) with what the viewer may see of it; a
    DomainError 404 otherwise."""
    if not isinstance(customer_id, int) or not 0 < customer_id <= 2**31 - 1:
        raise DomainError("No such customer", field="customer_id", status=404)
    query = select(Customer).where(Customer.id == customer_id, Customer.merged_into_id.is_(None))
    clause = scope_clause(Customer, viewer)
    customer = session.scalar(query if clause is None else query.where(clause))
    if customer is None:
        raise DomainError("No such customer", field="customer_id", status=404)
    merged = list(session.scalars(select(Customer.id).where(Customer.merged_into_id == customer.id)))
    opps = select(Opportunity.id).where(Opportunity.customer_id == customer.id)
    clause = scope_clause(Opportunity, viewer)
    opps = opps if clause is None else opps.where(clause)
    return Context(customer, [customer.id, *merged], list(session.scalars(opps.order_by(Opportunity.id))),
                   viewer)


def _scoped(query, model, viewer: Viewer):
    clause = scope_clause(model, viewer)
    return query if clause is None else query.where(clause)


# --- the sources --------------------------------------------------------------------------------------------
def _keyset(query, time_col, id_col, rank: int, cursor: Cursor | None, limit: int):
    """`query` limited to the rows after `cursor` for the source of rank `rank`, newest first."""
    query = query.where(time_col.is_not(None))
    if cursor is not None:
        if rank < cursor.rank:
            query = query.where(time_col <= cursor.at)
        elif rank == cursor.rank:
            query = query.where(or_(time_col < cursor.at, and_(time_col == cursor.at, id_col < cursor.ref)))
        else:
            query = query.where(time_col < cursor.at)
    return query.order_by(time_col.desc(), id_col.desc()).limit(limit)


@dataclass(frozen=True)
class Source:
    kind: str
    read: Callable  # (session, ctx, rank, cursor, limit) → list[Event]


def _in(column, ids):
    return column.in_(ids) if ids else false()


def _customer_created(session, ctx, rank, cursor, limit):
    q = _keyset(select(Customer.id, Customer.created_at).where(Customer.id == ctx.customer.id),
                Customer.created_at, Customer.id, rank, cursor, limit)
    return [Event(at, "customer", "created", rank, i) for i, at in session.execute(q)]


def _customer_merged(session, ctx, rank, cursor, limit):
    q = _keyset(select(Customer.id, Customer.merged_at, Customer.name)
                .where(Customer.merged_into_id == ctx.customer.id),
                Customer.merged_at, Customer.id, rank, cursor, limit)
    return [Event(at, "customer", "merged", rank, i, data={"merged_id": i, "name": mask_phones_in_text(name)})
            for i, at, name in session.execute(q)]


def _leads(session, ctx, rank, cursor, limit):
    q = _scoped(select(Lead).where(Lead.customer_id.in_(ctx.customer_ids)), Lead, ctx.viewer)
    rows = session.scalars(_keyset(q, Lead.created_at, Lead.id, rank, cursor, limit))
    return [Event(r.created_at, "lead", "created", rank, r.id, r.opportunity_id, {
        "name": mask_phones_in_text(r.name), "source": r.source_id, "product_line": r.product_line_id,
        "campaign": r.campaign, "marketing_campaign": r.campaign_id, "landing_page": r.landing_page_id,
        "channel": r.channel, "region": r.region, "note": mask_phones_in_text(r.consult_note)}) for r in rows]


def _opportunities(time_col, action: str, *where):
    def read(session, ctx, rank, cursor, limit):
        # Columns, not the entity: its eager joins (customer, owner, stage …) would cost more than the query.
        q = select(Opportunity.id, time_col.label("at"), Opportunity.status, Opportunity.product_line_id,
                   Opportunity.stage_id, Opportunity.source_id, Opportunity.campaign,
                   Opportunity.lost_reason_id).where(_in(Opportunity.id, ctx.opportunity_ids), *where)
        rows = session.execute(_keyset(q, time_col, Opportunity.id, rank, cursor, limit))
        return [Event(r.at, "opportunity", r.status if action == "closed" else action,
                      rank, r.id, r.id, {
                          "product_line": r.product_line_id, "stage": r.stage_id, "source": r.source_id,
                          "campaign": r.campaign, "lost_reason": r.lost_reason_id, "status": r.status})
                for r in rows]
    return read


def _assignments(session, ctx, rank, cursor, limit):
    q = select(AssignmentLog).where(_in(AssignmentLog.opportunity_id, ctx.opportunity_ids))
    rows = session.scalars(_keyset(q, AssignmentLog.created_at, AssignmentLog.id, rank, cursor, limit))
    return [Event(r.created_at, "opportunity", r.reason, rank, r.id, r.opportunity_id, {
        "from_employee": r.from_owner_id, "to_employee": r.to_owner_id, "from_pool": r.from_pool_id,
        "to_pool": r.to_pool_id, "actor": r.actor_name, "note": mask_phones_in_text(r.note)}) for r in rows]


def _follow_ups(session, ctx, rank, cursor, limit):
    q = select(FollowUp).where(_in(FollowUp.opportunity_id, ctx.opportunity_ids))
    rows = session.scalars(_keyset(q, FollowUp.created_at, FollowUp.id, rank, cursor, limit))
    return [Event(r.created_at, "follow_up", "created", rank, r.id, r.opportunity_id, {
        "employee": r.employee_id, "type": r.type_id, "content": mask_phones_in_text(r.content),
        "result": mask_phones_in_text(r.result)}) for r in rows]


def _calls(session, ctx, rank, cursor, limit):
    # Never the callee's number: only these columns are read.
    q = select(CallRecord.id, CallRecord.started_at, CallRecord.opportunity_id, CallRecord.employee_id,
               CallRecord.status, CallRecord.result, CallRecord.duration_seconds, CallRecord.answered_at
               ).where(CallRecord.customer_id.in_(ctx.customer_ids))
    own = scope_clause(CallRecord, ctx.viewer)
    if own is not None:
        q = q.where(or_(_in(CallRecord.opportunity_id, ctx.opportunity_ids), own))
    rows = session.execute(_keyset(q, CallRecord.started_at, CallRecord.id, rank, cursor, limit))
    return [Event(r.started_at, "call", "outbound", rank, r.id, r.opportunity_id, {
        "employee": r.employee_id, "status": r.status, "result": r.result, "duration": r.duration_seconds,
        "connected": r.answered_at is not None}) for r in rows]


def _sms(session, ctx, rank, cursor, limit):
    q = select(SmsMessage.id, SmsMessage.created_at, SmsMessage.template_id, SmsMessage.campaign_id,
               SmsMessage.kind, SmsMessage.status, SmsMessage.content, SmsMessage.event,
               SmsMessage.cancel_reason).where(SmsMessage.customer_id.in_(ctx.customer_ids))
    rows = session.execute(_keyset(q, SmsMessage.created_at, SmsMessage.id, rank, cursor, limit))
    return [Event(r.created_at, "sms", r.kind, rank, r.id, None, {
        "template": r.template_id, "sms_campaign": r.campaign_id, "status": r.status, "event": r.event,
        "cancel_reason": r.cancel_reason, "content": mask_phones_in_text(r.content)}) for r in rows]


def _orders(time_col, action: str):
    def read(session, ctx, rank, cursor, limit):
        q = _scoped(select(Order).where(Order.customer_id.in_(ctx.customer_ids)), Order, ctx.viewer)
        rows = session.scalars(_keyset(q, time_col, Order.id, rank, cursor, limit))
        return [Event(getattr(r, time_col.key), "order", action, rank, r.id, r.opportunity_id, {
            "number": r.number, "final_total": r.final_total, "list_total": r.list_total, "status": r.status,
            "origin": r.origin}) for r in rows]
    return read


def _learning(session, ctx, rank, cursor, limit):
    q = select(LearningActivity).where(LearningActivity.customer_id.in_(ctx.customer_ids))
    rows = session.scalars(_keyset(q, LearningActivity.occurred_at, LearningActivity.id, rank, cursor, limit))
    return [Event(r.occurred_at, "learning", "attended" if r.attended else "absent" if r.attended is False
                  else "activity", rank, r.id, None,
                  {"course": r.course, "lesson": r.lesson, "progress": r.progress}) for r in rows]


def _customer_tags(session, ctx, rank, cursor, limit):
    q = select(CustomerTag).where(CustomerTag.customer_id.in_(ctx.customer_ids))
    rows = session.scalars(_keyset(q, CustomerTag.added_at, CustomerTag.tag_id, rank, cursor, limit)).unique()
    return [Event(r.added_at, "tag", "added", rank, r.tag_id, None, {
        "tag": r.tag.name, "tag_source": r.source, "by": r.added_by, "subject": CUSTOMER}) for r in rows]


def _opportunity_tags(session, ctx, rank, cursor, limit):
    q = select(OpportunityTag).where(_in(OpportunityTag.opportunity_id, ctx.opportunity_ids))
    rows = session.scalars(_keyset(q, OpportunityTag.added_at, OpportunityTag.tag_id, rank, cursor,
                                   limit)).unique()
    return [Event(r.added_at, "tag", "added", rank, r.tag_id, r.opportunity_id, {
        "tag": r.tag.name, "tag_source": r.source, "by": r.added_by, "subject": OPPORTUNITY}) for r in rows]


def _chats(session, ctx, rank, cursor, limit):
    q = select(ChatSession).where(_in(ChatSession.opportunity_id, ctx.opportunity_ids))
    rows = session.scalars(_keyset(q, ChatSession.started_at, ChatSession.id, rank, cursor, limit))
    return [Event(r.started_at, "chat", r.status, rank, r.id, r.opportunity_id,
                  {"landing_page": r.landing_page_id}) for r in rows]


def _behaviour(session, ctx, rank, cursor, limit):
    q = select(CustomerEvent).where(CustomerEvent.customer_id.in_(ctx.customer_ids))
    rows = session.scalars(_keyset(q, CustomerEvent.occurred_at, CustomerEvent.id, rank, cursor, limit))
    return [Event(r.occurred_at, "behaviour", r.kind, rank, r.id, None,
                  {"detail": mask_phones_in_text(r.detail)}) for r in rows]


#: In tie-break order (a source's index is its rank). Append new sources at the end: ranks are in cursors.
SOURCES = (
    Source("customer", _customer_created), Source("customer", _customer_merged), Source("lead", _leads),
    Source("opportunity", _opportunities(Opportunity.created_at, "created")),
    Source("opportunity", _opportunities(Opportunity.stage_changed_at, "stage",
                                         Opportunity.status.in_(OPEN_STATUSES))),
    Source("opportunity", _opportunities(Opportunity.closed_at, "closed",
                                         Opportunity.status.in_((WON, LOST)))),
    Source("opportunity", _assignments), Source("follow_up", _follow_ups), Source("call", _calls),
    Source("sms", _sms), Source("order", _orders(Order.created_at, "created")),
    Source("order", _orders(Order.paid_at, "paid")), Source("order", _orders(Order.refunded_at, "refunded")),
    Source("order", _orders(Order.cancelled_at, "cancelled")), Source("learning", _learning),
    Source("tag", _customer_tags), Source("tag", _opportunity_tags), Source("chat", _chats),
    Source("behaviour", _behaviour),
)


# --- the timeline -----------------------------------------------------------------------------------------
def page(session, customer_id: int, viewer: Viewer, before=None, limit: int = DEFAULT_LIMIT,
         kinds=None) -> Page:
    """A page of the customer's timeline, newest first, with the cursor of the next one."""
    cursor = parse_cursor(before)
    wanted = visible_kinds(viewer, parse_kinds(kinds))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise DomainError("Enter a number from %(low)s to %(high)s", field="limit", status=400, low=1,
                          high=MAX_LIMIT)
    ctx = context(session, customer_id, viewer)
    events: list[Event] = []
    for rank, source in enumerate(SOURCES):
        if source.kind in wanted:
            events += source.read(session, ctx, rank, cursor, limit + 1)
    events.sort(key=lambda e: (e.at, e.rank, e.ref), reverse=True)
    shown = events[:limit]
    _resolve(session, shown)
    return Page(shown, shown[-1].cursor if len(events) > limit else None)


def timeline(session, customer_id: int, viewer: Viewer, before=None, limit: int = DEFAULT_LIMIT,
             kinds=None) -> list[Event]:
    """The customer's events before `before` (all when None), newest first, at most `limit`."""
    return page(session, customer_id, viewer, before, limit, kinds).events


_REFERENCES = {  # data key → (model, the column shown)
    "employee": (Employee, Employee.name), "from_employee": (Employee, Employee.name),
    "to_employee": (Employee, Employee.name), "from_pool": (Pool, Pool.name), "to_pool": (Pool, Pool.name),
    "marketing_campaign": (MarketingCampaign, MarketingCampaign.name),
    "landing_page": (LandingPage, LandingPage.title), "template": (SmsTemplate, SmsTemplate.name),
    "sms_campaign": (SmsCampaign, SmsCampaign.name),
}
_DICT_KEYS = ("source", "product_line", "stage", "lost_reason", "type")


def _resolve(session, events: list[Event]) -> None:
    """Ids in the events' data → names (one query per kind of reference); dictionary items → DictItem
    (labelled in the reader's language when shown); chats get their message count and first message."""
    by_model: dict[type, set] = {}
    for e in events:
        for key, (model, _) in _REFERENCES.items():
            if e.data.get(key) is not None:
                by_model.setdefault(model, set()).add(e.data[key])
    names = {}
    for model, ids in by_model.items():
        column = next(c for m, c in _REFERENCES.values() if m is model)
        names[model] = dict(session.execute(select(model.id, column).where(model.id.in_(ids))).all())
    items = {e.data[k] for e in events for k in _DICT_KEYS if e.data.get(k) is not None}
    dict_items = ({i.id: i for i in session.scalars(select(DictItem).where(DictItem.id.in_(items)))}
                  if items else {})
    for e in events:
        for key, (model, _) in _REFERENCES.items():
            if e.data.get(key) is not None:
                e.data[key] = names[model].get(e.data[key], f"#{e.data[key]}")
        for key in _DICT_KEYS:
            if e.data.get(key) is not None:
                e.data[key] = dict_items.get(e.data[key])
    chats = [e for e in events if e.kind == "chat"]
    if chats:
        ids = [e.ref for e in chats]
        counts = dict(session.execute(select(ChatMessage.session_id, func.count()).where(
            ChatMessage.session_id.in_(ids)).group_by(ChatMessage.session_id)).all())
        first = select(ChatMessage.session_id, func.min(ChatMessage.id).label("id")).where(
            ChatMessage.session_id.in_(ids)).group_by(ChatMessage.session_id).subquery()
        bodies = dict(session.execute(select(first.c.session_id, ChatMessage.body)
                                      .join(ChatMessage, ChatMessage.id == first.c.id)).all())
        for e in chats:
            e.data["messages"] = counts.get(e.ref, 0)
            e.data["preview"] = mask_phones_in_text((bodies.get(e.ref) or "")[:PREVIEW])


# --- the summary: tags and segments now ---------------------------------------------------------------------
@dataclass
class Summary:
    tags: list[tuple[str, str]]  # (tag name, source), customer and visible opportunity tags
    segments: list[Segment]  # saved segments that include the customer (or one of its visible opportunities)


def summary(session, customer_id: int, viewer: Viewer, now: dt.datetime | None = None) -> Summary:
    """The customer's tags and the saved segments that include it now (one query per segment)."""
    ctx = context(session, customer_id, viewer)
    tags: list[tuple[str, str]] = []
    if viewer.can(*PERMISSIONS["tag"]):
        rows = session.execute(select(Tag.name, CustomerTag.source)
                               .join(CustomerTag, CustomerTag.tag_id == Tag.id)
                               .where(CustomerTag.customer_id.in_(ctx.customer_ids))).all()
        if ctx.opportunity_ids:
            rows += session.execute(select(Tag.name, OpportunityTag.source)
                                    .join(OpportunityTag, OpportunityTag.tag_id == Tag.id)
                                    .where(OpportunityTag.opportunity_id.in_(ctx.opportunity_ids))).all()
        tags = sorted({(name, source) for name, source in rows})
    found: list[Segment] = []
    if viewer.can(policy.READ, policy.SEGMENT):
        for segment in session.scalars(select(Segment).order_by(Segment.name).limit(MAX_SEGMENTS)):
            criteria = segment_rules.criteria_of(segment)
            if segment.subject == OPPORTUNITY:
                if not ctx.opportunity_ids:
                    continue
                query = segment_rules.ids_query(session, OPPORTUNITY, criteria, now).where(
                    Opportunity.id.in_(ctx.opportunity_ids))
            else:
                query = segment_rules.ids_query(session, CUSTOMER, criteria, now).where(
                    Customer.id == ctx.customer.id)
            if session.scalar(query.limit(1)) is not None:
                found.append(segment)
    return Summary(tags, found)
