"""Ids and page numbers no row can have, in bodies and query arguments: a 4xx naming the field, before any
query — not the last resort (a DataError from PostgreSQL turned into a bare 400) — and refusals to a
browser as pages of the console. The 32-bit cases need PostgreSQL (TEST_DATABASE_URL)."""

from __future__ import annotations

import logging

import pytest

from app.services.seed import ADMIN_PASSWORD
from tests.conftest import api_token, login

HUGE = 99_999_999_999  # beyond 32 bits: PostgreSQL's integer refuses it
HUGER = 99_999_999_999_999_999_999  # beyond 64 bits
LAST_RESORT = "refused a value the database cannot take"


def dial_cases():
    for field in ("opportunity_id", "customer_id"):
        for value in (HUGE, str(HUGE), HUGER, 0, -3, 1.5, True, "12a", [1], {"a": 1}):
            yield field, value


def check_dial_refusals(client, url: str, headers: dict) -> None:
    for field, value in dial_cases():
        resp = client.post(url, json={field: value}, headers=headers)
        assert resp.status_code == 400, (field, value, resp.status_code, resp.get_data(as_text=True)[:200])
        body = resp.get_json()
        # Named: refused by the endpoint, not by PostgreSQL ("integer out of range", the last resort).
        assert body["field"] == field and field in body["message"], (field, value, body)


def test_pg_click_to_call_refuses_an_id_beyond_32_bits_before_any_query(pg_app, caplog):
    caplog.set_level(logging.WARNING)
    client = pg_app.test_client()
    client.get("/lang/en")
    token = {"Authorization": f"Bearer {api_token(client, 'admin', ADMIN_PASSWORD)}"}
    check_dial_refusals(client, "/api/v1/calls/dial", token)
    login(client, "admin")
    check_dial_refusals(client, "/calls/dial", {})  # the browser's endpoint (session)
    assert LAST_RESORT not in caplog.text
    body = client.post("/calls/dial", json={"opportunity_id": HUGE}).get_json()
    assert body["message"] == "opportunity_id must be an id: a whole number from 1 to 2147483647"


def test_click_to_call_still_takes_an_id_as_digits(client, session):
    from sqlalchemy import select

    from app.models.sales import Opportunity

    login(client, "admin")
    opp_id = session.scalar(select(Opportunity.id).order_by(Opportunity.id))
    for value in (opp_id, str(opp_id)):
        resp = client.post("/calls/dial", json={"opportunity_id": value})
        # the admin has no seat: refused by the calling rules, after the id was taken
        assert resp.status_code in (409, 422) and resp.get_json()["reason"], resp.get_json()


@pytest.mark.parametrize("url", ["/jobs/?page={n}", "/sms/reports/?days={n}"])
def test_pg_huge_page_and_day_numbers_are_not_a_database_error(pg_app, caplog, url):
    caplog.set_level(logging.WARNING)
    client = pg_app.test_client()
    login(client, "admin")
    for n in (HUGE, HUGE * HUGE):
        resp = client.get(url.format(n=n))
        assert resp.status_code == 200, (url, n, resp.status_code)
    assert LAST_RESORT not in caplog.text


def test_a_bad_request_from_a_browser_is_a_page_of_the_console_naming_the_argument(client):
    login(client, "admin")
    client.get("/lang/en")
    resp = client.get("/employeeview/list/?page_EmployeeView=abc")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'id="crm-error"' in page and 'id="crm-error-back"' in page
    assert "page_EmployeeView must be a whole number" in page
    client.get("/lang/zh_CN")
    page = client.get("/employeeview/list/?page_EmployeeView=abc").get_data(as_text=True)
    assert 'id="crm-error"' in page and "请求有误" in page
