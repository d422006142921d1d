#!/usr/bin/env python
"""The manager dashboard's SQL on the database in DATABASE_URL: how long the aggregates' refresh takes
(first, nothing changed, after changes), and the dashboard's figures (app.services.dashboard.summary,
no cache) per viewer — sequentially and from N threads at once — plus EXPLAIN ANALYZE of its heaviest
statements. The page-level benchmark under gunicorn is bench/pages.py.

    DATABASE_URL=postgresql://…/db .venv/bin/python bench/dashboard_sql.py [--users 20] [--rounds 10]
        [--touch 200] [--full] [--explain] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import func, select, text, update  # noqa: E402

from app import create_app  # noqa: E402
from app.clock import utcnow  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models.employee import Employee  # noqa: E402
from app.models.org import OrgUnit  # noqa: E402
from app.models.sales import Opportunity  # noqa: E402
from app.models.security import SCOPE_ALL, SCOPE_SUBTREE, SCOPE_TEAM  # noqa: E402
from app.security.scope import Viewer  # noqa: E402
from app.services import dashboard, dashboard_refresh  # noqa: E402


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def viewers(session) -> dict[str, Viewer]:
    team = session.scalar(select(Employee).join(OrgUnit, OrgUnit.id == Employee.org_unit_id)
                          .where(OrgUnit.kind == "team").order_by(Employee.id).limit(1))
    root = session.scalar(select(OrgUnit).where(OrgUnit.parent_id.is_(None)).order_by(OrgUnit.id).limit(1))
    perms = frozenset({("can_read", "SmsReport")})
    return {"admin": Viewer(1, SCOPE_ALL, permissions=frozenset({("*", "*")})),
            "director": Viewer(2, SCOPE_SUBTREE, team.id, root.id, root.path, perms),
            "manager": Viewer(3, SCOPE_TEAM, team.id, team.org_unit_id, None)}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--touch", type=int, default=200, help="opportunities changed before the 2nd refresh")
    parser.add_argument("--full", action="store_true", help="rebuild every day first")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    app = create_app()
    out = []
    with app.app_context():
        session = db.session
        rows = session.scalar(select(func.count(Opportunity.id)))
        if args.full or dashboard_refresh.state(session) is None:
            took, result = timed(lambda: dashboard_refresh.refresh(session, utcnow(), full=True))
            out.append({"step": "refresh_full", "rows": rows, "ms": ms(took),
                        "days": len(result["cohort_days"]) + len(result["activity_days"])})
        took, result = timed(lambda: dashboard_refresh.refresh(session, utcnow()))
        out.append({"step": "refresh_nothing_changed", "rows": rows, "ms": ms(took),
                    "days": len(result["cohort_days"]) + len(result["activity_days"])})
        ids = list(session.scalars(select(Opportunity.id).order_by(Opportunity.id.desc()).limit(args.touch)))
        session.execute(update(Opportunity).where(Opportunity.id.in_(ids)).values(updated_at=utcnow()))
        session.commit()
        took, result = timed(lambda: dashboard_refresh.refresh(session, utcnow()))
        out.append({"step": f"refresh_after_{args.touch}_changes", "rows": rows, "ms": ms(took),
                    "days": len(result["cohort_days"]) + len(result["activity_days"])})
        today = dashboard.parse_filters({}, dashboard_refresh.clock.local_date(utcnow()))
        cases = viewers(session)
        for name, viewer in cases.items():
            times = [timed(lambda v=viewer: dashboard.summary(session, v, today, utcnow()))[0]
                     for _ in range(args.rounds)]
            out.append({"step": f"summary_{name}", "rows": rows, "users": 1,
                        "p50_ms": ms(statistics.median(times)), "p95_ms": ms(pct(times, 0.95))})
        session.remove()

        from app.views.dashboard import figures  # the page's path: the summary, kept briefly in Redis

        def one(viewer, cached=False):
            with app.app_context():
                if cached:
                    took = timed(lambda: figures(viewer, today, utcnow()))[0]
                else:
                    took = timed(lambda: dashboard.summary(db.session, viewer, today, utcnow()))[0]
                db.session.remove()
                return took

        for cached in (False, True):
            for name, viewer in cases.items():
                with ThreadPoolExecutor(args.users) as pool:
                    times = list(pool.map(one, [viewer] * (args.users * args.rounds),
                                          [cached] * (args.users * args.rounds)))
                step = f"summary_{name}_concurrent" + ("_cached" if cached else "")
                out.append({"step": step, "rows": rows, "users": args.users,
                            "p50_ms": ms(statistics.median(times)), "p95_ms": ms(pct(times, 0.95))})
        if args.explain:
            explain(app, today)
    for line in out:
        print(json.dumps(line) if args.json else "  ".join(f"{k}={v}" for k, v in line.items()))
    return 0


def explain(app, period) -> None:
    """EXPLAIN ANALYZE of the heaviest statements (the period's cohort sums, the per-person ranking, the
    live pool counts), printed to stderr."""
    statements = {
        "cohort totals": "SELECT sum(leads), sum(contacted), sum(won) FROM dash_cohort_day "
                         "WHERE day BETWEEN :a AND :b",
        "people ranking": "SELECT owner_id, sum(leads), sum(contacted), sum(won) FROM dash_cohort_day "
                          "WHERE day BETWEEN :a AND :b GROUP BY owner_id",
        "activity per person": "SELECT employee_id, sum(follow_ups), sum(dials) FROM dash_activity_day "
                               "WHERE day BETWEEN :a AND :b GROUP BY employee_id",
        "waiting now": "SELECT count(id) FROM opportunity WHERE status = 'waiting'",
        "pooled now": "SELECT pool_id, count(id) FROM opportunity WHERE status = 'pooled' GROUP BY pool_id",
    }
    with app.app_context():
        for name, sql in statements.items():
            plan = db.session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql),
                                      {"a": period.start, "b": period.end}).scalars().all()
            print(f"--- {name}\n" + "\n".join(plan), file=sys.stderr)
        db.session.remove()


if __name__ == "__main__":
    sys.exit(main())
