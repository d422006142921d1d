"""Marketing › Landing Pages (admin), and the public site: /p/<slug>, /sitemap.xml, /robots.txt."""

from __future__ import annotations


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
