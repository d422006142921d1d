"""The sales floor's records, read only: follow-ups, the assignment log, and the customer page (the person
behind leads, with what the viewer may see of their opportunities and history; merging a duplicate into it
is app.views.customer_merge's)."""

from __future__ import annotations

from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.extensions import db
from app.models.sales import AssignmentLog, Customer, FollowUp, Lead, Opportunity
from app.security import policy
from app.security.masking import mask_phone, mask_phones_in_text
from app.security.scope import current_viewer, restrict
from app.services import opportunities
from app.views import dispatch_trace, panels
from app.views.base import CrmModelView
from app.views.customer_merge import CustomerMergeMixin, NotMergedFilter
from app.views.sales import (
    REASON_LABELS,
    STATUS_LABELS,
    PageShowMixin,
    employee_name,
    opportunity_label,
    pool_name,
    remember_names,
)


class FollowUpView(CrmModelView):
    """Follow-up records (entered from the opportunity page or the workbench; kept as written)."""

    datamodel = SQLAInterface(FollowUp)
    class_permission_name = policy.FOLLOW_UP
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Follow-ups")
    add_title, edit_title = _l("Add Follow-up"), _l("Edit Follow-up")
    list_columns = ["created_at", "opportunity", "employee", "type", "content", "result", "next_followup_at"]
    show_columns = list_columns
    export_columns = ["created_at", "opportunity_id", "employee", "type", "content", "result",
                      "next_followup_at"]
    search_columns = ["created_at", "employee", "type", "result", "next_followup_at"]
    order_columns = ["created_at", "next_followup_at"]
    base_order = ("created_at", "desc")
    dict_fields = {"type": opportunities.FOLLOWUP_TYPE_DICT}
    formatters_columns = {"opportunity": opportunity_label, "content": mask_phones_in_text}
    label_columns = {"created_at": _l("Time"), "opportunity": _l("Opportunity"),
                     "opportunity_id": _l("Opportunity no."), "employee": _l("By"), "type": _l("Type"),
                     "content": _l("Content"), "result": _l("Result"),
                     "next_followup_at": _l("Next follow-up")}


class CustomerPageView(CustomerMergeMixin, PageShowMixin, CrmModelView):
    """The customer page: the person behind leads, with their leads, opportunities, follow-ups and
    assignment history (what the viewer may see of them), and the merge of a duplicate into it
    (app.views.customer_merge). The customer list and its edit form are app.views.leads.CustomerView's;
    this view adds no menu entry."""

    route_base = "/customer"
    datamodel = SQLAInterface(Customer)
    class_permission_name = policy.CUSTOMER
    base_permissions = ["can_read", "can_export", policy.MERGE]
    method_permission_name = {**policy.METHOD_PERMISSIONS, "merge": "merge"}
    base_filters = [["id", NotMergedFilter, lambda: []]]  # merged customers leave lists
    list_title = show_title = _l("Customers")
    add_title, edit_title = _l("Add Customer"), _l("Edit Customer")
    show_template = "crm/customer_show.html"
    list_columns = ["id", "name", "phone", "region", "registered_user_id", "created_at"]
    show_columns = ["id", "name", "phone", "region", "registered_user_id", "marketing_consent", "created_at"]
    export_columns = ["id", "name", "phone", "region", "registered_user_id", "created_at"]
    search_columns = ["name", "region", "registered_user_id", "created_at"]
    order_columns = ["id", "name", "created_at"]
    base_order = ("id", "desc")
    phone_columns = ("phone",)
    label_columns = {"id": _l("No."), "name": _l("Name"), "phone": _l("Phone"), "region": _l("Region"),
                     "registered_user_id": _l("Registered user"),
                     "marketing_consent": _l("Marketing consent"), "created_at": _l("Created at")}

    panel_page = panels.CUSTOMER

    def page_context(self, item) -> dict:
        return customer_page(item)


def customer_page(customer: Customer) -> dict:
    """The customer's opportunities, leads, follow-ups and assignment history — those the viewer may see."""
    session = db.session
    viewer = current_viewer()
    opps = list(session.scalars(restrict(select(Opportunity).where(Opportunity.customer_id == customer.id),
                                         Opportunity, viewer).order_by(Opportunity.id.desc())).unique())
    ids = [o.id for o in opps] or [-1]
    leads = list(session.scalars(select(Lead)
                                 .where(Lead.customer_id == customer.id, Lead.opportunity_id.in_(ids))
                                 .order_by(Lead.created_at.desc()).limit(100)))
    follow_ups = list(session.scalars(select(FollowUp).where(FollowUp.opportunity_id.in_(ids))
                                      .order_by(FollowUp.created_at.desc(), FollowUp.id.desc()).limit(200)))
    logs = list(session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id.in_(ids))
                                .order_by(AssignmentLog.created_at.desc(), AssignmentLog.id.desc())
                                .limit(200)))
    remember_names("employee", [f.employee_id for f in follow_ups]
                   + [x for log in logs for x in (log.from_owner_id, log.to_owner_id)])
    remember_names("pool", [x for log in logs for x in (log.from_pool_id, log.to_pool_id)])
    return {"opportunities": opps, "leads": leads, "follow_ups": follow_ups, "logs": logs,
            "lead_phone": mask_phone, "employee_name": employee_name,
            "pool_name": pool_name, "reason_label": lambda r: REASON_LABELS.get(r, r),
            "status_label": lambda s: STATUS_LABELS.get(s, s)}


class AssignmentLogView(CrmModelView):
    """Every ownership change, read-only, within the data scope (through the opportunity)."""

    datamodel = SQLAInterface(AssignmentLog)
    class_permission_name = policy.ASSIGNMENT_LOG
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Assignment Log")
    add_title, edit_title = _l("Add Assignment Log Entry"), _l("Edit Assignment Log Entry")
    list_columns = ["created_at", "opportunity", "reason", "from_owner_id", "to_owner_id", "from_pool_id",
                    "to_pool_id", "actor_name", "note"]
    show_columns = list_columns + ["dispatch_rule_id", "circulation_rule_id", "trace"]
    export_columns = ["created_at", "opportunity_id", "reason", "from_owner_id", "to_owner_id",
                      "from_pool_id", "to_pool_id", "dispatch_rule_id", "circulation_rule_id", "actor_name",
                      "note"]
    search_columns = ["created_at", "reason", "actor_name", "opportunity_id", "to_owner_id", "from_owner_id"]
    order_columns = ["created_at", "reason"]
    base_order = ("created_at", "desc")
    page_size = 50
    formatters_columns = {"opportunity": opportunity_label, "reason": lambda v: REASON_LABELS.get(v, v),
                          "from_owner_id": employee_name, "to_owner_id": employee_name,
                          "from_pool_id": pool_name, "to_pool_id": pool_name,
                          "trace": dispatch_trace.explain}  # the trace in words, names not ids
    label_columns = {"created_at": _l("Time"), "opportunity": _l("Opportunity"),
                     "opportunity_id": _l("Opportunity no."), "reason": _l("Why"),
                     "from_owner_id": _l("From"), "to_owner_id": _l("To"), "from_pool_id": _l("From pool"),
                     "to_pool_id": _l("To pool"), "actor_name": _l("By"), "note": _l("Note"),
                     "dispatch_rule_id": _l("Dispatch rule"), "circulation_rule_id": _l("Circulation rule"),
                     "trace": _l("Trace")}
