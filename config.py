"""Settings classes. Every setting can be overridden by an environment variable of the same name.

`Config` is the embedded default (SQLite file, embedded Redis started by `run.py`), `TestConfig` is
what the test-suite uses, `ProductionConfig` refuses to start without its secrets.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

BASE_DIR = os.path.abspath(os.path.dirname(__file__))
INSTANCE_DIR = os.environ.get("CRM_INSTANCE_DIR", os.path.join(BASE_DIR, "instance"))


def _env(name: str, default):
    """Read `name` from the environment, converted to the type of `default`."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, (dict, list)):
        return json.loads(raw)
    return raw


def _normalise_db_url(url: str) -> str:
    # Heroku-style URLs name the scheme "postgres://", which SQLAlchemy 2 rejects.
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url


class Config:
    ENV_NAME = "default"
    SECRET_KEY = _env("SECRET_KEY", "dev-only-not-secret-change-me")
    SQLALCHEMY_DATABASE_URI = _normalise_db_url(
        _env("DATABASE_URL", "sqlite:///" + os.path.join(INSTANCE_DIR, "crm.db"))
    )
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    # Empty means "start an embedded Redis" (run.py does, and exports the URL it chose).
    REDIS_URL = _env("REDIS_URL", "")
    RQ_QUEUES = ["high", "default", "low"]
    # Alembic owns the schema: FAB must not create_all() behind its back. Permissions and roles are
    # written by `flask crm sync-roles` (make run, deploys), never by a web or worker process at start-up.
    FAB_CREATE_DB = False
    FAB_SECURITY_MANAGER_CLASS = "app.security.manager.CrmSecurityManager"
    FAB_INDEX_VIEW = "app.views.home.HomeView"
    FAB_BASE_TEMPLATE = "crm/base.html"  # FAB's layout plus the inbox bell in the navbar
    APP_NAME = _env("APP_NAME", "CRM Console")  # translated on screen (app/views/labels.py)
    APP_THEME = ""
    # CSRF: WTF_CSRF_ENABLED is the setting that counts (CSRF_ENABLED does nothing).
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None
    FAB_ALLOW_GET_UNSAFE_MUTATIONS = False
    # Login rate limiting: both flags are needed; the JSON login has its own limit (CRM_API_LOGIN_LIMIT).
    AUTH_TYPE = 1  # AUTH_DB
    AUTH_RATE_LIMITED = _env("AUTH_RATE_LIMITED", True)
    AUTH_RATE_LIMIT = _env("AUTH_RATE_LIMIT", "10 per minute")
    CRM_API_LOGIN_LIMIT = _env("CRM_API_LOGIN_LIMIT", "10 per minute")
    RATELIMIT_ENABLED = _env("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = _env("RATELIMIT_STORAGE_URI", "")  # empty: the app's Redis
    RATELIMIT_HEADERS_ENABLED = True
    FAB_PASSWORD_COMPLEXITY_ENABLED = True
    FAB_PASSWORD_COMPLEXITY_VALIDATOR = "app.security.passwords.validate_password"
    AUTH_USER_REGISTRATION = False
    # REST API: Swagger UI and OpenAPI, API keys for system-to-system calls.
    FAB_API_SWAGGER_UI = True
    FAB_API_KEY_ENABLED = True
    FAB_API_KEY_PREFIXES = ["crm_"]
    FAB_API_MAX_PAGE_SIZE = 500
    # Any request body, chunked ones too (app/security/input_guards.py): the largest legitimate one is a
    # lead import file (20 MB). Callbacks and receipts have their own 1 MB cap.
    MAX_CONTENT_LENGTH = _env("MAX_CONTENT_LENGTH", 32 * 1024 * 1024)
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=_env("JWT_ACCESS_MINUTES", 30))
    # i18n: zh_CN by default, English on the language menu.
    BABEL_DEFAULT_LOCALE = _env("BABEL_DEFAULT_LOCALE", "zh_CN")
    # The business time zone: working hours, quiet hours, daily limits and every time a person reads
    # (app/clock.py). Flask-Babel formats in it too: create_app sets BABEL_DEFAULT_TIMEZONE from it.
    BUSINESS_TIMEZONE = _env("BUSINESS_TIMEZONE", "Asia/Shanghai")
    BABEL_TRANSLATION_DIRECTORIES = os.path.join(BASE_DIR, "app", "translations")
    LANGUAGES = {
        "zh_CN": {"flag": "cn", "name": "简体中文"},
        "en": {"flag": "gb", "name": "English"},
    }
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    PERMANENT_SESSION_LIFETIME = timedelta(hours=_env("SESSION_HOURS", 12))
    # Domain settings.
    CRM_DEFAULT_REGION = _env("CRM_DEFAULT_REGION", "CN")  # phone numbers without +country
    CRM_LIST_COUNT_CAP = _env("CRM_LIST_COUNT_CAP", 10_000)  # lists count this far, then "10,000+"
    CRM_LIST_MAX_OFFSET = _env("CRM_LIST_MAX_OFFSET", 10_000)  # numbered pages up to here; keyset beyond
    DASHBOARD_CACHE_SECONDS = _env("DASHBOARD_CACHE_SECONDS", 30)  # one summary per scope and filters
    CRM_EXPORT_MAX_ROWS = _env("CRM_EXPORT_MAX_ROWS", 1_000_000)  # rows per export at most (0: no cap)
    CRM_EXPORT_STREAM_MAX_ROWS = _env("CRM_EXPORT_STREAM_MAX_ROWS", 5_000)  # bigger exports run as a job
    CRM_EXPORT_RETENTION_DAYS = _env("CRM_EXPORT_RETENTION_DAYS", 7)  # export files are then deleted
    CRM_EXPORT_CHUNK_ROWS = _env("CRM_EXPORT_CHUNK_ROWS", 2_000)  # read, written and checkpointed at a time
    CRM_EXPORT_DIR = _env("CRM_EXPORT_DIR", "")  # default <instance>/exports; shared by web and workers
    CRM_AUDIT_RETENTION_DAYS = _env("CRM_AUDIT_RETENTION_DAYS", 365)
    # The job runner (app.services.runner): attempts per run, and heartbeat age at which a run is dead.
    CRM_JOB_MAX_ATTEMPTS = _env("CRM_JOB_MAX_ATTEMPTS", 5)
    CRM_JOB_STALE_SECONDS = _env("CRM_JOB_STALE_SECONDS", 60)
    CRM_LIST_MAX_PAGE_SIZE = _env("CRM_LIST_MAX_PAGE_SIZE", 200)  # rows per page of an HTML list
    # The public site (landing pages /p/<slug>, /sitemap.xml, robots.txt, the chat widget): its canonical
    # base URL (empty: the request's host), and the lead capture endpoint's limit per client address.
    PUBLIC_BASE_URL = _env("PUBLIC_BASE_URL", "")
    TRUSTED_PROXIES = _env("TRUSTED_PROXIES", 0)  # reverse proxies in front (nginx: 1); see app/__init__.py
    CRM_CAPTURE_IP_LIMIT = _env("CRM_CAPTURE_IP_LIMIT", "20 per minute")
    CRM_CHAT_IP_LIMIT = _env("CRM_CHAT_IP_LIMIT", "60 per minute")
    CRM_PUBLIC_CORS_ORIGINS = _env("CRM_PUBLIC_CORS_ORIGINS", "*")  # /api/v1/public/ only; space-separated
    CRM_SHOP_WEBHOOK_LIMIT = _env("CRM_SHOP_WEBHOOK_LIMIT", "600 per minute")  # per client address
    CRM_LEARNING_API_LIMIT = _env("CRM_LEARNING_API_LIMIT", "120 per minute")  # per client address
    CRM_BIGDATA_API_LIMIT = _env("CRM_BIGDATA_API_LIMIT", "120 per minute")  # per client address
    # Inbound integrations signed with HMAC (README "Inbound integrations"): the shop's webhook and the
    # learning system's import. Empty: that integration refuses every call (401).
    SHOP_WEBHOOK_SECRET = _env("SHOP_WEBHOOK_SECRET", "")
    LEARNING_API_SECRET = _env("LEARNING_API_SECRET", "")
    BIGDATA_API_SECRET = _env("BIGDATA_API_SECRET", "")  # the big-data system's tags and behaviour events
    CRM_SIGNATURE_WINDOW_SECONDS = _env("CRM_SIGNATURE_WINDOW_SECONDS", 300)  # timestamp skew accepted


class TestConfig(Config):
    ENV_NAME = "test"
    TESTING = True
    SECRET_KEY = "test-secret"
    WTF_CSRF_ENABLED = False  # tests that check CSRF switch it back on
    FAB_PASSWORD_COMPLEXITY_ENABLED = True
    AUTH_RATE_LIMIT = "1000 per minute"
    CRM_API_LOGIN_LIMIT = "1000 per minute"
    SHOP_WEBHOOK_SECRET = "test-shop-secret"
    LEARNING_API_SECRET = "test-learning-secret"
    BIGDATA_API_SECRET = "test-bigdata-secret"


class ProductionConfig(Config):
    ENV_NAME = "production"
    REQUIRED = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")
    SESSION_COOKIE_SECURE = _env("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = _env("SESSION_COOKIE_SECURE", True)
    PREFERRED_URL_SCHEME = "https"

    @classmethod
    def check(cls) -> None:
        missing = [name for name in cls.REQUIRED if not os.environ.get(name)]
        if missing:
            raise RuntimeError(
                "Production configuration needs these environment variables: "
                + ", ".join(missing)
            )


CONFIGS = {"default": Config, "test": TestConfig, "production": ProductionConfig}


def get_config(name: str | None = None):
    """The settings class named by `name` or by $CRM_CONFIG (default / test / production)."""
    name = name or os.environ.get("CRM_CONFIG", "default")
    try:
        cls = CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"Unknown CRM_CONFIG {name!r}; use one of {sorted(CONFIGS)}") from None
    if hasattr(cls, "check"):
        cls.check()
    return cls
