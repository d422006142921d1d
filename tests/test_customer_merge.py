"""Customer merge (app.services.customers, /customer/merge/<pk>, POST /api/v1/customer/merge) and the
registration endpoint's hostile input (POST /api/v1/customer/register)."""

from __future__ import annotations

import json
import re

from sqlalchemy import func, select

from app import clock
from app.models.audit import AuditLog
from app.models.calls import CallRecord
from app.models.sales import ASSIGN, OWNED, AssignmentLog, Customer, FollowUp, Lead, Opportunity
from app.models.sms import SmsMessage
from app.security.masking import mask_phone
from tests import factories
from tests.conftest import api_token, login
from tests.helpers import flashes

MERGE = "/api/v1/customer/merge"
REGISTER = "/api/v1/customer/register"


# --- helpers --------------------------------------------------------------------------------------------
def bearer(app, username: str, password: str | None = None) -> dict:
    token = api_token(app.test_client(), username, password)
    return {"Authorization": f"Bearer {token}", "Accept-Language": "en"}


def web(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def integration(app) -> dict:
    sm = app.appbuilder.sm
    user = sm.add_user("learning-system", "Learning", "System", "learning@example.com",
                       sm.find_role("Lead Integration"), factories.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, 'learning')['key']}", "Accept-Language": "en"}


def opportunity(session, customer, owner=None, line="k12_math", **fields):
    values = {"customer_id": customer.id,
              "product_line_id": factories.dict_item(session, "product_line", line).id}
    if owner is not None:
        values.update(status=OWNED, owner_id=owner.id, org_unit_id=owner.org_unit_id,
                      assigned_at=clock.utcnow())
    return factories.OPPORTUNITY.create(session, **values, **fields)


def staff(session, username: str):
    return factories.employee_by_username(session, username)


def count(session, model, *where) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model).where(*where))


def merge_audits(session) -> list[AuditLog]:
    session.expire_all()
    return session.scalars(select(AuditLog).where(AuditLog.action == "customer_merge")).all()


def state(session, *customers) -> list:
    """What a refused merge must leave as it was."""
    session.expire_all()
    ids = [c.id for c in customers]
    return [session.scalars(select(Customer.merged_into_id).where(Customer.id.in_(ids))).all(),
            session.execute(select(Opportunity.id, Opportunity.customer_id, Opportunity.owner_id)
                            .where(Opportunity.customer_id.in_(ids)).order_by(Opportunity.id)).all(),
            count(session, AssignmentLog), len(merge_audits(session))]


# --- the merge ------------------------------------------------------------------------------------------
def test_merge_moves_everything_to_the_survivor_keeps_a_pointer_and_is_audited(app, session):
    sales = staff(session, "sales11")
    survivor = factories.CUSTOMER.create(session, name=None, region=None)
    merged = factories.CUSTOMER.create(session, registered_user_id="u-merged", region="上海",
                                       marketing_consent=False)
    opportunity(session, survivor, sales, "k12_english")
    opp = opportunity(session, merged, sales, "k12_math")
    closed = opportunity(session, merged, None, "k12_english", status="lost")
    follow_up = factories.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=sales.id)
    lead = factories.LEAD.create(session, customer_id=merged.id, opportunity_id=opp.id)
    call = factories.make_call_record(session, sales, customer_id=merged.id, opportunity_id=opp.id)
    sms = factories.SMS_MESSAGE.create(session, customer_id=merged.id, phone=merged.phone)
    logs_before = count(session, AssignmentLog)
    started = clock.utcnow()

    resp = app.test_client().post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id},
                                  headers=bearer(app, "admin"))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["moved"] == {"opportunities": [opp.id, closed.id], "leads": 1, "follow_ups": 1, "calls": 1,
                             "sms_messages": 1, "orders": 0, "learning_activities": 0}
    assert body["reassigned"] == [] and body["survivor_id"] == survivor.id

    session.expire_all()
    assert session.get(Lead, lead.id).customer_id == survivor.id
    assert {session.get(Opportunity, i).customer_id for i in (opp.id, closed.id)} == {survivor.id}
    assert session.get(FollowUp, follow_up.id).opportunity.customer_id == survivor.id
    assert session.get(CallRecord, call.id).customer_id == survivor.id
    assert session.get(SmsMessage, sms.id).customer_id == survivor.id
    gone, kept = session.get(Customer, merged.id), session.get(Customer, survivor.id)
    assert gone.merged_into_id == survivor.id and started <= gone.merged_at <= clock.utcnow()
    # The survivor takes the registered user id, blanks it lacked and the opt-out.
    assert kept.registered_user_id == "u-merged" and gone.registered_user_id is None
    assert kept.name == merged.name and kept.region == "上海" and kept.marketing_consent is False
    assert count(session, AssignmentLog) == logs_before  # one owner: nobody's opportunities moved

    [row] = merge_audits(session)
    assert row.actor_name == "admin" and row.target_type == "customer" and row.target_id == str(survivor.id)
    assert started <= row.created_at <= clock.utcnow()
    after = json.loads(row.after)
    assert after["merged_id"] == merged.id and after["moved"]["leads"] == 1
    assert after["moved"]["opportunities"] == [opp.id, closed.id]
    assert merged.phone not in (row.before or "") + row.after  # audit pages are not masked

    # The merged customer leaves lists; its page leads to the survivor; it cannot be merged again.
    admin = web(app, "admin")
    listed = admin.get("/customerview/list/?psize_CustomerView=200").get_data(as_text=True)
    assert f"/customerview/show/{survivor.id}\"" in listed
    assert f"/customerview/show/{merged.id}\"" not in listed
    page_list = admin.get("/customer/list/?psize_CustomerPageView=200").get_data(as_text=True)
    assert f"/customer/show/{merged.id}\"" not in page_list
    resp = admin.get(f"/customer/show/{merged.id}")
    assert resp.status_code == 302 and resp.location.endswith(f"/customer/show/{survivor.id}")
    other = factories.CUSTOMER.create(session)
    again = app.test_client().post(MERGE, json={"survivor_id": other.id, "merged_id": merged.id},
                                   headers=bearer(app, "admin"))
    assert again.status_code == 409 and again.get_json()["field"] == "merged_id"
    into = app.test_client().post(MERGE, json={"survivor_id": merged.id, "merged_id": other.id},
                                  headers=bearer(app, "admin"))
    assert into.status_code == 409 and into.get_json()["field"] == "survivor_id"


def test_registration_by_phone_works_after_the_merge(app, session):
    auth = integration(app)
    client = app.test_client()
    first = client.post(REGISTER, json={"registered_user_id": "u-1", "phone": "13800138801"}, headers=auth)
    assert first.status_code == 200
    resp = client.post("/api/v1/lead/", json={"phone": "13800138802", "product_line": "k12_math"},
                       headers={**auth, "Idempotency-Key": "merge-1"})
    assert resp.status_code == 201
    other = resp.get_json()["customer_id"]
    refused = client.post(REGISTER, json={"registered_user_id": "u-1", "phone": "13800138802"}, headers=auth)
    assert refused.status_code == 409 and "merge them first" in refused.get_json()["message"]

    survivor = first.get_json()["id"]
    assert client.post(MERGE, json={"survivor_id": survivor, "merged_id": other},
                       headers=bearer(app, "admin")).status_code == 200
    resp = client.post(REGISTER, json={"registered_user_id": "u-1", "phone": "13800138802"}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["id"] == survivor
    assert resp.get_json()["created"] is False
    # New leads with the merged customer's phone land on the survivor, on its open opportunity.
    later = client.post("/api/v1/lead/", json={"phone": "13800138802", "product_line": "k12_math"},
                        headers={**auth, "Idempotency-Key": "merge-2"})
    assert later.status_code == 201 and later.get_json()["customer_id"] == survivor
    assert later.get_json()["created_opportunity"] is False
    # Another user with that phone is someone else's number now.
    clash = client.post(REGISTER, json={"registered_user_id": "u-9", "phone": "13800138802"}, headers=auth)
    assert clash.status_code == 409 and "u-1" in clash.get_json()["message"]


def test_two_owners_are_refused_unless_the_merger_chooses_one(app, session):
    mine, theirs = staff(session, "sales11"), staff(session, "sales12")
    survivor, merged = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
    kept = opportunity(session, survivor, mine, "k12_math")
    moving = opportunity(session, merged, theirs, "k12_english")
    before = state(session, survivor, merged)
    headers = bearer(app, "admin")
    client = app.test_client()

    resp = client.post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id}, headers=headers)
    assert resp.status_code == 409 and resp.get_json()["field"] == "owner_id"
    assert mine.name in resp.get_json()["message"] and theirs.name in resp.get_json()["message"]
    outsider = staff(session, "sales13")
    resp = client.post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id,
                                    "owner_id": outsider.id}, headers=headers)
    assert resp.status_code == 422 and resp.get_json()["field"] == "owner_id"
    dry = client.post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id, "dry_run": True},
                      headers=headers)
    assert dry.status_code == 200 and dry.get_json()["owner_required"] is True
    assert {o["id"] for o in dry.get_json()["owners"]} == {mine.id, theirs.id}
    assert state(session, survivor, merged) == before

    resp = client.post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id, "owner_id": mine.id},
                       headers=headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["reassigned"] == [moving.id]
    session.expire_all()
    assert session.get(Opportunity, moving.id).owner_id == mine.id
    assert session.get(Opportunity, kept.id).owner_id == mine.id
    [log] = session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id == moving.id)).all()
    assert (log.reason, log.from_owner_id, log.to_owner_id) == (ASSIGN, theirs.id, mine.id)
    assert log.actor_name == "admin"
    assert f"customer #{merged.id} merged into #{survivor.id}" in log.note
    assert json.loads(merge_audits(session)[0].after)["owner_id"] == mine.id


def test_open_opportunities_in_the_same_product_line_are_refused(app, session):
    sales = staff(session, "sales11")
    survivor, merged = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
    opportunity(session, survivor, sales, "k12_math")
    opportunity(session, merged, None, "k12_math")  # waiting for dispatch
    before = state(session, survivor, merged)
    resp = app.test_client().post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id},
                                  headers=bearer(app, "admin"))
    assert resp.status_code == 409 and "close one of them first" in resp.get_json()["message"]
    assert state(session, survivor, merged) == before


def test_bad_merge_requests_are_4xx_naming_the_field(app, session):
    headers = bearer(app, "admin")
    client = app.test_client()
    one = factories.CUSTOMER.create(session)
    cases = [({"survivor_id": "abc", "merged_id": one.id}, 422, "survivor_id"),
             ({"survivor_id": one.id, "merged_id": 99999999999}, 422, "merged_id"),
             ({"survivor_id": one.id, "merged_id": True}, 422, "merged_id"),
             ({"survivor_id": one.id, "merged_id": {"a": 1}}, 422, "merged_id"),
             ({"survivor_id": one.id}, 422, "merged_id"),
             ({"survivor_id": one.id, "merged_id": one.id}, 422, "merged_id"),
             ({"survivor_id": one.id, "merged_id": 2**31 - 1}, 404, "merged_id")]
    for body, status, field in cases:
        resp = client.post(MERGE, json=body, headers=headers)
        assert (resp.status_code, resp.get_json().get("field")) == (status, field), body
    assert client.post(MERGE, data="[]", headers={**headers, "Content-Type": "application/json"}
                       ).status_code == 400
    assert merge_audits(session) == []


def test_a_director_merges_only_inside_their_scope_and_a_salesperson_not_at_all(app, session):
    division = factories.org_unit(session, name="West division", kind="division")
    team = factories.org_unit(session, name="West team", parent=division)
    director = factories.employee(session, division)
    factories.login_user(app, session, director, "Sales Director")
    west = factories.employee(session, team)
    inside_a, inside_b = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
    outside, straddling = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
    opportunity(session, inside_a, west, "k12_math")
    opportunity(session, inside_b, west, "k12_english")
    opportunity(session, outside, staff(session, "sales11"), "k12_english")
    opportunity(session, straddling, west, "k12_english")
    opportunity(session, straddling, staff(session, "sales11"), "programming")
    before = state(session, inside_a, inside_b, outside, straddling)
    headers = bearer(app, f"user{director.id}", factories.PASSWORD)
    client = app.test_client()

    resp = client.post(MERGE, json={"survivor_id": inside_a.id, "merged_id": outside.id}, headers=headers)
    assert resp.status_code == 404 and resp.get_json()["field"] == "merged_id"
    resp = client.post(MERGE, json={"survivor_id": inside_a.id, "merged_id": straddling.id}, headers=headers)
    assert resp.status_code == 403 and "outside your data scope" in resp.get_json()["message"]
    # A salesperson may not merge at all, by API or page, even their own customers.
    sales = bearer(app, "sales11")
    assert client.post(MERGE, json={"survivor_id": outside.id, "merged_id": straddling.id},
                       headers=sales).status_code == 403
    page = web(app, "sales11")
    assert page.get(f"/customer/merge/{outside.id}?other={straddling.id}").status_code in (302, 403)
    resp = page.post(f"/customer/merge/{outside.id}", data={"merged_id": straddling.id})
    assert resp.status_code in (302, 403)
    shown = page.get(f"/customer/show/{outside.id}").get_data(as_text=True)
    assert 'id="crm-customer-merge-link"' not in shown
    assert state(session, inside_a, inside_b, outside, straddling) == before

    resp = client.post(MERGE, json={"survivor_id": inside_a.id, "merged_id": inside_b.id}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()
    assert session.get(Customer, inside_b.id).merged_into_id == inside_a.id


def test_the_merge_page_previews_asks_for_the_owner_and_merges(app, session):
    mine, theirs = staff(session, "sales11"), staff(session, "sales12")
    survivor, merged = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
    opportunity(session, survivor, mine, "k12_math")
    moving = opportunity(session, merged, theirs, "k12_english")
    factories.LEAD.create(session, customer_id=merged.id, opportunity_id=moving.id)
    admin = web(app, "admin")

    show = admin.get(f"/customer/show/{survivor.id}").get_data(as_text=True)
    assert f'href="/customer/merge/{survivor.id}"' in show
    preview = admin.get(f"/customer/merge/{survivor.id}?other={merged.id}").get_data(as_text=True)
    assert 'id="crm-merge-preview"' in preview and 'name="owner_id"' in preview
    assert merged.phone not in preview and mask_phone(merged.phone) in preview  # even for an admin
    refused = admin.get(f"/customer/merge/{survivor.id}?other={survivor.id}").get_data(as_text=True)
    assert 'id="crm-merge-error"' in refused and 'id="crm-merge-confirm"' not in refused

    # Without the owner: refused with the reason, back on the merge page; nothing merged.
    resp = admin.post(f"/customer/merge/{survivor.id}", data={"merged_id": merged.id})
    assert resp.status_code == 302 and f"/customer/merge/{survivor.id}" in resp.location
    page = admin.get(resp.location).get_data(as_text=True)
    assert any("owned by different people" in m for m in flashes(page))
    assert state(session, merged)[0] == [None]

    resp = admin.post(f"/customer/merge/{survivor.id}", data={"merged_id": merged.id, "owner_id": mine.id})
    assert resp.status_code == 302 and resp.location.endswith(f"/customer/show/{survivor.id}")
    page = admin.get(resp.location).get_data(as_text=True)
    assert any(re.search(rf"#{merged.id} merged into this customer: 1 opportunities, 1 leads", m)
               for m in flashes(page, "success"))
    session.expire_all()
    assert session.get(Customer, merged.id).merged_into_id == survivor.id
    assert session.get(Opportunity, moving.id).owner_id == mine.id


# --- registration: hostile input ------------------------------------------------------------------------
def test_registration_refuses_wrong_types_and_lengths_naming_the_field(app, session):
    auth = integration(app)
    client = app.test_client()
    total = count(session, Customer)
    cases = [({"registered_user_id": {"a": 1}, "phone": "13800138901"}, "registered_user_id"),
             ({"registered_user_id": ["u"], "phone": "13800138901"}, "registered_user_id"),
             ({"registered_user_id": True, "phone": "13800138901"}, "registered_user_id"),
             ({"registered_user_id": 1.5, "phone": "13800138901"}, "registered_user_id"),
             ({"registered_user_id": "u-h", "phone": {"n": "13800138901"}}, "phone"),
             ({"registered_user_id": "u-h", "phone": "1" * 10_000}, "phone"),
             ({"registered_user_id": "u-h", "phone": "13800138901", "name": {"x": 1}}, "name"),
             ({"registered_user_id": "u-h", "phone": "13800138901", "name": "名" * 65}, "name")]
    for body, field in cases:
        resp = client.post(REGISTER, json=body, headers=auth)
        assert resp.status_code == 422, (body, resp.get_json())
        assert set(resp.get_json()["errors"]) == {field}, body
        assert len(resp.get_data()) < 1000  # the bad value is not echoed back
    assert count(session, Customer) == total
    assert count(session, Customer, Customer.registered_user_id.in_(["{'a': 1}", "['u']", "True"])) == 0

    # A whole number is a fine user id (stored as its digits).
    resp = client.post(REGISTER, json={"registered_user_id": 12345, "phone": 13800138901}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["registered_user_id"] == "12345" and resp.get_json()["phone"] == "+8613800138901"


def test_pg_merge_with_an_owner_choice_and_huge_ids_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        mine, theirs = staff(session, "sales11"), staff(session, "sales12")
        survivor, merged = factories.CUSTOMER.create(session), factories.CUSTOMER.create(session)
        opportunity(session, survivor, mine, "k12_math")
        moving = opportunity(session, merged, theirs, "k12_english")
        factories.LEAD.create(session, customer_id=merged.id, opportunity_id=moving.id)
        factories.SMS_MESSAGE.create(session, customer_id=merged.id, phone=merged.phone)
        headers = bearer(pg_app, "admin")
        client = pg_app.test_client()
        for body in ({"survivor_id": survivor.id, "merged_id": 99999999999},
                     {"survivor_id": "99999999999999999999", "merged_id": merged.id}):
            assert client.post(MERGE, json=body, headers=headers).status_code == 422
        admin = web(pg_app, "admin")
        assert admin.get("/customer/merge/99999999999").status_code == 404
        assert admin.get(f"/customer/merge/{survivor.id}?other=99999999999").status_code == 200
        assert admin.get("/customer/show/99999999999999999999").status_code == 404
        resp = client.post(MERGE, json={"survivor_id": survivor.id, "merged_id": merged.id,
                                        "owner_id": mine.id}, headers=headers)
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["moved"]["sms_messages"] == 1 and resp.get_json()["reassigned"] == [moving.id]
        session.expire_all()
        assert session.get(Opportunity, moving.id).customer_id == survivor.id
        assert session.get(Opportunity, moving.id).owner_id == mine.id
        assert session.get(Customer, merged.id).merged_into_id == survivor.id
        assert len(merge_audits(session)) == 1
