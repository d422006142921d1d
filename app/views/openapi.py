"""The OpenAPI document at /api/v1/_openapi, completed in one place.

FAB builds the document from each API method's docstring YAML (`BaseApi.operation_helper`) and its
marshmallow schemas. What that leaves out or gets wrong is put right here, on the finished document,
instead of in every view:
- every operation has `responses`, its path parameters declared (typed from the URL rule's converter) and
  the refusals the API answers with (400/401/403/404/409/413/422, and 429 where rate limited);
- the request bodies of our own endpoints (`REQUEST_BODIES`), which FAB cannot derive;
- the security of each operation: JWT or API key where the method is protected, the HMAC signature
  headers on the signed inbound calls, nothing on the login or the public site; the inbound
  integrations (who calls, auth, idempotency, rate limit) from the tables of `app.views.openapi_inbound`;
- answers as they are: integer ids, relations that may be null.
Also: an API URL that matches no route answers JSON, like the rest of the API, not an HTML page.
"""

from __future__ import annotations

import copy
import json
import re

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from app.services.sms.templates import MAX_BODY
from app.views import openapi_inbound as inbound
from app.views.employees import HR_SYNC_BODY
from app.views.imports import PHONE_MAX, PHONES_MAX, REASON_MAX
from app.views.sms_notifications import EVENT_BODY
from app.views.sms_templates import VARIABLES_MAX

OPENAPI_ENDPOINT = "OpenApi.get"
API_PREFIX = "/api/"

PROTECTED = [{"jwt": []}, {"api_key": []}]
RATE_LIMITED = {"/api/v1/security/login"}  # and the inbound endpoints limited per address (openapi_inbound)

REFUSAL = {
    "type": "object",
    "description": "A refusal: `message` says why, `field` names the input at fault.",
    "properties": {
        "message": {"description": "Why (a text; FAB's own validation answers an object per field)"},
        "field": {"type": "string", "nullable": True},
        "reason": {"type": "string"},
        "errors": {"description": "Per field (an object), or per row of a batch (a list)"},
    },
}
ERRORS = {
    "400": "Bad input: the field and the reason (or a session-authenticated write without its CSRF token)",
    "401": "Not authenticated (no, malformed or expired JWT, a bad API key or signature)",
    "403": "Not allowed for this login",
    "404": "Not found, or outside the caller's data scope",
    "409": "Refused by the current state (a conflict)",
    "413": "Body too large",
    "422": "Refused by a business rule",
    "429": "Too many requests",
}
#: answers with no JSON body of ours: a path segment no route of that method takes, the server's cap on
#: the request line (gunicorn's own page).
BARE = {"405": "Method not allowed for this path (e.g. a non-numeric id); `Allow` lists the methods",
        "414": "Request line too long"}
WRITES = {"post", "put", "patch", "delete"}

_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_IDS = {"type": "array", "items": _ID, "minItems": 1, "maxItems": 1000}
_ITEM = {"oneOf": [_ID, {"type": "string", "minLength": 1, "maxLength": 50}],
         "description": "A dictionary item: id or code"}
_TEXT = {"type": "string", "minLength": 1}
_NOTE = {"type": "string", "maxLength": 255, "nullable": True}  # null: none
_OPTION = {**_ITEM, "nullable": True}
_CALLBACK_TIME = {"type": "string", "description": "ISO 8601 or Unix seconds; an unreadable time is ignored"}
_PHONES = {"type": "array", "maxItems": PHONES_MAX,
           "items": {"type": "string", "minLength": 1, "maxLength": PHONE_MAX, "pattern": r"\S"}}
_SAMPLE = {"type": "object", "description": "Values of the template's variables",
           "additionalProperties": {"oneOf": [{"type": "string", "maxLength": MAX_BODY}, {"type": "number"}],
                                    "nullable": True}}


def _object(required=(), **properties) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


#: (path, method) → JSON schema of the body of our own endpoints (FAB's model APIs declare theirs).
REQUEST_BODIES = {
    ("/api/v1/opportunity/claim", "post"): _object(["ids"], ids=_IDS),
    ("/api/v1/opportunity/give_back", "post"): _object(["id", "reason"], id=_ID,
                                                       reason={**_TEXT, "maxLength": 255}),
    ("/api/v1/opportunity/assign", "post"): _object(["ids", "employee_id"], ids=_IDS, employee_id=_ID,
                                                    note=_NOTE),
    ("/api/v1/opportunity/follow_up", "post"): _object(
        ["id", "content"], id=_ID, content={**_TEXT, "maxLength": 4000}, type=_OPTION,
        result={"type": "string", "maxLength": 100, "nullable": True}, stage=_OPTION, lost_reason=_OPTION,
        next_followup_at={"type": "string", "format": "date-time", "nullable": True}),
    ("/api/v1/opportunity/stage", "post"): _object(["id", "stage"], id=_ID, stage=_ITEM, lost_reason=_OPTION),
    ("/api/v1/opportunity/lock", "post"): _object(["ids"], ids=_IDS),
    ("/api/v1/opportunity/unlock", "post"): _object(["ids"], ids=_IDS),
    ("/api/v1/opportunity/transfer_all", "post"): _object(
        ["from_employee_id"], from_employee_id=_ID, to_employee_id={**_ID, "nullable": True}, note=_NOTE),
    ("/api/v1/calls/dial", "post"): {"oneOf": [
        {**_object(["opportunity_id"], opportunity_id=_ID), "additionalProperties": False},
        {**_object(["customer_id"], customer_id=_ID), "additionalProperties": False}]},
    ("/api/v1/calls/callback/{interface_id}", "post"): _object(["events"], events={
        "type": "array", "items": _object(
            ["event_id", "status"], event_id=_TEXT, call_id={"type": "string"},
            correlation={"type": "string", "description": "our call uid"}, status=_TEXT,
            time={"type": "string", "format": "date-time"}, duration={"type": "number"},
            result={"type": "string"}, recording_url={"type": "string"},
            transcript={"type": "array", "items": _object(
                speaker={"type": "string"}, start={"type": "number"}, end={"type": "number"},
                text={"type": "string"})})}),
    # As the local sink channel checks them (the HTTP adapter is more lenient: it cuts long ids and phones);
    # a callback's time is informative only: an unreadable one is ignored.
    ("/api/v1/sms/receipts/{channel_id}", "post"): _object(["receipts"], receipts={
        "type": "array", "minItems": 1, "items": _object(
            ["id", "status"], id={**_TEXT, "maxLength": 64},
            status={"type": "string", "enum": ["delivered", "failed", "sent"]},
            phone={"type": "string", "maxLength": 20}, code={"type": "string", "maxLength": 64},
            time=_CALLBACK_TIME)}),
    ("/api/v1/sms/inbound/{channel_id}", "post"): _object(["replies"], replies={
        "type": "array", "minItems": 1, "items": _object(
            ["phone", "text"], phone={**_TEXT, "maxLength": 32}, text={"type": "string"},
            time=_CALLBACK_TIME)}),
    ("/api/v1/do_not_call/import", "post"): _object(
        ["phones"], phones=_PHONES, reason={"type": "string", "maxLength": REASON_MAX, "nullable": True}),
    ("/api/v1/sms_blacklist/import", "post"): _object(
        ["phones"], phones=_PHONES, reason={"type": "string", "maxLength": REASON_MAX, "nullable": True}),
    ("/api/v1/sms_blacklist/lookup", "post"): _object(["phones"], phones=_PHONES),
    ("/api/v1/sms_template/preview", "post"): _object(
        ["body", "kind"], body={"type": "string", "maxLength": MAX_BODY},
        kind={"type": "string", "enum": ["marketing", "notification", "verification"]},
        variables={"type": "string", "maxLength": VARIABLES_MAX, "nullable": True},
        channel_id={**_ID, "nullable": True, "description": "A channel that does not exist answers 422"},
        sample={**_SAMPLE, "nullable": True}),
    ("/api/v1/sms_template/{pk}/preview", "post"): _object(sample={**_SAMPLE, "nullable": True}),
    ("/api/v1/customer/register", "post"): _object(
        ["registered_user_id", "phone"],
        registered_user_id={"oneOf": [{**_TEXT, "maxLength": 64}, {"type": "integer"}],
                            "description": "The user's id on the learning / e-commerce side"},
        phone={"oneOf": [{**_TEXT, "maxLength": 32}, {"type": "integer"}]},
        name={"type": "string", "maxLength": 64, "nullable": True}),
    ("/api/v1/customer/merge", "post"): _object(
        ["survivor_id", "merged_id"], survivor_id=_ID, merged_id=_ID,
        owner_id={**_ID, "nullable": True,
                  "description": "Who keeps the open opportunities when their owners differ"},
        dry_run={"type": "boolean", "nullable": True}),
    ("/api/v1/notifications/event", "post"): EVENT_BODY,
    ("/api/v1/hr/sync", "post"): HR_SYNC_BODY,
    ("/api/v1/sms_template/{pk}/approve", "post"): _object(note={"type": "string", "nullable": True}),
    ("/api/v1/sms_template/{pk}/reject", "post"): _object(note={"type": "string", "nullable": True}),
}
#: Bulk imports also take a text body, one number a line.
TEXT_BODIES = {("/api/v1/sms_blacklist/import", "post")}


# --- the routes behind the document -----------------------------------------------------------------
def _routes(app: Flask) -> dict[tuple[str, str], tuple[dict, object]]:
    """(OpenAPI path, method) → ({parameter: converter}, view method) for every API route."""
    views = {getattr(v, "endpoint", None): v for v in app.appbuilder.baseviews}
    out = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        blueprint, _, name = rule.endpoint.partition(".")
        view = views.get(blueprint)
        method = getattr(view, name, None) if view is not None else None
        for verb in rule.methods - {"HEAD", "OPTIONS"}:
            out[(path, verb.lower())] = (rule._converters, (view, name, method))
    return out


def _protected(target) -> bool:
    view, name, method = target
    if view is None or method is None:
        return False
    return bool(hasattr(method, "_permission_name") or (view.method_permission_name or {}).get(name))


# --- the completion -----------------------------------------------------------------------------------
def complete(spec: dict, app: Flask) -> dict:
    """The document FAB built, made valid and true to the answers (changed in place and returned)."""
    components = spec.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.update(inbound.security_schemes(app))
    if "api_key" in schemes:
        schemes["api_key"]["description"] = inbound.api_key_description(app)
    components.setdefault("schemas", {})["Refusal"] = copy.deepcopy(REFUSAL)
    responses = components.setdefault("responses", {})
    for code, text in ERRORS.items():
        responses[code] = {"description": text, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}}
    routes = _routes(app)
    for path, operations in spec.get("paths", {}).items():
        for verb, operation in operations.items():
            if verb == "parameters" or not isinstance(operation, dict):
                continue
            converters, target = routes.get((path, verb), ({}, (None, "", None)))
            _path_parameters(path, operation, converters)
            _body(path, verb, operation)
            _security(path, operation, target)
            if (path, verb) == ("/api/v1/lead/", "post"):
                inbound.lead_post(operation)
            inbound.document(path, verb, operation, app)
            _responses(path, verb, operation)
    for name, schema in components.get("schemas", {}).items():
        _nullable_relations(schema)
        if name.endswith((".post", ".put")):
            _related_ids(schema)
    _login_body(spec["paths"].get("/api/v1/security/login", {}).get("post", {}))
    return spec


def _path_parameters(path: str, operation: dict, converters: dict) -> None:
    declared = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"}
    for name in re.findall(r"{([^}]+)}", path):
        if name not in declared:
            number = isinstance(converters.get(name), IntegerConverter)
            operation.setdefault("parameters", []).append(
                {"in": "path", "name": name, "required": True,
                 "schema": {"type": "integer", "minimum": 0} if number else {"type": "string"}})


def _body(path: str, verb: str, operation: dict) -> None:
    schema = REQUEST_BODIES.get((path, verb))
    if schema is None or "requestBody" in operation:
        return
    content = {"application/json": {"schema": copy.deepcopy(schema)}}
    if (path, verb) in TEXT_BODIES:
        content["text/plain"] = {"schema": {"type": "string", "description": "one number a line"}}
    operation["requestBody"] = {"required": True, "content": content}


def _security(path: str, operation: dict, target) -> None:
    signed = inbound.signed_security(path)
    if signed is not None:
        operation["security"] = signed
    elif _protected(target):
        operation["security"] = copy.deepcopy(PROTECTED)
    elif path.startswith("/api/v1/security/login"):
        operation["security"] = []


def _responses(path: str, verb: str, operation: dict) -> None:
    answers = operation.setdefault("responses", {})
    if not any(code.startswith("2") for code in answers):
        answers["200"] = {"description": "Done",
                          "content": {"application/json": {"schema": {"type": "object"}}}}
    wanted = ["400", "404", "422"]
    if operation.get("security"):
        wanted += ["401", "403"]
    if verb in WRITES:
        wanted += ["409", "413"]
    if path in RATE_LIMITED or inbound.rate_limited(path, verb):
        wanted.append("429")
    for code in wanted:
        answer = answers.get(code)
        if answer is None or "content" not in answer and "$ref" not in answer:
            answers[code] = {"$ref": f"#/components/responses/{code}"}
    if "{" in path:
        answers.setdefault("405", {"description": BARE["405"]})
    if verb == "get":
        answers.setdefault("414", {"description": BARE["414"]})
    for answer in answers.values():
        _as_answered(answer)


def _as_answered(answer: dict) -> None:
    """FAB declares `id` (POST, GET item) and `ids` (GET list) as strings, but our primary keys are
    integers; and `_info`'s add / edit columns as an object, but they are a list of field descriptions."""
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    if isinstance(props.get("id"), dict) and props["id"].get("type") == "string":
        props["id"] = {**props["id"], "type": "integer"}
    for name in ("add_columns", "edit_columns"):
        if props.get(name) == {"type": "object"}:
            props[name] = {"type": "array", "items": {"type": "object"}}
    menu = props.get("result", {}).get("items", {}).get("properties", {}).get("childs")
    if isinstance(menu, dict) and menu.get("items") == {"type": "object"}:  # FAB's menu: "-" separates
        menu["items"] = {"oneOf": [{"type": "object"}, {"type": "string"}]}
    ids = props.get("ids")
    if isinstance(ids, dict) and ids.get("items") == {"type": "string"}:
        ids["items"] = {"type": "integer"}


def _nullable_relations(schema: dict) -> None:
    """A relation FAB declares as a bare `$ref` is null when unset: say so (3.0 ignores siblings of $ref)."""
    for name, prop in list(schema.get("properties", {}).items()):
        if isinstance(prop, dict) and set(prop) == {"$ref"}:
            schema["properties"][name] = {"allOf": [prop], "nullable": True}


def _related_ids(schema: dict) -> None:
    """FAB declares a many-to-one field of a model write as `{}` (anything); it takes the related row's id."""
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if prop == {}:
            prop.update(_ID, description="The id of the related row")
            if name not in required:
                prop["nullable"] = True


def _login_body(operation: dict) -> None:
    """FAB's login schema allows extra fields, empty names and the LDAP provider; its API refuses them."""
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if schema:
        schema["additionalProperties"] = False
        schema.setdefault("required", ["username", "password", "provider"])
        for field in ("username", "password"):
            if field in schema.get("properties", {}):
                schema["properties"][field]["minLength"] = 1
        provider = schema.get("properties", {}).get("provider")
        if provider and "enum" in provider:
            provider["enum"] = ["db"]


# --- the hooks ----------------------------------------------------------------------------------------
def _completed(response):
    if request.endpoint == OPENAPI_ENDPOINT and response.status_code == 200 and response.is_json:
        spec = complete(response.get_json(), current_app)
        response.set_data(json.dumps(spec))
    return response


def _api_error(exc: HTTPException):
    """An HTTP error under /api/ (no such route, method not allowed, body too large…) as JSON."""
    if not request.path.startswith(API_PREFIX):
        return exc
    response = jsonify(message=exc.description or exc.name)
    response.status_code = exc.code or 500
    for header in ("Allow", "Retry-After"):
        if header in exc.get_response().headers:
            response.headers[header] = exc.get_response().headers[header]
    return response


def install(app: Flask) -> None:
    app.after_request(_completed)
    app.register_error_handler(HTTPException, _api_error)
