"""Commerce › Products, Orders, Discount Approvals; the Orders panel of the opportunity page; the shop's
signed webhook (app.views.commerce_api).

Products: administrators write them (the role policy grants the others read only); a price change is
audited. Orders: the list in the viewer's data scope; an order's page and the approval queue are in
app.views.commerce_pages, whose forms call app.services.orders.
"""

from __future__ import annotations

from flask import current_app, redirect, url_for
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import inspect
from wtforms import BooleanField

from app.extensions import db
from app.models.commerce import (
    APPROVAL_PENDING,
    APPROVED,
    CANCELLED,
    CONSOLE,
    NOT_NEEDED,
    PAID,
    PENDING,
    REFUNDED,
    REJECTED,
    SHOP,
    Order,
    OrderItem,
    Product,
)
from app.security import policy
from app.services import audit, orders
from app.services.errors import DomainError
from app.views import panels
from app.views.base import CrmModelView, refuse_delete_in_use
from app.views.sales import NO_CRUD, NO_CRUD_PERMISSIONS

STATUS_LABELS = {PENDING: _l("Pending payment"), PAID: _l("Paid"), REFUNDED: _l("Refunded"),
                 CANCELLED: _l("Cancelled")}
APPROVAL_LABELS = {NOT_NEEDED: _l("Not needed"), APPROVAL_PENDING: _l("Waiting for approval"),
                   APPROVED: _l("Approved"), REJECTED: _l("Rejected")}
ORIGIN_LABELS = {CONSOLE: _l("Console"), SHOP: _l("Shop")}
LABELS = {
    "code": _l("SKU"), "name": _l("Name"), "product_line": _l("Product line"), "list_price": _l("List price"),
    "active": _l("On sale"), "updated_at": _l("Updated"), "number": _l("Order number"),
    "opportunity": _l("Opportunity"), "customer": _l("Customer"), "status": _l("Status"),
    "approval": _l("Discount approval"), "list_total": _l("List total"), "final_total": _l("Final total"),
    "origin": _l("Origin"), "created_at": _l("Created"), "paid_at": _l("Paid at"),
    "created_by": _l("Created by"),
}


def _money(value) -> str:
    return "" if value is None else f"{value:,.2f}"


class ProductView(CrmModelView):
    datamodel = SQLAInterface(Product)
    class_permission_name = policy.PRODUCT
    list_title = show_title = _l("Products")
    add_title, edit_title = _l("Add Product"), _l("Edit Product")
    list_columns = ["code", "name", "product_line", "list_price", "active", "updated_at"]
    show_columns = ["code", "name", "product_line", "list_price", "active", "created_at", "updated_at"]
    add_columns = edit_columns = ["code", "name", "product_line", "list_price", "active"]
    search_columns = ["code", "name", "product_line", "active"]
    order_columns = ["code", "name", "list_price", "updated_at"]
    base_order = ("code", "asc")
    dict_fields = {"product_line": "product_line"}
    label_columns = LABELS
    formatters_columns = {"list_price": _money}
    description_columns = {
        "code": _l("The shop's SKU: the webhook's items name products by it"),
        "active": _l("Only products on sale can be put in a new order"),
    }
    add_form_extra_fields = edit_form_extra_fields = {"active": BooleanField(_l("On sale"), default=True)}

    def check_item(self, item, creating: bool) -> None:
        item.code = (item.code or "").strip()
        if not item.code or len(item.code) > 64:
            raise DomainError("A SKU of 1 to 64 characters", field="code")
        if item.product_line_id is None and item.product_line is None:
            raise DomainError("Required", field="product_line")
        item.list_price = orders.money(item.list_price, "list_price")
        history = inspect(item).attrs.list_price.history
        old = history.deleted[0] if history.deleted else None
        if creating or (old is not None and old != item.list_price):
            audit.record(db.session, "create" if creating else "update", target_type="product",
                         target_id=item.id, summary=f"{item.code}: list price {old} → {item.list_price}",
                         before=None if creating else {"list_price": str(old)},
                         after={"list_price": str(item.list_price)})

    def check_delete(self, item) -> None:
        refuse_delete_in_use(item, OrderItem.product_id, instead="take it off sale instead")


class OrderView(CrmModelView):
    """The orders in the viewer's scope (of the opportunities they see, and those they created)."""

    datamodel = SQLAInterface(Order)
    class_permission_name = policy.ORDER
    exclude_route_methods = NO_CRUD
    method_permission_name = {**policy.METHOD_PERMISSIONS, **NO_CRUD_PERMISSIONS}
    list_title = show_title = _l("Orders")
    add_title, edit_title = _l("Add Order"), _l("Edit Order")  # not offered: named for completeness
    list_columns = ["number", "created_at", "opportunity", "customer", "status", "approval", "final_total",
                    "list_total", "origin"]
    show_columns = list_columns + ["paid_at", "created_by"]
    export_columns = list_columns
    search_columns = ["number", "status", "approval", "origin", "created_at", "paid_at"]
    order_columns = ["number", "created_at", "final_total", "status"]
    base_order = ("id", "desc")
    label_columns = LABELS
    formatters_columns = {"status": lambda v: STATUS_LABELS.get(v, v),
                          "approval": lambda v: APPROVAL_LABELS.get(v, v),
                          "origin": lambda v: ORIGIN_LABELS.get(v, v),
                          "final_total": _money, "list_total": _money}

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        """The order's own page (items, events, the moves the viewer may make)."""
        return redirect(url_for("CommerceView.order", pk=pk))


def panel_context(item) -> dict:
    """The Orders panel of an opportunity page: its orders, and the products of its line for a new one."""
    sm = current_app.appbuilder.sm
    return {"orders": orders.orders_of(db.session, item.id),
            "order_products": orders.products_for(db.session, item.product_line_id),
            "can_order": sm.has_access(policy.WRITE, policy.ORDER),
            "order_status_labels": STATUS_LABELS, "order_approval_labels": APPROVAL_LABELS,
            "money": _money}


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    from app.views import commerce_api, commerce_pages

    cat = "Commerce"
    appbuilder.add_view(ProductView, "Products", icon="fa-cube", label=_l("Products"), category=cat,
                        category_label=_l("Commerce"), category_icon="fa-shopping-cart")
    appbuilder.add_view(OrderView, "Orders", icon="fa-file-text-o", label=_l("Orders"), category=cat)
    appbuilder.add_view(commerce_pages.CommerceView, "Discount Approvals", icon="fa-check-square-o",
                        label=_l("Discount Approvals"), category=cat)
    appbuilder.add_api(commerce_api.ShopWebhookApi)  # the shop's events: signed, no login
    panels.add(panels.OPPORTUNITY, "commerce/_orders_panel.html", panel_context,
               permission=(policy.READ, policy.ORDER))
