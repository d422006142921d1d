"""Segments: the criteria's checks, the counts of every criterion on both subjects, the viewer's data scope,
the commands (save, delete while in use), the builder page, the REST API and its CSRF, the list filter."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import select

from app import clock
from app.models.audit import AuditLog
from app.models.bigdata import CUSTOMER, OPPORTUNITY, Segment
from app.models.sales import LOST, OWNED, POOLED, Customer, Opportunity
from app.security.scope import viewer_for_user
from app.services import reference
from app.services import segments as seg
from app.services.errors import DomainError
from app.services.seed import DEMO_PASSWORD
from tests import factories as f
from tests.conftest import login

SALESPERSON = "sales11"


def pks(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'<tr data-pk="(\d+)"', html)}


@pytest.mark.parametrize(("criteria", "field"), [
    ([], "criteria"),
    ({"colour": 1}, "colour"),
    ({"tags_any": "1"}, "tags_any"),
    ({"tags_all": ["x"]}, "tags_all"),
    ({"tags_none": [0]}, "tags_none"),
    ({"stages": [2**40]}, "stages"),
    ({"product_lines": list(range(1, 300))}, "product_lines"),
    ({"campaigns": [None]}, "campaigns"),
    ({"statuses": ["sleeping"]}, "statuses"),
    ({"regions": [3]}, "regions"),
    ({"lessons_min": -1}, "lessons_min"),
    ({"active_within_days": "soon"}, "active_within_days"),
    ({"contacted_within_days": 0}, "contacted_within_days"),
    ({"not_contacted_days": True}, "not_contacted_days"),
    ({"win_min": 101}, "win_min"),
    ({"win_max": [50]}, "win_max"),
    ({"win_min": 70, "win_max": 20}, "win_min"),
    ({"consent": "yes"}, "consent"),
])
def test_validate_names_the_bad_field(criteria, field):
    with pytest.raises(DomainError) as refused:
        seg.validate(criteria)
    assert refused.value.field == field


def test_validate_normalises():
    criteria = {"tags_any": ["3", 1, 3], "regions": [" 上海 ", ""], "win_min": "60", "lessons_min": "",
                "consent": False}
    expected = {"tags_any": [1, 3], "regions": ["上海"], "win_min": 60, "consent": False}
    assert seg.validate(criteria) == expected


@pytest.fixture
def world(session):
    """Three customers and four opportunities with every criterion's data, and the ids to count within."""
    now = clock.utcnow()
    k12 = f.reference_item(session, reference.PRODUCT_LINE, "k12_math")
    adult = f.reference_item(session, reference.PRODUCT_LINE, "adult_english")
    trial = f.reference_item(session, reference.OPPORTUNITY_STAGE, "trial")
    new = f.reference_item(session, reference.OPPORTUNITY_STAGE, "new")
    campaign = f.CAMPAIGN.create(session)
    vip = f.TAG.create(session, subject=CUSTOMER)
    hot = f.TAG.create(session, subject=OPPORTUNITY)
    a = f.CUSTOMER.create(session, region="上海", marketing_consent=True)
    b = f.CUSTOMER.create(session, region="北京", marketing_consent=False)
    c = f.CUSTOMER.create(session, region="上海", marketing_consent=True)
    merged = f.CUSTOMER.create(session, region="上海", merged_into_id=a.id, merged_at=now)
    days = dt.timedelta(days=1)
    o1 = f.OPPORTUNITY.create(session, customer_id=a.id, product_line_id=k12.id, stage_id=trial.id,
                              status=OWNED, region="上海", campaign_id=campaign.id, win_probability=0.72,
                              last_followup_at=now - 10 * days, created_at=now - 40 * days)
    o2 = f.OPPORTUNITY.create(session, customer_id=a.id, product_line_id=adult.id, stage_id=new.id,
                              status=LOST, region="上海", last_followup_at=now - days)
    o3 = f.OPPORTUNITY.create(session, customer_id=b.id, product_line_id=k12.id, stage_id=new.id,
                              status=POOLED, region="北京", win_probability=0.30, created_at=now - 2 * days)
    o4 = f.OPPORTUNITY.create(session, customer_id=c.id, product_line_id=adult.id, stage_id=trial.id,
                              status=OWNED, region="上海", win_probability=0.55,
                              last_followup_at=now - dt.timedelta(days=3))
    f.CUSTOMER_TAG.create(session, tag_id=vip.id, customer_id=a.id)
    f.CUSTOMER_TAG.create(session, tag_id=vip.id, customer_id=merged.id)
    f.OPPORTUNITY_TAG.create(session, tag_id=hot.id, opportunity_id=o4.id)
    f.LEARNING_SUMMARY.create(session, customer_id=a.id, lessons_attended=5, last_active_at=now - 2 * days)
    f.LEARNING_SUMMARY.create(session, customer_id=b.id, lessons_attended=2, last_active_at=now - days)
    f.LEARNING_SUMMARY.create(session, customer_id=c.id, lessons_attended=4,
                              last_active_at=now - dt.timedelta(days=30))
    session.commit()
    return {"a": a.id, "b": b.id, "c": c.id, "merged": merged.id, "o1": o1.id, "o2": o2.id, "o3": o3.id,
            "o4": o4.id, "k12": k12.id, "adult": adult.id, "trial": trial.id, "new": new.id,
            "campaign": campaign.id, "vip": vip.id, "hot": hot.id}


def members(session, w, subject, criteria) -> set[str]:
    """Which of the world's customers (a, b, c, merged) or opportunities (o1…o4) the criteria match."""
    names = ("a", "b", "c", "merged") if subject == CUSTOMER else ("o1", "o2", "o3", "o4")
    by_id = {w[n]: n for n in names}
    model = Customer if subject == CUSTOMER else Opportunity
    ids = set(session.scalars(seg.ids_query(session, subject, seg.validate(criteria))
                              .where(model.id.in_(by_id))))
    total = seg.count(session, subject, seg.validate(criteria), [model.id.in_(by_id)])
    assert total == len(ids)
    return {by_id[i] for i in ids}


CASES = [  # (criteria with world names, customers, opportunities)
    ({}, {"a", "b", "c"}, {"o1", "o2", "o3", "o4"}),
    ({"tags_any": ["vip"]}, {"a"}, {"o1", "o2"}),
    ({"tags_any": ["hot"]}, {"c"}, {"o4"}),
    ({"tags_any": ["vip", "hot"]}, {"a", "c"}, {"o1", "o2", "o4"}),
    ({"tags_all": ["vip", "hot"]}, set(), set()),
    ({"tags_none": ["vip"]}, {"b", "c"}, {"o3", "o4"}),
    ({"tags_none": ["hot"]}, {"a", "b"}, {"o1", "o2", "o3"}),
    ({"stages": ["trial"]}, {"a", "c"}, {"o1", "o4"}),
    ({"product_lines": ["k12"]}, {"a", "b"}, {"o1", "o3"}),
    ({"stages": ["trial"], "product_lines": ["k12"]}, {"a"}, {"o1"}),
    ({"stages": ["new"], "product_lines": ["adult"]}, {"a"}, {"o2"}),
    ({"campaigns": ["campaign"]}, {"a"}, {"o1"}),
    ({"statuses": ["pooled", "lost"]}, {"a", "b"}, {"o2", "o3"}),
    ({"regions": ["北京"]}, {"b"}, {"o3"}),
    ({"lessons_min": 4}, {"a", "c"}, {"o1", "o2", "o4"}),
    ({"active_within_days": 7}, {"a", "b"}, {"o1", "o2", "o3"}),
    ({"lessons_min": 4, "active_within_days": 7}, {"a"}, {"o1", "o2"}),
    ({"contacted_within_days": 5}, {"a", "c"}, {"o2", "o4"}),
    ({"not_contacted_days": 7}, {"a"}, {"o1"}),
    ({"win_min": 50}, {"a", "c"}, {"o1", "o4"}),
    ({"win_max": 60}, {"b", "c"}, {"o3", "o4"}),
    ({"win_min": 50, "win_max": 60}, {"c"}, {"o4"}),
    ({"consent": False}, {"b"}, {"o3"}),
    ({"consent": True, "regions": ["上海"], "statuses": ["owned"], "win_min": 60}, {"a"}, {"o1"}),
    ({"tags_any": ["vip", "hot"], "product_lines": ["adult"], "tags_none": ["hot"]}, {"a"}, {"o2"}),
]


@pytest.mark.parametrize(("criteria", "customers", "opportunities"), CASES)
def test_counts_of_each_criterion_on_both_subjects(session, world, criteria, customers, opportunities):
    named = {k: [world.get(v, v) for v in value] if isinstance(value, list) else value
             for k, value in criteria.items()}
    assert members(session, world, CUSTOMER, named) == customers
    assert members(session, world, OPPORTUNITY, named) == opportunities


def test_opportunities_among_for_the_dispatch_match(session, world):
    segment = f.SEGMENT.create(session, subject=CUSTOMER, criteria=json.dumps({"tags_any": [world["vip"]]}))
    ids = [world[n] for n in ("o1", "o2", "o3", "o4")]
    assert seg.opportunities_among(session, segment, ids) == {world["o1"], world["o2"]}


def _viewer(app, session, username):
    return viewer_for_user(app.appbuilder.sm.find_user(username=username))


def test_a_salesperson_counts_only_their_own(app, session, world):
    me = f.employee_by_username(session, SALESPERSON)
    session.get(Opportunity, world["o4"]).owner_id = me.id
    session.get(Opportunity, world["o4"]).org_unit_id = me.org_unit_id
    session.commit()
    viewer = _viewer(app, session, SALESPERSON)
    mine = seg.count_for(session, OPPORTUNITY, {}, viewer)
    owned = session.scalar(select(Opportunity.id).where(Opportunity.owner_id == me.id).limit(1))
    assert mine == len(session.scalars(select(Opportunity.id).where(Opportunity.owner_id == me.id)).all())
    assert owned is not None
    assert seg.count_for(session, CUSTOMER, {"tags_any": [world["hot"]]}, viewer) == 1
    assert seg.count_for(session, CUSTOMER, {"tags_any": [world["vip"]]}, viewer) == 0
    admin = _viewer(app, session, "admin")
    assert seg.count_for(session, CUSTOMER, {"tags_any": [world["vip"]]}, admin) == 1  # merged one left out


def test_save_checks_audits_and_counts(app, session, world):
    admin = _viewer(app, session, "admin")
    values = {"name": "VIP", "subject": CUSTOMER, "criteria": {"tags_any": [world["vip"]]}}
    saved = seg.save(session, None, values, "admin", admin)
    session.commit()
    assert saved.last_count == 1 and saved.counted_at is not None
    assert session.scalar(select(AuditLog).where(AuditLog.target_type == "segment",
                                                 AuditLog.target_id == str(saved.id))) is not None
    for values, field in [({"name": " "}, "name"), ({"name": "vip"}, "name"), ({"name": "x" * 101}, "name"),
                          ({"name": "B", "subject": "lead"}, "subject"),
                          ({"name": "B", "criteria": {"stages": [999999]}}, "stages"),
                          ({"name": "B", "description": 5}, "description")]:
        with pytest.raises(DomainError) as refused:
            seg.save(session, None, values, "admin", admin)
        session.rollback()
        assert refused.value.field == field, values


def test_a_segment_in_use_cannot_be_deleted(session):
    used_by_sms = f.SEGMENT.create(session)
    used_by_rule = f.SEGMENT.create(session)
    free = f.SEGMENT.create(session)
    f.SMS_CAMPAIGN.create(session, segment_id=used_by_sms.id)
    f.DISPATCH_RULE.create(session, match_segment_id=used_by_rule.id)
    session.commit()
    for segment, field in ((used_by_sms, "sms_campaign.segment_id"), (used_by_rule,
                                                                      "dispatch_rule.match_segment_id")):
        with pytest.raises(DomainError) as refused:
            seg.delete(session, segment.id)
        assert refused.value.field == field and refused.value.status == 409
    assert seg.delete(session, free.id) == free.name


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_builder_and_list_render(client, session, world, lang):
    f.SEGMENT.create(session, name="高意向", criteria=json.dumps({"win_min": 60, "tags_any": [world["vip"]]}))
    session.commit()
    login(client, "admin")
    client.get(f"/lang/{lang}")
    page = client.get("/segments/add/")
    assert page.status_code == 200
    for name in ("tags_any", "tags_all", "tags_none", "stages", "product_lines", "campaigns", "statuses",
                 "regions", "lessons_min", "active_within_days", "contacted_within_days",
                 "not_contacted_days", "win_min", "win_max", "consent"):
        assert f'name="{name}"' in page.text
    assert "segment-builder.js" in page.text
    listed = client.get("/segments/list/").text
    assert "高意向" in listed
    assert ("赢单概率不低于 60%" if lang == "zh_CN" else "Win probability at least 60%") in listed
    assert "/customerview/list/?segment=" in listed and "/opportunityview/list/?segment=" in listed
    # A marketer reads no customer or opportunity list: the segment list offers no links to them.
    client.get("/logout/")
    login(client, "marketing")
    listed = client.get("/segments/list/").text
    assert "高意向" in listed and "?segment=" not in listed


def test_builder_form_saves_and_names_the_bad_field(client, session, world):
    login(client, "admin")
    bad = client.post("/segments/add/", data={"name": "Win", "subject": "customer", "win_min": "150"})
    assert bad.status_code == 422 and 'data-field="win_min"' in bad.text
    done = client.post("/segments/add/", data={"name": "Win", "subject": "customer", "win_min": "50",
                                               "tags_any": [str(world["vip"])], "consent": "yes",
                                               "regions": "上海, 北京"})
    assert done.status_code == 302
    saved = session.scalar(select(Segment).where(Segment.name == "Win"))
    assert seg.criteria_of(saved) == {"win_min": 50, "tags_any": [world["vip"]], "consent": True,
                                      "regions": ["上海", "北京"]}
    taken = client.post("/segments/add/", data={"name": "win", "subject": "customer"})
    assert taken.status_code == 409 and 'data-field="name"' in taken.text
    edit = client.get(f"/segments/edit/{saved.id}").text
    assert f'value="{world["vip"]}" selected' in edit and 'value="50"' in edit


def test_salesperson_reads_but_does_not_build(client):
    login(client, SALESPERSON)
    assert client.get("/segments/list/").status_code == 200
    assert client.get("/segments/add/").status_code in (302, 403)


def test_rest_api(client, session, world):
    login(client, "admin")
    created = client.post("/api/v1/segments/", json={"name": "API", "subject": "opportunity",
                                                      "criteria": {"win_min": 50}})
    assert created.status_code == 201, created.json
    pk = created.json["result"]["id"]
    assert created.json["result"]["summary"] == ["Win probability at least 50%"]
    assert client.get(f"/api/v1/segments/{pk}").json["result"]["criteria"] == {"win_min": 50}
    assert client.post("/api/v1/segments/", json={"name": "API"}).json["field"] == "name"
    changed = client.put(f"/api/v1/segments/{pk}", json={"criteria": {"win_max": 500}})
    assert changed.status_code == 422 and changed.json["field"] == "win_max"
    assert client.put(f"/api/v1/segments/{pk}", json={"name": "API 2"}).status_code == 200
    assert client.post("/api/v1/segments/", data="[]", content_type="application/json").status_code == 400
    assert any(s["name"] == "API 2" for s in client.get("/api/v1/segments/").json["result"])
    counted = client.post("/api/v1/segments/count", json={"subject": "customer",
                                                          "criteria": {"tags_any": [world["vip"]]}})
    assert counted.status_code == 200 and counted.json["count"] == 1
    assert counted.json["label"] == "1 customer"
    assert client.post("/api/v1/segments/count", json={"criteria": {"lessons_min": "x"}}).json["field"] \
        == "lessons_min"
    for criteria, field in (({"win_min": "60"}, "win_min"), ({"stages": ["3"]}, "stages"),
                            ({"statuses": [" owned"]}, "statuses"), ({"regions": ["x" * 65]}, "regions")):
        # the JSON API takes what its document says (integers, exact codes), not what a form's field sends
        refused = client.post("/api/v1/segments/count", json={"criteria": criteria})
        assert refused.status_code == 422 and refused.json["field"] == field
    assert client.post("/api/v1/segments/count", json={"criteria": {"win_min": None, "stages": []}}).json[
        "count"] >= 3
    assert client.post(f"/api/v1/segments/{pk}/count").status_code == 200
    assert client.delete(f"/api/v1/segments/{pk}").status_code == 200
    assert client.get(f"/api/v1/segments/{pk}").status_code == 404


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_count_endpoint_needs_a_session_and_the_csrf_token(app, session):
    client = app.test_client()
    assert client.post("/api/v1/segments/count", json={"criteria": {}}).status_code == 401
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    client.post("/login/", data={"username": SALESPERSON, "password": DEMO_PASSWORD, "csrf_token": token})
    refused = client.post("/api/v1/segments/count", json={"criteria": {}})
    assert refused.status_code == 400 and refused.json["field"] == "csrf_token"
    counted = client.post("/api/v1/segments/count", json={"criteria": {}}, headers={"X-CSRFToken": token})
    assert counted.status_code == 200, counted.json
    me = f.employee_by_username(session, SALESPERSON)
    mine = session.scalars(select(Opportunity.customer_id).where(Opportunity.owner_id == me.id)).all()
    assert counted.json["count"] == len(set(mine) - set(session.scalars(
        select(Customer.id).where(Customer.merged_into_id.is_not(None)))))


def test_the_lists_filter_by_a_segment(client, session, world):
    me = f.employee_by_username(session, SALESPERSON)
    for name in ("o1", "o4"):
        opp = session.get(Opportunity, world[name])
        opp.owner_id, opp.org_unit_id = me.id, me.org_unit_id
    segment = f.SEGMENT.create(session, subject=CUSTOMER, criteria=json.dumps({"regions": ["上海"],
                                                                             "tags_any": [world["vip"]]}))
    opp_segment = f.SEGMENT.create(session, subject=OPPORTUNITY, criteria=json.dumps({"win_min": 50}))
    session.commit()
    login(client, "admin")
    listed = client.get(f"/opportunityview/list/?segment={segment.id}&psize_OpportunityView=100")
    assert pks(listed.text) == {world["o1"], world["o2"]}
    assert 'id="crm-segment-filter"' in listed.text and segment.name in listed.text
    assert pks(client.get(f"/customerview/list/?segment={segment.id}").text) == {world["a"]}
    by_opportunity = client.get(f"/customerview/list/?segment={opp_segment.id}&psize_CustomerView=200")
    assert {world["a"], world["c"]} <= pks(by_opportunity.text)
    assert client.get("/opportunityview/list/?segment=abc").status_code == 400
    assert client.get("/opportunityview/list/?segment=99999").status_code == 400
    login(client, SALESPERSON)
    mine = pks(client.get(f"/opportunityview/list/?segment={opp_segment.id}&psize_OpportunityView=100").text)
    assert world["o1"] in mine and world["o4"] in mine and world["o3"] not in mine
    assert pks(client.get(f"/customerview/list/?segment={segment.id}").text) == {world["a"]}


def test_win_probability_column_sorts_with_unscored_last(client, session, world):
    login(client, "admin")
    ours = {world[n] for n in ("o1", "o2", "o3", "o4")}
    for direction, expected in (("asc", ["o3", "o4", "o1", "o2"]), ("desc", ["o1", "o4", "o3", "o2"])):
        page = client.get(f"/opportunityview/list/?_oc_OpportunityView=win_probability"
                          f"&_od_OpportunityView={direction}&psize_OpportunityView=200")
        assert page.status_code == 200
        rows = [int(r) for r in re.findall(r'<tr data-pk="(\d+)"', page.text)]
        # the unscored o2 comes after every scored one (or on a later page, behind the demo's unscored ones)
        assert [r for r in rows if r in ours][:4] in ([world[n] for n in expected],
                                                     [world[n] for n in expected[:3]])
    shown = client.get(f"/opportunityview/list/?_flt_0_id={world['o1']}").text
    assert "72%" in shown and "Win probability" in shown


def test_postgresql_counts(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        tag = f.TAG.create(session, subject=OPPORTUNITY)
        customer = f.CUSTOMER.create(session, region="测试")
        opp = f.OPPORTUNITY.create(session, customer_id=customer.id, status=OWNED, region="测试",
                                   win_probability=0.8)
        f.OPPORTUNITY_TAG.create(session, tag_id=tag.id, opportunity_id=opp.id)
        session.commit()
        admin = viewer_for_user(pg_app.appbuilder.sm.find_user(username="admin"))
        criteria = {"tags_any": [tag.id], "regions": ["测试"], "win_min": 70, "tags_none": [tag.id + 1000]}
        assert seg.count_for(session, CUSTOMER, criteria, admin) == 1
        assert seg.count_for(session, OPPORTUNITY, criteria, admin) == 1
        assert seg.count_for(session, OPPORTUNITY, {**criteria, "consent": False}, admin) == 0
        session.remove()


def test_demo_segments_seed_once_and_count(app, session):
    from app.services import seed_segments

    assert seed_segments.seed_demo(session) == {"segments": 4}
    assert seed_segments.seed_demo(session) == {"segments": 0}
    admin = _viewer(app, session, "admin")
    for segment in session.scalars(select(Segment).where(Segment.created_by == "demo")):
        assert seg.criteria_of(segment), segment.name
        assert seg.count_for(session, segment.subject, seg.criteria_of(segment), admin) >= 0
