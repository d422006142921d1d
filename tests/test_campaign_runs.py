"""SMS campaigns through the job runner: a saved filter on product line + region + consent prepares and
sends (issue 11's bug), pause / resume mid-preparation and mid-sending with a real worker process (the
handler returns between chunks; resume carries on from the saved cursor), a cancelled run, the
scheduled sweep that starts what is due (a launch at a later time, sending after the quiet hours), a
failed run's reason on the campaign page, and the upload command's refusals (nothing changes)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys

from sqlalchemy import func, insert, select

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import COMPLETED, SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND
from app.models.sales import Customer
from app.models.sms import SinkMessage, SmsAudienceEntry, SmsCampaign, SmsMessage
from app.services import runner
from app.services.sms import campaigns
from tests.conftest import login
from tests.factories import CUSTOMER, OPPORTUNITY, reference_item
from tests.helpers import ROOT, child_env, instant, wait_for
from tests.test_sms_campaigns import (
    launched,
    make_campaign,
    make_channel,
    make_template,
    new_phone,
    run_jobs,
)


def sunk(session, campaign_id: int) -> dict[str, int]:
    """phone → how many times the sink accepted a message of the campaign for it."""
    session.rollback()
    return dict(session.execute(select(SinkMessage.phone, func.count())
                                .join(SmsMessage, SmsMessage.uid == SinkMessage.correlation)
                                .where(SmsMessage.campaign_id == campaign_id)
                                .group_by(SinkMessage.phone)).all())


def run_of(session, kind: str, campaign_id: int):
    session.rollback()
    return runner.latest_run(session, kind, campaigns.TARGET, campaign_id)


# --- a saved filter on product line + region + consent ---------------------------------------------------
def filtered_campaign_runs(app, session) -> None:
    line = reference_item(session, "product_line")
    other = reference_item(session, "product_line", "test_other_line")
    region = "测试区-筛选"

    def customer(line_id, consent=True, where=region):
        person = CUSTOMER.create(session, phone=new_phone(), region=where, marketing_consent=consent)
        OPPORTUNITY.create(session, customer_id=person.id, product_line_id=line_id)
        return person

    chosen = [customer(line.id) for _ in range(3)]
    left_out = [customer(other.id), customer(line.id, consent=False), customer(line.id, where="别处")]
    tpl = make_template(session, make_channel(session))
    campaign = make_campaign(session, tpl, {"kind": "filter", "product_line": line.code, "region": region,
                                            "consent": True})
    launched(session, campaign, start=True)  # the preparation run is enqueued on commit

    run_jobs(app)

    session.rollback()
    assert session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign.id)) == "completed"
    assert sunk(session, campaign.id) == {c.phone: 1 for c in chosen}
    assert not {c.phone for c in left_out} & set(sunk(session, campaign.id))
    prepare, send = run_of(session, SMS_CAMPAIGN_PREPARE, campaign.id), run_of(session, SMS_CAMPAIGN_SEND,
                                                                               campaign.id)
    assert (prepare.status, prepare.done, prepare.total, prepare.last_error) == (COMPLETED, 3, 3, None)
    assert (send.status, send.done, send.total, send.failed) == (COMPLETED, 3, 3, 0)


def test_a_campaign_filtered_by_product_line_region_and_consent_prepares_and_sends(app, session):
    filtered_campaign_runs(app, session)


def test_a_campaign_filtered_by_product_line_region_and_consent_prepares_and_sends_postgresql(pg_app):
    with pg_app.app_context():
        filtered_campaign_runs(pg_app, db.session)


# --- pause / resume with a real worker ----------------------------------------------------------------
WORKER = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker
from app import create_app
from app.jobs.worker import app_worker_class
from tests.conftest import make_config

db_url, redis_url = sys.argv[1:3]
app = create_app(make_config(db_url, redis_url))
redis = Redis.from_url(redis_url)
worker = app_worker_class(app, SimpleWorker)([Queue("default", connection=redis)], connection=redis)
worker.work(logging_level="WARNING")
"""


def test_pause_and_resume_mid_preparation_and_mid_sending(app, session, client):
    n = 3000
    channel = make_channel(session, batch_size=20, options=json.dumps({"delay_ms": 20}))
    tpl = make_template(session, channel)
    region = "测试区-暂停续做"
    phones = [new_phone() for _ in range(n)]
    session.execute(insert(Customer), [{"phone": p, "name": f"客户{i}", "region": region}
                                       for i, p in enumerate(phones)])
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign)
    cid = campaign.id
    # small chunks, so that a pause lands in the middle of the preparation
    runner.start(session, SMS_CAMPAIGN_PREPARE, target_type=campaigns.TARGET, target_id=cid,
                 params={"chunk": 20})
    session.commit()
    login(client, "marketing")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, app.config["SQLALCHEMY_DATABASE_URI"],
                               app.config["REDIS_URL"]], cwd=ROOT, env=child_env())
    try:
        def messages() -> int:
            session.rollback()
            return session.scalar(select(func.count()).where(SmsMessage.campaign_id == cid))

        def ended(kind: str):
            run = run_of(session, kind, cid)
            return run if run is not None and run.status == COMPLETED else None

        # Pause mid-preparation: the handler returns between chunks; nothing is sent.
        wait_for(lambda: messages() >= 200, "the preparation to be under way", timeout=120)
        assert client.post(f"/smscampaignview/pause/{cid}").status_code == 302
        run = wait_for(lambda: ended(SMS_CAMPAIGN_PREPARE), "the preparation run to stop", timeout=60)
        assert "paused" in run.summary
        stopped_at = messages()
        cursor, prepared = session.execute(select(SmsCampaign.cursor, SmsCampaign.prepared)
                                           .where(SmsCampaign.id == cid)).one()
        assert 200 <= stopped_at < n and cursor > 0 and not prepared
        assert run_of(session, SMS_CAMPAIGN_SEND, cid) is None and sunk(session, cid) == {}

        # Resume: the preparation carries on from the cursor, then the sending starts; pause it mid-way.
        assert client.post(f"/smscampaignview/resume/{cid}").status_code == 302
        wait_for(lambda: len(sunk(session, cid)) >= 300, "the sending to be under way", timeout=120)
        assert client.post(f"/smscampaignview/pause/{cid}").status_code == 302
        run = wait_for(lambda: ended(SMS_CAMPAIGN_SEND), "the sending run to stop", timeout=60)
        assert "paused" in run.summary and len(sunk(session, cid)) < n

        # Resume again: everything goes, each recipient once.
        assert client.post(f"/smscampaignview/resume/{cid}").status_code == 302
        wait_for(lambda: session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == cid))
                 == "completed", "the campaign to complete", timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert messages() == n
    assert sunk(session, cid) == {p: 1 for p in phones}
    runs = session.scalars(select(runner.JobRun.kind).where(runner.JobRun.target_id == cid,
                                                            runner.JobRun.target_type == campaigns.TARGET)
                           .order_by(runner.JobRun.id)).all()
    assert runs == [SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND, SMS_CAMPAIGN_SEND]


# --- a run cancelled on the Jobs page; the scheduled sweep ------------------------------------------------
def test_a_run_cancelled_before_it_ran_does_nothing_and_resume_starts_another(app, session):
    tpl = make_template(session, make_channel(session))
    region = "测试区-取消运行"
    people = [CUSTOMER.create(session, phone=new_phone(), region=region) for _ in range(4)]
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    launched(session, campaign, start=True)
    run = run_of(session, SMS_CAMPAIGN_PREPARE, campaign.id)
    runner.cancel(session, run.id, "admin")
    session.commit()

    run_jobs(app)  # the cancelled run does nothing

    session.rollback()
    assert session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign.id)) == "scheduled"
    campaigns.pause(session, campaign.id)
    campaigns.resume(session, campaign.id)  # a new preparation run
    session.commit()
    run_jobs(app)
    assert sunk(session, campaign.id) == {p.phone: 1 for p in people}


def test_the_sweep_starts_due_campaigns_and_sending_after_quiet_hours(app, session, traveller):
    from app.jobs.sms import start_due_campaigns_job

    traveller.move_to(instant("2026-06-17T20:00:00+08:00"))
    tpl = make_template(session, make_channel(session))
    region = "测试区-定时"
    people = [CUSTOMER.create(session, phone=new_phone(), region=region) for _ in range(3)]
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": region})
    campaign = launched(session, campaign, start=True, at=utcnow() + dt.timedelta(hours=2))  # 22:00
    assert start_due_campaigns_job() == []  # not due yet
    assert run_of(session, SMS_CAMPAIGN_PREPARE, campaign.id) is None

    # 22:00: due, but inside the quiet hours: prepared and deferred until 08:00, nothing sent.
    traveller.move_to(instant("2026-06-17T22:00:01+08:00"))
    assert len(start_due_campaigns_job()) == 1
    assert start_due_campaigns_job() == []  # started once
    run_jobs(app)
    session.rollback()
    assert sunk(session, campaign.id) == {}
    send = run_of(session, SMS_CAMPAIGN_SEND, campaign.id)
    assert send.status == COMPLETED and "waits until 2026-06-18 08:00" in send.summary
    assert start_due_campaigns_job() == []  # nothing due before 08:00

    # 08:00 next morning: the sweep starts the sending again, and it completes.
    traveller.move_to(instant("2026-06-18T08:00:01+08:00"))
    assert len(start_due_campaigns_job()) == 1
    run_jobs(app)
    session.rollback()
    assert sunk(session, campaign.id) == {p.phone: 1 for p in people}
    assert session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign.id)) == "completed"
    assert start_due_campaigns_job() == []


# --- the console: a failed run shows on the campaign page; the upload command's refusals ----------------
def test_a_failed_preparation_shows_its_reason_on_the_campaign_page(app, session, client):
    tpl = make_template(session, make_channel(session))
    campaign = make_campaign(session, tpl, {"kind": "filter", "region": "测试区-失败"})
    launched(session, campaign, start=True)
    session.execute(SmsCampaign.__table__.update().where(SmsCampaign.id == campaign.id)
                    .values(audience='{"kind": "everyone"}'))  # broken after the launch
    session.commit()

    run_jobs(app)

    login(client, "marketing")
    data = client.get(f"/smscampaignview/progress/{campaign.id}.json").get_json()
    assert [(r["kind"], r["status"]) for r in data["runs"]] == [(SMS_CAMPAIGN_PREPARE, "failed")]
    assert data["runs"][0]["last_error"] == ("The campaign's audience is neither a segment nor an uploaded "
                                             "list")
    page = client.get(f"/smscampaignview/progress/{campaign.id}")
    assert 'id="crm-campaign-runs"' in page.text and "neither a segment nor an uploaded list" in page.text


def test_an_upload_refused_changes_nothing(app, session, client):
    import io

    from tests.helpers import flashes

    tpl = make_template(session, make_channel(session))
    campaign = make_campaign(session, tpl, {"kind": "upload"})
    session.commit()
    login(client, "marketing")

    def upload(text: str):
        return client.post(f"/smscampaignview/upload/{campaign.id}",
                           data={"file": (io.BytesIO(text.encode()), "list.csv")}, follow_redirects=True)

    def lines() -> list[str]:
        session.rollback()
        entry = SmsAudienceEntry
        return session.scalars(select(entry.phone).where(entry.campaign_id == campaign.id)
                               .order_by(entry.line)).all()

    first = [new_phone()[3:] for _ in range(3)]
    assert "3 lines uploaded" in upload("phone\n" + "\n".join(first)).text
    assert lines() == first
    refused = upload("phone,name\n")  # no numbers: the earlier list stays (the delete is rolled back)
    assert flashes(refused.text) == ["The file holds no phone numbers"] and lines() == first
    launched(session, session.get(SmsCampaign, campaign.id))
    refused = upload(new_phone())
    assert flashes(refused.text) == ["The list of a launched campaign cannot change"] and lines() == first
