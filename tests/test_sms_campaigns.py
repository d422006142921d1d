"""SMS campaigns: the audience prepared into messages — every recipient recorded, each cancel reason,
quiet-hour deferral, resumable preparation, pause / resume / cancel, progress."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter

import pytest
from redis import Redis
from sqlalchemy import func, select

from app.models.sales import Customer
from app.models.sms import (
    APPROVED,
    MARKETING,
    BlacklistEntry,
    SensitiveWord,
    SmsAudienceEntry,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.services.errors import DomainError
from app.services.sms import campaign_preparation, campaign_sending, campaigns, limits
from tests.helpers import instant

OPT_OUT = "拒收请回复R"
_numbers = itertools.count(10_000_000)


def new_phone() -> str:
    return f"+86139{next(_numbers):08d}"


def make_channel(session, **kw) -> SmsChannel:
    values = {"name": f"sink-{next(_numbers)}", "provider": "sink", "signature": "学而优",
              "rate_limit": 10_000, "batch_size": 50, "timeout_seconds": 1, "opt_out_text": OPT_OUT}
    values.update(kw)
    channel = SmsChannel(**values)
    session.add(channel)
    session.flush()
    return channel


def make_template(session, channel, body=None, kind=MARKETING, variables="name") -> SmsTemplate:
    body = body or f"{{name}}您好，秋季课程开班，名额有限。{OPT_OUT}"
    tpl = SmsTemplate(name=f"tpl-{next(_numbers)}", kind=kind, channel_id=channel.id, body=body,
                      variables=variables, status=APPROVED)
    session.add(tpl)
    session.flush()
    return tpl


def make_campaign(session, tpl, audience: dict, variables: dict | None = None) -> SmsCampaign:
    campaign = SmsCampaign(name=f"camp-{next(_numbers)}", template_id=tpl.id, channel_id=tpl.channel_id,
                           audience=json.dumps(audience), variables=json.dumps(variables or {}))
    session.add(campaign)
    session.flush()
    return campaign


def customers(session, region: str, n: int, **kw) -> list[Customer]:
    rows = [Customer(phone=new_phone(), name=f"客户{i}", region=region, **kw) for i in range(n)]
    session.add_all(rows)
    session.flush()
    return rows


def launched(session, campaign, now=None, start: bool = False, at=None) -> SmsCampaign:
    """Launch `campaign` (at `at`); its job runs are started only with `start` (tests here drive the
    services)."""
    campaign.template = session.get(SmsTemplate, campaign.template_id)
    campaign.channel = session.get(SmsChannel, campaign.channel_id)
    campaigns.launch(session, campaign, at=at, now=now, start=start)
    session.commit()
    return campaign


def outcomes(session, campaign_id: int) -> dict[str, str]:
    rows = session.execute(select(SmsMessage.phone, SmsMessage.status, SmsMessage.cancel_reason)
                           .where(SmsMessage.campaign_id == campaign_id)).all()
    return {p: (r or s) for p, s, r in rows}


INSIDE = dt.datetime(2026, 11, 25, 2, 0)  # 10:00 in Shanghai
OUTSIDE = dt.datetime(2026, 11, 25, 14, 0)  # 22:00 in Shanghai


def test_every_recipient_is_recorded_with_its_reason(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session)
    tpl = make_template(session, channel)
    region = "测试区-原因"
    ok = customers(session, region, 3)
    black, opted = customers(session, region, 1)[0], customers(session, region, 1)[0]
    no_consent = customers(session, region, 2, marketing_consent=False)
    landline = Customer(phone="+861012345678", name="座机", region=region)  # valid number, not a mobile
    gambler = Customer(phone=new_phone(), name="赌博达人", region=region)
    masked = Customer(phone=new_phone(), name="发票张", region=region)
    busy = customers(session, region, 1)[0]
    session.add_all([landline, gambler, masked,
                     BlacklistEntry(phone=black.phone, reason="complaint", source="manual"),
                     BlacklistEntry(phone=opted.phone, reason="replied TD", source="inbound"),
                     SensitiveWord(word="赌博", action="block"), SensitiveWord(word="发票", action="mask")])
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=INSIDE)
    # `busy` already had the day's 50 marketing messages of this signature + template.
    limiter = limits.FrequencyLimiter(redis)
    key = f"{channel.signature}:{tpl.id}"
    day = limits.limits_for(session, MARKETING)
    at = campaign_preparation.epoch(INSIDE)
    assert all(limiter.try_acquire(busy.phone, key, day, now=at) for _ in range(day["day"]))

    result = campaign_preparation.prepare(session, campaign.id, redis, chunk=4, now=INSIDE)

    expected = {c.phone: "pending" for c in ok + [masked]}
    expected.update({black.phone: "blacklisted", opted.phone: "opted_out", landline.phone: "invalid_number",
                     gambler.phone: "sensitive_word", busy.phone: "frequency_limit"})
    expected.update({c.phone: "no_consent" for c in no_consent})
    assert outcomes(session, campaign.id) == expected
    assert result.finished and result.rows == len(expected) and result.chunks == -(-len(expected) // 4)
    content = session.scalar(select(SmsMessage.content).where(SmsMessage.phone == masked.phone))
    assert content == f"【{channel.signature}】**张您好，秋季课程开班，名额有限。{OPT_OUT}"
    fresh = session.get(SmsCampaign, campaign.id)
    session.refresh(fresh)
    assert fresh.prepared and fresh.status == "running"


def test_uploaded_list_dedups_and_flags_invalid_numbers(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session)
    tpl = make_template(session, channel)
    campaign = make_campaign(session, tpl, {"kind": "upload"}, {"name": "同学"})
    a, b = new_phone(), new_phone()
    raw = [a, a[3:], "abc", "+86 " + b[3:6] + "-" + b[6:], b, "12345", a]
    session.add_all([SmsAudienceEntry(campaign_id=campaign.id, line=n, phone=p)
                     for n, p in enumerate(raw, 1)])
    refuser = Customer(phone=new_phone(), name="不要", region="x", marketing_consent=False)
    session.add(refuser)
    session.add(SmsAudienceEntry(campaign_id=campaign.id, line=len(raw) + 1, phone=refuser.phone[3:]))
    launched(session, campaign, now=INSIDE)

    # duplicates across chunks too
    campaign_preparation.prepare(session, campaign.id, redis, chunk=3, now=INSIDE)

    rows = session.execute(select(SmsMessage.phone, SmsMessage.status, SmsMessage.cancel_reason)
                           .where(SmsMessage.campaign_id == campaign.id).order_by(SmsMessage.id)).all()
    assert [(r.cancel_reason or r.status) for r in rows] == [
        "pending", "duplicate", "invalid_number", "pending", "duplicate", "invalid_number", "duplicate",
        "no_consent"]
    assert [r.phone for r in rows if r.status == "pending"] == [a, b]
    assert all(r.phone.startswith("+86") for r in rows if r.cancel_reason == "duplicate")


def test_quiet_hours_defer_marketing_until_the_window_opens(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session)
    tpl = make_template(session, channel)
    region = "测试区-夜间"
    people = customers(session, region, 5)
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=OUTSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, now=OUTSIDE)

    opening = dt.datetime(2026, 11, 26, 0, 0)  # 08:00 next morning in Shanghai, in UTC
    rows = session.execute(select(SmsMessage.status, SmsMessage.send_after)
                           .where(SmsMessage.campaign_id == campaign.id)).all()
    assert rows and len(rows) == len(people) and set(rows) == {("deferred", opening)}
    # The sender at 23:00 sends nothing and says when to come back; at 08:00 all go.
    late = campaign_sending.send(session, campaign.id, redis, now_fn=lambda: OUTSIDE + dt.timedelta(hours=1))
    assert late.sent == 0 and late.next_at == opening
    morning = campaign_sending.send(session, campaign.id, redis, now_fn=lambda: opening)
    assert morning.sent == len(people) and morning.completed


def test_quiet_hours_window_is_configurable(app, session):
    window = {"start": "22:00", "end": "06:00"}  # a window across midnight
    assert limits.next_window_start(OUTSIDE, window) is None  # 22:00 local
    assert limits.next_window_start(INSIDE, window) == dt.datetime(2026, 11, 25, 14, 0)


def test_preparation_resumes_from_its_cursor(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session)
    tpl = make_template(session, channel)
    region = "测试区-续做"
    people = customers(session, region, 11)
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=INSIDE)

    first = campaign_preparation.prepare(session, campaign.id, redis, chunk=4, now=INSIDE, max_chunks=2)
    assert first.rows == 8 and not first.finished
    assert session.scalar(select(SmsCampaign.cursor).where(SmsCampaign.id == campaign.id)) == people[7].id
    rest = campaign_preparation.prepare(session, campaign.id, redis, chunk=4, now=INSIDE)
    assert rest.rows == 3 and rest.finished
    assert Counter(outcomes(session, campaign.id).values()) == {"pending": len(people)}


def test_pause_resume_cancel(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session, batch_size=3)
    tpl = make_template(session, channel)
    region = "测试区-暂停"
    people = customers(session, region, 10)
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=INSIDE)
    campaign_preparation.prepare(session, campaign.id, redis, now=INSIDE)

    first = campaign_sending.send(session, campaign.id, redis, max_batches=1, now_fn=lambda: INSIDE)
    assert first.sent == 3
    campaigns.pause(session, campaign.id)
    session.commit()
    paused = campaign_sending.send(session, campaign.id, redis, now_fn=lambda: INSIDE)
    assert paused.sent == 0 and paused.stopped == "paused"
    campaigns.resume(session, campaign.id)
    session.commit()
    assert campaign_sending.send(session, campaign.id, redis, max_batches=1, now_fn=lambda: INSIDE).sent == 3
    cancelled = campaigns.cancel(session, campaign.id)
    session.commit()
    assert cancelled == len(people) - 6
    counts = campaigns.progress(session, campaign.id, now=INSIDE)["counts"]
    assert counts == {"sent": 6, "cancelled:campaign_cancelled": len(people) - 6}
    assert campaign_sending.send(session, campaign.id, redis, now_fn=lambda: INSIDE).sent == 0


def test_launch_needs_an_approved_template(app, session):
    channel = make_channel(session)
    tpl = make_template(session, channel)
    tpl.status = "pending"
    campaign = make_campaign(session, tpl, {"kind": "upload"})
    session.commit()
    try:
        launched(session, campaign)
    except DomainError as exc:
        assert exc.field == "template" and "approved" in exc.message
    else:
        raise AssertionError("launch accepted an unapproved template")
    session.rollback()
    assert session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign.id)) == "draft"
    assert session.scalar(select(func.count()).select_from(SmsMessage)
                          .where(SmsMessage.campaign_id == campaign.id)) == 0


def run_jobs(app) -> None:
    from rq import Queue, SimpleWorker

    from app.jobs.worker import app_worker_class

    redis = Redis.from_url(app.config["REDIS_URL"])
    worker_class = app_worker_class(app, SimpleWorker)
    worker_class([Queue("default", connection=redis)], connection=redis).work(burst=True)


@pytest.mark.parametrize("at, outcome", [
    ("2026-11-25T10:00:00+08:00", "sent"),  # inside 08:00–21:00 Beijing time: the four go out
    ("2026-11-25T22:00:00+08:00", "deferred"),  # outside it: they wait (deferred)
])
def test_marketing_runs_a_campaign_from_the_console(app, session, client, traveller, at, outcome):
    import io

    traveller.move_to(instant(at))

    from tests.conftest import login

    channel = make_channel(session)
    tpl = make_template(session, channel)
    refused = Customer(phone=new_phone(), name="拒", region="上传", marketing_consent=False)
    session.add(refused)
    session.commit()
    login(client, "marketing")
    resp = client.post("/smscampaignview/add", data={"name": "双十二", "template": tpl.id,
                                                     "channel": channel.id, "audience_kind": "upload",
                                                     "variables": "{}"})
    assert resp.status_code == 302, resp.text
    campaign = session.scalar(select(SmsCampaign).where(SmsCampaign.name == "双十二"))
    phones = [new_phone() for _ in range(4)]
    listing = "phone,name\n" + "\n".join(f"{p[3:]},张{n}" for n, p in enumerate(phones)) \
        + f"\n{phones[0]}\nnot-a-phone\n{refused.phone}\n"
    resp = client.post(f"/smscampaignview/upload/{campaign.id}",
                       data={"file": (io.BytesIO(listing.encode()), "list.csv")})
    assert resp.status_code == 302
    resp = client.post(f"/smscampaignview/launch/{campaign.id}", data={"scheduled_at": ""})
    assert resp.status_code == 302
    run_jobs(app)

    data = client.get(f"/smscampaignview/progress/{campaign.id}.json").get_json()
    expected = {outcome: len(phones), "cancelled:duplicate": 1,
                "cancelled:invalid_number": 1, "cancelled:no_consent": 1}
    assert data["counts"] == expected and data["total"] == len(phones) + 3
    page = client.get(f"/smscampaignview/progress/{campaign.id}")
    assert page.status_code == 200 and 'id="crm-campaign-chart"' in page.text
    assert "chart-4.6.1.umd.min.js" in page.text
    names = session.scalars(select(SmsMessage.content).where(SmsMessage.campaign_id == campaign.id,
                                                             SmsMessage.phone == phones[1])).all()
    assert names == [f"【{channel.signature}】张1您好，秋季课程开班，名额有限。{OPT_OUT}"]


def test_the_console_refuses_a_campaign_without_an_audience(app, session, client):
    """No JSON to type: the audience is chosen (a segment or an uploaded list); choosing neither is refused
    at the field."""
    from tests.conftest import login

    channel = make_channel(session)
    tpl = make_template(session, channel)
    session.commit()
    login(client, "marketing")
    resp = client.post("/smscampaignview/add", data={"name": "坏受众", "template": tpl.id,
                                                     "channel": channel.id, "audience_kind": "",
                                                     "audience": '{"kind": "upload"}', "variables": "{}"})
    assert resp.status_code == 200 and "Choose the audience: a segment or an uploaded list" in resp.text
    assert session.scalar(select(func.count()).select_from(SmsCampaign)
                          .where(SmsCampaign.name == "坏受众")) == 0


# --- quiet hours in the recipient's time zone --------------------------------------------------------
_foreign = itertools.count(100)


def foreign_phones() -> tuple[str, str]:
    """A New York (+1 212) and a British mobile (+44 7911) number, both valid mobiles."""
    n = next(_foreign)
    return f"+1212736{n:04d}", f"+447911{n:06d}"


def zoned_campaign(session, region: str, now: dt.datetime):
    channel = make_channel(session)
    tpl = make_template(session, channel)
    us, uk = foreign_phones()
    people = {"cn": new_phone(), "us": us, "uk": uk}
    session.add_all([Customer(phone=p, name=f"客户{k}", region=region) for k, p in people.items()])
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=now)
    return campaign, people


def states(session, campaign_id: int) -> dict[str, tuple]:
    rows = session.execute(select(SmsMessage.phone, SmsMessage.status, SmsMessage.send_after)
                           .where(SmsMessage.campaign_id == campaign_id)).all()
    return {p: (s, after) for p, s, after in rows}


def test_quiet_hours_follow_the_recipients_time_zone(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    # 02:00 UTC: 10:00 in Shanghai, 21:00 (the window has just closed) in New York, 02:00 in London.
    campaign, people = zoned_campaign(session, "测试区-时区甲", INSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, now=INSIDE)

    assert states(session, campaign.id) == {
        people["cn"]: ("pending", None),
        people["us"]: ("deferred", dt.datetime(2026, 11, 25, 13, 0)),  # 08:00 EST
        people["uk"]: ("deferred", dt.datetime(2026, 11, 25, 8, 0)),  # 08:00 GMT
    }
    sent = campaign_sending.send(session, campaign.id, redis, now_fn=lambda: INSIDE)
    assert sent.sent == 1 and sent.next_at == dt.datetime(2026, 11, 25, 8, 0)


def test_quiet_hours_follow_the_recipients_time_zone_the_other_way(app, session):
    redis = Redis.from_url(app.config["REDIS_URL"])
    # 14:00 UTC: 22:00 in Shanghai (closed), 09:00 in New York and 14:00 in London (open).
    campaign, people = zoned_campaign(session, "测试区-时区乙", OUTSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, now=OUTSIDE)

    assert states(session, campaign.id) == {
        people["cn"]: ("deferred", dt.datetime(2026, 11, 26, 0, 0)),  # 08:00 next morning in Shanghai
        people["us"]: ("pending", None),
        people["uk"]: ("pending", None),
    }
    # The sender at 22:00 Shanghai time still sends to New York and London, and keeps Shanghai waiting.
    sent = campaign_sending.send(session, campaign.id, redis, now_fn=lambda: OUTSIDE)
    assert sent.sent == 2 and sent.next_at == dt.datetime(2026, 11, 26, 0, 0)
    assert states(session, campaign.id)[people["cn"]] == ("deferred", dt.datetime(2026, 11, 26, 0, 0))


def test_quiet_hours_in_the_company_zone_when_configured(app, session):
    from app.models.metadata import ConfigItem

    redis = Redis.from_url(app.config["REDIS_URL"])
    item = session.scalar(select(ConfigItem).where(ConfigItem.key == limits.QUIET_CONFIG))  # reference data
    if item is None:
        item = ConfigItem(key=limits.QUIET_CONFIG, value_type="json")
        session.add(item)
    item.value = json.dumps({"start": "08:00", "end": "21:00", "recipient_zone": False})
    session.commit()
    assert limits.quiet_hours(session)["recipient_zone"] is False
    campaign, people = zoned_campaign(session, "测试区-时区丙", OUTSIDE)

    campaign_preparation.prepare(session, campaign.id, redis, now=OUTSIDE)

    opening = dt.datetime(2026, 11, 26, 0, 0)
    assert set(states(session, campaign.id).values()) == {("deferred", opening)}


def test_recipient_zones_and_a_window_open_in_all_of_them():
    window = dict(limits.DEFAULT_QUIET)
    assert limits.recipient_zones("+8613912345678", window) == ("Asia/Shanghai",)
    assert limits.recipient_zones("+12127364100", window) == ("America/New_York",)
    assert limits.recipient_zones("+447911123456", window)[-1] == "Europe/London"
    assert limits.recipient_zones("+12127364100", {**window, "recipient_zone": False}) == ("Asia/Shanghai",)
    assert limits.recipient_zones("+999", window) == ("Asia/Shanghai",)  # unknown: the configured zone
    # New York and Los Angeles together: open only from 08:00 in Los Angeles (16:00 UTC).
    both = ("America/New_York", "America/Los_Angeles")
    assert limits.next_window_start(dt.datetime(2026, 11, 25, 14, 0), window, both) == \
        dt.datetime(2026, 11, 25, 16, 0)
    assert limits.next_window_start(dt.datetime(2026, 11, 25, 17, 0), window, both) is None
    # Zones whose windows never overlap: the first one decides.
    apart = ("Asia/Shanghai", "America/New_York")
    assert limits.next_window_start(OUTSIDE, window, apart) == dt.datetime(2026, 11, 26, 0, 0)


def test_a_claimed_message_whose_window_has_closed_waits_again(app, session):
    """The sender's check: prepared inside the window, claimed after it closed → deferred again."""
    redis = Redis.from_url(app.config["REDIS_URL"])
    campaign, people = zoned_campaign(session, "测试区-时区丁", INSIDE)
    campaign_preparation.prepare(session, campaign.id, redis, now=INSIDE)
    later = dt.datetime(2026, 11, 25, 14, 0)  # Shanghai closed; New York and London open
    rows = campaign_sending.claim(session, campaign.id, "tok", 10, later)
    assert {r.phone for r in rows} == set(people.values())

    ready = campaign_sending.hold_for_quiet_hours(session, "tok", rows, later, limits.quiet_hours(session))

    assert {r.phone for r in ready} == {people["us"], people["uk"]}
    held = session.execute(select(SmsMessage.status, SmsMessage.send_after, SmsMessage.claim,
                                  SmsMessage.attempts).where(SmsMessage.phone == people["cn"])).one()
    assert tuple(held) == ("deferred", dt.datetime(2026, 11, 26, 0, 0), None, 0)


def test_a_failed_chunk_write_leaves_the_cursor_behind_it_and_a_rerun_completes(app, session):
    """The chunk writer commits rows and cursor together: when a chunk's insert fails, the cursor stays at
    the last chunk written, nothing of the failed chunk is kept, and a re-run writes each recipient once."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    redis = Redis.from_url(app.config["REDIS_URL"])
    channel = make_channel(session)
    tpl = make_template(session, channel)
    region = "测试区-写失败"
    people = customers(session, region, 10)
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, now=INSIDE)
    # A row already holding the 6th recipient's number makes the 2nd chunk's insert fail (unique index).
    squatter = SmsMessage(campaign_id=campaign.id, phone=people[5].phone, status="cancelled",
                          cancel_reason="template_not_approved")
    session.add(squatter)
    session.commit()

    with pytest.raises(IntegrityError):
        campaign_preparation.prepare(session, campaign.id, redis, chunk=4, now=INSIDE)
    session.rollback()
    assert session.scalar(select(SmsCampaign.cursor).where(SmsCampaign.id == campaign.id)) == people[3].id
    assert Counter(outcomes(session, campaign.id).values()) == {"pending": 4, "template_not_approved": 1}

    session.delete(squatter)
    session.commit()
    rest = campaign_preparation.prepare(session, campaign.id, redis, chunk=4, now=INSIDE)
    assert rest.finished and rest.rows == 6
    phones = session.scalars(select(SmsMessage.phone).where(SmsMessage.campaign_id == campaign.id)).all()
    assert sorted(phones) == sorted(p.phone for p in people)
    assert Counter(outcomes(session, campaign.id).values()) == {"pending": len(people)}


# --- the same on PostgreSQL (COPY) --------------------------------------------------------------------
def test_every_recipient_is_recorded_with_its_reason_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        test_every_recipient_is_recorded_with_its_reason(pg_app, db.session)
        test_uploaded_list_dedups_and_flags_invalid_numbers(pg_app, db.session)
        test_quiet_hours_follow_the_recipients_time_zone(pg_app, db.session)
        test_quiet_hours_follow_the_recipients_time_zone_the_other_way(pg_app, db.session)
        test_a_failed_chunk_write_leaves_the_cursor_behind_it_and_a_rerun_completes(pg_app, db.session)


def test_an_audience_table_never_analyzed_is_analyzed_before_the_first_chunk(pg_app):
    """Right after a bulk load PostgreSQL has no statistics for the customer table (reltuples = -1) and
    would read each chunk by scanning and sorting the whole table (it guesses a handful of rows):
    preparation ANALYZEs it first, so the planner knows how many rows the audience's filter selects."""
    from sqlalchemy import text

    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        redis = Redis.from_url(pg_app.config["REDIS_URL"])
        tpl = make_template(session, make_channel(session))
        region = "测试区-统计"
        customers(session, region, 30)
        campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
        launched(session, campaign, now=INSIDE)
        # what a table created and loaded since the last autovacuum round looks like
        session.execute(text("UPDATE pg_class SET reltuples = -1 WHERE oid = 'customer'::regclass"))
        session.commit()

        result = campaign_preparation.prepare(session, campaign.id, redis, now=INSIDE)

        assert result.finished and result.rows == 30
        tuples = session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'customer'::regclass"))
        assert tuples >= 30
        plan = session.scalar(text("EXPLAIN SELECT id FROM customer WHERE region = :r"), {"r": region})
        assert "rows=30 " in plan, plan


def test_the_progress_page_redraws_itself_when_the_campaign_ends(app, session, client):
    """The live script draws the job runs and the buttons once, for the status the page was rendered with,
    and reloads the page when the polled status differs: a finished campaign then shows its completed
    preparation and no Pause / Cancel (browser walk: tests/e2e/test_campaign.py)."""
    import re

    from tests.conftest import login

    tpl = make_template(session, make_channel(session))
    customers(session, "测试区-刷新", 2, marketing_consent=True)
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": "测试区-刷新"})
    launched(session, campaign, start=True)
    login(client, "marketing")
    client.get("/lang/en")

    def page_state():
        html = client.get(f"/smscampaignview/progress/{campaign.id}").text
        data = json.loads(re.search(r'id="crm-campaign-data"[^>]*>(.*?)</script>', html, re.S).group(1))
        buttons = re.findall(r'<button type="submit" class="btn btn-\w+">(\w+)</button>', html)
        runs = re.findall(r"<td>(Preparation|Sending)</td>\s*<td>(\w+)</td>", html)
        return html, data["data"]["status"], buttons, runs

    html, rendered, buttons, runs = page_state()
    assert rendered == "scheduled" and buttons == ["Pause", "Cancel"] and runs == [("Preparation", "Queued")]
    assert "d.status !== rendered" in html and "window.location.reload()" in html

    run_jobs(app)
    polled = client.get(f"/smscampaignview/progress/{campaign.id}.json").get_json()
    assert polled["status"] == "completed" != rendered  # what makes the open page reload
    _html, rendered, buttons, runs = page_state()
    assert rendered == "completed" and buttons == []
    assert runs and all(status == "Completed" for _kind, status in runs), runs
