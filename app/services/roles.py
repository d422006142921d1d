"""Make the roles in the database match the policy declared in app.security.policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.models.security import RoleDataScope
from app.security import policy


@dataclass
class RoleSyncReport:
    created: list[str] = field(default_factory=list)
    granted: dict[str, int] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)


def _menu_grants(menu, readable: set[str]) -> set[tuple[str, str]]:
    """menu_access for every menu entry whose view the role may read, and for its category."""
    grants = set()
    for category in menu.get_list():
        entries = category.childs or [category]
        for item in entries:
            view = item.baseview
            resource = getattr(view, "class_permission_name", None) if view else None
            if resource in readable:
                grants.add(("menu_access", item.name))
                if category is not item:
                    grants.add(("menu_access", category.name))
    return grants


def sync_roles(appbuilder, roles: dict | None = None) -> RoleSyncReport:
    """Create the declared roles, give each exactly its declared permissions and its data scope."""
    sm = appbuilder.sm
    session = sm.session
    roles = policy.ROLES if roles is None else roles
    report = RoleSyncReport()
    for name in roles:  # FAB grants every new permission to the Admin role: it must exist first
        if sm.find_role(name) is None:
            sm.add_role(name)
            report.created.append(name)
    appbuilder.add_permissions(update_perms=True)
    sm.add_permission_view_menu(policy.VIEW_FULL, policy.PHONE)
    pvs = {(pv.permission.name, pv.view_menu.name): pv for pv in session.query(sm.permissionview_model)}
    grants = {}
    for name, spec in roles.items():
        if spec["permissions"] == "*":
            continue
        readable = {res for perm, res in spec["permissions"] if perm == policy.READ}
        grants[name] = set(spec["permissions"]) | _menu_grants(appbuilder.menu, readable)
        for pair in grants[name] - pvs.keys():  # declared but no view registered it (custom permissions)
            pvs[pair] = sm.add_permission_view_menu(*pair)
    for name, spec in roles.items():  # "*" is resolved once every declared permission exists
        role = sm.find_role(name)
        wanted = set(pvs.values()) if spec["permissions"] == "*" else {pvs[p] for p in grants[name]}
        current = set(role.permissions)
        added, removed = wanted - current, current - wanted
        if added or removed:
            role.permissions = sorted(wanted, key=lambda pv: pv.id or 0)
        report.granted[name] = len(added)
        report.revoked[name] = len(removed)
        if role.data_scope is None:
            role.data_scope = RoleDataScope(scope=spec["scope"])
        elif role.data_scope.scope != spec["scope"]:
            role.data_scope.scope = spec["scope"]
    session.commit()
    return report
