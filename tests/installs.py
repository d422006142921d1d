"""A production-style install for tests: migrate, sync the roles and the reference data, and no demo
data (what the README's deploy steps give). Import the fixtures into a test module to use them."""

from __future__ import annotations

import shutil

import pytest
from redis import Redis

from app import create_app
from tests.conftest import IsolatedClient, build_database, make_config


@pytest.fixture(scope="session")
def production_db(tmp_path_factory, redis_server):
    """A SQLite file built once per test process as a deploy builds it (no demo data)."""
    path = tmp_path_factory.mktemp("production") / "crm.db"
    app = create_app(make_config(f"sqlite:///{path}", redis_server.url))
    build_database(app, demo=False)
    return path


@pytest.fixture
def production_app(production_db, tmp_path, redis_server):
    """The real app on a private copy of the production-style database."""
    from app.extensions import db

    Redis.from_url(redis_server.url).flushdb()
    path = tmp_path / "production.db"
    shutil.copy(production_db, path)
    app = create_app(make_config(f"sqlite:///{path}", redis_server.url))
    app.test_client_class = IsolatedClient
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def production_session(production_app):
    from app.extensions import db

    with production_app.app_context():
        yield db.session
