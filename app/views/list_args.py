"""The list arguments of the CRM's lists, checked before FAB reads them: FAB answers 500 to some (a page
that is not a number, a `q` its Rison parser chokes on) and sends others to the database as they are (a
negative page becomes a negative OFFSET). Used by the base classes in app/views/base.py."""

from __future__ import annotations

import json
import urllib.parse

import prison
from flask import request
from flask_appbuilder.const import API_URI_RIS_KEY
from flask_babel import gettext as _

from app.security.input_guards import page_number_error


def rison_page_error(args) -> tuple[str, str] | None:
    """(argument, reason) for the first bad `page` / `page_size` in the parsed `q` of an API list or
    `_info` (where each related column takes its own), else None. FAB would send a negative page to the
    database as a negative OFFSET, and a text one into arithmetic."""
    if isinstance(args, dict):
        for key, value in args.items():
            if key in ("page", "page_size"):
                reason = page_number_error(key, value, 0 if key == "page" else 1)
                if reason:
                    return key, reason
            else:
                found = rison_page_error(value)
                if found:
                    return found
    elif isinstance(args, list):
        for value in args:
            found = rison_page_error(value)
            if found:
                return found
    return None


def parse_rison(raw: str):
    """The `q` argument as FAB reads it (Rison, else JSON); ValueError when it is neither. prison raises
    IndexError or RecursionError on some malformed input (`!`, `(((`), which FAB does not catch."""
    try:
        return prison.loads(raw)
    except Exception:  # noqa: BLE001 — any failure of the parser means "not Rison"
        try:
            return json.loads(urllib.parse.parse_qs(f"{API_URI_RIS_KEY}={raw}")[API_URI_RIS_KEY][0])
        except (ValueError, KeyError, IndexError):
            raise ValueError(raw) from None


def html_list_error(view_name: str, order_columns) -> str | None:
    """Why the request's `_oc_<view_name>` cannot order the HTML list `view_name` (not one of its order
    columns), or None. Its `page_*` / `psize_*` arguments are checked for every page by input_guards."""
    column = request.args.get(f"_oc_{view_name}")
    if column is not None and column not in order_columns:
        return _("The list cannot be ordered by %(column)s", column=column)
    return None
