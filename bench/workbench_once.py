"""One workbench request, measured: SQL statements and wall time of `GET /workbench/` for a salesperson of a
database bench/bigdata.py filled (at the fixed instant of bench/common.py), through the Flask test client.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/h_bench_pages_1m python bench/workbench_once.py
    python bench/workbench_once.py --user sales21 --repeat 5 --json

It prints the statement count, the slowest statements and the time of each repeat (the first request
warms the login's and the reference data's caches and is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", default="sales11")
    parser.add_argument("--url", default="/workbench/")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    from sqlalchemy import event

    from app import create_app
    from app.extensions import db
    from app.services.seed import DEMO_PASSWORD

    app = create_app("default")
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    answer = client.post("/login/", data={"username": args.user, "password": DEMO_PASSWORD})
    if answer.status_code != 302:
        sys.exit(f"login as {args.user}: {answer.status_code}")
    seen: list[tuple[str, float]] = []
    started: list[float] = []

    def before(conn, cursor, statement, *rest):
        started.append(time.perf_counter())

    def after(conn, cursor, statement, *rest):
        seen.append((statement, time.perf_counter() - started.pop()))

    with app.app_context():
        engine = db.engine
    client.get(args.url)  # warm
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    runs = []
    for _ in range(args.repeat):
        seen.clear()
        t0 = time.perf_counter()
        resp = client.get(args.url)
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            sys.exit(f"{args.url}: {resp.status_code}")
        runs.append({"ms": round(ms, 1), "statements": len(seen),
                     "sql_ms": round(sum(t for _, t in seen) * 1000, 1)})
    if args.json:
        print(json.dumps({"page": "workbench", "user": args.user, "runs": runs}))
        return
    for run in runs:
        print(f"{run['ms']:8.1f} ms  {run['statements']:4d} statements  {run['sql_ms']:8.1f} ms in SQL")
    shapes = Counter(" ".join(s.split())[:110] for s, _ in seen)
    print("most repeated:")
    for shape, n in shapes.most_common(6):
        print(f"  {n:4d} × {shape}")
    print("slowest:")
    for statement, t in sorted(seen, key=lambda x: -x[1])[:5]:
        print(f"  {t * 1000:7.1f} ms  {' '.join(statement.split())[:160]}")


if __name__ == "__main__":
    main()
