"""Customer 360: the Timeline panel of the customer page and GET /api/v1/customer/<id>/timeline.

Policy under test (app.services.customer360): every source (leads, opportunities and their assignment log,
follow-ups, calls, SMS, orders, learning, tags, chats, website visits, merges) in one list, newest first;
what belongs to an opportunity the viewer may not see is left out, and a customer outside the viewer's
scope is a 404; phones never appear in clear; customers merged into this one bring their rows; pages
taken by cursor return every event once; a bad cursor, kind or limit is a 400 naming the field.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from app.models.sales import OWNED, Customer
from app.security.scope import Viewer
from app.services import customer360
from tests import factories
from tests.conftest import login
from tests.factories import PASSWORD
from tests.helpers import utc

T0 = utc("2026-06-10T09:00:00+08:00")
#: A phone number in clear: E.164, or a mainland mobile number (masked ones have "****" in the middle).
CLEAR_PHONE = re.compile(r"(?<![\w*])(\+\d{8,15}|1[3-9]\d{9})(?![\w*])")
EVERY_KIND = ["lead", "opportunity", "follow_up", "call", "sms", "order", "learning", "tag", "chat",
              "behaviour", "customer"]


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def web(app, username: str, password: str | None = None, lang: str = "en"):
    client = app.test_client()
    assert login(client, username, password).status_code == 302
    client.get(f"/lang/{lang}")
    return client


def arrange(app, session):
    """A customer with one of everything on salesperson A's opportunity, a colleague B's opportunity on
    another product line with a follow-up and a call, and a customer merged into it."""
    unit = factories.org_unit(session)
    a = factories.salesperson(app, session, unit)
    b = factories.salesperson(app, session, unit)
    customer = factories.CUSTOMER.create(session, phone="+8613711112222", name="王小明", created_at=at(0))
    k12 = factories.dict_item(session, "product_line", "k12_math")
    coding = factories.dict_item(session, "product_line", "programming")
    campaign = factories.CAMPAIGN.create(session)
    page = factories.LANDING_PAGE.create(session)
    opp = factories.OPPORTUNITY.create(session, customer_id=customer.id, product_line_id=k12.id, status=OWNED,
                                       owner_id=a.id, org_unit_id=unit.id, created_at=at(2),
                                       stage_id=factories.dict_item(session, "opportunity_stage", "trial").id,
                                       stage_changed_at=at(14))
    other = factories.OPPORTUNITY.create(session, customer_id=customer.id, product_line_id=coding.id,
                                         status=OWNED, owner_id=b.id, org_unit_id=unit.id, created_at=at(1))
    factories.LEAD.create(session, customer_id=customer.id, opportunity_id=opp.id, created_at=at(1),
                          campaign=campaign.code, campaign_id=campaign.id, landing_page_id=page.id,
                          consult_note="请回电 13912345678")
    factories.ASSIGNMENT_LOG.create(session, opportunity_id=opp.id, reason="dispatch", to_owner_id=a.id,
                                    created_at=at(3))
    factories.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=a.id, created_at=at(4),
                               content="客户说打 13912345678 或 +8613600001111")
    line = factories.LINE.create(session)
    factories.CALL_RECORD.create(session, line_id=line.id, employee_id=a.id, opportunity_id=opp.id,
                                 customer_id=customer.id, callee_phone=customer.phone, started_at=at(5),
                                 answered_at=at(5), status="ended", duration_seconds=125)
    factories.SMS_MESSAGE.create(session, customer_id=customer.id, phone=customer.phone, created_at=at(6),
                                 content="【测试签名】回电 +8613812345678", status="delivered")
    factories.ORDER.create(session, opportunity_id=opp.id, customer_id=customer.id, number="SO-360",
                           created_at=at(7), paid_at=at(8), status="paid", final_total=1999, list_total=1999)
    factories.LEARNING_ACTIVITY.create(session, customer_id=customer.id, occurred_at=at(9), lesson="分数")
    factories.CUSTOMER_TAG.create(session, customer_id=customer.id, added_at=at(10),
                                  tag=factories.TAG.create(session, name="高意向"))
    opp_tag = factories.TAG.create(session, name="试听三次", subject="opportunity")
    factories.OPPORTUNITY_TAG.create(session, opportunity_id=opp.id, added_at=at(11), tag=opp_tag)
    chat = factories.CHAT_SESSION.create(session, opportunity_id=opp.id, started_at=at(12))
    factories.CHAT_MESSAGE.create(session, session_id=chat.id, body="我的电话 13698765432", created_at=at(12))
    factories.CUSTOMER_EVENT.create(session, customer_id=customer.id, occurred_at=at(13),
                                    detail="https://www.example.com/price?tel=13511112222")
    merged = factories.CUSTOMER.create(session, phone="+8613733334444", merged_into_id=customer.id,
                                       merged_at=at(15))
    factories.CUSTOMER_EVENT.create(session, customer_id=merged.id, occurred_at=at(16),
                                    detail="https://www.example.com/trial")
    # The colleague's opportunity: a follow-up and a call A must not see.
    factories.FOLLOW_UP.create(session, opportunity_id=other.id, employee_id=b.id, created_at=at(17),
                               content="同事的跟进")
    factories.CALL_RECORD.create(session, line_id=line.id, employee_id=b.id, opportunity_id=other.id,
                                 customer_id=customer.id, callee_phone=customer.phone, started_at=at(18))
    session.commit()
    return {"customer": customer, "a": a, "b": b, "opp": opp, "other": other, "merged": merged}


def api(client, customer_id: int, **args):
    return client.get(f"/api/v1/customer/{customer_id}/timeline", query_string=args)


def panel(html: str) -> str:
    start = html.index('id="crm-customer-timeline"')
    return html[start:html.index("</script>", start)]


# --- one of everything -------------------------------------------------------------------------------------
def test_every_kind_in_order_newest_first(app, session):
    world = arrange(app, session)
    cid = world["customer"].id
    admin = web(app, "admin")
    body = api(admin, cid, limit=100).get_json()
    seen = [(e["kind"], e["action"]) for e in body["result"]]
    assert seen == [
        ("call", "outbound"), ("follow_up", "created"), ("behaviour", "page_view"), ("customer", "merged"),
        ("opportunity", "stage"), ("behaviour", "page_view"), ("chat", "open"), ("tag", "added"),
        ("tag", "added"), ("learning", "attended"), ("order", "paid"), ("order", "created"),
        ("sms", "marketing"), ("call", "outbound"), ("follow_up", "created"), ("opportunity", "dispatch"),
        ("opportunity", "created"), ("opportunity", "created"), ("lead", "created"), ("customer", "created"),
    ]
    assert body["next"] is None and set(body["kinds"]) == set(EVERY_KIND)
    times = [e["at"] for e in body["result"]]
    assert times == sorted(times, reverse=True)
    assert body["result"][0]["time"] == "2026-06-10 09:18:00"  # the business time zone
    order = next(e for e in body["result"] if e["action"] == "paid")
    assert order["title"] == "Order SO-360 paid: 1,999.00" and order["opportunity_id"] == world["opp"].id
    call = body["result"][13]
    assert call["title"] == "Outbound call: Ended" and "Talk time: 2:05" in call["detail"]
    assert {t["name"] for t in body["tags"]} == {"高意向", "试听三次"}
    tag = body["result"][8]
    assert tag["title"] == "Tag added: 高意向" and tag["detail"] == "Manual tag"
    lead = body["result"][18]
    assert "Landing page: " in lead["detail"] and "139****5678" in lead["detail"]

    html = admin.get(f"/customer/show/{cid}").get_data(as_text=True)
    timeline = panel(html)
    for kind in EVERY_KIND:
        assert f'data-kind="{kind}"' in timeline
    assert "Timeline" in timeline and "Load more" in timeline and "2026-06-10 09:18:00" in timeline


def test_kinds_filter_and_permissions(app, session):
    world = arrange(app, session)
    admin = web(app, "admin")
    body = api(admin, world["customer"].id, kinds="order,tag").get_json()
    assert {e["kind"] for e in body["result"]} == {"order", "tag"} and len(body["result"]) == 4
    # A viewer without ("can_read", "Order") gets no orders, even when asking for them.
    viewer = Viewer(user_id=None, scope="all", employee_id=None,
                    permissions=frozenset({("can_read", "Customer"), ("can_read", "Lead")}))
    events = customer360.timeline(session, world["customer"].id, viewer, kinds=["order", "lead", "sms"])
    assert {e.kind for e in events} == {"lead", "sms"}


# --- scope --------------------------------------------------------------------------------------------------
def test_a_salesperson_sees_only_their_own_opportunitys_history(app, session):
    world = arrange(app, session)
    cid = world["customer"].id
    a = web(app, f"user{world['a'].id}", PASSWORD)
    body = api(a, cid, limit=100).get_json()
    opportunities = {e["opportunity_id"] for e in body["result"]} - {None}
    assert opportunities == {world["opp"].id}
    assert not [e for e in body["result"] if "同事的跟进" in e["detail"]]
    assert [e["action"] for e in body["result"] if e["kind"] == "call"] == ["outbound"]  # A's only
    created = [e["title"] for e in body["result"] if e["kind"] == "opportunity" and e["action"] == "created"]
    assert created == [f"Opportunity #{world['opp'].id} created"]
    html = a.get(f"/customer/show/{cid}").get_data(as_text=True)
    assert "同事的跟进" not in html and 'data-kind="order"' in panel(html)

    # B sees B's, not A's; someone who sees none of the customer's opportunities gets 404.
    b = web(app, f"user{world['b'].id}", PASSWORD)
    assert {e["opportunity_id"] for e in api(b, cid, limit=100).get_json()["result"]} - {None} == {
        world["other"].id}
    outsider = factories.salesperson(app, session, factories.org_unit(session))
    c = web(app, f"user{outsider.id}", PASSWORD)
    resp = api(c, cid)
    assert resp.status_code == 404 and resp.get_json()["field"] == "customer_id"
    assert api(a, 2**31 - 1).status_code == 404
    # The merged customer's own id is not a page of its own.
    assert api(web(app, "admin"), world["merged"].id).status_code == 404


# --- masking ------------------------------------------------------------------------------------------------
def test_phones_never_appear_in_clear(app, session):
    world = arrange(app, session)
    cid = world["customer"].id
    for username, password in (("admin", None), (f"user{world['a'].id}", PASSWORD)):
        client = web(app, username, password)
        text = api(client, cid, limit=100).get_data(as_text=True)
        found = CLEAR_PHONE.search(text)
        assert not found, text[found.start() - 300:found.end() + 50]
        # The panel (the page's own lead and follow-up tables are app.views.sales_records').
        html = panel(client.get(f"/customer/show/{cid}").get_data(as_text=True))
        found = CLEAR_PHONE.search(html)
        assert not found, html[found.start() - 300:found.end() + 50]
        assert "139****5678" in html and "138****5678" in html


# --- merged customers ---------------------------------------------------------------------------------------
def test_merged_customers_events_are_included(app, session):
    world = arrange(app, session)
    body = api(web(app, "admin"), world["customer"].id, kinds="behaviour,customer").get_json()
    details = [e["detail"] for e in body["result"] if e["kind"] == "behaviour"]
    assert details[0] == "https://www.example.com/trial"  # the merged customer's visit
    merged = next(e for e in body["result"] if e["action"] == "merged")
    assert merged["title"] == f"Customer #{world['merged'].id} merged into this one"


# --- pagination ---------------------------------------------------------------------------------------------
def test_pages_return_each_event_once(app, session):
    world = arrange(app, session)
    cid = world["customer"].id
    # Ties: several events of several sources at one instant.
    for n in range(5):
        factories.LEARNING_ACTIVITY.create(session, customer_id=cid, occurred_at=at(20), lesson=f"同刻{n}")
        factories.CUSTOMER_EVENT.create(session, customer_id=cid, occurred_at=at(20), detail=f"/same/{n}")
    session.commit()
    admin = web(app, "admin")
    everything = api(admin, cid, limit=200).get_json()["result"]
    pages, before = [], None
    while True:
        body = api(admin, cid, limit=3, **({"before": before} if before else {})).get_json()
        assert len(body["result"]) <= 3
        pages += body["result"]
        before = body["next"]
        if before is None:
            break
    assert [e["cursor"] for e in pages] == [e["cursor"] for e in everything]
    assert len({e["cursor"] for e in pages}) == len(everything) == 30
    # A plain instant is a cursor too: strictly before it.
    body = api(admin, cid, before="2026-06-10T09:05:00+08:00", limit=200).get_json()
    assert body["result"][0]["at"] == "2026-06-10T09:04:00+08:00"
    body = api(admin, cid, before="2026-06-10 09:05:00", limit=200).get_json()  # business-zone wall time
    assert body["result"][0]["at"] == "2026-06-10T09:04:00+08:00"
    # Instants beyond what UTC holds stand for the beginning and the end of time.
    assert api(admin, cid, before="0001-01-01T00:00:00+05:00").get_json()["result"] == []
    assert len(api(admin, cid, before="9999-12-31T23:59:59-05:00", limit=200).get_json()["result"]) == 30
    assert len(customer360.SOURCES) == 19  # the ranks a cursor token may name (customer360.TOKEN)


@pytest.mark.parametrize(("args", "field"), [
    ({"before": "yesterday"}, "before"), ({"before": "2026-06-10T09:00:00~x~1"}, "before"),
    ({"before": "1781053500000000~19~1"}, "before"), ({"before": "2026-13-01T00:00:00"}, "before"),
    ({"before": "2026-06-10"}, "before"), ({"before": ""}, "before"), ({"limit": ""}, "limit"),
    ({"before": "9" * 65}, "before"), ({"kinds": "lead,secrets"}, "kinds"), ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"), ({"limit": "ten"}, "limit"),
])
def test_bad_arguments_are_a_400_naming_the_field(app, session, args, field):
    customer = session.scalar(select(Customer).where(Customer.merged_into_id.is_(None)).limit(1))
    resp = api(web(app, "admin"), customer.id, **args)
    assert resp.status_code == 400 and resp.get_json()["field"] == field, resp.get_json()


def test_the_api_needs_a_login(app, client, session):
    customer = session.scalar(select(Customer).limit(1))
    assert api(client, customer.id).status_code == 401


# --- languages ----------------------------------------------------------------------------------------------
def test_the_panel_reads_in_chinese_and_english(app, session):
    world = arrange(app, session)
    cid = world["customer"].id
    zh = panel(web(app, "admin", lang="zh").get(f"/customer/show/{cid}").get_data(as_text=True))
    assert "时间线" in zh and "加载更多" in zh and "订单 SO-360 已支付" in zh and "新线索" in zh
    en = panel(web(app, "admin", lang="en").get(f"/customer/show/{cid}").get_data(as_text=True))
    assert "Timeline" in en and "Order SO-360 paid" in en and "New lead" in en
    zh_json = api(web(app, "admin", lang="zh"), cid, kinds="call").get_json()
    assert zh_json["result"][0]["kind_label"] == "通话"


# --- segments -----------------------------------------------------------------------------------------------
def test_the_summary_names_the_segments_that_include_the_customer(app, session):
    world = arrange(app, session)
    factories.SEGMENT.create(session, name="北京客户", subject="customer", criteria='{"regions": ["北京"]}')
    everyone = factories.SEGMENT.create(session, name="全部客户", subject="customer", criteria="{}")
    mine = factories.SEGMENT.create(session, name="编程商机", subject="opportunity",
                                    criteria=f'{{"product_lines": [{world["other"].product_line_id}]}}')
    body = api(web(app, "admin"), world["customer"].id, kinds="tag").get_json()
    assert {s["name"] for s in body["segments"]} == {everyone.name, mine.name}
    # A does not see the coding opportunity: that segment is not theirs to see on this customer.
    a = api(web(app, f"user{world['a'].id}", PASSWORD), world["customer"].id, kinds="tag").get_json()
    assert {s["name"] for s in a.get("segments", [])} <= {everyone.name}


# --- PostgreSQL ---------------------------------------------------------------------------------------------
def test_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        world = arrange(pg_app, db.session)
        cid = world["customer"].id
        admin = web(pg_app, "admin")
        body = api(admin, cid, limit=100).get_json()
        assert len(body["result"]) == 20 and body["result"][0]["kind"] == "call"
        pages, before = [], None
        while True:
            page = api(admin, cid, limit=4, **({"before": before} if before else {})).get_json()
            pages += page["result"]
            before = page["next"]
            if before is None:
                break
        assert [e["cursor"] for e in pages] == [e["cursor"] for e in body["result"]]
        assert not CLEAR_PHONE.search(api(admin, cid, limit=100).get_data(as_text=True))
        a = web(pg_app, f"user{world['a'].id}", PASSWORD)
        assert {e["opportunity_id"] for e in api(a, cid, limit=100).get_json()["result"]} - {None} == {
            world["opp"].id}
