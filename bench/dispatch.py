"""Dispatch engine at scale: 100,000 waiting leads, 500 salespeople in 20 teams, every strategy in force.

    python bench/dispatch.py                  # SQLite (a temp file), then PostgreSQL if a URL is set
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/dispatch.py
    python bench/dispatch.py --leads 20000    # a smaller run
    python bench/dispatch.py --score-aware    # the english rule score-aware: scored leads, a closed history

With a PostgreSQL URL (BENCH_DATABASE_URL, else TEST_DATABASE_URL) it works in a database of its own,
`<database>_bench_dispatch`, dropped and re-made each run.

The data: 100,000 customers each with one waiting opportunity (inserted set-wise), 500 salespeople in
20 teams of 4 departments (SalesProfile rows with weights and a few daily quotas), a circulation rule
with capacity per level that binds for some, OwnerCooling rows for 10 % of the opportunities (recycled
ones, their ex-owner still cooling), and dispatch rules of all three strategies plus "to pool". With
--score-aware the english rule is score-aware instead of weighted, 80 % of the leads carry a win
probability, and each of its 125 salespeople has a closed history of 40 opportunities (20 in the last
90 days, read by the one aggregate query per batch, and 20 older).

Measured, per database:
  raw ceiling   one set-based UPDATE of the same 100,000 rows to owned (rolled back)
  end to end    enqueue the dispatch job(s) → every opportunity placed and committed, through real RQ
                workers (separate processes) on an embedded Redis: 1 worker on SQLite, 2 on PostgreSQL
and then checks the outcome (every lead placed exactly once, counters equal to what is owned, no
capacity or quota exceeded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sqlalchemy import func, insert, select, text, update  # noqa: E402

from app import create_app  # noqa: E402
from app.clock import utcnow  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models.employee import Employee  # noqa: E402
from app.models.metadata import ConfigItem, DictItem, DictType  # noqa: E402
from app.models.org import OrgUnit  # noqa: E402
from app.models.sales import (  # noqa: E402
    DISPATCH,
    LEAST_LOADED,
    LOST,
    OWNED,
    POOL_STRATEGY,
    POOLED,
    ROUND_ROBIN,
    SCORE_AWARE,
    TO_POOL,
    WAITING,
    WEIGHTED,
    WON,
    AssignmentLog,
    CirculationRule,
    Customer,
    DispatchRule,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from bench.common import fresh_pg_database, postgresql_url  # noqa: E402
from config import TestConfig  # noqa: E402
from tests.workers import stop  # noqa: E402  (SIGTERM, then SIGKILL after 30 s)

LEADS = 100_000
DEPARTMENTS, TEAMS_PER_DEPARTMENT, PEOPLE_PER_TEAM = 4, 5, 25  # 20 teams, 500 salespeople
CAPACITY = {"P1": 200, "P2": 280}  # P3 gets the rule's plain capacity
CAPACITY_DEFAULT = 320
COOLING_SHARE = 10  # every 10th opportunity is a recycled one whose ex-owner is cooling
CHUNK = 10_000
FALLBACK_POOL = "销售总公海"


def make_app(url: str, redis_url: str):
    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url})
    return create_app(config)


# --- the data ---------------------------------------------------------------------------------------
def _items(session, type_code: str) -> dict[str, int]:
    return dict(session.execute(select(DictItem.code, DictItem.id).join(DictItem.dict_type)
                                .where(DictType.code == type_code)).all())


def build(session, leads: int, rng: random.Random, score_aware: bool = False) -> dict:
    """Dictionaries, org, salespeople, pools, rules, then `leads` waiting opportunities (set-wise)."""
    from app.services.seed import CONFIG, DICTIONARIES

    for (code, zh, en), items in DICTIONARIES.items():
        dtype = DictType(code=code, name_zh=zh, name_en=en)
        session.add(dtype)
        session.flush()
        session.execute(insert(DictItem), [
            {"dict_type_id": dtype.id, "code": c, "label_zh": z, "label_en": e, "sort": n, "enabled": True}
            for n, (c, z, e) in enumerate(items, start=1)])
    session.execute(insert(ConfigItem), [{"key": k, "value_type": t, "value": v, "description": d}
                                         for k, t, v, d in CONFIG])
    lines, sources = _items(session, "product_line"), _items(session, "lead_source")
    levels, intentions = _items(session, "employee_level"), _items(session, "intention_level")
    stage_new = _items(session, "opportunity_stage")["new"]

    company = OrgUnit(name="Bench Co", kind="company", code="BENCH")
    session.add(company)
    session.flush()
    division = OrgUnit(name="Sales", kind="division", parent_id=company.id, code="BSALES")
    session.add(division)
    session.flush()
    departments, teams = [], []
    for d in range(DEPARTMENTS):
        dep = OrgUnit(name=f"Dept {d}", kind="department", parent_id=division.id, code=f"BD{d}")
        session.add(dep)
        session.flush()
        departments.append(dep)
        for t in range(TEAMS_PER_DEPARTMENT):
            team = OrgUnit(name=f"Team {d}.{t}", kind="team", parent_id=dep.id, code=f"BT{d}{t}")
            session.add(team)
            session.flush()
            teams.append(team)
    session.execute(insert(Employee), [
        {"employee_no": f"S{team.id:03d}{p:02d}", "name": f"Sales {team.code}-{p}", "org_unit_id": team.id,
         "hr_status": "active", "level_id": levels["P1" if p < 10 else "P2" if p < 20 else "P3"]}
        for team in teams for p in range(PEOPLE_PER_TEAM)])
    people = session.execute(select(Employee.id, Employee.org_unit_id).order_by(Employee.id)).all()
    # Weights 50..150; a few daily quotas that bind (every 25th person: 60 a day).
    session.execute(insert(SalesProfile), [
        {"employee_id": e, "paused": False, "weight": 50 + 25 * (i % 5), "open_count": 0, "won_count": 0,
         "dispatched_today": 0, "daily_quota": 60 if i % 25 == 7 else None, "capacity": None}
        for i, (e, _) in enumerate(people)])
    pools = {}
    for name, unit in [(FALLBACK_POOL, division)] + [(f"Pool {d.code}", d) for d in departments]:
        pool = Pool(name=name, org_unit_id=unit.id, daily_claim_limit=30)
        session.add(pool)
        session.flush()
        pools[unit.id] = pool.id
    session.add(CirculationRule(name="Bench capacity", org_unit_id=division.id, idle_days=7, protect_days=3,
                                capacity=CAPACITY_DEFAULT, capacity_by_level=json.dumps(CAPACITY),
                                cooling_days=3))
    d0, d1, d2, d3 = departments
    rules = [  # (name, priority, match, unit, strategy)
        ("referral maths → team 0.0", 10,
         {"match_source_id": sources["referral"], "match_product_line_id": lines["k12_math"]},
         teams[0], ROUND_ROBIN),
        ("maths → dept 0", 20, {"match_product_line_id": lines["k12_math"]}, d0, ROUND_ROBIN),
        ("english → dept 1", 30, {"match_product_line_id": lines["k12_english"]}, d1,
         SCORE_AWARE if score_aware else WEIGHTED),
        ("adult → dept 2", 40, {"match_product_line_id": lines["adult_english"]}, d2, LEAST_LOADED),
        ("coding, no intention → pool", 50, {"match_product_line_id": lines["programming"],
                                             "match_intention_level_id": intentions["D"]}, d3, POOL_STRATEGY),
        ("coding → dept 3", 60, {"match_product_line_id": lines["programming"]}, d3, WEIGHTED),
    ]
    for name, priority, match, unit, strategy in rules:
        session.add(DispatchRule(name=name, priority=priority, target_org_unit_id=unit.id, strategy=strategy,
                                 target_pool_id=pools[departments[0].id if unit is teams[0] else unit.id],
                                 **match))
    session.commit()

    now = utcnow()
    line_ids, source_ids = list(lines.values()), list(sources.values())
    intention_ids = list(intentions.values())
    regions = ["上海", "北京", "广州", "成都", "杭州"]
    by_department = {d.id: [e for e, unit in people if unit in {t.id for t in teams if t.parent_id == d.id}]
                     for d in departments}
    dept_of_line = {lines["k12_math"]: d0.id, lines["k12_english"]: d1.id, lines["adult_english"]: d2.id,
                    lines["programming"]: d3.id}
    for start in range(0, leads, CHUNK):
        n = min(CHUNK, leads - start)
        session.execute(insert(Customer), [
            {"phone": f"+8613{start + i:09d}", "name": f"客户{start + i}", "marketing_consent": True,
             "created_at": now, "updated_at": now} for i in range(n)])
    first = session.scalar(select(func.min(Customer.id)))
    for start in range(0, leads, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, leads)):
            line = line_ids[i % 4]
            rows.append({"customer_id": first + i, "product_line_id": line, "stage_id": stage_new,
                         "intention_level_id": intention_ids[(i // 4) % 4 if i % 7 else 3],
                         "source_id": source_ids[i % 6], "campaign": f"2026-{i % 3}",
                         "region": regions[i % 5], "status": WAITING, "is_recycled": i % COOLING_SHARE == 0,
                         "recycle_count": 1 if i % COOLING_SHARE == 0 else 0, "locked": False,
                         "created_at": now, "updated_at": now,
                         "win_probability": round(rng.random(), 3) if score_aware and i % 5 else None})
        session.execute(insert(Opportunity), rows)
    opps = session.execute(select(Opportunity.id, Opportunity.product_line_id)
                           .where(Opportunity.is_recycled.is_(True))).all()
    until = now + dt.timedelta(days=3)
    for start in range(0, len(opps), CHUNK):
        session.execute(insert(OwnerCooling), [
            {"opportunity_id": o, "employee_id": rng.choice(by_department[dept_of_line[line]]),
             "until": until}
            for o, line in opps[start:start + CHUNK]])
    if score_aware:
        _history(session, by_department[d1.id], lines["k12_english"], stage_new, first, now, rng)
    session.commit()
    return {"people": len(people), "teams": len(teams), "cooling": len(opps)}


def _history(session, people: list[int], line: int, stage: int, first_customer: int, now, rng) -> None:
    """40 closed opportunities per person (20 within 90 days), each person converting at their own rate."""
    rows = []
    for n, person in enumerate(people):
        rate = 0.1 + 0.4 * rng.random()
        for k in range(40):
            closed = now - dt.timedelta(days=1 + (k % 20) * 4 + (0 if k < 20 else 100))
            rows.append({"customer_id": first_customer + (n * 40 + k) % 1000, "product_line_id": line,
                         "stage_id": stage, "status": WON if rng.random() < rate else LOST,
                         "owner_id": person, "is_recycled": False, "recycle_count": 0, "locked": False,
                         "closed_at": closed, "created_at": closed, "updated_at": closed})
    session.execute(insert(Opportunity), rows)


# --- the raw ceiling --------------------------------------------------------------------------------
def raw_ceiling(session) -> tuple[float, int]:
    """One set-based UPDATE of every waiting opportunity to owned (the same columns dispatch writes)."""
    first, count = session.execute(select(func.min(Employee.id), func.count(Employee.id))).one()
    now = utcnow()
    table = Opportunity.__table__
    start = time.perf_counter()
    rows = session.execute(
        update(table).where(table.c.status == WAITING)
        .values(status=OWNED, owner_id=first + table.c.id % count, pool_id=None, org_unit_id=None,
                assigned_at=now, idle_since=now, dispatch_after=None, updated_at=now)
    ).rowcount
    session.flush()
    seconds = time.perf_counter() - start
    session.rollback()
    return seconds, rows


# --- workers ----------------------------------------------------------------------------------------
def worker_main(url: str, redis_url: str) -> None:
    """One RQ SimpleWorker (its own process, its own engine) on the `default` queue until SIGTERM."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    from app.jobs.worker import app_worker_class

    app = make_app(url, redis_url)
    connection = Redis.from_url(redis_url)
    worker = app_worker_class(app, SimpleWorker)([Queue("default", connection=connection)],
                                                 connection=connection)
    worker.work(burst=False, logging_level="WARNING")


def start_workers(url: str, redis_url: str, count: int) -> list[subprocess.Popen]:
    from redis import Redis
    from rq import Worker

    before = len(Worker.all(connection=Redis.from_url(redis_url)))
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", url, redis_url],
                              cwd=ROOT) for _ in range(count)]
    deadline = time.monotonic() + 60
    while len(Worker.all(connection=Redis.from_url(redis_url))) < before + count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop(procs)
            raise RuntimeError("the RQ workers did not start")
        time.sleep(0.05)
    return procs


def end_to_end(url: str, redis_url: str, workers: int) -> tuple[float, list[dict]]:
    """Start `workers` RQ worker processes, then time enqueue → every job finished (all committed)."""
    from redis import Redis
    from rq import Queue

    from app.jobs.dispatch import DISPATCH_JOB_ID, dispatch_waiting_job

    queue = Queue("default", connection=Redis.from_url(redis_url))
    procs = start_workers(url, redis_url, workers)
    try:
        start = time.perf_counter()
        # One dispatch run per worker (enqueue_dispatch queues one run and one follow-up; a bench with
        # two workers asks for two runs at once).
        jobs = [queue.enqueue(dispatch_waiting_job, job_id=f"{DISPATCH_JOB_ID}-bench-{n}", job_timeout=3600)
                for n in range(workers)]
        while True:
            statuses = [job.get_status(refresh=True) for job in jobs]
            if all(s in ("finished", "failed", "stopped", "canceled") for s in statuses):
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
    finally:
        stop(procs)
    failed = [job for job in jobs if job.get_status() != "finished"]
    if failed:
        raise RuntimeError(f"dispatch job failed: {failed[0].latest_result().exc_string}")
    return seconds, [job.return_value() for job in jobs]


# --- checks -----------------------------------------------------------------------------------------
def check(session, leads: int) -> dict:
    """Every lead placed once; counters equal what is owned; capacity and quota respected."""
    from app.services.dispatch import load_context

    statuses = dict(session.execute(
        select(Opportunity.status, func.count()).group_by(Opportunity.status)).all())
    logs = session.execute(select(AssignmentLog.opportunity_id).group_by(AssignmentLog.opportunity_id)
                           .having(func.count() > 1)).all()
    log_count = session.scalar(select(func.count(AssignmentLog.id)))
    owned = dict(session.execute(select(Opportunity.owner_id, func.count()).where(Opportunity.status == OWNED)
                                 .group_by(Opportunity.owner_id)).all())
    counters = dict(session.execute(select(SalesProfile.employee_id, SalesProfile.open_count)).all())
    wrong_counters = sum(1 for e, n in counters.items() if owned.get(e, 0) != n)
    ctx = load_context(session, utcnow(), [], lock=False)
    members = {m.id: m for p in ctx.rules for m in p.members}
    over_capacity = sum(1 for m in members.values() if m.capacity is not None and m.open_count > m.capacity)
    over_quota = sum(1 for m in members.values()
                     if m.daily_quota is not None and m.dispatched_today > m.daily_quota)
    full = sum(1 for m in members.values() if m.capacity is not None and m.open_count == m.capacity)
    cooled = session.scalar(select(func.count()).select_from(OwnerCooling).join(
        Opportunity, (Opportunity.id == OwnerCooling.opportunity_id)
        & (Opportunity.owner_id == OwnerCooling.employee_id)))
    session.rollback()
    problems = []
    if statuses.get(WAITING):
        problems.append(f"{statuses[WAITING]} still waiting")
    if statuses.get(OWNED, 0) + statuses.get(POOLED, 0) != leads:
        problems.append("not every lead placed")
    if logs or log_count != leads:
        problems.append(f"{log_count} assignment logs for {leads} leads ({len(logs)} doubled)")
    if wrong_counters:
        problems.append(f"{wrong_counters} open_count counters differ from what is owned")
    if over_capacity or over_quota:
        problems.append(f"{over_capacity} over capacity, {over_quota} over the daily quota")
    if cooled:
        problems.append(f"{cooled} opportunities dispatched to their cooling ex-owner")
    return {"owned": statuses.get(OWNED, 0), "pooled": statuses.get(POOLED, 0), "full": full,
            "problems": problems}


def trace_bytes(session) -> float:
    return session.scalar(select(func.avg(func.length(AssignmentLog.trace)))
                          .where(AssignmentLog.reason.in_((DISPATCH, TO_POOL)))) or 0.0


# --- one database -----------------------------------------------------------------------------------
def run(label: str, url: str, redis_url: str, workers: int, leads: int, score_aware: bool = False) -> dict:
    from flask_migrate import upgrade

    app = make_app(url, redis_url)
    with app.app_context():
        upgrade()
        start = time.perf_counter()
        facts = build(db.session, leads, random.Random(7), score_aware)
        print(f"  built {leads:,} waiting leads, {facts['people']} salespeople in {facts['teams']} teams, "
              f"{facts['cooling']:,} with a cooling ex-owner, in {time.perf_counter() - start:.1f} s")
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        ceiling_s, rows = raw_ceiling(db.session)
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE opportunity"))
        db.session.remove()
        db.engine.dispose()
    seconds, results = end_to_end(url, redis_url, workers)
    with app.app_context():
        outcome = check(db.session, leads)
        avg_trace = trace_bytes(db.session)
        db.session.remove()
        db.engine.dispose()
    rate, ceiling = leads / seconds, rows / ceiling_s
    print(f"  raw ceiling: one set-based UPDATE of {rows:,} rows: {ceiling_s:.2f} s = {ceiling:,.0f} rows/s")
    print(f"  dispatch, {workers} RQ worker process{'es' if workers > 1 else ''}: {leads:,} leads in "
          f"{seconds:.2f} s = {rate:,.0f} leads/s ({ceiling / rate:.1f}× under the ceiling)")
    taken = ", ".join(f"{r['taken']:,}" for r in results)
    print(f"  placed: {outcome['owned']:,} owned, {outcome['pooled']:,} to pools; {outcome['full']} "
          f"salespeople filled to capacity; per job taken: {taken}; trace {avg_trace:,.0f} bytes on average")
    print("  checks: " + ("every lead placed once, counters exact, no capacity/quota/cooling breach"
                          if not outcome["problems"] else "FAILED: " + "; ".join(outcome["problems"])))
    return {"label": label, "rate": rate, "ceiling": ceiling, "ok": not outcome["problems"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=LEADS)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--score-aware", action="store_true", help="the english rule score-aware")
    parser.add_argument("--worker", nargs=2, metavar=("DB_URL", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return

    from app.embedded_redis import EmbeddedRedis

    results = []
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        if args.only != "postgresql":
            print("SQLite")
            results.append(run("SQLite", f"sqlite:///{tmp}/bench.db", redis_server.url, 1, args.leads,
                               args.score_aware))
        pg = postgresql_url()
        if args.only == "sqlite":
            pass
        elif pg:
            print("PostgreSQL")
            url = fresh_pg_database(pg, "bench_dispatch")
            results.append(run("PostgreSQL", url, redis_server.url, 2, args.leads, args.score_aware))
        else:
            print("PostgreSQL: skipped (set BENCH_DATABASE_URL)")
    for r in results:
        if r["label"] == "PostgreSQL":
            verdict = "meets" if r["rate"] >= 10_000 and r["ceiling"] / r["rate"] <= 10 else "MISSES"
            print("target (PostgreSQL, 2 workers: ≥ 10,000 leads/s and within 10× of the ceiling): "
                  + verdict)
    if not all(r["ok"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    main()
