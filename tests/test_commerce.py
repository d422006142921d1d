"""Orders for an opportunity: totals and the discount threshold (its boundary), approval by a manager in
scope only (audited), payment wins the opportunity and notifies (SMS through the sink, the inbox), a refund
reverses the win (the dashboard's won figures too), cancellation; every move idempotent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select, update

from app.clock import utcnow
from app.jobs.worker import app_worker_class
from app.models.audit import AuditLog
from app.models.commerce import Order, Product
from app.models.employee import CrmUser
from app.models.inbox import ORDER_APPROVAL, ORDER_PAID, InboxNotification
from app.models.sales import LOST, OWNED, WON, Opportunity, SalesProfile
from app.models.security import SCOPE_ALL
from app.models.sms import SinkMessage, SmsChannel, SmsMessage, SmsTemplate
from app.security.scope import Viewer, viewer_for_user
from app.services import dashboard, dashboard_refresh, orders
from app.services.errors import DomainError
from tests import factories as f

ORDER_BODY = "{name}您好，订单{order}已支付{amount}元"


# --- fixtures shared with tests/test_shop_webhook.py ------------------------------------------------------
def viewer(session, username: str) -> Viewer:
    return viewer_for_user(session.scalar(select(CrmUser).where(CrmUser.username == username)))


def product(session, code: str, price, line: str = "k12_math", active: bool = True) -> Product:
    row = Product(code=code, name=f"Course {code}", list_price=Decimal(str(price)), active=active,
                  product_line_id=f.dict_item(session, "product_line", line).id)
    session.add(row)
    session.commit()
    return row


def owned_opportunity(session, owner: str = "sales11", line: str = "k12_math", **kw) -> Opportunity:
    emp = f.employee_by_username(session, owner)
    values = {"status": OWNED, "owner_id": emp.id, "org_unit_id": emp.org_unit_id, "assigned_at": utcnow(),
              "product_line_id": f.dict_item(session, "product_line", line).id, **kw}
    opp = f.OPPORTUNITY.create(session, **values)
    session.commit()
    return opp


@pytest.fixture
def catalogue(session):
    return {"math": product(session, "MATH-100", 100), "math2": product(session, "MATH-250", 250),
            "eng": product(session, "ENG-100", 100, line="k12_english"),
            "old": product(session, "MATH-OLD", 50, active=False)}


@pytest.fixture
def order_template(session):
    """The only enabled channel is a sink; an approved template bound to "order_paid"."""
    session.execute(update(SmsChannel).values(enabled=False))
    channel = SmsChannel(name="sink", provider="sink", signature="测试教育", priority=1)
    session.add(channel)
    session.flush()
    tpl = SmsTemplate(name="order-paid", kind="notification", channel_id=channel.id, body=ORDER_BODY,
                      variables="name,order,amount", status="approved", event="order_paid")
    session.add(tpl)
    session.commit()
    return tpl


def send_texts(app, session) -> None:
    session.commit()
    queue = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"]))
    app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    session.expire_all()


def new_order(session, opp, items, username: str = "sales11") -> Order:
    order = orders.create_order(session, viewer(session, username), opp.id, items, utcnow(), username)
    session.commit()
    return order


def state(session, order):
    session.expire_all()
    order = session.get(Order, order.id)
    return order.status, order.approval


# --- creating: totals and the threshold ------------------------------------------------------------------
def test_totals_and_the_approval_threshold_boundary(session, catalogue):
    f.set_config(session, "commerce.approval_below_percent", 80)
    opp = owned_opportunity(session)
    at = new_order(session, opp, [{"product_id": catalogue["math"].id, "quantity": 2, "final_price": "80"},
                                  {"product_id": catalogue["math2"].id, "quantity": 1, "final_price": "200"}])
    assert (at.list_total, at.final_total) == (Decimal("450.00"), Decimal("360.00"))  # exactly 80 %
    assert at.approval == "none" and at.status == "pending" and at.origin == "console"
    assert at.number.startswith("CRM20260617") and at.customer_id == opp.customer_id
    assert [(i.quantity, i.list_price, i.final_price) for i in at.items] == [
        (2, Decimal("100.00"), Decimal("80.00")), (1, Decimal("250.00"), Decimal("200.00"))]
    below = new_order(session, opp, [{"product_id": catalogue["math"].id, "quantity": 1,
                                      "final_price": "79.99"}])
    assert below.approval == "pending"
    # the owner's managers up the line are told (manager1, then the director), once each
    told = session.execute(select(CrmUser.username).join(InboxNotification,
                                                         InboxNotification.recipient_id == CrmUser.id)
                           .where(InboxNotification.kind == ORDER_APPROVAL)).scalars().all()
    assert sorted(told) == ["director", "manager1"]
    default_price = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    assert (default_price.final_total, default_price.approval) == (Decimal("100.00"), "none")
    assert session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "order_create")) == 3


@pytest.mark.parametrize("items, field, status", [
    ([], "items", 400),
    ([{"product_id": "x"}], "items[0].product_id", 404),
    ([{"product_id": "MATH", "quantity": 1}], "items[0].product_id", 404),
    ([{"product_id": "math", "quantity": 0}], "items[0].quantity", 400),
    ([{"product_id": "math", "quantity": 100}], "items[0].quantity", 400),
    ([{"product_id": "math", "final_price": "100.01"}], "items[0].final_price", 422),
    ([{"product_id": "math", "final_price": "-1"}], "items[0].final_price", 400),
    ([{"product_id": "math", "final_price": "1.005"}], "items[0].final_price", 400),
    ([{"product_id": "math", "final_price": "NaN"}], "items[0].final_price", 400),
    ([{"product_id": "eng"}], "items[0].product_id", 422),
    ([{"product_id": "old"}], "items[0].product_id", 422),
])
def test_bad_items_are_refused_naming_the_field(session, catalogue, items, field, status):
    opp = owned_opportunity(session)
    items = [{**i, "product_id": catalogue[i["product_id"]].id} if i.get("product_id") in catalogue else i
             for i in items]
    with pytest.raises(DomainError) as err:
        orders.create_order(session, viewer(session, "sales11"), opp.id, items, utcnow())
    assert (err.value.field, err.value.status) == (field, status)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Order)) == 0


def test_only_opportunities_in_scope_and_not_lost(session, catalogue):
    opp = owned_opportunity(session)
    item = [{"product_id": catalogue["math"].id}]
    with pytest.raises(DomainError) as err:  # another salesperson's opportunity
        orders.create_order(session, viewer(session, "sales12"), opp.id, item, utcnow())
    assert err.value.status == 404
    lost = owned_opportunity(session, status=LOST)
    with pytest.raises(DomainError) as err:
        orders.create_order(session, viewer(session, "sales11"), lost.id, item, utcnow())
    assert err.value.status == 409
    with pytest.raises(DomainError) as err:  # Marketing may read products, not write orders
        orders.create_order(session, viewer(session, "marketing"), opp.id, item, utcnow())
    assert err.value.status == 403


# --- approval ----------------------------------------------------------------------------------------------
def test_a_discount_is_approved_by_a_manager_in_scope_only_and_audited(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id, "final_price": "50"}])
    assert order.approval == "pending"
    refusals = {"sales11": 403, "sales12": 403, "manager2": 404}  # creator, salesperson, other team
    for username, status in refusals.items():
        with pytest.raises(DomainError) as err:
            orders.decide(session, viewer(session, username), order.id, True, "ok", utcnow(), username)
        assert err.value.status == status, username
        session.rollback()
    assert orders.approval_queue(session, viewer(session, "manager2")) == []
    assert [o.id for o in orders.approval_queue(session, viewer(session, "manager1"))] == [order.id]
    with pytest.raises(DomainError) as err:  # a rejection needs its note
        orders.decide(session, viewer(session, "manager1"), order.id, False, " ", utcnow())
    assert err.value.field == "note"
    session.rollback()
    moved = orders.decide(session, viewer(session, "manager1"), order.id, True, "first purchase", utcnow(),
                          "manager1")
    session.commit()
    assert moved.changed and state(session, order) == ("pending", "approved")
    row = session.get(Order, order.id)
    assert (row.approved_by_id, row.approval_note) == (
        f.employee_by_username(session, "manager1").id, "first purchase")
    again = orders.decide(session, viewer(session, "manager1"), order.id, True, None, utcnow())
    assert not again.changed
    with pytest.raises(DomainError) as err:
        orders.decide(session, viewer(session, "director"), order.id, False, "no", utcnow())
    assert err.value.status == 409
    session.rollback()
    decisions = AuditLog.action.in_(("order_approve", "order_reject"))
    logged = session.scalars(select(AuditLog).where(decisions)).all()
    assert [(a.target_id, a.summary) for a in logged] == [
        (str(order.id), f"{order.number}: approved by manager1: first purchase")]
    assert orders.approval_queue(session, viewer(session, "manager1")) == []
    # The managers asked to approve find the request settled (read), not waiting in their inbox.
    asked = session.scalars(select(InboxNotification).where(
        InboxNotification.kind == ORDER_APPROVAL, InboxNotification.dedupe_key == f"order:{order.id}")).all()
    assert asked and all(n.read_at is not None for n in asked)


def test_a_manager_cannot_approve_their_own_order(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id, "final_price": "10"}], "manager1")
    with pytest.raises(DomainError) as err:
        orders.decide(session, viewer(session, "manager1"), order.id, True, None, utcnow())
    assert err.value.status == 403
    session.rollback()
    assert orders.approval_queue(session, viewer(session, "manager1")) == []
    assert orders.decide(session, viewer(session, "director"), order.id, False, "too cheap", utcnow()).changed


def test_an_order_waiting_for_or_refused_approval_cannot_be_paid(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id, "final_price": "10"}])
    with pytest.raises(DomainError) as err:
        orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow())
    assert (err.value.status, err.value.field) == (409, "approval")
    session.rollback()
    orders.decide(session, viewer(session, "manager1"), order.id, False, "no", utcnow())
    session.commit()
    with pytest.raises(DomainError):
        orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow())
    session.rollback()
    assert state(session, order) == ("pending", "rejected")
    assert orders.console_cancel(session, viewer(session, "sales11"), order.id, utcnow()).changed
    session.commit()
    assert state(session, order) == ("cancelled", "rejected")


# --- payment, refund, cancellation ------------------------------------------------------------------------
def _won_count(session, username):
    session.expire_all()
    return session.get(SalesProfile, f.employee_by_username(session, username).id).won_count


def test_payment_wins_the_opportunity_and_notifies_customer_and_owner(app, session, catalogue,
                                                                     order_template):
    opp = owned_opportunity(session)
    won_before = _won_count(session, "sales11")
    order = new_order(session, opp, [{"product_id": catalogue["math"].id, "quantity": 2,
                                      "final_price": "99.5"}])
    with pytest.raises(DomainError) as err:  # a salesperson does not mark payments by hand
        orders.console_pay(session, viewer(session, "sales11"), order.id, utcnow())
    assert err.value.status == 403
    session.rollback()
    moved = orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow(), "manager1")
    session.commit()
    assert moved.changed and moved.opportunity == "won" and moved.sms_message_id
    from app.views.commerce_api import queue_texts

    queue_texts([moved.sms_message_id])
    send_texts(app, session)
    assert state(session, order) == ("paid", "none")
    assert session.get(Order, order.id).paid_at is not None
    opp = session.get(Opportunity, opp.id)
    assert (opp.status, opp.stage.code) == (WON, "won")
    assert _won_count(session, "sales11") == won_before + 1
    text = session.scalars(select(SmsMessage).where(SmsMessage.event == "order_paid")).one()
    assert (text.phone, text.status, text.event_key) == (opp.customer.phone, "sent",
                                                         f"order_paid:{order.number}")
    assert text.content == "【测试教育】" + ORDER_BODY.format(name=opp.customer.name, order=order.number,
                                                          amount="199.00")
    assert session.scalar(select(func.count()).select_from(SinkMessage)) == 1
    owner_user = f.employee_by_username(session, "sales11").user_id
    notices = session.scalars(select(InboxNotification).where(InboxNotification.kind == ORDER_PAID)).all()
    assert [(n.recipient_id, n.subject_id) for n in notices] == [(owner_user, opp.id)]
    # the same move again: nothing new
    again = orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow())
    session.commit()
    assert not again.changed and _won_count(session, "sales11") == won_before + 1
    assert session.scalar(select(func.count()).select_from(SmsMessage).where(
        SmsMessage.event == "order_paid")) == 1
    assert session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "order_paid")) == 1


def test_payment_without_an_order_paid_template_still_stands(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    moved = orders.console_pay(session, viewer(session, "director"), order.id, utcnow())
    session.commit()
    assert moved.changed and moved.sms_message_id is None
    assert session.get(Opportunity, opp.id).status == WON


def _dashboard_won(session) -> int:
    everyone = Viewer(user_id=1, scope=SCOPE_ALL, permissions=frozenset({("*", "*")}))
    period = dashboard.Filters(dt.date(2026, 1, 1), dt.date(2026, 6, 30))
    return dashboard.summary(session, everyone, period, utcnow())["speed_to_lead"]["won"]


def test_a_refund_reverses_the_win_and_the_dashboard_follows(session, catalogue, traveller):
    opp = owned_opportunity(session)
    dashboard_refresh.refresh(session, utcnow())
    won_before, profile_before = _dashboard_won(session), _won_count(session, "sales11")
    order = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow())
    session.commit()
    traveller.shift(dt.timedelta(minutes=1))
    dashboard_refresh.refresh(session, utcnow())
    assert _dashboard_won(session) == won_before + 1
    with pytest.raises(DomainError) as err:
        orders.console_refund(session, viewer(session, "sales11"), order.id, utcnow())
    assert err.value.status == 403
    session.rollback()
    traveller.shift(dt.timedelta(minutes=1))
    moved = orders.console_refund(session, viewer(session, "manager1"), order.id, utcnow(), "manager1")
    session.commit()
    assert moved.changed and moved.opportunity == "lost"
    opp = session.get(Opportunity, opp.id)
    assert (opp.status, opp.stage.code, opp.lost_reason.code) == (LOST, "lost", "refunded")
    assert _won_count(session, "sales11") == profile_before
    traveller.shift(dt.timedelta(minutes=1))
    dashboard_refresh.refresh(session, utcnow())
    assert _dashboard_won(session) == won_before
    assert not orders.console_refund(session, viewer(session, "manager1"), order.id, utcnow()).changed
    assert session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.target_type == "opportunity", AuditLog.summary.like(f"#{opp.id} lost again%"))) == 1


def test_a_refund_leaves_the_opportunity_won_while_another_order_stays_paid(session, catalogue):
    opp = owned_opportunity(session)
    first = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    second = new_order(session, opp, [{"product_id": catalogue["math2"].id}])
    boss = viewer(session, "manager1")
    for order in (first, second):
        orders.console_pay(session, boss, order.id, utcnow())
    moved = orders.console_refund(session, boss, first.id, utcnow())
    session.commit()
    assert moved.opportunity is None and session.get(Opportunity, opp.id).status == WON
    orders.console_refund(session, boss, second.id, utcnow())
    session.commit()
    assert session.get(Opportunity, opp.id).status == LOST


def test_a_payment_wins_a_lost_opportunity_again(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    won_before = _won_count(session, "sales11")
    session.execute(update(Opportunity).where(Opportunity.id == opp.id).values(
        status=LOST, lost_reason_id=f.dict_item(session, "lost_reason", "price").id))
    session.commit()
    moved = orders.pay(session, order, utcnow(), "shop")
    session.commit()
    opp = session.get(Opportunity, opp.id)
    assert moved.opportunity == "won again" and (opp.status, opp.lost_reason_id) == (WON, None)
    assert _won_count(session, "sales11") == won_before + 1


def test_cancel_only_a_pending_order_and_only_by_its_creator_or_a_manager(session, catalogue):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    with pytest.raises(DomainError) as err:
        orders.console_cancel(session, viewer(session, "sales12"), order.id, utcnow())
    assert err.value.status == 404
    session.rollback()
    assert orders.console_cancel(session, viewer(session, "sales11"), order.id, utcnow()).changed
    session.commit()
    assert not orders.console_cancel(session, viewer(session, "manager1"), order.id, utcnow()).changed
    with pytest.raises(DomainError) as err:
        orders.console_pay(session, viewer(session, "manager1"), order.id, utcnow())
    assert err.value.status == 409
    session.rollback()
    paid = new_order(session, opp, [{"product_id": catalogue["math"].id}])
    orders.console_pay(session, viewer(session, "manager1"), paid.id, utcnow())
    session.commit()
    with pytest.raises(DomainError) as err:
        orders.console_cancel(session, viewer(session, "manager1"), paid.id, utcnow())
    assert err.value.status == 409
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "order_cancelled")) == 1


# --- the demo --------------------------------------------------------------------------------------------
def test_the_demo_catalogue_and_orders_are_seeded_once(session):
    from app.services.seed_commerce import seed_demo

    first = seed_demo(session)
    session.commit()
    assert first == {"products": 16, "orders": 3}
    assert seed_demo(session) == {"products": 0, "orders": 0}
    session.commit()
    rows = {o.number: (o.status, o.approval, o.origin) for o in session.scalars(select(Order))}
    assert rows == {"SHOP-DEMO-1001": ("paid", "none", "shop"),
                    "CRM-DEMO-0001": ("pending", "pending", "console"),
                    "SHOP-DEMO-1002": ("refunded", "none", "shop")}
    refunded = session.scalar(select(Order).where(Order.number == "SHOP-DEMO-1002"))
    assert (refunded.opportunity.status, refunded.opportunity.lost_reason.code) == (LOST, "refunded")
