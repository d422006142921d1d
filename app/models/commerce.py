"""The e-commerce link: products, orders for an opportunity, and the shop's webhook events.

An order's status moves pending → paid → refunded (or pending → cancelled) and never back: the shop's
events may arrive late, twice or out of order, and each is applied at most once (ShopEvent.event_id).
A price below the discount threshold waits for a manager (approval pending → approved / rejected).
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin, utcnow

# Order.status, in the only order they can follow (cancelled ends a pending order)
PENDING, PAID, REFUNDED, CANCELLED = "pending", "paid", "refunded", "cancelled"
ORDER_STATUSES = (PENDING, PAID, REFUNDED, CANCELLED)

# Order.approval
NOT_NEEDED, APPROVAL_PENDING, APPROVED, REJECTED = "none", "pending", "approved", "rejected"
APPROVALS = (NOT_NEEDED, APPROVAL_PENDING, APPROVED, REJECTED)

# Order.origin
CONSOLE, SHOP = "console", "shop"


class Product(TimestampMixin, Model):
    __tablename__ = "product"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)  # the shop's SKU
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    product_line_id: Mapped[int] = mapped_column(ForeignKey("dict_item.id"), nullable=False)
    list_price: Mapped[float] = mapped_column(Numeric(12, 2), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    product_line = relationship("DictItem")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Order(TimestampMixin, ScopedMixin, Model):
    """An order for an opportunity (订单); `number` is the shop's order number."""

    __tablename__ = "sales_order"
    __scope_via__ = ("opportunity_id", "Opportunity", "id")
    __scope_creator__ = "created_by_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunity.id"), nullable=False, index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default=PENDING)
    approval: Mapped[str] = mapped_column(String(10), nullable=False, default=NOT_NEEDED, index=True)
    list_total: Mapped[float] = mapped_column(Numeric(14, 2), nullable=False, default=0)
    final_total: Mapped[float] = mapped_column(Numeric(14, 2), nullable=False, default=0)
    origin: Mapped[str] = mapped_column(String(10), nullable=False, default=CONSOLE)
    note: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id", name="fk_order_creator"))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("employee.id", name="fk_order_approver"))
    approved_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    approval_note: Mapped[str | None] = mapped_column(String(255))
    paid_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    refunded_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    opportunity = relationship("Opportunity", backref="orders")
    customer = relationship("Customer")
    created_by = relationship("Employee", foreign_keys=[created_by_id])
    approved_by = relationship("Employee", foreign_keys=[approved_by_id])

    def __str__(self) -> str:
        return self.number


class OrderItem(Model):
    __tablename__ = "sales_order_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), nullable=False, index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    list_price: Mapped[float] = mapped_column(Numeric(12, 2), nullable=False)  # per unit, when ordered
    final_price: Mapped[float] = mapped_column(Numeric(12, 2), nullable=False)  # per unit, agreed

    order = relationship("Order", backref="items")
    product = relationship("Product")


class ShopEvent(Model):
    """One webhook event from the shop, kept whatever became of it (idempotency and the audit trail)."""

    __tablename__ = "shop_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    event_type: Mapped[str] = mapped_column(String(30), nullable=False)
    order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)  # applied / ignored / rejected
    detail: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[str | None] = mapped_column(Text)
