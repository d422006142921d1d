"""Circulation scan over 1,000,000 owned opportunities (10 % of them due for recycling).

    python bench/circulation.py            # SQLite, and PostgreSQL when BENCH_DATABASE_URL is set

Builds the rows set-wise (INSERT … SELECT over a number series), then times one `scan()`: finding the
due opportunities through the (status, idle_since) index and recycling them in chunks, each with its
AssignmentLog row, ex-owner cooling and counters. Target: under 10 s.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import func, select, text  # noqa: E402

from app import create_app  # noqa: E402
from app.clock import utcnow  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Employee, Opportunity, SalesProfile  # noqa: E402
from app.services import audit  # noqa: E402
from app.services.circulation import scan  # noqa: E402
from app.services.roles import sync_roles  # noqa: E402
from app.services.seed import seed_demo  # noqa: E402
from bench.common import fresh_pg_database, postgresql_url  # noqa: E402
from config import TestConfig  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", 1_000_000))
DUE_EVERY = 10  # one opportunity in ten is idle past the rule's limit


def _series(dialect: str, n: int) -> str:
    if dialect == "postgresql":
        return f"SELECT generate_series(1, {n}) AS x"
    return f"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n}) SELECT x FROM s"


def build(session) -> None:
    dialect = session.get_bind().dialect.name
    owners = session.execute(select(Employee.id, Employee.org_unit_id)
                             .join(SalesProfile, SalesProfile.employee_id == Employee.id)
                             .order_by(Employee.id)).all()
    line = session.scalar(select(Opportunity.product_line_id).limit(1))
    session.execute(text("DELETE FROM lead"))
    session.execute(text("DELETE FROM assignment_log"))
    session.execute(text("DELETE FROM opportunity"))
    session.execute(text(
        "INSERT INTO customer (phone, name, marketing_consent, created_at, updated_at) "
        f"SELECT '+8615' || (100000000 + x), 'bench', true, :now, :now FROM ({_series(dialect, ROWS)}) AS q"),
        {"now": utcnow()})
    first_customer = session.scalar(select(func.min(text("id"))).select_from(text("customer"))
                                    .where(text("name = 'bench'")))
    cases = " ".join(f"WHEN {i} THEN {emp}" for i, (emp, _) in enumerate(owners))
    unit_cases = " ".join(f"WHEN {i} THEN {unit}" for i, (_, unit) in enumerate(owners))
    now = utcnow()
    session.execute(text(
        "INSERT INTO opportunity (customer_id, product_line_id, status, owner_id, org_unit_id, is_recycled, "
        "recycle_count, locked, assigned_at, idle_since, created_at, updated_at) "
        f"SELECT {first_customer} + x - 1, {line}, 'owned', CASE x % {len(owners)} {cases} END, "
        f"CASE x % {len(owners)} {unit_cases} END, false, 0, false, :now, "
        f"CASE WHEN x % {DUE_EVERY} = 0 THEN :old ELSE :now END, :now, :now "
        f"FROM ({_series(dialect, ROWS)}) AS q"),
        {"now": now, "old": now.replace(year=now.year - 1)})
    session.execute(text(
        "UPDATE sales_profile SET open_count = (SELECT count(*) FROM opportunity "
        "WHERE opportunity.owner_id = sales_profile.employee_id AND status = 'owned')"))
    session.commit()
    if dialect == "postgresql":
        session.execute(text("ANALYZE"))
        session.commit()


def run(url: str) -> None:
    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    app = create_app(config)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        with audit.acting_as(None, "bench"):
            sync_roles(app.appbuilder)
            seed_demo(db.session, app.appbuilder)
        start = time.perf_counter()
        build(db.session)
        print(f"  built {ROWS:,} owned opportunities in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        result = scan(db.session)
        elapsed = time.perf_counter() - start
        waiting = db.session.scalar(select(func.count()).where(Opportunity.status == "waiting"))
        print(f"  scan: {result.recycled:,} recycled of {ROWS:,} in {elapsed:.2f} s "
              f"({ROWS / elapsed:,.0f} opportunities scanned/s); now waiting: {waiting:,}")
        start = time.perf_counter()
        again = scan(db.session)
        took = time.perf_counter() - start
        print(f"  second scan (nothing due): {again.recycled} recycled in {took:.2f} s")
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        run(f"sqlite:///{tmp}/bench.db")
    pg = postgresql_url()
    if pg:
        print("PostgreSQL")
        run(fresh_pg_database(pg, "bench_circulation"))
    else:
        print("PostgreSQL: skipped (set BENCH_DATABASE_URL)")


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    main()
