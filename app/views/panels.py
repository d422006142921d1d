"""Panels other domains add to the opportunity and customer pages (orders, chat transcripts, learning …).

A domain's views register a panel with `add(page, template, context, permission)`: the template is
rendered below the page's own sections with `item` (the opportunity or customer, already in the viewer's
scope) and what `context(item)` returns; a panel whose (permission, resource) the user lacks is left out.
Panels render in the order they were registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import render_template
from markupsafe import Markup

OPPORTUNITY, CUSTOMER = "opportunity", "customer"


@dataclass(frozen=True)
class Panel:
    template: str
    context: Callable[[object], dict]
    permission: tuple[str, str] | None = None


_PANELS: dict[str, list[Panel]] = {OPPORTUNITY: [], CUSTOMER: []}


def add(page: str, template: str, context: Callable[[object], dict] | None = None,
        permission: tuple[str, str] | None = None) -> None:
    """Register a panel once (registering the same template again replaces it: app factories run per test)."""
    panels = [p for p in _PANELS[page] if p.template != template]
    panels.append(Panel(template, context or (lambda item: {}), permission))
    _PANELS[page] = panels


def render(page: str, item, security_manager) -> list[Markup]:
    """The page's panels for `item`, as HTML, those the current user may read."""
    shown = []
    for panel in _PANELS[page]:
        if panel.permission and not security_manager.has_access(*panel.permission):
            continue
        shown.append(Markup(render_template(panel.template, item=item, **panel.context(item))))
    return shown
