"""Orders for an opportunity: creating one in the console, the discount approval, and the status moves
pending → paid → refunded (or pending → cancelled) that the console and the shop's webhook share.

- An order's items are active products of its opportunity's product line (a sale belongs to its line),
  1 to 99 of each, at a final unit price from 0 up to the list price; the totals are computed here.
- An order whose final total is below `commerce.approval_below_percent` % of its list total waits for a
  manager (approval "pending"); exactly at the percentage it does not. A console order waiting for (or
  refused) approval cannot be paid. The approver holds ("can_approve", "Order"), sees the opportunity
  and did not create the order; the decision and its note are audited.
- A status never moves back and the same move twice is a no-op (`Moved.changed` False). Each move is
  audited; a payment wins the opportunity, a refund may lose it (app.services.order_outcomes).
- In the console, marking paid or refunded is a manager's correction (("can_approve", "Order")): these
  normally arrive from the shop. The creator, or a manager, may cancel a pending order.

Like the other commands, each checks, then writes in the caller's transaction; the caller commits and,
after the commit, queues the SMS whose id `Moved.sms_message_id` gives.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import lazyload

from app import clock
from app.models.commerce import (
    APPROVAL_PENDING,
    APPROVED,
    CANCELLED,
    CONSOLE,
    NOT_NEEDED,
    PAID,
    PENDING,
    REFUNDED,
    REJECTED,
    Order,
    OrderItem,
    Product,
)
from app.models.inbox import ORDER_APPROVAL
from app.models.sales import LOST, Opportunity
from app.security import policy
from app.security.scope import Viewer, restrict
from app.services import audit, inbox, metadata, order_outcomes
from app.services.errors import DomainError
from app.services.ownership import as_actor

APPROVAL_KEY = "commerce.approval_below_percent"
MAX_ITEMS = 50
MAX_QUANTITY = 99
MAX_PRICE = Decimal("99999999.99")
MAX_NOTE = 255
CENT = Decimal("0.01")
MAX_ID = 2**31 - 1
APPROVE = (policy.APPROVE, policy.ORDER)


@dataclass
class Line:
    """One item as the order stores it: prices per unit."""

    product: Product
    quantity: int
    list_price: Decimal
    final_price: Decimal


@dataclass
class Moved:
    order: Order
    changed: bool
    opportunity: str | None = None  # what became of the opportunity: "won", "lost", "won again"
    sms_message_id: int | None = None  # the order-paid text, to be queued after the commit


# --- values ---------------------------------------------------------------------------------------
def money(value, field: str) -> Decimal:
    """A price from a form or a body: at most two decimals, from 0 to MAX_PRICE."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DomainError("Give a price", field=field, status=400)
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise DomainError("Not a price: %(value)s", field=field, status=400, value=str(value)[:20]) from None
    if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
        raise DomainError("A price must be from 0 to %(max)s", field=field, status=400, max=str(MAX_PRICE))
    if amount != amount.quantize(CENT):
        raise DomainError("A price has at most two decimals", field=field, status=400)
    return amount.quantize(CENT)


def quantity(value, field: str) -> int:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 3:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise DomainError("Quantity must be a whole number from 1 to %(max)d", field=field, status=400,
                          max=MAX_QUANTITY)
    return value


def whole_id(value, field: str, what: str = "record") -> int:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 10:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise DomainError("No such %(what)s", field=field, status=404, what=what)
    return value


def note_text(value, field: str = "note", required: bool = False) -> str | None:
    text = (value or "").strip() if isinstance(value, str) or value is None else str(value)
    if required and not text:
        raise DomainError("Write a note", field=field, status=400)
    if len(text) > MAX_NOTE:
        raise DomainError("At most %(n)d characters", field=field, status=400, n=MAX_NOTE)
    return text or None


def threshold(session) -> int:
    """The approval threshold in percent of the list total (0 to 100)."""
    value = metadata.config_value(session, APPROVAL_KEY)
    try:
        return min(max(int(value), 0), 100)
    except (TypeError, ValueError):
        return 80


def needs_approval(list_total: Decimal, final_total: Decimal, percent: int) -> bool:
    """Below the percentage of the list total (exactly at it: no approval)."""
    return Decimal(final_total) * 100 < Decimal(list_total) * percent


def totals(lines: list[Line]) -> tuple[Decimal, Decimal]:
    return (sum((ln.list_price * ln.quantity for ln in lines), Decimal("0.00")),
            sum((ln.final_price * ln.quantity for ln in lines), Decimal("0.00")))


# --- finding rows in the viewer's scope --------------------------------------------------------------
def visible_opportunity(session, viewer: Viewer, opportunity_id) -> Opportunity:
    opp_id = whole_id(opportunity_id, "opportunity", "opportunity")
    opp = session.scalar(restrict(select(Opportunity).where(Opportunity.id == opp_id), Opportunity, viewer))
    if opp is None:
        raise DomainError("No such opportunity", field="opportunity", status=404)
    return opp


def visible_order(session, viewer: Viewer, order_id) -> Order:
    """An order in the viewer's scope (its opportunity's, or one they created)."""
    oid = whole_id(order_id, "order", "order")
    order = session.scalar(restrict(select(Order).where(Order.id == oid), Order, viewer))
    if order is None:
        raise DomainError("No such order", field="order", status=404)
    return order


def lock_order(session, order_id: int) -> Order:
    """The order, locked FOR UPDATE and read afresh (concurrent moves of one order queue up)."""
    return session.scalar(select(Order).where(Order.id == order_id).options(lazyload("*"))
                          .execution_options(populate_existing=True).with_for_update(of=Order))


def _sees_opportunity(session, viewer: Viewer, opportunity_id: int) -> bool:
    query = restrict(select(Opportunity.id).where(Opportunity.id == opportunity_id), Opportunity, viewer)
    return session.scalar(query) is not None


# --- creating ---------------------------------------------------------------------------------------
def console_lines(session, opp: Opportunity, rows) -> list[Line]:
    """Validate the items a person chose: [{"product_id", "quantity", "final_price"}]."""
    if not isinstance(rows, list) or not rows:
        raise DomainError("Add at least one product", field="items", status=400)
    if len(rows) > MAX_ITEMS:
        raise DomainError("At most %(n)d items", field="items", status=400, n=MAX_ITEMS)
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DomainError("An item is an object", field=f"items[{i}]", status=400)
        pid = whole_id(row.get("product_id"), f"items[{i}].product_id", "product")
        product = session.get(Product, pid)
        if product is None or not product.active:
            raise DomainError("No such product, or no longer sold", field=f"items[{i}].product_id",
                              status=422)
        if product.product_line_id != opp.product_line_id:
            raise DomainError("%(product)s is not of the opportunity's product line",
                              field=f"items[{i}].product_id", status=422, product=str(product))
        list_price = Decimal(product.list_price).quantize(CENT)
        raw_final = row.get("final_price")
        final = list_price if raw_final in (None, "") else money(raw_final, f"items[{i}].final_price")
        if final > list_price:
            raise DomainError("The final price cannot be above the list price (%(price)s)",
                              field=f"items[{i}].final_price", status=422, price=str(list_price))
        lines.append(Line(product, quantity(row.get("quantity", 1), f"items[{i}].quantity"), list_price,
                          final))
    return lines


def build_order(session, opp: Opportunity, lines: list[Line], *, number: str | None, origin: str,
                created_by_id: int | None, note: str | None, now: dt.datetime) -> Order:
    """The order row and its items (status pending); the approval follows from the threshold."""
    list_total, final_total = totals(lines)
    pending = needs_approval(list_total, final_total, threshold(session))
    order = Order(number=number or f"TMP-{secrets.token_hex(12)}", opportunity_id=opp.id,
                  customer_id=opp.customer_id, status=PENDING,
                  approval=APPROVAL_PENDING if pending else NOT_NEEDED, list_total=list_total,
                  final_total=final_total, origin=origin, note=note, created_by_id=created_by_id,
                  created_at=now, updated_at=now)
    session.add(order)
    session.flush()
    if number is None:  # CRM + business date + the id: unique without a counter to contend for
        order.number = f"CRM{clock.local_date(now):%Y%m%d}{order.id:06d}"
    for ln in lines:
        session.add(OrderItem(order_id=order.id, product_id=ln.product.id, quantity=ln.quantity,
                              list_price=ln.list_price, final_price=ln.final_price))
    session.flush()
    return order


def create_order(session, viewer: Viewer, opportunity_id, items, now: dt.datetime, actor=None,
                 note: str | None = None) -> Order:
    """A console order for an opportunity the viewer sees (not a lost one: a new sale is a new
    opportunity). Below the threshold it waits for approval and the owner's managers are told."""
    if not viewer.can(policy.WRITE, policy.ORDER):
        raise DomainError("You may not create orders", status=403)
    opp = visible_opportunity(session, viewer, opportunity_id)
    if opp.status == LOST:
        raise DomainError("#%(id)s is lost: a new sale needs a new opportunity", field="opportunity",
                          status=409, id=opp.id)
    lines = console_lines(session, opp, items)
    order = build_order(session, opp, lines, number=None, origin=CONSOLE, created_by_id=viewer.employee_id,
                        note=note_text(note), now=now)
    audit.record(session, "order_create", target_type="order", target_id=order.id,
                 summary=f"{order.number} for opportunity #{opp.id}: {order.final_total} of "
                         f"{order.list_total} ({order.approval} approval) by {as_actor(actor).name}")
    if order.approval == APPROVAL_PENDING:
        order_outcomes.request_approval(session, order, now)
    return order


# --- approval -----------------------------------------------------------------------------------------
def decide(session, viewer: Viewer, order_id, approve: bool, note, now: dt.datetime, actor=None) -> Moved:
    """Approve or reject a discounted order (a rejection needs a note). The same decision again is a
    no-op; the other one after a decision is refused."""
    if not viewer.can(*APPROVE):
        raise DomainError("Only a manager may approve discounts", status=403)
    order = visible_order(session, viewer, order_id)
    if not _sees_opportunity(session, viewer, order.opportunity_id):
        raise DomainError("No such order", field="order", status=404)
    if order.created_by_id is not None and order.created_by_id == viewer.employee_id:
        raise DomainError("You cannot approve an order you created", status=403)
    note = note_text(note, required=not approve)
    order = lock_order(session, order.id)
    target = APPROVED if approve else REJECTED
    if order.approval == target:
        return Moved(order, False)
    if order.approval != APPROVAL_PENDING:
        raise DomainError("This order's approval is %(state)s", field="approval", status=409,
                          state=order.approval)
    if order.status == CANCELLED:
        raise DomainError("This order is cancelled", field="status", status=409)
    order.approval, order.approval_note = target, note
    order.approved_by_id, order.approved_at = viewer.employee_id, now
    audit.record(session, "order_approve" if approve else "order_reject", target_type="order",
                 target_id=order.id, summary=f"{order.number}: {target} by {as_actor(actor).name}"
                                             + (f": {note}" if note else ""))
    inbox.settle(session, ORDER_APPROVAL, f"order:{order.id}", now)  # the managers asked need not act now
    session.flush()
    return Moved(order, True)


# --- status moves shared with the shop's webhook --------------------------------------------------------
def _moved(session, order: Order, action: str, actor, detail: str = "") -> None:
    audit.record(session, action, target_type="order", target_id=order.id,
                 summary=f"{order.number}: {order.status} by {as_actor(actor).name}{detail}")
    session.flush()


def pay(session, order: Order, now: dt.datetime, actor=None, paid_at: dt.datetime | None = None) -> Moved:
    """pending → paid: the opportunity is won, the customer and the owner told. Paid or refunded
    already: a no-op. Cancelled: refused (409)."""
    order = lock_order(session, order.id)
    if order.status in (PAID, REFUNDED):
        return Moved(order, False)
    if order.status == CANCELLED:
        raise DomainError("A cancelled order cannot be paid", field="status", status=409)
    order.status, order.paid_at = PAID, paid_at or now
    _moved(session, order, "order_paid", actor)
    what = order_outcomes.win(session, order, now, actor)
    return Moved(order, True, what, order_outcomes.notify_paid(session, order, now))


def refund(session, order: Order, now: dt.datetime, actor=None, refunded_at: dt.datetime | None = None,
           paid_at: dt.datetime | None = None) -> Moved:
    """paid → refunded (or, the shop's refund arriving before its payment, pending → refunded with the
    payment time from the snapshot): the opportunity is lost unless another order of it stays paid."""
    order = lock_order(session, order.id)
    if order.status == REFUNDED:
        return Moved(order, False)
    if order.status == CANCELLED:
        raise DomainError("A cancelled order cannot be refunded", field="status", status=409)
    order.paid_at = order.paid_at or paid_at or refunded_at or now
    order.status, order.refunded_at = REFUNDED, refunded_at or now
    _moved(session, order, "order_refunded", actor)
    return Moved(order, True, order_outcomes.reverse(session, order, now, actor))


def cancel(session, order: Order, now: dt.datetime, actor=None, cancelled_at: dt.datetime | None = None
           ) -> Moved:
    """pending → cancelled. Cancelled already: a no-op; paid or refunded: refused (409)."""
    order = lock_order(session, order.id)
    if order.status == CANCELLED:
        return Moved(order, False)
    if order.status != PENDING:
        raise DomainError("A %(state)s order cannot be cancelled", field="status", status=409,
                          state=order.status)
    order.status, order.cancelled_at = CANCELLED, cancelled_at or now
    _moved(session, order, "order_cancelled", actor)
    return Moved(order, True)


# --- the console's commands -------------------------------------------------------------------------------
def console_pay(session, viewer: Viewer, order_id, now: dt.datetime, actor=None) -> Moved:
    """A manager marks an order paid by hand (normally the shop reports it). Not while it waits for, or
    was refused, approval."""
    order = _managed(session, viewer, order_id)
    if order.status == PENDING and order.approval in (APPROVAL_PENDING, REJECTED):
        raise DomainError("This order waits for discount approval" if order.approval == APPROVAL_PENDING
                          else "This order's discount was rejected", field="approval", status=409)
    return pay(session, order, now, actor)


def console_refund(session, viewer: Viewer, order_id, now: dt.datetime, actor=None) -> Moved:
    order = _managed(session, viewer, order_id)
    if order.status == PENDING:
        raise DomainError("Only a paid order can be refunded", field="status", status=409)
    return refund(session, order, now, actor)


def console_cancel(session, viewer: Viewer, order_id, now: dt.datetime, actor=None) -> Moved:
    """The creator (with write access to orders) or a manager who sees the opportunity cancels."""
    order = visible_order(session, viewer, order_id)
    mine = order.created_by_id is not None and order.created_by_id == viewer.employee_id
    if not ((mine and viewer.can(policy.WRITE, policy.ORDER))
            or (viewer.can(*APPROVE) and _sees_opportunity(session, viewer, order.opportunity_id))):
        raise DomainError("Only the order's creator or a manager may cancel it", status=403)
    return cancel(session, order, now, actor)


def _managed(session, viewer: Viewer, order_id) -> Order:
    if not viewer.can(*APPROVE):
        raise DomainError("Only a manager may mark orders paid or refunded", status=403)
    order = visible_order(session, viewer, order_id)
    if not _sees_opportunity(session, viewer, order.opportunity_id):
        raise DomainError("No such order", field="order", status=404)
    return order


# --- reading --------------------------------------------------------------------------------------------
def approval_queue(session, viewer: Viewer, limit: int = 200) -> list[Order]:
    """Orders waiting for approval that the viewer may decide: of opportunities they see, not their own."""
    if not viewer.can(*APPROVE):
        return []
    visible = restrict(select(Opportunity.id), Opportunity, viewer)
    query = (select(Order).where(Order.approval == APPROVAL_PENDING, Order.status != CANCELLED,
                                 Order.opportunity_id.in_(visible))
             .order_by(Order.created_at, Order.id).limit(limit))
    if viewer.employee_id is not None:
        query = query.where((Order.created_by_id.is_(None)) | (Order.created_by_id != viewer.employee_id))
    return list(session.scalars(query))


def orders_of(session, opportunity_id: int) -> list[Order]:
    """The orders of an opportunity (the caller has checked the opportunity is visible), newest first."""
    return list(session.scalars(select(Order).where(Order.opportunity_id == opportunity_id)
                                .order_by(Order.created_at.desc(), Order.id.desc())))


def products_for(session, product_line_id: int) -> list[Product]:
    return list(session.scalars(select(Product).where(Product.product_line_id == product_line_id,
                                                      Product.active.is_(True)).order_by(Product.name)))
