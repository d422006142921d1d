"""Checks of the JSON other systems send (HR sync, lead intake, notification events, previews).

Each check reads one field and answers its value, or None after recording the problem under the field's
name in `problems` (an English sentence for the 4xx body's `errors`). None of them raises on a value of
the wrong type, and none echoes a long value back (`quote` shortens it): a hostile field gets a short,
clear answer.
"""

from __future__ import annotations

import math

INT_MAX = 2**31 - 1  # ids are 32-bit integers on PostgreSQL: anything larger names nothing
QUOTE_MAX = 40


def quote(value, limit: int = QUOTE_MAX) -> str:
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text(problems: dict, name: str, value, limit: int, *, required: bool = False,
         numbers: bool = False) -> str | None:
    """A string of at most `limit` characters (stripped; empty → None). With `numbers`, a whole number is
    taken as its digits (codes and phones some systems send as numbers); booleans never are."""
    if value is None or value == "":
        if required:
            problems[name] = "required"
        return None
    if isinstance(value, bool) or not isinstance(value, str | int if numbers else str):
        problems[name] = "must be a string" + (" or a whole number" if numbers else "")
        return None
    value = str(value).strip()
    if len(value) > limit:
        problems[name] = f"at most {limit} characters"
        return None
    if not value and required:
        problems[name] = "required"
    return value or None


def whole_number(problems: dict, name: str, value, *, low: int = 1, high: int = INT_MAX,
                 required: bool = False) -> int | None:
    """A JSON whole number between `low` and `high` (not a boolean, a float or a numeric string)."""
    if value is None:
        if required:
            problems[name] = "required"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems[name] = "must be a whole number"
        return None
    if not low <= value <= high:
        problems[name] = f"must be between {low} and {high}"
        return None
    return value


def scalar(value, limit: int) -> bool:
    """True for a string or finite number whose text has at most `limit` characters (a template
    variable's value, say)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return len(str(value)) <= limit
