"""The customer domain (客户域): one customer per normalised phone, registration of the learning /
e-commerce side's users, and merging two customers found to be one person.

Merging customer B into A (the survivor) moves B's leads, opportunities (with their follow-ups and
assignment history), calls and SMS history to A. B stays as a record with a pointer (`merged_into_id`):
lookups by phone or registered user id follow it, so leads and registrations with B's phone land on A;
lists and choices leave B out. Each merge writes one audit row (who, when, which into which, what moved).

Refused where both have an open opportunity in the same product line (at most one may be open per customer
and product line), and where their open opportunities are owned by different people unless the merger
chooses the owner: the others' are then assigned to that owner by app.services.ownership (logged).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from app.clock import utcnow
from app.models.calls import CallRecord
from app.models.commerce import Order
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import OPEN_STATUSES, OWNED, Customer, FollowUp, Lead, Opportunity
from app.models.security import SCOPE_ALL
from app.models.sms import SmsMessage
from app.security import policy
from app.security.scope import Viewer, restrict
from app.services import audit, ownership
from app.services.errors import DomainError
from app.services.phones import normalise_phone

MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
USER_ID_MAX = NAME_MAX = 64
PHONE_MAX = 32  # longer is no phone number (and would be echoed back in the error)
MERGE_ACTION = "customer_merge"  # AuditLog.action


# --- lookups -------------------------------------------------------------------------------------------
def live(session, customer: Customer | None) -> Customer | None:
    """The customer that stands for `customer` now: itself, or the one it was merged into."""
    seen = set()
    while customer is not None and customer.merged_into_id is not None and customer.id not in seen:
        seen.add(customer.id)
        customer = session.get(Customer, customer.merged_into_id)
    return customer


def by_phone(session, phone: str) -> Customer | None:
    """The live customer for a normalised phone (following a merge)."""
    return live(session, session.scalar(select(Customer).where(Customer.phone == phone)))


def by_registered_user(session, registered_user_id: str) -> Customer | None:
    return live(session, session.scalar(select(Customer).where(
        Customer.registered_user_id == registered_user_id)))


def not_merged():
    """WHERE condition: the customers still standing (lists, choices)."""
    return Customer.merged_into_id.is_(None)


def customer_number(value, field_name: str) -> int:
    """A customer id given by a person or a client: a whole number in range, else a 422 naming the field."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        value = int(value.strip())
    if value in (None, ""):
        raise DomainError("Give the customer number", field=field_name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise DomainError("%(value)s is not a customer number", field=field_name, value=repr(value)[:40])
    return value


# --- registration --------------------------------------------------------------------------------------
@dataclass
class Registration:
    registered_user_id: str
    phone: str
    name: str | None = None


def _text(body: dict, name: str, limit: int, problems: dict, numbers: bool = False) -> str | None:
    """A text field of a JSON body (a whole number too when `numbers`): other types and overlong values
    are problems, never converted with str()."""
    value = body.get(name)
    if value is None:
        return None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problems[name] = "must be a string or a whole number" if numbers else "must be a string"
        return None
    value = value.strip()
    if len(value) > limit:
        problems[name] = f"at most {limit} characters"
        return None
    return value or None


def parse_registration(body: dict, region: str = "CN") -> tuple[Registration | None, dict]:
    """Validate POST /api/v1/customer/register's body: (registration, {}) or (None, problems by field)."""
    problems: dict[str, str] = {}
    user_id = _text(body, "registered_user_id", USER_ID_MAX, problems, numbers=True)
    if user_id is None and "registered_user_id" not in problems:
        problems["registered_user_id"] = "required"
    name = _text(body, "name", NAME_MAX, problems)
    raw = _text(body, "phone", PHONE_MAX, problems, numbers=True)
    phone = None
    if "phone" not in problems:
        try:
            phone = normalise_phone(raw, region)
            if phone is None:
                problems["phone"] = "required"
        except DomainError as exc:
            problems["phone"] = exc.message
    if problems:
        return None, problems
    return Registration(user_id, phone, name), {}


def register(session, values: Registration) -> Customer:
    """A registered user of the learning / e-commerce side meets the customer of the same phone (created
    if new). 409 when the phone and the user id belong to two customers: merge them first (`merge`)."""
    by_user = by_registered_user(session, values.registered_user_id)
    owner_of_phone = by_phone(session, values.phone)
    if by_user is None and owner_of_phone is None:
        customer = Customer(phone=values.phone, name=values.name,
                            registered_user_id=values.registered_user_id)
        session.add(customer)
    elif by_user is None:
        if owner_of_phone.registered_user_id:  # the phone's customer is another registered user
            raise DomainError(
                "Phone %(phone)s belongs to registered user %(user)s "
                "(customer #%(customer)s), not %(other)s", field="phone", status=409, phone=values.phone,
                user=owner_of_phone.registered_user_id, customer=owner_of_phone.id,
                other=values.registered_user_id)
        owner_of_phone.registered_user_id = values.registered_user_id
        owner_of_phone.name = owner_of_phone.name or values.name
        customer = owner_of_phone
    elif owner_of_phone is None or owner_of_phone.id == by_user.id:
        customer = by_user
    else:
        raise DomainError(
            "Phone %(phone)s belongs to another customer (#%(customer)s) than user %(user)s "
            "(#%(other)s): merge them first", field="phone", status=409, phone=values.phone,
            customer=owner_of_phone.id, user=values.registered_user_id, other=by_user.id)
    session.flush()
    return customer


# --- merge ---------------------------------------------------------------------------------------------
@dataclass
class MergePlan:
    """What a merge will do, as checked (`check_merge`)."""

    survivor: Customer
    merged: Customer
    owners: list[Employee]  # the owners of open opportunities of the two customers
    owner: Employee | None = None  # who keeps them all (chosen when there are several)
    reassign: list[int] = field(default_factory=list)  # open opportunities moving to `owner`
    counts: dict = field(default_factory=dict)  # the merged customer's rows that move


@dataclass
class MergeResult:
    plan: MergePlan
    moved: dict
    reassigned: list[int]


def _customers(session, ids: list[int], lock: bool) -> dict[int, Customer]:
    query = select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)
    if lock:  # also keeps a concurrent intake from adding an opportunity to either meanwhile
        query = query.with_for_update(of=Customer).execution_options(populate_existing=True)
    return {c.id: c for c in session.scalars(query)}


def _check_scope(session, viewer: Viewer, by_field: dict[str, int]) -> None:
    """Both customers, and every opportunity of theirs, inside the viewer's data scope."""
    if viewer.scope == SCOPE_ALL:
        return
    ids = list(by_field.values())
    query = restrict(select(Customer.id).where(Customer.id.in_(ids)), Customer, viewer)
    visible = set(session.scalars(query))
    for name, customer_id in by_field.items():
        if customer_id not in visible:
            raise DomainError("No such customer, or outside your data scope: #%(id)s", field=name,
                              status=404, id=customer_id)
    of_them = select(func.count(Opportunity.id)).where(Opportunity.customer_id.in_(ids))
    if session.scalar(restrict(of_them, Opportunity, viewer)) != session.scalar(of_them):
        raise DomainError("These customers have opportunities outside your data scope: only someone "
                          "who sees all of them can merge them", status=403)


def _counts(session, customer_id: int) -> dict:
    opp_ids = select(Opportunity.id).where(Opportunity.customer_id == customer_id)
    count = session.scalar
    return {"leads": count(select(func.count(Lead.id)).where(Lead.customer_id == customer_id)),
            "opportunities": count(select(func.count()).select_from(opp_ids.subquery())),
            "follow_ups": count(select(func.count(FollowUp.id)).where(FollowUp.opportunity_id.in_(opp_ids))),
            "calls": count(select(func.count(CallRecord.id)).where(CallRecord.customer_id == customer_id))}


def check_merge(session, viewer: Viewer, survivor_id, merged_id, owner_id=None, lock: bool = False,
                require_owner: bool = True) -> MergePlan:
    """Validate merging customer `merged_id` into `survivor_id` for `viewer`: the plan, or DomainError.
    `require_owner=False` (a preview) lets a missing choice of owner pass, for the page to ask."""
    if not viewer.can(policy.MERGE, policy.CUSTOMER):
        raise DomainError("You may not merge customers", status=403)
    survivor_id = customer_number(survivor_id, "survivor_id")
    merged_id = customer_number(merged_id, "merged_id")
    if survivor_id == merged_id:
        raise DomainError("A customer cannot be merged into itself", field="merged_id")
    found = _customers(session, [survivor_id, merged_id], lock)
    for name, customer_id in (("survivor_id", survivor_id), ("merged_id", merged_id)):
        customer = found.get(customer_id)
        if customer is None:
            raise DomainError("No such customer, or outside your data scope: #%(id)s", field=name, status=404,
                              id=customer_id)
        if customer.merged_into_id is not None:
            raise DomainError("Customer #%(id)s was already merged into #%(into)s", field=name, status=409,
                              id=customer_id, into=customer.merged_into_id)
    _check_scope(session, viewer, {"survivor_id": survivor_id, "merged_id": merged_id})
    survivor, merged = found[survivor_id], found[merged_id]
    open_opps = list(session.scalars(select(Opportunity).where(
        Opportunity.customer_id.in_([survivor_id, merged_id]), Opportunity.status.in_(OPEN_STATUSES))
        .order_by(Opportunity.id)))
    by_line: dict[int, Opportunity] = {}
    for opp in open_opps:
        other = by_line.setdefault(opp.product_line_id, opp)
        if other.customer_id != opp.customer_id:
            raise DomainError(
                "Both customers have an open opportunity in %(line)s (#%(a)s and #%(b)s): close one of them "
                "first", status=409, line=str(opp.product_line), a=other.id, b=opp.id)
    owned = [o for o in open_opps if o.status == OWNED]
    owners = sorted({o.owner for o in owned}, key=lambda e: e.id)
    plan = MergePlan(survivor, merged, owners, counts=_counts(session, merged_id))
    if owner_id not in (None, ""):
        try:
            chosen = int(owner_id) if not isinstance(owner_id, bool) else None
        except (TypeError, ValueError):
            chosen = None
        plan.owner = next((e for e in owners if e.id == chosen), None)
        if plan.owner is None:
            raise DomainError("Choose one of the owners of their open opportunities: %(owners)s",
                              field="owner_id", owners=_names(owners) or "—")
        if plan.owner.hr_status == HR_RESIGNED:
            raise DomainError("%(name)s has resigned and cannot hold opportunities", field="owner_id",
                              status=409, name=str(plan.owner))
        plan.reassign = [o.id for o in owned if o.owner_id != plan.owner.id]
    elif len(owners) > 1 and require_owner:
        raise DomainError("Their open opportunities are owned by different people (%(owners)s): choose who "
                          "keeps them", field="owner_id", status=409, owners=_names(owners))
    return plan


def _names(employees) -> str:
    return ", ".join(f"{e} (#{e.id})" for e in employees)


def merge(session, viewer: Viewer, survivor_id, merged_id, owner_id=None, now: dt.datetime | None = None,
          actor=None) -> MergeResult:
    """Merge customer `merged_id` into `survivor_id` (see the module docstring). The caller commits."""
    plan = check_merge(session, viewer, survivor_id, merged_id, owner_id, lock=True)
    now = now or utcnow()
    survivor, merged = plan.survivor, plan.merged
    note = f"customer #{merged.id} merged into #{survivor.id}"
    reassigned = []
    if plan.reassign:  # through the ownership service: AssignmentLog rows, sales profile counters
        reassigned = ownership.assign(session, plan.reassign, plan.owner, now, actor, note=note).moved
    opp_ids = list(session.scalars(select(Opportunity.id).where(Opportunity.customer_id == merged.id)
                                   .order_by(Opportunity.id)))

    def move(model) -> int:
        stmt = (update(model).where(model.customer_id == merged.id).values(customer_id=survivor.id)
                .execution_options(synchronize_session=False))
        return session.execute(stmt).rowcount

    from app.services import learning  # (it finds customers through this module)

    moved = {"opportunities": opp_ids, "leads": move(Lead), "follow_ups": plan.counts["follow_ups"],
             "calls": move(CallRecord), "sms_messages": move(SmsMessage), "orders": move(Order),
             "learning_activities": learning.move_to_survivor(session, merged.id, survivor.id)}
    session.execute(update(Opportunity).where(Opportunity.id.in_(opp_ids or [-1]))
                    .values(customer_id=survivor.id).execution_options(synchronize_session=False))
    # Customers merged into `merged` earlier now point at the survivor: one hop, always.
    earlier = list(session.scalars(select(Customer.id).where(Customer.merged_into_id == merged.id)))
    if earlier:
        session.execute(update(Customer).where(Customer.id.in_(earlier)).values(merged_into_id=survivor.id)
                        .execution_options(synchronize_session=False))
        moved["customers"] = earlier
    before = {"survivor": _snapshot(survivor), "merged": _snapshot(merged)}
    if merged.registered_user_id and not survivor.registered_user_id:
        survivor_user, merged.registered_user_id = merged.registered_user_id, None
        session.flush()  # the unique user id leaves the merged row first
        survivor.registered_user_id = survivor_user
    survivor.name = survivor.name or merged.name
    survivor.region = survivor.region or merged.region
    # One person: an opt-out given on either number stands.
    survivor.marketing_consent = survivor.marketing_consent and merged.marketing_consent
    merged.merged_into_id, merged.merged_at = survivor.id, now
    session.flush()
    session.expire_all()  # the bulk updates above bypassed the identity map
    actor_name = ownership.as_actor(actor).name
    audit.record(session, MERGE_ACTION, target_type="customer", target_id=survivor.id,
                 summary=f"Customer #{merged.id} merged into #{survivor.id} by {actor_name}", before=before,
                 after={"survivor_id": survivor.id, "merged_id": merged.id, "moved": moved,
                        "owner_id": plan.owner.id if plan.owner else None, "reassigned": reassigned})
    session.flush()
    return MergeResult(plan, moved, reassigned)


def _snapshot(customer: Customer) -> dict:
    """What the audit keeps of a customer (no phone: audit pages are not masked)."""
    return {"id": customer.id, "name": customer.name, "registered_user_id": customer.registered_user_id,
            "region": customer.region, "marketing_consent": customer.marketing_consent}
