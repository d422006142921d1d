"""Pages under load: p50 and p95 of the dashboard, the opportunity list (first page, a filtered page, a deep
page: half-way down the list, by the keyset cursor its "next" links carry), the customer page and the
workbench, with 20 concurrent users against gunicorn, at 10,000 and at 1,000,000 opportunities on
PostgreSQL, side by side.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/h_bench python bench/pages.py
    python bench/pages.py --rows 10000 --requests 100 --json      # one JSON object per page and size
    python bench/pages.py --keep-db                               # reuse databases already filled

Each size works in a database of its own, `<database>_pages_10k` / `_pages_1m`, filled by
bench/bigdata.py (at 1,000,000 opportunities: 5,000,000 follow-ups, 2,000,000 calls, 1,000,000 leads and
customers, 500,000 SMS messages), then its dashboard aggregates refreshed. `--keep-db` reuses a database
that bench/bigdata.py has already filled (migrating it to the current head first), so reruns take
minutes, not the build.

The server is gunicorn as `run.py web` runs it (sync worker processes, `--workers` of them, default
2 × CPUs + 1) on the production settings (`Config`, CSRF on), at the fixed instant of bench/common.py,
with its own Redis. The load generator is a bounded asyncio client (stdlib only): `--users` coroutines,
each pausing `--think` seconds on average (uniform between half and one and a half of it; default 3, as
people read a page before the next click) after an answer before its next request — `--think 0` is a
closed loop, a stress test rather than a workload — one page at a time, `--requests`
measured requests per page after `--users` warm-up ones. Latency is from connect to the last byte of the
answer; anything but 200 counts as an error and is reported, not timed. As whom: the sales director
(the dashboard, lists and customer pages over the whole sales division), salespeople for the workbench.

With `--json` it prints one line per page and size:
    {"page": "dashboard", "rows": 10000, "users": 20, "p50_ms": 41.2, "p95_ms": 88.0}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import common  # noqa: E402

PAGES = ("dashboard", "opportunity_list_first", "opportunity_list_filtered", "opportunity_list_deep",
         "customer_page", "workbench")
DIRECTOR = "director"
SALESPEOPLE = ("sales11", "sales21", "sales31", "sales41", "sales51", "sales61")
READY_TIMEOUT = 120.0
# Flask-Login ties a session to the client's address and User-Agent (FAB's "strong" protection): the load
# generator sends the one the login was made with.
USER_AGENT = "crm-bench-pages"


def say(message: str) -> None:
    print(f"[pages] {message}", file=sys.stderr, flush=True)


def wsgi_app():
    """gunicorn's entry (`bench.pages:wsgi_app()`): the app of run.py at the benchmark's fixed instant."""
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    # A ticking travel starts ticking at its first reading: read it now, so that every worker's clock is
    # the same (a worker ahead of another signs session cookies the other refuses as from the future).
    time.time()
    from run import wsgi_app as app

    return app()


# --- the databases --------------------------------------------------------------------------------------
def targets(url: str, rows: int) -> dict:
    """What the pages are asked for: customers with a history, a filter, the middle of the list."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        customers = list(conn.scalars(text(
            "SELECT customer_id FROM opportunity WHERE status IN ('owned', 'won') "
            "ORDER BY id DESC LIMIT 500")))
        stage = conn.execute(text("SELECT i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id "
                                  "WHERE t.code = 'opportunity_stage' AND i.code = 'contacted'")).scalar()
        low, high = conn.execute(text("SELECT min(id), max(id) FROM opportunity")).one()
    engine.dispose()
    return {"customers": customers, "stage": stage, "middle": (low + high) // 2}


def paths(page: str, t: dict, rng: random.Random) -> str:
    """The URL of one request for `page`."""
    if page == "dashboard":
        return "/dashboard/"
    if page == "opportunity_list_first":
        return "/opportunityview/list/"
    if page == "opportunity_list_filtered":
        return f"/opportunityview/list/?_flt_3_status=owned&_flt_0_stage={t['stage']}"
    if page == "opportunity_list_deep":  # half-way down the list, where "next" leads after many clicks
        return f"/opportunityview/list/?after_OpportunityView={t['middle'] + rng.randrange(-500, 500)}"
    if page == "customer_page":
        return f"/customer/show/{rng.choice(t['customers'])}"
    return "/workbench/"


# --- the server -----------------------------------------------------------------------------------------
def start_server(url: str, redis_url: str, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "CRM_CONFIG": "default", "DATABASE_URL": url, "REDIS_URL": redis_url,
           "SECRET_KEY": os.urandom(16).hex(), "FLASK_DEBUG": "0", "AUTH_RATE_LIMIT": "1000 per minute",
           "PYTHONPATH": ROOT}
    argv = [sys.executable, "-m", "gunicorn", "--chdir", ROOT, "--workers", str(workers), "--worker-class",
            "sync", "--threads", "1", "--bind", f"127.0.0.1:{port}", "--timeout", "120",
            "--no-control-socket", "bench.pages:wsgi_app()"]
    log = open(os.path.join(ROOT, "instance", f"bench-pages-{port}.log"), "w")  # noqa: SIM115
    web = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=log,
                           stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"gunicorn exited with {web.returncode}: see instance/bench-pages-{port}.log")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5).read()
            return web
        except OSError:
            time.sleep(0.5)
    stop_server(web)
    raise SystemExit("gunicorn did not answer in time")


def stop_server(web: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        if web.poll() is not None:
            return
        try:
            os.killpg(web.pid, sig)
            web.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def login(base: str, username: str, password: str) -> str:
    """The Cookie header of a session logged in through the HTML form (CSRF token and all); tried a few
    times (a worker that has just started may not have the session of the form it did not serve)."""
    for _ in range(5):
        try:
            return _login(base, username, password)
        except urllib.error.HTTPError as exc:
            say(f"login as {username}: {exc.code}, again")
    raise SystemExit(f"could not log in as {username}")


def _login(base: str, username: str, password: str) -> str:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("User-Agent", USER_AGENT)]
    form = opener.open(base + "/login/", timeout=30).read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', form)
    body = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrf_token": token.group(1) if token else ""}).encode()
    answer = opener.open(base + "/login/", data=body, timeout=30)
    answer.read()
    if "/login" in answer.geturl():
        raise urllib.error.HTTPError(answer.geturl(), 401, "login refused", answer.headers, None)
    return "; ".join(f"{c.name}={c.value}" for c in jar)


# --- the load -------------------------------------------------------------------------------------------
async def fetch(port: int, path: str, cookie: str) -> tuple[int, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                  f"User-Agent: {USER_AGENT}\r\n"
                  "Accept-Language: zh-CN\r\nConnection: close\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readline()
    while await reader.read(65536):
        pass
    writer.close()
    elapsed = (time.perf_counter() - started) * 1000
    parts = head.split()
    return (int(parts[1]) if len(parts) > 1 else 0), elapsed


async def load(port: int, make_request, users: int, requests: int, think: float) -> tuple[list[float], dict]:
    """`users` coroutines share `users + requests` requests; the first `users` answers are warm-up."""
    issued, times, errors = 0, [], {}

    async def user(n: int) -> None:
        nonlocal issued
        rng = random.Random(n)
        while issued < users + requests:
            index = issued
            issued += 1
            path, cookie = make_request(rng)
            status, ms = await fetch(port, path, cookie)
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
            elif index >= users:
                times.append(ms)
            if think:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think)

    await asyncio.gather(*(user(n) for n in range(users)))
    return times, errors


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))], 1)


def run_size(base_url: str, rows: int, args) -> list[dict]:
    from app.embedded_redis import EmbeddedRedis, free_port
    from app.services.seed import DEMO_PASSWORD

    url = common.bigdata_database(base_url, "pages", rows, args.keep_db)
    common.fill_bigdata(url, rows, say)
    t = targets(url, rows)
    redis = EmbeddedRedis()
    port = free_port()
    web = start_server(url, redis.url, port, args.workers)
    results = []
    try:
        base = f"http://127.0.0.1:{port}"
        director = login(base, DIRECTOR, DEMO_PASSWORD)
        sellers = [login(base, name, DEMO_PASSWORD) for name in SALESPEOPLE]
        for page in args.pages:
            def make_request(rng, page=page):
                cookie = rng.choice(sellers) if page == "workbench" else director
                return paths(page, t, rng), cookie

            times, errors = asyncio.run(load(port, make_request, args.users, args.requests, args.think))
            row = {"page": page, "rows": rows, "users": args.users, "p50_ms": percentile(times, 50),
                   "p95_ms": percentile(times, 95)}
            if errors:
                row["errors"] = errors
            results.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                say(f"{rows:>9,} {page:26s} p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms"
                    + (f"  errors {errors}" if errors else ""))
    finally:
        stop_server(web)
        redis.stop()
    return results


def table(results: list[dict], sizes: list[int]) -> str:
    cell = {(r["page"], r["rows"]): r for r in results}
    head = f"{'page':28s}" + "".join(f"{f'{n:,} rows  p50 / p95 (ms)':>34s}" for n in sizes)
    lines = [head, "-" * len(head)]
    for page in dict.fromkeys(r["page"] for r in results):
        row = f"{page:28s}"
        for n in sizes:
            r = cell.get((page, n))
            text_ = "-" if r is None else f"{r['p50_ms']} / {r['p95_ms']}"
            text_ += " (errors)" if r is not None and "errors" in r else ""
            row += f"{text_:>34s}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    from bench.common import postgresql_url

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,1000000", help="opportunity counts, comma separated")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page")
    parser.add_argument("--think", type=float, default=3.0,
                        help="mean seconds a user pauses between requests (0: closed loop)")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--keep-db", action="store_true", help="reuse databases bench/bigdata.py filled")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    args.pages = [p for p in args.pages.split(",") if p]
    unknown = set(args.pages) - set(PAGES)
    if unknown:
        parser.error(f"unknown pages: {', '.join(sorted(unknown))}")
    base_url = postgresql_url()
    if not base_url:
        raise SystemExit("set BENCH_DATABASE_URL (or TEST_DATABASE_URL) to a PostgreSQL server")
    sizes = [int(n) for n in args.rows.split(",") if n]
    os.makedirs(os.path.join(ROOT, "instance"), exist_ok=True)
    results = [r for rows in sizes for r in run_size(base_url, rows, args)]
    if not args.json:
        print(f"{args.users} concurrent users, {args.requests} requests per page, {args.workers} gunicorn "
              f"workers, think time {args.think} s")
        print(table(results, sizes))


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    main()
