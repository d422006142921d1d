"""What the benchmarks share: a fresh PostgreSQL database of their own, and the databases to run on."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


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


def postgresql_url() -> str | None:
    """The PostgreSQL server to benchmark on (BENCH_DATABASE_URL, else TEST_DATABASE_URL), if any."""
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
