"""Times as people and API clients read and type them (app/views/times.py): one stored instant reads the
same on a list page, a show page, an export, the workbench and in the API, in the business time zone,
without microseconds; the API speaks ISO 8601 with the zone's offset; what a person types in a form or
sends without an offset is business-zone wall time, stored as UTC."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from app.models.audit import AuditLog
from app.models.calls import DoNotCall
from tests.conftest import api_token, login

# 2026-06-16 23:17:05.123456 UTC is 2026-06-17 07:17:05 in Shanghai (the default business zone).
STORED = dt.datetime(2026, 6, 16, 23, 17, 5, 123456)
SHANGHAI = "2026-06-17 07:17:05"
NEW_YORK = "2026-06-16 19:17:05"  # EDT, UTC-4
MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d\.\d{3,6}")


def bearer(client, username: str = "admin", password: str | None = None) -> dict:
    return {"Authorization": f"Bearer {api_token(client, username, password)}"}


def audit_row(session) -> int:
    row = AuditLog(created_at=STORED, actor_name="tester", action="update", target_type="employee",
                   target_id="1", summary="one instant, read everywhere")
    session.add(row)
    session.commit()
    return row.id


def assert_reads(html: str, wall: str) -> None:
    assert wall in html
    assert "23:17" not in html.replace(wall, "")
    assert not MICROSECONDS.search(html), MICROSECONDS.search(html).group(0)


def test_list_show_and_api_read_one_instant_alike(client, session):
    pk = audit_row(session)
    login(client, "admin")

    assert_reads(client.get("/auditlogview/list/?_flt_0_actor_name=tester").text, SHANGHAI)
    assert_reads(client.get(f"/auditlogview/show/{pk}").text, SHANGHAI)
    exported = client.get("/auditlogview/export/?_flt_0_actor_name=tester").get_data(as_text=True)
    assert_reads(exported, SHANGHAI)

    body = client.get(f"/api/v1/audit_log/{pk}", headers=bearer(client)).get_json()
    assert body["result"]["created_at"] == "2026-06-17T07:17:05+08:00"
    q = "(filters:!((col:actor_name,opr:eq,value:tester)))"
    listed = client.get(f"/api/v1/audit_log/?q={q}", headers=bearer(client)).get_json()
    assert [r["created_at"] for r in listed["result"]] == ["2026-06-17T07:17:05+08:00"]
    listed = client.get("/api/v1/audit_log/?q=(page_size:100)", headers=bearer(client)).get_json()
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", r["created_at"])
               for r in listed["result"])


@pytest.mark.config(BUSINESS_TIMEZONE="America/New_York")
def test_another_business_zone_moves_every_reading(client, session):
    pk = audit_row(session)
    login(client, "admin")
    assert_reads(client.get(f"/auditlogview/show/{pk}").text, NEW_YORK)
    assert_reads(client.get("/auditlogview/list/?_flt_0_actor_name=tester").text, NEW_YORK)
    body = client.get(f"/api/v1/audit_log/{pk}", headers=bearer(client)).get_json()
    assert body["result"]["created_at"] == "2026-06-16T19:17:05-04:00"


def test_no_page_of_the_menu_shows_microseconds(client):
    """Every page the administrator's menu offers, and the first record's page of every list."""
    login(client, "admin")
    menu = re.findall(r'href="(/[^"?#]*)"', client.get("/").text)
    pages = sorted({url for url in menu if not url.startswith(("/static", "/lang", "/logout", "/api"))})
    assert len(pages) > 20, pages
    shown = []
    for url in pages:
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert not MICROSECONDS.search(resp.text), (url, MICROSECONDS.search(resp.text).group(0))
        first = re.search(r'href="(/[a-z_]+/show/[^"]+)"', resp.text)
        if first:
            shown.append(first.group(1))
    assert len(shown) > 10, shown
    for url in shown:
        html = client.get(url).text
        assert not MICROSECONDS.search(html), (url, MICROSECONDS.search(html).group(0))


def test_a_form_reads_and_shows_business_zone_wall_time(client, session):
    login(client, "admin")
    resp = client.post("/donotcallview/add", data={"phone": "+8613900000777", "reason": "asked",
                                                  "expires_at": "2026-07-01 09:30"})
    assert resp.status_code == 302
    item = session.scalar(select(DoNotCall).where(DoNotCall.phone == "+8613900000777"))
    assert item.expires_at == dt.datetime(2026, 7, 1, 1, 30)  # 09:30 in Shanghai, stored as UTC

    form = client.get(f"/donotcallview/edit/{item.id}").text
    assert re.search(r'name="expires_at"[^>]*value="2026-07-01 09:30:00"', form) or \
        re.search(r'value="2026-07-01 09:30:00"[^>]*name="expires_at"', form), form
    # Saving the form unchanged keeps the instant (no drift of eight hours per save).
    resp = client.post(f"/donotcallview/edit/{item.id}", data={"reason": "asked again",
                                                               "expires_at": "2026-07-01 09:30:00"})
    assert resp.status_code == 302
    session.expire_all()
    assert session.get(DoNotCall, item.id).expires_at == dt.datetime(2026, 7, 1, 1, 30)
    assert "2026-07-01 09:30:00" in client.get(f"/donotcallview/show/{item.id}").text


def test_the_api_reads_wall_time_or_an_offset_and_answers_with_the_offset(client, session):
    headers = bearer(client)
    resp = client.post("/api/v1/do_not_call/", headers=headers,
                       json={"phone": "+8613900000778", "expires_at": "2026-07-01T09:30:00"})
    assert resp.status_code == 201, resp.get_json()
    pk = resp.get_json()["id"]
    assert session.get(DoNotCall, pk).expires_at == dt.datetime(2026, 7, 1, 1, 30)
    assert resp.get_json()["result"]["expires_at"] == "2026-07-01T09:30:00+08:00"

    resp = client.put(f"/api/v1/do_not_call/{pk}", headers=headers,
                      json={"expires_at": "2026-07-01T09:30:00Z"})
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()
    assert session.get(DoNotCall, pk).expires_at == dt.datetime(2026, 7, 1, 9, 30)
    body = client.get(f"/api/v1/do_not_call/{pk}", headers=headers).get_json()
    assert body["result"]["expires_at"] == "2026-07-01T17:30:00+08:00"
    assert client.get("/api/v1/_openapi", headers=headers).status_code == 200


def test_jsonify_writes_times_with_the_offset_and_dates_as_dates(app):
    with app.app_context():
        text = app.json.dumps({"at": STORED, "aware": dt.datetime(2026, 6, 16, 23, 17, 5, tzinfo=dt.UTC),
                               "day": dt.date(2026, 6, 17)})
    assert app.json.loads(text) == {"at": "2026-06-17T07:17:05+08:00", "aware": "2026-06-17T07:17:05+08:00",
                                    "day": "2026-06-17"}


def test_the_template_filter_reads_the_business_zone(app):
    with app.test_request_context():
        render = app.jinja_env.from_string("{{ t|local_dt }} · {{ t|local_dt(seconds=False) }} · "
                                           "{{ d|local_dt }} · {{ none|local_dt }}.")
        assert render.render(t=STORED, d=dt.date(2026, 6, 17), none=None) == \
            "2026-06-17 07:17:05 · 2026-06-17 07:17 · 2026-06-17 · ."


def test_searching_by_time_reads_business_zone_wall_time(client, session):
    audit_row(session)
    login(client, "admin")

    def listed(after: str) -> bool:  # FAB's "Greater than" is the second filter of a datetime column
        html = client.get(f"/auditlogview/list/?_flt_0_actor_name=tester&_flt_1_created_at={after}").text
        return "one instant, read everywhere" in html

    assert listed("2026-06-17 07:17:00") and not listed("2026-06-17 07:18:00")
    headers = bearer(client)

    def answered(after: str) -> bool:
        q = f"(filters:!((col:actor_name,opr:eq,value:tester),(col:created_at,opr:gt,value:'{after}')))"
        return client.get(f"/api/v1/audit_log/?q={q}", headers=headers).get_json()["count"] == 1

    assert answered("2026-06-17T07:17:00") and not answered("2026-06-17T07:18:00")
    assert answered("2026-06-16T23:17:00Z") and not answered("2026-06-16T23:18:00Z")


def test_an_opportunity_reads_alike_on_its_list_its_page_the_workbench_and_the_api(app, client):
    """The issue's case: one opportunity read 23:17 on its list ("(UTC)" columns) and 07:17 on the
    workbench (Shanghai)."""
    from app.extensions import db
    from app.models.sales import Opportunity
    from tests import factories as f
    from tests.test_ownership import build_world, owned

    with app.app_context():
        w = build_world(db.session)
        [pk] = owned(db.session, w, "a1")
        db.session.get(Opportunity, pk).next_followup_at = STORED
        db.session.commit()
        f.login_user(app, db.session, w.emp(db.session, "a1"), "Salesperson")
        username = f"user{w.a1}"
    login(client, username, f.PASSWORD)

    listed = client.get(f"/opportunityview/list/?_flt_0_id={pk}").text
    row = listed.split(f"/opportunityview/show/{pk}")[1].split("</tr>")[0]
    assert SHANGHAI in row and "23:17" not in row
    for url in (f"/opportunityview/show/{pk}", "/workbench/"):
        assert_reads(client.get(url).text, SHANGHAI)
    body = client.get(f"/api/v1/opportunity/{pk}", headers=bearer(client, username, f.PASSWORD)).get_json()
    assert body["result"]["next_followup_at"] == "2026-06-17T07:17:05+08:00"
