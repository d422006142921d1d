"""Fixtures: every test at a fixed instant (time-machine), a private Redis per test process, a migrated +
seeded SQLite template copied per test, the real app and its test client; PostgreSQL through
TEST_DATABASE_URL where SQLite cannot show it."""

from __future__ import annotations

import contextlib
import contextvars
import os
import select
import shutil
import time

import pytest
import time_machine
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import clock, create_app
from app.embedded_redis import EmbeddedRedis
from app.services.seed import ADMIN_PASSWORD, DEMO_PASSWORD
from config import TestConfig
from tests.helpers import DEFAULT_INSTANT, SEED_INSTANT, travel, without_faketime


class IsolatedClient(FlaskClient):
    """Runs each request in an empty context. Otherwise the app context that the `session` fixture
    holds open is reused by every request, and Flask-Login's user cached in its `g` leaks from one
    request (and one client) to the next."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)  # a streamed body must be read inside that context too
        return contextvars.Context().run(super().open, *args, **kwargs)


def make_config(db_url: str, redis_url: str, **overrides):
    attrs = {"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url, **overrides}
    return type("SuiteConfig", (TestConfig,), attrs)


def build_database(app, demo: bool = True) -> None:
    """Migrate to head, sync the role policy and the reference data, and (unless `demo=False`, a
    production install) load the demo data, as `make run` does, at SEED_INSTANT (the demo data's dates are
    relative to now)."""
    from flask_migrate import upgrade

    from app.extensions import db
    from app.services import audit
    from app.services.reference import sync_reference
    from app.services.roles import sync_roles
    from app.services.seed import seed_demo

    with travel(SEED_INSTANT), app.app_context():
        upgrade()
        with audit.acting_as(None, "test-setup"):
            sync_roles(app.appbuilder)
        sync_reference(db.session)
        db.session.commit()
        if demo:
            with audit.acting_as(None, "test-setup"):
                seed_demo(db.session, app.appbuilder)
        db.session.remove()
        db.engine.dispose()


# --- the clock ---------------------------------------------------------------------------------------
def _under_libfaketime() -> None:
    """The suite is proven clock-independent by running it under libfaketime too (`faketime
    --exclude-monotonic '2026-12-02 15:30:00' pytest ...`). Two clashes between libfaketime 0.9.10 and
    CPython are worked around here, in this process only (children get no libfaketime: tests.helpers):
    - with a faked monotonic clock every timed lock wait (Event.wait, Thread.join) hangs, since glibc's
      sem_clockwait is not faked: refuse to start and say so;
    - with the real monotonic clock, time.sleep's clock_nanosleep(TIMER_ABSTIME) fails with EINVAL:
      sleep through select() instead."""
    if "libfaketime" not in os.environ.get("LD_PRELOAD", ""):
        return
    if not (os.environ.get("DONT_FAKE_MONOTONIC") or os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC")):
        raise pytest.UsageError("under faketime, pass --exclude-monotonic (timed lock waits hang otherwise)")

    def sleep(seconds: float) -> None:
        select.select([], [], [], seconds)

    time.sleep = sleep


_under_libfaketime()


@pytest.fixture(autouse=True)
def traveller(request) -> time_machine.Traveller:
    """Every test runs at a fixed, explicit instant: DEFAULT_INSTANT, or the one of its
    `@pytest.mark.instant("2026-06-17T23:30:00+08:00")`. The clock ticks on from there; a test moves it
    with `traveller.move_to(...)` / `traveller.shift(...)`. Child processes follow it through
    `tests.helpers.child_env()`."""
    marker = request.node.get_closest_marker("instant")
    with travel(marker.args[0] if marker else DEFAULT_INSTANT) as moving:
        yield moving


@pytest.fixture(scope="session")
def redis_server():
    # A real server with its own clock, like PostgreSQL: started without libfaketime, should the suite run
    # under `faketime` (redis-server cannot start under it).
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LD_PRELOAD", raising=False)
        if preload := without_faketime(dict(os.environ)).get("LD_PRELOAD"):
            env.setenv("LD_PRELOAD", preload)
        server = EmbeddedRedis()
    with server:
        yield server


@pytest.fixture(scope="session")
def template_db(tmp_path_factory, redis_server):
    path = tmp_path_factory.mktemp("template") / "crm.db"
    build_database(create_app(make_config(f"sqlite:///{path}", redis_server.url)))
    return path


def _overrides(request) -> dict:
    marker = request.node.get_closest_marker("config")
    return dict(marker.kwargs) if marker else {}


@contextlib.contextmanager
def _limits_restored():
    """An app with settings of its own registers its rate limits (AUTH_RATE_LIMIT, …) on the one shared
    Flask-Limiter, keyed by blueprint name, where they would stay for every later app of this process
    (a test's "3 per minute" on the login then refuses another test's fourth login). Put the registry
    back as it was once that app is gone."""
    from app.extensions import limiter

    manager = limiter.limit_manager
    saved = {name: {key: type(value)(value) for key, value in getattr(manager, name).items()}
             for name in ("_decorated_limits", "_blueprint_limits")}
    try:
        yield
    finally:
        for name, registry in saved.items():
            getattr(manager, name).clear()
            getattr(manager, name).update(registry)


def _teardown(app) -> None:
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _suite_app(path, redis_url: str, **overrides):
    app = create_app(make_config(f"sqlite:///{path}", redis_url, **overrides))
    app.test_client_class = IsolatedClient
    return app


def _copy_template(template, path) -> None:
    """A new file at `path` (removed first: a connection still open keeps reading the old one)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    shutil.copy(template, path)


_shared: dict = {}  # this test process's reusable app: {"app", "sm", "path", "config"}


def _reused_app(template_db, redis_url: str):
    """Building the app costs about a second (FAB builds every view's forms and filters), so a test
    process reuses one between tests that override no setting. Each test still starts from a fresh copy
    of the database, an empty Redis, emptied per-process caches and the settings as they were."""
    from app.extensions import appbuilder, db
    from app.services import metadata
    from app.services.sms import words

    app = _shared.get("app")
    if app is None or _shared["sm"] is not appbuilder.sm:  # another app re-initialised the AppBuilder
        path = template_db.parent / f"shared-{os.getpid()}.db"
        _copy_template(template_db, path)
        app = _suite_app(path, redis_url)
        _shared.update(app=app, sm=appbuilder.sm, path=path, config=dict(app.config))
        return app
    _copy_template(template_db, _shared["path"])
    app.config.clear()
    app.config.update(_shared["config"])
    clock.configure(app.config["BUSINESS_TIMEZONE"])  # a test with its own BUSINESS_TIMEZONE changed it
    with app.app_context():
        metadata.install(db)
        words.install(db)
    return app


@pytest.fixture
def app(request, template_db, tmp_path, redis_server):
    """The real app on a private copy of the seeded SQLite database.

    `@pytest.mark.config(NAME=value)` overrides settings for one test (it gets an app of its own).
    """
    Redis.from_url(redis_server.url).flushdb()
    overrides = _overrides(request)
    with _limits_restored():
        if overrides:
            path = tmp_path / "crm.db"
            shutil.copy(template_db, path)
            app = _suite_app(path, redis_server.url, **overrides)
        else:
            app = _reused_app(template_db, redis_server.url)
        yield app
        _teardown(app)
    clock.configure(TestConfig.BUSINESS_TIMEZONE)  # the business time zone as the next test expects it


@pytest.fixture
def client(app):
    """A test client speaking English (the assertions read English messages)."""
    client = app.test_client()
    client.get("/lang/en")
    return client


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def session(app):
    """The app's SQLAlchemy session inside an app context, for arranging and checking rows."""
    from app.extensions import db

    with app.app_context():
        yield db.session


# --- PostgreSQL -------------------------------------------------------------------------------------
def _pg_admin(base_url: str, *statements: str) -> None:
    """Run statements on the server's maintenance database (CREATE / DROP DATABASE cannot be in a
    transaction)."""
    admin = create_engine(make_url(base_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def _recreate(base_url: str, name: str, template: str | None = None) -> None:
    clause = f' TEMPLATE "{template}"' if template else ""
    _pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"{clause}')


@pytest.fixture(scope="session")
def pg_base():
    """TEST_DATABASE_URL, or a skip saying why there is none."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL test: set TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return base


@pytest.fixture(scope="session")
def pg_url(pg_base, worker_id):
    """A PostgreSQL database of this test process's own."""
    url = make_url(pg_base)
    name = f"{url.database}_crm_{worker_id}"
    _recreate(pg_base, name)
    yield url.set(database=name).render_as_string(hide_password=False)
    _pg_admin(pg_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template(pg_base, worker_id, redis_server):
    """A migrated and seeded PostgreSQL database, built once per test process and copied per test
    (CREATE DATABASE … TEMPLATE: a file copy, much faster than migrating and seeding again)."""
    url = make_url(pg_base)
    name = f"{url.database}_crm_{worker_id}_template"
    _recreate(pg_base, name)
    app = create_app(make_config(url.set(database=name).render_as_string(hide_password=False),
                                 redis_server.url))
    build_database(app)  # disposes its engine: a template must have no open connections
    yield name
    _pg_admin(pg_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def pg_app(request, pg_base, pg_url, pg_template, redis_server):
    """The real app on a fresh copy of the migrated and seeded PostgreSQL database."""
    _recreate(pg_base, make_url(pg_url).database, template=pg_template)
    Redis.from_url(redis_server.url).flushdb()
    with _limits_restored():
        app = create_app(make_config(pg_url, redis_server.url, **_overrides(request)))
        app.test_client_class = IsolatedClient
        yield app
        _teardown(app)
    clock.configure(TestConfig.BUSINESS_TIMEZONE)


@pytest.fixture(scope="session")
def worker_id(request):
    # pytest-xdist provides this fixture; this one serves a plain `pytest` run.
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


# --- helpers ----------------------------------------------------------------------------------------
def login(client, username: str, password: str | None = None):
    if password is None:
        password = ADMIN_PASSWORD if username == "admin" else DEMO_PASSWORD
    return client.post("/login/", data={"username": username, "password": password})


def api_token(client, username: str, password: str | None = None) -> str:
    if password is None:
        password = ADMIN_PASSWORD if username == "admin" else DEMO_PASSWORD
    resp = client.post("/api/v1/security/login",
                       json={"username": username, "password": password, "provider": "db"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["access_token"]


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**settings): override app settings for one test")
    config.addinivalue_line("markers", "instant(iso): the instant the test runs at (ISO 8601 with offset)")
