"""What an order's payment or refund does to its opportunity, and who hears of it.

The rule, whatever order the events come in: an opportunity with a paid order is won; one whose paid
orders were all refunded is lost with the lost reason "refunded". So a payment wins an open opportunity
(through app.services.opportunities.set_stage, as a person would) and wins a lost one again; a refund
that leaves no other paid order closes the opportunity as lost — a won one is turned back to lost here
(set_stage refuses closed opportunities), with the owner's sales-profile counters reversed. The dashboard
counts won opportunities by their status, so its won figures follow on its next refresh.

Notifications of a payment: the "order_paid" SMS to the customer (app.services.sms.notifications, when
an approved template is bound to the event; the caller queues its sending after the commit) and a
notice in the owner's inbox. A discounted order waiting for approval notifies the owner's managers.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select

from app.models.commerce import PAID, Order
from app.models.employee import Employee
from app.models.inbox import ORDER_APPROVAL, ORDER_PAID
from app.models.sales import LOST, OPEN_STATUSES, WON, Opportunity
from app.services import audit, inbox, metadata
from app.services.circulation import rule_of
from app.services.errors import DomainError
from app.services.opportunities import LOST_REASON_DICT, STAGE_DICT, set_stage
from app.services.ownership import as_actor, lock_opportunities, lock_profiles
from app.services.sms import notifications

log = logging.getLogger(__name__)

REFUNDED_REASON = "refunded"
ORDER_PAID_EVENT = "order_paid"
MAX_MANAGER_DEPTH = 10  # how far up the reporting line an approval request goes looking for managers


def _(message: str) -> str:
    """Marks a msgid for pybabel; the inbox translates it when read."""
    return message


TITLES = {
    ORDER_APPROVAL: _("Order %(order)s for %(customer)s waits for your discount approval"),
    ORDER_PAID: _("Order %(order)s of %(customer)s was paid: %(amount)s"),
}


def _item_id(session, type_code: str, code: str) -> int | None:
    items = metadata.dict_items(session, type_code, include_disabled=True)
    return next((i.id for i in items if i.code == code), None)


def money(value) -> str:
    return f"{value or 0:.2f}"


def _locked(session, opportunity_id: int) -> Opportunity:
    return lock_opportunities(session, [opportunity_id])[0]


def _reclose(session, opp: Opportunity, status: str, reason_id: int | None, now: dt.datetime, actor,
             why: str) -> None:
    """Turn a closed opportunity won ↔ lost, keeping the owner's counters (won_count, and open_count when
    the circulation rule counts won ones against capacity) as set_stage would have left them."""
    if opp.owner_id is not None:
        profile = lock_profiles(session, [opp.owner_id])[opp.owner_id]
        rule = rule_of(session, opp)
        step = 1 if status == WON else -1
        profile.won_count = max(profile.won_count + step, 0)
        if rule is not None and rule.capacity_counts_won:
            profile.open_count = max(profile.open_count + step, 0)
    opp.status = status
    opp.stage_id = _item_id(session, STAGE_DICT, status) or opp.stage_id
    opp.lost_reason_id = reason_id
    opp.stage_changed_at = opp.closed_at = now
    audit.record(session, "update", target_type="opportunity", target_id=opp.id,
                 summary=f"#{opp.id} {status} again ({why}) by {as_actor(actor).name}")


def win(session, order: Order, now: dt.datetime, actor) -> str | None:
    """The order was paid: its opportunity is won. Returns what happened to it (None: it was won)."""
    opp = _locked(session, order.opportunity_id)
    if opp.status == WON:
        return None
    if opp.status in OPEN_STATUSES:
        set_stage(session, opp, _item_id(session, STAGE_DICT, WON), None, now, actor)
        return "won"
    _reclose(session, opp, WON, None, now, actor, f"order {order.number} paid")
    return "won again"


def other_paid_orders(session, order: Order) -> int:
    return session.scalar(select(func.count()).select_from(Order).where(
        Order.opportunity_id == order.opportunity_id, Order.id != order.id, Order.status == PAID)) or 0


def reverse(session, order: Order, now: dt.datetime, actor) -> str | None:
    """The order was refunded: unless another order of the opportunity stays paid, the opportunity is lost
    with the reason "refunded". Returns what happened to it (None: nothing)."""
    if other_paid_orders(session, order):
        return None
    opp = _locked(session, order.opportunity_id)
    reason_id = _item_id(session, LOST_REASON_DICT, REFUNDED_REASON)
    if opp.status == LOST:
        return None
    if opp.status == WON:
        _reclose(session, opp, LOST, reason_id, now, actor, f"order {order.number} refunded")
        return "lost"
    try:
        set_stage(session, opp, _item_id(session, STAGE_DICT, LOST), reason_id, now, actor)
    except DomainError as exc:  # the lost stage or reason disabled: the refund stands, the opportunity too
        log.warning("opportunity #%s not closed after the refund of %s: %s", opp.id, order.number, exc)
        return None
    return "lost"


def notify_paid(session, order: Order, now: dt.datetime) -> int | None:
    """The "order paid" SMS to the customer (its message id when one is to be sent) and a notice in the
    opportunity owner's inbox. Each at most once per order."""
    opp = session.get(Opportunity, order.opportunity_id)
    customer = opp.customer
    if opp.owner_id is not None:
        inbox.notify(session, session.get(Employee, opp.owner_id), ORDER_PAID, TITLES[ORDER_PAID],
                     {"order": order.number, "customer": str(customer), "amount": money(order.final_total)},
                     subject=("opportunity", opp.id), dedupe_key=f"order:{order.id}", now=now)
    variables = {"name": customer.name or "", "order": order.number, "amount": money(order.final_total)}
    try:
        sent = notifications.notify(session, ORDER_PAID_EVENT, order.number, customer.phone, variables,
                                    customer_id=customer.id, now=now)
    except DomainError as exc:  # no approved template bound to the event: no text, the payment stands
        log.info("no order-paid SMS for %s: %s", order.number, exc)
        return None
    return sent.message_id if sent.created and sent.status == "pending" else None


def managers_of(session, employee_id: int | None) -> list[Employee]:
    """The employee's managers up the reporting line (direct manager first)."""
    found, seen = [], {employee_id}
    current = session.get(Employee, employee_id) if employee_id else None
    while current is not None and current.manager_id and len(found) < MAX_MANAGER_DEPTH:
        if current.manager_id in seen:
            break
        seen.add(current.manager_id)
        current = session.get(Employee, current.manager_id)
        if current is not None:
            found.append(current)
    return found


def request_approval(session, order: Order, now: dt.datetime) -> int:
    """Tell the managers of the opportunity's owner (of the order's creator when nobody owns it) that the
    order waits for them; returns how many were told."""
    opp = session.get(Opportunity, order.opportunity_id)
    told = 0
    for manager in managers_of(session, opp.owner_id or order.created_by_id):
        if inbox.notify(session, manager, ORDER_APPROVAL, TITLES[ORDER_APPROVAL],
                        {"order": order.number, "customer": str(opp.customer)},
                        subject=("opportunity", opp.id), dedupe_key=f"order:{order.id}", now=now):
            told += 1
    return told
