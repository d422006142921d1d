"""The order page, the discount approval queue, and the forms that create and move orders.

Each form posts to one command of app.services.orders as one unit of work (app.views.uow): a refusal is
flashed and nothing is written. Who may do what is the service's rule (the approver a manager in scope
who did not create the order; paid / refunded by hand a manager's correction; cancel the creator or a
manager); the page offers only the buttons the viewer's roles allow.
"""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l

from app.clock import utcnow
from app.extensions import db
from app.models.commerce import APPROVAL_PENDING, PENDING
from app.security import policy
from app.security.scope import current_viewer
from app.services import orders, shop_events
from app.views import uow
from app.views.commerce import APPROVAL_LABELS, LABELS, ORIGIN_LABELS, STATUS_LABELS, _money
from app.views.commerce_api import queue_texts
from app.views.opportunities import safe_next
from app.views.sales import current_actor, employee_name, opportunity_label

FIELD_LABELS = {"items": _l("Products"), "note": _l("Note"), "approval": _l("Discount approval"),
                "status": _l("Status"), "opportunity": _l("Opportunity")}
MAX_FORM_ITEMS = 10


def _items_from_form() -> list[dict]:
    """The New order form's rows (product, quantity, final price); rows without a product are skipped."""
    rows = []
    for product, qty, price in zip(request.form.getlist("product_id"), request.form.getlist("quantity"),
                                   request.form.getlist("final_price"), strict=False):
        if product.strip():
            rows.append({"product_id": product, "quantity": qty or 1, "final_price": price})
    return rows[:MAX_FORM_ITEMS + 1]


class CommerceView(BaseView):
    """/commerce/approvals (the queue), /commerce/order/<pk> (an order's page) and their forms."""

    route_base = "/commerce"
    default_view = "approvals"
    class_permission_name = policy.ORDER
    method_permission_name = {"approvals": "read", "order": "read", "create": "write", "cancel": "write",
                              "approve": "approve", "reject": "approve", "pay": "approve",
                              "refund": "approve"}
    base_permissions = [policy.READ, policy.WRITE, policy.APPROVE]

    # --- pages -------------------------------------------------------------------------------------
    @expose("/approvals")
    @has_access
    def approvals(self):
        viewer = current_viewer()
        queue = orders.approval_queue(db.session, viewer)
        return self.render_template("commerce/approvals.html", queue=queue,
                                    can_approve=viewer.can(*orders.APPROVE),
                                    percent=orders.threshold(db.session), title=_l("Discount Approvals"),
                                    **self._helpers())

    @expose("/order/<int:pk>")
    @has_access
    def order(self, pk):
        viewer = current_viewer()
        outcome = uow.run(orders.visible_order, db.session, viewer, pk, commit=False)
        if outcome.error is not None:
            abort(404)
        order = outcome.result
        sm = current_app.appbuilder.sm
        mine = order.created_by_id is not None and order.created_by_id == viewer.employee_id
        can_manage = viewer.can(*orders.APPROVE)
        return self.render_template(
            "commerce/order.html", order=order, events=shop_events.events_of(db.session, order.number),
            can_decide=can_manage and not mine and order.approval == APPROVAL_PENDING,
            can_manage=can_manage, can_cancel=order.status == PENDING and (
                can_manage or (mine and sm.has_access(policy.WRITE, policy.ORDER))),
            opportunity_link=url_for("OpportunityView.show", pk=order.opportunity_id),
            opportunity_label=opportunity_label(order.opportunity), title=_l("Order %(n)s", n=order.number),
            **self._helpers())

    @staticmethod
    def _helpers() -> dict:
        return {"status_labels": STATUS_LABELS, "approval_labels": APPROVAL_LABELS,
                "origin_labels": ORIGIN_LABELS, "labels": LABELS, "money": _money,
                "employee_name": employee_name}

    # --- forms ---------------------------------------------------------------------------------------
    @expose("/order/new", methods=["POST"])
    @has_access
    def create(self):
        opp = request.form.get("opportunity", "")
        page = url_for("OpportunityView.show", pk=opp) if opp.isdigit() else url_for("OrderView.list")
        back = safe_next(page)
        outcome = uow.run(orders.create_order, db.session, current_viewer(), opp, _items_from_form(),
                          utcnow(), current_actor(), request.form.get("note"))
        if outcome.error is not None:
            uow.flash_error(outcome.error, FIELD_LABELS)
            return redirect(back)
        order = outcome.result
        if order.approval == APPROVAL_PENDING:
            flash(str(_l("Order %(n)s created: its discount waits for a manager's approval", n=order.number)),
                  "warning")
        else:
            flash(str(_l("Order %(n)s created", n=order.number)), "success")
        return redirect(back)

    def _move(self, pk, command, success, *args):
        back = safe_next(url_for(".order", pk=pk))
        outcome = uow.run(command, db.session, current_viewer(), pk, *args)
        if outcome.error is not None:
            if outcome.error.status == 404:
                abort(404)
            uow.flash_error(outcome.error, FIELD_LABELS)
            return redirect(back)
        moved = outcome.result
        queue_texts([moved.sms_message_id] if getattr(moved, "sms_message_id", None) else [])
        flash(str(success if moved.changed else _l("Nothing to change: it was done already")),
              "success" if moved.changed else "info")
        return redirect(back)

    @expose("/order/<int:pk>/approve", methods=["POST"])
    @has_access
    def approve(self, pk):
        return self._move(pk, orders.decide, _l("Discount approved"), True, request.form.get("note"),
                          utcnow(), current_actor())

    @expose("/order/<int:pk>/reject", methods=["POST"])
    @has_access
    def reject(self, pk):
        return self._move(pk, orders.decide, _l("Discount rejected"), False, request.form.get("note"),
                          utcnow(), current_actor())

    @expose("/order/<int:pk>/pay", methods=["POST"])
    @has_access
    def pay(self, pk):
        return self._move(pk, orders.console_pay, _l("Marked as paid"), utcnow(), current_actor())

    @expose("/order/<int:pk>/refund", methods=["POST"])
    @has_access
    def refund(self, pk):
        return self._move(pk, orders.console_refund, _l("Marked as refunded"), utcnow(), current_actor())

    @expose("/order/<int:pk>/cancel", methods=["POST"])
    @has_access
    def cancel(self, pk):
        return self._move(pk, orders.console_cancel, _l("Order cancelled"), utcnow(), current_actor())
