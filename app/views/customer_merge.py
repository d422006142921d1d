"""Customer merge on the customer page: /customer/merge/<pk> checks the other customer (a preview of what
moves, asking who keeps the open opportunities when their owners differ) and merges on confirmation,
through app.services.customers. A merged customer's page leads to the customer it was merged into."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.extensions import db
from app.models.sales import Customer
from app.security.masking import mask_phone
from app.security.scope import current_viewer, restrict
from app.services import customers
from app.services.errors import DomainError
from app.views import uow
from app.views.sales import current_actor

LABELS = {"merged_id": _l("Customer to merge"), "survivor_id": _l("Customer"), "owner_id": _l("Owner")}


class NotMergedFilter(BaseFilter):
    """FAB base filter: customers merged into another leave lists and choices."""

    name = "Not merged"
    arg_name = "not_merged"

    def apply(self, query, value):
        return query.filter(customers.not_merged())


def _number(pk) -> int:
    try:
        return customers.customer_number(pk, "id")
    except DomainError:
        abort(404)


class CustomerMergeMixin:
    """The merge page of CustomerPageView (permission can_merge on Customer)."""

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        merged = db.session.get(Customer, _number(pk))
        if merged is not None and merged.merged_into_id is not None:
            flash(str(_l("Customer #%(id)s was merged into #%(into)s", id=merged.id,
                         into=merged.merged_into_id)), "info")
            return redirect(url_for(".show", pk=merged.merged_into_id))
        return super().show(pk)

    @expose("/merge/<pk>", methods=["GET", "POST"])
    @has_access
    def merge(self, pk):
        """GET ?other=n: check and preview; POST merged_id, owner_id: merge into customer `pk`."""
        viewer = current_viewer()
        survivor = db.session.scalar(restrict(
            select(Customer).where(Customer.id == _number(pk), customers.not_merged()), Customer, viewer))
        if survivor is None:
            abort(404)
        if request.method == "POST":
            other = request.form.get("merged_id", "")
            outcome = uow.run(customers.merge, db.session, viewer, survivor.id, other,
                              request.form.get("owner_id") or None, actor=current_actor())
            if outcome.error is not None:
                uow.flash_error(outcome.error, LABELS)
                return redirect(url_for(".merge", pk=pk, other=other[:12]))
            result = outcome.result
            flash(str(_l("Customer #%(merged)s merged into this customer: %(opps)d opportunities, %(leads)d "
                         "leads, %(calls)d calls and %(sms)d SMS moved",
                         merged=result.plan.merged.id, opps=len(result.moved["opportunities"]),
                         leads=result.moved["leads"], calls=result.moved["calls"],
                         sms=result.moved["sms_messages"])), "success")
            return redirect(url_for(".show", pk=survivor.id))
        other = (request.args.get("other") or "").strip()[:12]
        plan = error = None
        if other:
            plan, error = uow.run(customers.check_merge, db.session, viewer, survivor.id, other,
                                  commit=False, require_owner=False)
        return self.render_template("crm/customer_merge.html", survivor=survivor, other=other, plan=plan,
                                    error=error, labels=LABELS, phone=mask_phone,  # even for admins
                                    title=_l("Merge customers"))
