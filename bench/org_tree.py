"""Org tree at scale: subtree queries and a subtree move over 10,000 units and 20,000 employees.

    python bench/org_tree.py                  # SQLite (a temp file)
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/org_tree.py

With a PostgreSQL URL it works in a database of its own, `<database>_bench`, dropped and re-made each run.

Prints, for each database: time to list a subtree's unit ids, to count the employees an org-subtree
viewer may see (the data-scope query every list runs), and to move a 1,000-unit subtree.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import String, cast, func, insert, literal, select, update  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Employee, OrgUnit  # noqa: E402
from app.security.scope import Viewer, restrict, subtree_unit_ids  # noqa: E402
from bench.common import fresh_pg_database, postgresql_url  # noqa: E402
from config import TestConfig  # noqa: E402

DIVISIONS, DEPARTMENTS, TEAMS = 10, 10, 100  # 1 + 10 + 100 + 10,000 units
EMPLOYEES_PER_TEAM = 2


def _timed(fn, repeat=20):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def build(session) -> dict:
    company = OrgUnit(name="Company", kind="company", code="C")
    session.add(company)
    session.flush()
    ids = {"division": []}
    for d in range(DIVISIONS):
        div = OrgUnit(name=f"Division {d}", kind="division", parent_id=company.id)
        session.add(div)
        session.flush()
        ids["division"].append(div.id)
        for p in range(DEPARTMENTS):
            dep = OrgUnit(name=f"Dept {d}.{p}", kind="department", parent_id=div.id)
            session.add(dep)
            session.flush()
            # Teams in bulk, their paths set in one statement (what the mapper event does row by row).
            session.execute(insert(OrgUnit), [
                {"name": f"Team {d}.{p}.{t}", "kind": "team", "parent_id": dep.id, "path": "",
                 "depth": 3, "sort": 0}
                for t in range(TEAMS)
            ])
            session.execute(
                update(OrgUnit).where(OrgUnit.parent_id == dep.id)
                .values(path=literal(dep.path, String).concat(cast(OrgUnit.id, String)).concat("/"))
            )
            teams = session.scalars(select(OrgUnit.id).where(OrgUnit.parent_id == dep.id)).all()
            session.execute(insert(Employee), [
                {"employee_no": f"B{team}-{e}", "name": "x", "org_unit_id": team, "hr_status": "active"}
                for team in teams for e in range(EMPLOYEES_PER_TEAM)
            ])
    session.commit()
    return ids


def run(url: str) -> None:
    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    app = create_app(config)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        start = time.perf_counter()
        ids = build(db.session)
        units = db.session.scalar(select(func.count(OrgUnit.id)))
        employees = db.session.scalar(select(func.count(Employee.id)))
        print(f"  built {units:,} units and {employees:,} employees in {time.perf_counter() - start:.1f} s")
        division = db.session.get(OrgUnit, ids["division"][3])
        ms, sub = _timed(lambda: db.session.scalars(subtree_unit_ids(division.path)).all())
        print(f"  subtree unit ids of a division ({len(sub):,} units): {ms:.2f} ms")
        viewer = Viewer(user_id=1, scope="org_subtree", employee_id=1, org_unit_id=division.id,
                        org_path=division.path)
        query = restrict(select(func.count(Employee.id)), Employee, viewer)
        ms, seen = _timed(lambda: db.session.scalar(query))
        print(f"  org-subtree viewer: count of visible employees ({seen:,}): {ms:.2f} ms")
        page = restrict(select(Employee).order_by(Employee.employee_no).limit(25), Employee, viewer)
        ms, _ = _timed(lambda: db.session.scalars(page).all())
        print(f"  org-subtree viewer: first list page of 25: {ms:.2f} ms")
        target = db.session.get(OrgUnit, ids["division"][7])
        start = time.perf_counter()
        division.parent_id = target.id
        db.session.commit()
        move_ms = (time.perf_counter() - start) * 1000
        moved = db.session.scalar(select(func.count(OrgUnit.id)).where(OrgUnit.path.like(f"{target.path}%")))
        print(f"  move a {len(sub):,}-unit subtree under another division: {move_ms:.1f} ms "
              f"(now {moved:,} units under it)")
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        run(f"sqlite:///{tmp}/bench.db")
    pg = postgresql_url()
    if pg:
        print("PostgreSQL")
        run(fresh_pg_database(pg, "bench_org"))
    else:
        print("PostgreSQL: skipped (set BENCH_DATABASE_URL)")


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    main()
