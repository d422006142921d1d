"""Helpers for reading FAB's HTML in tests."""

from __future__ import annotations

import re
from html import unescape


def field_errors(html: str) -> dict[str, str]:
    """Form field id → the error text FAB renders under that field."""
    errors = {}
    for chunk in html.split('<label for="')[1:]:
        name, _, rest = chunk.partition('"')
        match = re.search(r'<div class="alert alert-danger">(.*?)</div>', rest.split("</tr>")[0], re.S)
        if match:
            errors[name] = " ".join(unescape(match.group(1)).split())
    return errors


def flashes(html: str, category: str = "danger") -> list[str]:
    pattern = rf'<div class="alert alert-{category}">\s*<button[^>]*>&times;</button>(.*?)</div>'
    return [" ".join(unescape(m).split()) for m in re.findall(pattern, html, re.S)]
