"""Call reports: per agent / team figures and per caller-ID number usage, computed in SQL and checked
against hand-built calls; business-day ranges, data scope, empty ranges, bad parameters, the pages."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import delete, select

from app import clock
from app.clock import utcnow
from app.models.calls import (
    CALL_BUSY,
    CALL_ENDED,
    CALL_FAILED,
    CALL_NO_ANSWER,
    COUNTER_NUMBER_DAY,
    COUNTER_NUMBER_WINDOW,
    CallCounter,
    CallEvent,
    CallLine,
    CallNumber,
    CallRecord,
    OutboundInterface,
)
from app.models.qa import QaInspection
from app.services.calls import reports
from app.services.errors import DomainError
from tests.conftest import login
from tests.factories import employee_by_username

# 2026-11-10 is a Tuesday; the business zone is Asia/Shanghai (UTC+8).
DAY = dt.date(2026, 11, 10)


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """Naive UTC of a business-zone wall clock time."""
    return dt.datetime.combine(day, dt.time(hour, minute)) - dt.timedelta(hours=8)


def clean_calls(session) -> None:
    """Remove the demo calls (the seeded template has ~14 days of them): each test arranges its own."""
    for model in (QaInspection, CallEvent, CallRecord, CallCounter):
        session.execute(delete(model))
    session.commit()


def setup_line(session, name="test line"):
    interface = OutboundInterface(name=f"{name} sim", provider="simulator")
    session.add(interface)
    session.flush()
    line = CallLine(name=name, interface_id=interface.id)
    session.add(line)
    session.flush()
    return line


def make_call(session, line, emp, started: dt.datetime, status=CALL_ENDED, talk: int = 0, number=None):
    answered = started + dt.timedelta(seconds=5) if status == CALL_ENDED else None
    rec = CallRecord(interface_id=line.interface_id, line_id=line.id, employee_id=emp.id,
                     org_unit_id=emp.org_unit_id, callee_phone="+8613800001111", status=status,
                     started_at=started, answered_at=answered, duration_seconds=talk,
                     number_id=number.id if number else None,
                     ended_at=(answered or started) + dt.timedelta(seconds=talk))
    session.add(rec)
    return rec


# (agent, business day, hour, status, talk seconds)
CALLS = [
    ("sales11", DAY, 10, CALL_ENDED, 60),
    ("sales11", DAY, 11, CALL_ENDED, 120),
    ("sales11", DAY, 15, CALL_NO_ANSWER, 0),
    ("sales11", DAY - dt.timedelta(days=10), 10, CALL_ENDED, 300),  # outside the 7-day range
    ("sales12", DAY, 9, CALL_BUSY, 0),
    ("sales12", DAY - dt.timedelta(days=1), 20, CALL_FAILED, 0),
    ("sales21", DAY, 0, CALL_ENDED, 45),  # 00:00 local: the very first second of the day counts
    ("sales21", DAY - dt.timedelta(days=2), 13, CALL_NO_ANSWER, 0),
    ("sales21", DAY + dt.timedelta(days=1), 0, CALL_ENDED, 999),  # the day after the range
]
RANGE = (DAY - dt.timedelta(days=6), DAY)


@pytest.fixture
def arranged(session):
    clean_calls(session)
    line = setup_line(session)
    emps = {u: employee_by_username(session, u) for u in ("sales11", "sales12", "sales21")}
    for agent, day, hour, status, talk in CALLS:
        make_call(session, line, emps[agent], local(day, hour), status, talk)
    session.commit()
    return emps


def expected(rows):
    calls = len(rows)
    connected = sum(1 for r in rows if r[3] == CALL_ENDED)
    talk = sum(r[4] for r in rows)
    return {"calls": calls, "connected": connected, "talk_seconds": talk,
            "connect_rate": round(100 * connected / calls, 1) if calls else None,
            "average_talk_seconds": round(talk / connected, 1) if connected else None}


def in_range(r, first=RANGE[0], last=RANGE[1]):
    return first <= r[1] <= last


def figures(row) -> dict:
    d = row.as_dict()
    return {k: d[k] for k in ("calls", "connected", "talk_seconds", "connect_rate", "average_talk_seconds")}


def test_range_is_whole_business_days(session):
    rng = reports.date_range(session, local(DAY, 12), "2026-11-04", "2026-11-10")
    assert rng.since == dt.datetime(2026, 11, 3, 16) and rng.until == dt.datetime(2026, 11, 10, 16)
    assert len(rng.days) == 7 and rng.offset_minutes == 480
    default = reports.date_range(session, local(DAY, 0, 30))  # 00:30 local is still 10 Nov locally
    assert (default.first, default.last) == RANGE


def test_per_agent_figures(session, arranged):
    rng = reports.date_range(session, local(DAY, 22), *RANGE)
    rows = {r.key: r for r in reports.by_agent(session, rng)}
    assert set(rows) == {e.id for e in arranged.values()}
    for username, emp in arranged.items():
        want = expected([r for r in CALLS if r[0] == username and in_range(r)])
        assert figures(rows[emp.id]) == want, username
    assert figures(rows[arranged["sales11"].id]) == {
        "calls": 3, "connected": 2, "talk_seconds": 180, "connect_rate": 66.7, "average_talk_seconds": 90.0}
    assert rows[arranged["sales12"].id].average_talk_seconds is None  # no connected call: no average
    assert rows[arranged["sales11"].id].unit == "K12 一组"
    # A wider range takes the older call in.
    wide = reports.date_range(session, local(DAY, 22), DAY - dt.timedelta(days=30), DAY)
    sales11 = next(r for r in reports.by_agent(session, wide) if r.key == arranged["sales11"].id)
    assert figures(sales11) == expected([r for r in CALLS if r[0] == "sales11"])


def test_per_team_figures_and_daily_series(session, arranged):
    rng = reports.date_range(session, local(DAY, 22), *RANGE)
    teams = {r.name: r for r in reports.by_team(session, rng)}
    assert set(teams) == {"K12 一组", "K12 二组"}
    assert figures(teams["K12 一组"]) == expected(
        [r for r in CALLS if r[0] in ("sales11", "sales12") and in_range(r)])
    assert figures(teams["K12 二组"]) == expected([r for r in CALLS if r[0] == "sales21" and in_range(r)])
    total = reports.totals(list(teams.values()))
    assert figures(total) == expected([r for r in CALLS if in_range(r)])
    daily = {d["day"]: d for d in reports.daily(session, rng)}
    assert list(daily) == [d.isoformat() for d in rng.days]
    for day in rng.days:
        want = expected([r for r in CALLS if r[1] == day])
        assert (daily[day.isoformat()]["calls"], daily[day.isoformat()]["connected"]) == (
            want["calls"], want["connected"])


def test_team_filter_and_empty_range(session, arranged):
    rng = reports.date_range(session, local(DAY, 22), *RANGE)
    team = arranged["sales21"].org_unit_id
    assert [r.key for r in reports.by_agent(session, rng, org_unit_id=team)] == [arranged["sales21"].id]
    empty = reports.date_range(session, local(DAY, 22), "2026-01-01", "2026-01-31")
    assert reports.by_agent(session, empty) == [] and reports.by_team(session, empty) == []
    assert reports.totals([]).connect_rate is None
    assert all(d["calls"] == 0 for d in reports.daily(session, empty))


@pytest.mark.parametrize("start, end, field", [
    ("2026-13-01", None, "start"), ("yesterday", None, "start"), (None, "2026/11/10", "end"),
    ("2026-11-10", "2026-11-01", "start"), ("2024-01-01", "2026-01-01", "start")])
def test_bad_dates_are_refused(session, start, end, field):
    with pytest.raises(DomainError) as err:
        reports.date_range(session, local(DAY, 12), start, end)
    assert err.value.status == 400 and err.value.field == field


def _json(client, url):
    resp = client.get(url)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp.get_json()


def test_data_scope_of_the_report(client, session, arranged):
    url = f"/calls/reports/?start={RANGE[0]}&end={RANGE[1]}&format=json"
    login(client, "manager1")  # Sales Manager of K12 一组: team scope
    body = _json(client, url)
    assert {a["id"] for a in body["agents"]} == {arranged["sales11"].id, arranged["sales12"].id}
    assert [t["name"] for t in body["teams"]] == ["K12 一组"]
    menu = client.get("/calls/reports/").get_data(as_text=True)
    assert "Caller-ID Usage" in menu and "QA Reports" in menu  # the menu entries role sync granted
    assert body["totals"]["calls"] == expected(
        [r for r in CALLS if r[0] in ("sales11", "sales12") and in_range(r)])["calls"]

    director = client.application.test_client()
    login(director, "director")  # the whole sales division
    body = _json(director, url)
    assert {a["id"] for a in body["agents"]} == {e.id for e in arranged.values()}
    assert body["totals"] == {"id": None, "name": "", "unit": None,
                              **expected([r for r in CALLS if in_range(r)])}

    sales = client.application.test_client()
    login(sales, "sales11")  # a salesperson has no report permission
    assert sales.get(url).status_code == 403
    assert sales.get("/calls/reports/numbers").status_code == 403


def test_report_page_tables_and_chart(client, session, arranged):
    login(client, "director")
    resp = client.get(f"/calls/reports/?start={RANGE[0]}&end={RANGE[1]}")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'id="crm-call-agents"' in html and "vendor/chart-4.6.1.umd.min.js" in html
    assert "K12 一组" in html and "66.7 %" in html and "1:30" in html  # sales11: 90 s average
    chart = json.loads(re.search(r'<script id="crm-call-chart" type="application/json">(.*?)</script>',
                                 html, re.S).group(1))
    assert {a["name"]: a["calls"] for a in chart["agents"]} == {
        e.name: expected([r for r in CALLS if r[0] == u and in_range(r)])["calls"]
        for u, e in arranged.items()}
    assert len(chart["daily"]) == 7
    # The team drill-down lists that team's agents only.
    team = arranged["sales21"].org_unit_id
    body = _json(client, f"/calls/reports/?start={RANGE[0]}&end={RANGE[1]}&team={team}&format=json")
    assert [a["id"] for a in body["agents"]] == [arranged["sales21"].id]
    empty = client.get("/calls/reports/?start=2026-01-01&end=2026-01-02")
    assert empty.status_code == 200 and "No calls in this period." in empty.get_data(as_text=True)


def test_default_range_is_the_last_seven_days(client, session):
    clean_calls(session)
    line = setup_line(session)
    emp = employee_by_username(session, "sales11")
    today_start, _ = clock.day_bounds(utcnow())
    make_call(session, line, emp, today_start - dt.timedelta(hours=12), CALL_ENDED, 30)  # yesterday
    make_call(session, line, emp, today_start - dt.timedelta(days=7, hours=1), CALL_ENDED, 30)  # 8 days
    session.commit()
    login(client, "director")
    body = _json(client, "/calls/reports/?format=json")
    assert body["totals"]["calls"] == 1 and len(body["daily"]) == 7


@pytest.mark.parametrize("query, field", [
    ("start=2026-02-30", "start"), ("end=tomorrow", "end"), ("start=2026-11-10&end=2026-11-01", "start"),
    ("team=abc", "team"), ("team=-3", "team")])
def test_bad_parameters_answer_400(client, session, query, field):
    login(client, "director")
    resp = client.get(f"/calls/reports/?{query}&format=json")
    assert resp.status_code == 400 and resp.get_json()["field"] == field and resp.get_json()["message"]
    page = client.get(f"/calls/reports/?{query}")
    assert page.status_code == 400
    assert 'id="crm-report-error"' in page.get_data(as_text=True)
    assert client.get("/calls/reports/numbers?line=x&format=json").status_code == 400


# --- per caller-ID number --------------------------------------------------------------------------
def test_number_usage_against_cap(client, session):
    clean_calls(session)
    line = setup_line(session, "usage line")
    now = utcnow()
    day_start, _ = clock.day_bounds(now)
    nums = {
        "n1": CallNumber(number="+861000000001", line_id=line.id, area="北京", daily_cap=10),
        "n2": CallNumber(number="+861000000002", line_id=line.id, area="上海", daily_cap=4, status="flagged",
                         status_note="carrier flagged"),
        "n3": CallNumber(number="+861000000003", line_id=line.id, daily_cap=0, status="suspended",
                         status_note="complaints"),
    }
    session.add_all(nums.values())
    session.flush()
    session.add_all([
        CallCounter(kind=COUNTER_NUMBER_DAY, key=str(nums["n1"].id), window=day_start, count=3),
        CallCounter(kind=COUNTER_NUMBER_DAY, key=str(nums["n2"].id), window=day_start, count=4),
        # yesterday's count and a rate-limit window of the same number do not count today
        CallCounter(kind=COUNTER_NUMBER_DAY, key=str(nums["n1"].id), window=day_start - dt.timedelta(days=1),
                    count=9),
        CallCounter(kind=COUNTER_NUMBER_WINDOW, key=str(nums["n1"].id), window=day_start, count=7),
    ])
    a, b = employee_by_username(session, "sales11"), employee_by_username(session, "sales21")
    during = day_start + (now - day_start) / 2
    make_call(session, line, a, during, CALL_ENDED, 10, number=nums["n1"])
    make_call(session, line, a, during, CALL_NO_ANSWER, number=nums["n1"])
    make_call(session, line, b, during, CALL_ENDED, 20, number=nums["n1"])
    make_call(session, line, a, day_start - dt.timedelta(minutes=1), CALL_ENDED, 5, number=nums["n1"])
    session.commit()

    rows = {r.number: r for r in reports.by_number(session, now, line_id=line.id)}
    assert [r.number for r in reports.by_number(session, now, line_id=line.id)] == [
        "+861000000002", "+861000000001", "+861000000003"]  # busiest first
    n1, n2, n3 = rows["+861000000001"], rows["+861000000002"], rows["+861000000003"]
    assert (n1.used_today, n1.remaining, n1.utilisation, n1.visible_today) == (3, 7, 30.0, 3)
    assert (n2.used_today, n2.remaining, n2.utilisation, n2.status, n2.note) == (
        4, 0, 100.0, "flagged", "carrier flagged")
    assert (n3.used_today, n3.utilisation) == (0, None)

    login(client, "manager1")
    body = _json(client, f"/calls/reports/numbers?line={line.id}&format=json")
    mine = {r["number"]: r for r in body["numbers"]}
    assert mine["+861000000001"]["used_today"] == 3  # the cap's count is company-wide
    assert mine["+861000000001"]["visible_today"] == 2  # sales21's call is outside manager1's team
    assert {r["number"]: r["note"] for r in body["flagged"]} == {
        "+861000000002": "carrier flagged", "+861000000003": "complaints"}
    page = client.get("/calls/reports/numbers")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="crm-number-usage"' in html and "carrier flagged" in html
    assert "30.0 %" in html


def test_demo_history_is_reported(client, session):
    """The seeded demo (no clean-up here) has calls within the last 7 days and caller-ID usage."""
    login(client, "admin")
    body = _json(client, "/calls/reports/?format=json")
    assert body["totals"]["calls"] > 0 and len(body["teams"]) >= 6
    assert session.scalar(select(CallNumber).where(CallNumber.status == "flagged")).status_note


def test_reports_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        clean_calls(session)
        line = setup_line(session)
        emps = {u: employee_by_username(session, u) for u in ("sales11", "sales12", "sales21")}
        for agent, day, hour, status, talk in CALLS:
            make_call(session, line, emps[agent], local(day, hour), status, talk)
        session.commit()
        rng = reports.date_range(session, local(DAY, 22), *RANGE)
        rows = {r.key: r for r in reports.by_agent(session, rng)}
        for username, emp in emps.items():
            assert figures(rows[emp.id]) == expected([r for r in CALLS if r[0] == username and in_range(r)])
        daily = {d["day"]: d["calls"] for d in reports.daily(session, rng)}
        assert daily == {d.isoformat(): len([r for r in CALLS if r[1] == d]) for d in rng.days}
        assert reports.by_number(session, local(DAY, 12), line_id=line.id) == []
        session.remove()
