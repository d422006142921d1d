"""Inbound integrations (other systems calling the CRM) as the OpenAPI document tells them.

One table per concern, so that an endpoint is documented the same way whoever wrote its view:
- `SIGNATURES` / `SIGNED`: the HMAC schemes and the paths they sign. Each signed operation gets its
  security scheme, the three signature headers as header parameters (timestamp, nonce, signature), an
  `x-signature` extension saying how to compute them, and the refusals a signature check answers;
- `INBOUND`: every inbound operation, who calls it, how it authenticates, what makes a repeat harmless and
  its rate limit — as the `x-inbound` extension and a paragraph of the operation's description. README
  "Inbound integrations" has the same table (tests/test_integration_examples.py keeps them in step);
- `PUBLIC_PREFIX`: the public site's endpoints (no login: a signed form token), rate limited per address.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

from flask import Flask

PUBLIC_PREFIX = "/api/v1/public/"
SIGNED_MESSAGE = "timestamp + \"\\n\" + nonce + \"\\n\" + sha256_hex(body)"


class Signature(NamedTuple):
    """An HMAC-SHA256 scheme: headers `{prefix}-Timestamp`, `-Nonce`, `-Signature`."""

    prefix: str
    secret: str  # where the shared secret is set
    window: int | str  # seconds, or the setting that holds them
    optional: bool = False  # unsigned posts are also taken (see `note`)
    note: str = ""
    unconfigured: tuple[str, int] = ("", 401)  # when the secret is not set on our side, and the answer

    def headers(self) -> tuple[str, str, str]:
        return f"{self.prefix}-Timestamp", f"{self.prefix}-Nonce", f"{self.prefix}-Signature"


SIGNATURES = {
    "sms_signature": Signature(
        "X-Sms", "the SMS channel's callback secret (SMS Channels page: the environment variable it names)",
        300, optional=True, note="Channels of the local `sink` provider take unsigned posts.",
        unconfigured=("the channel has no callback secret or credentials", 503)),
    "call_signature": Signature(
        "X-Call", "the outbound interface's callback secret (Outbound Interfaces page)", 300,
        unconfigured=("the interface has no callback secret", 503)),
    "shop_signature": Signature("X-Shop", "the `SHOP_WEBHOOK_SECRET` setting", "CRM_SIGNATURE_WINDOW_SECONDS",
                                unconfigured=("`SHOP_WEBHOOK_SECRET` is empty", 401)),
    "learning_signature": Signature("X-Learning", "the `LEARNING_API_SECRET` setting",
                                    "CRM_SIGNATURE_WINDOW_SECONDS",
                                    unconfigured=("`LEARNING_API_SECRET` is empty", 401)),
    "bigdata_signature": Signature("X-BigData", "the `BIGDATA_API_SECRET` setting",
                                   "CRM_SIGNATURE_WINDOW_SECONDS",
                                   unconfigured=("`BIGDATA_API_SECRET` is empty", 401)),
}
#: path → the scheme that signs its calls (no login: the signature authenticates).
SIGNED = {
    "/api/v1/sms/receipts/{channel_id}": "sms_signature",
    "/api/v1/sms/inbound/{channel_id}": "sms_signature",
    "/api/v1/calls/callback/{interface_id}": "call_signature",
    "/api/v1/shop/webhook": "shop_signature",
    "/api/v1/learning/activities": "learning_signature",
    "/api/v1/learning/runs/{run_id}": "learning_signature",  # a GET: the body signed is empty
    "/api/v1/bigdata/tags": "bigdata_signature",
    "/api/v1/bigdata/events": "bigdata_signature",
    "/api/v1/bigdata/runs/{run_id}": "bigdata_signature",  # a GET: the body signed is empty
}


class Inbound(NamedTuple):
    caller: str
    auth: str
    idempotency: str
    limit: tuple[str, str] | None = None  # (setting, its default) of the limit per client address


def _key(role: str) -> str:
    return f"API key of an account with the `{role}` role: `Authorization: Bearer crm_…`"


def _hmac(scheme: str) -> str:
    return f"HMAC-SHA256 signature, headers `{SIGNATURES[scheme].prefix}-Timestamp/-Nonce/-Signature`"


_SMS_LIMIT = ("CRM_SMS_CALLBACK_LIMIT", "600 per minute")
_LEARNING_LIMIT = ("CRM_LEARNING_API_LIMIT", "120 per minute")
_BIGDATA_LIMIT = ("CRM_BIGDATA_API_LIMIT", "120 per minute")
#: (path, method) → the inbound integration. Paths not (yet) served are skipped.
INBOUND = {
    ("/api/v1/lead/", "post"): Inbound(
        "Systems that collect leads (e-commerce, partners, ad platforms)", _key("Lead Integration"),
        "`Idempotency-Key` header (or `client_key`), per calling account: a repeat answers 200 with the "
        "first lead and writes nothing"),
    ("/api/v1/customer/register", "post"): Inbound(
        "The learning / e-commerce side when a user registers", _key("Lead Integration"),
        "By `registered_user_id` and phone: a repeat answers 200 with the same customer"),
    ("/api/v1/hr/sync", "post"): Inbound(
        "The HR system", _key("HR Integration"),
        "Upsert by `employee_no`: a repeat changes nothing (counted as unchanged)"),
    ("/api/v1/notifications/event", "post"): Inbound(
        "Order and class systems (order paid, class reminder)", _key("Notification Integration"),
        "(`event`, `key`): one text per pair; a repeat answers 200 with the message made then"),
    ("/api/v1/sms/receipts/{channel_id}", "post"): Inbound(
        "The SMS provider (delivery receipts)", _hmac("sms_signature"),
        "A receipt only moves a message forward: repeats and late ones are counted, not applied",
        _SMS_LIMIT),
    ("/api/v1/sms/inbound/{channel_id}", "post"): Inbound(
        "The SMS provider (replies, opt-outs)", _hmac("sms_signature"),
        "Each reply is kept; a repeated opt-out leaves one blacklist entry", _SMS_LIMIT),
    ("/api/v1/calls/callback/{interface_id}", "post"): Inbound(
        "The call centre (call status, recording, transcript)", _hmac("call_signature"),
        "Per `event_id`: a repeated event is ignored; statuses only move forward",
        ("CRM_CALL_CALLBACK_LIMIT", "600 per minute")),
    ("/api/v1/shop/webhook", "post"): Inbound(
        "The online shop (orders, payments, refunds)", _hmac("shop_signature"),
        "Per `event_id`: a repeat answers 200 (`duplicate`) and changes nothing; late or out-of-order "
        "events end in the right state", ("CRM_SHOP_WEBHOOK_LIMIT", "600 per minute")),
    ("/api/v1/learning/activities", "post"): Inbound(
        "The learning system (attendance, progress)", _hmac("learning_signature"),
        "Per activity `id`: an activity imported before is skipped (answer 202 with the job run to poll)",
        _LEARNING_LIMIT),
    ("/api/v1/learning/runs/{run_id}", "get"): Inbound(
        "The learning system (where its import run stands)", _hmac("learning_signature") + " (empty body)",
        "A read", _LEARNING_LIMIT),
    ("/api/v1/bigdata/tags", "post"): Inbound(
        "The big-data system (imported tags and their members)", _hmac("bigdata_signature"),
        "Adding a tag that is on, or removing one that is not, changes nothing: a batch applied again ends "
        "the same (answer 202 with the job run to poll)", _BIGDATA_LIMIT),
    ("/api/v1/bigdata/events", "post"): Inbound(
        "The big-data system (behaviour events: page views)", _hmac("bigdata_signature"),
        "Per event `id`: an event stored before is skipped (answer 202 with the job run to poll)",
        _BIGDATA_LIMIT),
    ("/api/v1/bigdata/runs/{run_id}", "get"): Inbound(
        "The big-data system (where its import run stands)", _hmac("bigdata_signature") + " (empty body)",
        "A read", _BIGDATA_LIMIT),
    ("/api/v1/public/lead", "post"): Inbound(
        "Visitors' browsers: the landing-page form and the chat widget",
        "None: a signed, expiring `form_token` from the page (plus a honeypot field)",
        "The form token with the phone: a resubmission answers 200 with the same reference, writes nothing",
        ("CRM_CAPTURE_IP_LIMIT", "20 per minute")),
}
#: path prefixes of inbound endpoints that are served under one prefix (the chat widget's calls).
INBOUND_PREFIXES = {
    "/api/v1/public/chat/": Inbound(
        "Visitors' browsers: the chat widget", "None: the chat's token (from `start`) in the path",
        "A read, or one message per post", ("CRM_CHAT_IP_LIMIT", "60 per minute")),
}


# --- the lead API: FAB's model schema (only phone required, nothing else allowed) is not what it takes ---
def _text(limit: int, numbers: bool = False, **extra) -> dict:
    text = {"type": "string", "maxLength": limit}
    if numbers:
        return {"oneOf": [text, {"type": "integer"}], "nullable": True, **extra}
    return {**text, "nullable": True, **extra}


_CODE = "a code (or label) of the `%s` dictionary"
LEAD_BODY = {
    "type": "object",
    "required": ["phone", "product_line"],
    "description": "A lead from another system. Unknown fields are ignored; the whole body is kept as the "
                   "lead's raw payload (at most 64 KB).",
    "properties": {
        "phone": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 32}, {"type": "integer"}],
                  "description": "Mobile number as typed (+86 assumed when no country code)"},
        "product_line": {"type": "string", "minLength": 1, "maxLength": 100,
                         "description": _CODE % "product_line"},
        "name": _text(64),
        "source": _text(100, description=_CODE % "lead_source"),
        "campaign": _text(100, description="The marketing campaign's tracking code (or a free text)"),
        "region": _text(64),
        "intention_level": _text(100, description=_CODE % "intention_level"),
        "consult_note": _text(4000),
        "client_key": _text(100, numbers=True,
                            description="Idempotency key, when no `Idempotency-Key` header is sent; "
                                        "one of the two is required"),
    },
}
LEAD_ANSWER = {"type": "object", "properties": {
    "id": {"type": "integer"}, "customer_id": {"type": "integer"}, "opportunity_id": {"type": "integer"},
    "opportunity_status": {"type": "string"}, "created_opportunity": {"type": "boolean"},
    "sticky": {"type": "boolean", "description": "The customer's open opportunity kept its owner"},
    "replayed": {"type": "boolean", "description": "The key was seen before: nothing was written"}}}
IDEMPOTENCY_KEY = {"in": "header", "name": "Idempotency-Key", "required": False,
                   "description": "The caller's key for this lead (or `client_key` in the body); unique per "
                                  "calling account",
                   "schema": {"type": "string", "maxLength": 100}}


def lead_post(operation: dict) -> None:
    """POST /api/v1/lead/ as its view (app.views.leads.LeadApi.post_headless) takes and answers it."""
    content = {"application/json": {"schema": copy.deepcopy(LEAD_BODY)}}
    operation["requestBody"] = {"required": True, "content": content}
    if not any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
        operation.setdefault("parameters", []).append(copy.deepcopy(IDEMPOTENCY_KEY))
    answers = operation.setdefault("responses", {})
    answer = {"content": {"application/json": {"schema": copy.deepcopy(LEAD_ANSWER)}}}
    answers["201"] = {"description": "The lead was taken: its customer and opportunity", **answer}
    answers["200"] = {"description": "A repeat of an earlier key: the first lead's ids (nothing written)",
                      **copy.deepcopy(answer)}


def inbound_for(path: str, verb: str) -> Inbound | None:
    found = INBOUND.get((path, verb))
    if found is None:
        found = next((v for prefix, v in INBOUND_PREFIXES.items() if path.startswith(prefix)), None)
    return found


def security_schemes(app: Flask) -> dict:
    """The HMAC schemes (as `apiKey` in the signature header, for tools) and the API key's description."""
    schemes = {}
    for name, sig in SIGNATURES.items():
        schemes[name] = {"type": "apiKey", "in": "header", "name": sig.headers()[2],
                         "description": signature_text(sig, app)}
    return schemes


def api_key_description(app: Flask) -> str:
    prefix = (app.config.get("FAB_API_KEY_PREFIXES") or ["crm_"])[0]
    return (f"An API key, sent as `Authorization: Bearer {prefix}…`. An administrator issues it on "
            "Security › Issue API Key for the calling system's account (roles `Lead Integration`, "
            "`HR Integration`, `Notification Integration`); it is shown once. Security › API Keys lists "
            "and revokes keys.")


def _window(sig: Signature, app: Flask) -> int:
    return sig.window if isinstance(sig.window, int) else int(app.config.get(sig.window, 300))


def signature_text(sig: Signature, app: Flask) -> str:
    ts, nonce, signature = sig.headers()
    window = _window(sig, app)
    setting = "" if isinstance(sig.window, int) else f" (`{sig.window}`)"
    text = (f"`{signature}`: lower-case hex of HMAC-SHA256, keyed with {sig.secret}, of `{SIGNED_MESSAGE}` "
            f"(timestamp and nonce as sent in `{ts}` and `{nonce}`, body the raw bytes as sent). `{ts}`: "
            f"Unix seconds, within ±{window} s of our clock{setting}; `{nonce}`: a fresh random string per "
            "request. A bad or missing signature or a stale timestamp answers 401.")
    if sig.unconfigured[0]:
        text += f" While {sig.unconfigured[0]}, every call answers {sig.unconfigured[1]}."
    if sig.note:
        text += f" {sig.note}"
    return text


def _header_parameters(sig: Signature, app: Flask) -> list[dict]:
    """The signature headers as parameters; where unsigned posts are also taken (optional), no shape or
    example is declared, since such a post ignores them."""
    ts, nonce, signature = sig.headers()
    params = [
        (ts, f"Unix time in seconds when signed; refused beyond ±{_window(sig, app)} s",
         {"type": "string", "pattern": "^[0-9]{1,12}$"}),
        (nonce, "A random string, new for every request (e.g. 16 hex digits)",
         {"type": "string", "minLength": 1, "maxLength": 64}),
        (signature, f"hex(HMAC-SHA256(secret, {SIGNED_MESSAGE}))",
         {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
    ]
    return [{"in": "header", "name": name, "required": not sig.optional, "description": text,
             "schema": {"type": "string"} if sig.optional else schema} for name, text, schema in params]


def signed_security(path: str) -> list | None:
    scheme = SIGNED.get(path)
    if scheme is None:
        return None
    return [{scheme: []}, {}] if SIGNATURES[scheme].optional else [{scheme: []}]


def rate_limited(path: str, verb: str) -> bool:
    found = inbound_for(path, verb)
    return bool(found and found.limit)


def document(path: str, verb: str, operation: dict, app: Flask) -> None:
    """Signature headers, `x-signature`, `x-inbound` and the description paragraph of an inbound operation
    (what its view declared is kept; only what is missing is added)."""
    scheme = SIGNED.get(path)
    if scheme is not None:
        sig = SIGNATURES[scheme]
        declared = {(p.get("in"), (p.get("name") or "").lower()) for p in operation.get("parameters", [])}
        for param in _header_parameters(sig, app):
            if ("header", param["name"].lower()) not in declared:
                operation.setdefault("parameters", []).append(param)
        ts, nonce, signature = sig.headers()
        operation["x-signature"] = {
            "algorithm": "HMAC-SHA256", "encoding": "hex", "secret": sig.secret, "message": SIGNED_MESSAGE,
            "headers": {"timestamp": ts, "nonce": nonce, "signature": signature},
            "window_seconds": _window(sig, app), "required": not sig.optional,
            "description": signature_text(sig, app),
        }
    if path.startswith(PUBLIC_PREFIX):
        operation["security"] = []  # the public site: no login
    found = inbound_for(path, verb)
    if found is None:
        return
    limit = (app.config.get(found.limit[0]) or found.limit[1]) if found.limit else None
    rate = f"{limit} per client address ({found.limit[0]})" if limit else None
    operation["x-inbound"] = {"caller": found.caller, "authentication": found.auth,
                              "idempotency": found.idempotency, "rate_limit": rate}
    paragraph = (f"\n\n**Inbound integration.** Called by: {found.caller}. Authentication: {found.auth}. "
                 f"Repeats: {found.idempotency}."
                 + (f" Rate limit: {limit} per client address (`{found.limit[0]}`)." if limit else "")
                 + (f"\n\n**Signature.** {signature_text(SIGNATURES[scheme], app)}" if scheme else "")
                 + " Examples: README, \"Inbound integrations\".")
    if "**Inbound integration.**" not in operation.get("description", ""):
        operation["description"] = (operation.get("description", "") + paragraph).strip()
    if scheme and SIGNATURES[scheme].unconfigured[1] == 503:
        operation.setdefault("responses", {}).setdefault(
            "503", {"description": f"Not configured on our side: {SIGNATURES[scheme].unconfigured[0]}",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}})


def served(spec: dict) -> list[tuple[str, str]]:
    """The inbound (path, method) pairs the document has."""
    return [(path, verb) for path, ops in spec.get("paths", {}).items() for verb in ops
            if verb != "parameters" and inbound_for(path, verb) is not None]
