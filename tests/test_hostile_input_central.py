"""The central defences against hostile input (app/security/input_guards.py, app/views/base.py,
app/views/list_args.py): ids no row can have, text the database cannot store, list arguments FAB chokes
on, body caps for chunked bodies, and `_info` without the catalog's header. Every answer is a 4xx, never a
500, and nothing is written. The 32-bit ids matter on PostgreSQL (TEST_DATABASE_URL)."""

from __future__ import annotations

import io
import json
import re

import prison
import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.metadata import DictType
from app.models.org import OrgUnit
from app.models.sms import SmsChannel, SmsReceipt, SmsTemplate
from app.services.seed import ADMIN_PASSWORD
from tests import factories as f
from tests.conftest import api_token, login
from tests.helpers import field_errors

HUGE = 99_999_999_999  # beyond 32 bits: PostgreSQL's integer refuses it
HUGER = 99_999_999_999_999_999_999  # beyond 64 bits: SQLite's integer refuses it
UNSTORABLE = "contains a character that cannot be stored"


def bearer(client) -> dict:
    return {"Authorization": f"Bearer {api_token(client, 'admin', ADMIN_PASSWORD)}"}


def org_units(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(OrgUnit))


def answer(resp, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert body and body.get("message"), body
    if field is not None:
        assert body.get("field") == field, body
    return body


def id_urls(huge: int) -> list[tuple[str, str]]:
    """(method, url) of endpoints that take an id in the path, with `huge` as that id."""
    return [
        *[(m, f"/api/v1/{r}/{huge}") for r in ("org_unit", "employee", "dict_item", "call_record")
          for m in ("GET", "PUT", "DELETE")],
        ("GET", f"/api/v1/opportunity/{huge}"),
        ("GET", f"/api/v1/lead/{huge}"),
        ("GET", f"/api/v1/employee/{huge}/phone"),
        ("GET", f"/api/v1/calls/{huge}/status"),
        ("POST", f"/api/v1/sms/receipts/{huge}"),  # no login needed
        ("POST", f"/api/v1/sms/inbound/{huge}"),
        ("POST", f"/api/v1/calls/callback/{huge}"),
    ]


def assert_not_found(client, headers, huge: int) -> None:
    for method, url in id_urls(huge):
        resp = client.open(url, method=method, headers=headers, json={"name": "x"})
        assert resp.status_code == 404, (method, url, resp.status_code, resp.get_data(as_text=True)[:200])
        assert resp.get_json() == {"message": "Not found"}, (method, url)
    for url in (f"/opportunityview/show/{huge}", f"/orgunitview/edit/{huge}", "/orgunitview/show/abc"):
        assert client.get(url).status_code == 404, url


# --- ids no row can have --------------------------------------------------------------------------------
def test_ids_beyond_64_bits_in_the_url_are_not_found(client):
    headers = bearer(client)
    login(client, "admin")
    assert_not_found(client, headers, HUGER)


def test_pg_ids_beyond_32_bits_are_not_found_nor_500(pg_app):
    client = pg_app.test_client()
    client.get("/lang/en")
    headers = bearer(client)
    login(client, "admin")
    assert_not_found(client, headers, HUGE)


def test_pg_a_related_id_beyond_32_bits_in_a_body_names_the_field(pg_app):
    from app.extensions import db

    client = pg_app.test_client()
    client.get("/lang/en")
    headers = bearer(client)
    with pg_app.app_context():
        before = org_units(db.session)
        resp = client.post("/api/v1/org_unit/", headers=headers,
                           json={"name": "Big", "code": "BIG-1", "kind": "team", "parent": HUGE})
        answer(resp, 400, "parent")
        # The last resort: a value the column cannot take (sort is a 32-bit integer) is a 400, not a 500.
        resp = client.post("/api/v1/org_unit/", headers=headers,
                           json={"name": "Big", "code": "BIG-2", "kind": "team", "sort": HUGE})
        assert answer(resp, 400)["message"] == "A value is out of range or cannot be stored"
        # A page's query argument too (FAB's filter on a related id).
        login(client, "admin")
        q = prison.dumps({"filters": [{"col": "owner", "opr": "rel_o_m", "value": HUGE}]})
        resp = client.get(f"/api/v1/opportunity/?q={q}", headers=headers)
        assert answer(resp, 400)["message"] == "A value is out of range or cannot be stored"
        # Ids in the bodies of the sales floor's API: no such opportunity, no such employee.
        answer(client.post("/api/v1/opportunity/claim", headers=headers, json={"ids": [HUGE]}), 404)
        answer(client.post("/api/v1/opportunity/assign", headers=headers,
                           json={"ids": [1], "employee_id": HUGE}), 404, "employee_id")
        resp = client.post("/api/v1/calls/dial", headers=headers, json={"opportunity_id": HUGE})
        assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)[:300]
        assert org_units(db.session) == before


def test_a_related_id_no_row_has_names_the_field(client, session):
    before = org_units(session)
    for parent in (999_999, HUGE):
        body = {"name": "Orphan", "code": f"ORPHAN-{parent}", "kind": "team", "parent": parent}
        resp = client.post("/api/v1/org_unit/", headers=bearer(client), json=body)
        answer(resp, 400, "parent")
    assert org_units(session) == before


# --- text the database cannot store ----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a\u0000b", "\ud800"])
def test_unstorable_text_in_a_json_body_is_refused_naming_the_field(client, session, text):
    before = org_units(session)
    resp = client.post("/api/v1/org_unit/", headers=bearer(client),
                       json={"name": text, "code": "NUL-1", "kind": "team"})
    assert UNSTORABLE in answer(resp, 400, "name")["message"]
    assert org_units(session) == before


def test_unstorable_text_deep_in_a_body_is_named_by_its_path(client):
    resp = client.post("/api/v1/customer/register", headers=bearer(client),
                       json={"phone": "13800001111", "name": "a\u0000"})
    answer(resp, 400, "name")
    resp = client.post("/api/v1/hr/sync", headers=bearer(client),
                       json={"employees": [{"employee_no": "E1"}, {"employee_no": "E2", "name": "x\u0000"}]})
    answer(resp, 400, "employees[1].name")


def test_unstorable_text_in_a_query_argument_or_header_is_refused(client):
    headers = bearer(client)
    answer(client.get("/api/v1/org_unit/?q=(filters:!((col:name,opr:ct,value:'a%00')))", headers=headers),
           400, "q")
    answer(client.get("/api/v1/org_unit/", headers={**headers, "X-Anything": "a\x00b"}), 400, "X-Anything")
    login(client, "admin")
    resp = client.get("/orgunitview/list/?_flt_0_name=a%00b")
    assert resp.status_code == 400 and UNSTORABLE in resp.get_data(as_text=True)


def test_unstorable_text_in_a_crm_form_is_that_fields_error(client, session):
    login(client, "admin")
    before = org_units(session)
    resp = client.post("/orgunitview/add", data={"name": "a\u0000b", "code": "NUL-2", "kind": "team"})
    assert resp.status_code == 200
    assert "cannot be stored" in field_errors(resp.text)["name"]
    assert org_units(session) == before


def test_unstorable_text_in_another_form_is_a_400_page(client):
    resp = client.post("/login/", data={"username": "ad\u0000min", "password": "x"})
    assert resp.status_code == 400 and UNSTORABLE in resp.get_data(as_text=True)


def test_unstorable_text_in_a_callback_is_refused_before_its_signature(client, session):
    interface = f.make_interface(session)
    body = json.dumps({"events": [{"call_id": "p\u0000", "status": "ringing"}]}).encode()
    resp = client.post(f"/api/v1/calls/callback/{interface.id}", data=body, content_type="application/json")
    answer(resp, 400, "events[0].call_id")
    # A body not declared JSON is read as such all the same, and stays readable for the signature check.
    resp = client.post(f"/api/v1/calls/callback/{interface.id}", data=body, content_type="text/plain")
    answer(resp, 400, "events[0].call_id")


def test_unstorable_text_in_sms_receipts_and_replies_is_refused(client, session):
    channel = SmsChannel(name="sink", provider="sink", signature="测试教育")
    session.add(channel)
    session.commit()
    resp = client.post(f"/api/v1/sms/receipts/{channel.id}", content_type="application/json",
                       data=json.dumps({"receipts": [{"id": "m\u0000", "status": "delivered"}]}))
    answer(resp, 400, "receipts[0].id")
    resp = client.post(f"/api/v1/sms/inbound/{channel.id}", content_type="application/json",
                       data=json.dumps({"replies": [{"phone": "+8613800000002", "text": "T\u0000D"}]}))
    answer(resp, 400, "replies[0].text")
    session.expire_all()
    accepted = select(func.count()).select_from(SmsReceipt).where(SmsReceipt.status != "rejected")
    assert session.scalar(accepted) == 0


# --- list arguments --------------------------------------------------------------------------------------
@pytest.mark.parametrize("q,field", [
    ("(((", "q"), ("!", "q"), ("(page:-5,page_size:10)", "page"), ("(page_size:-1)", "page_size"),
    ("(page:abc)", "page"), (f"(page:{HUGE})", "page"), ("(add_columns:(parent:(page:-1)))", "page"),
])
def test_bad_list_arguments_of_the_api_are_a_400_naming_them(client, q, field):
    url = "/api/v1/org_unit/_info" if "add_columns" in q else "/api/v1/employee/"
    answer(client.get(f"{url}?q={q}", headers=bearer(client)), 400, field)


def test_an_api_page_size_over_the_cap_is_capped(app, client):
    resp = client.get("/api/v1/employee/?q=(page_size:100000)", headers=bearer(client))
    assert resp.status_code == 200
    assert len(resp.get_json()["result"]) <= app.config["FAB_API_MAX_PAGE_SIZE"]


@pytest.mark.parametrize("args", [
    "_oc_EmployeeView=nonexistent", "_oc_EmployeeView=nonexistent&_od_EmployeeView=asc",
    "page_EmployeeView=abc", "page_EmployeeView=-3", "psize_EmployeeView=-3", "psize_EmployeeView=0",
    f"page_EmployeeView={HUGE}",
])
def test_bad_list_arguments_of_a_page_are_a_400(client, args):
    login(client, "admin")
    resp = client.get(f"/employeeview/list/?{args}")
    assert resp.status_code == 400
    text = resp.get_data(as_text=True)
    assert args.split("=")[0] in text or "cannot be ordered by nonexistent" in text


def test_page_numbers_of_fabs_own_lists_are_checked_too(client):
    login(client, "admin")
    resp = client.get("/users/list/?page_UserDBModelView=abc")
    assert resp.status_code == 400 and "page_UserDBModelView" in resp.get_data(as_text=True)


@pytest.mark.config(CRM_LIST_MAX_PAGE_SIZE=5)
def test_the_page_size_cap_is_a_setting(client):
    login(client, "admin")
    resp = client.get("/employeeview/list/?psize_EmployeeView=100000")
    assert len(re.findall(r'name="rowid" value="(\d+)"', resp.text)) == 5


def test_file_downloads_of_crm_pages_are_not_found(client):
    login(client, "admin")
    assert client.get("/leadview/download/x.csv").status_code == 404


# --- body caps -------------------------------------------------------------------------------------------
@pytest.mark.config(MAX_CONTENT_LENGTH=1000)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_cap_is_a_413_chunked_or_not(client, session, chunked):
    headers = bearer(client)
    before = org_units(session)
    raw = json.dumps({"name": "x" * 2000, "code": "BIG", "kind": "team"}).encode()
    if chunked:
        chunked_headers = {**headers, "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
        resp = client.post("/api/v1/org_unit/", input_stream=io.BytesIO(raw), headers=chunked_headers,
                           environ_overrides={"wsgi.input_terminated": True})
    else:
        resp = client.post("/api/v1/org_unit/", data=raw, headers=headers, content_type="application/json")
    assert answer(resp, 413, "body")["message"] == "The request body is too large"
    assert org_units(session) == before


@pytest.mark.config(MAX_CONTENT_LENGTH=1000)
def test_a_chunked_body_of_exactly_the_cap_is_read_whole(client, session):
    raw = json.dumps({"name": "Exact", "code": "EXACT", "kind": "team"}).encode()
    raw = raw[:-1] + b" " * (1000 - len(raw)) + b"}"
    assert len(raw) == 1000
    chunked_headers = {**bearer(client), "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    resp = client.post("/api/v1/org_unit/", input_stream=io.BytesIO(raw), headers=chunked_headers,
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 201, resp.get_json()


# --- _info ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_info_descriptions_are_not_the_catalogs_header(client, language):
    resp = client.get("/api/v1/org_unit/_info", headers={**bearer(client), "Accept-Language": language})
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert "Project-Id-Version" not in text and "Content-Type: text/plain" not in text
    fields = resp.get_json()["add_columns"]
    assert fields and all(isinstance(c["description"], str) for c in fields)
    assert any(c["label"] for c in fields)


# --- model writes: related fields, bodies that are not objects, unique values ----------------------------
def related_bodies(session) -> list[tuple[str, dict, str]]:
    """(resource, a body valid but for one related field, that field) of FAB model writes."""
    unit = session.scalar(select(OrgUnit.id).limit(1))
    return [
        ("employee", {"employee_no": "E-REL", "name": "Rel", "org_unit": unit}, "org_unit"),
        ("data_scope", {"role": 1, "scope": "own"}, "role"),
        ("sales_profile", {"employee": 1}, "employee"),
        ("dict_item", {"dict_type": 1, "code": "rel", "label_zh": "关", "label_en": "Rel"}, "dict_type"),
        ("dispatch_rule", {"name": "Rel", "target_pool": None}, "target_pool"),
        ("dispatch_rule", {"name": "Rel", "match_intention_level": None}, "match_intention_level"),
    ]


@pytest.mark.parametrize("bad", [{"x": None}, {"id": 1}, [None, None], [1], "abc", "", True, 1.5])
def test_a_related_field_that_is_not_an_id_is_a_400_naming_it(client, session, bad):
    headers = bearer(client)
    audit_rows = session.scalar(select(func.count()).select_from(AuditLog))
    for resource, body, field in related_bodies(session):
        resp = client.post(f"/api/v1/{resource}/", headers=headers, json={**body, field: bad})
        answer(resp, 400, field)
    resp = client.put("/api/v1/employee/1", headers=headers, json={"org_unit": {"x": None}})
    answer(resp, 400, "org_unit")
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(AuditLog)) == audit_rows  # nothing written


def test_a_to_many_related_field_takes_a_list_of_ids_only(client):
    headers = bearer(client)
    for bad in ({"x": None}, 3, [{"x": None}], ["abc"]):
        resp = client.post("/api/v1/dict_type/", headers=headers,
                           json={"code": "many", "name_zh": "多", "name_en": "Many", "items": bad})
        assert resp.status_code in (400, 422), resp.get_data(as_text=True)[:300]
        assert resp.status_code != 500


@pytest.mark.parametrize("body", [[None, None], [], 3, "text", None])
def test_a_write_whose_body_is_not_an_object_is_a_400(client, session, body):
    template = session.scalar(select(SmsTemplate.id).limit(1))
    headers = bearer(client)
    for method, url in (("PUT", f"/api/v1/sms_template/{template}"), ("POST", "/api/v1/org_unit/"),
                        ("PUT", "/api/v1/employee/1"), ("POST", "/api/v1/opportunity/claim")):
        resp = client.open(url, method=method, headers=headers, data=json.dumps(body),
                           content_type="application/json")
        answer(resp, 400, "body")
    resp = client.post("/api/v1/org_unit/", headers=headers, data="{not json",
                       content_type="application/json")
    answer(resp, 400, "body")
    # A view may take a list too (`json_array_bodies`): HR sync's rows alone.
    resp = client.post("/api/v1/hr/sync", headers=headers, json=[{"employee_no": "E-LIST", "name": "List"}])
    assert resp.get_json().get("field") != "body", resp.get_data(as_text=True)[:300]


def dict_types(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(DictType))


def check_taken_code(client, session) -> None:
    headers = bearer(client)
    before = dict_types(session)
    body = {"code": "lead_source", "name_zh": "重复", "name_en": "Again"}
    resp = client.post("/api/v1/dict_type/", headers=headers, json=body)
    assert "code" in answer(resp, 409, "code")["message"]
    assert dict_types(session) == before
    created = client.post("/api/v1/dict_type/", headers=headers,
                          json={"code": "fresh_one", "name_zh": "新", "name_en": "Fresh"})
    assert created.status_code == 201, created.get_data(as_text=True)[:300]
    resp = client.put(f"/api/v1/dict_type/{created.get_json()['id']}", headers=headers,
                      json={"code": "lead_source"})
    answer(resp, 409, "code")
    session.expire_all()
    assert session.get(DictType, created.get_json()["id"]).code == "fresh_one"  # rolled back
    assert client.get("/api/v1/dict_type/", headers=headers).status_code == 200  # the session is usable


def test_a_unique_value_already_taken_is_a_409_naming_the_column(client, session):
    check_taken_code(client, session)


def test_pg_a_unique_value_already_taken_is_a_409_naming_the_column(pg_app):
    from app.extensions import db

    client = pg_app.test_client()
    client.get("/lang/en")
    with pg_app.app_context():
        check_taken_code(client, db.session)


# --- login, JWT -------------------------------------------------------------------------------------------
def test_a_login_without_provider_is_a_400_naming_it(client):
    resp = client.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    answer(resp, 400, "provider")
    resp = client.post("/api/v1/security/login", json=[None, None])
    assert resp.status_code == 400


@pytest.mark.parametrize("token", ["not.a.jwt", "abc", "eyJhbGciOiJIUzI1NiJ9.e30.x"])
def test_a_malformed_or_missing_jwt_is_a_401(client, token):
    answer(client.get("/api/v1/org_unit/", headers={"Authorization": f"Bearer {token}"}), 401)
    answer(client.post("/api/v1/inbox/read_all", headers={"Authorization": f"Bearer {token}"}), 401)
    answer(client.get("/api/v1/org_unit/"), 401)


@pytest.mark.instant("2026-12-02T02:00:00+00:00")
def test_an_expired_jwt_is_a_401(client, traveller):
    token = api_token(client, "admin", ADMIN_PASSWORD)
    traveller.move_to("2026-12-03T02:00:00+00:00")
    answer(client.get("/api/v1/org_unit/", headers={"Authorization": f"Bearer {token}"}), 401)


def test_the_document_promises_401_not_422_for_a_bad_jwt(client):
    spec = client.get("/api/v1/_openapi", headers=bearer(client)).get_json()
    assert "JWT" in spec["components"]["responses"]["401"]["description"]
    assert "JWT" not in spec["components"]["responses"]["422"]["description"]


# --- methods a path has not ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url,allowed", [
    ("/api/v1/org_unit/_info", {"GET"}), ("/api/v1/do_not_call/import", {"POST"}),
    ("/api/v1/sms_blacklist/lookup", {"POST"}), ("/api/v1/sms_template/preview", {"POST"}),
])
def test_a_method_another_rule_of_the_path_serves_is_a_405_with_allow(client, url, allowed):
    headers = bearer(client)
    for method in ("PUT", "DELETE"):
        resp = client.open(url, method=method, headers=headers, json={})
        assert resp.status_code == 405, (method, url, resp.status_code)
        assert resp.is_json and resp.get_json()["message"]
        assert allowed <= set(resp.headers["Allow"].replace(" ", "").split(",")), resp.headers["Allow"]
    # A non-numeric id no other rule serves stays not found.
    answer(client.put("/api/v1/org_unit/abc", headers=headers, json={}), 404)
    # OPTIONS lists the methods that serve the path, not those of `PUT|DELETE /<pk>` matching it.
    resp = client.options(url, headers=headers)
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) - {"HEAD", "OPTIONS"} == allowed


@pytest.mark.parametrize("resource,body,field", [
    ("dict_item", {"dict_type": 1, "code": "strict", "label_zh": "严", "label_en": "Strict"}, "sort"),
    ("org_unit", {"name": "Strict", "code": "STRICT", "kind": "team"}, "sort"),
])
@pytest.mark.parametrize("bad", [2.5890419884777833e-42, 7.5, "7"])
def test_an_integer_column_takes_only_an_integer(client, session, resource, body, field, bad):
    before = org_units(session)
    resp = client.post(f"/api/v1/{resource}/", headers=bearer(client), json={**body, field: bad})
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    assert field in resp.get_json()["message"]
    assert org_units(session) == before
    resp = client.post(f"/api/v1/{resource}/", headers=bearer(client), json={**body, field: 7})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:300]


@pytest.mark.parametrize("bad", [0, 1, "true", "yes", None])
def test_a_boolean_column_takes_only_true_or_false(client, session, bad):
    body = {"dict_type": 1, "code": "flag", "label_zh": "旗", "label_en": "Flag"}
    resp = client.post("/api/v1/dict_item/", headers=bearer(client), json={**body, "enabled": bad})
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    assert "enabled" in resp.get_json()["message"]
    resp = client.post("/api/v1/dict_item/", headers=bearer(client), json={**body, "enabled": False})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:300]


# --- times of related objects -------------------------------------------------------------------------------
ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def test_times_of_a_related_object_in_an_answer_carry_the_offset(client):
    headers = bearer(client)
    listed = client.get("/api/v1/circulation_rule/", headers=headers).get_json()
    rules = listed["result"]
    nested = [r["org_unit"]["created_at"] for r in rules if isinstance(r.get("org_unit"), dict)
              and "created_at" in r["org_unit"]]
    assert nested, rules[:1]
    assert all(ISO_WITH_OFFSET.fullmatch(t) for t in nested), nested
    pk = listed["ids"][0]
    one = client.get(f"/api/v1/circulation_rule/{pk}", headers=headers).get_json()["result"]
    assert ISO_WITH_OFFSET.fullmatch(one["org_unit"]["created_at"]), one["org_unit"]
