"""QA sampling plans on the real database: per-agent counts and percentages, duration and connected
filters, the plan's org subtree, business-time-zone periods, deterministic idempotent re-runs, even
assignment across inspectors (within a run and across runs), machine scores, and the RQ jobs."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import delete, func, select

from app.clock import utcnow
from app.jobs.qa import sample_due_plans_job, sample_plan_job
from app.jobs.worker import app_worker_class
from app.models.qa import QaInspection, QaPlan
from app.services.errors import DomainError
from app.services.qa import sampling
from tests import factories as f

# 14:00 in Shanghai on 18 Nov: the previous "day" period is 17 Nov local = [16 Nov 16:00, 17 Nov 16:00) UTC
NOW = dt.datetime(2026, 11, 18, 6, 0)
IN_PREVIOUS_DAY = dt.datetime(2026, 11, 17, 2, 0)
_names = itertools.count(1)


@pytest.fixture
def floor(session):
    """A department with two teams (agents a1, a2 | a3), an agent outside it, three QA inspectors."""
    dept = f.org_unit(session, kind="department")
    team_a, team_b = f.org_unit(session, parent=dept), f.org_unit(session, parent=dept)
    outside = f.org_unit(session)
    qa_team = f.org_unit(session)
    agents = [f.employee(session, team_a), f.employee(session, team_a), f.employee(session, team_b)]
    stranger = f.employee(session, outside)
    inspectors = [f.employee(session, qa_team) for _ in range(3)]
    card = f.make_scorecard(session, [{"kind": "forbidden_words", "points": -20, "keywords": "包过"},
                                      {"kind": "manual", "points": -10}])
    return {"dept": dept, "agents": agents, "stranger": stranger, "inspectors": inspectors, "card": card}


def plan_for(session, floor, **kw) -> QaPlan:
    values = dict(name=f"Plan {next(_names)}", scorecard=floor["card"],
                  org_unit=floor["dept"], mode="count", amount=3, period="day",
                  inspectors=floor["inspectors"])
    values.update(kw)
    plan = QaPlan(**values)
    sampling.check_plan(plan)
    session.add(plan)
    session.commit()
    return plan


def calls(session, agent, n, start=IN_PREVIOUS_DAY, **kw):
    return [f.make_call_record(session, agent, started_at=start + dt.timedelta(minutes=7 * k), **kw)
            for k in range(n)]


def picked(session, plan) -> list[QaInspection]:
    session.expire_all()
    return list(session.scalars(select(QaInspection).where(QaInspection.plan_id == plan.id)
                                .order_by(QaInspection.call_id)))


def test_count_mode_takes_n_per_agent_of_the_subtree_and_rerun_creates_nothing(session, floor):
    a1, a2, a3 = floor["agents"]
    for agent, n in ((a1, 5), (a2, 2), (a3, 4), (floor["stranger"], 5)):
        calls(session, agent, n)
    plan = plan_for(session, floor, amount=3)

    result = sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert (result.period, result.created, result.agents) == ("2026-11-17", 8, 3)
    rows = picked(session, plan)
    assert Counter(r.agent_id for r in rows) == {a1.id: 3, a2.id: 2, a3.id: 3}  # a2 has only 2
    assert all(r.status == "pending" and r.period == "2026-11-17" and r.scorecard_id == floor["card"].id
               for r in rows)
    assert {r.org_unit_id for r in rows} == {a1.org_unit_id, a3.org_unit_id}
    per_inspector = Counter(r.inspector_id for r in rows)
    assert set(per_inspector) == {i.id for i in floor["inspectors"]}
    assert max(per_inspector.values()) - min(per_inspector.values()) <= 1
    assert session.get(QaPlan, plan.id).last_sampled_period == "2026-11-17"

    again = sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert again.created == 0
    assert [r.id for r in picked(session, plan)] == [r.id for r in rows]


def test_percent_mode_rounds_up_per_agent(session, floor):
    a1, a2, a3 = floor["agents"]
    calls(session, a1, 7)
    calls(session, a2, 2)
    calls(session, a3, 10)
    plan = plan_for(session, floor, mode="percent", amount=30)
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    # ceil(7 × 30%) = 3, ceil(2 × 30%) = 1, 10 × 30% = 3
    assert Counter(r.agent_id for r in picked(session, plan)) == {a1.id: 3, a2.id: 1, a3.id: 3}


def test_duration_filters_and_connected_only(session, floor):
    a1 = floor["agents"][0]
    short = calls(session, a1, 2, duration_seconds=30)
    right = calls(session, a1, 2, duration_seconds=90)
    long = calls(session, a1, 2, duration_seconds=600)
    missed = calls(session, a1, 2, connected=False)
    plan = plan_for(session, floor, amount=10, min_duration=60, max_duration=300)
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert {r.call_id for r in picked(session, plan)} == {c.id for c in right}

    any_call = plan_for(session, floor, name="Everything", amount=10, connected_only=False)
    sampling.sample_plan(session, any_call.id, NOW, sampling.PREVIOUS)
    # the calls already inspected by the first plan are skipped; the unconnected ones come in
    assert {r.call_id for r in picked(session, any_call)} == {c.id for c in short + long + missed}

    connected = plan_for(session, floor, name="Connected", amount=10)
    assert sampling.sample_plan(session, connected.id, NOW, sampling.PREVIOUS).created == 0


def test_only_the_period_in_the_business_time_zone(session, floor):
    a1 = floor["agents"][0]
    first = f.make_call_record(session, a1, started_at=dt.datetime(2026, 11, 16, 16, 0))  # 00:00 local
    last = f.make_call_record(session, a1, started_at=dt.datetime(2026, 11, 17, 15, 59))  # 23:59 local
    f.make_call_record(session, a1, started_at=dt.datetime(2026, 11, 17, 16, 0))  # the next local day
    f.make_call_record(session, a1, started_at=dt.datetime(2026, 11, 16, 15, 59))  # the day before
    plan = plan_for(session, floor, amount=10)
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert {r.call_id for r in picked(session, plan)} == {first.id, last.id}


def test_week_and_month_keys(session):
    week = sampling.period_at(session, "week", NOW, sampling.PREVIOUS)
    assert week.key == "2026-W46"
    assert week.start == dt.datetime(2026, 11, 8, 16, 0) and week.end == dt.datetime(2026, 11, 15, 16, 0)
    month = sampling.period_at(session, "month", NOW, sampling.CURRENT)
    assert month.key == "2026-11" and month.start == dt.datetime(2026, 10, 31, 16, 0)
    assert sampling.period_at(session, "month", dt.datetime(2026, 1, 10), sampling.PREVIOUS).key == "2025-12"


def test_picks_are_deterministic_and_a_killed_run_is_completed(session, floor):
    a1, a2, _a3 = floor["agents"]
    calls(session, a1, 12)
    calls(session, a2, 12)
    plan = plan_for(session, floor, amount=4)
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    first = [(r.call_id, r.inspector_id) for r in picked(session, plan)]
    assert len(first) == 8

    # the same plan and period pick the same calls again (seeded by plan + period)
    session.execute(delete(QaInspection).where(QaInspection.plan_id == plan.id))
    session.commit()
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert [(r.call_id, r.inspector_id) for r in picked(session, plan)] == first

    # a run killed after the first agent: the next run only adds the missing ones
    session.execute(delete(QaInspection).where(QaInspection.plan_id == plan.id,
                                               QaInspection.agent_id == a2.id))
    session.commit()
    result = sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    assert result.created == 4
    assert {r.call_id for r in picked(session, plan)} == {c for c, _i in first}


def test_assignment_stays_even_across_runs_within_a_period(session, floor):
    a1, a2, a3 = floor["agents"]
    inspectors = floor["inspectors"][:2]
    now = dt.datetime(2026, 11, 17, 10, 0)  # the CURRENT day is 17 Nov local
    calls(session, a1, 3)
    plan = plan_for(session, floor, amount=5, inspectors=inspectors)
    assert sampling.sample_plan(session, plan.id, now).created == 3
    for more in ((a1, 2), (a2, 3), (a3, 1)):
        calls(session, more[0], more[1], start=IN_PREVIOUS_DAY + dt.timedelta(hours=1))
        sampling.sample_plan(session, plan.id, now)
        load = Counter(r.inspector_id for r in picked(session, plan))
        assert abs(load[inspectors[0].id] - load[inspectors[1].id]) <= 1, load
    assert len(picked(session, plan)) == 9
    assert session.get(QaPlan, plan.id).last_sampled_period is None  # only completed periods count


def test_resigned_inspectors_get_nothing_and_machine_scores_are_stored(session, floor):
    a1 = floor["agents"][0]
    calls(session, a1, 1, transcript=[{"speaker": "agent", "start": 0, "end": 3, "text": "保证包-过"}])
    calls(session, a1, 1, transcript=[{"speaker": "agent", "start": 0, "end": 3, "text": "您好"}])
    gone = floor["inspectors"][0]
    gone.hr_status = "resigned"
    session.commit()
    plan = plan_for(session, floor, amount=5)
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    rows = picked(session, plan)
    assert gone.id not in {r.inspector_id for r in rows}
    assert sorted(r.machine_score for r in rows) == [80, 100]
    assert "包过" in next(r.machine_results for r in rows if r.machine_score == 80)


def test_plan_save_rules(session, floor):
    for kw, field in ((dict(amount=0), "amount"), (dict(mode="percent", amount=120), "amount"),
                      (dict(amount=2.5), "amount"), (dict(min_duration=100, max_duration=50), "max_duration"),
                      (dict(inspectors=[]), "inspectors"), (dict(period="year"), "period")):
        with pytest.raises(DomainError) as err:
            plan_for(session, floor, **kw)
        assert err.value.field == field, kw


def _work(app, queue: Queue) -> None:
    worker_class = app_worker_class(app, SimpleWorker)
    assert worker_class([queue], connection=queue.connection).work(burst=True)


def test_jobs_sample_due_plans_once_through_a_real_worker(app, session, floor):
    a1, a2, _a3 = floor["agents"]
    yesterday = sampling.period_at(session, "day", utcnow(), sampling.PREVIOUS)
    calls(session, a1, 4, start=yesterday.start + dt.timedelta(hours=1))
    calls(session, a2, 4, start=yesterday.start + dt.timedelta(hours=2))
    plan = plan_for(session, floor, amount=2)
    plan_id = plan.id
    queue = Queue("low", connection=Redis.from_url(app.config["REDIS_URL"]))

    job = queue.enqueue(sample_due_plans_job)
    _work(app, queue)
    assert job.get_status() == "finished", job.latest_result().exc_string
    mine = [r for r in job.return_value() if r["plan"] == plan_id]
    assert mine[0]["created"] == 4 and mine[0]["period"] == yesterday.key
    session.expire_all()
    assert plan_id not in sampling.due_plans(session, utcnow())

    again = queue.enqueue(sample_due_plans_job)
    _work(app, queue)
    assert all(r["plan"] != plan_id for r in again.return_value())
    rerun = queue.enqueue(sample_plan_job, plan_id, sampling.PREVIOUS)
    _work(app, queue)
    assert rerun.return_value()["created"] == 0
    assert session.scalar(select(func.count(QaInspection.id)).where(QaInspection.plan_id == plan_id)) == 4


def test_scheduler_registers_the_sampling_job(app):
    from rq.cron import CronScheduler

    from app.jobs.schedule import register

    scheduler = CronScheduler(connection=Redis.from_url(app.config["REDIS_URL"]))
    register(scheduler)
    jobs = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert jobs["sample_due_plans_job"].queue_name == "low"


def test_concurrent_runs_on_postgresql_create_each_inspection_once(pg_app):
    """Two runs of one plan at the same moment (two sessions): each call is inspected once and every
    agent gets exactly their quota; the run that lost a race leaves that agent to the other."""
    import threading

    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        dept = f.org_unit(session, kind="department")
        agents = [f.employee(session, f.org_unit(session, parent=dept)) for _ in range(6)]
        inspectors = [f.employee(session, dept) for _ in range(2)]
        for agent in agents:
            calls(session, agent, 8)
        card = f.make_scorecard(session, [{"kind": "manual", "points": -10}])
        plan = QaPlan(name="PG plan", scorecard=card, org_unit=dept, mode="count", amount=3, period="day",
                      inspectors=inspectors)
        session.add(plan)
        session.commit()
        plan_id, agent_ids = plan.id, [a.id for a in agents]
        session.remove()

    barrier, errors, results = threading.Barrier(2), [], []

    def run():
        try:
            with pg_app.app_context():
                barrier.wait()
                results.append(sampling.sample_plan(db.session, plan_id, NOW, sampling.PREVIOUS).created)
                db.session.remove()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with pg_app.app_context():
        rows = db.session.execute(select(QaInspection.agent_id, QaInspection.inspector_id)
                                  .where(QaInspection.plan_id == plan_id)).all()
        assert sum(results) == len(rows) == 18
        assert Counter(a for a, _i in rows) == {a: 3 for a in agent_ids}
        assert sampling.sample_plan(db.session, plan_id, NOW, sampling.PREVIOUS).created == 0
