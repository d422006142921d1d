"""Issue 11 item 2: /api/v1/_openapi is a valid OpenAPI 3 document that tells the truth about the API —
signed callbacks documented with their HMAC headers, request bodies declared, answers as declared."""

from __future__ import annotations

import datetime as dt

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

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
