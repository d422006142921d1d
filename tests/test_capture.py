"""Issue 13 item 3: the public lead capture endpoint POST /api/v1/public/lead, against the real app, SQL and
Redis (the flood from one address: tests/test_capture_flood.py).

Policy under test (app.services.capture, app.views.capture): no login, a signed and expiring form token;
a good post makes a lead and a waiting opportunity with its campaign, landing page and source, and asks for
a dispatch run; the same token and phone again answer the same reference and write nothing; every bad post
is a clear 4xx naming the field and writes nothing; at most `capture.per_phone_per_hour` accepted posts per
phone (a replay still answers 200); a logged-in visitor needs no CSRF token; a browser without JavaScript
posts the form encoded and is sent back with 303.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.clock import utcnow
from app.jobs.dispatch import DISPATCH_JOB_ID
from app.models.marketing import ChatSession, LandingPage, MarketingCampaign
from app.models.sales import WAITING, Customer, Lead, Opportunity
from app.services import capture
from app.services.seed import DEMO_PASSWORD
from tests import factories as f
from tests.conftest import api_token

URL = "/api/v1/public/lead"
PHONE = "13900139001"
E164 = "+8613900139001"


# --- arranging ---------------------------------------------------------------------------------------
def make_page(session, slug: str = "spring-math", code: str | None = "spring-2026", product="k12_math"):
    campaign = None
    if code is not None:
        campaign = MarketingCampaign(code=code, name=f"Campaign {code}", start_date=dt.date(2026, 3, 1),
                                     channel_id=f.dict_item(session, "marketing_channel", "search_ads").id)
        session.add(campaign)
    page = LandingPage(slug=slug, title=f"Page {slug}", campaign=campaign, published=True,
                       product_line=f.dict_item(session, "product_line", product))
    session.add(page)
    session.commit()
    return page


def token_for(page: LandingPage | None, campaign_id: int | None = None) -> str:
    if page is None:
        return capture.issue_token(None, campaign_id)
    return capture.issue_token(page.id, page.campaign_id if campaign_id is None else campaign_id)


def body(token: str, **values) -> dict:
    data = {"name": "王家长", "phone": PHONE, "consult_note": "想了解五年级数学", "form_token": token}
    data.update(values)
    return {k: v for k, v in data.items() if v is not None}


def post(app, payload=None, ip: str = "203.0.113.1", lang: str = "en", client=None, **kwargs):
    """POST the JSON `payload` (or `data=`, form-encoded unless `content_type=` says otherwise)."""
    if "data" not in kwargs:
        kwargs.setdefault("json", payload)
    client = client or app.test_client()
    headers = {"Accept-Language": lang, **kwargs.pop("headers", {})}
    return client.post(URL, environ_base={"REMOTE_ADDR": ip}, headers=headers, **kwargs)


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def leads_of(session, phone: str = E164) -> list[Lead]:
    session.expire_all()
    return session.scalars(select(Lead).where(Lead.phone == phone).order_by(Lead.id)).all()


def refused(resp, status: int, field: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    answer = resp.get_json()
    assert answer["field"] == field and answer["message"], answer
    return answer["message"]


# --- a good post ------------------------------------------------------------------------------------
def test_good_post_makes_a_lead_and_a_waiting_opportunity_with_campaign_page_and_source(app, session):
    page = make_page(session)
    queue = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"]))
    resp = post(app, body(token_for(page), page=page.slug))
    assert resp.status_code == 201, resp.get_json()
    answer = resp.get_json()
    assert answer["status"] == "received" and len(answer["reference"]) == 12

    [lead] = leads_of(session)
    assert (lead.name, lead.channel, lead.consult_note) == ("王家长", "web", "想了解五年级数学")
    assert lead.landing_page_id == page.id and lead.campaign_id == page.campaign_id
    assert lead.campaign == "spring-2026"
    assert lead.source.code == "landing_page" and lead.product_line_id == page.product_line_id
    assert answer["reference"] == capture.reference_of(lead) != str(lead.id)  # opaque, not the id
    opp = lead.opportunity
    assert opp.status == WAITING and opp.campaign_id == page.campaign_id and opp.source.code == "landing_page"
    assert '"ip": "203.0.113.1"' in lead.raw_payload and '"page": "spring-math"' in lead.raw_payload
    assert queue.job_ids == [DISPATCH_JOB_ID]  # the dispatch engine is asked to run


def test_resubmission_answers_the_same_reference_and_writes_nothing(app, session):
    page = make_page(session)
    token = token_for(page)
    first = post(app, body(token))
    assert first.status_code == 201
    Redis.from_url(app.config["REDIS_URL"]).delete("rq:queue:high")
    leads, opps = count(session, Lead), count(session, Opportunity)
    again = post(app, body(token, phone="139 0013 9001", name="另一个名字"))
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert (count(session, Lead), count(session, Opportunity)) == (leads, opps)
    assert Queue("high", connection=Redis.from_url(app.config["REDIS_URL"])).job_ids == []
    # Another visitor of the same cached page (same token, another phone) makes another lead.
    other = post(app, body(token, phone="13900139002"))
    assert other.status_code == 201 and other.get_json()["reference"] != first.get_json()["reference"]
    assert count(session, Lead) == leads + 1


def test_resubmission_after_the_token_expired_still_answers_its_lead(app, session, traveller):
    page = make_page(session)
    token = token_for(page)
    first = post(app, body(token))
    traveller.shift(dt.timedelta(minutes=121))
    again = post(app, body(token))
    assert again.status_code == 200 and again.get_json() == first.get_json()


def test_chat_widget_post_is_a_chat_lead_and_keeps_its_transcript(app, session):
    page = make_page(session)
    chat = ChatSession(token="c" * 40, landing_page_id=page.id, started_at=utcnow())
    session.add(chat)
    session.commit()
    resp = post(app, body(token_for(page), chat=chat.token))
    assert resp.status_code == 201
    [lead] = leads_of(session)
    assert lead.source.code == "chat" and lead.landing_page_id == page.id
    session.refresh(chat)
    assert (chat.lead_id, chat.opportunity_id) == (lead.id, lead.opportunity_id)
    # A chat that cannot be found does not cost the lead.
    resp = post(app, body(token_for(page), phone="13900139006", chat="unknown-chat"))
    assert resp.status_code == 201 and leads_of(session, "+8613900139006")[0].source.code == "chat"


def test_post_without_page_takes_the_tracking_code_and_the_campaigns_product_line(app, session):
    page = make_page(session, slug="summer", code="summer-eng", product="k12_english")
    session.expire_all()
    campaign = session.scalar(select(MarketingCampaign).where(MarketingCampaign.code == "summer-eng"))
    campaign.product_line_id = page.product_line_id
    session.commit()
    resp = post(app, body(token_for(None), utm_campaign="summer-eng"))
    assert resp.status_code == 201, resp.get_json()
    [lead] = leads_of(session)
    assert lead.landing_page_id is None and lead.campaign_id == campaign.id
    assert lead.product_line_id == page.product_line_id
    # The token's campaign wins over a tracking code in the URL.
    resp = post(app, body(token_for(page), phone="13900139003", utm_campaign="nope"))
    assert leads_of(session, "+8613900139003")[0].campaign == "summer-eng"


def test_messages_are_in_the_visitors_language(app, session):
    page = make_page(session)
    zh = refused(post(app, body(token_for(page), name=None), lang="zh-CN,zh;q=0.9"), 422, "name")
    en = refused(post(app, body(token_for(page), name=None)), 422, "name")
    assert en == "Please enter your name" and zh != en


# --- refusals ----------------------------------------------------------------------------------------
def test_forged_expired_and_foreign_tokens_are_refused_and_write_nothing(app, session, traveller):
    page = make_page(session)
    other = make_page(session, slug="other-page", code="other")
    leads = count(session, Lead)
    token = token_for(page)
    refused(post(app, body(token[:-3] + "abc")), 422, "form_token")
    refused(post(app, body("not-a-token")), 422, "form_token")
    refused(post(app, body(None)), 422, "form_token")
    refused(post(app, body(token, page=other.slug)), 422, "page")  # a token from another page
    refused(post(app, body(token, page="no-such-page")), 422, "page")
    traveller.shift(dt.timedelta(minutes=121))  # capture.form_token_minutes = 120
    assert "expired" in refused(post(app, body(token)), 422, "form_token")
    assert count(session, Lead) == leads


@pytest.mark.parametrize(("values", "status", "field"), [
    ({"name": None}, 422, "name"),
    ({"name": "   "}, 422, "name"),
    ({"name": "x" * 65}, 422, "name"),
    ({"name": ["王"]}, 422, "name"),
    ({"phone": None}, 422, "phone"),
    ({"phone": "12345"}, 422, "phone"),
    ({"phone": "not a phone"}, 422, "phone"),
    ({"phone": "1" * 33}, 422, "phone"),
    ({"phone": True}, 422, "phone"),
    ({"consult_note": "x" * 1001}, 422, "consult_note"),
    ({"utm_campaign": "x" * 101}, 422, "utm_campaign"),
    ({"chat": "x" * 65}, 422, "chat"),
    ({"page": {"slug": 1}}, 422, "page"),
    ({"website": "http://spam.example"}, 400, "website"),
    ({"name": "a\x00b"}, 400, "name"),
])
def test_bad_fields_are_refused_naming_the_field_and_write_nothing(app, session, values, status, field):
    page = make_page(session)
    leads, customers = count(session, Lead), count(session, Customer)
    refused(post(app, body(token_for(page), **values)), status, field)
    assert (count(session, Lead), count(session, Customer)) == (leads, customers)


def test_bodies_that_are_no_form_are_refused(app, session):
    make_page(session)
    leads = count(session, Lead)
    refused(post(app, data="{not json", content_type="application/json"), 400, "body")
    refused(post(app, json=["a", "list"]), 400, "body")
    refused(post(app, data="name=x", content_type="text/plain"), 415, "body")
    refused(post(app, data="x" * (17 * 1024), content_type="application/json"), 413, "body")
    chunked = post(app, input_stream=io.BytesIO(b'{"name": "' + b"x" * 20000 + b'"}'), data=None,
                   headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                   environ_overrides={"wsgi.input_terminated": True})
    refused(chunked, 413, "body")
    assert count(session, Lead) == leads


def test_reject_duplicate_policy_answers_409(app, session):
    page = make_page(session)
    f.set_config(session, "leads.duplicate_policy", "reject")
    assert post(app, body(token_for(page))).status_code == 201
    message = refused(post(app, body(token_for(page))), 409, "phone")
    assert "already" in message and len(leads_of(session)) == 1


@pytest.mark.config(CRM_CAPTURE_IP_LIMIT="1000 per minute")
def test_per_phone_limit_answers_429_and_a_replay_still_200(app, session, traveller):
    page = make_page(session)
    f.set_config(session, "capture.per_phone_per_hour", 3)
    tokens = [token_for(page) for _ in range(4)]
    answers = [post(app, body(token)) for token in tokens[:3]]
    assert [a.status_code for a in answers] == [201, 201, 201]  # sticky: one opportunity, three leads
    refused(post(app, body(tokens[3])), 429, "phone")
    assert post(app, body(tokens[0])).status_code == 200  # a replay is no new post
    assert post(app, body(tokens[3], phone="13900139004")).status_code == 201  # other phones go on
    assert len(leads_of(session)) == 3
    traveller.shift(dt.timedelta(minutes=61))
    assert post(app, body(token_for(page))).status_code == 201


# --- browsers ----------------------------------------------------------------------------------------
@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_a_logged_in_visitor_posts_without_a_csrf_token(app, session):
    page = make_page(session)
    client = app.test_client()
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    resp = client.post("/login/", data={"username": "sales11", "password": DEMO_PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 302
    resp = post(app, body(token_for(page)), client=client)
    assert resp.status_code == 201, resp.get_json()
    assert len(leads_of(session)) == 1
    form = body(token_for(page), phone="13900139005", page=page.slug)
    resp = post(app, client=client, data=form)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/p/spring-math/thanks")


def test_form_encoded_posts_are_answered_with_303(app, session):
    page = make_page(session)
    resp = post(app, data=body(token_for(page), page=page.slug))
    assert resp.status_code == 303 and resp.headers["Location"] == "/p/spring-math/thanks"
    assert len(leads_of(session)) == 1

    resp = post(app, data=body(token_for(page), page=page.slug, phone="12"))
    assert resp.status_code == 303
    where = urlsplit(resp.headers["Location"])
    query = parse_qs(where.query)
    assert where.path == "/p/spring-math" and where.fragment == "lead-form"
    assert query["error"] == ["phone"] and "not a valid phone number" in query["message"][0]
    # No page given: the token's page; neither known: JSON.
    resp = post(app, data=body(token_for(page), website="spam"))
    assert resp.status_code == 303
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["website"]
    resp = post(app, data=body("forged", name=""))
    refused(resp, 422, "name")
    assert len(leads_of(session)) == 1


@pytest.mark.config(PUBLIC_BASE_URL="https://www.example.edu")
def test_redirects_go_to_the_public_site(app, session):
    page = make_page(session)
    resp = post(app, data=body(token_for(page)))
    assert resp.headers["Location"] == "https://www.example.edu/p/spring-math/thanks"


def test_the_endpoint_is_documented_and_public(app, session):
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}"}
    spec = app.test_client().get("/api/v1/_openapi", headers=jwt).get_json()
    operation = spec["paths"]["/api/v1/public/lead"]["post"]
    assert operation["security"] == []
    assert {"200", "201", "303", "400", "409", "413", "415", "422", "429"} <= set(operation["responses"])
    content = operation["requestBody"]["content"]
    assert content["application/json"]["schema"]["required"] == ["name", "phone", "form_token"]
    assert "application/x-www-form-urlencoded" in content


def test_other_sites_may_post_cross_origin(app, session):
    """The widget and forms on other sites: the preflight and the answer carry CORS headers (no cookies)."""
    page = make_page(session)
    client = app.test_client()
    preflight = client.options(URL, headers={"Origin": "https://partner.example",
                                              "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "Content-Type"})
    assert preflight.status_code == 200 and preflight.headers.get("Access-Control-Allow-Origin")
    resp = post(app, body(token_for(page)), headers={"Origin": "https://partner.example"})
    assert resp.status_code == 201 and resp.headers.get("Access-Control-Allow-Origin")
