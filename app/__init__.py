"""Application factory: start-up as ordered steps (config, db, CSRF, then FAB, then views and CLI)."""

from __future__ import annotations

import os
import sqlite3

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import INSTANCE_DIR, get_config


def create_app(config=None) -> Flask:
    """Build the app. `config` is a settings class, its name, or None for $CRM_CONFIG."""
    app = Flask(__name__, instance_path=INSTANCE_DIR)
    cfg = config if isinstance(config, type) else get_config(config)
    app.config.from_object(cfg)
    _init_config_overrides(app)
    with app.app_context():
        _init_extensions(app)
        _init_appbuilder(app)
        _init_locale(app)
        _init_views(app)
        _init_cli(app)
    return app


def _init_config_overrides(app: Flask) -> None:
    from app import clock

    os.makedirs(app.instance_path, exist_ok=True)
    # One business time zone: the clock's, and Flask-Babel's for the dates it formats.
    app.config["BABEL_DEFAULT_TIMEZONE"] = clock.configure(app.config.get("BUSINESS_TIMEZONE")).key
    # Behind N reverse proxies, the client's address is the Nth from the right of X-Forwarded-For: the
    # per-address limits (login, public lead capture, chat) need it. 0 (the default) trusts no header,
    # so a client cannot pick the address it is limited by.
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    if not app.config.get("RATELIMIT_STORAGE_URI"):
        redis_url = app.config.get("REDIS_URL")
        app.config["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    # FAB calls this setting as a function: config.py can only name it (importing app there is circular).
    validator = app.config.get("FAB_PASSWORD_COMPLEXITY_VALIDATOR")
    if isinstance(validator, str):
        from werkzeug.utils import import_string

        app.config["FAB_PASSWORD_COMPLEXITY_VALIDATOR"] = import_string(validator)


def _init_extensions(app: Flask) -> None:
    from app import models  # noqa: F401  (registers every table on Model.metadata)
    from app.extensions import csrf, db, migrate, rq
    from app.security import csrf as csrf_api
    from app.services import audit, metadata

    db.init_app(app)
    # CSRF before AppBuilder, so that FAB's API blueprints get exempted.
    csrf.init_app(app)
    csrf_api.install(app)  # ... and API writes by a browser session need the token all the same
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    rq.init_app(app)
    audit.install(db)
    metadata.install(db)
    from app.services.sms import words

    words.install(db)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite file databases in WAL mode: readers (web, the preparation's chunk reads) go on while a
    writer commits, instead of waiting on its lock; synchronous=NORMAL is durable in WAL mode."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        if cursor.execute("PRAGMA database_list").fetchone()[2]:  # a file, not :memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


event.listen(Engine, "connect", _sqlite_pragmas)


def _init_appbuilder(app: Flask) -> None:
    from app.extensions import appbuilder, db

    # One AppBuilder object per process, re-initialised per app (the test-suite builds several).
    appbuilder.__init__(update_perms=False)
    appbuilder.init_app(app, db.session)


def _init_locale(app: Flask) -> None:
    """FAB takes the language from `?_l_=` or the one chosen in the session, else the default (zh_CN).
    A caller that has chosen neither — an API client, a first visit — gets the best match of its
    Accept-Language header first, as HTTP means it."""
    from flask import request, session

    babel = app.extensions["babel"]
    fab_selector = babel.locale_selector

    def select():
        if "_l_" not in request.args and not session.get("locale"):
            best = request.accept_languages.best_match(list(app.config["LANGUAGES"]))
            if best:
                return best
        return fab_selector()

    babel.locale_selector = select


def _init_views(app: Flask) -> None:
    from app.security import input_guards
    from app.views import labels, openapi, register_views, times

    register_views(app)
    times.install(app)  # jsonify's datetimes, the `local_dt` Jinja filter, FAB's own views' times
    labels.install(app)  # the `label` / `role_name` Jinja filters (app/views/labels.py)
    input_guards.install(app)  # hostile input answers 4xx, never 500: ids, NUL, body caps, last resort
    openapi.install(app)  # /api/v1/_openapi completed and valid; API errors as JSON


def _init_cli(app: Flask) -> None:
    from app.cli import crm

    app.cli.add_command(crm)
