"""The learning system's signed import API and the learning panel of the customer page."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
