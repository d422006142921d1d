"""Opportunities: the scoped list with its quick filters, the opportunity page, and the forms and list
actions that change ownership or progress (follow-up, stage, claim, give back, assign, transfer, freeze).

Each form posts to one service command run as one unit of work (app.views.uow); a refusal comes back as
a flash or as an error next to the form's field, with nothing written.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder.actions import action
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from app.clock import utcnow
from app.extensions import appbuilder, db
from app.models.bigdata import OPPORTUNITY
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import OPEN_STATUSES, OWNED, AssignmentLog, FollowUp, Lead, Opportunity
from app.security import policy
from app.security.masking import mask_phone
from app.security.scope import current_viewer, restrict
from app.services import circulation, metadata, opportunities, ownership
from app.services.errors import DomainError
from app.views import panels
from app.views.base import CrmModelView
from app.views.employees import HR_LABELS
from app.views.sales import (
    FIELD_LABELS,
    NO_CRUD,
    NO_CRUD_PERMISSIONS,
    OPP_DICT_FIELDS,
    OPP_FORMATTERS,
    OPP_LABELS,
    QUICK_FILTERS,
    REASON_LABELS,
    STATUS_LABELS,
    PageShowMixin,
    current_actor,
    current_employee,
    employee_name,
    entry_label,
    opportunity_label,
    parse_local_datetime,
    pool_name,
    quick_clause,
    remember_names,
    require_visible,
    visible_employee,
)
from app.views.segments_filter import segment_filter
from app.views.uow import flash_error, flash_result, run


def win_percent(value) -> str:
    """An opportunity's win probability (0…1) as a whole percentage; blank when it is not scored."""
    return "" if value is None else f"{round(value * 100)}%"


class QuickFilter(BaseFilter):
    """The list's quick filters (?quick=due_today|overdue|recycle_soon|mine), applied to list and export."""

    name = "Quick filter"
    arg_name = "quick"

    def apply(self, query, value):
        from flask import has_request_context

        quick = request.args.get("quick") if has_request_context() else None
        clause = quick_clause(quick, utcnow())
        return query if clause is None else query.filter(clause)


def ids_from_request() -> list[str]:
    """The opportunity ids a form or list posted (ids=1,2 / rowid / ?ids=)."""
    values = request.form.getlist("ids") or request.form.getlist("rowid") or request.args.getlist("ids")
    out = []
    for value in values:
        out.extend(v for v in str(value).split(",") if v.strip())
    return out


def safe_next(default: str) -> str:
    """The posted `next` page when it is a path on this site, else `default`."""
    target = request.form.get("next") or request.args.get("next") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc and not parts.scheme:
        return target
    return default


def _assignable_employees() -> list[Employee]:
    query = select(Employee).where(Employee.hr_status != HR_RESIGNED).order_by(Employee.name, Employee.id)
    return list(db.session.scalars(restrict(query, Employee, current_viewer())).unique())


def _holders() -> list[tuple[Employee, int]]:
    """Employees in the viewer's scope who own open opportunities (resigned ones first), with counts."""
    held = (select(Opportunity.owner_id, func.count(Opportunity.id).label("n"))
            .where(Opportunity.status == OWNED).group_by(Opportunity.owner_id).subquery())
    query = (select(Employee, held.c.n).join(held, held.c.owner_id == Employee.id)
             .order_by((Employee.hr_status != HR_RESIGNED), Employee.name, Employee.id))
    return [(emp, n) for emp, n in db.session.execute(restrict(query, Employee, current_viewer())).unique()]


def _on_the_page(work, back: str, success):
    """A form posted from an opportunity's page, as one unit of work: an opportunity outside the user's
    scope (404) is a 404 page; any other refusal is flashed."""
    outcome = run(work)
    if outcome.error is not None:
        if outcome.error.status == 404:
            abort(404)
        flash_error(outcome.error, FIELD_LABELS)
    else:
        flash(str(success(outcome.result)), "success")
    return redirect(back)


class OpportunityView(PageShowMixin, CrmModelView):
    datamodel = SQLAInterface(Opportunity)
    class_permission_name = policy.OPPORTUNITY
    exclude_route_methods = NO_CRUD
    method_permission_name = {
        **policy.METHOD_PERMISSIONS, **NO_CRUD_PERMISSIONS,
        "follow_up": "write", "stage": "write", "give_back": "write", "give_back_action": "write",
        "claim": "claim", "assign": "assign", "assign_action": "assign", "transfer": "assign",
        "lock_action": "assign", "unlock_action": "assign",
    }
    list_title = show_title = _l("Opportunities")
    add_title, edit_title = _l("Add Opportunity"), _l("Edit Opportunity")
    list_template = "crm/workbench_list.html"
    show_template = "crm/workbench_opportunity.html"
    panel_page = panels.OPPORTUNITY
    form_template = "crm/workbench_form.html"
    # What the sales floor scans a list for; the rest (last follow-up, idle since, locked …) is on the page.
    # (Win probability took the pool's place: nine columns fit the screen, and the status says "in a public
    # pool"; the pool is on the page and among the search filters.)
    list_columns = ["id", "customer", "product_line", "stage", "intention_level", "status", "owner",
                    "next_followup_at", "win_probability"]
    show_columns = ["id", "customer", "product_line", "stage", "intention_level", "status", "owner", "pool",
                    "org_unit", "source", "campaign", "region", "assigned_at", "claimed_at",
                    "last_followup_at", "next_followup_at", "idle_since", "protected_until", "lost_reason",
                    "closed_at", "locked", "is_recycled", "recycle_count", "created_at"]
    export_columns = ["id", "customer_id", "product_line", "stage", "intention_level", "status", "owner",
                      "pool", "org_unit", "source", "campaign", "region", "assigned_at", "claimed_at",
                      "last_followup_at", "next_followup_at", "idle_since", "protected_until", "lost_reason",
                      "closed_at", "locked"]
    search_columns = ["status", "stage", "product_line", "intention_level", "owner", "pool", "org_unit",
                      "next_followup_at", "last_followup_at", "idle_since", "locked", "campaign", "region",
                      "source", "created_at", "assigned_at"]  # the last three: the dashboard's drill-downs
    order_columns = ["id", "next_followup_at", "last_followup_at", "idle_since", "status", "win_probability"]
    # Unscored last either way (the ascending order follows ix_opportunity_win_probability_id).
    nulls_last_columns = ("win_probability",)
    base_order = ("id", "desc")
    # ?quick= and ?segment= (a saved segment: app/views/segments_filter.py), with the data scope.
    base_filters = [["id", QuickFilter, lambda: []], ["id", segment_filter(OPPORTUNITY), lambda: []]]
    segment_subject = OPPORTUNITY
    dict_fields = OPP_DICT_FIELDS
    formatters_columns = {**OPP_FORMATTERS, "win_probability": win_percent}
    label_columns = {**OPP_LABELS, "win_probability": _l("Win probability")}
    quick_filters = QUICK_FILTERS

    # --- list and page -----------------------------------------------------------------------------
    def render_template(self, template, **kwargs):
        kwargs.setdefault("entry_label", entry_label)
        kwargs.setdefault("hr_label", lambda v: HR_LABELS.get(v, v))
        kwargs.setdefault("quick_filters", self.quick_filters)
        kwargs.setdefault("stages", metadata.dict_items(db.session, opportunities.STAGE_DICT))
        return super().render_template(template, **kwargs)

    def page_context(self, item) -> dict:
        return opportunity_page(item)

    # --- forms posted from the opportunity page and the workbench ----------------------------------
    @expose("/follow_up", methods=["POST"])
    @has_access
    def follow_up(self):
        """Quick follow-up entry (optionally moving the stage along)."""
        pk = request.form.get("opportunity", "")

        def work():
            now = utcnow()
            opp_id = require_visible([pk])[0]
            when = parse_local_datetime(request.form.get("next_followup_at"))
            form = request.form
            opportunities.add_follow_up(db.session, opp_id, current_employee(), form.get("type") or None,
                                        form.get("content"), form.get("result"), when, now)
            stage = request.form.get("stage") or None
            if stage:
                opportunities.set_stage(db.session, opp_id, stage, request.form.get("lost_reason") or None,
                                        now, current_actor())

        return _on_the_page(work, self._back_to(pk), lambda _: _l("Follow-up recorded"))

    @expose("/stage", methods=["POST"])
    @has_access
    def stage(self):
        pk, form = request.form.get("opportunity", ""), request.form
        return _on_the_page(
            lambda: opportunities.set_stage(db.session, require_visible([pk])[0], form.get("stage"),
                                            form.get("lost_reason") or None, utcnow(), current_actor()),
            self._back_to(pk), lambda _: _l("Stage changed"))

    def _back_to(self, pk: str) -> str:
        return safe_next(url_for(f"{type(self).__name__}.show", pk=pk) if pk.isdigit() else
                         url_for("WorkbenchView.index"))

    @expose("/claim", methods=["POST"])
    @has_access
    def claim(self):
        """Claim the posted pooled opportunities (from the workbench): all of them or none."""
        return flash_result(
            lambda: ownership.claim(db.session, current_employee(), ids_from_request(), utcnow(),
                                    current_actor()),
            safe_next(url_for("WorkbenchView.index")),
            lambda result: _l("Claimed %(n)d opportunity(ies)", n=result.count), labels=FIELD_LABELS)

    def _form_page(self, kind: str, ids, error=None, **extra):
        """The give-back / assign / transfer form, with a refusal next to its field."""
        opps = []
        if ids:
            opps = list(db.session.scalars(select(Opportunity).where(Opportunity.id.in_(ids))
                                           .order_by(Opportunity.id)))
        employees = _assignable_employees() if kind in ("assign", "transfer") else []
        if kind == "transfer":
            extra["sources"] = _holders()
        errors = {error.field or "_": error.message} if error is not None else {}
        body = self.render_template(self.form_template, kind=kind, opportunities=opps,
                                    ids=",".join(str(i) for i in ids), errors=errors,
                                    form=request.form, next=safe_next(""),
                                    opportunity_label=opportunity_label, employees=employees, **extra)
        return body, error.status if error is not None else 200

    def _chosen(self, pools_too: bool = False):
        """The posted opportunity ids, all visible, or a flashed refusal and the way back to the list."""
        outcome = run(require_visible, ids_from_request(), pools_too, commit=False)
        if outcome.error is not None:
            flash_error(outcome.error, FIELD_LABELS)
            return None, redirect(safe_next(url_for(f"{type(self).__name__}.list")))
        return outcome.result, None

    @expose("/give_back", methods=["GET", "POST"])
    @has_access
    def give_back(self):
        """Give opportunities back to the public pool, with a reason (the owner only)."""
        ids, back = self._chosen()
        if back is not None:
            return back
        if request.method == "GET":
            return self._form_page("give_back", ids)

        def work():
            me, reason, now, actor = current_employee(), request.form.get("reason"), utcnow(), current_actor()
            return [ownership.give_back(db.session, me, i, reason, now, actor) for i in ids]

        pools, error = run(work)
        if error is not None:
            return self._form_page("give_back", ids, error)
        flash(str(_l("Given back to %(pool)s: %(n)d", pool=", ".join(sorted({p.name for p in pools})),
                     n=len(ids))), "success")
        return redirect(safe_next(url_for("WorkbenchView.index")))

    @expose("/assign", methods=["GET", "POST"])
    @has_access
    def assign(self):
        """A manager assigns / reassigns opportunities (from a pool, waiting, or another owner)."""
        ids, back = self._chosen(pools_too=True)
        if back is not None:
            return back
        if request.method == "GET":
            return self._form_page("assign", ids)

        def work():
            target = visible_employee(request.form.get("employee"), "employee")
            if target is None:
                raise DomainError("Choose the salesperson", field="employee")
            return target, ownership.assign(db.session, ids, target, utcnow(), current_actor(),
                                            request.form.get("note"))

        done, error = run(work)
        if error is not None:
            return self._form_page("assign", ids, error)
        target, result = done
        flash(str(_l("Assigned %(n)d to %(who)s", n=result.count, who=target)), "success")
        for note in result.notes:
            flash(note, "warning")
        return redirect(safe_next(url_for(f"{type(self).__name__}.list")))

    @expose("/transfer", methods=["GET", "POST"])
    @has_access
    def transfer(self):
        """Move ALL open opportunities of one employee (e.g. who resigns) to a successor, or back to
        waiting for the dispatch engine."""
        if request.method == "GET":
            return self._form_page("transfer", [])

        def work():
            source = visible_employee(request.form.get("from_employee"), "from_employee", active=False)
            if source is None:
                raise DomainError("Choose whose opportunities to transfer", field="from_employee")
            target = visible_employee(request.form.get("to_employee"), "to_employee")
            return source, target, ownership.transfer_all(db.session, source, target, utcnow(),
                                                          current_actor(), request.form.get("note"))

        done, error = run(work)
        if error is not None:
            return self._form_page("transfer", [], error)
        source, target, result = done
        where = str(target) if target else str(_l("waiting for dispatch"))
        flash(str(_l("Transferred %(n)d opportunity(ies) of %(who)s to %(where)s", n=result.count, who=source,
                     where=where)), "success")
        for note in result.notes:
            flash(note, "warning")
        return redirect(url_for(f"{type(self).__name__}.list"))

    # --- list actions ------------------------------------------------------------------------------
    @staticmethod
    def selected_ids(items) -> list[int]:
        """The ids of a list action's rows (FAB passes one item or a list)."""
        return [i.id for i in (items if isinstance(items, list) else [items])]

    @classmethod
    def pks(cls, items) -> str:
        return ",".join(str(i) for i in cls.selected_ids(items))

    @action("give_back_action", _l("Give back to the pool…"), None, "fa-reply")
    def give_back_action(self, items):
        return redirect(url_for(f"{type(self).__name__}.give_back", ids=self.pks(items)))

    @action("assign_action", _l("Assign to…"), None, "fa-user-plus")
    def assign_action(self, items):
        return redirect(url_for(f"{type(self).__name__}.assign", ids=self.pks(items)))

    def _set_locked(self, items, locked: bool):
        ids = self.selected_ids(items)
        return flash_result(
            lambda: ownership.set_locked(db.session, ids, locked, utcnow(), current_actor()),
            self.get_redirect(),
            lambda result: (_l("Frozen: %(n)d", n=result.count) if locked
                            else _l("Unfrozen: %(n)d", n=result.count)),
            labels=FIELD_LABELS)

    @action("lock_action", _l("Freeze"), _l("Freeze the selected opportunities? Circulation and claims "
                                            "will leave them where they are."), "fa-lock")
    def lock_action(self, items):
        return self._set_locked(items, True)

    @action("unlock_action", _l("Unfreeze"), None, "fa-unlock")
    def unlock_action(self, items):
        return self._set_locked(items, False)


def opportunity_page(item: Opportunity) -> dict:
    """What the opportunity page shows besides the record: follow-ups, history, leads, the forms."""
    session = db.session
    viewer = current_viewer()
    sm = appbuilder.sm
    follow_ups = list(session.scalars(select(FollowUp).where(FollowUp.opportunity_id == item.id)
                                      .order_by(FollowUp.created_at.desc(), FollowUp.id.desc()).limit(100)))
    logs = list(session.scalars(select(AssignmentLog).where(AssignmentLog.opportunity_id == item.id)
                                .order_by(AssignmentLog.created_at.desc(), AssignmentLog.id.desc())
                                .limit(100)))
    leads = list(session.scalars(select(Lead).where(Lead.opportunity_id == item.id)
                                 .order_by(Lead.created_at.desc()).limit(50)))
    remember_names("employee", [f.employee_id for f in follow_ups]
                   + [x for log in logs for x in (log.from_owner_id, log.to_owner_id)])
    remember_names("pool", [x for log in logs for x in (log.from_pool_id, log.to_pool_id)])
    rule = circulation.rule_of(session, item)
    is_open = item.status in OPEN_STATUSES
    return {
        "item": item,
        "follow_ups": follow_ups,
        "logs": logs,
        "leads": leads,
        "lead_phone": mask_phone,  # for every role: a full number shows only on request, audited
        "recycle_at": circulation.recycle_due_at(session, item, rule),
        "rule": rule,
        "is_open": is_open,
        "is_mine": item.status == OWNED and item.owner_id == viewer.employee_id,
        "can_write": is_open and sm.has_access("can_write", policy.OPPORTUNITY),
        "can_assign": is_open and sm.has_access("can_assign", policy.OPPORTUNITY),
        "followup_types": metadata.dict_items(session, opportunities.FOLLOWUP_TYPE_DICT),
        "stage_items": metadata.dict_items(session, opportunities.STAGE_DICT),
        "lost_reasons": metadata.dict_items(session, opportunities.LOST_REASON_DICT),
        "employee_name": employee_name,
        "pool_name": pool_name,
        "reason_label": lambda r: REASON_LABELS.get(r, r),
        "status_label": lambda s: STATUS_LABELS.get(s, s),
    }
