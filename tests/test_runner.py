"""The job runner (app.services.runner) on SQLite with a real RQ SimpleWorker on the private Redis:
retries until the attempts are spent, the watchdog (RQ's failed registry, stale heartbeats), idempotent
start, cancel, and the Jobs page's scoping. The kill -9 proof on PostgreSQL is tests/test_runner_pg.py."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select

from app.clock import utcnow
from app.jobs.worker import app_worker_class
from app.models.employee import CrmUser
from app.models.jobs import CANCELLED, COMPLETED, DISPATCH, FAILED, LEAD_IMPORT, QUEUED, RUNNING, JobRun
from app.models.sales import Lead, LeadImport
from app.services import runner
from tests.conftest import login
from tests.test_lead_import import EN, csv_bytes

FLAKY, DIES_ONCE, CHUNKED = "test_flaky", "test_dies_once", "test_chunked"
calls: list = []


@runner.handler(FLAKY)
def always_breaks(ctx):
    calls.append(ctx.attempt)
    raise RuntimeError("the provider answered 502")


@runner.handler(DIES_ONCE)
def dies_once(ctx):
    """The first attempt dies like a killed work horse (RQ sees the job fail; no `except` of ours runs)."""
    calls.append(ctx.attempt)
    if ctx.attempt == 1:
        raise SystemExit("work horse killed")
    return "done on attempt 2"


@runner.handler(CHUNKED)
def chunked(ctx):
    """Three chunks from the saved position; checks for a cancel between them."""
    from app.extensions import db

    start = (ctx.position or {}).get("next", 0)
    for n in range(start, 3):
        calls.append(n)
        ctx.checkpoint(db.session, done=n + 1, total=3, position={"next": n + 1})
        db.session.commit()
        if ctx.params.get("cancel_after") == n:
            runner.cancel(db.session, ctx.run_id, "someone")  # as if from the page, between two chunks
            db.session.commit()
        if ctx.cancelled(db.session):
            return "stopped"
    return "three chunks"


@pytest.fixture(autouse=True)
def _calls():
    calls.clear()


@pytest.fixture
def uploads(app, tmp_path):
    app.config["CRM_UPLOAD_DIR"] = str(tmp_path / "uploads")


def queue(app, name: str = "default") -> Queue:
    return Queue(name, connection=Redis.from_url(app.config["REDIS_URL"]))


def work(app, name: str = "default") -> None:
    q = queue(app, name)
    app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def web(app, username: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def user_id(session, username: str) -> int:
    return session.scalar(select(CrmUser.id).where(CrmUser.username == username))


def fresh(session, run_id: int) -> JobRun:
    session.expire_all()
    return session.get(JobRun, run_id)


def upload_import(app, session, username: str = "backoffice1", rows: int = 3) -> tuple[LeadImport, JobRun]:
    data = csv_bytes(EN, [[f"p{i}", f"135{i:08d}", "douyin", "k12_math", "", ""] for i in range(rows)])
    resp = web(app, username).post("/leadimportview/upload/", data={"file": (io.BytesIO(data), "l.csv")},
                                   content_type="multipart/form-data")
    assert resp.status_code == 302
    session.expire_all()
    record = session.scalars(select(LeadImport).order_by(LeadImport.id.desc())).first()
    return record, runner.latest_run(session, LEAD_IMPORT, "lead_import", record.id)


@pytest.mark.config(CRM_JOB_MAX_ATTEMPTS=3)
def test_an_error_is_retried_until_the_attempts_are_spent_then_failed_in_words(app, session):
    run = runner.start(session, FLAKY, target_type="thing", target_id=1)
    session.commit()
    work(app)  # each failed attempt re-enqueues the run; the burst worker takes it again
    run = fresh(session, run.id)
    assert calls == [1, 2, 3]
    assert (run.status, run.attempts) == (FAILED, 3)
    assert run.last_error == ("The job failed 3 times (at most 3 attempts); the last time: An unexpected "
                              "error stopped the job (RuntimeError: the provider answered 502)")
    assert "Traceback" not in run.last_error and run.finished_at is not None
    page = web(app, "admin").get(f"/jobs/show/{run.id}").get_data(as_text=True)
    assert "Failed" in page and "the provider answered 502" in page and "failed 3 times" in page


def test_the_watchdog_fails_a_run_whose_worker_died_too_often_and_the_page_says_why(app, session, uploads):
    record, run = upload_import(app, session)
    queue(app).empty()
    # What a worker killed for the 5th time leaves behind: running, attempts spent, heartbeat gone quiet.
    now = utcnow()
    run.status, run.attempts, run.heartbeat_at = RUNNING, 5, now - dt.timedelta(minutes=5)
    session.commit()
    actions = runner.watchdog(session, now)
    session.commit()
    assert actions == [f"run {run.id} (lead_import): failed after 5 attempts: the worker stopped sending "
                       "heartbeats (300 seconds without one)"]
    run = fresh(session, run.id)
    assert run.status == FAILED
    assert run.last_error.startswith("The worker stopped 5 times while running this job; it is not retried "
                                     "again (at most 5 attempts).")
    backoffice = web(app, "backoffice1")
    page = backoffice.get(f"/jobs/show/{run.id}").get_data(as_text=True)
    assert "The worker stopped 5 times while running this job" in page
    state = backoffice.get(f"/leadimportview/progress/{record.id}").get_json()
    assert state["status"] == "failed" and state["message"].startswith("The worker stopped 5 times")

    # "Run again" on the import starts a new run, which imports the file.
    assert backoffice.post(f"/leadimportview/rerun/{record.id}").status_code == 302
    again = runner.latest_run(session, LEAD_IMPORT, "lead_import", record.id)
    assert again.id != run.id and again.status == QUEUED
    work(app)
    assert fresh(session, again.id).status == COMPLETED
    assert session.scalar(select(func.count()).where(Lead.import_id == record.id)) == 3


def test_a_run_whose_rq_job_is_in_the_failed_registry_is_re_enqueued_and_finishes(app, session):
    run = runner.start(session, DIES_ONCE, target_type="thing", target_id=2)
    session.commit()
    work(app)
    run = fresh(session, run.id)
    first_job = run.rq_job_id
    assert (run.status, run.attempts) == (RUNNING, 1)  # the row still says running: nobody recorded the end
    assert first_job in FailedJobRegistry(queue=queue(app)).get_job_ids()
    assert runner.watchdog(session, utcnow()) == [
        f"run {run.id} ({DIES_ONCE}): re-enqueued after attempt 1: RQ moved the job to its failed registry "
        "(SystemExit: work horse killed)"]
    session.commit()
    run = fresh(session, run.id)
    assert run.status == QUEUED and run.rq_job_id != first_job
    assert queue(app).job_ids == [run.rq_job_id]
    work(app)
    run = fresh(session, run.id)
    assert (run.status, run.attempts, run.summary, calls) == (COMPLETED, 2, "done on attempt 2", [1, 2])
    assert runner.watchdog(session, utcnow() + dt.timedelta(hours=1)) == []  # finished runs are left alone


def test_the_watchdog_enqueues_a_queued_run_whose_rq_job_vanished_and_leaves_live_ones(app, session):
    lost = runner.start(session, CHUNKED, target_type="thing", target_id=3)
    waiting = runner.start(session, CHUNKED, target_type="thing", target_id=4)
    session.commit()
    Job.fetch(lost.rq_job_id, connection=queue(app).connection).delete()  # e.g. Redis lost it
    assert runner.watchdog(session, utcnow()) == []  # just enqueued: give it time
    actions = runner.watchdog(session, utcnow() + dt.timedelta(minutes=2))
    session.commit()
    assert actions == [f"run {lost.id} ({CHUNKED}): re-enqueued after attempt 0: its RQ job no longer exists"]
    work(app)
    assert [fresh(session, r.id).status for r in (lost, waiting)] == [COMPLETED, COMPLETED]


def test_start_is_idempotent_while_a_run_is_queued_or_running(app, session):
    first = runner.start(session, CHUNKED, target_type="thing", target_id=5, params={"a": 1})
    again = runner.start(session, CHUNKED, target_type="thing", target_id=5)
    other = runner.start(session, CHUNKED, target_type="thing", target_id=6)
    session.commit()
    assert again.id == first.id and other.id != first.id
    assert sorted(queue(app).job_ids) == sorted([first.rq_job_id, other.rq_job_id])  # one RQ job each
    work(app)
    assert fresh(session, first.id).status == COMPLETED
    later = runner.start(session, CHUNKED, target_type="thing", target_id=5)  # a finished run is not reused
    session.commit()
    assert later.id != first.id and later.status == QUEUED


def test_a_run_resumes_from_its_saved_position(app, session):
    run = runner.start(session, CHUNKED, target_type="thing", target_id=7)
    run.position = '{"next": 2}'  # what an earlier attempt committed with its second chunk
    session.commit()
    work(app)
    run = fresh(session, run.id)
    assert calls == [2] and (run.status, run.done, run.total) == (COMPLETED, 3, 3)


def test_cancel_a_queued_run_and_between_chunks(app, session, uploads):
    record, run = upload_import(app, session)
    backoffice = web(app, "backoffice1")
    resp = backoffice.post(f"/jobs/cancel/{run.id}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/jobs/show/{run.id}")
    run = fresh(session, run.id)
    assert run.status == CANCELLED and run.summary == "Cancelled by backoffice1"
    assert Job.fetch(run.rq_job_id, connection=queue(app).connection).get_status() == "canceled"
    work(app)
    assert session.scalar(select(func.count()).where(Lead.import_id == record.id)) == 0
    page = backoffice.get(f"/jobs/show/{run.id}").get_data(as_text=True)
    assert "Cancelled" in page
    resp = backoffice.post(f"/jobs/cancel/{run.id}")  # once ended, a run cannot be cancelled
    assert "This job has already ended" in backoffice.get(resp.headers["Location"]).get_data(as_text=True)

    running = runner.start(session, CHUNKED, target_type="thing", target_id=8, params={"cancel_after": 0})
    session.commit()
    work(app)
    running = fresh(session, running.id)
    assert calls == [0] and (running.status, running.done) == (CANCELLED, 1)


def test_the_jobs_page_shows_admins_every_run_and_others_their_own(app, session, uploads):
    record, mine = upload_import(app, session, "backoffice1")
    system = runner.start(session, DISPATCH, queue="high")
    theirs = runner.start(session, CHUNKED, target_type="thing", target_id=9,
                          started_by=user_id(session, "sales11"))
    session.commit()

    def listed(client) -> set[int]:
        resp = client.get("/jobs/")
        assert resp.status_code == 200
        return {int(n) for n in re.findall(r'data-run-id="(\d+)"', resp.get_data(as_text=True))}

    admin, backoffice, sales = web(app, "admin"), web(app, "backoffice1"), web(app, "sales11")
    assert listed(admin) >= {mine.id, system.id, theirs.id}
    assert listed(backoffice) == {mine.id}
    assert listed(sales) == {theirs.id}
    page = backoffice.get(f"/jobs/show/{mine.id}").get_data(as_text=True)
    assert f'href="/leadimportview/show/{record.id}"' in page  # links to what it works on
    assert "Lead import" in page and "Queued" in page
    assert backoffice.get(f"/jobs/show/{theirs.id}").status_code == 404
    assert sales.get(f"/jobs/show/{mine.id}").status_code == 404
    assert sales.post(f"/jobs/cancel/{mine.id}").status_code == 404
    assert fresh(session, mine.id).status == QUEUED
    assert backoffice.get(f"/jobs/progress/{mine.id}").get_json()["status"] == QUEUED
    assert "Jobs" in admin.get("/jobs/?status=active").get_data(as_text=True)


def test_crm_jobs_and_crm_watchdog_commands(app, session):
    run = runner.start(session, CHUNKED, target_type="thing", target_id=10)
    session.commit()
    cli = app.test_cli_runner()
    listing = cli.invoke(args=["crm", "jobs"])
    assert listing.exit_code == 0
    assert f"#{run.id} {CHUNKED} thing#10 queued 0+0/? attempts=0" in listing.output
    result = cli.invoke(args=["crm", "watchdog"])
    assert result.exit_code == 0 and result.output.strip() == "no dead job runs"


def test_the_jobs_page_in_chinese_with_a_running_run(app, session):
    run = runner.start(session, CHUNKED, target_type="thing", target_id=11,
                       started_by=user_id(session, "backoffice1"), total=4)
    now = utcnow()
    run.status, run.done, run.attempts, run.heartbeat_at = RUNNING, 1, 1, now - dt.timedelta(seconds=7)
    session.commit()
    client = app.test_client()  # no language chosen, no Accept-Language: Chinese
    assert login(client, "backoffice1").status_code == 302
    listing = client.get("/jobs/").get_data(as_text=True)
    assert "任务" in listing and "运行中" in listing and "1 / 4 (25%)" in listing
    assert re.search(r"\d+ 秒前", listing)
    show = client.get(f"/jobs/show/{run.id}").get_data(as_text=True)
    assert "心跳" in show and "取消" in show
