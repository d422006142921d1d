"""Audit log: explicit events (logins, exports, full-phone views, reviews) and automatic change capture.

What steers ownership, messaging and access — people and roles, org units, dictionaries and config items,
dispatch and circulation rules, pools, sales profiles, SMS channels, templates and words, the outbound-call
configuration — is declared once in `AUDITED` below. One session listener captures every create, update and
delete of those rows, whatever wrote them (a form, the REST API, HR sync, the CLI, a job), and inserts the
audit rows in the same transaction as the change: who, when, from which IP, before and after. Secrets
(encrypted columns, passwords, key hashes, config items named like a secret) never reach the log: left out
of a created or deleted row, "***" in a change.
Views and commands do not call the audit for plain row changes; they record only domain events that are not
one (a login, an export, a full-number view, a claim, a template review).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import g, has_request_context, request
from flask_appbuilder.security.sqla.models import ApiKey, Role
from sqlalchemy import event, inspect

from app.clock import utcnow
from app.models.audit import AuditLog
from app.models.bigdata import Segment, Tag
from app.models.calls import CallLine, CallNumber, OutboundInterface, Seat
from app.models.employee import CrmUser, Employee
from app.models.marketing import CampaignSpend, LandingPage, MarketingCampaign
from app.models.metadata import ConfigItem, DictItem, DictType
from app.models.org import OrgUnit
from app.models.sales import CirculationRule, DispatchRule, Pool, SalesProfile
from app.models.security import RoleDataScope
from app.models.sms import SensitiveWord, SmsChannel, SmsTemplate

REDACTED = "***"
REPLACED = "*** (replaced)"  # a secret changed from one value to another
#: Column names that hold a secret: their values never reach the log (an env var's *name* is no secret).
SECRET_COLUMN = re.compile(r"^encrypted_|password|_hash$|^secret$|api_key|token")
#: Config items whose key names a secret: their value is redacted.
SECRET_KEY = re.compile(r"secret|password|token|api_key|access_key", re.I)
#: Bookkeeping columns, never audited.
BOOKKEEPING = frozenset({"created_at", "updated_at", "created_on", "changed_on"})


@dataclass(frozen=True)
class Tracked:
    """How one model is audited: its target type in the log, the columns compared, the collections whose
    membership changes are logged as `collections[name]` actions, the redacted columns, and optionally
    `secret_columns(obj)`: more columns redacted for that row (the value of a config item holding a
    password)."""

    target_type: str
    fields: tuple[str, ...]
    collections: dict = field(default_factory=dict)
    action: str = "update"
    redact: tuple[str, ...] = ()
    secret_columns: Callable | None = None


def audited(model, target_type: str, *, fields=None, exclude=(), collections=None, action="update",
            redact=(), secret_columns=None) -> tuple[type, Tracked]:
    """Declare `model` audited. By default every column but its primary key, the bookkeeping timestamps
    and `exclude` (counters and engine state that are not configuration); columns named like a secret
    are redacted without being listed."""
    mapper = inspect(model)
    keys = {c.key for c in mapper.primary_key}
    columns = [p.key for p in mapper.column_attrs]
    chosen = tuple(fields or (c for c in columns if c not in keys | BOOKKEEPING | set(exclude)))
    secret = tuple(redact) + tuple(c for c in chosen if SECRET_COLUMN.search(c) and c not in redact)
    return model, Tracked(target_type, chosen, dict(collections or {}), action, secret, secret_columns)


def _secret_config(item) -> tuple[str, ...]:
    return ("value",) if SECRET_KEY.search(item.key or "") else ()


AUDITED = dict([
    # people and access
    audited(Employee, "employee", fields=(
        "employee_no", "name", "phone", "email", "org_unit_id", "position", "level_id", "manager_id",
        "hired_on", "left_on", "hr_status", "user_id")),
    audited(CrmUser, "user", fields=("username", "first_name", "last_name", "email", "active", "password"),
            collections={"roles": "role_change"}),
    audited(Role, "role", fields=("name",), collections={"permissions": "permission_change"}),
    audited(RoleDataScope, "role", fields=("scope",), action="scope_change"),
    audited(ApiKey, "api_key", fields=("name", "user_id", "key_prefix", "expires_on", "revoked_on")),
    # organisation and metadata
    audited(OrgUnit, "org_unit", fields=("name", "code", "kind", "parent_id", "sort")),
    audited(DictType, "dict_type", fields=("code", "name_zh", "name_en", "description")),
    audited(DictItem, "dict_item",
            fields=("dict_type_id", "code", "label_zh", "label_en", "sort", "enabled")),
    audited(ConfigItem, "config_item", fields=("key", "value_type", "value", "description"),
            secret_columns=_secret_config),
    # ownership: who receives, keeps and loses opportunities
    audited(DispatchRule, "dispatch_rule", exclude=("state",)),  # state: the strategy's counters
    audited(CirculationRule, "circulation_rule"),
    audited(Pool, "pool"),
    audited(SalesProfile, "sales_profile", fields=("paused", "weight", "daily_quota", "capacity")),
    # messaging (a template's review moves are audited as review events)
    audited(SmsChannel, "sms_channel"),
    audited(SmsTemplate, "sms_template", exclude=("status", "reviewed_by", "review_note")),
    audited(SensitiveWord, "sensitive_word"),
    # outbound calling
    audited(OutboundInterface, "call_interface"),
    audited(CallLine, "call_line"),
    audited(CallNumber, "call_number"),
    audited(Seat, "seat"),
    # the public site: what a landing page says and whether it is public
    audited(LandingPage, "landing_page"),
    # marketing: campaigns and the spend typed in (an import is one "spend_import" event)
    audited(MarketingCampaign, "marketing_campaign", exclude=("created_by_id",)),
    audited(CampaignSpend, "campaign_spend", exclude=("created_by_id",)),
    # big data: tag definitions (their members are computed, imported or tagged by hand: events of their own)
    audited(Tag, "tag", exclude=("member_count", "computed_at")),
    audited(Segment, "segment", exclude=("last_count", "counted_at")),
])

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


def _shown(spec: Tracked, obj, name: str, value):
    """`value` of column `name` as the log keeps it: "***" for a set secret."""
    secret = name in spec.redact or (spec.secret_columns is not None and name in spec.secret_columns(obj))
    if secret:
        return REDACTED if value not in (None, "") else value
    return _plain(value)


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
        before[name], after[name] = _shown(spec, obj, name, old), _shown(spec, obj, name, new)
        if before[name] == after[name] == REDACTED:
            after[name] = REPLACED
    for name, action in spec.collections.items():
        hist = state.attrs[name].history
        if hist.added or hist.deleted:
            collection_rows.append(
                (action, {name: _collection_names(hist.deleted)}, {name: _collection_names(hist.added)})
            )
    return before, after, collection_rows


def _values(obj, state, spec: Tracked) -> dict:
    """The row as created or deleted, secrets left out. Loaded values only: reading an unloaded attribute
    of a deleted row would query for it."""
    secret = set(spec.redact) | set(spec.secret_columns(obj) if spec.secret_columns else ())
    return {n: _plain(state.dict.get(n)) for n in spec.fields if n in state.dict and n not in secret}


def _target_id(obj):
    """Primary key of `obj` (assigned by the flush for new rows), joined with "/" when composite."""
    values = inspect(obj).mapper.primary_key_from_instance(obj)
    if any(v is None for v in values):
        return None
    return values[0] if len(values) == 1 else "/".join(map(str, values))


def _collect(session) -> list[dict]:
    rows = []
    for obj in list(session.new):
        spec = AUDITED.get(type(obj))
        if spec:
            state = inspect(obj)
            values = _values(obj, state, spec)
            rows.append(entry("create", spec.target_type, _target_id(obj), str(obj), None, values))
            for action, old, new in _changes(obj, spec, state)[2]:
                rows.append(entry(action, spec.target_type, _target_id(obj), str(obj), old, new))
    for obj in list(session.dirty):
        spec = AUDITED.get(type(obj))
        if not spec:
            continue
        before, after, collection_rows = _changes(obj, spec, inspect(obj))
        if before or after:
            rows.append(entry(spec.action, spec.target_type, _target_id(obj), str(obj), before, after))
        for action, old, new in collection_rows:
            rows.append(entry(action, spec.target_type, _target_id(obj), str(obj), old, new))
    for obj in list(session.deleted):
        spec = AUDITED.get(type(obj))
        if spec:
            values = _values(obj, inspect(obj), spec)
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
