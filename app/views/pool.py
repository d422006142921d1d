"""The public pool page: what the current user may claim now, claimed (all or none) from the list."""

from __future__ import annotations

from flask import redirect, url_for
from flask_appbuilder.actions import action
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from app.clock import utcnow
from app.extensions import db
from app.models.sales import Opportunity, Pool
from app.security import policy
from app.security.scope import current_viewer
from app.services import ownership, pools
from app.services.org import ancestor_ids
from app.views.base import CrmModelView
from app.views.opportunities import OpportunityView
from app.views.sales import (
    FIELD_LABELS,
    NO_CRUD,
    NO_CRUD_PERMISSIONS,
    OPP_DICT_FIELDS,
    OPP_FORMATTERS,
    OPP_LABELS,
    current_actor,
    current_employee,
)
from app.views.uow import flash_result


class ClaimableFilter(BaseFilter):
    """Pooled opportunities the current user may claim now (the Pool page's rows)."""

    name = "Claimable"
    arg_name = "claimable"

    def apply(self, query, value):
        viewer = current_viewer()
        return query.filter(pools.claimable_clause(db.session, viewer.employee_id, viewer.org_path, utcnow()))


class ClaimablePoolFilter(BaseFilter):
    name = "Pools I may claim from"
    arg_name = "claimable_pool"

    def apply(self, query, value):
        units = ancestor_ids(current_viewer().org_path) or [-1]
        return query.filter(Pool.enabled.is_(True), Pool.org_unit_id.in_(units))


class PoolOpportunityView(CrmModelView):
    """The public pool page: what the current user may claim now (their data scope does not apply —
    pooled opportunities belong to nobody — the pool rules do)."""

    route_base = "/pool"
    datamodel = SQLAInterface(Opportunity)
    class_permission_name = policy.OPPORTUNITY
    exclude_route_methods = NO_CRUD
    method_permission_name = {**policy.METHOD_PERMISSIONS, **NO_CRUD_PERMISSIONS,
                              "claim_action": "claim", "assign_action": "assign"}
    list_title = show_title = _l("Public Pool")
    add_title, edit_title = _l("Add Opportunity"), _l("Edit Opportunity")
    list_columns = ["id", "customer", "product_line", "stage", "intention_level", "pool", "region",
                    "last_followup_at", "recycle_count"]
    show_columns = ["id", "customer", "product_line", "stage", "intention_level", "pool", "source",
                    "campaign", "region", "last_followup_at", "recycle_count", "created_at"]
    export_columns = ["id", "customer_id", "product_line", "stage", "intention_level", "pool", "region",
                      "last_followup_at", "recycle_count"]
    search_columns = ["stage", "product_line", "intention_level", "pool", "region", "last_followup_at"]
    order_columns = ["id", "last_followup_at", "recycle_count"]
    base_order = ("id", "asc")
    base_filters = [["id", ClaimableFilter, lambda: []]]
    dict_fields = OPP_DICT_FIELDS
    formatters_columns = OPP_FORMATTERS
    label_columns = OPP_LABELS

    @classmethod
    def _scoped(cls, model) -> bool:
        return False  # ClaimableFilter stands in for the data scope

    def _rel_filters(self, model) -> dict:
        filters = super()._rel_filters(model)
        # The pool dropdown offers the pools this user may claim from, not the pools of their own unit.
        filters["pool"] = [["id", ClaimablePoolFilter, lambda: []]]
        return filters

    @action("claim_action", _l("Claim"), _l("Claim the selected opportunities?"), "fa-hand-paper-o")
    def claim_action(self, items):
        ids = OpportunityView.selected_ids(items)
        return flash_result(
            lambda: ownership.claim(db.session, current_employee(), ids, utcnow(), current_actor()),
            self.get_redirect(), lambda result: _l("Claimed %(n)d opportunity(ies)", n=result.count),
            labels=FIELD_LABELS)

    @action("assign_action", _l("Assign to…"), None, "fa-user-plus")
    def assign_action(self, items):
        return redirect(url_for("OpportunityView.assign", ids=OpportunityView.pks(items),
                                next=url_for(f"{type(self).__name__}.list")))
