"""Checks of the JSON the API reads (HR sync, lead intake, notification events, previews, the sales
floor's commands, phone-list imports).

Each check reads one field and answers its value, or None after recording the problem under the field's
name in `problems` (an English sentence for the 4xx body's `errors`). None of them raises on a value of
the wrong type, and none echoes a long value back (`quote` shortens it): a hostile field gets a short,
clear answer. `check(problems)` then refuses them all at once (`Invalid`: 422 naming the first field).
"""

from __future__ import annotations

import datetime as dt
import math

from app.services.errors import DomainError

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


def ident(problems: dict, name: str, value, *, required: bool = False) -> int | None:
    """A row id: a JSON whole number of at least 1. One beyond the id columns' range passes: it names no
    row, and the lookup answers "not found" (app.security.input_guards.storable_id)."""
    if value is None:
        if required:
            problems[name] = "required"
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems[name] = "must be an id (a whole number of at least 1)"
        return None
    return value


def idents(problems: dict, name: str, value, *, limit: int) -> list[int] | None:
    """A required, non-empty JSON list of at most `limit` row ids (see `ident`)."""
    if value is None:
        problems[name] = "required"
        return None
    if not isinstance(value, list):
        problems[name] = "must be a list of ids"
        return None
    if not value or len(value) > limit:
        problems[name] = f"must hold 1 to {limit} ids"
        return None
    bad = next((i for i, one in enumerate(value) if ident({}, name, one) is None), None)
    if bad is not None:
        problems[name] = f"item {bad} must be an id (a whole number of at least 1)"
        return None
    return value


def option(problems: dict, name: str, value, limit: int) -> int | str | None:
    """A choice of a dictionary given by its item's id (a whole number) or its code (a string)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return text(problems, name, value, limit)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems[name] = "must be an option's id or code"
        return None
    return value


def flag(problems: dict, name: str, value) -> bool | None:
    """A JSON boolean (absent: None)."""
    if value is None or isinstance(value, bool):
        return value
    problems[name] = "must be true or false"
    return None


def strings(problems: dict, name: str, value, *, limit: int, items: int) -> list[str] | None:
    """A required JSON list of at most `items` non-empty strings of at most `limit` characters each."""
    if value is None:
        problems[name] = "required"
        return None
    if not isinstance(value, list):
        problems[name] = "must be a list of strings"
        return None
    if len(value) > items:
        problems[name] = f"at most {items} items"
        return None
    for index, one in enumerate(value):
        if not isinstance(one, str) or not one.strip() or len(one) > limit:
            problems[name] = f"item {index} must be a non-empty string of at most {limit} characters"
            return None
    return value


class Invalid(DomainError):
    """The problems of a request body as one refusal: `field` names the first, `errors` all of them."""

    def __init__(self, problems: dict, status: int = 422):
        name, problem = next(iter(problems.items()))
        super().__init__("Invalid %(name)s: %(problem)s", field=name, status=status, name=name,
                         problem=problem)
        self.problems = dict(problems)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "errors": self.problems}


def check(problems: dict, status: int = 422) -> None:
    """Refuse the request (`Invalid`) when `problems` holds any."""
    if problems:
        raise Invalid(problems, status)


def scalar(value, limit: int) -> bool:
    """True for a string or finite number whose text has at most `limit` characters (a template
    variable's value, say)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return len(str(value)) <= limit


def period(problems: dict, start: dt.date | None, end: dt.date | None, today: dt.date, *, default_days: int,
           max_days: int) -> tuple[dt.date, dt.date]:
    """A period of business days from its optional ends ("from", "to"): a missing end makes it
    `default_days` long, up to today; "to" before "from", or more than `max_days`, is a problem."""
    end = end or (today if start is None else min(start + dt.timedelta(days=default_days - 1), today))
    start = start or end - dt.timedelta(days=default_days - 1)
    if start > end:
        problems["to"] = "must not be before from"
    elif (end - start).days >= max_days:
        problems["from"] = f"the period may span at most {max_days} days"
    return start, end
