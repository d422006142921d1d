"""The organisation tree: its rules (sibling names unique, no cycles, no deleting a unit still in use)
and reading it (a unit's path, the ancestors on a path).

The materialised path ("/1/4/9/": the root's id first, the unit's own last) is kept by mapper events, so
every writer (form, API, seed, HR sync) keeps it right; moving a unit rewrites its whole subtree's paths
in one set-based UPDATE.
"""

from __future__ import annotations

from sqlalchemy import String, event, exists, func, literal, select, update
from sqlalchemy.orm import attributes

from app.models.employee import Employee
from app.models.org import ORG_KINDS, OrgUnit
from app.services.errors import DomainError


def ancestor_ids(path: str | None) -> list[int]:
    """The ids on a materialised path, root first and the unit itself last ([] for none)."""
    return [int(p) for p in (path or "").strip("/").split("/") if p]


def unit_path(session, unit_id: int | None) -> str | None:
    """The materialised path of an org unit (None for no unit or an unknown one)."""
    if unit_id is None:
        return None
    return session.scalar(select(OrgUnit.path).where(OrgUnit.id == unit_id))


def _path_of(connection, unit_id: int | None) -> str:
    if unit_id is None:
        return "/"
    path = connection.scalar(select(OrgUnit.path).where(OrgUnit.id == unit_id))
    if path is None:
        raise DomainError("The parent unit does not exist", field="parent")
    return path


def is_in_subtree(session, unit_id: int, root_id: int) -> bool:
    """True when `unit_id` is `root_id` or one of its descendants."""
    root_path = session.scalar(select(OrgUnit.path).where(OrgUnit.id == root_id))
    path = session.scalar(select(OrgUnit.path).where(OrgUnit.id == unit_id))
    return bool(root_path and path and path.startswith(root_path))


def check_unit(session, unit_id: int | None, name: str, parent_id: int | None, kind: str | None = None):
    """Validate a create (unit_id None) or an edit/move; raises DomainError naming the field."""
    name = (name or "").strip()
    if not name:
        raise DomainError("A name is required", field="name")
    if kind is not None and kind not in ORG_KINDS:
        raise DomainError("Kind must be one of %(values)s", field="kind", values=", ".join(ORG_KINDS))
    if unit_id is not None and parent_id is not None and is_in_subtree(session, parent_id, unit_id):
        raise DomainError(
            "A unit cannot be moved under itself or one of its own sub-units", field="parent"
        )
    same_name = select(OrgUnit.id).where(
        func.lower(OrgUnit.name) == name.lower(),
        OrgUnit.parent_id.is_(None) if parent_id is None else OrgUnit.parent_id == parent_id,
    )
    if unit_id is not None:
        same_name = same_name.where(OrgUnit.id != unit_id)
    if session.scalar(select(exists(same_name))):
        raise DomainError("The parent unit already has a sub-unit named %(name)s", field="name",
                          name=repr(name))


def check_deletable(session, unit: OrgUnit) -> None:
    if session.scalar(select(exists().where(OrgUnit.parent_id == unit.id))):
        raise DomainError("%(name)s still has sub-units: move or delete them first", status=409,
                          name=unit.name)
    if session.scalar(select(exists().where(Employee.org_unit_id == unit.id))):
        raise DomainError("%(name)s still has members: move them first", status=409, name=unit.name)


def subtree_size(session, unit: OrgUnit) -> int:
    upper = unit.path[:-1] + chr(ord("/") + 1)
    return session.scalar(
        select(func.count()).where(OrgUnit.path >= unit.path, OrgUnit.path < upper)
    )


@event.listens_for(OrgUnit, "after_insert")
def _set_path_on_insert(mapper, connection, target: OrgUnit) -> None:
    path = _path_of(connection, target.parent_id) + f"{target.id}/"
    depth = path.count("/") - 2
    connection.execute(update(OrgUnit).where(OrgUnit.id == target.id).values(path=path, depth=depth))
    attributes.set_committed_value(target, "path", path)
    attributes.set_committed_value(target, "depth", depth)


@event.listens_for(OrgUnit, "after_update")
def _move_subtree(mapper, connection, target: OrgUnit) -> None:
    hist = attributes.get_history(target, "parent_id")
    if not hist.has_changes():
        return
    old_path = connection.scalar(select(OrgUnit.path).where(OrgUnit.id == target.id))
    parent_path = _path_of(connection, target.parent_id)
    if parent_path.startswith(old_path):
        raise DomainError("A unit cannot be moved under itself or one of its own sub-units", field="parent")
    new_path = parent_path + f"{target.id}/"
    shift = new_path.count("/") - old_path.count("/")
    upper = old_path[:-1] + chr(ord("/") + 1)
    connection.execute(
        update(OrgUnit)
        .where(OrgUnit.path >= old_path, OrgUnit.path < upper)
        .values(
            path=literal(new_path, String).concat(func.substr(OrgUnit.path, len(old_path) + 1)),
            depth=OrgUnit.depth + shift,
        )
        .execution_options(synchronize_session=False)
    )
    # Keep the objects already loaded in this session in step with the rows.
    session = attributes.instance_state(target).session
    for obj in list(session.identity_map.values()) if session else [target]:
        if isinstance(obj, OrgUnit) and (obj.__dict__.get("path") or "").startswith(old_path):
            moved = new_path + obj.__dict__["path"][len(old_path):]
            attributes.set_committed_value(obj, "path", moved)
            attributes.set_committed_value(obj, "depth", moved.count("/") - 2)
