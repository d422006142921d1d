"""The audit log, read-only, for administrators. Phone numbers inside its summaries and before/after
values show masked, like everywhere else; the full numbers of one entry are shown on request, audited."""

from __future__ import annotations

from flask_appbuilder import expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l

from app.models.audit import AuditLog
from app.security import policy
from app.security.masking import mask_phones_in_text, phones_in_text
from app.views.base import CrmModelRestApi, CrmModelView

ACTION_LABELS = {
    "login_success": _l("Login"), "login_failure": _l("Failed login"), "create": _l("Created"),
    "update": _l("Changed"), "delete": _l("Deleted"), "role_change": _l("Roles changed"),
    "permission_change": _l("Permissions changed"), "scope_change": _l("Data scope changed"),
    "export": _l("Export"), "phone_view": _l("Full phone number viewed"), "hr_sync": _l("HR sync"),
    "ownership_change": _l("Ownership changed"), "export_download": _l("Export downloaded"),
    "customer_merge": _l("Customers merged"), "lead_import": _l("Lead import"),
    "sms_template_submit": _l("Template submitted for review"),
    "sms_template_approve": _l("Template approved"), "sms_template_reject": _l("Template rejected"),
    "qa_appeal": _l("QA appeal"),
    "qa_appeal_decision": _l("QA appeal decided"), "order_create": _l("Order created"),
    "order_approve": _l("Discount approved"), "order_reject": _l("Discount rejected"),
    "order_paid": _l("Order paid"), "order_refunded": _l("Order refunded"),
    "order_cancelled": _l("Order cancelled"),
    "spend_import": _l("Spend imported"), "resignation_transfer": _l("Resignation transfer"),
    "tag_added": _l("Tag added"), "tag_removed": _l("Tag removed"),
}
TARGET_LABELS = {
    "user": _l("User"), "employee": _l("Employee"), "role": _l("Role"), "org_unit": _l("Org unit"),
    "dict_type": _l("Dictionary"), "dict_item": _l("Dictionary item"), "config_item": _l("Config item"),
    "Employee": _l("Employee"), "OrgUnit": _l("Org unit"), "AuditLog": _l("Audit log"),
    "audit_log": _l("Audit log"), "api_key": _l("API key"),
    "dispatch_rule": _l("Dispatch rule"), "circulation_rule": _l("Circulation rule"), "pool": _l("Pool"),
    "sales_profile": _l("Sales profile"), "sms_channel": _l("SMS channel"),
    "sms_template": _l("SMS template"), "sensitive_word": _l("Sensitive word"),
    "call_interface": _l("Outbound interface"),
    "call_line": _l("Call line"), "call_number": _l("Caller-ID number"), "seat": _l("Seat"),
    "order": _l("Sales order"), "product": _l("Product"), "marketing_campaign": _l("Marketing campaign"),
    "campaign_spend": _l("Campaign spend"), "landing_page": _l("Landing page"), "customer": _l("Customer"),
    "opportunity": _l("Opportunity"), "qa_inspection": _l("QA inspection"), "lead_import": _l("Lead import"),
    "onboarding": _l("Onboarding"), "MarketingReport": _l("Marketing report"), "tag": _l("Tag"),
    "segment": _l("Customer segments"),
}
#: Free-text columns that may carry phone numbers (an employee's phone before and after a change …).
TEXT_COLUMNS = ("summary", "before", "after")


class AuditLogView(CrmModelView):
    datamodel = SQLAInterface(AuditLog)
    class_permission_name = policy.AUDIT
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Audit Log")
    add_title, edit_title = _l("Add Audit Log Entry"), _l("Edit Audit Log Entry")
    list_columns = ["created_at", "actor_name", "action", "target_type", "target_id", "summary", "ip"]
    show_columns = list_columns + ["before", "after"]
    search_columns = ["created_at", "actor_name", "action", "target_type", "target_id", "summary", "ip"]
    order_columns = ["created_at", "actor_name", "action", "target_type"]
    base_order = ("created_at", "desc")
    page_size = 50
    formatters_columns = {"action": lambda v: ACTION_LABELS.get(v, v),
                          "target_type": lambda v: TARGET_LABELS.get(v, v),
                          **dict.fromkeys(TEXT_COLUMNS, mask_phones_in_text)}
    label_columns = {
        "created_at": _l("Time"), "actor_name": _l("Actor"), "action": _l("Action"),
        "target_type": _l("Target type"), "target_id": _l("Target id"), "summary": _l("Summary"),
        "before": _l("Before"), "after": _l("After"), "ip": _l("IP address"),
    }
    #: crm/show.html offers the "show full phone number" button (numbers are inside the text columns).
    reveals_phones = True

    @expose("/phone/<pk>", methods=["POST"])
    @has_access
    def reveal_phone(self, pk):
        """The full numbers written in one entry, on request, audited (like every other reveal)."""
        return self.reveal(pk, "audit_log", lambda item: [(_l("Phone"), number) for number in phones_in_text(
            " ".join(getattr(item, c) or "" for c in TEXT_COLUMNS))])


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

    def _mask(self, row: dict) -> None:
        for col in TEXT_COLUMNS:
            if row.get(col):
                row[col] = mask_phones_in_text(row[col])
