"""The sales domain's pages and APIs: opportunities, the public pool, follow-ups, customers, the
assignment log and the salesperson's workbench.

Every ownership change goes through app.services.ownership; these views only find the rows the user
may act on (the data scope, or the pools they may claim from), turn the form or JSON body into
arguments, commit, and turn DomainError into a message next to the field / a 4xx JSON body.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.actions import action
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.api import protect, safe
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select

from app import clock
from app.clock import utcnow
from app.extensions import appbuilder, db
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import (
    OPEN_STATUSES,
    OWNED,
    POOLED,
    AssignmentLog,
    ClaimCounter,
    Customer,
    FollowUp,
    Lead,
    Opportunity,
    Pool,
    SalesProfile,
)
from app.security import policy
from app.security.masking import mask_phone, shown_phone
from app.security.scope import current_viewer, restrict, scope_clause
from app.services import metadata, ownership
from app.services.errors import DomainError
from app.views.base import CrmModelRestApi, CrmModelView
from app.views.employees import HR_LABELS

STATUS_LABELS = {"waiting": _l("Waiting for dispatch"), "owned": _l("Owned"),
                 "pooled": _l("In a public pool"), "won": _l("Won"), "lost": _l("Lost")}
REASON_LABELS = {"dispatch": _l("Dispatched"), "claim": _l("Claimed"), "give_back": _l("Given back"),
                 "assign": _l("Assigned by a manager"), "transfer": _l("Transferred"),
                 "recycle": _l("Recycled"), "sticky": _l("Repeat lead (sticky)"), "to_pool": _l("To a pool")}
QUICK_FILTERS = {"mine": _l("Mine"), "due_today": _l("Follow-up due today"), "overdue": _l("Overdue"),
                 "recycle_soon": _l("About to be recycled")}
WORKBENCH_ROWS = 200
CLAIMABLE_ROWS = 50
FIELD_LABELS = {"content": _l("Content"), "next_followup_at": _l("Next follow-up"), "type": _l("Type"),
                "result": _l("Result"), "stage": _l("Stage"), "lost_reason": _l("Lost reason"),
                "reason": _l("Reason"), "employee": _l("Salesperson"), "ids": _l("Opportunities"),
                "to_employee": _l("Successor"), "from_employee": _l("Employee")}


# --- helpers ----------------------------------------------------------------------------------------
def customer_label(customer) -> str:
    """A customer as shown in lists: the name, else the masked phone (never the full number)."""
    if customer is None:
        return ""
    return customer.name or mask_phone(customer.phone)


def opportunity_label(opp) -> str:
    return "" if opp is None else f"#{opp.id} {customer_label(opp.customer)}"


def _fmt_time(value) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _names(kind: str, ids) -> dict:
    """id → name of employees or pools, cached for the request (lists show many rows)."""
    cache = g.setdefault("_crm_sales_names", {})
    known = cache.setdefault(kind, {})
    wanted = {i for i in ids if i is not None and i not in known}
    if wanted:
        model = Employee if kind == "employee" else Pool
        known.update(dict(db.session.execute(select(model.id, model.name).where(model.id.in_(wanted))).all()))
        known.update({i: f"#{i}" for i in wanted if i not in known})
    return known


def employee_name(value) -> str:
    return "" if value is None else _names("employee", [value]).get(value, f"#{value}")


def pool_name(value) -> str:
    return "" if value is None else _names("pool", [value]).get(value, f"#{value}")


def local_time(value: dt.datetime | None) -> str:
    """A stored (naive UTC) time in the company's time zone, for the workbench."""
    if value is None:
        return ""
    return clock.to_local(value).strftime("%m-%d %H:%M")


def parse_local_datetime(text: str | None) -> dt.datetime | None:
    """A form's <input type="datetime-local"> (company time zone) as naive UTC."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DomainError("%(value)s is not a date and time", field="next_followup_at",
                          value=repr(text)) from None
    return clock.to_utc(value)


def parse_api_datetime(value) -> dt.datetime | None:
    """ISO 8601 from the API: with an offset it is converted; without one it is UTC (as stored)."""
    if value in (None, ""):
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DomainError("%(value)s is not an ISO 8601 date and time", field="next_followup_at",
                          value=repr(value)) from None
    return parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)


def _me() -> Employee:
    viewer = current_viewer()
    employee = db.session.get(Employee, viewer.employee_id) if viewer.employee_id else None
    if employee is None:
        raise DomainError("Your login is not linked to an employee", status=403)
    return employee


def _actor() -> ownership.Actor:
    user = getattr(g, "user", None)
    return ownership.Actor(getattr(user, "id", None), getattr(user, "username", None) or "unknown")


def _pool_clause(viewer):
    """Pooled opportunities in the pools the viewer's org unit may claim from (what the Pool page shows
    to them, whether or not they may claim each one right now)."""
    units = ownership._ancestor_ids(viewer.org_path)
    if not units:
        return None
    return Opportunity.pool_id.in_(select(Pool.id).where(Pool.org_unit_id.in_(units))) & (
        Opportunity.status == POOLED)


def visible_opportunities(ids, pools: bool = False) -> set[int]:
    """Which of `ids` the current user may act on: their data scope (or, with `pools`, also the pools
    their org unit may claim from)."""
    viewer = current_viewer()
    query = select(Opportunity.id).where(Opportunity.id.in_(ids))
    clause = scope_clause(Opportunity, viewer)
    if clause is not None:
        pool = _pool_clause(viewer) if pools else None
        query = query.where(clause if pool is None else or_(clause, pool))
    return set(db.session.scalars(query))


def _require_visible(ids, pools: bool = False) -> list[int]:
    try:
        ids = sorted({int(i) for i in ids if str(i).strip()})
    except (TypeError, ValueError):
        raise DomainError("Opportunity ids must be whole numbers", field="ids", status=400) from None
    if not ids:
        raise DomainError("Choose at least one opportunity", field="ids", status=400)
    hidden = set(ids) - visible_opportunities(ids, pools)
    if hidden:
        listed = ", ".join(f"#{i}" for i in sorted(hidden))
        raise DomainError("Not found or outside your data scope: %(ids)s; nothing was done", field="ids",
                          status=404, ids=listed)
    return ids


def _visible_employee(emp_id, field: str, active: bool = True) -> Employee | None:
    if emp_id in (None, ""):
        return None
    try:
        emp_id = int(emp_id)
    except (TypeError, ValueError):
        raise DomainError("Unknown employee", field=field, status=400) from None
    employee = db.session.scalar(restrict(select(Employee).where(Employee.id == emp_id), Employee,
                                          current_viewer()))
    if employee is None:
        raise DomainError("Unknown employee or outside your data scope", field=field, status=404)
    if active and employee.hr_status == HR_RESIGNED:
        raise DomainError("%(name)s has resigned", field=field, status=409, name=str(employee))
    return employee


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


def entry_label(entry) -> str:
    """A dictionary entry's label in the page's language."""
    from flask_babel import get_locale

    locale = get_locale()
    return entry.label_en if locale is not None and locale.language == "en" else entry.label_zh


def _ids_from_request() -> list[str]:
    values = request.form.getlist("ids") or request.form.getlist("rowid") or request.args.getlist("ids")
    out = []
    for value in values:
        out.extend(v for v in str(value).split(",") if v.strip())
    return out


def _safe_next(default: str) -> str:
    target = request.form.get("next") or request.args.get("next") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc and not parts.scheme:
        return target
    return default


def _flash_error(exc: DomainError) -> None:
    label = FIELD_LABELS.get(exc.field) if exc.field else None
    flash(f"{label}: {exc.message}" if label else exc.message, "danger")


def _commit_or_flash(work, back: str, success, not_found_aborts: bool = True):
    """Run `work()` and commit, then flash `success(result)`; a DomainError rolls back and is flashed
    (a 404 — an id outside the user's scope — aborts instead, when `not_found_aborts`)."""
    try:
        result = work()
        db.session.commit()
    except DomainError as exc:
        db.session.rollback()
        if not_found_aborts and exc.status == 404:
            abort(404)
        _flash_error(exc)
        return redirect(back)
    flash(str(success(result)), "success")
    return redirect(back)


def quick_clause(quick: str | None, now: dt.datetime):
    viewer = current_viewer()
    if quick == "mine":
        return Opportunity.owner_id == viewer.employee_id
    if quick == "due_today":
        return ownership.due_today_clause(db.session, now) & Opportunity.status.in_(OPEN_STATUSES)
    if quick == "overdue":
        return ownership.overdue_clause(now) & Opportunity.status.in_(OPEN_STATUSES)
    if quick == "recycle_soon":
        return ownership.about_to_recycle_clause(db.session, now)
    return None


class QuickFilter(BaseFilter):
    """The list's quick filters (?quick=due_today|overdue|recycle_soon|mine), applied to list and export."""

    name = "Quick filter"
    arg_name = "quick"

    def apply(self, query, value):
        from flask import has_request_context

        quick = request.args.get("quick") if has_request_context() else None
        clause = quick_clause(quick, utcnow())
        return query if clause is None else query.filter(clause)


class ClaimableFilter(BaseFilter):
    """Pooled opportunities the current user may claim now (the Pool page's rows)."""

    name = "Claimable"
    arg_name = "claimable"

    def apply(self, query, value):
        viewer = current_viewer()
        return query.filter(ownership.claimable_clause(db.session, viewer.employee_id, viewer.org_path,
                                                       utcnow()))


# --- opportunities ----------------------------------------------------------------------------------
OPP_LABELS = {
    "id": _l("No."), "customer": _l("Customer"), "product_line": _l("Product line"), "stage": _l("Stage"),
    "intention_level": _l("Intention"), "status": _l("Status"), "owner": _l("Owner"), "pool": _l("Pool"),
    "org_unit": _l("Org unit"), "source": _l("Source"), "campaign": _l("Campaign"), "region": _l("Region"),
    "next_followup_at": _l("Next follow-up (UTC)"), "last_followup_at": _l("Last follow-up (UTC)"),
    "idle_since": _l("Idle since (UTC)"), "protected_until": _l("Protected until (UTC)"),
    "assigned_at": _l("Assigned at (UTC)"), "claimed_at": _l("Claimed at (UTC)"),
    "closed_at": _l("Closed at (UTC)"), "lost_reason": _l("Lost reason"), "locked": _l("Frozen"),
    "is_recycled": _l("Recycled"), "recycle_count": _l("Times recycled"),
    "created_at": _l("Created at (UTC)"), "customer_id": _l("Customer no."),
}
OPP_DICT_FIELDS = {"stage": ownership.STAGE_DICT, "product_line": "product_line",
                   "intention_level": "intention_level", "lost_reason": ownership.LOST_REASON_DICT,
                   "source": "lead_source"}
OPP_FORMATTERS = {"customer": customer_label, "status": lambda v: STATUS_LABELS.get(v, v),
                  "next_followup_at": _fmt_time, "last_followup_at": _fmt_time, "idle_since": _fmt_time,
                  "protected_until": _fmt_time}
# FAB's add / edit / delete are not offered: every change goes through the ownership service.
NO_CRUD = {"add", "edit", "delete", "download"}
NO_CRUD_PERMISSIONS = {"add": "crud_disabled", "edit": "crud_disabled", "delete": "crud_disabled"}


class PageShowMixin:
    """A show page whose template also gets `page_context(item)` (history, follow-ups, leads …)."""

    def page_context(self, item) -> dict:
        return {}

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        pk = self._deserialize_pk_if_composite(pk)
        widgets = self._show(pk)
        item = self.datamodel.get(pk, self._base_filters)
        return self.render_template(self.show_template, pk=pk, title=self.show_title, widgets=widgets,
                                    related_views=[], **self.page_context(item))


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
    list_template = "crm/workbench_list.html"
    show_template = "crm/workbench_opportunity.html"
    form_template = "crm/workbench_form.html"
    list_columns = ["id", "customer", "product_line", "stage", "intention_level", "status", "owner", "pool",
                    "next_followup_at", "last_followup_at", "idle_since", "locked"]
    show_columns = ["id", "customer", "product_line", "stage", "intention_level", "status", "owner", "pool",
                    "org_unit", "source", "campaign", "region", "assigned_at", "claimed_at",
                    "last_followup_at", "next_followup_at", "idle_since", "protected_until", "lost_reason",
                    "closed_at", "locked", "is_recycled", "recycle_count", "created_at"]
    export_columns = ["id", "customer_id", "product_line", "stage", "intention_level", "status", "owner",
                      "pool", "org_unit", "source", "campaign", "region", "assigned_at", "claimed_at",
                      "last_followup_at", "next_followup_at", "idle_since", "protected_until", "lost_reason",
                      "closed_at", "locked"]
    search_columns = ["status", "stage", "product_line", "intention_level", "owner", "pool", "org_unit",
                      "next_followup_at", "last_followup_at", "idle_since", "locked", "campaign", "region"]
    order_columns = ["id", "next_followup_at", "last_followup_at", "idle_since", "status"]
    base_order = ("id", "desc")
    base_filters = [["id", QuickFilter, lambda: []]]
    dict_fields = OPP_DICT_FIELDS
    formatters_columns = OPP_FORMATTERS
    label_columns = OPP_LABELS
    quick_filters = QUICK_FILTERS

    # --- list and page -----------------------------------------------------------------------------
    def render_template(self, template, **kwargs):
        kwargs.setdefault("entry_label", entry_label)
        kwargs.setdefault("hr_label", lambda v: HR_LABELS.get(v, v))
        kwargs.setdefault("quick_filters", self.quick_filters)
        kwargs.setdefault("stages", metadata.dict_items(db.session, ownership.STAGE_DICT))
        return super().render_template(template, **kwargs)

    def page_context(self, item) -> dict:
        return opportunity_page(item)

    def _can(self, permission: str) -> bool:
        return self.appbuilder.sm.has_access(permission, policy.OPPORTUNITY)

    # --- forms posted from the opportunity page and the workbench ----------------------------------
    def _visible_one(self, pk) -> int:
        return _require_visible([pk])[0]

    @expose("/follow_up", methods=["POST"])
    @has_access
    def follow_up(self):
        """Quick follow-up entry (optionally moving the stage along)."""
        pk = request.form.get("opportunity", "")

        def work():
            now = utcnow()
            opp_id = self._visible_one(pk)
            when = parse_local_datetime(request.form.get("next_followup_at"))
            ownership.add_follow_up(db.session, opp_id, _me(), request.form.get("type") or None,
                                    request.form.get("content"), request.form.get("result"), when, now)
            stage = request.form.get("stage") or None
            if stage:
                ownership.set_stage(db.session, opp_id, stage, request.form.get("lost_reason") or None,
                                    now, _actor())

        return _commit_or_flash(work, self._back_to(pk), lambda _: _l("Follow-up recorded"))

    @expose("/stage", methods=["POST"])
    @has_access
    def stage(self):
        pk = request.form.get("opportunity", "")

        def work():
            ownership.set_stage(db.session, self._visible_one(pk), request.form.get("stage"),
                                request.form.get("lost_reason") or None, utcnow(), _actor())

        return _commit_or_flash(work, self._back_to(pk), lambda _: _l("Stage changed"))

    def _back_to(self, pk: str) -> str:
        return _safe_next(url_for(f"{type(self).__name__}.show", pk=pk) if pk.isdigit() else
                          url_for("WorkbenchView.index"))

    @expose("/claim", methods=["POST"])
    @has_access
    def claim(self):
        """Claim the posted pooled opportunities (from the workbench): all of them or none."""
        return _commit_or_flash(
            lambda: ownership.claim(db.session, _me(), _ids_from_request(), utcnow(), _actor()),
            _safe_next(url_for("WorkbenchView.index")),
            lambda result: _l("Claimed %(n)d opportunity(ies)", n=result.count), not_found_aborts=False)

    def _form_page(self, kind: str, ids, errors: dict | None = None, status: int = 200, **extra):
        opps = []
        if ids:
            opps = list(db.session.scalars(select(Opportunity).where(Opportunity.id.in_(ids))
                                           .order_by(Opportunity.id)))
        employees = _assignable_employees() if kind in ("assign", "transfer") else []
        if kind == "transfer":
            extra["sources"] = _holders()
        body = self.render_template(self.form_template, kind=kind, opportunities=opps,
                                    ids=",".join(str(i) for i in ids), errors=errors or {},
                                    form=request.form, next=_safe_next(""),
                                    opportunity_label=opportunity_label, employees=employees, **extra)
        return body, status

    @expose("/give_back", methods=["GET", "POST"])
    @has_access
    def give_back(self):
        """Give opportunities back to the public pool, with a reason (the owner only)."""
        raw = _ids_from_request()
        try:
            ids = _require_visible(raw)
        except DomainError as exc:
            _flash_error(exc)
            return redirect(_safe_next(url_for(f"{type(self).__name__}.list")))
        if request.method == "GET":
            return self._form_page("give_back", ids)
        now, me, actor = utcnow(), None, _actor()
        try:
            me = _me()
            reason = request.form.get("reason")
            pools = [ownership.give_back(db.session, me, i, reason, now, actor) for i in ids]
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self._form_page("give_back", ids, {exc.field or "_": exc.message}, exc.status)
        flash(str(_l("Given back to %(pool)s: %(n)d", pool=", ".join(sorted({p.name for p in pools})),
                     n=len(ids))), "success")
        return redirect(_safe_next(url_for("WorkbenchView.index")))

    @expose("/assign", methods=["GET", "POST"])
    @has_access
    def assign(self):
        """A manager assigns / reassigns opportunities (from a pool, waiting, or another owner)."""
        try:
            ids = _require_visible(_ids_from_request(), pools=True)
        except DomainError as exc:
            _flash_error(exc)
            return redirect(_safe_next(url_for(f"{type(self).__name__}.list")))
        if request.method == "GET":
            return self._form_page("assign", ids)
        try:
            target = _visible_employee(request.form.get("employee"), "employee")
            if target is None:
                raise DomainError("Choose the salesperson", field="employee")
            result = ownership.assign(db.session, ids, target, utcnow(), _actor(), request.form.get("note"))
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self._form_page("assign", ids, {exc.field or "_": exc.message}, exc.status)
        flash(str(_l("Assigned %(n)d to %(who)s", n=result.count, who=target)), "success")
        for note in result.notes:
            flash(note, "warning")
        return redirect(_safe_next(url_for(f"{type(self).__name__}.list")))

    @expose("/transfer", methods=["GET", "POST"])
    @has_access
    def transfer(self):
        """Move ALL open opportunities of one employee (e.g. who resigns) to a successor, or back to
        waiting for the dispatch engine."""
        if request.method == "GET":
            return self._form_page("transfer", [])
        try:
            source = _visible_employee(request.form.get("from_employee"), "from_employee", active=False)
            if source is None:
                raise DomainError("Choose whose opportunities to transfer", field="from_employee")
            target = _visible_employee(request.form.get("to_employee"), "to_employee")
            result = ownership.transfer_all(db.session, source, target, utcnow(), _actor(),
                                            request.form.get("note"))
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self._form_page("transfer", [], {exc.field or "_": exc.message}, exc.status)
        where = str(target) if target else str(_l("waiting for dispatch"))
        flash(str(_l("Transferred %(n)d opportunity(ies) of %(who)s to %(where)s", n=result.count, who=source,
                     where=where)), "success")
        for note in result.notes:
            flash(note, "warning")
        return redirect(url_for(f"{type(self).__name__}.list"))

    # --- list actions ------------------------------------------------------------------------------
    @staticmethod
    def _pks(items) -> str:
        items = items if isinstance(items, list) else [items]
        return ",".join(str(i.id) for i in items)

    @action("give_back_action", _l("Give back to the pool…"), None, "fa-reply")
    def give_back_action(self, items):
        return redirect(url_for(f"{type(self).__name__}.give_back", ids=self._pks(items)))

    @action("assign_action", _l("Assign to…"), None, "fa-user-plus")
    def assign_action(self, items):
        return redirect(url_for(f"{type(self).__name__}.assign", ids=self._pks(items)))

    def _set_locked(self, items, locked: bool):
        items = items if isinstance(items, list) else [items]
        return _commit_or_flash(
            lambda: ownership.set_locked(db.session, [i.id for i in items], locked, utcnow(), _actor()),
            self.get_redirect(),
            lambda result: (_l("Frozen: %(n)d", n=result.count) if locked
                            else _l("Unfrozen: %(n)d", n=result.count)),
            not_found_aborts=False)

    @action("lock_action", _l("Freeze"), _l("Freeze the selected opportunities? Circulation and claims "
                                            "will leave them where they are."), "fa-lock")
    def lock_action(self, items):
        return self._set_locked(items, True)

    @action("unlock_action", _l("Unfreeze"), None, "fa-unlock")
    def unlock_action(self, items):
        return self._set_locked(items, False)


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
        items = items if isinstance(items, list) else [items]
        try:
            result = ownership.claim(db.session, _me(), [i.id for i in items], utcnow(), _actor())
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            _flash_error(exc)
            return redirect(self.get_redirect())
        flash(str(_l("Claimed %(n)d opportunity(ies)", n=result.count)), "success")
        return redirect(self.get_redirect())

    @action("assign_action", _l("Assign to…"), None, "fa-user-plus")
    def assign_action(self, items):
        return redirect(url_for("OpportunityView.assign", ids=OpportunityView._pks(items),
                                next=url_for(f"{type(self).__name__}.list")))


class ClaimablePoolFilter(BaseFilter):
    name = "Pools I may claim from"
    arg_name = "claimable_pool"

    def apply(self, query, value):
        viewer = current_viewer()
        units = ownership._ancestor_ids(viewer.org_path) or [-1]
        return query.filter(Pool.enabled.is_(True), Pool.org_unit_id.in_(units))


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
    _names("employee", [f.employee_id for f in follow_ups] + [x for log in logs
                                                              for x in (log.from_owner_id, log.to_owner_id)])
    _names("pool", [x for log in logs for x in (log.from_pool_id, log.to_pool_id)])
    rule = ownership.circulation_rule_for(session, ownership._unit_path(session, item.org_unit_id),
                                          item.product_line_id, item.intention_level_id)
    is_open = item.status in OPEN_STATUSES
    return {
        "item": item,
        "follow_ups": follow_ups,
        "logs": logs,
        "leads": leads,
        "lead_phone": lambda p: shown_phone(p, viewer),
        "recycle_at": ownership.recycle_due_at(session, item, rule),
        "rule": rule,
        "is_open": is_open,
        "is_mine": item.status == OWNED and item.owner_id == viewer.employee_id,
        "can_write": is_open and sm.has_access("can_write", policy.OPPORTUNITY),
        "can_assign": is_open and sm.has_access("can_assign", policy.OPPORTUNITY),
        "followup_types": metadata.dict_items(session, ownership.FOLLOWUP_TYPE_DICT),
        "stage_items": metadata.dict_items(session, ownership.STAGE_DICT),
        "lost_reasons": metadata.dict_items(session, ownership.LOST_REASON_DICT),
        "employee_name": employee_name,
        "pool_name": pool_name,
        "reason_label": lambda r: REASON_LABELS.get(r, r),
        "status_label": lambda s: STATUS_LABELS.get(s, s),
        "fmt": _fmt_time,
    }


# --- follow-ups, customers, assignment log ----------------------------------------------------------
class FollowUpView(CrmModelView):
    """Follow-up records (entered from the opportunity page or the workbench; kept as written)."""

    datamodel = SQLAInterface(FollowUp)
    class_permission_name = policy.FOLLOW_UP
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Follow-ups")
    list_columns = ["created_at", "opportunity", "employee", "type", "content", "result", "next_followup_at"]
    show_columns = list_columns
    export_columns = ["created_at", "opportunity_id", "employee", "type", "content", "result",
                      "next_followup_at"]
    search_columns = ["created_at", "employee", "type", "result", "next_followup_at"]
    order_columns = ["created_at", "next_followup_at"]
    base_order = ("created_at", "desc")
    dict_fields = {"type": ownership.FOLLOWUP_TYPE_DICT}
    formatters_columns = {"opportunity": opportunity_label, "created_at": _fmt_time,
                          "next_followup_at": _fmt_time}
    label_columns = {"created_at": _l("Time (UTC)"), "opportunity": _l("Opportunity"),
                     "opportunity_id": _l("Opportunity no."), "employee": _l("By"), "type": _l("Type"),
                     "content": _l("Content"), "result": _l("Result"),
                     "next_followup_at": _l("Next follow-up (UTC)")}


class CustomerPageView(PageShowMixin, CrmModelView):
    """The customer page: the person behind leads, with their leads, opportunities, follow-ups and
    assignment history (what the viewer may see of them). The customer list and its edit form are
    app.views.leads.CustomerView's; this view adds no menu entry."""

    route_base = "/customer"
    datamodel = SQLAInterface(Customer)
    class_permission_name = policy.CUSTOMER
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Customers")
    show_template = "crm/customer_show.html"
    list_columns = ["id", "name", "phone", "region", "registered_user_id", "created_at"]
    show_columns = ["id", "name", "phone", "region", "registered_user_id", "marketing_consent", "created_at"]
    export_columns = ["id", "name", "phone", "region", "registered_user_id", "created_at"]
    search_columns = ["name", "region", "registered_user_id", "created_at"]
    order_columns = ["id", "name", "created_at"]
    base_order = ("id", "desc")
    phone_columns = ("phone",)
    formatters_columns = {"created_at": _fmt_time}
    label_columns = {"id": _l("No."), "name": _l("Name"), "phone": _l("Phone"), "region": _l("Region"),
                     "registered_user_id": _l("Registered user"),
                     "marketing_consent": _l("Marketing consent"), "created_at": _l("Created at (UTC)")}

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
    _names("employee", [f.employee_id for f in follow_ups] + [x for log in logs
                                                              for x in (log.from_owner_id, log.to_owner_id)])
    _names("pool", [x for log in logs for x in (log.from_pool_id, log.to_pool_id)])
    return {"opportunities": opps, "leads": leads, "follow_ups": follow_ups, "logs": logs,
            "lead_phone": lambda p: shown_phone(p, viewer), "employee_name": employee_name,
            "pool_name": pool_name, "reason_label": lambda r: REASON_LABELS.get(r, r),
            "status_label": lambda s: STATUS_LABELS.get(s, s), "fmt": _fmt_time}


class AssignmentLogView(CrmModelView):
    """Every ownership change, read-only, within the data scope (through the opportunity)."""

    datamodel = SQLAInterface(AssignmentLog)
    class_permission_name = policy.ASSIGNMENT_LOG
    base_permissions = ["can_read", "can_export"]
    list_title = show_title = _l("Assignment Log")
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
                          "from_pool_id": pool_name, "to_pool_id": pool_name, "created_at": _fmt_time}
    label_columns = {"created_at": _l("Time (UTC)"), "opportunity": _l("Opportunity"),
                     "opportunity_id": _l("Opportunity no."), "reason": _l("Why"),
                     "from_owner_id": _l("From"), "to_owner_id": _l("To"), "from_pool_id": _l("From pool"),
                     "to_pool_id": _l("To pool"), "actor_name": _l("By"), "note": _l("Note"),
                     "dispatch_rule_id": _l("Dispatch rule"), "circulation_rule_id": _l("Circulation rule"),
                     "trace": _l("Trace")}


# --- the salesperson's workbench --------------------------------------------------------------------
class WorkbenchView(BaseView):
    """My opportunities with the day's filters, quick follow-up entry, and claiming from my pools."""

    route_base = "/workbench"
    default_view = "index"
    class_permission_name = policy.WORKBENCH
    method_permission_name = {"index": "read"}

    @expose("/")
    @has_access
    def index(self):
        session = db.session
        viewer = current_viewer()
        now = utcnow()
        me = session.get(Employee, viewer.employee_id) if viewer.employee_id else None
        if me is None:
            flash(str(_l("Your login is not linked to an employee: there is no workbench for it.")),
                  "warning")
            return self.render_template("crm/workbench.html", me=None)
        mine = (Opportunity.owner_id == me.id) & (Opportunity.status == OWNED)
        clauses = {"all": None, "due_today": ownership.due_today_clause(session, now),
                   "overdue": ownership.overdue_clause(now),
                   "recycle_soon": ownership.about_to_recycle_clause(session, now)}
        counts = {}
        for key, clause in clauses.items():
            query = select(func.count(Opportunity.id)).where(mine)
            counts[key] = session.scalar(query if clause is None else query.where(clause))
        by_stage = dict(session.execute(select(Opportunity.stage_id, func.count(Opportunity.id)).where(mine)
                                        .group_by(Opportunity.stage_id)).all())
        stages = metadata.dict_items(session, ownership.STAGE_DICT)
        chosen = request.args.get("f", "all")
        query = select(Opportunity).where(mine)
        stage_code = chosen[6:] if chosen.startswith("stage:") else None
        if stage_code is not None:
            stage_id = next((s.id for s in stages if s.code == stage_code), -1)
            query = query.where(Opportunity.stage_id == stage_id)
        elif clauses.get(chosen) is not None:
            query = query.where(clauses[chosen])
        else:
            chosen = "all" if chosen not in clauses else chosen
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = list(session.scalars(query.order_by(Opportunity.next_followup_at.is_(None),
                                                   Opportunity.next_followup_at, Opportunity.id)
                                    .limit(WORKBENCH_ROWS)).unique())
        rules = ownership._RuleCache(session)
        recycle = {o.id: ownership.recycle_due_at(session, o, rules(o.org_unit_id, o.product_line_id,
                                                                      o.intention_level_id)) for o in rows}
        profile = session.get(SalesProfile, me.id)
        capacity = ownership.capacity_of(me, profile, rules(me.org_unit_id, None, None))
        pools = self._pools(session, me, now)
        claimable = list(session.scalars(
            select(Opportunity).where(ownership.claimable_clause(session, me.id, viewer.org_path, now))
            .order_by(Opportunity.id).limit(CLAIMABLE_ROWS)).unique())
        return self.render_template(
            "crm/workbench.html", me=me, counts=counts, by_stage=by_stage, stages=stages, chosen=chosen,
            rows=rows, total=total, limit=WORKBENCH_ROWS, recycle=recycle, capacity=capacity,
            load=profile.open_count if profile else counts["all"], pools=pools, claimable=claimable,
            quick_filters=QUICK_FILTERS, customer_label=customer_label, local_time=local_time,
            entry_label=entry_label,
            followup_types=metadata.dict_items(session, ownership.FOLLOWUP_TYPE_DICT),
            lost_reasons=metadata.dict_items(session, ownership.LOST_REASON_DICT),
            can_claim=self.appbuilder.sm.has_access("can_claim", policy.OPPORTUNITY),
            can_write=self.appbuilder.sm.has_access("can_write", policy.OPPORTUNITY))

    @staticmethod
    def _pools(session, me: Employee, now: dt.datetime) -> list[dict]:
        """The pools I may claim from: how many I may claim there now, and today's allowance left."""
        day = clock.local_date(now)
        path = ownership._unit_path(session, me.org_unit_id)
        used = dict(session.execute(select(ClaimCounter.pool_id, ClaimCounter.claimed)
                                    .where(ClaimCounter.employee_id == me.id, ClaimCounter.day == day)).all())
        waiting = dict(session.execute(
            select(Opportunity.pool_id, func.count(Opportunity.id))
            .where(ownership.claimable_clause(session, me.id, path, now))
            .group_by(Opportunity.pool_id)).all())
        return [{"pool": p, "claimable": waiting.get(p.id, 0), "claimed_today": used.get(p.id, 0),
                 "left_today": max(p.daily_claim_limit - used.get(p.id, 0), 0)}
                for p in session.scalars(ownership.claimable_pools(session, me).order_by(Pool.name))]


# --- REST API ---------------------------------------------------------------------------------------
class OpportunityApi(CrmModelRestApi):
    """/api/v1/opportunity/: read (scoped) and the ownership changes, each a POST answering 4xx JSON
    with a message when refused (nothing is written then)."""

    datamodel = SQLAInterface(Opportunity)
    resource_name = "opportunity"
    class_permission_name = policy.OPPORTUNITY
    # No _info: it would list related customers by name or phone; no post / put / delete: every change
    # is one of the endpoints below, through the ownership service.
    include_route_methods = {"get", "get_list", "pool", "claim", "give_back", "assign", "follow_up", "stage",
                             "lock", "unlock", "transfer_all"}
    method_permission_name = {**policy.METHOD_PERMISSIONS, "pool": "read", "claim": "claim",
                              "give_back": "write", "follow_up": "write", "stage": "write",
                              "assign": "assign", "lock": "assign", "unlock": "assign",
                              "transfer_all": "assign"}
    list_columns = ["id", "customer.id", "customer.name", "product_line.code", "stage.code",
                    "intention_level.code", "status", "owner.id", "owner.name", "pool.id", "pool.name",
                    "org_unit.id", "assigned_at", "claimed_at", "last_followup_at", "next_followup_at",
                    "idle_since", "protected_until", "locked", "closed_at"]
    show_columns = list_columns + ["source.code", "campaign", "region", "lost_reason.code", "is_recycled",
                                   "recycle_count", "created_at", "updated_at"]
    search_columns = ["status", "stage", "product_line", "intention_level", "owner", "pool", "locked",
                      "next_followup_at", "idle_since"]
    order_columns = ["id", "next_followup_at", "idle_since", "last_followup_at"]
    base_order = ("id", "desc")
    dict_fields = OPP_DICT_FIELDS

    def _body(self) -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise DomainError("The body must be a JSON object", status=400)
        return body

    def _run(self, work):
        try:
            payload = work(self._body())
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self.response(exc.status, **exc.as_dict())
        return self.response(200, **payload)

    @staticmethod
    def _one(body) -> int:
        value = body.get("id")
        if value is None:
            raise DomainError("Give the opportunity id", field="id", status=400)
        return _require_visible([value])[0]

    @api_expose("/pool", methods=["GET"])
    @protect()
    @safe
    def pool(self):
        """The pooled opportunities the caller may claim now (first 500).
        ---
        get:
          responses:
            200:
              description: Claimable opportunities
        """
        viewer = current_viewer()
        now = utcnow()
        rows = db.session.execute(
            select(Opportunity.id, Opportunity.pool_id, Opportunity.product_line_id, Opportunity.stage_id,
                   Opportunity.intention_level_id)
            .where(ownership.claimable_clause(db.session, viewer.employee_id, viewer.org_path, now))
            .order_by(Opportunity.id).limit(500)).all()
        return self.response(200, result=[dict(r._mapping) for r in rows], count=len(rows))

    @api_expose("/claim", methods=["POST"])
    @protect()
    @safe
    def claim(self):
        """Claim pooled opportunities: {"ids": [..]} — all of them, or none (409 with the reason).
        ---
        post:
          responses:
            200:
              description: The claimed ids
            409:
              description: Refused (limit, capacity, cooling, not claimable); nothing claimed
        """
        def work(body):
            result = ownership.claim(db.session, _me(), body.get("ids") or [], utcnow(), _actor())
            return {"claimed": result.moved}
        return self._run(work)

    @api_expose("/give_back", methods=["POST"])
    @protect()
    @safe
    def give_back(self):
        """Give an owned opportunity back to the pool: {"id": n, "reason": "…"}.
        ---
        post:
          responses:
            200:
              description: The pool it went to
        """
        def work(body):
            pool = ownership.give_back(db.session, _me(), self._one(body), body.get("reason"), utcnow(),
                                       _actor())
            return {"pool": {"id": pool.id, "name": pool.name}}
        return self._run(work)

    @api_expose("/assign", methods=["POST"])
    @protect()
    @safe
    def assign(self):
        """Manager assign / reassign: {"ids": [..], "employee_id": n, "note": "…"}.
        ---
        post:
          responses:
            200:
              description: The ids moved, those already there, and notes (e.g. over capacity)
        """
        def work(body):
            ids = _require_visible(body.get("ids") or [], pools=True)
            target = _visible_employee(body.get("employee_id"), "employee_id")
            if target is None:
                raise DomainError("Give employee_id", field="employee_id", status=400)
            result = ownership.assign(db.session, ids, target, utcnow(), _actor(), body.get("note"))
            return {"assigned": result.moved, "skipped": result.skipped, "notes": result.notes}
        return self._run(work)

    @api_expose("/transfer_all", methods=["POST"])
    @protect()
    @safe
    def transfer_all(self):
        """Move all open opportunities of an employee: {"from_employee_id": n, "to_employee_id": m|null}.
        ---
        post:
          responses:
            200:
              description: How many moved
        """
        def work(body):
            source = _visible_employee(body.get("from_employee_id"), "from_employee_id", active=False)
            if source is None:
                raise DomainError("Give from_employee_id", field="from_employee_id", status=400)
            target = _visible_employee(body.get("to_employee_id"), "to_employee_id")
            result = ownership.transfer_all(db.session, source, target, utcnow(), _actor(), body.get("note"))
            return {"moved": result.count, "notes": result.notes}
        return self._run(work)

    @api_expose("/follow_up", methods=["POST"])
    @protect()
    @safe
    def follow_up(self):
        """Record a follow-up: {"id": n, "content": "…", "type": item id, "result": "…",
        "next_followup_at": ISO 8601 (UTC unless it has an offset), "stage": item id (optional)}.
        ---
        post:
          responses:
            200:
              description: The follow-up id and the opportunity's new clocks
        """
        def work(body):
            opp_id = self._one(body)
            now = utcnow()
            when = parse_api_datetime(body.get("next_followup_at"))
            follow_up = ownership.add_follow_up(db.session, opp_id, _me(), _dict_id(body.get("type"),
                                                ownership.FOLLOWUP_TYPE_DICT), body.get("content"),
                                                body.get("result"), when, now)
            if body.get("stage"):
                ownership.set_stage(db.session, opp_id, _dict_id(body["stage"], ownership.STAGE_DICT),
                                    _dict_id(body.get("lost_reason"), ownership.LOST_REASON_DICT), now,
                                    _actor())
            opp = db.session.get(Opportunity, opp_id)
            return {"id": follow_up.id, "opportunity": _clocks(opp)}
        return self._run(work)

    @api_expose("/stage", methods=["POST"])
    @protect()
    @safe
    def stage(self):
        """Move the stage: {"id": n, "stage": code or id, "lost_reason": code or id (for lost)}.
        ---
        post:
          responses:
            200:
              description: The opportunity's status and stage
        """
        def work(body):
            opp_id = self._one(body)
            opp = ownership.set_stage(db.session, opp_id, _dict_id(body.get("stage"), ownership.STAGE_DICT),
                                      _dict_id(body.get("lost_reason"), ownership.LOST_REASON_DICT), utcnow(),
                                      _actor())
            return {"opportunity": _clocks(opp)}
        return self._run(work)

    def _locking(self, locked: bool):
        def work(body):
            ids = _require_visible(body.get("ids") or [])
            result = ownership.set_locked(db.session, ids, locked, utcnow(), _actor())
            return {"changed": result.moved, "skipped": result.skipped}
        return self._run(work)

    @api_expose("/lock", methods=["POST"])
    @protect()
    @safe
    def lock(self):
        """Freeze opportunities: {"ids": [..]}.
        ---
        post:
          responses:
            200:
              description: Changed and unchanged ids
        """
        return self._locking(True)

    @api_expose("/unlock", methods=["POST"])
    @protect()
    @safe
    def unlock(self):
        """Unfreeze opportunities: {"ids": [..]}.
        ---
        post:
          responses:
            200:
              description: Changed and unchanged ids
        """
        return self._locking(False)


def _dict_id(value, type_code: str):
    """A dictionary item given by id or by code (the API accepts both)."""
    if value in (None, ""):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for item in metadata.dict_items(db.session, type_code, include_disabled=True):
        if item.code == value:
            return item.id
    raise DomainError("Unknown %(kind)s option %(value)s", field=type_code, status=422, kind=type_code,
                      value=repr(value))


def _clocks(opp: Opportunity) -> dict:
    def iso(v):
        return v.isoformat() if v else None

    return {"id": opp.id, "status": opp.status, "stage_id": opp.stage_id, "owner_id": opp.owner_id,
            "last_followup_at": iso(opp.last_followup_at), "next_followup_at": iso(opp.next_followup_at),
            "idle_since": iso(opp.idle_since), "protected_until": iso(opp.protected_until),
            "closed_at": iso(opp.closed_at)}


def register(appbuilder) -> None:
    """Menu entries and APIs of the sales domain (called from app.views.register_views)."""
    cat = "Sales"
    appbuilder.add_view(WorkbenchView, "Workbench", icon="fa-briefcase", label=_l("My Workbench"),
                        category=cat, category_label=_l("Sales"), category_icon="fa-line-chart")
    appbuilder.add_view(OpportunityView, "Opportunities", icon="fa-handshake-o", label=_l("Opportunities"),
                        category=cat)
    appbuilder.add_view(PoolOpportunityView, "Claim from Pool", icon="fa-hand-paper-o",
                        label=_l("Claim from the Pool"), category=cat)
    appbuilder.add_view_no_menu(CustomerPageView)
    appbuilder.add_view(FollowUpView, "Follow-ups", icon="fa-comments", label=_l("Follow-ups"), category=cat)
    appbuilder.add_view(AssignmentLogView, "Assignment Log", icon="fa-exchange", label=_l("Assignment Log"),
                        category=cat)
    appbuilder.add_api(OpportunityApi)
