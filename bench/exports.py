"""Exports at scale on PostgreSQL: a list of 1,000,000 leads written to CSV and to .xlsx by the export
job (app/jobs/exports.py, through app.services.runner.execute, exactly as a worker runs it).

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/exports.py
    python bench/exports.py --rows 50000 --formats csv      # a quick run
    BENCH_DATABASE_URL=... python bench/exports.py --rows 1000000 --small 10000

Per format, the same export of --small rows (default 10,000) and of --rows rows (default 1,000,000) runs
in a child process of its own, so that its peak RSS (ru_maxrss) is its own: printed are rows per second
(wall time, and per second of the process's CPU: on a shared machine the steadier figure), the peak RSS
and the ratio of the two peaks (memory flat: about 1x). The data is built once per size in a fresh
database beside the one the URL names; the export is the administrator's, with the lead list's columns
(relations loaded per chunk, phones full, labels and times as the list shows them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

INSERT_CHUNK = 50_000


def make_app(url: str, redis_url: str, export_dir: str):
    from app import create_app
    from config import TestConfig

    attrs = {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url, "CRM_EXPORT_DIR": export_dir,
             "CRM_EXPORT_MAX_ROWS": 0}
    return create_app(type("BenchConfig", (TestConfig,), attrs))


def build(url: str, redis_url: str, export_dir: str, rows: int) -> None:
    """Schema, roles, reference data, an administrator and `rows` leads (each with its customer)."""
    from flask_migrate import upgrade
    from sqlalchemy import insert, select, text

    from app.clock import utcnow
    from app.extensions import db
    from app.models.metadata import DictItem, DictType
    from app.models.sales import Customer, Lead
    from app.services.reference import sync_reference
    from app.services.roles import sync_roles

    app = make_app(url, redis_url, export_dir)
    with app.app_context():
        upgrade()
        sync_roles(app.appbuilder)
        sync_reference(db.session)
        db.session.commit()
        sm = app.appbuilder.sm
        sm.add_user("benchadmin", "Bench", "Admin", "bench@example.com", sm.find_role("Admin"),
                    "Bench-Pass-2026")
        s = db.session

        def items(code):
            return s.scalars(select(DictItem.id).join(DictItem.dict_type).where(DictType.code == code)).all()

        products, sources = items("product_line"), items("lead_source")
        now = utcnow()
        for start in range(0, rows, INSERT_CHUNK):
            n = range(start, min(rows, start + INSERT_CHUNK))
            ids = s.scalars(insert(Customer).returning(Customer.id), [
                {"phone": f"+861{3 + i % 7}{i:09d}", "name": f"家长{i}", "region": "华东",
                 "marketing_consent": True, "created_at": now, "updated_at": now} for i in n]).all()
            s.execute(insert(Lead), [
                {"customer_id": cid, "phone": f"+861{3 + i % 7}{i:09d}", "name": f"家长{i}",
                 "product_line_id": products[i % len(products)], "source_id": sources[i % len(sources)],
                 "campaign": f"秋季活动{i % 20}", "region": "华东",
                 "channel": ("form", "import", "api")[i % 3],
                 "consult_note": "想了解少儿编程课程, 周末上课", "created_at": now, "updated_at": now}
                for cid, i in zip(ids, n, strict=True)])
            s.commit()
        s.execute(text("ANALYZE"))
        s.commit()
        db.session.remove()
        db.engine.dispose()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, redis_url: str, export_dir: str, rows: int, fmt: str) -> None:
    """One export job, executed here as a worker executes it; prints one JSON line."""
    from sqlalchemy import select

    import app.jobs.exports  # noqa: F401  (registers the handler)
    from app.extensions import db
    from app.models.employee import CrmUser
    from app.models.jobs import COMPLETED, EXPORT, JobRun
    from app.services import exports, runner

    app = make_app(url, redis_url, export_dir)
    with app.app_context():
        user = db.session.scalar(select(CrmUser).where(CrmUser.username == "benchadmin"))
        params = {"view": "LeadView", "format": fmt, "user_id": user.id, "args": [], "locale": "zh_CN"}
        run = runner.start(db.session, EXPORT, target_type="export", target_id=user.id, started_by=user.id,
                           params=params)
        db.session.commit()
        rss_before = peak_rss_mib()
        t, cpu = time.perf_counter(), time.process_time()
        runner.execute(db.session, run.id)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        done = db.session.get(JobRun, run.id, populate_existing=True)
        assert done.status == COMPLETED and done.done == rows, (done.status, done.done, done.last_error)
        size = os.path.getsize(exports.file_path(run.id, fmt))
    print(json.dumps({"rows": rows, "format": fmt, "seconds": wall, "rate": rows / wall, "cpu_s": cpu,
                      "rss_mib": peak_rss_mib(), "rss_before_mib": rss_before, "file_mib": size / 2**20}),
          flush=True)


def _child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench child failed: {args}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    from app.embedded_redis import EmbeddedRedis
    from bench.common import fresh_pg_database, postgresql_url

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big export")
    parser.add_argument("--small", type=int, default=10_000, help="rows of the small export (RSS baseline)")
    parser.add_argument("--formats", default="csv,xlsx", help="comma-separated: csv, xlsx")
    args = parser.parse_args()
    pg = postgresql_url()
    if not pg:
        raise SystemExit("Set BENCH_DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    print(f"Exports of the lead list on PostgreSQL: {args.small:,} vs {args.rows:,} rows; "
          f"{', '.join(formats)}")
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        urls = {}
        for rows in (args.small, args.rows):
            urls[rows] = fresh_pg_database(pg, f"bench_exports_{rows}")
            t = time.perf_counter()
            _child("--build", urls[rows], server.url, tmp, rows)
            print(f"  built {rows:,} leads in {time.perf_counter() - t:.0f} s", flush=True)
        for fmt in formats:
            small, big = (_child("--measure", urls[n], server.url, tmp, n, fmt)
                          for n in (args.small, args.rows))
            for r in (small, big):
                print(f"  {fmt:4s} {r['rows']:>9,} rows: {r['rate']:>8,.0f} rows/s "
                      f"({r['seconds']:.1f} s wall; {r['cpu_s']:.1f} s CPU = {r['rows'] / r['cpu_s']:,.0f} "
                      f"rows/CPU-s), peak RSS {r['rss_mib']:.0f} MiB "
                      f"(before {r['rss_before_mib']:.0f} MiB), file {r['file_mib']:.1f} MiB", flush=True)
            print(f"  {fmt:4s} peak RSS {args.rows:,} / {args.small:,} rows = "
                  f"{big['rss_mib'] / small['rss_mib']:.2f}x", flush=True)


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    if sys.argv[1:2] == ["--build"]:
        build(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1:2] == ["--measure"]:
        measure(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        main()
