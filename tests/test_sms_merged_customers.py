"""SMS and merged customers (app.services.customers.merge leaves the merged customer as a pointer to the
survivor): a campaign reaches the person once, and an opt-out from either number holds for the survivor."""

from __future__ import annotations

from redis import Redis
from sqlalchemy import func, select

from app.models.sales import Customer
from app.models.sms import BlacklistEntry, SmsAudienceEntry, SmsMessage
from app.services.sms import campaign_preparation
from tests.test_sms_campaigns import INSIDE, customers, launched, make_campaign, new_phone, outcomes
from tests.test_sms_campaigns import make_channel as channel_of
from tests.test_sms_campaigns import make_template as template_of
from tests.test_sms_receipts import channel, message, post  # noqa: F401 (a fixture)


def merged_pair(session, region: str, **merged_fields) -> tuple[Customer, Customer]:
    """A survivor and a customer merged into it (as app.services.customers.merge leaves them)."""
    survivor, merged = customers(session, region, 2)
    for name, value in merged_fields.items():
        setattr(merged, name, value)
    merged.merged_into_id, merged.merged_at = survivor.id, INSIDE
    session.commit()
    return survivor, merged


def messages(session, campaign_id: int) -> list[tuple]:
    outcome = func.coalesce(SmsMessage.cancel_reason, SmsMessage.status)
    return [tuple(r) for r in session.execute(
        select(SmsMessage.customer_id, SmsMessage.phone, outcome)
        .where(SmsMessage.campaign_id == campaign_id).order_by(SmsMessage.id))]


def test_a_filter_audience_leaves_merged_customers_out(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    region = "测试区-合并筛选"
    survivor, merged = merged_pair(session, region)
    other = customers(session, region, 1)[0]
    campaign = make_campaign(session, template_of(session, channel_of(session)),
                             {"kind": "filter", "region": region})
    launched(session, campaign, now=INSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, chunk=2, now=INSIDE)

    assert outcomes(session, campaign.id) == {survivor.phone: "pending", other.phone: "pending"}
    assert merged.phone not in outcomes(session, campaign.id)


def test_an_uploaded_number_of_a_merged_customer_reaches_the_survivor_once(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    survivor, merged = merged_pair(session, "测试区-合并名单")
    quiet_survivor, opted_out = merged_pair(session, "测试区-合并名单")
    session.add(BlacklistEntry(phone=opted_out.phone, reason="replied TD", source="inbound"))
    stranger = new_phone()
    campaign = make_campaign(session, template_of(session, channel_of(session)), {"kind": "upload"},
                             {"name": "同学"})
    listed = [merged.phone[3:], stranger, survivor.phone, opted_out.phone]  # as typed: national or E.164
    session.add_all([SmsAudienceEntry(campaign_id=campaign.id, line=n, phone=p)
                     for n, p in enumerate(listed, 1)])
    launched(session, campaign, now=INSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, chunk=2, now=INSIDE)

    # The merged number stands for the survivor: sent to the survivor's number, under the survivor,
    # once; the survivor's own line is then a duplicate. An opt-out given on a merged number holds.
    assert messages(session, campaign.id) == [
        (survivor.id, survivor.phone, "pending"), (None, stranger, "pending"),
        (survivor.id, survivor.phone, "duplicate"), (quiet_survivor.id, quiet_survivor.phone, "opted_out")]


def test_an_opt_out_from_a_merged_customers_number_holds_for_the_survivor(client, session, channel):  # noqa: F811
    survivor, merged = merged_pair(session, "测试区-合并退订")
    bystander = customers(session, "测试区-合并退订", 1)[0]
    session.commit()
    to_survivor = message(session, channel, survivor.phone, "pending")
    to_survivor.customer_id = survivor.id
    notification = message(session, channel, survivor.phone, "pending", kind="notification")
    session.commit()

    resp = post(client, "inbound", channel.id, {"replies": [{"phone": merged.phone, "text": "退订"}]})

    assert resp.status_code == 200 and resp.get_json() == {"received": 1, "opted_out": 1}
    session.expire_all()
    assert session.get(Customer, survivor.id).marketing_consent is False
    assert session.get(Customer, merged.id).marketing_consent is False
    assert session.get(Customer, bystander.id).marketing_consent is True
    assert (session.get(SmsMessage, to_survivor.id).status,
            session.get(SmsMessage, to_survivor.id).cancel_reason) == ("cancelled", "opted_out")
    assert session.get(SmsMessage, notification.id).status == "pending"
    listed = select(BlacklistEntry.phone).where(BlacklistEntry.phone.in_([merged.phone, survivor.phone]))
    assert session.scalars(listed).all() == [merged.phone]  # the number that opted out, only
