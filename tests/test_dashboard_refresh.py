"""The dashboard's aggregates refresh: incremental (only the days that changed are rebuilt), correct when
rows change, back-dated rows included, idempotent, the same as a full rebuild, one at a time, and the
same on PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from app.clock import utcnow
from app.jobs.dashboard import LOCK_KEY, refresh_dashboard_job
from app.models.dashboard import DashActivityDay, DashCohortDay, DashFirstContactDay, DashIdleSnapshot
from app.models.sales import WON
from app.models.security import SCOPE_ALL
from app.security.scope import Viewer
from app.services import dashboard, dashboard_refresh
from tests import factories as f
from tests.test_dashboard import local, world

ALL = Viewer(user_id=1, scope=SCOPE_ALL, permissions=frozenset({("*", "*")}))


def _totals(session, unit_id):
    period = dashboard.Filters(dt.date(2026, 1, 1), dt.date(2026, 6, 17), org_unit_id=unit_id)
    data = dashboard.summary(session, ALL, period, utcnow())
    return data["speed_to_lead"], data["ranking"]


def _row_ids(session, day):
    return set(session.scalars(select(DashCohortDay.id).where(DashCohortDay.day == day)))


def test_a_change_rebuilds_only_its_days_and_the_figures_follow(app, session):
    w = world(app, session)
    stl, _ = _totals(session, w.dept.id)
    assert (stl["leads"], stl["contacted"], stl["won"]) == (6, 4, 3)
    untouched = _row_ids(session, dt.date(2026, 6, 10))
    assert untouched

    # Nothing changed: nothing rebuilt.
    quiet = dashboard_refresh.refresh(session, utcnow())
    assert quiet["cohort_days"] == [] and quiet["activity_days"] == []

    # The never-contacted opportunity of 12 June gets a follow-up now, and is won.
    opp = w.opps[2]
    f.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=w.sp2.id)
    opp.status = WON
    session.commit()
    result = dashboard_refresh.refresh(session, utcnow())
    assert result["cohort_days"] == ["2026-06-12"]
    assert result["activity_days"] == ["2026-06-17"]
    assert _row_ids(session, dt.date(2026, 6, 10)) == untouched  # not rebuilt
    stl, ranking = _totals(session, w.dept.id)
    assert (stl["leads"], stl["contacted"], stl["won"]) == (6, 5, 4)
    two = next(p for p in ranking["people"] if p["id"] == w.sp2.id)
    assert (two["contacts"], two["follow_ups"], two["won"]) == (1, 1, 1)
    # Five days after coming in: past 24 h, in the 4320-minute (3-day) bucket.
    bucket = session.scalar(select(DashFirstContactDay.bucket).where(
        DashFirstContactDay.day == dt.date(2026, 6, 12), DashFirstContactDay.owner_id == w.sp2.id))
    assert bucket == 4320


def test_back_dated_rows_and_a_new_owner_are_picked_up(app, session):
    w = world(app, session)
    # An imported follow-up that carries an old time (inserted now, dated 11 June).
    f.FOLLOW_UP.create(session, opportunity_id=w.opps[1].id, employee_id=w.sp1.id,
                       created_at=local("2026-06-11", 15))
    # The 12 June opportunity of seller 2 is transferred to seller 1.
    w.opps[2].owner_id = w.sp1.id
    session.commit()
    result = dashboard_refresh.refresh(session, utcnow())
    assert result["cohort_days"] == ["2026-06-11", "2026-06-12"]
    assert "2026-06-11" in result["activity_days"]
    _, ranking = _totals(session, w.dept.id)
    one = next(p for p in ranking["people"] if p["id"] == w.sp1.id)
    assert (one["leads"], one["follow_ups"]) == (4, 7)  # 3 + the transferred one; 6 + the imported one
    assert all(p["id"] != w.sp2.id or p["leads"] == 0 for p in ranking["people"])


def test_refresh_is_idempotent_and_equals_a_full_rebuild(app, session):
    w = world(app, session)
    f.FOLLOW_UP.create(session, opportunity_id=w.opps[2].id, employee_id=w.sp2.id)
    dashboard_refresh.refresh(session, utcnow())
    incremental = _totals(session, w.dept.id)
    dashboard_refresh.refresh(session, utcnow())
    assert _totals(session, w.dept.id) == incremental
    dashboard_refresh.refresh(session, utcnow(), full=True)
    assert _totals(session, w.dept.id) == incremental
    assert session.scalar(select(func.sum(DashCohortDay.leads)))
    assert session.scalar(select(func.sum(DashActivityDay.follow_ups)))


def test_the_idle_snapshot_counts_owned_opportunities_by_idle_age(app, session):
    w = world(app, session)
    rows = dict(session.execute(select(DashIdleSnapshot.bucket, func.sum(DashIdleSnapshot.n))
                                .where(DashIdleSnapshot.org_unit_id == w.team_a.id)
                                .group_by(DashIdleSnapshot.bucket)).all())
    # Team A owns one open opportunity (12 June: five days idle → the 3-day bucket) and one of 11 June
    # (six days → also 3).
    assert rows == {3: 2}


def test_the_job_refreshes_once_at_a_time(app, session):
    from app.extensions import rq

    world(app, session)
    lock = rq.redis.lock(LOCK_KEY, timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert refresh_dashboard_job() is None  # another refresh holds the lock
    finally:
        lock.release()
    result = refresh_dashboard_job()
    assert result is not None and result["as_of"].startswith("2026-06-17T02:00")


def test_the_refresh_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        w = world(pg_app, session)
        stl, ranking = _totals(session, w.dept.id)
        assert (stl["leads"], stl["contacted"], stl["contacted_24h"], stl["won"]) == (6, 4, 3, 3)
        assert {p["id"] for p in ranking["people"]} == {w.sp1.id, w.sp2.id, w.sp3.id}
        f.FOLLOW_UP.create(session, opportunity_id=w.opps[2].id, employee_id=w.sp2.id)
        result = dashboard_refresh.refresh(session, utcnow())
        assert result["cohort_days"] == ["2026-06-12"]
        assert _totals(session, w.dept.id)[0]["contacted"] == 5
        db.session.remove()
