"""Call reports at scale: the per agent / per team report over 1,000,000 call records.

    python bench/calls.py                     # SQLite (a temp file), then PostgreSQL if a URL is set
    BENCH_ROWS=100000 python bench/calls.py   # a smaller run
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/calls.py

With a PostgreSQL URL (BENCH_DATABASE_URL, else TEST_DATABASE_URL) it works in a database of its own,
`<database>_bench_calls`, dropped and re-made each run.

The data: 1,000 agents in 40 teams of 4 departments, BENCH_ROWS calls (default 1,000,000) spread evenly
over 90 days, 60 % connected with 10–600 s of talk. Measured (median of 3 runs, warm cache), for the last
7 and the last 30 business days: `by_agent` + `by_team` + `daily` (everything app/views/call_reports.py
runs for one page) as seen by an administrator (all rows), a department head (org subtree) and a team
manager (team scope), and the per-number usage report.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
DEPARTMENTS, TEAMS, AGENTS = 4, 10, 25  # per department, per team
DAYS = 90
CHUNK = 50_000


def make_app(url: str):
    from app import create_app
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    return create_app(config)


def build(session, rows: int, now: dt.datetime) -> dict:
    from sqlalchemy import insert, select

    from app.models.calls import CallLine, CallNumber, CallRecord, OutboundInterface
    from app.models.employee import Employee
    from app.models.org import OrgUnit

    rng = random.Random(7)
    company = OrgUnit(name="Company", kind="company", code="C")
    session.add(company)
    session.flush()
    teams, departments = [], []
    for d in range(DEPARTMENTS):
        dep = OrgUnit(name=f"Dept {d}", kind="department", parent_id=company.id, code=f"D{d}")
        session.add(dep)
        session.flush()
        departments.append(dep)
        for t in range(TEAMS):
            team = OrgUnit(name=f"Team {d}.{t}", kind="team", parent_id=dep.id, code=f"T{d}.{t}")
            session.add(team)
            session.flush()
            teams.append(team)
    session.execute(insert(Employee), [
        {"employee_no": f"B{team.id}-{a}", "name": f"Agent {team.id}-{a}", "org_unit_id": team.id,
         "hr_status": "active"} for team in teams for a in range(AGENTS)])
    agents = session.execute(select(Employee.id, Employee.org_unit_id).order_by(Employee.id)).all()
    interface = OutboundInterface(name="bench", provider="simulator")
    session.add(interface)
    session.flush()
    line = CallLine(name="bench line", interface_id=interface.id)
    session.add(line)
    session.flush()
    numbers = []
    for n in range(20):
        number = CallNumber(number=f"+86106288{n:04d}", line_id=line.id, daily_cap=5000)
        session.add(number)
        numbers.append(number)
    session.flush()
    start = now - dt.timedelta(days=DAYS)
    span = int((now - start).total_seconds())
    for first in range(0, rows, CHUNK):
        batch = []
        for n in range(first, min(rows, first + CHUNK)):
            emp_id, unit_id = agents[n % len(agents)]
            started = start + dt.timedelta(seconds=rng.randrange(span))
            connected = rng.random() < 0.6
            talk = rng.randint(10, 600) if connected else 0
            batch.append({
                "uid": f"{n:032x}", "interface_id": interface.id, "line_id": line.id,
                "number_id": numbers[n % len(numbers)].id, "employee_id": emp_id, "org_unit_id": unit_id,
                "callee_phone": f"+86139{n % 10**8:08d}", "status": "ended" if connected else "no_answer",
                "started_at": started,
                "answered_at": started + dt.timedelta(seconds=5) if connected else None,
                "ended_at": started + dt.timedelta(seconds=5 + talk), "duration_seconds": talk,
                "created_at": started, "updated_at": started})
        session.execute(insert(CallRecord), batch)
        session.commit()
    return {"team": teams[0], "department": departments[0], "manager": agents[0][0]}


def timed(work, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, result


def run(name: str, url: str, rows: int) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    from app import clock
    from app.extensions import db
    from app.models.security import SCOPE_ALL, SCOPE_SUBTREE, SCOPE_TEAM
    from app.security.scope import Viewer
    from app.services.calls import reports

    app = make_app(url)
    now = clock.utcnow()
    with app.app_context():
        upgrade()
        session = db.session
        t = time.perf_counter()
        built = build(session, rows, now)
        session.execute(text("ANALYZE"))
        session.commit()
        print(f"  {name:10s} built {rows:,} calls in {time.perf_counter() - t:.1f} s")
        team, dep = built["team"], built["department"]
        viewers = {
            "admin (all)": Viewer(user_id=1, scope=SCOPE_ALL),
            "department (subtree)": Viewer(user_id=2, scope=SCOPE_SUBTREE, employee_id=built["manager"],
                                           org_unit_id=dep.id, org_path=dep.path),
            "team manager (team)": Viewer(user_id=3, scope=SCOPE_TEAM, employee_id=built["manager"],
                                          org_unit_id=team.id, org_path=team.path),
        }
        for days in (7, 30):
            rng = reports.date_range(session, now, default_days=days)
            for label, viewer in viewers.items():
                def page(rng=rng, viewer=viewer):
                    teams = reports.by_team(session, rng, viewer)
                    agents = reports.by_agent(session, rng, viewer)
                    reports.daily(session, rng, viewer)
                    return reports.totals(teams).calls, len(agents)
                ms, (calls, agents) = timed(page)
                print(f"  {name:10s} last {days:>2} days, {label:22s}: {ms:8.1f} ms "
                      f"({calls:,} calls, {agents:,} agents)")
        ms, numbers = timed(lambda: reports.by_number(session, now, viewers["team manager (team)"]))
        print(f"  {name:10s} per-number usage today ({len(numbers)} numbers, team scope): {ms:.1f} ms")
        session.remove()
        db.engine.dispose()


def main() -> None:
    from bench.common import fresh_pg_database, postgresql_url

    print(f"Call reports over {ROWS:,} call records ({DEPARTMENTS * TEAMS * AGENTS:,} agents, {DAYS} days)")
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/calls.db", ROWS)
        pg = postgresql_url()
        if pg:
            run("PostgreSQL", fresh_pg_database(pg, "bench_calls"), ROWS)


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    main()
