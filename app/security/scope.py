"""Data scope: which rows a user may see, as one SQL condition per model.

`Viewer` is built once per request from the user (services receive it explicitly and never touch
Flask's request); `scope_clause(model, viewer)` turns the viewer's scope into a WHERE condition using
the model's `__scope_owner__` / `__scope_org__` declaration; `DataScopeFilter` is the FAB `BaseFilter`
that every scoped ModelView, ModelRestApi and related-field dropdown uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import g, has_request_context
from flask_appbuilder.models.filters import BaseFilter
from sqlalchemy import false, literal, or_, select

from app.models.employee import Employee
from app.models.org import OrgUnit
from app.models.security import (
    DATA_SCOPES,
    SCOPE_ALL,
    SCOPE_OWN,
    SCOPE_SUBORDINATES,
    SCOPE_SUBTREE,
    SCOPE_TEAM,
)

ADMIN_ROLE = "Admin"


@dataclass(frozen=True)
class Viewer:
    """What the data-scope rules need to know about the person looking."""

    user_id: int | None
    scope: str
    employee_id: int | None = None
    org_unit_id: int | None = None
    org_path: str | None = None
    permissions: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def can(self, permission: str, view_menu: str) -> bool:
        return ("*", "*") in self.permissions or (permission, view_menu) in self.permissions


def widest_scope(scopes) -> str:
    ranked = [DATA_SCOPES.index(s) for s in scopes if s in DATA_SCOPES]
    return DATA_SCOPES[max(ranked)] if ranked else SCOPE_OWN


def viewer_for_user(user) -> Viewer:
    """Build the Viewer of a FAB user (roles → widest data scope; employee → owner and org)."""
    if user is None or getattr(user, "is_anonymous", True):
        return Viewer(user_id=None, scope=SCOPE_OWN)
    roles = list(user.roles)
    is_admin = any(r.name == ADMIN_ROLE for r in roles)
    scope = SCOPE_ALL if is_admin else widest_scope(
        r.data_scope.scope if r.data_scope is not None else SCOPE_OWN for r in roles
    )
    perms = {("*", "*")} if is_admin else set()
    for role in roles:
        for pv in role.permissions:
            if pv.permission and pv.view_menu:
                perms.add((pv.permission.name, pv.view_menu.name))
    employee = getattr(user, "employee", None)
    return Viewer(
        user_id=user.id,
        scope=scope,
        employee_id=employee.id if employee else None,
        org_unit_id=employee.org_unit_id if employee else None,
        org_path=employee.org_unit.path if employee else None,
        permissions=frozenset(perms),
    )


def current_viewer() -> Viewer:
    """The Viewer of the request's user, computed once per request."""
    if not has_request_context():
        return Viewer(user_id=None, scope=SCOPE_OWN)
    viewer = getattr(g, "_crm_viewer", None)
    user = getattr(g, "user", None)
    if viewer is None or viewer.user_id != getattr(user, "id", None):
        viewer = viewer_for_user(user)
        g._crm_viewer = viewer
    return viewer


def subtree_unit_ids(path: str):
    """SELECT of the ids of the org units under `path` (itself included): an index range on path."""
    upper = path[:-1] + chr(ord("/") + 1)
    return select(OrgUnit.id).where(OrgUnit.path >= path, OrgUnit.path < upper)


def subordinate_ids(employee_id: int):
    """SELECT of the employee and everyone who reports to them, directly or not."""
    emp = Employee.__table__
    tree = select(literal(employee_id).label("id")).cte("reports", recursive=True)
    tree = tree.union(select(emp.c.id).where(emp.c.manager_id == tree.c.id))
    return select(tree.c.id)


def scope_clause(model, viewer: Viewer):
    """WHERE condition restricting `model` to the viewer's scope; None means no restriction."""
    if viewer.scope == SCOPE_ALL:
        return None
    if viewer.employee_id is None:
        return false()
    clause = _scope_rule(model, viewer)
    creator = getattr(model, "__scope_creator__", None)
    return or_(clause, getattr(model, creator) == viewer.employee_id) if creator else clause


def _scope_rule(model, viewer: Viewer):
    via = getattr(model, "__scope_via__", None)
    if via is not None:
        local, target_name, remote = via
        target = model.registry._class_registry[target_name]
        visible = restrict(select(getattr(target, remote)), target, viewer)
        return getattr(model, local).in_(visible)
    owner_name = getattr(model, "__scope_owner__", None)
    org_name = getattr(model, "__scope_org__", None)
    owner = getattr(model, owner_name) if owner_name else None
    org = getattr(model, org_name) if org_name else None
    scope = viewer.scope
    if owner is None and scope in (SCOPE_OWN, SCOPE_SUBORDINATES):
        scope = SCOPE_TEAM  # rows nobody owns: the narrowest org rule stands in
    if scope == SCOPE_OWN:
        return owner == viewer.employee_id
    if scope == SCOPE_SUBORDINATES:
        return owner.in_(subordinate_ids(viewer.employee_id))
    if scope == SCOPE_TEAM:
        if org is not None:
            return org == viewer.org_unit_id
        members = select(Employee.id).where(Employee.org_unit_id == viewer.org_unit_id)
        return owner.in_(members)
    if scope == SCOPE_SUBTREE:
        units = subtree_unit_ids(viewer.org_path)
        if org is not None:
            return org.in_(units)
        return owner.in_(select(Employee.id).where(Employee.org_unit_id.in_(units)))
    return false()


def restrict(query, model, viewer: Viewer):
    clause = scope_clause(model, viewer)
    return query if clause is None else query.filter(clause)


def any_of(*clauses):
    clauses = [c for c in clauses if c is not None]
    return or_(*clauses) if clauses else None


class DataScopeFilter(BaseFilter):
    """FAB base filter: `base_filters = [["id", DataScopeFilter, lambda: []]]`."""

    name = "Data scope"
    arg_name = "scope"

    def apply(self, query, value):
        return restrict(query, self.model, current_viewer())


def scope_filter() -> list:
    """The base_filters / query_rel_fields entry that applies the data scope."""
    return [["id", DataScopeFilter, lambda: []]]
