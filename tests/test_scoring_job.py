"""The SCORING job run (app.jobs.scoring) on a real RQ SimpleWorker, and on PostgreSQL with real worker
processes killed by SIGKILL.

Policy under test: a run trains once and scores every open opportunity chunk by chunk; the model's id is
in the run's position from the commit that stored it, so a run resumed by the watchdog scores on with that
model (none trained again) from its last checkpoint (no opportunity scored twice); with too little history
it completes saying why; the nightly start joins a run already queued or running.
"""

from __future__ import annotations

import datetime as dt
import json

from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app import clock
from app.extensions import db
from app.jobs.scoring import start_scoring_job
from app.jobs.worker import app_worker_class
from app.models.bigdata import ScoringModel
from app.models.jobs import COMPLETED, RUNNING, JobRun
from app.models.sales import OPEN_STATUSES, Opportunity
from app.services import runner, scoring
from tests import helpers
from tests import test_scoring as on_sqlite
from tests.test_scoring import history, opportunity
from tests.workers import children, kill_worker_and_horse, start_worker, stop


def work(app) -> None:
    q = Queue("low", connection=Redis.from_url(app.config["REDIS_URL"]))
    assert app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def open_ones(session) -> list[Opportunity]:
    session.expire_all()
    return list(session.scalars(select(Opportunity).where(Opportunity.status.in_(OPEN_STATUSES))))


def models(session) -> int:
    return session.scalar(select(func.count()).select_from(ScoringModel))


def test_a_run_trains_once_and_scores_every_open_opportunity(app, session):
    history(session, {"referral": 30, "web_form": 10}, {"douyin": 30, "web_form": 10})
    for source in ("referral", "douyin", "baidu"):
        opportunity(session, source=source)
    session.commit()
    run = scoring.start_run(session, None)
    session.commit()
    assert start_scoring_job() == run.id  # the nightly start joins it
    work(app)
    session.expire_all()
    run = session.get(JobRun, run.id)
    opps = open_ones(session)
    assert run.status == COMPLETED and run.done == run.total == len(opps)
    assert run.summary.startswith("Model #") and f"{len(opps)} opportunities scored" in run.summary
    assert all(o.win_probability is not None and o.win_factors is not None for o in opps)
    assert models(session) == 1


def test_too_little_history_completes_saying_why(app, session):
    history(session, {"referral": 3}, {"douyin": 3})
    run = scoring.start_run(session, None)
    session.commit()
    work(app)
    session.expire_all()
    run = session.get(JobRun, run.id)
    assert run.status == COMPLETED
    assert run.summary == ("Too little history: 6 closed opportunities, 40 needed; "
                           "the opportunities keep their scores")
    assert models(session) == 0 and all(o.win_probability is None for o in open_ones(session))


def test_a_run_that_died_after_its_first_chunk_resumes_with_its_model(app, session, traveller):
    history(session, {"referral": 30}, {"douyin": 30})
    run = scoring.start_run(session, None)
    session.commit()
    Queue("low", connection=Redis.from_url(app.config["REDIS_URL"])).empty()  # its worker died …
    # … after training and scoring its first chunk, each committed with its checkpoint (as the handler
    # does), and after scoring part of the next chunk in a transaction that never committed.
    ctx = runner.RunContext(run_id=run.id, kind=run.kind, target_type=None, target_id=None, params={},
                            position=None, attempt=1)
    model = scoring.train(session, clock.utcnow())
    ctx.checkpoint(session, done=0, total=scoring.open_count(session),
                   position={"model_id": model.id, "after": 0, "scored": 0})
    session.commit()
    first_at = clock.utcnow()
    after = scoring.score_chunk(session, model, 0, 5)
    ctx.checkpoint(session, done=5, position={"model_id": model.id, "after": after, "scored": 5})
    session.commit()
    scoring.score_chunk(session, model, after, 5)
    session.rollback()

    traveller.shift(dt.timedelta(hours=1))
    actions = runner.watchdog(session, clock.utcnow() + dt.timedelta(minutes=5))
    session.commit()
    assert len(actions) == 1
    work(app)
    session.expire_all()
    run = session.get(JobRun, run.id)
    opps = sorted(open_ones(session), key=lambda o: o.id)
    assert run.status == COMPLETED and run.done == len(opps) and models(session) == 1
    # The first five were scored once, before the death; the rest once, after it.
    assert all(o.scored_at < first_at + dt.timedelta(minutes=30) for o in opps[:5])
    assert all(o.scored_at > first_at + dt.timedelta(minutes=30) for o in opps[5:])
    assert json.loads(run.position)["model_id"] == model.id


# --- PostgreSQL -----------------------------------------------------------------------------------------
def test_pg_features_and_the_one_statement_update(pg_app):
    """The same SQL on PostgreSQL: features (ANY(array) lists, the closed_at bounds) and the set-wise
    UPDATE through json_to_recordset (closed ones untouched, updated_at kept)."""
    with pg_app.app_context():
        on_sqlite.test_features_read_counts_tags_and_learning_and_nothing_after_closing(pg_app, db.session)
        on_sqlite.test_closed_opportunities_are_not_rescored_and_updated_at_stays(pg_app, db.session)


TIMEOUT = 240
STALE = 3
OPEN = 1500


def test_pg_a_run_killed_mid_scoring_finishes_by_itself_each_once(pg_app):
    overrides = {"CRM_JOB_STALE_SECONDS": STALE, "CRM_SCORING_CHUNK": 5}
    pg_app.config.update(overrides)
    procs = []
    with pg_app.app_context():
        session = db.session
        history(session, {"referral": 30, "web_form": 10}, {"douyin": 30, "web_form": 10})
        for n in range(OPEN):
            opportunity(session, source=("referral", "douyin", "web_form")[n % 3])
        session.commit()
        total = scoring.open_count(session)
        run_id = scoring.start_run(session, None).id
        session.commit()

        def state() -> JobRun:
            session.expire_all()
            return session.get(JobRun, run_id)

        try:
            worker = start_worker(pg_app, "scoring-pg-1", settings=overrides, queues=("low",))
            procs.append(worker)
            helpers.wait_for(lambda: state().done >= 100 and state().status == RUNNING, "100 scored", TIMEOUT)
            kill_worker_and_horse(worker, helpers.wait_for(lambda: children(worker.pid), "the work horse"))
            killed = state()
            assert killed.status == RUNNING and 100 <= killed.done < total
            helpers.wait_for(lambda: (clock.utcnow() - state().heartbeat_at).total_seconds() > STALE,
                             "the heartbeat to go stale", TIMEOUT)
            assert len(runner.watchdog(session, clock.utcnow())) == 1
            session.commit()
            procs.append(start_worker(pg_app, "scoring-pg-2", settings=overrides, queues=("low",)))
            helpers.wait_for(lambda: state().status == COMPLETED, "the run to complete", TIMEOUT)
        finally:
            stop(procs)
        final = state()
        assert (final.done, final.total, final.attempts) == (total, total, 2)
        assert models(session) == 1
        opps = open_ones(session)
        assert len(opps) == total and all(o.win_probability is not None for o in opps)
        by_source = {}
        for o in opps:
            by_source.setdefault(o.source_id, set()).add(o.win_probability)
        assert len(by_source) >= 3
