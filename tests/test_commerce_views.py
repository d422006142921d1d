"""The Commerce pages through the real app: products (admin writes, others read), the Orders panel and
its New order form on the opportunity page, the scoped order list and order page, the approval queue
with its CSRF-protected approve / reject forms, and the manager's paid / refund / cancel buttons."""

from __future__ import annotations

import re

import pytest
from flask import url_for
from sqlalchemy import select

from app.models.audit import AuditLog
from app.models.commerce import Order, Product
from app.services.seed import DEMO_PASSWORD
from tests import factories as f
from tests.conftest import login
from tests.test_commerce import new_order, owned_opportunity, product


def _csrf_login(client, username: str) -> str:
    """Log in through the form with its CSRF token; returns the token."""
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    resp = client.post("/login/", data={"username": username, "password": DEMO_PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    return token


def _url(app, endpoint, **values):
    with app.test_request_context():
        return url_for(endpoint, **values)


@pytest.fixture
def math(session):
    return product(session, "MATH-100", 100)


def test_products_are_written_by_the_administrator_and_read_by_sales(app, client, session, math):
    login(client, "sales11")
    listing = client.get(_url(app, "ProductView.list"))
    assert listing.status_code == 200 and "MATH-100" in listing.get_data(as_text=True)
    assert client.get(_url(app, "ProductView.add")).status_code in (302, 403)
    client.get("/logout/")
    login(client, "admin")
    line = f.dict_item(session, "product_line", "k12_english").id
    resp = client.post(_url(app, "ProductView.add"), data={
        "code": "ENG-300", "name": "English 300", "product_line": line, "list_price": "300", "active": "y"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    made = session.scalar(select(Product).where(Product.code == "ENG-300"))
    assert (made.name, str(made.list_price), made.active) == ("English 300", "300.00", True)
    resp = client.post(_url(app, "ProductView.edit", pk=made.id), data={
        "code": "ENG-300", "name": "English 300", "product_line": line, "list_price": "280", "active": "y"})
    assert resp.status_code == 302
    logged = session.scalars(select(AuditLog).where(AuditLog.target_type == "product")).all()
    assert [a.summary for a in logged] == ["ENG-300: list price None → 300.00",
                                           "ENG-300: list price 300.00 → 280.00"]
    bad = client.post(_url(app, "ProductView.add"), data={
        "code": "ENG-X", "name": "x", "product_line": line, "list_price": "-1"})
    assert bad.status_code == 200 and session.scalar(select(Product).where(Product.code == "ENG-X")) is None


def test_the_orders_panel_creates_an_order_from_the_opportunity_page(app, client, session, math):
    opp = owned_opportunity(session)
    login(client, "sales11")
    page = client.get(_url(app, "OpportunityView.show", pk=opp.id)).get_data(as_text=True)
    assert 'id="crm-orders-panel"' in page and 'id="crm-new-order"' in page and "MATH-100" in page
    resp = client.post(_url(app, "CommerceView.create"), data={
        "opportunity": opp.id, "product_id": [str(math.id), ""], "quantity": ["2", "1"],
        "final_price": ["60", ""], "next": f"/opportunityview/show/{opp.id}"}, follow_redirects=True)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "waits for a manager" in html
    order = session.scalars(select(Order)).one()
    assert (order.approval, str(order.final_total), order.number in html) == ("pending", "120.00", True)
    bad = client.post(_url(app, "CommerceView.create"), data={
        "opportunity": opp.id, "product_id": [str(math.id)], "quantity": ["100"], "final_price": [""]},
        follow_redirects=True)
    assert "Quantity must be a whole number from 1 to 99" in bad.get_data(as_text=True)
    client.get("/logout/")
    login(client, "sales12")  # another salesperson: neither the order nor its page
    assert client.get(_url(app, "CommerceView.order", pk=order.id)).status_code == 404
    assert order.number not in client.get(_url(app, "OrderView.list")).get_data(as_text=True)


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_approval_queue_approves_with_a_note_and_needs_the_csrf_token(app, client, session, math):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": math.id, "final_price": "50"}])
    _csrf_login(client, "manager2")
    assert order.number not in client.get(_url(app, "CommerceView.approvals")).get_data(as_text=True)
    client.get("/logout/")
    _csrf_login(client, "manager1")
    queue = client.get(_url(app, "CommerceView.approvals")).get_data(as_text=True)
    assert order.number in queue
    token = re.search(r'name="csrf_token" value="([^"]+)"', queue).group(1)
    refused = client.post(_url(app, "CommerceView.approve", pk=order.id), data={"note": "ok"})
    assert refused.status_code == 400
    resp = client.post(_url(app, "CommerceView.approve", pk=order.id),
                       data={"note": "first purchase", "csrf_token": token}, follow_redirects=True)
    assert resp.status_code == 200 and "Discount approved" in resp.get_data(as_text=True)
    session.expire_all()
    assert (session.get(Order, order.id).approval, session.get(Order, order.id).approval_note) == (
        "approved", "first purchase")
    page = client.get(_url(app, "CommerceView.order", pk=order.id)).get_data(as_text=True)
    assert 'id="crm-order-pay"' in page and 'id="crm-order-cancel"' in page
    paid = client.post(_url(app, "CommerceView.pay", pk=order.id), data={"csrf_token": token},
                       follow_redirects=True)
    assert "Marked as paid" in paid.get_data(as_text=True)
    session.expire_all()
    assert session.get(Order, order.id).status == "paid"


def test_a_salesperson_sees_no_manager_buttons_and_may_cancel_their_own_order(app, client, session, math):
    opp = owned_opportunity(session)
    order = new_order(session, opp, [{"product_id": math.id}])
    login(client, "sales11")
    page = client.get(_url(app, "CommerceView.order", pk=order.id)).get_data(as_text=True)
    assert 'id="crm-order-pay"' not in page and 'id="crm-order-cancel"' in page
    assert "Only managers approve discounts" in client.get(_url(app, "CommerceView.approvals")).get_data(
        as_text=True)
    assert client.post(_url(app, "CommerceView.pay", pk=order.id)).status_code in (302, 403)
    session.expire_all()
    assert session.get(Order, order.id).status == "pending"
    client.post(_url(app, "CommerceView.cancel", pk=order.id))
    session.expire_all()
    assert session.get(Order, order.id).status == "cancelled"
