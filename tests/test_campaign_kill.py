"""A killed worker → the campaign completes by itself (issue 10): real RQ worker processes (forking, with
work horses) on PostgreSQL; the worker and its work horse are killed with SIGKILL several times during
the preparation and several times during the sending of one campaign to the sink, a fresh worker is
started each time, and only the job runner's watchdog (called by the test, as the scheduler would every
minute) brings the runs back. Nobody pauses, resumes or re-launches anything. The campaign reaches
`completed` and every recipient is in the sink exactly once.

N recipients: CAMPAIGN_KILL_N, by default 100,000, the size of the issue (measured on the shared 2-core
machine: 52 s in the test, 74 s with building the template database; 102 s when the machine was busier —
set a smaller CAMPAIGN_KILL_N for a quick run). A heartbeat older than STALE seconds makes the watchdog
call a run dead: on a busy machine a slow start is sometimes taken for a death too (its execution is then
superseded, and its work is not done twice), hence more attempts than the default five. Skipped without
TEST_DATABASE_URL.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from sqlalchemy import func, insert, select

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import COMPLETED, RUNNING, SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND
from app.models.sales import Customer
from app.models.sms import SmsCampaign, SmsMessage
from app.services import runner
from app.services.sms import campaigns
from tests.factories import SEGMENT
from tests.test_campaign_runs import run_of, sunk
from tests.test_sms_campaigns import make_campaign, make_channel, make_template
from tests.workers import kill_worker_and_horse, start_worker, stop

N = int(os.environ.get("CAMPAIGN_KILL_N", "100000"))
STALE = 4  # seconds without a heartbeat before the watchdog calls a run dead
ATTEMPTS = 12
KILLS = (0.2, 0.45, 0.7)  # kill when this share of the phase is done (preparation, then sending)
DEADLINE = 600  # seconds: generous; the run itself takes a fraction of it
SETTINGS = {"CRM_JOB_STALE_SECONDS": STALE, "CRM_JOB_MAX_ATTEMPTS": ATTEMPTS}


def watch(session, until, what: str, timeout: float = DEADLINE):
    """Poll `until()`, calling the watchdog about every second meanwhile (as app.jobs.schedule does)."""
    deadline, next_watch = time.monotonic() + timeout, 0.0
    while True:
        value = until()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if now >= next_watch:
            runner.watchdog(session, utcnow())
            session.commit()
            next_watch = now + 1.0
        time.sleep(0.05)


def arrange(session, n: int) -> tuple[int, list[str]]:
    channel = make_channel(session, batch_size=500, rate_limit=1_000_000, timeout_seconds=1)
    tpl = make_template(session, channel)
    region = "测试区-杀进程"
    phones = [f"+86136{i:08d}" for i in range(n)]
    for start in range(0, n, 20_000):
        session.execute(insert(Customer), [{"phone": p, "name": f"客户{i}", "region": region,
                                            "marketing_consent": True}
                                           for i, p in enumerate(phones[start:start + 20_000], start)])
    # The audience is a segment: the preparation's first step copies its members (the snapshot), and the
    # kills in the preparation come after that; each phone must still get exactly one message.
    segment = SEGMENT.create(session, criteria=json.dumps({"regions": [region]}))
    campaign = make_campaign(session, tpl, {"kind": "upload"})
    campaigns.check_draft(session, campaign, creating=False, kind=None, segment=segment)
    session.commit()
    return campaign.id, phones


@pytest.mark.config(CRM_JOB_STALE_SECONDS=STALE, CRM_JOB_MAX_ATTEMPTS=ATTEMPTS)
def test_a_campaign_whose_workers_are_killed_completes_by_itself(pg_app):
    started = time.monotonic()
    with pg_app.app_context():
        session = db.session
        campaign_id, phones = arrange(session, N)
        campaign = session.get(SmsCampaign, campaign_id)
        campaigns.launch(session, campaign)  # starts the preparation run (enqueued on commit)
        session.commit()
        workers, killed = [], {SMS_CAMPAIGN_PREPARE: 0, SMS_CAMPAIGN_SEND: 0}
        try:
            workers.append(start_worker(pg_app, "kill-0", settings=SETTINGS))
            for kind in (SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND):
                for share in KILLS:
                    def busy(kind=kind, share=share):
                        run = run_of(session, kind, campaign_id)
                        return run if run is not None and run.status == RUNNING and run.total and \
                            run.done >= share * run.total else None

                    run = watch(session, busy, f"{kind} at {share:.0%}")
                    assert run.done < run.total  # really in the middle of it
                    kill_worker_and_horse(workers[-1])
                    killed[kind] += 1
                    workers.append(start_worker(pg_app, f"kill-{len(workers)}", settings=SETTINGS))

            def completed():
                session.rollback()
                return session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign_id)) \
                    == "completed"

            watch(session, completed, "the campaign to complete")
        finally:
            stop(workers)

        # Each recipient messaged exactly once: one sent message and one sink row per phone.
        per_phone = sunk(session, campaign_id)
        assert len(per_phone) == N and set(per_phone.values()) == {1}
        assert set(per_phone) == set(phones)
        statuses = dict(session.execute(select(SmsMessage.status, func.count())
                                        .where(SmsMessage.campaign_id == campaign_id)
                                        .group_by(SmsMessage.status)).all())
        assert statuses == {"sent": N}
        # Both runs came back by themselves after each kill, and ended completed.
        for kind in (SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND):
            run = run_of(session, kind, campaign_id)
            assert run.status == COMPLETED and run.attempts >= killed[kind] + 1, (kind, run.attempts)
            assert run.done == run.total == N
        print(json.dumps({"n": N, "kills": killed, "seconds": round(time.monotonic() - started, 1)}))
