"""A segment as an SMS campaign's audience: the snapshot of its members taken when the preparation starts
(its count is the segment's, later members are not messaged, a re-run copies nothing twice), opportunity
segments, the preparation's consent and blacklist rules on the snapshot, and the form and API that choose
a segment instead of typing JSON."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from sqlalchemy import func, select

from app.models.bigdata import CUSTOMER, OPPORTUNITY, CustomerTag
from app.models.sales import Customer
from app.models.sms import BlacklistEntry, SmsAudienceEntry, SmsCampaign, SmsMessage
from app.services import segments
from app.services.errors import DomainError
from app.services.sms import campaign_preparation, campaign_segment, campaigns
from tests.conftest import api_token, login
from tests.factories import CUSTOMER as CUSTOMER_F
from tests.factories import CUSTOMER_TAG, OPPORTUNITY_TAG, SEGMENT, TAG, reference_item
from tests.factories import OPPORTUNITY as OPPORTUNITY_F
from tests.helpers import field_errors
from tests.test_sms_campaigns import (
    INSIDE,
    customers,
    launched,
    make_channel,
    make_template,
    new_phone,
    outcomes,
    run_jobs,
)


def segment_of(session, criteria: dict, subject: str = CUSTOMER):
    return SEGMENT.create(session, subject=subject, criteria=json.dumps(segments.validate(criteria)))


def segment_campaign(session, segment, tpl=None):
    """A draft aimed at `segment`, through the same command the form and the API call."""
    tpl = tpl or make_template(session, make_channel(session))
    campaign = SmsCampaign(name=f"seg-{segment.id}", template_id=tpl.id, channel_id=tpl.channel_id,
                           variables="{}")
    campaigns.check_draft(session, campaign, creating=True, kind=None, segment=segment)
    session.add(campaign)
    session.flush()
    return campaign


def entries(session, campaign_id: int) -> list[tuple]:
    return session.execute(select(SmsAudienceEntry.line, SmsAudienceEntry.customer_id, SmsAudienceEntry.phone)
                           .where(SmsAudienceEntry.campaign_id == campaign_id)
                           .order_by(SmsAudienceEntry.line)).all()


def spec_of(session, campaign_id: int) -> dict:
    session.expire_all()
    return json.loads(session.scalar(select(SmsCampaign.audience).where(SmsCampaign.id == campaign_id)))


def tagged(session, tag, n: int, region: str = "测试区-分群", **kw) -> list[Customer]:
    people = customers(session, region, n, **kw)
    for person in people:
        CUSTOMER_TAG.build(session, tag_id=tag.id, customer_id=person.id)
    session.flush()
    return people


def test_the_snapshot_is_the_segment_at_the_start_and_later_members_are_not_messaged(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    tag = TAG.create(session)
    members = tagged(session, tag, 5)
    tagged(session, TAG.create(session), 2)  # another tag: not in the segment
    segment = segment_of(session, {"tags_any": [tag.id]})
    campaign = segment_campaign(session, segment)
    assert json.loads(campaign.audience) == {"kind": "segment", "segment_id": segment.id,
                                             "name": segment.name, "subject": CUSTOMER}
    launched(session, campaign, now=INSIDE)
    live = segments.count(session, CUSTOMER, segments.criteria_of(segment))

    first = campaign_preparation.prepare(session, campaign.id, redis, chunk=2, now=INSIDE, max_chunks=1)

    spec = spec_of(session, campaign.id)
    assert live == 5 and spec["count"] == len(entries(session, campaign.id)) == live
    assert spec["criteria"] == {"tags_any": [tag.id]} and spec["snapshot_at"].startswith("2026-11-25T02:00")
    assert [c for _, c, _ in entries(session, campaign.id)] == sorted(p.id for p in members)
    assert first.rows == 2
    # After the snapshot: a new member joins and an old one leaves; the campaign keeps its snapshot.
    late = tagged(session, tag, 1)[0]
    session.execute(CustomerTag.__table__.delete().where(CustomerTag.customer_id == members[0].id))
    session.commit()

    rest = campaign_preparation.prepare(session, campaign.id, redis, chunk=2, now=INSIDE)

    assert rest.finished and first.rows + rest.rows == 5
    assert outcomes(session, campaign.id) == {p.phone: "pending" for p in members}
    assert late.phone not in outcomes(session, campaign.id)
    assert len(entries(session, campaign.id)) == 5  # a later run copied nothing


def test_a_rerun_after_a_kill_copies_nothing_twice_and_messages_each_member_once(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    tag = TAG.create(session)
    members = tagged(session, tag, 7)
    campaign = segment_campaign(session, segment_of(session, {"tags_any": [tag.id]}))
    launched(session, campaign, now=INSIDE)

    # Killed inside the first transaction (the snapshot not committed): nothing of it stays.
    assert campaign_segment.ensure_snapshot(session, campaign.id, INSIDE) == 7
    session.rollback()
    assert entries(session, campaign.id) == [] and spec_of(session, campaign.id).get("count") is None

    # Killed after two chunks were written, mid-run (the worker dies: an error out of the loop).
    def die(result):
        if result.chunks == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        campaign_preparation.prepare(session, campaign.id, redis, chunk=3, now=INSIDE, on_chunk=die)
    session.rollback()
    assert len(entries(session, campaign.id)) == 7
    assert campaign_segment.ensure_snapshot(session, campaign.id, INSIDE) is None  # already taken

    result = campaign_preparation.prepare(session, campaign.id, redis, chunk=3, now=INSIDE)

    assert result.finished and len(entries(session, campaign.id)) == 7
    phones = session.execute(select(SmsMessage.phone, func.count())
                             .where(SmsMessage.campaign_id == campaign.id).group_by(SmsMessage.phone)).all()
    assert dict(phones) == {p.phone: 1 for p in members}


def test_an_opportunity_segment_reaches_its_opportunities_customers_once(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    line = reference_item(session, "product_line")
    other = reference_item(session, "product_line", "test_other_line")
    tag = TAG.create(session, subject=OPPORTUNITY)
    twice = CUSTOMER_F.create(session, phone=new_phone())
    once = CUSTOMER_F.create(session, phone=new_phone())
    survivor = CUSTOMER_F.create(session, phone=new_phone())
    merged = CUSTOMER_F.create(session, phone=new_phone(), merged_into_id=survivor.id)
    outside = CUSTOMER_F.create(session, phone=new_phone())
    for person, product in ((twice, line), (twice, other), (once, line), (merged, other), (outside, line)):
        opportunity = OPPORTUNITY_F.create(session, customer_id=person.id, product_line_id=product.id)
        if person is not outside:
            OPPORTUNITY_TAG.create(session, tag_id=tag.id, opportunity_id=opportunity.id)
    segment = segment_of(session, {"tags_any": [tag.id]}, subject=OPPORTUNITY)
    assert campaign_segment.recipient_count(session, segment) == 3
    campaign = segment_campaign(session, segment)
    launched(session, campaign, now=INSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, now=INSIDE)

    assert outcomes(session, campaign.id) == {twice.phone: "pending", once.phone: "pending",
                                              survivor.phone: "pending"}
    assert spec_of(session, campaign.id)["count"] == 3


def test_consent_and_the_blacklist_apply_to_the_snapshot_as_they_are_when_prepared(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    tag = TAG.create(session)
    ok, refused, listed, withdraws, opts_out = tagged(session, tag, 5)
    refused.marketing_consent = False
    session.add(BlacklistEntry(phone=listed.phone, reason="complaint", source="manual"))
    campaign = segment_campaign(session, segment_of(session, {"tags_any": [tag.id]}))
    launched(session, campaign, now=INSIDE)
    campaign_preparation.prepare(session, campaign.id, redis, chunk=1, now=INSIDE, max_chunks=1)
    # After the snapshot, before their chunk: one withdraws consent, one replies R.
    session.get(Customer, withdraws.id).marketing_consent = False
    session.add(BlacklistEntry(phone=opts_out.phone, reason="R", source="inbound"))
    session.commit()

    campaign_preparation.prepare(session, campaign.id, redis, chunk=2, now=INSIDE)

    assert outcomes(session, campaign.id) == {ok.phone: "pending", refused.phone: "no_consent",
                                              listed.phone: "blacklisted", withdraws.phone: "no_consent",
                                              opts_out.phone: "opted_out"}


def test_a_customer_merged_after_the_snapshot_is_messaged_once_under_the_survivor(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    tag = TAG.create(session)
    loser, survivor, other = tagged(session, tag, 3)
    campaign = segment_campaign(session, segment_of(session, {"tags_any": [tag.id]}))
    launched(session, campaign, now=INSIDE)
    assert campaign_segment.ensure_snapshot(session, campaign.id, INSIDE) == 3
    session.commit()
    session.get(Customer, loser.id).merged_into_id = survivor.id  # merged since the snapshot
    session.commit()

    campaign_preparation.prepare(session, campaign.id, redis, chunk=1, now=INSIDE)

    rows = session.execute(select(SmsMessage.customer_id, SmsMessage.phone, SmsMessage.status,
                                  SmsMessage.cancel_reason).where(SmsMessage.campaign_id == campaign.id)
                           .order_by(SmsMessage.id)).all()
    assert [tuple(r) for r in rows] == [(survivor.id, survivor.phone, "pending", None),
                                        (survivor.id, survivor.phone, "cancelled", "duplicate"),
                                        (other.id, other.phone, "pending", None)]


def test_a_segment_campaign_without_its_segment_is_not_launched(app, session):
    tag = TAG.create(session)
    campaign = segment_campaign(session, segment_of(session, {"tags_any": [tag.id]}))
    campaign.segment, campaign.segment_id = None, None
    with pytest.raises(DomainError) as refused:
        launched(session, campaign, now=INSIDE)
    assert refused.value.field == "segment"


# --- the console -------------------------------------------------------------------------------------
def test_the_form_chooses_a_segment_with_its_live_count_and_no_json(app, session, client):
    tag = TAG.create(session)
    tagged(session, tag, 4)
    segment = segment_of(session, {"tags_any": [tag.id]})
    tpl = make_template(session, make_channel(session))
    session.commit()
    login(client, "marketing")

    page = client.get("/smscampaignview/add")
    assert page.status_code == 200
    assert 'name="audience"' not in page.text and "Audience (JSON)" not in page.text
    assert 'name="segment"' in page.text and 'name="audience_kind"' in page.text
    count = client.get(f"/smscampaignview/segment_count/{segment.id}")
    assert count.get_json() == {"segment_id": segment.id, "count": 4}
    assert client.get("/smscampaignview/segment_count/999999").status_code == 404

    refused = client.post("/smscampaignview/add", data={"name": "无受众", "template": tpl.id,
                                                        "channel": tpl.channel_id, "audience_kind": "segment",
                                                        "variables": "{}"})
    assert refused.status_code == 200 and field_errors(refused.text).get("segment") == "Choose a segment"
    resp = client.post("/smscampaignview/add", data={"name": "分群活动", "template": tpl.id,
                                                     "channel": tpl.channel_id, "audience_kind": "segment",
                                                     "segment": segment.id, "variables": "{}",
                                                     "audience": '{"kind": "filter"}'})  # ignored
    assert resp.status_code == 302, resp.text
    campaign = session.scalar(select(SmsCampaign).where(SmsCampaign.name == "分群活动"))
    assert campaign.segment_id == segment.id and json.loads(campaign.audience)["kind"] == "segment"
    edit = client.get(f"/smscampaignview/edit/{campaign.id}")
    assert 'value="segment" selected' in edit.text or "selected" in edit.text

    resp = client.post(f"/smscampaignview/launch/{campaign.id}", data={"scheduled_at": ""})
    assert resp.status_code == 302
    run_jobs(app)
    page = client.get(f"/smscampaignview/progress/{campaign.id}")
    assert 'id="crm-campaign-audience"' in page.text and segment.name in page.text
    assert "4 recipients copied at" in page.text and tag.name in page.text
    show = client.get(f"/smscampaignview/show/{campaign.id}")
    assert 'id="crm-campaign-snapshot"' in show.text


def test_an_old_filter_campaign_still_shows_read_only(app, session, client):
    tpl = make_template(session, make_channel(session))
    campaign = SmsCampaign(name="旧筛选", template_id=tpl.id, channel_id=tpl.channel_id,
                           audience=json.dumps({"kind": "filter", "region": "上海"}), variables="{}")
    session.add(campaign)
    session.commit()
    login(client, "marketing")
    page = client.get(f"/smscampaignview/progress/{campaign.id}")
    assert page.status_code == 200 and "made before segments" in page.text and "region: 上海" in page.text


# --- the API -----------------------------------------------------------------------------------------
def test_the_api_takes_a_segment_id_and_names_it_when_there_is_none(app, session, client):
    tag = TAG.create(session)
    segment = segment_of(session, {"tags_any": [tag.id]})
    tpl = make_template(session, make_channel(session))
    session.commit()
    headers = {"Authorization": f"Bearer {api_token(client, 'marketing')}"}
    body = {"name": "API 活动", "template": tpl.id, "channel": tpl.channel_id, "variables": "{}"}

    for bad in (999_999, 2**40):
        resp = client.post("/api/v1/sms_campaign/", json={**body, "segment_id": bad}, headers=headers)
        assert resp.status_code == 422 and resp.get_json()["field"] == "segment_id", resp.get_json()
    resp = client.post("/api/v1/sms_campaign/", json={**body, "segment_id": "abc"}, headers=headers)
    assert resp.status_code in (400, 422) and "segment_id" in json.dumps(resp.get_json())
    resp = client.post("/api/v1/sms_campaign/", json={**body, "audience": '{"kind": "filter"}'},
                       headers=headers)
    assert resp.status_code in (400, 422) and "audience" in json.dumps(resp.get_json())  # not writable

    resp = client.post("/api/v1/sms_campaign/", json={**body, "segment_id": segment.id}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    pk = resp.get_json()["id"]
    shown = client.get(f"/api/v1/sms_campaign/{pk}", headers=headers).get_json()["result"]
    assert shown["segment_id"] == segment.id and json.loads(shown["audience"])["kind"] == "segment"
    resp = client.put(f"/api/v1/sms_campaign/{pk}", json={"segment_id": None}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()
    assert json.loads(session.get(SmsCampaign, pk).audience) == {"kind": "upload"}
