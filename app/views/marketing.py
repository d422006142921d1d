"""Marketing › Campaigns, Campaign Spend (typed and CSV import) and the Marketing Report; its API."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
