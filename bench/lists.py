"""Timings of the big lists, in process (no HTTP server, no concurrency): p50 / p95 of a page and the
slowest SQL statement on it. For before/after comparisons of list queries and indexes; the load test
under 20 users is bench/pages.py.

    .venv/bin/python bench/lists.py postgresql+psycopg://postgres@127.0.0.1:5432/<db> [--runs 10]

The database needs the schema, roles and demo logins (admin, sales11, manager…) and volume, e.g. filled
with generate_series (see /work/notes/readme/lists.md)."""

from __future__ import annotations

import argparse
import re
import statistics
import time

from sqlalchemy import event

from app import create_app
from app.embedded_redis import EmbeddedRedis
from app.extensions import db
from tests.conftest import login, make_config


def timed_pages(app, username: str, urls: dict[str, str], runs: int) -> None:
    client = app.test_client()
    assert login(client, username).status_code == 302
    durations: list[tuple[float, str]] = []

    def before(conn, cursor, statement, params, context, many):
        conn.info["t0"] = time.perf_counter()

    def after(conn, cursor, statement, params, context, many):
        durations.append((time.perf_counter() - conn.info["t0"], statement))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    for name, url in urls.items():
        client.get(url)  # warm
        times, slowest = [], (0.0, "")
        for _ in range(runs):
            durations.clear()
            t0 = time.perf_counter()
            resp = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200, (url, resp.status_code)
            slowest = max([slowest, *durations])
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        sql = re.sub(r"\s+", " ", slowest[1])[:160]
        rows = len(re.findall(r'<tr data-pk="', resp.get_data(as_text=True)))
        print(f"{username:8} {name:28} rows={rows:3} p50={statistics.median(times):7.1f} ms "
              f"p95={p95:7.1f} ms slowest SQL {slowest[0] * 1000:6.1f} ms: {sql}", flush=True)
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--stage", type=int, help="a stage's dict_item id for the filtered page")
    parser.add_argument("--cursor", default="", help="after_OpportunityView for the deep keyset page")
    parser.add_argument("--fcursor", default="", help="after_FollowUpView for the deep keyset page "
                        "(<id>~<created_at as microseconds since 1970>)")
    args = parser.parse_args()
    with EmbeddedRedis() as redis:
        app = create_app(make_config(args.url, redis.url))
        run(app, args)


def run(app, args) -> None:
    o, fu = "/opportunityview/list/", "/followupview/list/"
    urls = {
        "opportunity first page": o,
        "opportunity filtered stage": f"{o}?_flt_0_stage={args.stage}",
        "opportunity filtered status": f"{o}?_flt_3_status=pooled",
        "opportunity deep (offset)": f"{o}?page_OpportunityView=30000",
        "follow-up first page": fu,
        "follow-up deep (offset)": f"{fu}?page_FollowUpView=30000",
    }
    if args.cursor:
        urls["opportunity deep (keyset)"] = (f"{o}?page_OpportunityView=30000"
                                             f"&after_OpportunityView={args.cursor}")
    if args.fcursor:
        urls["follow-up deep (keyset)"] = f"{fu}?page_FollowUpView=30000&after_FollowUpView={args.fcursor}"
    timed_pages(app, "admin", urls, args.runs)
    own = {k: v for k, v in urls.items() if k.startswith("opportunity") and "offset" not in k}
    timed_pages(app, "sales11", own, args.runs)


if __name__ == "__main__":
    main()
