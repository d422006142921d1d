"""The chat widget's public endpoints and script, the agents' Chats page, the transcript panel."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
