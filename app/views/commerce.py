"""Commerce › Products, Orders, Discount Approvals; the shop's signed webhook."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
