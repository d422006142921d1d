"""A big sales floor on PostgreSQL, made server-side (INSERT … SELECT over generate_series), for the page
benchmarks (bench/pages.py):

    python bench/bigdata.py postgresql://postgres@127.0.0.1:5432/h_bench_pages_1m 1000000

On a migrated database it first loads what `make run` loads (roles, reference data, the demo organisation
and logins), then adds, relative to the fixed instant of bench/common.py:
  - salespeople: the demo's 30, plus teams of 25 under the three sales departments up to one per 2,000
    opportunities (500 at 1,000,000);
  - ROWS customers and opportunities (one lead each) over 90 days, more of them lately: 4.4 % won, 48 %
    lost, 38 % recycled into their product line's pool, 10 % owned (stages new … negotiating);
  - 5 follow-ups and 2 calls (60 % connected, with talk time) per opportunity, a dispatch log row each
    and a recycle row per pooled one, QA inspections of 2 % of the connected calls, and half a
    message per opportunity from SMS campaigns every week (delivered, failed, opted out);
then ANALYZE, and the dashboard's daily aggregates are refreshed (refresh_aggregates).
Foreign-key triggers are off while loading (session_replication_role = replica): the ids come from rows
just written.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sqlalchemy import text  # noqa: E402

PER_SALESPERSON = 2000
TEAM_SIZE = 25
MARKER = "bench-bigdata"  # lead client key prefix; "bench-bigdata:<rows>" on the first lead


def say(message: str) -> None:
    print(f"[bigdata] {message}", file=sys.stderr, flush=True)


def make_app(url: str):
    from app import create_app
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    return create_app(config)


def is_built(session, rows: int) -> bool:
    found = session.execute(text("SELECT 1 FROM lead WHERE client_key = :k"), {"k": f"{MARKER}:{rows}"})
    return found.first() is not None


def _ids(session, table: str) -> int:
    return session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar()


def _timed(session, label: str, sql: str, **params) -> None:
    t = time.perf_counter()
    result = session.execute(text(sql), params)
    session.commit()
    say(f"{label}: {result.rowcount:,} rows in {time.perf_counter() - t:.1f} s")


def _salespeople(session, rows: int) -> tuple[list[int], list[int]]:
    """The salespeople (ids, their team ids): the demo's, plus extra teams up to one per PER_SALESPERSON."""
    wanted = max(0, rows // PER_SALESPERSON - 30)
    departments = session.execute(text("SELECT id, path, depth FROM org_unit WHERE code IN "
                                       "('D-K12', 'D-ADULT', 'D-CODE') ORDER BY id")).all()
    level = session.execute(text("SELECT i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id "
                                 "WHERE t.code = 'employee_level' AND i.code = 'P2'")).scalar()
    for team in range((wanted + TEAM_SIZE - 1) // TEAM_SIZE):
        dep_id, path, depth = departments[team % len(departments)]
        unit = session.execute(text(
            "INSERT INTO org_unit (name, code, kind, parent_id, path, depth, sort, created_at, updated_at) "
            "VALUES (:name, :code, 'team', :parent, '', :depth, 0, now(), now()) RETURNING id"),
            {"name": f"压测{team + 1:02d}组", "code": f"T-BENCH-{team + 1:02d}", "parent": dep_id,
             "depth": depth + 1}).scalar()
        session.execute(text("UPDATE org_unit SET path = :path WHERE id = :id"),
                        {"path": f"{path}{unit}/", "id": unit})
        session.execute(text(
            "INSERT INTO employee (employee_no, name, org_unit_id, position, level_id, hr_status, "
            "created_at, updated_at) SELECT 'B' || :team || '-' || g, '压测销售' || :team || '-' || g, "
            ":unit, "
            "'Salesperson', :level, 'active', now(), now() FROM generate_series(1, :n) g"),
            {"team": team + 1, "unit": unit, "level": level, "n": TEAM_SIZE})
    session.execute(text(
        "INSERT INTO sales_profile (employee_id, paused, weight, daily_quota, open_count, won_count, "
        "dispatched_today) SELECT e.id, false, 100, 200, 0, 0, 0 FROM employee e JOIN org_unit u "
        "ON u.id = e.org_unit_id WHERE u.code LIKE 'T-BENCH-%' ON CONFLICT DO NOTHING"))
    session.commit()
    people = session.execute(text("SELECT p.employee_id, e.org_unit_id FROM sales_profile p "
                                  "JOIN employee e ON e.id = p.employee_id ORDER BY p.employee_id")).all()
    return [p for p, _ in people], [u for _, u in people]


def build(session, rows: int, now: dt.datetime) -> None:
    """`session`: one Connection, kept for the whole build."""
    from bench.bigdata_sql import statements

    t0 = time.perf_counter()
    people, units = _salespeople(session, rows)
    say(f"{len(people)} salespeople")
    item = {f"{t}.{c}": i for t, c, i in session.execute(text(
        "SELECT t.code, i.code, i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id"))}
    ids = {t: _ids(session, t) for t in ("customer", "opportunity", "lead", "follow_up", "call_record",
                                          "assignment_log", "sms_message", "qa_inspection", "sms_campaign")}
    refs = dict(session.execute(text(
        "SELECT 'pool_' || coalesce((SELECT code FROM dict_item WHERE id = product_line_id), 'none'), id "
        "FROM sales_pool")).all())
    pool_units = dict(session.execute(text("SELECT id, org_unit_id FROM sales_pool")).all())
    line = session.execute(text("SELECT id, interface_id FROM call_line ORDER BY id LIMIT 1")).one()
    numbers = list(session.scalars(text(f"SELECT id FROM call_number WHERE line_id = {line.id}")))
    refs.update(line=line.id, interface=line.interface_id,
                scorecard=session.execute(text("SELECT min(id) FROM qa_scorecard")).scalar(),
                inspector=session.execute(text("SELECT min(e.id) FROM employee e JOIN org_unit u ON "
                                               "u.id = e.org_unit_id WHERE u.code = 'T-QA'")).scalar(),
                channel=session.execute(text("SELECT min(id) FROM sms_channel")).scalar(),
                template=session.execute(text("SELECT min(id) FROM sms_template")).scalar())
    params = {"rows": rows, "now": now, "people": people, "units": units, "numbers": numbers,
              "pool_units": [pool_units[refs[f"pool_{c}"]] for c in ("k12_math", "k12_math", "adult_english",
                                                                     "programming")],
              **{f"base_{k}": v for k, v in ids.items()}}
    session.execute(text("SET session_replication_role = replica"))
    session.execute(text("SELECT setseed(0.42)"))
    for label, sql in statements(item, refs):
        _timed(session, label, sql, **params)
    session.execute(text("SET session_replication_role = DEFAULT"))
    for table in ids:
        session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"(SELECT coalesce(max(id), 1) FROM {table}))"))
    session.execute(text(
        "UPDATE sales_profile p SET open_count = coalesce(c.n, 0) FROM sales_profile q LEFT JOIN "
        "(SELECT owner_id, count(*) n FROM opportunity WHERE status = 'owned' GROUP BY owner_id) c "
        "ON c.owner_id = q.employee_id WHERE p.employee_id = q.employee_id"))
    session.execute(text("UPDATE lead SET client_key = :k WHERE id = :id"),
                    {"k": f"{MARKER}:{rows}", "id": ids["lead"] + 1})
    session.commit()
    t = time.perf_counter()
    session.execute(text("ANALYZE"))
    session.commit()
    say(f"ANALYZE in {time.perf_counter() - t:.1f} s; built in {time.perf_counter() - t0:.1f} s")


def refresh_aggregates(app) -> str:
    """Bring the dashboard's daily aggregate tables up to date, as its scheduled job does
    (app.services.dashboard_refresh.refresh: every day the first time, then what changed); says what
    it did."""
    try:
        from app.services import dashboard_refresh
    except ImportError:
        return "none (no dashboard aggregates in this version)"
    from app import clock
    from app.extensions import db

    t = time.perf_counter()
    with app.app_context():
        done = dashboard_refresh.refresh(db.session, clock.utcnow())
        db.session.remove()
    days = sum(len(v) for k, v in done.items() if k.endswith("_days"))
    return f"dashboard_refresh.refresh: {days} day aggregates in {time.perf_counter() - t:.1f} s"


def prepare(url: str, rows: int) -> None:
    """Migrate, load the reference and demo data (skipped when already there), add the big data once,
    refresh the aggregates."""
    from flask_migrate import upgrade

    from app.extensions import db
    from app.services import audit
    from app.services.reference import sync_reference
    from app.services.roles import sync_roles
    from app.services.seed import seed_demo

    app = make_app(url)
    with app.app_context():
        upgrade()
        with audit.acting_as(None, "bench"):
            sync_roles(app.appbuilder)
            sync_reference(db.session)
            db.session.commit()
            if not is_built(db.session, rows):
                if db.session.execute(text("SELECT count(*) FROM opportunity")).scalar():
                    raise SystemExit(f"{url} holds other data: drop it, or run without --keep-db")
                seed_demo(db.session, app.appbuilder)
                from app import clock

                with db.engine.connect() as conn:  # one connection: the plan is a temporary table
                    build(conn, rows, clock.utcnow())
        db.session.remove()
    say(f"aggregates: {refresh_aggregates(app)}")
    with app.app_context():
        db.engine.dispose()


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    prepare(sys.argv[1], int(sys.argv[2]))
