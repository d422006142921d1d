"""The job runner with real worker processes on PostgreSQL: a lead import whose worker AND work horse are
killed with SIGKILL mid-file, twice, is re-enqueued by the watchdog from its saved position and finishes
with every line imported exactly once, without anyone pressing a button.

Skipped (with the reason) when TEST_DATABASE_URL is not set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import COMPLETED, LEAD_IMPORT, RUNNING, JobRun
from app.models.sales import Lead, LeadImport
from app.services import runner
from app.services.lead_import import CHUNK
from tests.conftest import login
from tests.helpers import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A production-like worker: RQ's forking Worker (each job in a work horse), with the app context worker
# class of app/jobs/worker.py, on the test's database and Redis, with the test's settings.
WORKER = """
import json, sys
from redis import Redis
from rq import Queue, Worker
from app import create_app
from app.jobs.worker import app_worker_class, dispose_connections
from tests.conftest import make_config

db_url, redis_url, name, overrides = sys.argv[1:5]
app = create_app(make_config(db_url, redis_url, **json.loads(overrides)))
dispose_connections(app)
redis = Redis.from_url(redis_url)
worker = app_worker_class(app, Worker)([Queue("default", connection=redis)], connection=redis, name=name)
worker.work(logging_level="WARNING")
"""
TIMEOUT = 240
STALE = 3  # seconds without a heartbeat after which a running run is dead (CRM_JOB_STALE_SECONDS)
ROWS = 8 * CHUNK


def start_worker(app, name: str, overrides: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, app.config["SQLALCHEMY_DATABASE_URI"], app.config["REDIS_URL"], name,
         json.dumps(overrides)], cwd=ROOT, env=child_env())


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the work horse of an RQ worker), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def wait_for(condition, what: str, timeout: float = TIMEOUT, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def kill_worker_and_horse(worker: subprocess.Popen) -> None:
    horses = wait_for(lambda: children(worker.pid), "the work horse")
    os.kill(worker.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=30)


def stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lead_file(n: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "phone", "source", "product_line", "region"])
    writer.writerows([f"家长{i}", f"139{i:08d}", "douyin", "k12_math", "上海"] for i in range(n))
    return buffer.getvalue().encode("utf-8-sig")


def test_pg_a_lead_import_killed_twice_mid_file_finishes_by_itself_each_line_once(pg_app, tmp_path):
    overrides = {"CRM_UPLOAD_DIR": str(tmp_path / "uploads"), "CRM_JOB_STALE_SECONDS": STALE}
    pg_app.config.update(overrides)
    client = pg_app.test_client()
    assert login(client, "backoffice1").status_code == 302
    client.get("/lang/en")
    resp = client.post("/leadimportview/upload/", data={"file": (io.BytesIO(lead_file(ROWS)), "big.csv")},
                       content_type="multipart/form-data")
    assert resp.status_code == 302
    procs = []
    with pg_app.app_context():
        session = db.session
        record = session.scalars(select(LeadImport).order_by(LeadImport.id.desc())).first()
        run = runner.latest_run(session, LEAD_IMPORT, "lead_import", record.id)
        assert (record.total_rows, run.total, run.status) == (ROWS, ROWS, "queued")

        def state() -> JobRun:
            session.expire_all()
            return session.get(JobRun, run.id)

        try:
            killed_at = 0
            for attempt, until in enumerate((2 * CHUNK, 5 * CHUNK), start=1):
                worker = start_worker(pg_app, f"runner-pg-{attempt}", overrides)
                procs.append(worker)
                # Resumed from the saved position: never back below what the last worker committed.
                goal = max(until, killed_at + CHUNK)
                wait_for(lambda goal=goal: state().done >= goal and state().status == RUNNING,
                         f"attempt {attempt} to get past row {goal}")
                kill_worker_and_horse(worker)
                current = state()
                assert current.done >= killed_at and current.done < ROWS  # killed mid-file
                assert current.status == RUNNING and current.attempts == attempt
                killed_at = current.done
                # Nobody presses anything: once the heartbeat is stale the watchdog re-enqueues the run.
                wait_for(lambda: (utcnow() - state().heartbeat_at).total_seconds() > STALE,
                         "the heartbeat to go stale")
                actions = runner.watchdog(session, utcnow())
                session.commit()
                assert len(actions) == 1 and f"run {run.id}" in actions[0] and "heartbeat" in actions[0]
                assert state().status == "queued" and "heartbeats" in state().last_error

            procs.append(start_worker(pg_app, "runner-pg-3", overrides))
            wait_for(lambda: state().status == COMPLETED, "the import to complete")
        finally:
            stop(procs)

        final = state()
        assert (final.done, final.failed, final.total, final.attempts) == (ROWS, 0, ROWS, 3)
        assert final.summary.startswith(f"{ROWS} rows: {ROWS} created")
        session.expire_all()
        record = session.get(LeadImport, record.id)
        assert (record.total_rows, record.created_rows, record.duplicate_rows, record.error_rows) == (
            ROWS, ROWS, 0, 0)
        keys = session.scalars(select(Lead.client_key).where(Lead.import_id == record.id)).all()
        assert len(keys) == len(set(keys)) == ROWS  # every line exactly once
        assert not os.path.exists(tmp_path / "uploads" / f"{record.id}.csv")
        page = client.get(f"/jobs/show/{run.id}")
        assert page.status_code == 200 and "Completed" in page.get_data(as_text=True)
