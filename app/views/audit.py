"""The audit log, read-only, for administrators."""

from __future__ import annotations

from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from app.models.audit import AuditLog
from app.security import policy
from app.views.base import CrmModelRestApi, CrmModelView


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
    label_columns = {
        "created_at": _l("Time (UTC)"), "actor_name": _l("Actor"), "action": _l("Action"),
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
