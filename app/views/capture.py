"""The public lead capture endpoint POST /api/v1/public/lead (landing-page form and chat widget)."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
