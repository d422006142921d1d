"""The sales floor's shared parts: labels, how rows and times are shown, which opportunities and
employees the user may act on, and how form and API input becomes service arguments.

The pages themselves live one module per thing that changes together: app.views.opportunities (the list,
the opportunity page and its forms), app.views.pool (the public pool page), app.views.workbench (the
salesperson's day), app.views.sales_records (follow-ups, the assignment log, the customer page) and
app.views.sales_api (the REST API). Every change of ownership or progress goes through
app.services.ownership / app.services.opportunities, run as one unit of work by app.views.uow.
"""

from __future__ import annotations

import datetime as dt

from flask import g
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select

from app import clock
from app.extensions import db
from app.models.employee import HR_RESIGNED, Employee
from app.models.sales import OPEN_STATUSES, Opportunity, Pool
from app.security.input_guards import storable_id
from app.security.masking import mask_phone
from app.security.scope import current_viewer, restrict, scope_clause
from app.services import circulation, opportunities, ownership, pools
from app.services.errors import DomainError
from app.views import labels, panels

STATUS_LABELS = dict(labels.choices("opportunity.status"))  # app/views/labels.py
REASON_LABELS = dict(labels.choices("assignment.reason"))
QUICK_FILTERS = {"mine": _l("Mine"), "due_today": _l("Follow-up due today"), "overdue": _l("Overdue"),
                 "recycle_soon": _l("About to be recycled")}
#: a refusal's field → the label its flash message starts with
FIELD_LABELS = {"content": _l("Content"), "next_followup_at": _l("Next follow-up"), "type": _l("Type"),
                "result": _l("Result"), "stage": _l("Stage"), "lost_reason": _l("Lost reason"),
                "reason": _l("Reason"), "employee": _l("Salesperson"), "ids": _l("Opportunities"),
                "to_employee": _l("Successor"), "from_employee": _l("Employee")}


# --- showing rows -----------------------------------------------------------------------------------
def customer_label(customer) -> str:
    """A customer as shown in lists: the name, else the masked phone (never the full number)."""
    if customer is None:
        return ""
    return customer.name or mask_phone(customer.phone)


def opportunity_label(opp) -> str:
    return "" if opp is None else f"#{opp.id} {customer_label(opp.customer)}"


def remember_names(kind: str, ids) -> dict:
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
    return "" if value is None else remember_names("employee", [value]).get(value, f"#{value}")


def pool_name(value) -> str:
    return "" if value is None else remember_names("pool", [value]).get(value, f"#{value}")


def entry_label(entry) -> str:
    """A dictionary entry's label in the page's language."""
    from flask_babel import get_locale

    locale = get_locale()
    return entry.label_en if locale is not None and locale.language == "en" else entry.label_zh


# --- input -----------------------------------------------------------------------------------------
def parse_local_datetime(text: str | None) -> dt.datetime | None:
    """A form's <input type="datetime-local"> (business time zone) as naive UTC."""
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
    """ISO 8601 from the API as naive UTC: an offset is honoured; none means business-zone wall time
    (as everywhere in the API, app.views.times)."""
    if value in (None, ""):
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DomainError("%(value)s is not an ISO 8601 date and time", field="next_followup_at",
                          value=repr(value)) from None
    return clock.to_utc(parsed)


# --- who acts, on what ------------------------------------------------------------------------------
def current_employee() -> Employee:
    viewer = current_viewer()
    employee = db.session.get(Employee, viewer.employee_id) if viewer.employee_id else None
    if employee is None:
        raise DomainError("Your login is not linked to an employee", status=403)
    return employee


def current_actor() -> ownership.Actor:
    user = getattr(g, "user", None)
    return ownership.Actor(getattr(user, "id", None), getattr(user, "username", None) or "unknown")


def visible_opportunities(ids, pools_too: bool = False) -> set[int]:
    """Which of `ids` the current user may act on: their data scope (or, with `pools_too`, also the
    pools their org unit may claim from)."""
    viewer = current_viewer()
    query = select(Opportunity.id).where(Opportunity.id.in_([i for i in ids if storable_id(i)]))  # 32-bit
    clause = scope_clause(Opportunity, viewer)
    if clause is not None:
        pool = pools.pooled_over(viewer.org_path) if pools_too else None
        query = query.where(clause if pool is None else or_(clause, pool))
    return set(db.session.scalars(query))


def require_visible(ids, pools_too: bool = False) -> list[int]:
    """The ids as whole numbers, all of them visible to the user (else a 404 naming the others)."""
    try:
        ids = sorted({int(i) for i in ids if str(i).strip()})
    except (TypeError, ValueError):
        raise DomainError("Opportunity ids must be whole numbers", field="ids", status=400) from None
    if not ids:
        raise DomainError("Choose at least one opportunity", field="ids", status=400)
    hidden = set(ids) - visible_opportunities(ids, pools_too)
    if hidden:
        listed = ", ".join(f"#{i}" for i in sorted(hidden))
        raise DomainError("Not found or outside your data scope: %(ids)s; nothing was done", field="ids",
                          status=404, ids=listed)
    return ids


def visible_employee(emp_id, field: str, active: bool = True) -> Employee | None:
    """The employee chosen in `field`, if in the user's data scope (and, when `active`, not resigned)."""
    if emp_id in (None, ""):
        return None
    try:
        emp_id = int(emp_id)
    except (TypeError, ValueError):
        raise DomainError("Unknown employee", field=field, status=400) from None
    employee = db.session.scalar(restrict(select(Employee).where(Employee.id == emp_id), Employee,
                                          current_viewer())) if storable_id(emp_id) else None
    if employee is None:
        raise DomainError("Unknown employee or outside your data scope", field=field, status=404)
    if active and employee.hr_status == HR_RESIGNED:
        raise DomainError("%(name)s has resigned", field=field, status=409, name=str(employee))
    return employee


def quick_clause(quick: str | None, now: dt.datetime):
    """The WHERE condition of a quick filter of the opportunity list (None: no filter)."""
    viewer = current_viewer()
    if quick == "mine":
        return Opportunity.owner_id == viewer.employee_id
    if quick == "due_today":
        return opportunities.due_today_clause(now) & Opportunity.status.in_(OPEN_STATUSES)
    if quick == "overdue":
        return opportunities.overdue_clause(now) & Opportunity.status.in_(OPEN_STATUSES)
    if quick == "recycle_soon":
        return circulation.due_within(db.session, now)
    return None


# --- what the opportunity views share ---------------------------------------------------------------
OPP_LABELS = {
    "id": _l("No."), "customer": _l("Customer"), "product_line": _l("Product line"), "stage": _l("Stage"),
    "intention_level": _l("Intention"), "status": _l("Status"), "owner": _l("Owner"), "pool": _l("Pool"),
    "org_unit": _l("Org unit"), "source": _l("Source"), "campaign": _l("Campaign"), "region": _l("Region"),
    "next_followup_at": _l("Next follow-up"), "last_followup_at": _l("Last follow-up"),
    "idle_since": _l("Idle since"), "protected_until": _l("Protected until"),
    "assigned_at": _l("Assigned at"), "claimed_at": _l("Claimed at"),
    "closed_at": _l("Closed at"), "lost_reason": _l("Lost reason"), "locked": _l("Frozen"),
    "is_recycled": _l("Recycled"), "recycle_count": _l("Times recycled"),
    "created_at": _l("Created at"), "customer_id": _l("Customer no."),
}
OPP_DICT_FIELDS = {"stage": opportunities.STAGE_DICT, "product_line": "product_line",
                   "intention_level": "intention_level", "lost_reason": opportunities.LOST_REASON_DICT,
                   "source": "lead_source"}
# Times need no formatter: CrmModelView shows every DateTime in the business time zone (app.views.times).
OPP_FORMATTERS = {"customer": customer_label, "status": labels.formatter("opportunity.status")}
# FAB's add / edit / delete are not offered: every change goes through the ownership service.
NO_CRUD = {"add", "edit", "delete", "download"}
NO_CRUD_PERMISSIONS = {"add": "crud_disabled", "edit": "crud_disabled", "delete": "crud_disabled"}


class PageShowMixin:
    """A show page whose template also gets `page_context(item)` (history, follow-ups, leads …)."""

    #: app.views.panels.OPPORTUNITY or CUSTOMER: the other domains' panels shown below the page's own
    panel_page: str | None = None

    def page_context(self, item) -> dict:
        return {}

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        pk = self._deserialize_pk_if_composite(pk)
        widgets = self._show(pk)
        item = self.datamodel.get(pk, self._base_filters)
        shown = panels.render(self.panel_page, item, self.appbuilder.sm) if item and self.panel_page else []
        return self.render_template(self.show_template, pk=pk, title=self.show_title, widgets=widgets,
                                    related_views=[], panels=shown, **self.page_context(item))


def register(appbuilder) -> None:
    """Menu entries and APIs of the sales domain (called from app.views.register_views)."""
    from app.views.opportunities import OpportunityView
    from app.views.pool import PoolOpportunityView
    from app.views.sales_api import CustomerMergeApi, OpportunityApi
    from app.views.sales_records import AssignmentLogView, CustomerPageView, FollowUpView
    from app.views.workbench import WorkbenchView

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
    appbuilder.add_api(CustomerMergeApi)
