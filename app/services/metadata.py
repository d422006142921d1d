"""Metadata: dictionary items and typed config items, read through a cache that drops on change.

Each process keeps a copy; a version counter in Redis tells every process (web workers, RQ workers)
that the metadata changed. Writers bump it after commit; readers look at it at most once a second.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import event, select

from app.models.metadata import CONFIG_VALUE_TYPES, ConfigItem, DictItem, DictType
from app.services.errors import DomainError

VERSION_KEY = "crm:metadata:version"
CHECK_EVERY = 1.0  # seconds between looks at the shared version
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


@dataclass(frozen=True)
class DictEntry:
    id: int
    code: str
    label_zh: str
    label_en: str
    sort: int
    enabled: bool


def parse_config_value(value_type: str, raw: str):
    """Typed value of a config item; DomainError(field="value") when `raw` is not of that type."""
    if value_type not in CONFIG_VALUE_TYPES:
        raise DomainError(f"Unknown value type {value_type!r}", field="value_type")
    text = "" if raw is None else str(raw)
    if value_type == "str":
        return text
    if value_type == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise DomainError(f"{text!r} is not a whole number", field="value") from None
    if value_type == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise DomainError(f"{text!r} is not a yes/no value (true/false)", field="value")
    if value_type == "duration":
        match = _DURATION.match(text)
        if not match:
            raise DomainError(
                f"{text!r} is not a duration: use seconds or a number with s/m/h/d, e.g. 15m",
                field="value",
            )
        return dt.timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DomainError(f"Not valid JSON: {exc}", field="value") from None


class MetadataCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dicts: dict[str, list[DictEntry]] | None = None
        self._configs: dict[str, object] | None = None
        self._version: bytes | None = None
        self._checked = 0.0
        self.redis = None  # set by install(); None means process-local only
        self.loads = 0  # how many times the cache was (re)filled: tests and benchmarks read it

    def clear(self) -> None:
        with self._lock:
            self._dicts = None
            self._configs = None

    def _shared_version(self):
        if self.redis is None:
            return None
        try:
            return self.redis.get(VERSION_KEY)
        except Exception:  # Redis down: keep serving what we have
            return self._version

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        version = self._shared_version()
        if version != self._version:
            self._version = version
            self.clear()

    def _load(self, session) -> None:
        # Columns, not entities: a session already holding these rows would hand back its old copies.
        rows = session.execute(
            select(DictType.code, DictItem.id, DictItem.code, DictItem.label_zh, DictItem.label_en,
                   DictItem.sort, DictItem.enabled)
            .join(DictItem.dict_type).order_by(DictItem.sort, DictItem.id)
        ).all()
        dicts: dict[str, list[DictEntry]] = {}
        for code, *values in rows:
            dicts.setdefault(code, []).append(DictEntry(*values))
        configs = {}
        for key, value_type, value in session.execute(
            select(ConfigItem.key, ConfigItem.value_type, ConfigItem.value)
        ):
            try:
                configs[key] = parse_config_value(value_type, value)
            except DomainError:
                continue  # validated on save; a hand-edited bad row reads as missing
        self._dicts, self._configs = dicts, configs
        self.loads += 1

    def _ensure(self, session) -> None:
        self._fresh()
        if self._dicts is None:
            with self._lock:
                if self._dicts is None:
                    self._load(session)

    def dict_items(self, session, type_code: str, include_disabled: bool = False) -> list[DictEntry]:
        self._ensure(session)
        items = self._dicts.get(type_code, [])
        return items if include_disabled else [i for i in items if i.enabled]

    def config(self, session, key: str, default=None):
        self._ensure(session)
        return self._configs.get(key, default)

    def bump(self) -> None:
        """Tell every process that metadata changed."""
        self.clear()
        self._checked = 0.0
        if self.redis is not None:
            try:
                self._version = str(self.redis.incr(VERSION_KEY)).encode()
            except Exception:
                pass


cache = MetadataCache()
_WATCHED = (DictType, DictItem, ConfigItem)


def _before_flush(session, flush_context, instances) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _WATCHED):
            session.info["metadata_changed"] = True
            return


def _after_commit(session) -> None:
    if session.info.pop("metadata_changed", False):
        cache.bump()


def _after_rollback(session) -> None:
    session.info.pop("metadata_changed", None)


_installed: set[int] = set()


def install(db) -> None:
    """Watch the app's session for metadata changes; share the version through the app's Redis."""
    from app.extensions import rq

    try:
        cache.redis = rq.redis if rq.url else None
    except RuntimeError:
        cache.redis = None
    cache.clear()
    if id(db.session) in _installed:
        return
    event.listen(db.session, "before_flush", _before_flush)
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_soft_rollback", lambda s, prev: _after_rollback(s))
    _installed.add(id(db.session))


def dict_items(session, type_code: str, include_disabled: bool = False) -> list[DictEntry]:
    return cache.dict_items(session, type_code, include_disabled)


def config_value(session, key: str, default=None):
    return cache.config(session, key, default)


def validate_config_item(item: ConfigItem) -> None:
    parse_config_value(item.value_type, item.value)


def check_dict_choice(item: DictItem | None, type_code: str, previous_id: int | None = None,
                      field: str | None = None) -> None:
    """A disabled item stays on old records but cannot be newly chosen; the type must match."""
    if item is None:
        return
    if item.dict_type is not None and item.dict_type.code != type_code:
        raise DomainError(f"{item} is not a {type_code} option", field=field)
    if not item.enabled and item.id != previous_id:
        raise DomainError(f"{item} is disabled and cannot be chosen", field=field)
