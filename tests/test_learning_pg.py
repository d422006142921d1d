"""The learning import on PostgreSQL (ON CONFLICT DO NOTHING, the summary upsert) and with real worker
processes: a run whose worker and work horse are killed with SIGKILL mid-batch is re-enqueued by the
watchdog from its saved position and finishes with every activity stored once.

Skipped (with the reason) when TEST_DATABASE_URL is not set.
"""

from __future__ import annotations

import json

from sqlalchemy import func, select

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import COMPLETED, RUNNING, JobRun
from app.models.learning import LearningActivity, LearningSummary
from app.services import runner, signing
from app.services.customers import Registration, register
from app.views.learning import HEADERS
from tests import helpers
from tests.test_learning import SECRET, URL, row, work
from tests.workers import children, kill_worker_and_horse, start_worker, stop

TIMEOUT = 240
STALE = 3  # seconds without a heartbeat after which a running run is dead (CRM_JOB_STALE_SECONDS)
ROWS = 5000
CHUNK = 10  # rows per commit in the killed run: slow enough to be killed midway


def post(client, rows):
    data = json.dumps({"activities": rows}).encode()
    return client.post(URL, data=data, headers={**signing.callback_headers(HEADERS, SECRET, data),
                                                "Content-Type": "application/json"})


def users(session, n: int) -> list[str]:
    ids = [f"PG{i}" for i in range(n)]
    for i, user_id in enumerate(ids):
        register(session, Registration(user_id, f"1380000{i:04d}", f"学员{i}"))
    session.commit()
    return ids


def test_pg_import_is_idempotent_and_summarises(pg_app):
    client = pg_app.test_client()
    with pg_app.app_context():
        session = db.session
        ids = users(session, 3)
        rows = [row(i, user_id=ids[i % 3], attended=i % 4 != 0, progress=i) for i in range(1, 61)]
        assert post(client, rows + [row(99, user_id="NOBODY")]).status_code == 202
        work(pg_app)
        assert post(client, rows[:30]).status_code == 202
        work(pg_app)
        session.expire_all()
        assert session.scalar(select(func.count()).select_from(LearningActivity)) == 60
        summaries = session.scalars(select(LearningSummary)).all()
        assert sum(s.lessons_attended for s in summaries) == 45
        assert sum(s.lessons_missed for s in summaries) == 15
        assert sorted(s.progress for s in summaries) == [58, 59, 60]
        last = session.scalar(select(JobRun).order_by(JobRun.id.desc()))
        assert last.status == COMPLETED and "0 imported, 30 already imported" in last.summary


def test_pg_an_import_killed_mid_batch_finishes_by_itself_each_activity_once(pg_app):
    overrides = {"CRM_JOB_STALE_SECONDS": STALE, "CRM_LEARNING_CHUNK": CHUNK}
    pg_app.config.update(overrides)
    client = pg_app.test_client()
    procs = []
    with pg_app.app_context():
        session = db.session
        ids = users(session, 50)
        resp = post(client, [row(i, user_id=ids[i % 50]) for i in range(ROWS)])
        assert resp.status_code == 202
        run_id = resp.get_json()["run_id"]

        def state() -> JobRun:
            session.expire_all()
            return session.get(JobRun, run_id)

        try:
            worker = start_worker(pg_app, "learning-pg-1", settings=overrides)
            procs.append(worker)
            helpers.wait_for(lambda: state().done >= 500 and state().status == RUNNING, "500 rows", TIMEOUT)
            kill_worker_and_horse(worker, helpers.wait_for(lambda: children(worker.pid), "the work horse"))
            killed = state()
            assert killed.status == RUNNING and 500 <= killed.done < ROWS  # killed mid-batch
            helpers.wait_for(lambda: (utcnow() - state().heartbeat_at).total_seconds() > STALE,
                             "the heartbeat to go stale", TIMEOUT)
            actions = runner.watchdog(session, utcnow())
            session.commit()
            assert len(actions) == 1 and f"run {run_id}" in actions[0]
            procs.append(start_worker(pg_app, "learning-pg-2", settings=overrides))
            helpers.wait_for(lambda: state().status == COMPLETED, "the import to complete", TIMEOUT)
        finally:
            stop(procs)
        final = state()
        assert (final.done, final.failed, final.total, final.attempts) == (ROWS, 0, ROWS, 2)
        assert final.summary.startswith(f"{ROWS} rows: {ROWS} imported, 0 already imported")
        assert session.scalar(select(func.count()).select_from(LearningActivity)) == ROWS
        assert session.scalar(select(func.sum(LearningSummary.lessons_attended))) == ROWS
