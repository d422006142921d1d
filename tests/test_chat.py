"""The chat widget's public endpoints and bot, agents' replies within the data scope, the transcript on the
opportunity page, the link to the lead, polling, and CORS on the public API only."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from app import clock
from app.models.marketing import (
    AGENT,
    BOT,
    CHAT_CLOSED,
    VISITOR,
    ChatMessage,
    ChatSession,
    LandingPage,
    MarketingCampaign,
)
from app.models.sales import OWNED
from app.services import capture, chat, chat_bot, reference
from tests.conftest import login
from tests.factories import (
    CUSTOMER,
    LEAD,
    OPPORTUNITY,
    PASSWORD,
    org_unit,
    reference_item,
    salesperson,
)

BASE = "/api/v1/public/chat"


@pytest.fixture
def page(session):
    """A published landing page of a campaign."""
    campaign = MarketingCampaign(code="chat-test-2026", name="Chat test", start_date=dt.date(2026, 1, 1),
                                 channel_id=reference_item(session, reference.MARKETING_CHANNEL).id)
    session.add(campaign)
    session.flush()
    landing = LandingPage(slug="chat-test", title="Chat test page", campaign_id=campaign.id, published=True,
                          product_line_id=reference_item(session, reference.PRODUCT_LINE).id)
    session.add(landing)
    session.commit()
    return landing


def start(client, **body):
    resp = client.post(f"{BASE}/start", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def say(client, token, text):
    return client.post(f"{BASE}/{token}/messages", json={"body": text})


def bodies(resp) -> list[tuple[str, str]]:
    return [(m["sender"], m["body"]) for m in resp.get_json()["messages"]]


# --- the visitor's side ---------------------------------------------------------------------------
def test_start_greets_and_carries_page_campaign_and_form_token(client, session, page):
    started = start(client, page="chat-test", lang="en-US")
    assert [(m["sender"], m["body"]) for m in started["messages"]] == [(BOT, chat_bot.TEXTS["greet"]["en"])]
    row = session.scalar(select(ChatSession).where(ChatSession.token == started["token"]))
    assert (row.landing_page_id, row.campaign_id, row.status) == (page.id, page.campaign_id, "open")
    assert row.client_ip == "127.0.0.1"
    token = capture.read_token(session, started["form_token"])
    assert (token.landing_page_id, token.campaign_id) == (page.id, page.campaign_id)
    # No page: chinese by default, no campaign; a campaign's tracking code alone.
    assert start(client)["messages"][0]["body"] == chat_bot.TEXTS["greet"]["zh"]
    other = start(client, campaign="chat-test-2026")
    assert session.scalar(select(ChatSession.campaign_id).where(
        ChatSession.token == other["token"])) == page.campaign_id


def test_start_refuses_unknown_or_unpublished_page_and_unknown_campaign(client, session, page):
    assert client.post(f"{BASE}/start", json={"page": "nope"}).get_json()["field"] == "page"
    assert client.post(f"{BASE}/start", json={"page": "nope"}).status_code == 404
    assert client.post(f"{BASE}/start", json={"campaign": "nope"}).status_code == 404
    page.chat_enabled = False
    session.commit()
    assert client.post(f"{BASE}/start", json={"page": "chat-test"}).status_code == 403
    page.published = False
    session.commit()
    assert client.post(f"{BASE}/start", json={"page": "chat-test"}).status_code == 404
    resp = client.post(f"{BASE}/start", data="[1]", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["field"] == "body"
    resp = client.post(f"{BASE}/start", json={"page": 3})
    assert resp.status_code == 422 and resp.get_json()["field"] == "page"


def test_conversation_in_english_collects_name_then_phone(client):
    token = start(client, lang="en")["token"]
    resp = say(client, token, "Do you have a free trial?")
    assert bodies(resp) == [(VISITOR, "Do you have a free trial?"),
                            (BOT, f'{chat_bot.TEXTS["trial"]["en"]} {chat_bot.TEXTS["ask_name"]["en"]}')]
    assert resp.get_json()["contact"] == {"name": None, "phone": None, "complete": False}
    resp = say(client, token, "My name is Li Lei")
    assert bodies(resp)[1] == (BOT, chat_bot.say("ask_phone", "en", name="Li Lei"))
    resp = say(client, token, "call me")
    assert bodies(resp)[1] == (BOT, chat_bot.TEXTS["bad_phone"]["en"])
    resp = say(client, token, "138 1234 5678")
    body = resp.get_json()
    assert body["messages"][0]["body"] == "138****5678"  # phones go out masked, even to the visitor
    assert body["messages"][1]["body"] == chat_bot.TEXTS["done"]["en"]
    assert body["contact"] == {"name": "Li Lei", "phone": "+8613812345678", "complete": True}
    assert body["form_token"]  # a fresh one, for the lead the widget posts now
    assert bodies(say(client, token, "thanks"))[1] == (BOT, chat_bot.TEXTS["after"]["en"])


def test_conversation_in_chinese_follows_the_visitor_language(client):
    token = start(client, lang="en")["token"]  # an English browser, but the visitor writes Chinese
    resp = say(client, token, "请问课程多少钱？")
    assert bodies(resp)[1] == (BOT, f'{chat_bot.TEXTS["price"]["zh"]}{chat_bot.TEXTS["ask_name"]["zh"]}')
    resp = say(client, token, "13812345678")  # the phone first: the bot still wants a name
    assert bodies(resp)[1] == (BOT, chat_bot.TEXTS["ask_name"]["zh"])
    resp = say(client, token, "我叫王小明")
    assert bodies(resp)[1] == (BOT, chat_bot.TEXTS["done"]["zh"])
    assert resp.get_json()["contact"] == {"name": "王小明", "phone": "+8613812345678", "complete": True}


def test_message_limits_unknown_token_and_closed_chat(client, session):
    token = start(client)["token"]
    assert say(client, token, "x" * 1001).status_code == 422
    assert say(client, token, "   ").get_json()["field"] == "body"
    assert say(client, token, "x" * 1000).status_code == 200
    assert say(client, "no-such-token", "hello").status_code == 404
    assert client.get(f"{BASE}/no-such-token/messages").status_code == 404
    assert client.get(f"{BASE}/{'x' * 300}/messages").status_code == 404
    row = session.scalar(select(ChatSession).where(ChatSession.token == token))
    # Fill the chat up to its limit: the visitor's next message is refused.
    session.add_all([ChatMessage(session_id=row.id, sender=VISITOR, body="spam")
                     for _ in range(chat.MAX_MESSAGES - 3)])
    session.commit()
    resp = say(client, token, "one more")
    assert resp.status_code == 429 and resp.get_json()["field"] == "body"
    row.status = CHAT_CLOSED
    session.commit()
    resp = say(client, token, "hello?")
    assert resp.status_code == 409


def test_polling_after_an_id_returns_only_newer_messages(app, client, session):
    token = start(client)["token"]
    first = say(client, token, "hello").get_json()["messages"]
    last_id = first[-1]["id"]
    resp = client.get(f"{BASE}/{token}/messages?after={last_id}")
    assert resp.get_json() == {"status": "open", "messages": []}
    row = session.scalar(select(ChatSession).where(ChatSession.token == token))
    emp = salesperson(app, session, org_unit(session), name="张老师")
    session.add(ChatMessage(session_id=row.id, sender=AGENT, employee_id=emp.id, body="您好，我是张老师"))
    session.commit()
    newer = client.get(f"{BASE}/{token}/messages?after={last_id}").get_json()["messages"]
    assert [(m["sender"], m["name"], m["body"]) for m in newer] == [(AGENT, "张老师", "您好，我是张老师")]
    everything = client.get(f"{BASE}/{token}/messages").get_json()["messages"]
    assert len(everything) == 4
    assert client.get(f"{BASE}/{token}/messages?after=x").status_code == 400
    assert client.get(f"{BASE}/{token}/messages?after=-1").status_code == 400
    # Once an agent has answered, the bot stays quiet.
    assert bodies(say(client, token, "thanks")) == [(VISITOR, "thanks")]


@pytest.mark.config(CRM_CHAT_IP_LIMIT="3 per minute")
def test_public_chat_is_rate_limited_per_address(client):
    token = start(client)["token"]
    codes = [say(client, token, "hi").status_code for _ in range(4)]  # each endpoint has its own count
    assert codes == [200, 200, 200, 429]
    assert client.post(f"{BASE}/start", json={}).status_code == 201


# --- CORS ----------------------------------------------------------------------------------------------
def test_cors_on_public_paths_only(client):
    origin = {"Origin": "https://www.example-school.com"}
    resp = client.post(f"{BASE}/start", json={}, headers=origin)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    preflight = client.options(f"{BASE}/start", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "Content-Type"
    for path in ("/api/v1/opportunity/", "/login/", "/api/v1/_openapi"):
        assert "Access-Control-Allow-Origin" not in client.get(path, headers=origin).headers


@pytest.mark.config(CRM_PUBLIC_CORS_ORIGINS="https://good.example")
def test_cors_origins_can_be_listed(client):
    good = client.post(f"{BASE}/start", json={}, headers={"Origin": "https://good.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "Origin" in good.headers["Vary"]
    bad = client.post(f"{BASE}/start", json={}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_a_logged_in_visitor_can_chat_without_a_csrf_token(client):
    login(client, "admin")
    assert client.post(f"{BASE}/start", json={}).status_code == 201


# --- the lead and the agents -------------------------------------------------------------------------
@pytest.fixture
def floor(app, session):
    """Two salespeople of one team; an opportunity owned by the first, with a lead and a chat."""
    unit = org_unit(session)
    owner, other = salesperson(app, session, unit), salesperson(app, session, unit)
    customer = CUSTOMER.create(session, name="访客甲")
    opp = OPPORTUNITY.create(session, customer=customer, owner_id=owner.id, org_unit_id=unit.id, status=OWNED)
    lead = LEAD.create(session, customer=customer, opportunity=opp, name="访客甲")
    started = chat.start(session, lang="zh")
    chat.post_visitor(session, started.chat.token, "你好，我的电话是13812345678")
    session.commit()
    return {"owner": owner, "other": other, "opp": opp, "lead": lead, "chat": started.chat}


def test_link_lead_attaches_chat_to_lead_and_opportunity(session, floor, page):
    row = floor["chat"]
    floor["lead"].campaign_id, floor["lead"].landing_page_id = page.campaign_id, page.id
    assert chat.link_lead(session, row.token, floor["lead"]) is True
    session.commit()
    assert (row.lead_id, row.opportunity_id) == (floor["lead"].id, floor["opp"].id)
    assert (row.campaign_id, row.landing_page_id) == (page.campaign_id, page.id)
    assert chat.link_lead(session, "unknown", floor["lead"]) is False
    assert chat.link_lead(session, None, floor["lead"]) is False


def _as(client, emp):
    client.get("/logout/")
    login(client, f"user{emp.id}", PASSWORD)


def test_agent_reply_only_within_the_scope(client, session, floor):
    row = floor["chat"]
    _as(client, floor["owner"])  # not linked yet: only roles that see everything see it
    assert client.get(f"/chats/show/{row.id}").status_code == 404
    assert client.post(f"/chats/reply/{row.id}", data={"body": "hi"}).status_code == 404
    chat.link_lead(session, row.token, floor["lead"])
    session.commit()
    page = client.get(f"/chats/show/{row.id}").get_data(as_text=True)
    assert "138****5678" in page and "13812345678" not in page
    listing = client.get("/chats/list/").get_data(as_text=True)
    assert f"/chats/show/{row.id}" in listing
    resp = client.post(f"/chats/reply/{row.id}", data={"body": "您好，我是您的顾问"})
    assert resp.status_code == 302
    reply = session.scalar(select(ChatMessage).where(ChatMessage.session_id == row.id,
                                                     ChatMessage.sender == AGENT))
    assert (reply.employee_id, reply.body) == (floor["owner"].id, "您好，我是您的顾问")
    polled = client.get(f"{BASE}/{row.token}/messages?after={reply.id - 1}").get_json()["messages"]
    assert polled[0]["name"] == floor["owner"].name
    # Another salesperson of the same team (scope own) neither sees nor answers it.
    _as(client, floor["other"])
    assert client.get(f"/chats/show/{row.id}").status_code == 404
    assert f"/chats/show/{row.id}" not in client.get("/chats/list/").get_data(as_text=True)
    assert client.post(f"/chats/reply/{row.id}", data={"body": "me too"}).status_code == 404
    assert client.post(f"/chats/close/{row.id}").status_code == 404
    # The owner closes it: the visitor can write no more.
    _as(client, floor["owner"])
    assert client.post(f"/chats/close/{row.id}").status_code == 302
    session.refresh(row)
    assert row.status == CHAT_CLOSED
    assert say(client, row.token, "hello?").status_code == 409


def test_admin_sees_unlinked_chats(client, floor):
    login(client, "admin")
    assert f"/chats/show/{floor['chat'].id}" in client.get("/chats/list/").get_data(as_text=True)


def test_agent_reply_refused_when_empty_or_too_long(client, session, floor):
    chat.link_lead(session, floor["chat"].token, floor["lead"])
    session.commit()
    _as(client, floor["owner"])
    for body in ("", "x" * 1001):
        client.post(f"/chats/reply/{floor['chat'].id}", data={"body": body})
    assert session.scalar(select(ChatMessage).where(ChatMessage.sender == AGENT)) is None


def test_transcript_on_the_opportunity_page_for_its_owner_only(client, session, floor):
    chat.link_lead(session, floor["chat"].token, floor["lead"])
    session.commit()
    _as(client, floor["owner"])
    html = client.get(f"/opportunityview/show/{floor['opp'].id}").get_data(as_text=True)
    assert 'id="crm-chat-panel"' in html
    assert "你好，我的电话是138****5678" in html and "13812345678" not in html
    assert chat_bot.TEXTS["greet"]["zh"] in html
    started = floor["chat"].started_at  # stored in UTC, shown in the business time zone
    assert clock.format_datetime(started) in html
    assert clock.to_local(started).replace(tzinfo=None) != started  # (the test zone is not UTC)
    _as(client, floor["other"])
    assert client.get(f"/opportunityview/show/{floor['opp'].id}").status_code == 404


def test_the_widget_lead_links_the_chat_through_the_public_lead_endpoint(client, session, page):
    started = start(client, page="chat-test", lang="zh")
    token = started["token"]
    say(client, token, "有试听课吗")
    say(client, token, "张三")
    posted = say(client, token, "13987654321").get_json()
    assert posted["contact"]["complete"]
    resp = client.post("/api/v1/public/lead", json={
        "name": posted["contact"]["name"], "phone": posted["contact"]["phone"],
        "form_token": posted["form_token"], "chat": token, "page": "chat-test"},
        headers={"Origin": "https://www.example-school.com"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    row = session.scalar(select(ChatSession).where(ChatSession.token == token))
    session.refresh(row)
    assert row.lead is not None and row.lead.name == "张三" and row.lead.phone == "+8613987654321"
    assert row.opportunity_id == row.lead.opportunity_id is not None
    assert (row.landing_page_id, row.campaign_id) == (page.id, page.campaign_id)


def test_bot_reads_names_and_phones_as_people_write_them():
    assert chat_bot.find_phone("电话 139-8765-4321，谢谢") == "+8613987654321"
    assert chat_bot.find_phone("+86 139 8765 4321") == "+8613987654321"
    assert chat_bot.find_phone("order 12345") is None
    assert chat_bot.mask_phones("call 139-8765-4321 or +8613812345678") == "call 139****4321 or 138****5678"
    state = chat_bot.BotState(lang="en")
    chat_bot.step(state, "hello")
    chat_bot.step(state, "I'm Ann.")
    assert (state.name, state.asked) == ("Ann", "phone")
    assert chat_bot.start_language("en-GB") == "en" and chat_bot.start_language("fr") == "zh"


def test_marketers_read_the_chats(app, session):
    """Marketing reads the chats its pages bring (its scope is all; phones masked), the owners answer."""
    client = app.test_client()
    login(client, "marketing")
    assert client.get("/chats/list/").status_code == 200
    assert 'href="/chats/list/"' in client.get("/").get_data(as_text=True)
