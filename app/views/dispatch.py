"""Dispatch and circulation: rules, pools, sales profiles, and the dispatch console with its dry-run.

The settings' rules are app.services.dispatch_rules': the forms and the APIs here call the same
validation before FAB saves a row (`check_item`), as the `flask crm dispatch-rule` command does."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.actions import action
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from wtforms import IntegerField, SelectField
from wtforms.validators import Optional

from app.clock import utcnow
from app.extensions import db, rq
from app.jobs.dispatch import current_run, enqueue_dispatch
from app.models.sales import (
    STATUSES,
    CirculationRule,
    DispatchRule,
    Opportunity,
    Pool,
    SalesProfile,
)
from app.security import policy
from app.services import dispatch_rules
from app.services.dispatch import simulate, waiting_count
from app.views import dispatch_trace, labels
from app.views.base import CrmModelRestApi, CrmModelView
from app.views.uow import flash_result

STRATEGY_LABELS = dict(labels.choices("dispatch_rule.strategy"))  # app/views/labels.py
FAIRNESS_HELP = _l("Score-aware rules: each eligible person's share of the rule's leads stays within "
                   "± this percentage of the round-robin share (0–100, default 25).")
RECYCLED_LABELS = {"any": _l("New and recycled"), "new": _l("New only"), "recycled": _l("Recycled only")}
LABELS = {
    "name": _l("Name"), "priority": _l("Priority"), "enabled": _l("Enabled"),
    "match_source": _l("Lead source"),
    "match_campaign": _l("Campaign starts with"), "match_product_line": _l("Product line"),
    "match_region": _l("Region"), "match_intention_level": _l("Intention level"),
    "match_recycled": _l("New / recycled"), "target_org_unit": _l("Target team"), "strategy": _l("Strategy"),
    "match_segment": _l("Match segment"), "fairness_band": _l("Fairness band (percent)"),
    "target_pool": _l("Pool (target or fallback)"), "working_hours_only": _l("Working hours only"),
    "org_unit": _l("Org unit"), "product_line": _l("Product line"), "intention_level": _l("Intention level"),
    "idle_days": _l("Recycle after idle days"), "stage_deadline_days": _l("Days to reach stage"),
    "target_stage": _l("Stage to reach"), "no_deal_days": _l("Recycle without deal after days"),
    "protect_days": _l("Protection days on claim"),
    "protect_extend_days": _l("Protection extended per follow-up"),
    "protect_max_days": _l("Protection maximum days"), "remind_hours": _l("Remind hours before recycling"),
    "capacity": _l("Capacity"), "capacity_by_level": _l("Capacity by level (JSON)"),
    "capacity_counts_won": _l("Won opportunities count against capacity"),
    "cooling_days": _l("Ex-owner cooling days"), "exempt_stages": _l("Exempt stages (codes)"),
    "recycle_to_pool": _l("Recycle to pool (else re-dispatch)"), "daily_claim_limit": _l("Daily claim limit"),
    "employee": _l("Employee"), "paused": _l("Paused"), "weight": _l("Weight"),
    "daily_quota": _l("Daily quota"), "open_count": _l("Open opportunities"),
    "dispatched_today": _l("Dispatched today"), "created_at": _l("Created at"),
    "updated_at": _l("Updated at"),
    "state": _l("Strategy state"), "quota_day": _l("Quota day"), "won_count": _l("Won"),
}


def _choice(label, labels):
    return SelectField(label, choices=list(labels.items()), widget=Select2Widget())


class DispatchRuleView(CrmModelView):
    datamodel = SQLAInterface(DispatchRule)
    class_permission_name = policy.DISPATCH_RULE
    list_title = show_title = _l("Dispatch Rules")
    add_title, edit_title = _l("Add Dispatch Rule"), _l("Edit Dispatch Rule")
    list_columns = ["priority", "name", "enabled", "match_product_line", "match_source", "match_recycled",
                    "target_org_unit", "strategy", "target_pool"]
    add_columns = edit_columns = ["name", "priority", "enabled", "match_source", "match_campaign",
                                  "match_product_line", "match_region", "match_intention_level",
                                  "match_recycled", "match_segment", "target_org_unit", "strategy",
                                  "fairness_band", "target_pool", "working_hours_only"]
    show_columns = add_columns
    base_order = ("priority", "asc")
    dict_fields = {"match_source": "lead_source", "match_product_line": "product_line",
                   "match_intention_level": "intention_level"}
    add_form_extra_fields = edit_form_extra_fields = {
        "strategy": _choice(_l("Strategy"), STRATEGY_LABELS),
        "match_recycled": _choice(_l("New / recycled"), RECYCLED_LABELS),
        # Optional: left out or empty, the rule keeps the default band (validate_dispatch_rule).
        "fairness_band": IntegerField(_l("Fairness band (percent)"), validators=[Optional()], default=25,
                                      description=FAIRNESS_HELP),
    }
    formatters_columns = {"strategy": lambda v: STRATEGY_LABELS.get(v, v),
                          "match_recycled": lambda v: RECYCLED_LABELS.get(v, v)}
    label_columns = LABELS
    description_columns = {
        "match_segment": _l("Only opportunities in this segment (a customer segment: their opportunities)."),
        "fairness_band": FAIRNESS_HELP,
    }

    def check_item(self, item, creating):
        dispatch_rules.validate_dispatch_rule(db.session, item)


class CirculationRuleView(CrmModelView):
    datamodel = SQLAInterface(CirculationRule)
    class_permission_name = policy.CIRCULATION_RULE
    list_title = show_title = _l("Circulation Rules")
    add_title, edit_title = _l("Add Circulation Rule"), _l("Edit Circulation Rule")
    list_columns = ["name", "enabled", "org_unit", "product_line", "intention_level", "idle_days",
                    "protect_days", "capacity", "cooling_days"]
    add_columns = edit_columns = show_columns = [
        "name", "enabled", "org_unit", "product_line", "intention_level", "idle_days", "no_deal_days",
        "stage_deadline_days", "target_stage", "protect_days", "protect_extend_days", "protect_max_days",
        "remind_hours", "capacity", "capacity_by_level", "capacity_counts_won", "cooling_days",
        "exempt_stages", "recycle_to_pool"]
    dict_fields = {"product_line": "product_line", "intention_level": "intention_level",
                   "target_stage": "opportunity_stage"}
    label_columns = LABELS

    def check_item(self, item, creating):
        dispatch_rules.validate_circulation_rule(db.session, item)


class PoolView(CrmModelView):
    datamodel = SQLAInterface(Pool)
    class_permission_name = policy.POOL
    list_title = show_title = _l("Public Pools")
    add_title, edit_title = _l("Add Pool"), _l("Edit Pool")
    list_columns = ["name", "org_unit", "product_line", "daily_claim_limit", "enabled"]
    add_columns = edit_columns = show_columns = list_columns
    dict_fields = {"product_line": "product_line"}
    label_columns = LABELS


    def check_item(self, item, creating):
        dispatch_rules.validate_pool(db.session, item)


class SalesProfileView(CrmModelView):
    datamodel = SQLAInterface(SalesProfile)
    class_permission_name = policy.SALES_PROFILE
    list_title = show_title = _l("Sales Profiles")
    add_title, edit_title = _l("Add Sales Profile"), _l("Edit Sales Profile")
    list_columns = ["employee", "paused", "weight", "daily_quota", "capacity", "open_count",
                    "dispatched_today"]
    show_columns = list_columns
    add_columns = ["employee", "paused", "weight", "daily_quota", "capacity"]
    edit_columns = ["paused", "weight", "daily_quota", "capacity"]
    label_columns = LABELS
    method_permission_name = {**policy.METHOD_PERMISSIONS, "pause": "write", "resume": "write"}

    def check_item(self, item, creating):
        dispatch_rules.validate_sales_profile(db.session, item)

    def _set_paused(self, items, paused):
        items = items if isinstance(items, list) else [items]
        return flash_result(
            lambda: [dispatch_rules.SaveSalesProfile(db.session, {"paused": paused}, i).run() for i in items],
            self.get_redirect(), lambda saved: _l("%(n)d profile(s) updated", n=len(saved)))

    @action("pause", _l("Pause dispatch"), None, "fa-pause")
    def pause(self, items):
        return self._set_paused(items, True)

    @action("resume", _l("Resume dispatch"), None, "fa-play")
    def resume(self, items):
        return self._set_paused(items, False)


def _status_counts() -> dict:
    rows = db.session.execute(select(Opportunity.status, func.count()).group_by(Opportunity.status)).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(dict(rows))
    return counts


def _preview() -> dict:
    """The dry run, its sample traces with their explanation in words (in the viewer's language)."""
    preview = simulate(db.session, now=utcnow())
    samples = preview["samples"] + preview["score_aware_samples"]
    for sample, text in zip(samples, dispatch_trace.explain_all(samples), strict=True):
        sample["explanation"] = text
    return preview


class DispatchConsoleView(BaseView):
    """Where a sales manager sees what waits, runs dispatch now, and previews it (dry-run)."""

    route_base = "/dispatch"
    class_permission_name = policy.DISPATCH_CONSOLE
    method_permission_name = policy.METHOD_PERMISSIONS
    default_view = "status"

    @expose("/")
    @has_access
    def status(self):
        job = current_run(rq.redis)
        return self.render_template("crm/dispatch.html", counts=_status_counts(),
                                    waiting=waiting_count(db.session), job=job, preview=None)

    @expose("/simulate/")
    @has_access
    def simulate(self):
        preview = _preview()
        return self.render_template("crm/dispatch.html", counts=_status_counts(),
                                    waiting=preview["waiting"], job=None, preview=preview)

    @expose("/run/", methods=["POST"])
    @has_access
    def run_now(self):
        enqueue_dispatch(rq.queue("high"))
        flash(str(_l("Dispatch started: the page shows its progress.")), "info")
        return redirect(url_for("DispatchConsoleView.status"))


class DispatchApi(BaseApi):
    resource_name = "dispatch"
    class_permission_name = policy.DISPATCH_CONSOLE
    method_permission_name = policy.METHOD_PERMISSIONS
    allow_browser_login = True

    @expose("/simulate", methods=["GET"])
    @protect()
    @safe
    def simulate(self):
        """Dry-run: how the current rules would dispatch what waits now (writes nothing).
        ---
        get:
          responses:
            200:
              description: Distribution per rule, team and person, exclusions and sample traces
        """
        return self.response(200, **_preview())

    @expose("/run", methods=["POST"])
    @protect()
    @safe
    def run_now(self):
        """Start a dispatch run now.
        ---
        post:
          responses:
            202:
              description: Queued
        """
        enqueue_dispatch(rq.queue("high"))
        return self.response(202, message="queued")


class DispatchRuleApi(CrmModelRestApi):
    datamodel = SQLAInterface(DispatchRule)
    resource_name = "dispatch_rule"
    class_permission_name = policy.DISPATCH_RULE
    list_columns = show_columns = ["id", "name", "priority", "enabled", "match_source.code", "match_campaign",
                                   "match_product_line.code", "match_region", "match_intention_level.code",
                                   "match_recycled", "target_org_unit.id", "strategy", "target_pool.id",
                                   "working_hours_only", "match_segment.id", "match_segment.name",
                                   "fairness_band"]
    add_columns = edit_columns = DispatchRuleView.add_columns
    dict_fields = DispatchRuleView.dict_fields

    def check_item(self, item, creating):
        dispatch_rules.validate_dispatch_rule(db.session, item)


class CirculationRuleApi(CrmModelRestApi):
    datamodel = SQLAInterface(CirculationRule)
    resource_name = "circulation_rule"
    class_permission_name = policy.CIRCULATION_RULE
    add_columns = edit_columns = CirculationRuleView.add_columns
    dict_fields = CirculationRuleView.dict_fields

    def check_item(self, item, creating):
        dispatch_rules.validate_circulation_rule(db.session, item)


class SalesProfileApi(CrmModelRestApi):
    datamodel = SQLAInterface(SalesProfile)
    resource_name = "sales_profile"
    class_permission_name = policy.SALES_PROFILE
    list_columns = show_columns = ["employee.id", "employee.name", "paused", "weight", "daily_quota",
                                   "capacity", "open_count", "dispatched_today"]
    add_columns = ["employee", "paused", "weight", "daily_quota", "capacity"]
    edit_columns = ["paused", "weight", "daily_quota", "capacity"]

    def check_item(self, item, creating):
        dispatch_rules.validate_sales_profile(db.session, item)
