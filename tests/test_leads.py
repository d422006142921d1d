"""Lead intake through the back-office form and the REST API, against the real app, SQL and Redis.

Policy under test (app.services.leads): phones are stored in E.164; dictionary choices are the enabled
items only; a lead attaches to the one customer of its phone; a second lead for a customer with an open
opportunity in the same product line joins it and its owner keeps it (sticky, logged) — or is refused
when the config item leads.duplicate_policy is "reject"; a new opportunity asks for one dispatch run;
the API is idempotent on the caller's key; lists are scoped through the opportunity, phones masked.
"""

from __future__ import annotations

import re
import threading

from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.jobs.dispatch import DISPATCH_JOB_ID
from app.jobs.worker import app_worker_class
from app.models.metadata import ConfigItem
from app.models.sales import OWNED, STICKY, WAITING, AssignmentLog, Customer, Lead, Opportunity
from app.security.masking import mask_phone
from app.services.seed import DEMO_PASSWORD
from tests import factories
from tests.conftest import api_token, login


def web(app, username: str, password: str | None = None) -> FlaskClient:
    client = app.test_client()
    resp = login(client, username, password)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    client.get("/lang/en")  # messages in English for the assertions
    return client


def form(**values) -> dict:
    data = {"name": "测试家长", "phone": "138 0013 8000", "product_line": "k12_math", "source": "douyin",
            "intention_level": "A", "campaign": "2026-春季", "region": "上海", "consult_note": "想了解试听"}
    data.update(values)
    return data


def post_lead(client, **values):
    return client.post("/leadview/add", data=form(**values), follow_redirects=True)


def leads_of(session, phone: str) -> list[Lead]:
    session.expire_all()
    return session.scalars(select(Lead).where(Lead.phone == phone).order_by(Lead.id)).all()


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def html(resp) -> str:
    return resp.get_data(as_text=True)


# --- the form ---------------------------------------------------------------------------------------
def test_form_lead_creates_customer_and_waiting_opportunity_with_e164_phone(app, session):
    client = web(app, "backoffice1")
    resp = post_lead(client, phone="138 0013 8000")
    assert resp.status_code == 200
    [lead] = leads_of(session, "+8613800138000")
    opp = lead.opportunity
    assert re.search(rf"new opportunity #{opp.id} created", html(resp))
    assert opp.status == WAITING and opp.owner_id is None and opp.customer_id == lead.customer_id
    assert lead.customer.phone == "+8613800138000" and lead.customer.name == "测试家长"
    assert lead.channel == "form" and lead.source.code == "douyin" and lead.product_line.code == "k12_math"
    assert (opp.intention_level.code, opp.source.code, opp.campaign, opp.region) == ("A", "douyin",
                                                                                     "2026-春季", "上海")
    assert opp.stage.code == "new"


def test_phone_numbers_are_normalised_and_bad_ones_refused_as_field_errors(app, session):
    client = web(app, "backoffice1")
    written = {"13912345601": "+8613912345601", "+86 139-1234-5602": "+8613912345602",
               "0086 139 1234 5603": "+8613912345603", "(139) 1234 5604": "+8613912345604"}
    for typed, stored in written.items():
        assert post_lead(client, phone=typed).status_code == 200
        assert len(leads_of(session, stored)) == 1, typed

    before = count(session, Lead), count(session, Customer), count(session, Opportunity)
    for typed, message in {"12345": "is not a valid phone number", "abc": "is not a phone number",
                           "": "required"}.items():
        resp = post_lead(client, phone=typed)
        assert resp.status_code == 200 and "Add Lead" in html(resp)  # the form again, not the list
        assert message in html(resp), typed
    resp = post_lead(client, phone="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in html(resp)  # the message quotes the input: escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html(resp)
    resp = post_lead(client, phone="139 1234 5699", product_line="")
    assert "required" in html(resp)
    assert (count(session, Lead), count(session, Customer), count(session, Opportunity)) == before
    assert leads_of(session, "+8613912345699") == []


def test_second_lead_for_an_owned_opportunity_is_sticky_and_logged(app, session):
    client = web(app, "backoffice1")
    post_lead(client, phone="138 0013 8000", name="张家长")
    [first] = leads_of(session, "+8613800138000")
    owner = factories.employee_by_username(session, "sales11")
    opp = first.opportunity
    opp.status, opp.owner_id, opp.org_unit_id = OWNED, owner.id, owner.org_unit_id
    session.commit()
    opportunities = count(session, Opportunity)

    resp = post_lead(client, phone="+86 138-0013-8000", name="张爸爸", campaign="2026-暑期")
    page = html(resp)
    assert f"joined the open opportunity #{opp.id}" in page and "sticky ownership" in page
    assert owner.name in page

    leads = leads_of(session, "+8613800138000")
    assert [lead.opportunity_id for lead in leads] == [opp.id, opp.id]
    assert len({lead.customer_id for lead in leads}) == 1
    assert count(session, Opportunity) == opportunities  # no second opportunity
    session.refresh(opp)
    assert (opp.status, opp.owner_id) == (OWNED, owner.id)
    logs = session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id == opp.id)).all()
    assert [(log.reason, log.from_owner_id, log.to_owner_id, log.actor_name) for log in logs] == [
        (STICKY, owner.id, owner.id, "backoffice1")]

    # Another product line for the same person: a new opportunity, still one customer.
    post_lead(client, phone="13800138000", product_line="programming")
    leads = leads_of(session, "+8613800138000")
    assert len(leads) == 3 and leads[2].opportunity_id != opp.id
    assert len({lead.customer_id for lead in leads}) == 1
    assert leads[2].opportunity.status == WAITING


def test_reject_policy_refuses_a_duplicate_lead(app, session):
    session.scalar(select(ConfigItem).where(ConfigItem.key == "leads.duplicate_policy")).value = "reject"
    session.commit()
    client = web(app, "backoffice1")
    post_lead(client, phone="13800138000")
    leads, opportunities = count(session, Lead), count(session, Opportunity)

    resp = post_lead(client, phone="138 0013 8000", name="again")
    assert resp.status_code == 200 and "Add Lead" in html(resp)
    assert "already has an open opportunity in that product line" in html(resp)
    assert (count(session, Lead), count(session, Opportunity)) == (leads, opportunities)
    assert session.scalar(select(func.count()).select_from(AssignmentLog)
                          .where(AssignmentLog.reason == STICKY)) == 0

    # Another product line is not a duplicate.
    post_lead(client, phone="138 0013 8000", product_line="adult_english")
    assert len(leads_of(session, "+8613800138000")) == 2


def test_only_enabled_dictionary_items_are_offered_and_accepted(app, session):
    douyin = factories.dict_item(session, "lead_source", "douyin")
    coding = factories.dict_item(session, "product_line", "programming")
    douyin.enabled = coding.enabled = False
    session.commit()
    client = web(app, "backoffice1")
    page = html(client.get("/leadview/add"))
    assert 'value="web_form"' in page and 'value="k12_math"' in page
    assert 'value="douyin"' not in page and 'value="programming"' not in page

    before = count(session, Lead)
    resp = post_lead(client, phone="13800138001", source="douyin", product_line="programming")
    page = html(resp)
    assert "unknown or disabled option &#39;douyin&#39;" in page
    assert "unknown or disabled option &#39;programming&#39;" in page
    assert count(session, Lead) == before

    douyin.enabled = True
    session.commit()
    post_lead(client, phone="13800138001", source="douyin")
    [lead] = leads_of(session, "+8613800138001")
    assert lead.source_id == douyin.id


def test_roles_without_lead_write_cannot_use_the_form(app, session):
    client = web(app, "sales11")
    before = count(session, Lead)
    resp = client.post("/leadview/add", data=form(phone="13800138002"))
    assert resp.status_code == 403
    assert count(session, Lead) == before


# --- dispatch after intake --------------------------------------------------------------------------
def test_new_leads_enqueue_one_dispatch_job_that_a_worker_runs(app, session):
    queue = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"]))
    client = web(app, "backoffice1")
    phones = ["+8613800138011", "+8613800138012", "+8613800138013"]
    for phone in phones:
        post_lead(client, phone=phone)
    assert queue.job_ids == [DISPATCH_JOB_ID]  # a burst of leads makes one job

    worker = app_worker_class(app, SimpleWorker)([queue], connection=queue.connection)
    assert worker.work(burst=True)
    assert queue.fetch_job(DISPATCH_JOB_ID).get_status() == "finished"
    for phone in phones:
        [lead] = leads_of(session, phone)
        assert lead.opportunity.status != WAITING
        reasons = session.scalars(select(AssignmentLog.reason)
                                  .where(AssignmentLog.opportunity_id == lead.opportunity_id)).all()
        assert len(reasons) == 1 and reasons[0] in ("dispatch", "to_pool")

    # A sticky lead joins an existing opportunity: nothing new to dispatch, no job.
    post_lead(client, phone=phones[0])
    assert queue.job_ids == []


# --- data scope and masking -------------------------------------------------------------------------
def _own(session, username: str, opportunities: list[Opportunity]) -> set[int]:
    emp = factories.employee_by_username(session, username)
    for opp in opportunities:
        opp.status, opp.owner_id, opp.org_unit_id = OWNED, emp.id, emp.org_unit_id
    session.commit()
    return {lead.id for opp in opportunities for lead in opp.leads}


def listed_ids(client, view: str) -> set[int]:
    page = html(client.get(f"/{view.lower()}/list/?psize_{view}=200"))
    return {int(pk) for pk in re.findall(rf"/{view.lower()}/show/(\d+)", page)}


def test_salesperson_sees_only_leads_of_opportunities_they_own(app, session):
    demo = session.scalars(select(Opportunity).order_by(Opportunity.id).limit(6)).all()
    mine = _own(session, "sales11", demo[:3])
    theirs = _own(session, "sales12", demo[3:5])
    assert mine and theirs

    client = web(app, "sales11")
    assert listed_ids(client, "LeadView") == mine
    token = api_token(client, "sales11")
    resp = client.get("/api/v1/lead/?q=(page_size:100)", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert {row["id"] for row in resp.get_json()["result"]} == mine
    assert all("*" in row["phone"] for row in resp.get_json()["result"])
    for pk in theirs:
        assert client.get(f"/leadview/show/{pk}").status_code == 404
        assert client.get(f"/api/v1/lead/{pk}", headers={"Authorization": f"Bearer {token}"}
                          ).status_code == 404

    page = html(client.get("/leadview/list/"))
    for lead in session.scalars(select(Lead).where(Lead.id.in_(mine))):
        assert lead.phone[3:] not in page and mask_phone(lead.phone) in page

    # Admin sees every lead.
    admin = web(app, "admin")
    assert len(listed_ids(admin, "LeadView")) == min(count(session, Lead), 200)


# --- REST intake ------------------------------------------------------------------------------------
def integration_key(app, session, username: str = "shop-system") -> dict:
    sm = app.appbuilder.sm
    user = sm.add_user(username, "Shop", "System", f"{username}@example.com",
                       sm.find_role("Lead Integration"), factories.PASSWORD)
    return {"Authorization": f"Bearer {sm.create_api_key(user, username)['key']}"}


API_LEAD = {"name": "李家长", "phone": "138 0013 8100", "product_line": "k12_english", "source": "wechat",
            "intention_level": "B", "campaign": "公众号-春季", "region": "北京", "consult_note": "咨询英语"}


def test_api_intake_is_idempotent_on_the_callers_key(app, session):
    auth = integration_key(app, session)
    client = app.test_client()
    first = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "order-1"})
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["created_opportunity"] is True and body["replayed"] is False
    leads = count(session, Lead)

    again = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "order-1"})
    assert again.status_code == 200
    assert {k: again.get_json()[k] for k in ("id", "customer_id", "opportunity_id")} == {
        k: body[k] for k in ("id", "customer_id", "opportunity_id")}
    assert again.get_json()["replayed"] is True
    in_body = client.post("/api/v1/lead/", json={**API_LEAD, "client_key": "order-1"}, headers=auth)
    assert in_body.status_code == 200 and in_body.get_json()["id"] == body["id"]
    assert count(session, Lead) == leads

    [lead] = leads_of(session, "+8613800138100")
    assert lead.channel == "api" and lead.id == body["id"] and lead.opportunity_id == body["opportunity_id"]
    assert '"phone": "138 0013 8100"' in lead.raw_payload

    # Another key for the same customer and product line joins the opportunity (sticky).
    other = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "order-2"})
    assert other.status_code == 201
    assert other.get_json()["opportunity_id"] == body["opportunity_id"]
    assert other.get_json()["sticky"] is True and other.get_json()["created_opportunity"] is False

    # Keys belong to the caller: another system's "order-1" is a lead of its own.
    second = integration_key(app, session, "mall-system")
    theirs = client.post("/api/v1/lead/", json={**API_LEAD, "phone": "13800138101"},
                         headers={**second, "Idempotency-Key": "order-1"})
    assert theirs.status_code == 201 and theirs.get_json()["id"] != body["id"]


def test_api_refuses_bad_fields_with_a_message_per_field_and_writes_nothing(app, session):
    auth = integration_key(app, session)
    client = app.test_client()
    before = count(session, Lead), count(session, Customer), count(session, Opportunity)

    missing = client.post("/api/v1/lead/", json=API_LEAD, headers=auth)
    assert missing.status_code == 422 and "client_key" in missing.get_json()["errors"]

    bad = {**API_LEAD, "phone": "12345", "product_line": "cooking", "source": "", "intention_level": "Z"}
    resp = client.post("/api/v1/lead/", json=bad,
                       headers={**auth, "Idempotency-Key": "bad-1", "Accept-Language": "en"})
    assert resp.status_code == 422
    errors = resp.get_json()["errors"]
    assert set(errors) == {"phone", "product_line", "intention_level"}
    assert "not a valid phone number" in errors["phone"] and "cooking" in errors["product_line"]

    clash = client.post("/api/v1/lead/", json={**API_LEAD, "client_key": "a"},
                        headers={**auth, "Idempotency-Key": "b"})
    assert clash.status_code == 422 and "client_key" in clash.get_json()["errors"]
    assert client.post("/api/v1/lead/", data="not json", headers={**auth, "Idempotency-Key": "c",
                                                                  "Content-Type": "application/json"}
                       ).status_code == 400
    assert (count(session, Lead), count(session, Customer), count(session, Opportunity)) == before

    # The key was not used up by the refused call: the corrected lead goes through under it.
    fixed = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "bad-1"})
    assert fixed.status_code == 201


def test_api_reject_policy_answers_409(app, session):
    session.scalar(select(ConfigItem).where(ConfigItem.key == "leads.duplicate_policy")).value = "reject"
    session.commit()
    auth = integration_key(app, session)
    client = app.test_client()
    assert client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "k1"}
                       ).status_code == 201
    resp = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": "k2"})
    assert resp.status_code == 409 and resp.get_json()["field"] == "phone"
    assert len(leads_of(session, "+8613800138100")) == 1


def test_api_needs_the_lead_write_permission(app, session):
    client = app.test_client()
    token = api_token(client, "sales11", DEMO_PASSWORD)
    resp = client.post("/api/v1/lead/", json=API_LEAD,
                       headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "x"})
    assert resp.status_code == 403
    assert client.post("/api/v1/lead/", json=API_LEAD, headers={"Idempotency-Key": "x"}).status_code == 401
    assert leads_of(session, "+8613800138100") == []


def test_concurrent_api_intake_on_postgresql(pg_app):
    """Eight systems' calls at once for one person and product line, half of them retries of one key:
    one customer, one opportunity, one lead per distinct key, every caller answered (no 500)."""
    from app.extensions import db

    with pg_app.app_context():
        auth = integration_key(pg_app, db.session)
        db.session.remove()
    # The customer exists already (another product line): only the opportunity's unique index and
    # the key's stand between the racing calls.
    setup = pg_app.test_client().post("/api/v1/lead/", json={**API_LEAD, "product_line": "programming"},
                                      headers={**auth, "Idempotency-Key": "setup"})
    assert setup.status_code == 201
    keys = ["same"] * 4 + [f"own-{i}" for i in range(4)]
    start = threading.Barrier(len(keys))
    answers: dict[int, tuple[int, dict]] = {}

    def call(n: int, key: str) -> None:
        client = pg_app.test_client()
        start.wait()
        resp = client.post("/api/v1/lead/", json=API_LEAD, headers={**auth, "Idempotency-Key": key})
        answers[n] = (resp.status_code, resp.get_json())

    threads = [threading.Thread(target=call, args=(n, key)) for n, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(status in (200, 201) for status, _ in answers.values()), answers
    same = [answers[n] for n, key in enumerate(keys) if key == "same"]
    assert sorted(status for status, _ in same) == [200, 200, 200, 201]
    assert len({body["id"] for _, body in same}) == 1
    assert len({body["opportunity_id"] for _, body in answers.values()}) == 1
    with pg_app.app_context():
        leads = db.session.scalars(select(Lead).where(Lead.phone == "+8613800138100")).all()
        assert len(leads) == len(set(keys)) + 1
        assert len({lead.customer_id for lead in leads}) == 1
        assert db.session.scalar(select(func.count()).select_from(Opportunity)
                                 .where(Opportunity.customer_id == leads[0].customer_id)) == 2
        db.session.remove()


def test_the_back_office_sees_the_leads_it_entered_and_not_its_colleagues(app, session):
    entering = web(app, "backoffice1")
    resp = entering.post("/leadview/add", data=form(phone="138 0013 8111"))
    assert resp.status_code == 302
    lead = session.scalar(select(Lead).where(Lead.phone == "+8613800138111"))
    assert lead.opportunity.status == WAITING and lead.opportunity.owner_id is None
    assert lead.created_by_id == factories.employee_by_username(session, "backoffice1").id
    own = entering.get("/leadview/list/").get_data(as_text=True)
    assert mask_phone(lead.phone) in own
    other = web(app, "backoffice2").get("/leadview/list/").get_data(as_text=True)
    assert mask_phone(lead.phone) not in other
