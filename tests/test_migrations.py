"""Alembic owns the schema: upgrades from empty and from every previous revision work on SQLite and
PostgreSQL, and the models match the migrations exactly (no revision is missing)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_appbuilder.models.sqla import Model
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app import create_app
from app.extensions import db
from tests.conftest import make_config, reset_pg

EXPECTED_TABLES = {"ab_user", "ab_role", "ab_permission_view", "ab_api_key", "org_unit", "employee",
                   "role_data_scope", "dict_type", "dict_item", "config_item", "audit_log", "alembic_version"}


def _revisions(app):
    with app.app_context():
        script = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())
        return list(reversed(list(script.walk_revisions())))  # oldest first


def _check_head(app):
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        assert EXPECTED_TABLES <= tables
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Model.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"


def _upgrade_paths(app):
    revisions = _revisions(app)
    assert revisions, "no migrations"
    with app.app_context():
        upgrade()
    _check_head(app)
    # From each earlier revision (and from empty) back up to head.
    for rev in reversed(revisions):
        with app.app_context():
            downgrade(revision=rev.down_revision or "base")
            upgrade()
        _check_head(app)


def test_sqlite_upgrade_from_empty_and_from_each_revision(tmp_path, redis_server):
    app = create_app(make_config(f"sqlite:///{tmp_path / 'mig.db'}", redis_server.url))
    _upgrade_paths(app)


def test_postgresql_upgrade_from_empty_and_from_each_revision(pg_url, redis_server):
    reset_pg(pg_url)
    app = create_app(make_config(pg_url, redis_server.url))
    _upgrade_paths(app)
    with app.app_context():
        # The org path compares byte-wise on PostgreSQL, so a prefix is an index range.
        collation = db.session.execute(db.text(
            "select collation_name from information_schema.columns "
            "where table_name='org_unit' and column_name='path'")).scalar()
        assert collation == "C"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_make_run_steps_are_idempotent(database, tmp_path, redis_server, request):
    """`make run` on an existing database: upgrade, sync roles, sync reference data and seed again change
    nothing."""
    url = f"sqlite:///{tmp_path / 'again.db'}" if database == "sqlite" else request.getfixturevalue("pg_url")
    if database == "postgresql":
        reset_pg(url)
    app = create_app(make_config(url, redis_server.url))
    runner = app.test_cli_runner()
    for _ in range(2):
        assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
        result = runner.invoke(args=["crm", "sync-roles"])
        assert result.exit_code == 0, result.output
        reference = runner.invoke(args=["crm", "sync-reference"])
        assert reference.exit_code == 0, reference.output
        seeded = runner.invoke(args=["crm", "seed-demo"])
        assert seeded.exit_code == 0, seeded.output
    assert '"employees": 0' in seeded.output and '"users": 0' in seeded.output
    # The second reference sync found every dictionary and config item in place.
    assert reference.output.strip() and all(line.endswith("added: none")
                                            for line in reference.output.splitlines()), reference.output
    with app.app_context():
        from app.models import AuditLog, Employee, OrgUnit

        assert db.session.query(Employee).count() >= 40
        assert db.session.query(OrgUnit).filter_by(kind="team").count() >= 6
        assert db.session.query(OrgUnit).filter_by(kind="department").count() >= 3
        # The second sync granted and revoked nothing, so wrote no permission audit rows.
        last_sync = result.output.splitlines()[1:]
        assert all(line.strip().endswith("+0 -0") for line in last_sync), result.output
        assert db.session.query(AuditLog).count() > 0
