"""What the benchmarks share: one fixed instant to run at, a fresh PostgreSQL database of their own, and
the databases to run on."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh_pg_database(url: str, suffix: str) -> str:
    """A new empty database `<database>_<suffix>` beside the one `url` names; returns its URL."""
    base = make_url(url)
    name = f"{base.database}_{suffix}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def size_label(rows: int) -> str:
    """1000000 → "1m", 200000 → "200k": the size in a database's name."""
    return f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 \
        else str(rows)


def bigdata_database(base_url: str, bench: str, rows: int, keep: bool) -> str:
    """The URL of `<database>_<bench>_<size>` beside `base_url`'s: the one already there when `keep`, else a
    fresh empty one (fill it with `fill_bigdata`)."""
    suffix = f"{bench}_{size_label(rows)}"
    url = make_url(base_url)
    name = f"{url.database}_{suffix}"
    if keep:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        engine.dispose()
        if found:
            return url.set(database=name).render_as_string(hide_password=False)
    return fresh_pg_database(base_url, suffix)


def fill_bigdata(url: str, rows: int, say) -> None:
    """bench/bigdata.py in a process of its own (it builds an app; the caller stays a client); it skips what
    is already built."""
    started = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bigdata.py"), url, str(rows)], cwd=ROOT,
                   check=True)
    say(f"database ready in {time.perf_counter() - started:.0f} s")


def postgresql_url() -> str | None:
    """The PostgreSQL server to benchmark on (BENCH_DATABASE_URL, else TEST_DATABASE_URL), if any."""
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")


# A Wednesday, 10:00 in Asia/Shanghai: inside the dispatch working hours, the calling window and the SMS
# sending window, so no figure depends on the hour a benchmark is run at.
INSTANT = dt.datetime(2026, 6, 17, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
CLOCK_ENV = "BENCH_CLOCK"


def run_at_fixed_instant() -> None:
    """Move this process's clock (time-machine, a dev dependency) to INSTANT; it ticks on from there, and
    durations (perf_counter, monotonic) stay real. The bench processes it starts continue the same clock:
    they inherit "<instant> <monotonic then>" through the environment (the monotonic clock is one for the
    whole machine) and start at the instant plus the monotonic time gone since."""
    import time_machine

    anchor = os.environ.get(CLOCK_ENV)
    if anchor is None:
        anchor = f"{INSTANT.timestamp()!r} {time.monotonic()!r}"
        os.environ[CLOCK_ENV] = anchor
    instant, monotonic = map(float, anchor.split())
    time_machine.travel(instant + time.monotonic() - monotonic, tick=True).start()
