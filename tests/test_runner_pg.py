"""The job runner with real worker processes on PostgreSQL: a lead import whose worker AND work horse are
killed with SIGKILL mid-file, twice, is re-enqueued by the watchdog from its saved position and finishes
with every line imported exactly once, without anyone pressing a button.

Skipped (with the reason) when TEST_DATABASE_URL is not set.
"""

from __future__ import annotations

import csv
import io
import os

from sqlalchemy import select

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import COMPLETED, LEAD_IMPORT, RUNNING, JobRun
from app.models.sales import Lead, LeadImport
from app.services import runner
from app.services.lead_import import CHUNK
from tests import helpers
from tests.conftest import login
from tests.workers import children, kill_worker_and_horse, start_worker, stop

TIMEOUT = 240
STALE = 3  # seconds without a heartbeat after which a running run is dead (CRM_JOB_STALE_SECONDS)
ROWS = 8 * CHUNK


def wait_for(condition, what: str, timeout: float = TIMEOUT, every: float = 0.05):
    return helpers.wait_for(condition, what, timeout, every)


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
                worker = start_worker(pg_app, f"runner-pg-{attempt}", settings=overrides)
                procs.append(worker)
                # Resumed from the saved position: never back below what the last worker committed.
                goal = max(until, killed_at + CHUNK)
                wait_for(lambda goal=goal: state().done >= goal and state().status == RUNNING,
                         f"attempt {attempt} to get past row {goal}")
                kill_worker_and_horse(worker, wait_for(lambda w=worker: children(w.pid), "the work horse"))
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

            procs.append(start_worker(pg_app, "runner-pg-3", settings=overrides))
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
