"""Metadata: typed config items validated on save (form and API), parse_config_value per type, the read
cache and its drop on change (in this process and, through the Redis version key, in another one), and
dictionary items: enable/disable, what the Employee "level" dropdown offers, deletes refused."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from redis import Redis
from sqlalchemy import func, select

from app.models.metadata import ConfigItem, DictItem, DictType
from app.services import metadata
from app.services.errors import DomainError
from app.services.metadata import VERSION_KEY, MetadataCache, parse_config_value
from app.services.seed import CONFIG, DICTIONARIES
from tests import factories
from tests.conftest import login
from tests.helpers import field_errors, flashes


# --- helpers ----------------------------------------------------------------------------------------
@pytest.fixture
def admin(client):
    login(client, "admin")
    return client


def select_options(html: str, name: str) -> list[str]:
    match = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert match, name
    return re.findall(r'<option[^>]*value="([^"]*)"', match.group(1))


def config_rows(session) -> dict[str, tuple[str, str]]:
    session.expire_all()
    return {k: (t, v) for k, t, v in session.execute(select(ConfigItem.key, ConfigItem.value_type,
                                                            ConfigItem.value))}


def config_id(session, key: str) -> int:
    return session.scalar(select(ConfigItem.id).where(ConfigItem.key == key))


def shared_version(app) -> int:
    raw = Redis.from_url(app.config["REDIS_URL"]).get(VERSION_KEY)
    return int(raw) if raw is not None else 0


def level_ids(session, enabled: bool | None = None) -> set[str]:
    session.expire_all()
    query = select(DictItem.id).join(DictItem.dict_type).where(DictType.code == "employee_level")
    if enabled is not None:
        query = query.where(DictItem.enabled.is_(enabled))
    return {str(i) for i in session.scalars(query)}


# --- parse_config_value -----------------------------------------------------------------------------
@pytest.mark.parametrize("value_type,raw,expected", [
    ("int", "42", 42), ("int", " -7 ", -7), ("int", "0", 0),
    ("bool", "true", True), ("bool", "Yes", True), ("bool", "1", True), ("bool", "on", True),
    ("bool", "false", False), ("bool", "NO", False), ("bool", "0", False), ("bool", "off", False),
    ("str", "", ""), ("str", "  any text 42 ", "  any text 42 "),
    ("duration", "15m", dt.timedelta(minutes=15)), ("duration", "2h", dt.timedelta(hours=2)),
    ("duration", "7d", dt.timedelta(days=7)), ("duration", "30", dt.timedelta(seconds=30)),
    ("duration", "45s", dt.timedelta(seconds=45)), ("duration", " 3d ", dt.timedelta(days=3)),
    ("json", '{"start": "09:00", "end": [1, 2]}', {"start": "09:00", "end": [1, 2]}),
    ("json", "[]", []), ("json", "null", None), ("json", "3.5", 3.5),
])
def test_parse_config_value_accepts(value_type, raw, expected):
    assert parse_config_value(value_type, raw) == expected


@pytest.mark.parametrize("value_type,raw", [
    ("int", "abc"), ("int", "4.2"), ("int", ""), ("bool", "maybe"), ("bool", ""),
    ("duration", "15 minutes"), ("duration", "1.5h"), ("duration", "-5m"), ("duration", "15x"),
    ("duration", ""), ("json", "{bad"), ("json", ""), ("json", "{'single': 'quotes'}"),
])
def test_parse_config_value_refuses(value_type, raw):
    with pytest.raises(DomainError) as exc:
        parse_config_value(value_type, raw)
    assert exc.value.field == "value" and exc.value.status == 422


def test_parse_config_value_unknown_type():
    with pytest.raises(DomainError) as exc:
        parse_config_value("float", "1.5")
    assert exc.value.field == "value_type"


# --- config items through the form and the API ------------------------------------------------------
BAD_VALUES = [("int", "abc", "not a whole number"), ("bool", "maybe", "not a yes/no value"),
              ("duration", "15 minutes", "not a duration"), ("json", "{bad", "Not valid JSON")]
GOOD_VALUES = [("int", "42"), ("bool", "yes"), ("str", "anything at all"), ("duration", "15m"),
               ("json", '{"a": [1, 2]}')]


@pytest.mark.parametrize("value_type,value,message", BAD_VALUES)
def test_config_form_refuses_bad_value_with_field_error(admin, session, value_type, value, message):
    before = config_rows(session)
    resp = admin.post("/configitemview/add", data={"key": "test.new", "value_type": value_type,
                                                   "value": value, "description": "x"})
    assert resp.status_code == 200
    assert message in field_errors(resp.text).get("value", ""), field_errors(resp.text)

    key = "circulation.idle_days"
    resp = admin.post(f"/configitemview/edit/{config_id(session, key)}",
                      data={"key": key, "value_type": value_type, "value": value, "description": "x"})
    assert resp.status_code == 200
    assert message in field_errors(resp.text).get("value", "")
    assert config_rows(session) == before


@pytest.mark.parametrize("value_type,value,message", BAD_VALUES)
def test_config_api_refuses_bad_value_with_422(admin, session, value_type, value, message):
    before = config_rows(session)
    resp = admin.post("/api/v1/config_item/",
                      json={"key": "test.new", "value_type": value_type, "value": value})
    assert resp.status_code == 422
    assert resp.get_json()["field"] == "value" and message in resp.get_json()["message"]
    key = "calls.max_daily_attempts"
    resp = admin.put(f"/api/v1/config_item/{config_id(session, key)}",
                     json={"value_type": value_type, "value": value})
    assert resp.status_code == 422 and resp.get_json()["field"] == "value"
    assert config_rows(session) == before


def test_config_api_refuses_unknown_type(admin, session):
    before = config_rows(session)
    resp = admin.post("/api/v1/config_item/", json={"key": "test.float", "value_type": "float", "value": "1"})
    assert resp.status_code == 422 and resp.get_json()["field"] == "value_type"
    assert config_rows(session) == before


def test_config_accepts_every_type_by_form_and_api(admin, session):
    for n, (value_type, value) in enumerate(GOOD_VALUES):
        resp = admin.post("/configitemview/add", data={"key": f"test.form{n}", "value_type": value_type,
                                                       "value": value, "description": ""})
        assert resp.status_code == 302, field_errors(resp.text)
        resp = admin.post("/api/v1/config_item/", json={"key": f"test.api{n}", "value_type": value_type,
                                                        "value": value})
        assert resp.status_code == 201, resp.get_json()
    rows = config_rows(session)
    for n, (value_type, value) in enumerate(GOOD_VALUES):
        assert rows[f"test.form{n}"] == rows[f"test.api{n}"] == (value_type, value)
        assert metadata.config_value(session, f"test.api{n}") == parse_config_value(value_type, value)


# --- the cache --------------------------------------------------------------------------------------
def test_cache_reads_database_values(app, session):
    metadata.cache.clear()
    for key, value_type, value, _ in CONFIG:
        assert metadata.config_value(session, key) == parse_config_value(value_type, value)
    assert metadata.config_value(session, "no.such.key", "fallback") == "fallback"
    for (code, _, _), items in DICTIONARIES.items():
        assert [i.code for i in metadata.dict_items(session, code)] == [c for c, _, _ in items]
    assert metadata.dict_items(session, "no_such_dict") == []


def test_cache_drops_on_change_and_only_then(app, admin, session):
    cache = metadata.cache
    cache.clear()
    cache._checked = 0.0  # the cache is per process: let it first take this test's shared version
    key = "circulation.idle_days"
    assert metadata.config_value(session, key) == 7
    loads = cache.loads
    version = shared_version(app)
    # Reads between changes come from memory, even after the version check interval.
    for _ in range(3):
        assert metadata.config_value(session, key) == 7
        assert [i.code for i in metadata.dict_items(session, "employee_level")][:2] == ["P1", "P2"]
        cache._checked = 0.0
    assert cache.loads == loads

    resp = admin.put(f"/api/v1/config_item/{config_id(session, key)}", json={"value": "9"})
    assert resp.status_code == 200, resp.get_json()
    assert shared_version(app) == version + 1
    session.expire_all()
    assert metadata.config_value(session, key) == 9
    assert cache.loads == loads + 1
    assert metadata.config_value(session, key) == 9
    assert cache.loads == loads + 1

    # A refused change commits nothing: no bump, no reload.
    resp = admin.put(f"/api/v1/config_item/{config_id(session, key)}",
                     json={"value_type": "int", "value": "x"})
    assert resp.status_code == 422
    assert metadata.config_value(session, key) == 9
    assert (cache.loads, shared_version(app)) == (loads + 1, version + 1)

    # A change to a dictionary drops it too.
    p2 = factories.dict_item(session, "employee_level", "P2")
    resp = admin.put(f"/api/v1/dict_item/{p2.id}", json={"label_en": "P2 Mid-level"})
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()
    labels = {i.code: i.label_en for i in metadata.dict_items(session, "employee_level")}
    assert labels["P2"] == "P2 Mid-level"
    assert (cache.loads, shared_version(app)) == (loads + 2, version + 2)


def test_other_process_sees_change_through_shared_version(app, admin, session):
    other = MetadataCache()  # another process's cache, on the same Redis
    other.redis = Redis.from_url(app.config["REDIS_URL"])
    key = "sms.marketing_enabled"
    assert other.config(session, key) is True
    assert other.loads == 1

    resp = admin.put(f"/api/v1/config_item/{config_id(session, key)}", json={"value": "false"})
    assert resp.status_code == 200, resp.get_json()
    assert other.redis.get(VERSION_KEY) is not None
    session.expire_all()

    other._checked = time.monotonic()  # within CHECK_EVERY of its last look: still the old copy
    assert other.config(session, key) is True
    assert other.loads == 1
    other._checked = 0.0  # CHECK_EVERY has passed
    assert other.config(session, key) is False
    assert other.loads == 2
    other._checked = 0.0  # no further change: no further load
    assert other.config(session, key) is False
    assert other.loads == 2


# --- dictionary items -------------------------------------------------------------------------------
def test_disable_and_enable_actions_drive_the_level_dropdown(app, admin, session):
    p3 = factories.dict_item(session, "employee_level", "P3")
    m1 = factories.dict_item(session, "employee_level", "M1")
    targets = {str(p3.id), str(m1.id)}
    assert targets <= set(select_options(admin.get("/employeeview/add").text, "level"))

    resp = admin.post("/dictitemview/action_post", data={"action": "disable_items", "rowid": sorted(targets)})
    assert resp.status_code == 302
    assert level_ids(session, enabled=False) == targets
    offered = set(select_options(admin.get("/employeeview/add").text, "level")) - {"__None"}
    assert offered == level_ids(session, enabled=True) == level_ids(session) - targets
    session.expire_all()
    assert {i.code for i in metadata.dict_items(session, "employee_level")} == {"P1", "P2", "M2"}
    assert {i.code for i in metadata.dict_items(session, "employee_level", include_disabled=True)} == {
        "P1", "P2", "P3", "M1", "M2"}

    resp = admin.post(f"/dictitemview/action/enable_items/{p3.id}")
    assert resp.status_code == 302
    assert level_ids(session, enabled=False) == {str(m1.id)}
    offered = set(select_options(admin.get("/employeeview/add").text, "level")) - {"__None"}
    assert offered == level_ids(session) - {str(m1.id)}
    session.expire_all()
    assert "P3" in {i.code for i in metadata.dict_items(session, "employee_level")}


def test_delete_dict_item_refused(admin, session):
    p3 = factories.dict_item(session, "employee_level", "P3")
    count = session.scalar(select(func.count()).select_from(DictItem))
    resp = admin.delete(f"/api/v1/dict_item/{p3.id}")
    assert resp.status_code == 409 and "disable it instead" in resp.get_json()["message"]
    resp = admin.post(f"/dictitemview/delete/{p3.id}", follow_redirects=True)
    assert any("disable it instead" in m for m in flashes(resp.text)), flashes(resp.text)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(DictItem)) == count


def test_delete_dict_type_with_items_refused_without_items_allowed(admin, session):
    lead_source = session.scalar(select(DictType).where(DictType.code == "lead_source"))
    types = session.scalar(select(func.count()).select_from(DictType))
    resp = admin.delete(f"/api/v1/dict_type/{lead_source.id}")
    assert resp.status_code == 409 and "still has items" in resp.get_json()["message"]
    resp = admin.post(f"/dicttypeview/delete/{lead_source.id}", follow_redirects=True)
    assert any("still has items" in m for m in flashes(resp.text)), flashes(resp.text)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(DictType)) == types

    resp = admin.post("/api/v1/dict_type/", json={"code": "empty_one", "name_zh": "空", "name_en": "Empty"})
    assert resp.status_code == 201, resp.get_json()
    resp = admin.delete(f"/api/v1/dict_type/{resp.get_json()['id']}")
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(DictType)) == types


def test_reload_reads_the_database_not_a_sessions_stale_copies(app, admin, session):
    """A long-lived session (an RQ worker's) already holding the rows must not feed old values back."""
    metadata.cache.clear()
    metadata.cache._checked = 0.0
    p1 = factories.dict_item(session, "employee_level", "P1")
    assert p1.enabled and metadata.config_value(session, "calls.max_daily_attempts") == 5
    resp = admin.put(f"/api/v1/dict_item/{p1.id}", json={"enabled": False})
    assert resp.status_code == 200, resp.get_json()
    dials = config_id(session, "calls.max_daily_attempts")
    resp = admin.put(f"/api/v1/config_item/{dials}", json={"value": "6"})
    assert resp.status_code == 200, resp.get_json()
    # No expire_all here: the session still holds P1 and the config row as it loaded them.
    assert "P1" not in {i.code for i in metadata.dict_items(session, "employee_level")}
    assert metadata.config_value(session, "calls.max_daily_attempts") == 6
