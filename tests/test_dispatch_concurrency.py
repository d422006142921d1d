"""The dispatch engine under concurrency, on PostgreSQL: real RQ workers in separate processes, each with
its own engine, on the private Redis; one of them killed with SIGKILL in the middle of a batch.

Skipped (with the reason) when TEST_DATABASE_URL is not set.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from collections import Counter

from redis import Redis
from rq import Queue, Worker
from sqlalchemy import func, select, text, update

from app.clock import utcnow
from app.extensions import db
from app.jobs.dispatch import dispatch_waiting_job
from app.models.employee import Employee
from app.models.sales import (
    DISPATCH,
    LEAST_LOADED,
    OWNED,
    POOLED,
    ROUND_ROBIN,
    TO_POOL,
    WAITING,
    WEIGHTED,
    AssignmentLog,
    CirculationRule,
    DispatchRule,
    Opportunity,
    OwnerCooling,
    SalesProfile,
)
from tests import helpers
from tests.test_dispatch import make_rule, make_waiting, people, team
from tests.workers import start_worker as start_rq_worker
from tests.workers import stop

TIMEOUT = 120


def wait_for(condition, what: str, timeout: float = TIMEOUT, every: float = 0.01):
    return helpers.wait_for(condition, what, timeout, every)


def start_worker(app, name: str, burst: bool = False):
    """One RQ SimpleWorker process, its engine named `name` (to be found in pg_stat_activity)."""
    options = {"pool_pre_ping": True, "connect_args": {"application_name": name}}
    return start_rq_worker(app, name, settings={"SQLALCHEMY_ENGINE_OPTIONS": options}, simple=True,
                           burst=burst)




def quiet(session) -> None:
    session.execute(update(DispatchRule).values(enabled=False))
    session.execute(update(Opportunity).where(Opportunity.status == WAITING).values(status="lost"))
    session.commit()


def check_placed_once(session, ids) -> dict:
    """Every opportunity of `ids` placed exactly once, its one log agreeing with it; returns their owners."""
    opps = {o.id: o for o in session.scalars(select(Opportunity).where(Opportunity.id.in_(ids)))}
    placed = Counter(session.scalars(select(AssignmentLog.opportunity_id).where(
        AssignmentLog.opportunity_id.in_(ids), AssignmentLog.reason.in_((DISPATCH, TO_POOL)))).all())
    assert all(o.status in (OWNED, POOLED) for o in opps.values())
    assert set(placed.values()) == {1} and set(placed) == set(ids)  # no double dispatch, none lost
    for log in session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id.in_(ids))):
        opp = opps[log.opportunity_id]
        if opp.status == OWNED:
            assert (log.reason, log.to_owner_id, opp.pool_id) == (DISPATCH, opp.owner_id, None)
        else:
            assert (log.reason, log.to_pool_id, opp.owner_id) == (TO_POOL, opp.pool_id, None)
    return {o.id: o.owner_id for o in opps.values()}


def check_counters(session, employee_ids) -> Counter:
    """open_count is exactly what each one owns; returns those counts."""
    owned = Counter(session.scalars(select(Opportunity.owner_id).where(
        Opportunity.status == OWNED, Opportunity.owner_id.in_(employee_ids))).all())
    counters = dict(session.execute(select(SalesProfile.employee_id, SalesProfile.open_count)
                                    .where(SalesProfile.employee_id.in_(employee_ids))).all())
    assert counters == {e: owned.get(e, 0) for e in employee_ids}
    return owned


def test_two_worker_processes_place_each_opportunity_once_within_capacity_and_quota(pg_app):
    with pg_app.app_context():
        session = db.session
        quiet(session)
        now = utcnow()
        dept = team(session, kind="department")
        t_rr, t_w, t_ll = (team(session, parent=dept) for _ in range(3))
        session.add_all([CirculationRule(name="w capacity", org_unit_id=t_w.id, capacity=100,
                                         capacity_by_level=json.dumps({"P1": 70})),
                         CirculationRule(name="ll capacity", org_unit_id=t_ll.id, capacity=150)])
        session.commit()
        rr = people(session, t_rr, 8, capacity=110)
        w = people(session, t_w, 4, level="P1", weight=150) + people(session, t_w, 4, level="P2")
        ll = people(session, t_ll, 8, daily_quota=90)
        capacity = {**{e: 110 for e in rr}, **{e: 70 for e in w[:4]}, **{e: 100 for e in w[4:]},
                    **{e: 150 for e in ll}}
        quota = {e: 90 for e in ll}
        make_rule(session, t_rr, ROUND_ROBIN, "C-RR")
        make_rule(session, t_w, WEIGHTED, "C-W")
        make_rule(session, t_ll, LEAST_LOADED, "C-LL")
        make_rule(session, dept, WEIGHTED, "C-ALL")  # reaches everyone above: counters shared across rules
        ids = (make_waiting(session, 1000, "C-RR1") + make_waiting(session, 900, "C-W1")
               + make_waiting(session, 900, "C-LL1") + make_waiting(session, 600, "C-ALL1"))
        cooled = ids[:300]
        session.add_all([OwnerCooling(opportunity_id=o, employee_id=e, until=now + dt.timedelta(days=3))
                         for o in cooled for e in rr[:2]])
        session.commit()
        session.remove()

    redis = Redis.from_url(pg_app.config["REDIS_URL"])
    queue = Queue("default", connection=redis)
    workers = [start_worker(pg_app, f"dispatch-{n}") for n in range(2)]
    try:
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, "two RQ workers")
        jobs = [queue.enqueue(dispatch_waiting_job, batch_size=100) for _ in range(2)]
        wait_for(lambda: all(j.get_status(refresh=True) in ("finished", "failed") for j in jobs), "the jobs",
                 every=0.1)
    finally:
        stop(workers)
    assert [j.get_status() for j in jobs] == ["finished", "finished"], jobs[0].latest_result().exc_string
    results = [j.return_value() for j in jobs]
    # Both processes dispatched, at the same time.
    assert all(r["taken"] > 0 for r in results) and sum(r["taken"] for r in results) == len(ids)
    first, second = jobs
    first.refresh()
    second.refresh()
    assert first.started_at < second.ended_at and second.started_at < first.ended_at

    with pg_app.app_context():
        session = db.session
        everyone = rr + w + ll
        owner_of = check_placed_once(session, ids)
        owned = check_counters(session, everyone)
        assert all(owned[e] <= capacity[e] for e in everyone), owned
        dispatched = dict(session.execute(select(SalesProfile.employee_id, SalesProfile.dispatched_today)
                                          .where(SalesProfile.employee_id.in_(everyone))).all())
        assert all(dispatched[e] == owned[e] for e in everyone)
        assert all(dispatched[e] <= quota[e] for e in ll)
        # The limits were tight enough to bind: people filled up, and leads overflowed to pools for it.
        assert any(owned[e] == capacity[e] for e in rr + w) and any(dispatched[e] == quota[e] for e in ll)
        assert sum(1 for o in ids if owner_of[o] is None) > 0
        assert not any(owner_of[o] in rr[:2] for o in cooled)
        session.remove()


def test_a_worker_killed_mid_batch_leaves_nothing_half_done_and_a_rerun_finishes_exactly_once(pg_app):
    with pg_app.app_context():
        session = db.session
        quiet(session)
        unit = team(session)
        members = people(session, unit, 3)
        make_rule(session, unit, ROUND_ROBIN, "K-")
        ids = make_waiting(session, 4000, "K-1")
        session.remove()
        engine = db.engine

        def placed():
            with engine.connect() as conn:
                return conn.scalar(select(func.count(Opportunity.id)).where(
                    Opportunity.id.in_(ids), Opportunity.status != WAITING))

        def blocked_statement():
            with engine.connect() as conn:
                return conn.scalar(text(
                    "SELECT query FROM pg_stat_activity WHERE application_name = 'dispatch-kill' "
                    "AND wait_event_type = 'Lock'"))

        def backend_gone():
            with engine.connect() as conn:
                return not conn.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dispatch-kill'"))

        queue = Queue("default", connection=Redis.from_url(pg_app.config["REDIS_URL"]))
        victim = start_worker(pg_app, "dispatch-kill")
        locker = engine.connect()
        try:
            queue.enqueue(dispatch_waiting_job, batch_size=100)
            wait_for(lambda: placed() > 0, "a first batch committed")
            # Hold one salesperson's row: the worker's next batch stops inside its UPDATE of the
            # opportunities (the owner foreign-key check waits for the row), mid-write.
            locker.begin()
            locker.execute(select(Employee.id).where(Employee.id == members[0]).with_for_update())
            statement = wait_for(blocked_statement, "the worker to block mid-batch")
            assert statement.startswith("UPDATE opportunity")
            before = placed()
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
        finally:
            locker.rollback()
            locker.close()
            stop([victim])
        wait_for(backend_gone, "PostgreSQL to end the dead worker's session")

        session = db.session
        assert 0 < placed() == before < len(ids)  # the killed batch left nothing behind
        assert session.scalar(select(func.count(AssignmentLog.id)).where(
            AssignmentLog.opportunity_id.in_(ids))) == before
        check_counters(session, members)
        session.remove()

        queue.enqueue(dispatch_waiting_job, batch_size=100)
        rerun = start_worker(pg_app, "dispatch-rerun", burst=True)
        try:
            assert rerun.wait(timeout=TIMEOUT) == 0
        finally:
            stop([rerun])
        session = db.session
        owner_of = check_placed_once(session, ids)
        owned = check_counters(session, members)
        assert set(owner_of.values()) == set(members) and sum(owned.values()) == len(ids)
        assert max(owned.values()) - min(owned.values()) <= 1  # round robin held across the kill
        session.remove()
