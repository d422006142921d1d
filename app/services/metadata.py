"""Metadata: dictionary items and typed config items, read through a cache that drops on change.

Each process keeps a copy; a version counter in Redis tells every process (web workers, RQ workers)
that the metadata changed. Writers bump it after commit; readers look at it at most once a second.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from sqlalchemy import select

from app.models.metadata import CONFIG_VALUE_TYPES, ConfigItem, DictItem, DictType, _current_language
from app.services.errors import DomainError
from app.services.versioned_cache import VersionedCache

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

    @property
    def label(self) -> str:
        """The label in the reader's language (one of the two, never both joined)."""
        return self.label_en if _current_language() == "en" else self.label_zh


def parse_config_value(value_type: str, raw: str):
    """Typed value of a config item; DomainError(field="value") when `raw` is not of that type."""
    if value_type not in CONFIG_VALUE_TYPES:
        raise DomainError("Unknown value type %(value)s", field="value_type", value=repr(value_type))
    text = "" if raw is None else str(raw)
    if value_type == "str":
        return text
    if value_type == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise DomainError("%(value)s is not a whole number", field="value", value=repr(text)) from None
    if value_type == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise DomainError("%(value)s is not a yes/no value (true/false)", field="value", value=repr(text))
    if value_type == "duration":
        match = _DURATION.match(text)
        if not match:
            raise DomainError(
                "%(value)s is not a duration: use seconds or a number with s/m/h/d, e.g. 15m",
                field="value",
                value=repr(text),
            )
        return dt.timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DomainError("Not valid JSON: %(error)s", field="value", error=str(exc)) from None


class MetadataCache(VersionedCache):
    """(dictionaries, config values) of this process."""

    version_key = VERSION_KEY
    watched = (DictType, DictItem, ConfigItem)

    @property
    def loads(self) -> int:
        return self.builds

    def build(self, session) -> tuple[dict, dict]:
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
        return dicts, configs

    def dict_items(self, session, type_code: str, include_disabled: bool = False) -> list[DictEntry]:
        items = self.get(session)[0].get(type_code, [])
        return items if include_disabled else [i for i in items if i.enabled]

    def config(self, session, key: str, default=None):
        return self.get(session)[1].get(key, default)


cache = MetadataCache(CHECK_EVERY)


def install(db) -> None:
    """Watch the app's session for metadata changes; share the version through the app's Redis."""
    cache.install(db)


def dict_items(session, type_code: str, include_disabled: bool = False) -> list[DictEntry]:
    return cache.dict_items(session, type_code, include_disabled)


_DECLARED = object()


def config_value(session, key: str, default=_DECLARED):
    """The typed value of a config item; when it is missing (or unreadable), `default`, else the key's
    declared default (app.services.reference), else None."""
    value = cache.config(session, key, _DECLARED)
    if value is not _DECLARED:
        return value
    if default is _DECLARED:
        from app.services import reference

        return reference.default(key) if reference.declared(key) else None
    return default


def validate_config_item(item: ConfigItem) -> None:
    parse_config_value(item.value_type, item.value)


def check_dict_choice(item: DictItem | None, type_code: str, previous_id: int | None = None,
                      field: str | None = None) -> None:
    """A disabled item stays on old records but cannot be newly chosen; the type must match."""
    if item is None:
        return
    if item.dict_type is not None and item.dict_type.code != type_code:
        raise DomainError("%(name)s is not a %(kind)s option", field=field, name=str(item), kind=type_code)
    if not item.enabled and item.id != previous_id:
        raise DomainError("%(name)s is disabled and cannot be chosen", field=field, name=str(item))
