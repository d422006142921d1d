"""The audit log, read-only, for administrators."""

from __future__ import annotations

from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from app.models.audit import AuditLog
from app.security import policy
from app.views.base import CrmModelRestApi, CrmModelView

ACTION_LABELS = {
    "login_success": _l("Login"), "login_failure": _l("Failed login"), "create": _l("Created"),
    "update": _l("Changed"), "delete": _l("Deleted"), "role_change": _l("Roles changed"),
    "permission_change": _l("Permissions changed"), "scope_change": _l("Data scope changed"),
    "export": _l("Export"), "phone_view": _l("Full phone number viewed"), "hr_sync": _l("HR sync"),
    "ownership_change": _l("Ownership changed"),
}
TARGET_LABELS = {
    "user": _l("User"), "employee": _l("Employee"), "role": _l("Role"), "org_unit": _l("Org unit"),
    "dict_type": _l("Dictionary"), "dict_item": _l("Dictionary item"), "config_item": _l("Config item"),
    "Employee": _l("Employee"), "OrgUnit": _l("Org unit"), "AuditLog": _l("Audit log"),
}


class AuditLogView(CrmModelView):
    datamodel = SQLAInterface(AuditLog)
    class_permission_name = policy.AUDIT
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Audit Log")
    list_columns = ["created_at", "actor_name", "action", "target_type", "target_id", "summary", "ip"]
    show_columns = list_columns + ["before", "after"]
    search_columns = ["created_at", "actor_name", "action", "target_type", "target_id", "summary", "ip"]
    order_columns = ["created_at", "actor_name", "action", "target_type"]
    base_order = ("created_at", "desc")
    page_size = 50
    formatters_columns = {"action": lambda v: ACTION_LABELS.get(v, v),
                          "target_type": lambda v: TARGET_LABELS.get(v, v)}
    label_columns = {
        "created_at": _l("Time"), "actor_name": _l("Actor"), "action": _l("Action"),
        "target_type": _l("Target type"), "target_id": _l("Target id"), "summary": _l("Summary"),
        "before": _l("Before"), "after": _l("After"), "ip": _l("IP address"),
    }


class AuditLogApi(CrmModelRestApi):
    datamodel = SQLAInterface(AuditLog)
    resource_name = "audit_log"
    class_permission_name = policy.AUDIT
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "created_at", "actor_id", "actor_name", "action", "target_type",
                                   "target_id", "summary", "before", "after", "ip"]
    search_columns = ["created_at", "actor_name", "action", "target_type", "target_id"]
    order_columns = ["created_at", "action"]
    base_order = ("created_at", "desc")
