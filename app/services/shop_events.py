"""The shop's webhook events: orders created, paid, refunded and cancelled in the real shop.

Each event is a full snapshot of one order, signed by the shop (app.views.commerce_api checks the
signature). Applying one is idempotent and order-independent:
- idempotent by `event_id`: the ShopEvent row is inserted first, under a unique index, so a repeat — even a
  concurrent one — finds it and answers "duplicate" with nothing changed;
- out-of-order safe: the order is made from whichever event comes first, and its status only moves
  forward (pending < paid < refunded; cancelled only from pending) through the moves of app.services.orders.
  A late "created" or "paid" after "refunded" changes nothing ("ignored"); a "refunded" before its "paid"
  ends refunded, with the payment time from the snapshot; the opportunity ends won or lost by the rule of
  app.services.order_outcomes, whatever the order of arrival.
- The order's items and totals are those of the first snapshot that made it; later snapshots only move
  its status.
- An order finds its opportunity by `order.opportunity_id`, or by its customer (`registered_user_id`, else
  `phone`) and the product line of its first item: the customer's open opportunity of that line, else a
  new lead through intake (channel "api"), which opens one.
- A shop order below the discount threshold is recorded with approval "pending" (the managers review it),
  but its payment is applied: the shop has charged that price already.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.models.commerce import APPROVAL_PENDING, SHOP, Order, Product, ShopEvent
from app.models.commerce import CANCELLED as CANCELLED_STATUS
from app.models.commerce import PAID as PAID_STATUS
from app.models.commerce import REFUNDED as REFUNDED_STATUS
from app.models.sales import OPEN_STATUSES, Opportunity
from app.services import audit, customers, order_outcomes, orders
from app.services.errors import DomainError
from app.services.leads import LeadInput, intake
from app.services.phones import normalise_phone
from app.services.signing import Headers, parse_time

HEADERS = Headers("X-Shop-Key", "X-Shop-Timestamp", "X-Shop-Nonce", "X-Shop-Signature")
CREATED, PAID, REFUNDED, CANCELLED = "order.created", "order.paid", "order.refunded", "order.cancelled"
EVENT_TYPES = (CREATED, PAID, REFUNDED, CANCELLED)
APPLIED, DUPLICATE, IGNORED, REJECTED = "applied", "duplicate", "ignored", "rejected"
ACTOR = "shop"
MAX_PAYLOAD = 64 * 1024  # characters of a body kept with its event


@dataclass
class Snapshot:
    event_id: str
    type: str
    occurred_at: dt.datetime
    number: str
    lines: list[orders.Line]
    opportunity_id: int | None = None
    phone: str | None = None
    registered_user_id: str | None = None
    name: str | None = None
    paid_at: dt.datetime | None = None
    refunded_at: dt.datetime | None = None


@dataclass
class Received:
    outcome: str
    detail: str = ""
    order: Order | None = None
    sms_message_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        body = {"outcome": self.outcome, "detail": self.detail}
        if self.order is not None:
            body.update(order=self.order.number, status=self.order.status, approval=self.order.approval)
        return body


# --- reading the body ---------------------------------------------------------------------------------
def _text(data: dict, name: str, path: str, limit: int, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise DomainError("Required", field=path, status=400)
        return None
    if not isinstance(value, str) or len(value.strip()) > limit or not value.strip():
        raise DomainError("A text of at most %(n)d characters", field=path, status=400, n=limit)
    return value.strip()


def _time(data: dict, name: str, path: str) -> dt.datetime | None:
    value = data.get(name)
    if value in (None, ""):
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise DomainError("Not a time (ISO 8601 or Unix seconds)", field=path, status=400)
    return parsed


def _lines(session, items) -> list[orders.Line]:
    if not isinstance(items, list) or not items:
        raise DomainError("At least one item", field="order.items", status=400)
    if len(items) > orders.MAX_ITEMS:
        raise DomainError("At most %(n)d items", field="order.items", status=400, n=orders.MAX_ITEMS)
    lines = []
    for i, item in enumerate(items):
        path = f"order.items[{i}]"
        if not isinstance(item, dict):
            raise DomainError("An item is an object", field=path, status=400)
        sku = _text(item, "sku", f"{path}.sku", 64)
        qty = orders.quantity(item.get("quantity"), f"{path}.quantity")
        list_price = orders.money(item.get("list_price"), f"{path}.list_price")
        final_price = orders.money(item.get("final_price"), f"{path}.final_price")
        product = session.scalar(select(Product).where(Product.code == sku))
        if product is None:
            raise DomainError("No product has this SKU", field=f"{path}.sku", status=422)
        lines.append(orders.Line(product, qty, list_price, final_price))
    return lines


def parse(session, data: dict, now: dt.datetime) -> Snapshot:
    """The event as a Snapshot; DomainError (400 shape, 422 unknown SKU) naming the field at fault."""
    event_id = _text(data, "event_id", "event_id", 100)
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise DomainError("One of %(values)s", field="type", status=400, values=", ".join(EVENT_TYPES))
    order = data.get("order")
    if not isinstance(order, dict):
        raise DomainError("The order's snapshot (an object) is required", field="order", status=400)
    snap = Snapshot(event_id=event_id, type=kind,
                    occurred_at=_time(data, "occurred_at", "occurred_at") or now,
                    number=_text(order, "number", "order.number", 64),
                    lines=_lines(session, order.get("items")),
                    paid_at=_time(order, "paid_at", "order.paid_at"),
                    refunded_at=_time(order, "refunded_at", "order.refunded_at"))
    list_total, final_total = orders.totals(snap.lines)
    for name, computed in (("list_total", list_total), ("final_total", final_total)):
        if order.get(name) not in (None, "") and orders.money(order[name], f"order.{name}") != computed:
            raise DomainError("Does not add up: the items make %(total)s", field=f"order.{name}", status=422,
                              total=str(computed))
    if order.get("opportunity_id") not in (None, ""):
        snap.opportunity_id = orders.whole_id(order["opportunity_id"], "order.opportunity_id", "opportunity")
    customer = order.get("customer")
    if customer is not None:
        if not isinstance(customer, dict):
            raise DomainError("An object", field="order.customer", status=400)
        snap.phone = _text(customer, "phone", "order.customer.phone", 32, required=False)
        snap.registered_user_id = _text(customer, "registered_user_id", "order.customer.registered_user_id",
                                        64, required=False)
        snap.name = _text(customer, "name", "order.customer.name", 64, required=False)
    if snap.opportunity_id is None and not (snap.phone or snap.registered_user_id):
        raise DomainError("Give order.opportunity_id, or the customer's phone or registered_user_id",
                          field="order.customer", status=400)
    return snap


# --- the order of an event ------------------------------------------------------------------------------
def _opportunity(session, snap: Snapshot) -> Opportunity:
    if snap.opportunity_id is not None:
        opp = session.get(Opportunity, snap.opportunity_id)
        if opp is None:
            raise DomainError("No such opportunity", field="order.opportunity_id", status=422)
        return opp
    customer = customers.by_registered_user(session, snap.registered_user_id) if snap.registered_user_id \
        else None
    phone = None
    if snap.phone:
        try:
            phone = normalise_phone(snap.phone)
        except DomainError as exc:
            raise DomainError(exc.msgid, field="order.customer.phone", status=400, **exc.params) from None
        if phone is None:
            raise DomainError("Not a phone number", field="order.customer.phone", status=400)
    if customer is None and phone:
        customer = customers.by_phone(session, phone)
    if customer is None and phone is None:
        raise DomainError("No customer has this registered user id; give the phone too",
                          field="order.customer.registered_user_id", status=422)
    line_id = snap.lines[0].product.product_line_id
    if customer is not None:
        opp = session.scalar(select(Opportunity).where(
            Opportunity.customer_id == customer.id, Opportunity.product_line_id == line_id,
            Opportunity.status.in_(OPEN_STATUSES)).order_by(Opportunity.id).limit(1))
        if opp is not None:
            return opp
    values = LeadInput(phone=phone or customer.phone, product_line_id=line_id, name=snap.name,
                       client_key=f"shop:{snap.number}"[:128],
                       consult_note=f"Order {snap.number} in the shop")
    return intake(session, values, channel="api", actor=ACTOR).opportunity


def _order(session, snap: Snapshot, now: dt.datetime) -> tuple[Order, bool]:
    """The order of the snapshot's number, made from the snapshot if it is the first event of it."""
    order = session.scalar(select(Order).where(Order.number == snap.number))
    if order is not None:
        return order, False
    try:
        with session.begin_nested():
            opp = _opportunity(session, snap)
            order = orders.build_order(session, opp, snap.lines, number=snap.number, origin=SHOP,
                                       created_by_id=None, note=None, now=now)
            audit.record(session, "order_create", target_type="order", target_id=order.id,
                         summary=f"{order.number} for opportunity #{opp.id} from the shop: "
                                 f"{order.final_total} of {order.list_total} ({order.approval} approval)")
    except IntegrityError:  # a concurrent event of the same order made it first
        order = session.scalar(select(Order).where(Order.number == snap.number))
        if order is None:
            raise
        return order, False
    if order.approval == APPROVAL_PENDING:
        order_outcomes.request_approval(session, order, now)
    return order, True


# --- applying ---------------------------------------------------------------------------------------------
def _event_row(session, snap: Snapshot, body: bytes, now: dt.datetime) -> ShopEvent | None:
    """Claim the event id (None: it was claimed before). A concurrent twin's insert waits on the unique
    index and then fails with IntegrityError: the caller rolls back and answers "duplicate" (`seen`).
    (No savepoint here: on SQLite a savepoint opening the transaction would commit on release.)"""
    if seen(session, snap.event_id):
        return None
    row = ShopEvent(event_id=snap.event_id, event_type=snap.type, order_number=snap.number,
                    occurred_at=snap.occurred_at, received_at=now, outcome=APPLIED, payload=_payload(body))
    session.add(row)
    session.flush()
    return row


def seen(session, event_id) -> bool:
    return isinstance(event_id, str) and session.scalar(
        select(ShopEvent.id).where(ShopEvent.event_id == event_id[:100])) is not None


def receive(session, data: dict, body: bytes, now: dt.datetime) -> Received:
    """Apply one signed event (see the module docstring). The caller commits, then queues the SMS of
    `sms_message_ids`; on DomainError it rolls back and keeps the body with `reject`."""
    snap = parse(session, data, now)
    with audit.acting_as(None, ACTOR):
        row = _event_row(session, snap, body, now)
        if row is None:
            return Received(DUPLICATE, "event seen before")
        order, created = _order(session, snap, now)
        result = Received(APPLIED if created else IGNORED, "order recorded" if created else "", order)
        move = {PAID: lambda: orders.pay(session, order, now, ACTOR,
                                         paid_at=snap.paid_at or snap.occurred_at),
                REFUNDED: lambda: orders.refund(session, order, now, ACTOR,
                                                refunded_at=snap.refunded_at or snap.occurred_at,
                                                paid_at=snap.paid_at),
                CANCELLED: lambda: orders.cancel(session, order, now, ACTOR, cancelled_at=snap.occurred_at),
                }.get(snap.type)
        blocked = {PAID: order.status == CANCELLED_STATUS, REFUNDED: order.status == CANCELLED_STATUS,
                   CANCELLED: order.status in (PAID_STATUS, REFUNDED_STATUS)}.get(snap.type, False)
        if move is not None and blocked:  # a move the order's status forbids (paid after cancelled …)
            result.detail = f"the order is {order.status}"
        elif move is not None:
            moved = move()
            if moved.changed:
                result.outcome = APPLIED
                result.detail = snap.type.split(".")[1] + (f"; opportunity {moved.opportunity}"
                                                           if moved.opportunity else "")
                if moved.sms_message_id:
                    result.sms_message_ids.append(moved.sms_message_id)
            else:
                result.detail = f"already {order.status}"
        elif not created:
            result.detail = f"already recorded ({order.status})"
        row.outcome, row.detail = result.outcome, result.detail[:255] or None
        session.flush()
    return result


def _payload(body: bytes) -> str | None:
    if not body:
        return None
    return body.decode("utf-8", "replace")[:MAX_PAYLOAD]


def reject(session, data: dict | None, body: bytes, reason: str, now: dt.datetime) -> ShopEvent:
    """Keep a refused event (bad body, unknown SKU …) with its reason. Its own id: the shop may send the
    same event id again, corrected, and have it applied."""
    data = data if isinstance(data, dict) else {}
    claimed = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    order = data.get("order") if isinstance(data.get("order"), dict) else {}
    number = order.get("number") if isinstance(order.get("number"), str) else None
    kind = data.get("type") if isinstance(data.get("type"), str) else "unknown"
    detail = f"{reason}" + (f" (event {claimed[:60]})" if claimed else "")
    row = ShopEvent(event_id=f"rejected:{secrets.token_hex(12)}", event_type=kind[:30],
                    order_number=number[:64] if number else None, received_at=now, outcome=REJECTED,
                    detail=detail[:255], payload=_payload(body))
    session.add(row)
    session.flush()
    return row


def events_of(session, number: str, limit: int = 50) -> list[ShopEvent]:
    """The shop's events of an order number, newest first (the order page lists them)."""
    return list(session.scalars(select(ShopEvent).where(ShopEvent.order_number == number)
                                .order_by(ShopEvent.received_at.desc(), ShopEvent.id.desc()).limit(limit)))
