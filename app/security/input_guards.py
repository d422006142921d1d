"""Central defences against hostile input: whatever a client sends, the answer is a 4xx, never a 500.

Fixed once for every endpoint rather than per view (README "Security defaults"):

- Ids in the URL (`pk`, `id`, `…_id`) that no row can have — not a whole number, or beyond the 32-bit
  integer column (PostgreSQL raises "integer out of range") — answer 404 before the view runs.
- Text that cannot be stored (a NUL character, which PostgreSQL refuses, or an unpaired UTF-16
  surrogate, which no UTF-8 database takes) in a query argument, a header, a form field or anywhere in a
  JSON body answers 400 `{"message": …, "field": …}` (a page for browser requests). A CRM form
  (`CrmModelView` add / edit) shows it as that field's error instead.
- `MAX_CONTENT_LENGTH` caps every body, chunked ones too (413, JSON in the API): Werkzeug only cuts a
  chunked body at the cap, silently, so one byte more is read to tell. Endpoints with a smaller cap read
  their body with `app.views.request_body.read_capped(limit)`.
- A JSON body of a write under /api/ that is not an object (`[null, null]`, `3`) answers 400 naming
  `body`.
- An id in the URL that no row can have, on a path another rule serves with other methods
  (`PUT /api/v1/<resource>/_info`), answers 405 with an `Allow` header, not 404; OPTIONS lists only
  the methods that serve the path.
- Last resort: a database `DataError` (a value out of range, or that the column cannot take) or an
  `OverflowError` rolls the transaction back and answers 400; an `IntegrityError` (a unique value taken,
  a required value missing, a related row missing or in use) answers 409 / 400 naming the column. FAB's
  `@safe` turns every exception of an API into "500 Fatal error" before Flask's error
  handlers see it, so its `response_500` is routed here too.

Ids in JSON bodies and query arguments go through `storable_id()` where the views parse them; related ids
of the REST API are checked in `CrmModelRestApi`, list arguments in app/views/list_args.py.
"""

from __future__ import annotations

import json
import logging
import re
import sys

from flask import abort, current_app, jsonify, request
from flask_appbuilder.api import BaseApi
from flask_appbuilder.exceptions import ApplyFilterException
from flask_babel import gettext as _
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    default_exceptions,
)
from werkzeug.routing import RequestRedirect

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: view arguments that name a row: `pk`, `id`, `channel_id`, `interface_id`…
ID_ARGUMENT = re.compile(r"(pk|id|.+_id)")
WHOLE_NUMBER = re.compile(r"-?\d{1,20}")
#: NUL, which PostgreSQL text cannot hold, and lone surrogates, which UTF-8 cannot encode.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: a body that is not declared JSON but looks like it (provider callbacks) is scanned up to this size.
SCAN_UNDECLARED_JSON_BYTES = 1024 * 1024
#: a view attribute: the endpoints whose forms report unstorable text as a field error themselves.
FORM_CHECKED = "text_checked_forms"
#: a view attribute: True when the view refuses unstorable text in its body itself (e.g. to keep the
#: refused body, as SMS receipts do); query arguments and headers are still checked here.
BODY_CHECKED = "text_checked_body"
#: a view attribute: its methods (endpoint names) that take a JSON array as their body too (HR sync's rows)
#: and check the shape of their body themselves.
ARRAY_BODIES = "json_array_bodies"


def storable_id(value) -> bool:
    """Whether `value` (an int or a string of digits) can be a row id: a whole number that fits the
    32-bit integer id columns. Anything else is an id no row has."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        value = value.strip()
        if not WHOLE_NUMBER.fullmatch(value):
            return False
        value = int(value)
    return isinstance(value, int) and INT32_MIN <= value <= INT32_MAX


def unstorable_text(text: str) -> bool:
    return bool(UNSTORABLE.search(text))


def unstorable_message(field: str) -> str:
    return _("%(field)s contains a character that cannot be stored (NUL or an unpaired surrogate)",
             field=field)


PAGE_ARG, PAGE_SIZE_ARG = re.compile("page_(.*)"), re.compile("psize_(.*)")  # as FAB's urltools match them


def page_number_error(name: str, value, minimum: int) -> str | None:
    """Why `value` cannot be the page (minimum 0) or page size (minimum 1) named `name`, or None."""
    if isinstance(value, str):
        value = int(value) if WHOLE_NUMBER.fullmatch(value.strip()) else None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT32_MAX:
        return _("%(argument)s must be a whole number from %(minimum)d to %(maximum)d", argument=name,
                 minimum=minimum, maximum=INT32_MAX)
    return None


def refuse_unstorable_text(form) -> bool:
    """A field error on each field of a WTForms `form` that was sent unstorable text; True if any. For
    forms that report it themselves (a view's `text_checked_forms`), before validators that query with
    the value (FAB's Unique)."""
    refused = False
    for field in form:
        if any(isinstance(raw, str) and unstorable_text(raw) for raw in field.raw_data or ()):
            field.errors = [_("Contains a character that cannot be stored (NUL or an unpaired surrogate)")]
            refused = True
    return refused


def wants_json() -> bool:
    """API clients get JSON answers; browsers get the app's pages."""
    return request.path.startswith("/api/") or request.is_json or (
        request.accept_mimetypes.best == "application/json")


def refuse(status: int, message: str, field: str | None = None, errors: bool = False):
    """A 4xx: JSON `{"message", "field"}` for the API (with `errors: {field: message}` too when the
    endpoints it stands in for answer that way), the app's error page for a browser."""
    if not wants_json():
        abort(status, description=message)
    body = {"message": message}
    if field:
        body["field"] = field
        if errors:
            body["errors"] = {field: message}
    return jsonify(body), status


# --- before every request -------------------------------------------------------------------------------
def _bad_view_args(args: dict) -> bool:
    for name, value in (args or {}).items():
        if isinstance(value, str) and unstorable_text(value):
            return True
        if ID_ARGUMENT.fullmatch(name) and not storable_id(value):
            return True
    return False


def _served_methods(but: str | None = None) -> set[str]:
    """The methods the rules matching this path serve it with, their own ids storable: FAB's `PUT /<pk>`
    matches `/_info` (which only `GET /_info` serves)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    served = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        if method == but:
            continue
        try:
            _endpoint, args = adapter.match(method=method)
        except (HTTPException, RequestRedirect):
            continue
        if not _bad_view_args(args):
            served |= {method, "HEAD"} if method == "GET" else {method}
    return served


def true_allow(response):
    """after_request: Flask's automatic OPTIONS answer lists the methods of every rule matching the path,
    `PUT /<pk>` for `/_info` too: list those that serve it."""
    if request.method == "OPTIONS" and "Allow" in response.headers:
        served = _served_methods()
        if served:
            response.headers["Allow"] = ", ".join(sorted(served | {"OPTIONS"}))
    return response


def _check_view_args():
    if not _bad_view_args(request.view_args):
        return None
    allowed = _served_methods(but=request.method)
    if allowed:
        raise MethodNotAllowed(valid_methods=sorted(allowed | {"OPTIONS"}))
    return refuse(404, _("Not found"))


def _check_json_object():
    """FAB and our views read a write's JSON body as an object (`body.keys()`, `body.get()`)."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/api/") or (
            not request.is_json or _body_checked_by_view()):
        return None
    body = request.get_json(silent=True)
    if isinstance(body, dict) or body is None and not request.get_data(cache=True).strip():
        return None
    view, method = _views_by_blueprint().get(request.blueprint), (request.endpoint or "").rpartition(".")[2]
    if method in getattr(view, ARRAY_BODIES, ()):  # it takes a list too, and refuses other shapes itself
        return None
    # null, a list, a number, not JSON; `errors` as the endpoints' own field checks answer
    return refuse(400, _("The body must be a JSON object"), "body", errors=True)


def _first_unstorable(value, path: str) -> str | None:
    """The path (`rows[3].name`) of the first unstorable string in a JSON value, keys included."""
    if isinstance(value, str):
        return path if unstorable_text(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if unstorable_text(str(key)):
                return where
            found = _first_unstorable(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = _first_unstorable(item, f"{path}[{n}]")
            if found:
                return found
    return None


def _json_body():
    if request.is_json:
        return request.get_json(silent=True)  # cached: the view reads the same parse
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    if request.content_length is None or request.content_length > SCAN_UNDECLARED_JSON_BYTES:
        return None  # chunked: left unread, for the view's capped read (read_capped)
    data = request.get_data(cache=True)  # kept: a signed callback verifies these very bytes later
    if data.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _form_checked_by_view() -> bool:
    view = _views_by_blueprint().get(request.blueprint)
    method = (request.endpoint or "").rpartition(".")[2]
    return view is not None and method in getattr(view, FORM_CHECKED, ())


def _body_checked_by_view() -> bool:
    return getattr(_views_by_blueprint().get(request.blueprint), BODY_CHECKED, False) is True


def _views_by_blueprint() -> dict:
    views = current_app.extensions.get("crm_views_by_blueprint")
    if views is None:
        views = {v.blueprint.name: v for v in current_app.appbuilder.baseviews
                 if getattr(v, "blueprint", None) is not None}
        current_app.extensions["crm_views_by_blueprint"] = views
    return views


def _check_text():
    for key, values in request.args.lists():
        for text in (key, *values):
            if unstorable_text(text):
                return refuse(400, unstorable_message(key), key)
    for name, value in request.headers.items():
        if unstorable_text(value):
            return refuse(400, unstorable_message(name), name)
    if request.method in ("GET", "HEAD", "OPTIONS") or _body_checked_by_view():
        return None
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded") and (
            not _form_checked_by_view()):
        for key, values in request.form.lists():
            for text in (key, *values):
                if unstorable_text(text):
                    return refuse(400, unstorable_message(key), key)
        for key, upload in request.files.items(multi=True):
            if unstorable_text(key) or unstorable_text(upload.filename or ""):
                return refuse(400, unstorable_message(key), key)
    field = _first_unstorable(_json_body(), "")
    if field is not None:
        return refuse(400, unstorable_message(field or "body"), field or "body")
    return None


def _check_size():
    """A chunked body (no Content-Length) over MAX_CONTENT_LENGTH: 413. Werkzeug would cut it at the cap
    silently (a body of exactly the cap is legitimate), so read one byte more and look. The bytes read
    stay available to the view. A declared length over the cap Werkzeug refuses itself (the 413 below)."""
    cap = current_app.config.get("MAX_CONTENT_LENGTH")
    if not cap or request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return None
    request.max_content_length = cap + 1
    if len(request.get_data(cache=True)) > cap:
        return refuse(413, _("The request body is too large"), "body")
    return None


def _check_page_args():
    """FAB's HTML lists (its own views too) read every `page_*` / `psize_*` argument with int(): text
    would be a 500, a negative page a negative OFFSET. The API pages through `q` (app/views/list_args.py)."""
    if request.path.startswith("/api/"):
        return None
    for name, value in request.args.items():
        if PAGE_ARG.findall(name) or PAGE_SIZE_ARG.findall(name):
            reason = page_number_error(name, value, 1 if PAGE_SIZE_ARG.findall(name) else 0)
            if reason:
                return refuse(400, reason, name)
    return None


def guard_request():
    """The before_request hook: the body's size, ids in the URL, unstorable text anywhere, page numbers."""
    return (_check_size() or _check_view_args() or _check_text() or _check_json_object()
            or _check_page_args())


# --- last resort ------------------------------------------------------------------------------------------
_INTEGRITY_COLUMN = (
    re.compile(r"Key \((?:lower\()?\"?([\w]+)"),  # PostgreSQL's detail: Key (code)=(x) already exists.
    re.compile(r"constraint failed: \w+\.(\w+)"),  # SQLite: UNIQUE constraint failed: dict_type.code
    re.compile(r'null value in column "(\w+)"'),  # PostgreSQL's NOT NULL
)


def _constraint_columns(name: str | None) -> list[str]:
    """The columns of the unique constraint or index called `name` in the models' metadata."""
    from flask_appbuilder.models.sqla import Model
    from sqlalchemy import Index, UniqueConstraint

    for table in Model.metadata.tables.values() if name else ():
        for item in (*table.constraints, *table.indexes):
            if isinstance(item, UniqueConstraint | Index) and item.name == name:
                return [c.name for c in item.columns]
    return []


def integrity_answer(exc: IntegrityError) -> tuple[int, str, str | None]:
    """(status, message, column) for a violated constraint: 409 for a value taken (unique) or a related
    row missing / still in use (foreign key), 400 for a required value missing (not null)."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    text = " ".join(filter(None, (str(orig), getattr(diag, "message_detail", None))))
    columns = [getattr(diag, "column_name", None)] if getattr(diag, "column_name", None) else []
    columns = columns or _constraint_columns(getattr(diag, "constraint_name", None))
    if not columns:
        columns = [m.group(1) for pattern in _INTEGRITY_COLUMN for m in [pattern.search(text)] if m][:1]
    field = columns[-1] if columns else None
    lowered = text.lower()
    if "not null" in lowered or "null value" in lowered:
        return 400, _("%(field)s is required", field=field or _("A value")), field
    if "foreign key" in lowered:
        return 409, _("A related row does not exist or is still in use"), field
    if field:
        return 409, _("%(field)s: this value is already taken", field=field), field
    return 409, _("Refused by the current data (a value is already taken)"), None


def _last_resort(exc: BaseException):
    """(status, message, field) for an exception hostile input can cause, else None. FAB wraps some (a
    filter's DataError in ApplyFilterException, a write's in DatabaseException): the chain of causes
    counts."""
    hostile = DataError | OverflowError | IntegrityError
    cause, depth = exc, 0
    while cause is not None and not isinstance(cause, hostile) and depth < 5:
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    if cause is not None and isinstance(cause, hostile):
        exc = cause
    if isinstance(exc, IntegrityError):
        from app.extensions import db

        db.session.rollback()
        log.warning("refused a write the constraints forbid: %s %s: %s", request.method, request.path,
                    str(exc.orig).splitlines()[0][:300])
        return integrity_answer(exc)
    if isinstance(exc, DataError | OverflowError):
        from app.extensions import db

        db.session.rollback()
        log.warning("refused a value the database cannot take: %s %s: %s", request.method, request.path,
                    str(exc).splitlines()[0][:300])
        return 400, _("A value is out of range or cannot be stored"), None
    if isinstance(exc, RequestEntityTooLarge):
        return 413, _("The request body is too large"), "body"
    if isinstance(exc, HTTPException) and exc.code and exc.code < 500:
        return exc.code, _("Not found") if isinstance(exc, NotFound) else exc.description, None
    return None


def _handle(exc):
    answer = _last_resort(exc)
    if answer is None:
        raise exc  # not hostile input: a 500, as it should be
    status, message, field = answer
    if wants_json():
        return jsonify(message=message, **({"field": field} if field else {})), status
    if isinstance(exc, HTTPException):
        return exc  # Flask's page for it (a handler registered here would call this one again)
    # The app's page for that status (a handler of the app's for 400, if there is one).
    return current_app.handle_http_exception(default_exceptions[status](description=message))


_fab_response_500 = BaseApi.response_500


def _response_500(self, message=None):
    """FAB's `@safe` answers every exception with 500 from inside its `except` block: answer the ones
    hostile input causes with their 4xx instead."""
    exc = sys.exc_info()[1]
    answer = _last_resort(exc) if exc is not None else None
    if answer is not None:
        return self.response(answer[0], message=answer[1], **({"field": answer[2]} if answer[2] else {}))
    return _fab_response_500(self, message)


def install(app) -> None:
    """Register the guards on `app` (create_app calls this once the views exist)."""
    app.before_request(guard_request)
    app.after_request(true_allow)
    for exc in (DataError, OverflowError, IntegrityError, RequestEntityTooLarge, ApplyFilterException):
        app.register_error_handler(exc, _handle)
    BaseApi.response_500 = _response_500
