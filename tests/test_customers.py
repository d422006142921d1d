"""The customer domain: one customer per normalised phone, merged with the registered users of the
learning / e-commerce side (POST /api/v1/customer/register), and the scoped, masked customer list."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.models.sales import OWNED, Customer, Lead, Opportunity
from app.security.masking import mask_phone
from tests import factories
from tests.conftest import api_token, login

REGISTER = "/api/v1/customer/register"


def web(app, username: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def integration(app, username: str = "learning-system") -> dict:
    sm = app.appbuilder.sm
    user = sm.add_user(username, "Learning", "System", f"{username}@example.com",
                       sm.find_role("Lead Integration"), factories.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, username)['key']}"}


def customers(session, **where) -> list[Customer]:
    session.expire_all()
    query = select(Customer).order_by(Customer.id)
    for name, value in where.items():
        query = query.where(getattr(Customer, name) == value)
    return session.scalars(query).all()


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def lead(client, auth, key: str, phone: str, product_line: str = "k12_math"):
    resp = client.post("/api/v1/lead/", json={"phone": phone, "product_line": product_line, "name": "王家长"},
                       headers={**auth, "Idempotency-Key": key})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_a_lead_before_registration_and_the_registration_meet_on_one_customer(app, session):
    auth = integration(app)
    client = app.test_client()
    first = lead(client, auth, "l-1", "138 0013 8300")
    total = count(session, Customer)
    [customer] = customers(session, phone="+8613800138300")
    assert customer.id == first["customer_id"] and customer.registered_user_id is None

    resp = client.post(REGISTER, json={"registered_user_id": "u-1001", "phone": "+86 138 0013 8300",
                                       "name": "王女士"}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"id": customer.id, "registered_user_id": "u-1001", "phone": "+8613800138300",
                               "created": False}
    assert count(session, Customer) == total
    [customer] = customers(session, phone="+8613800138300")
    assert customer.registered_user_id == "u-1001" and customer.name == "王家长"  # the lead's name stays

    # Registering again is harmless; a later lead still lands on the same customer.
    again = client.post(REGISTER, json={"registered_user_id": "u-1001", "phone": "13800138300"}, headers=auth)
    assert again.status_code == 200 and again.get_json()["id"] == customer.id
    later = lead(client, auth, "l-2", "13800138300", "programming")
    assert later["customer_id"] == customer.id and later["created_opportunity"] is True
    assert count(session, Customer) == total


def test_a_registration_before_any_lead_creates_the_customer_leads_attach_to(app, session):
    auth = integration(app)
    client = app.test_client()
    total = count(session, Customer)
    resp = client.post(REGISTER, json={"registered_user_id": "u-2002", "phone": "13800138400"}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["created"] is True
    assert count(session, Customer) == total + 1

    # The back-office form too: the lead joins the registered customer.
    client = web(app, "backoffice1")
    client.post("/leadview/add",
                data={"phone": "138-0013-8400", "product_line": "k12_english", "name": "赵家长"})
    session.expire_all()
    [row] = session.scalars(select(Lead).where(Lead.phone == "+8613800138400")).all()
    assert row.customer_id == resp.get_json()["id"] and row.customer.registered_user_id == "u-2002"
    assert row.customer.name == "赵家长"  # a name learnt from the lead fills a blank one
    assert count(session, Customer) == total + 1


def test_conflicting_registrations_answer_409_and_change_nothing(app, session):
    auth = integration(app)
    client = app.test_client()
    assert client.post(REGISTER, json={"registered_user_id": "u-1", "phone": "13800138501"},
                       headers=auth).status_code == 200
    lead(client, auth, "l-9", "13800138502")  # an unregistered customer
    before = [(c.id, c.phone, c.registered_user_id) for c in customers(session)]

    # u-1 is customer A, the phone is customer B's: two people, not merged silently.
    resp = client.post(REGISTER, json={"registered_user_id": "u-1", "phone": "13800138502"}, headers=auth)
    assert resp.status_code == 409 and resp.get_json()["field"] == "phone"
    # The phone is already another registered user's.
    resp = client.post(REGISTER, json={"registered_user_id": "u-2", "phone": "13800138501"}, headers=auth)
    assert resp.status_code == 409 and "u-1" in resp.get_json()["message"]
    assert [(c.id, c.phone, c.registered_user_id) for c in customers(session)] == before


def test_registration_refuses_bad_fields_per_field(app, session):
    auth = integration(app)
    client = app.test_client()
    total = count(session, Customer)
    resp = client.post(REGISTER, json={"phone": "12345"}, headers={**auth, "Accept-Language": "en"})
    assert resp.status_code == 422
    errors = resp.get_json()["errors"]
    assert set(errors) == {"registered_user_id", "phone"} and "not a valid phone number" in errors["phone"]
    resp = client.post(REGISTER, json={"registered_user_id": "x" * 65, "phone": ""}, headers=auth)
    assert resp.get_json()["errors"] == {"registered_user_id": "at most 64 characters", "phone": "required"}
    assert client.post(REGISTER, data="[]", headers={**auth, "Content-Type": "application/json"}
                       ).status_code == 400
    assert count(session, Customer) == total


def test_registration_needs_customer_write(app, session):
    client = app.test_client()
    token = api_token(client, "sales11")
    body = {"registered_user_id": "u-7", "phone": "13800138600"}
    assert client.post(REGISTER, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert client.post(REGISTER, json=body).status_code == 401
    assert customers(session, registered_user_id="u-7") == []


# --- the customer list ------------------------------------------------------------------------------
def listed_ids(client) -> set[int]:
    page = client.get("/customerview/list/?psize_CustomerView=200").get_data(as_text=True)
    return {int(pk) for pk in re.findall(r"/customerview/show/(\d+)", page)}


def test_customer_list_is_scoped_through_opportunities_and_masked(app, session):
    demo = session.scalars(select(Opportunity).order_by(Opportunity.id).limit(4)).all()
    for opp, username in zip(demo, ["sales11", "sales11", "sales12", "sales12"], strict=True):
        emp = factories.employee_by_username(session, username)
        opp.status, opp.owner_id, opp.org_unit_id = OWNED, emp.id, emp.org_unit_id
    session.commit()

    client = web(app, "sales11")
    assert listed_ids(client) == {opp.customer_id for opp in demo[:2]}
    page = client.get("/customerview/list/").get_data(as_text=True)
    for opp in demo[:2]:
        assert opp.customer.phone[3:] not in page and mask_phone(opp.customer.phone) in page
    # The list leads to the customer page (scoped as well).
    assert client.get(f"/customerview/show/{demo[2].customer_id}", follow_redirects=True).status_code == 404
    resp = client.get(f"/customerview/show/{demo[0].customer_id}", follow_redirects=True)
    assert resp.status_code == 200 and mask_phone(demo[0].customer.phone) in resp.get_data(as_text=True)

    admin = web(app, "admin")
    assert len(listed_ids(admin)) == min(count(session, Customer), 200)
    # Nobody adds or deletes customers by hand: they come from leads and registrations.
    assert admin.get("/customerview/add").status_code == 404


def test_phones_typed_into_notes_are_masked_on_the_customer_and_opportunity_pages(app, session):
    """Consult notes, follow-ups and assignment notes are free text: a number typed into them is masked
    like every other phone, whoever reads the page (the admin included)."""
    opp = session.scalars(select(Opportunity).order_by(Opportunity.id).limit(1)).one()
    typed = "13912345678"
    lead = factories.LEAD.create(session, customer_id=opp.customer_id, opportunity_id=opp.id,
                                 consult_note=f"请回电 {typed}")
    factories.FOLLOW_UP.create(session, opportunity_id=opp.id, content=f"家长的另一个号码 {typed}")
    session.commit()
    admin = web(app, "admin")
    for url in (f"/customerview/show/{opp.customer_id}", f"/opportunityview/show/{opp.id}"):
        page = admin.get(url, follow_redirects=True).get_data(as_text=True)
        assert typed not in page, url
        assert mask_phone("+86" + typed) in page or "139****5678" in page, url
    api = app.test_client()
    token = api_token(api, "admin")
    note = api.get(f"/api/v1/lead/{lead.id}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert note["result"]["consult_note"] == "请回电 139****5678"
