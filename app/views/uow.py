"""One unit of work for views: run a service command, commit; on a DomainError roll back and answer with
the refusal (a flash, a form error or a 4xx JSON body). Views call these instead of writing their own
try / commit / except DomainError / rollback.

    result, error = run(ownership.assign, db.session, ids, target, now, actor)
    return json_result(lambda: service.command(...), status=201, body=lambda r: {...})
    return flash_result(lambda: service.command(...), back=url, success=lambda r: _l("Done"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from flask import flash, jsonify, redirect

from app.extensions import db
from app.services.errors import DomainError

T = TypeVar("T")


class Outcome(NamedTuple):
    result: Any
    error: DomainError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def run(work: Callable[..., T], *args, commit: bool = True, **kwargs) -> Outcome:
    """Call `work(*args, **kwargs)` and commit (unless `commit=False`); a DomainError rolls the whole
    transaction back and is returned, never raised. Anything else propagates (and Flask-SQLAlchemy's
    teardown rolls back)."""
    try:
        result = work(*args, **kwargs)
        if commit:
            db.session.commit()
        return Outcome(result, None)
    except DomainError as exc:
        db.session.rollback()
        return Outcome(None, exc)


def error_json(exc: DomainError):
    """A refusal as an HTTP 4xx JSON body: {"message": …, "field": …}."""
    response = jsonify(exc.as_dict())
    response.status_code = exc.status
    return response


def json_result(work: Callable[[], T], status: int = 200, body: Callable[[T], dict] | None = None):
    """Run `work()` as one unit of work and answer JSON: `body(result)` with `status`, or the refusal."""
    outcome = run(work)
    if outcome.error is not None:
        return error_json(outcome.error)
    response = jsonify(body(outcome.result) if body else outcome.result)
    response.status_code = status
    return response


def flash_error(exc: DomainError, labels: dict | None = None) -> None:
    """Flash a refusal, prefixed with its field's label when the page knows one."""
    label = (labels or {}).get(exc.field) if exc.field else None
    flash(f"{label}: {exc.message}" if label else exc.message, "danger")


def flash_result(work: Callable[[], T], back: str, success: Callable[[T], Any] | None = None,
                 labels: dict | None = None):
    """Run `work()` as one unit of work, flash `success(result)` or the refusal, and redirect to `back`."""
    outcome = run(work)
    if outcome.error is not None:
        flash_error(outcome.error, labels)
    elif success is not None:
        flash(str(success(outcome.result)), "success")
    return redirect(back)
