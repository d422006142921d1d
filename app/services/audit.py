"""Audit log: explicit events (logins, exports, full-phone views) and automatic change capture.

Changes to the audited models are captured by one session listener, whatever wrote them (a form, the
REST API, HR sync, the CLI), and inserted in the same transaction as the change itself.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from contextlib import contextmanager
from dataclasses import dataclass

from flask import g, has_request_context, request
from flask_appbuilder.security.sqla.models import ApiKey, Role
from sqlalchemy import event, inspect

from app.clock import utcnow
from app.models.audit import AuditLog
from app.models.employee import CrmUser, Employee
from app.models.metadata import ConfigItem, DictItem, DictType
from app.models.org import OrgUnit
from app.models.security import RoleDataScope

REDACTED = "***"


@dataclass(frozen=True)
class Tracked:
    target_type: str
    fields: tuple[str, ...]
    collections: dict  # collection attribute → audit action
    action: str = "update"
    redact: tuple[str, ...] = ()


TRACKED = {
    Employee: Tracked(
        "employee",
        ("employee_no", "name", "phone", "email", "org_unit_id", "position", "level_id",
         "manager_id", "hired_on", "left_on", "hr_status", "user_id"),
        {},
    ),
    CrmUser: Tracked(
        "user",
        ("username", "first_name", "last_name", "email", "active", "password"),
        {"roles": "role_change"},
        redact=("password",),
    ),
    Role: Tracked("role", ("name",), {"permissions": "permission_change"}),
    RoleDataScope: Tracked("role", ("scope",), {}, action="scope_change"),
    OrgUnit: Tracked("org_unit", ("name", "code", "kind", "parent_id", "sort"), {}),
    DictType: Tracked("dict_type", ("code", "name_zh", "name_en", "description"), {}),
    DictItem: Tracked(
        "dict_item", ("dict_type_id", "code", "label_zh", "label_en", "sort", "enabled"), {}
    ),
    ConfigItem: Tracked("config_item", ("key", "value_type", "value", "description"), {}),
    ApiKey: Tracked("api_key", ("name", "user_id", "key_prefix", "expires_on", "revoked_on"), {}),
}

_actor: contextvars.ContextVar[tuple[int | None, str] | None] = contextvars.ContextVar(
    "audit_actor", default=None
)


@contextmanager
def acting_as(user_id: int | None, name: str):
    """Name the actor of changes made outside a request (CLI, RQ jobs, HR sync)."""
    token = _actor.set((user_id, name))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> tuple[int | None, str | None, str | None]:
    """(user id, name, ip) of whoever is acting now."""
    explicit = _actor.get()
    if explicit is not None:
        ip = request.remote_addr if has_request_context() else None
        return explicit[0], explicit[1], ip
    if has_request_context():
        user = getattr(g, "user", None)
        if user is not None and not getattr(user, "is_anonymous", True):
            return user.id, user.username, request.remote_addr
        return None, None, request.remote_addr
    return None, "system", None


def _plain(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "__table__"):
        return str(value)
    return value


def _dump(data: dict | None) -> str | None:
    if not data:
        return None
    return json.dumps(data, ensure_ascii=False, default=str, sort_keys=True)


def entry(action: str, target_type=None, target_id=None, summary=None, before=None, after=None):
    """A row for audit_log, stamped with the current actor and time."""
    actor_id, actor_name, ip = current_actor()
    return {
        "created_at": utcnow(),
        "actor_id": actor_id,
        "actor_name": actor_name,
        "action": action,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "summary": (summary or "")[:255] or None,
        "before": _dump(before),
        "after": _dump(after),
        "ip": ip,
    }


def record(session, action: str, **kwargs) -> AuditLog:
    """Add an explicit audit event to `session` (committed with the caller's transaction)."""
    row = AuditLog(**entry(action, **kwargs))
    session.add(row)
    return row


def _collection_names(values) -> list[str]:
    return sorted(str(v) for v in values)


def _changes(obj, spec: Tracked, state) -> tuple[dict, dict, list]:
    before, after, collection_rows = {}, {}, []
    for name in spec.fields:
        hist = state.attrs[name].history
        if not hist.has_changes():
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        if old == new:
            continue
        if name in spec.redact:
            old, new = (REDACTED if old else None), REDACTED
        before[name], after[name] = _plain(old), _plain(new)
    for name, action in spec.collections.items():
        hist = state.attrs[name].history
        if hist.added or hist.deleted:
            collection_rows.append(
                (action, {name: _collection_names(hist.deleted)}, {name: _collection_names(hist.added)})
            )
    return before, after, collection_rows


def _values(state, spec: Tracked) -> dict:
    """Loaded values only: reading an unloaded attribute of a deleted row would query for it."""
    return {n: _plain(state.dict.get(n)) for n in spec.fields if n not in spec.redact}


def _target_id(obj):
    """Primary key of `obj` (assigned by the flush for new rows), joined with "/" when composite."""
    values = inspect(obj).mapper.primary_key_from_instance(obj)
    if any(v is None for v in values):
        return None
    return values[0] if len(values) == 1 else "/".join(map(str, values))


def _collect(session) -> list[dict]:
    rows = []
    for obj in list(session.new):
        spec = TRACKED.get(type(obj))
        if spec:
            state = inspect(obj)
            values = _values(state, spec)
            rows.append(entry("create", spec.target_type, _target_id(obj), str(obj), None, values))
            for action, old, new in _changes(obj, spec, state)[2]:
                rows.append(entry(action, spec.target_type, _target_id(obj), str(obj), old, new))
    for obj in list(session.dirty):
        spec = TRACKED.get(type(obj))
        if not spec:
            continue
        before, after, collection_rows = _changes(obj, spec, inspect(obj))
        if before or after:
            rows.append(entry(spec.action, spec.target_type, _target_id(obj), str(obj), before, after))
        for action, old, new in collection_rows:
            rows.append(entry(action, spec.target_type, _target_id(obj), str(obj), old, new))
    for obj in list(session.deleted):
        spec = TRACKED.get(type(obj))
        if spec:
            values = _values(inspect(obj), spec)
            rows.append(entry("delete", spec.target_type, _target_id(obj), str(obj), values, None))
    return rows


def _after_flush(session, flush_context) -> None:
    rows = _collect(session)
    if rows:
        session.connection().execute(AuditLog.__table__.insert(), rows)


_installed: set[int] = set()


def install(db) -> None:
    """Attach the change-capture listener to the app's session class (once per session class)."""
    target = db.session
    if id(target) in _installed:
        return
    event.listen(target, "after_flush", _after_flush)
    _installed.add(id(target))
