"""Issue 11 item 2: /api/v1/_openapi is a valid OpenAPI 3 document that tells the truth about the API —
signed callbacks documented with their HMAC headers, request bodies declared, answers as declared."""

from __future__ import annotations

import datetime as dt
from functools import partial

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

from tests import factories
from tests.conftest import api_token

#: POSTs that take no body.
BODILESS = {"/api/v1/sms_template/{pk}/submit", "/api/v1/inbox/{pk}/read", "/api/v1/inbox/read_all",
            "/api/v1/security/refresh", "/api/v1/dispatch/run"}
SIGNED = {"/api/v1/sms/receipts/{channel_id}": "sms_signature",
          "/api/v1/sms/inbound/{channel_id}": "sms_signature",
          "/api/v1/calls/callback/{interface_id}": "call_signature"}


@pytest.fixture
def jwt(app):
    return {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}", "Accept-Language": "en"}


@pytest.fixture
def spec(app, jwt):
    resp = app.test_client().get("/api/v1/_openapi", headers=jwt)
    assert resp.status_code == 200
    return resp.get_json()


def operations(spec):
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            if verb != "parameters":
                yield path, verb, op


def test_the_document_is_valid_openapi(spec):
    errors = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}"
              for e in OpenAPIV30SpecValidator(spec).iter_errors()]
    assert errors == []
    assert len(list(operations(spec))) > 100


def test_signed_callbacks_document_their_hmac_headers_not_a_jwt(spec):
    schemes = spec["components"]["securitySchemes"]
    for path, scheme in SIGNED.items():
        security = spec["paths"][path]["post"]["security"]
        assert {"jwt": []} not in security and {scheme: []} in security
        assert schemes[scheme]["type"] == "apiKey" and schemes[scheme]["in"] == "header"
        assert "HMAC-SHA256" in schemes[scheme]["description"]
    assert schemes["call_signature"]["name"] == "X-Call-Signature"
    assert "X-Call-Timestamp" in schemes["call_signature"]["description"]
    assert spec["paths"]["/api/v1/security/login"]["post"]["security"] == []
    # protected methods whose docstrings carry no YAML are documented as protected all the same
    assert spec["paths"]["/api/v1/sms_template/{pk}/approve"]["post"]["security"] == [{"jwt": []},
                                                                                     {"api_key": []}]


def test_every_request_body_is_declared(spec):
    missing = [f"{verb} {path}" for path, verb, op in operations(spec)
               if verb in ("post", "put", "patch") and path not in BODILESS and "requestBody" not in op]
    assert missing == []
    follow_up = spec["paths"]["/api/v1/opportunity/follow_up"]["post"]["requestBody"]
    schema = follow_up["content"]["application/json"]["schema"]
    assert schema["required"] == ["id", "content"]  # a follow-up says what happened
    assert schema["properties"]["next_followup_at"]["format"] == "date-time"


def test_refusals_and_path_parameters_are_documented(spec):
    for path, verb, op in operations(spec):
        answers = op["responses"]
        assert {"400", "404", "422"} <= set(answers), (verb, path)
        if op.get("security"):
            assert {"401", "403"} <= set(answers), (verb, path)
        if verb in ("post", "put", "delete"):
            assert "409" in answers, (verb, path)
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (verb, path)
    status = spec["paths"]["/api/v1/calls/{pk}/status"]["get"]["parameters"]
    integer = {"type": "integer", "minimum": 0}
    assert {"in": "path", "name": "pk", "required": True, "schema": integer} in status
    refusal = spec["components"]["schemas"]["Refusal"]["properties"]
    assert {"message", "field"} <= set(refusal)


def test_answers_match_the_document(app, spec, jwt):
    client = app.test_client()
    listed = spec["paths"]["/api/v1/org_unit/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["properties"]["ids"]["items"] == {"type": "integer"}
    body = client.get("/api/v1/org_unit/", headers=jwt).get_json()
    assert body["ids"] and all(isinstance(i, int) for i in body["ids"])

    created = spec["paths"]["/api/v1/org_unit/"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"]["properties"]["id"] == {"type": "integer"}
    resp = client.post("/api/v1/org_unit/", json={"name": "OpenAPI Unit", "kind": "team"}, headers=jwt)
    assert resp.status_code == 201 and isinstance(resp.get_json()["id"], int)

    # datetimes: declared date-time, answered in ISO 8601 with an offset
    shown = spec["components"]["schemas"]["OrgUnitApi.get"]["properties"]
    assert shown["created_at"] == {"format": "date-time", "type": "string"}
    created_at = client.get(f"/api/v1/org_unit/{resp.get_json()['id']}", headers=jwt).get_json()["result"]
    assert dt.datetime.fromisoformat(created_at["created_at"]).utcoffset() is not None
    # a relation that may be null is declared nullable (an unset parent is answered as null)
    assert shown["parent"]["nullable"] is True and shown["parent"]["allOf"]


def test_an_unknown_api_url_answers_json(app, jwt):
    resp = app.test_client().get("/api/v1/no_such_thing/", headers=jwt)
    assert resp.status_code == 404 and resp.is_json and resp.get_json()["message"]
    resp = app.test_client().delete("/api/v1/opportunity/follow_up", headers=jwt)
    assert resp.status_code == 405 and resp.is_json


# --- issue 13 item 7: the inbound integrations ---------------------------------------------------------
def test_every_inbound_operation_says_who_calls_it_and_how_it_authenticates(spec):
    from app.views.openapi_inbound import SIGNATURES, SIGNED, served

    inbound = served(spec)
    assert ("/api/v1/lead/", "post") in inbound and ("/api/v1/hr/sync", "post") in inbound
    for path, verb in inbound:
        op = spec["paths"][path][verb]
        note = op["x-inbound"]
        assert note["caller"] and note["authentication"] and note["idempotency"], (verb, path)
        assert "**Inbound integration.**" in op["description"], (verb, path)
        if path in SIGNED:
            sig = SIGNATURES[SIGNED[path]]
            assert {SIGNED[path]: []} in op["security"] and {"jwt": []} not in op["security"]
            headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
            assert set(sig.headers()) <= set(headers), (verb, path)
            assert all(headers[h].get("required", False) is not sig.optional for h in sig.headers())
            assert op["x-signature"]["headers"]["signature"] == sig.headers()[2]
            assert op["x-signature"]["window_seconds"] == 300 and "401" in op["responses"]
        elif path.startswith("/api/v1/public/"):
            assert op["security"] == [], (verb, path)
        else:
            assert op["security"] == [{"jwt": []}, {"api_key": []}], (verb, path)
            assert {"401", "403"} <= set(op["responses"])
        if note["rate_limit"]:
            assert "429" in op["responses"], (verb, path)
    api_key = spec["components"]["securitySchemes"]["api_key"]["description"]
    assert "Authorization: Bearer crm_" in api_key and "Issue API Key" in api_key
    # an SMS channel or a call interface without its secret answers 503, and says so
    assert "503" in spec["paths"]["/api/v1/sms/receipts/{channel_id}"]["post"]["responses"]


def test_a_signed_endpoint_is_documented_even_when_its_view_declares_nothing(app):
    from app.views.openapi import complete

    bare = {"openapi": "3.0.2", "info": {"title": "t", "version": "v1"},
            "paths": {"/api/v1/shop/webhook": {"post": {"responses": {"200": {"description": "Done"}}}},
                      "/api/v1/public/lead": {"post": {"responses": {"201": {"description": "Done"}}}}}}
    with app.app_context():
        done = complete(bare, app)
    op = done["paths"]["/api/v1/shop/webhook"]["post"]
    assert op["security"] == [{"shop_signature": []}]
    names = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
    assert set(names) == {"X-Shop-Timestamp", "X-Shop-Nonce", "X-Shop-Signature"}
    assert all(p["required"] and p["description"] for p in names.values())
    assert "SHOP_WEBHOOK_SECRET" in op["x-signature"]["secret"] and "X-Shop-Nonce" in op["description"]
    assert {"401", "429"} <= set(op["responses"])
    assert "HMAC-SHA256" in done["components"]["securitySchemes"]["shop_signature"]["description"]
    public = done["paths"]["/api/v1/public/lead"]["post"]
    assert public["security"] == [] and "429" in public["responses"] and "401" not in public["responses"]


def _signed(op: dict, secret: str, body: bytes) -> dict:
    """The headers, computed as the operation's `x-signature` says (not with the app's own code)."""
    import hashlib
    import hmac
    import time

    names = op["x-signature"]["headers"]
    timestamp, nonce = str(int(time.time())), "0123456789abcdef"
    message = "\n".join((timestamp, nonce, hashlib.sha256(body).hexdigest()))
    return {names["timestamp"]: timestamp, names["nonce"]: nonce,
            names["signature"]: hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()}


def test_the_signature_the_document_describes_is_the_one_checked(app, session, spec, monkeypatch):
    from app.models.sms import SmsChannel

    monkeypatch.setenv("T_OPENAPI_CB", "openapi-callback-secret")
    channel = SmsChannel(name="openapi", provider="http", signature="测试", base_url="https://sms.example.com",
                         access_key_env="T_OPENAPI_CB", secret_env="T_OPENAPI_CB",
                         callback_secret_env="T_OPENAPI_CB")
    session.add(channel)
    session.commit()
    secrets = {f"/api/v1/sms/receipts/{channel.id}": ("/api/v1/sms/receipts/{channel_id}",
                                                      "openapi-callback-secret"),
               "/api/v1/shop/webhook": ("/api/v1/shop/webhook", app.config["SHOP_WEBHOOK_SECRET"]),
               "/api/v1/learning/activities": ("/api/v1/learning/activities",
                                               app.config["LEARNING_API_SECRET"]),
               "/api/v1/bigdata/tags": ("/api/v1/bigdata/tags", app.config["BIGDATA_API_SECRET"]),
               "/api/v1/bigdata/events": ("/api/v1/bigdata/events", app.config["BIGDATA_API_SECRET"])}
    client = app.test_client()
    checked = 0
    for url, (path, secret) in secrets.items():
        op = spec["paths"].get(path, {}).get("post")
        if op is None:
            continue
        body = b'{"probe": true}'  # signed, but not a body the endpoint takes
        post = partial(client.post, url, data=body, content_type="application/json")
        resp = post(headers=_signed(op, secret, body))
        assert resp.status_code in (400, 422), (url, resp.get_json())
        resp = post(headers=_signed(op, "wrong", body))
        assert resp.status_code == 401, (url, resp.get_json())
        checked += 1
    assert checked >= 1


def test_the_lead_post_is_documented_as_it_is_taken(app, session, spec):
    op = spec["paths"]["/api/v1/lead/"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["phone", "product_line"] and "additionalProperties" not in schema
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in op["parameters"])
    answer = op["responses"]["201"]["content"]["application/json"]["schema"]["properties"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["properties"] == answer

    sm = app.appbuilder.sm
    user = sm.add_user("openapi-partner", "Partner", "System", "openapi-partner@example.com",
                       sm.find_role("Lead Integration"), factories.PASSWORD)
    auth = {"Authorization": f"Bearer {sm.create_api_key(user, 'openapi')['key']}", "Idempotency-Key": "k-1"}
    client = app.test_client()
    lead = {"phone": "13800138555", "product_line": "k12_english", "client_key": "k-1", "campaign": None}
    first = client.post("/api/v1/lead/", json=lead, headers=auth)
    again = client.post("/api/v1/lead/", json=lead, headers=auth)
    assert (first.status_code, again.status_code) == (201, 200)
    assert set(first.get_json()) == set(answer) and again.get_json()["id"] == first.get_json()["id"]
