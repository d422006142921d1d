"""Two calls never take the last slot of a capped caller-ID number: on PostgreSQL, two threads with a
connection each race for it (the counter UPSERT, then whole reservations); on SQLite the same race is
serialised by its single writer and must give the same answer."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from app.extensions import db
from app.models.calls import COUNTER_NUMBER_DAY, CallCounter, CallRecord
from app.services.calls import dialing
from app.services.calls.dialing import CallRefused
from tests import factories as f
from tests.helpers import utc, wait_for
from tests.test_ownership import AT, build_world, owned

NOW = utc(AT)  # the clock and NOW agree
WINDOW = dt.datetime(2026, 3, 1, 16, 0)  # that business day's start, in UTC
pytestmark = pytest.mark.instant(AT)


def blocked_on_a_lock(engine) -> bool:
    """Whether another transaction of this database is waiting for a row lock right now."""
    with engine.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND wait_event_type = 'Lock'")) > 0


def run_threads(*targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except Exception as exc:  # surfaced by the assertion below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_pg_the_second_upsert_waits_and_finds_no_slot(pg_app, pg_url):
    engine = create_engine(pg_url, pool_size=4)
    with Session(engine) as s:
        s.add(CallCounter(kind=COUNTER_NUMBER_DAY, key="42", window=WINDOW, count=4))
        s.commit()
    took, results = threading.Event(), {}

    def first():
        with Session(engine) as s, pg_app.app_context():
            results["first"] = dialing.take_slot(s, COUNTER_NUMBER_DAY, "42", WINDOW, 5)
            took.set()
            # hold the row until the second one is seen waiting for it
            results["second waited"] = wait_for(lambda: blocked_on_a_lock(engine), "the second to wait", 10)
            s.commit()

    def second():
        took.wait(10)
        with Session(engine) as s, pg_app.app_context():
            results["second"] = dialing.take_slot(s, COUNTER_NUMBER_DAY, "42", WINDOW, 5)
            s.commit()

    run_threads(first, second)
    # it waited for the first transaction, then re-checked the count
    assert results == {"first": 5, "second waited": True, "second": None}
    with Session(engine) as s:
        assert s.scalar(select(CallCounter.count).where(CallCounter.key == "42")) == 5
    engine.dispose()


def test_pg_a_rolled_back_slot_goes_to_the_other_caller(pg_app, pg_url):
    engine = create_engine(pg_url, pool_size=4)
    took, results = threading.Event(), {}

    def first():
        with Session(engine) as s, pg_app.app_context():
            results["first"] = dialing.take_slot(s, COUNTER_NUMBER_DAY, "43", WINDOW, 1)  # inserts the row
            took.set()
            results["second waited"] = wait_for(lambda: blocked_on_a_lock(engine), "the second to wait", 10)
            s.rollback()

    def second():
        took.wait(10)
        with Session(engine) as s, pg_app.app_context():
            results["second"] = dialing.take_slot(s, COUNTER_NUMBER_DAY, "43", WINDOW, 1)
            s.commit()

    run_threads(first, second)
    assert results == {"first": 1, "second waited": True, "second": 1}
    engine.dispose()


def race_for_the_last_slot(app, url):
    """Two salespeople on one line whose only number has one slot left click at the same moment."""
    with app.app_context():
        session = db.session
        w = build_world(session)
        line = f.make_line(session, f.make_interface(session))
        number = f.make_number(session, line, daily_cap=3)
        for name in ("a1", "a2"):
            f.make_seat(session, line, w.emp(session, name))
        opps = {name: owned(session, w, name)[0] for name in ("a1", "a2")}
        dialing.take_slot(session, COUNTER_NUMBER_DAY, number.id, dialing.day_window(session, NOW), 3)
        dialing.take_slot(session, COUNTER_NUMBER_DAY, number.id, dialing.day_window(session, NOW), 3)
        session.commit()
        emp_ids = {name: getattr(w, name) for name in opps}
        number_id = number.id
        db.session.remove()
    engine = create_engine(url)
    barrier, outcome = threading.Barrier(2), {}

    def click(name):
        def run():
            with Session(engine) as s, app.app_context():
                target = dialing.resolve_target(s, emp_ids[name], opportunity_id=opps[name])
                barrier.wait(10)
                try:
                    outcome[name] = dialing.reserve(s, emp_ids[name], target, NOW).number_id
                    s.commit()
                except CallRefused as exc:
                    s.rollback()
                    outcome[name] = exc.reason
        return run

    run_threads(click("a1"), click("a2"))
    assert sorted(map(str, outcome.values())) == sorted([str(number_id), "no_number"]), outcome
    with Session(engine) as s:
        assert s.scalar(select(CallCounter.count).where(CallCounter.kind == COUNTER_NUMBER_DAY,
                                                        CallCounter.key == str(number_id))) == 3
        assert len(s.scalars(select(CallRecord.id).where(CallRecord.number_id == number_id)).all()) == 1
    engine.dispose()


def test_pg_two_clicks_never_take_the_last_slot(pg_app, pg_url):
    race_for_the_last_slot(pg_app, pg_url)


@pytest.mark.config(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 15}})
def test_sqlite_two_clicks_never_take_the_last_slot(app):
    race_for_the_last_slot(app, app.config["SQLALCHEMY_DATABASE_URI"])
