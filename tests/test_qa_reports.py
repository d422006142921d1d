"""QA reports: the score trend per day and week (inspector's final score beside the machine score) and the
scores per agent and team, against hand-built inspections; data scope, empty ranges, bad parameters."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from app.models.calls import CALL_ENDED
from app.models.qa import (
    APPEAL_REJECTED,
    APPEAL_UPHELD,
    QA_FINAL,
    QA_PENDING,
    QA_SCORED,
    QaInspection,
    QaScorecard,
)
from app.services.calls import reports as call_reports
from app.services.errors import DomainError
from app.services.qa import reports
from tests.conftest import login
from tests.factories import employee_by_username
from tests.test_calls_reports import clean_calls, local, make_call, setup_line

WED, THU, NEXT_MON = dt.date(2026, 11, 4), dt.date(2026, 11, 5), dt.date(2026, 11, 9)
# (agent, inspector, scored at (naive UTC), final score, machine score, appeal decision)
INSPECTIONS = [
    ("sales11", "qa1", local(WED, 10), 80, 70, None),
    ("sales11", "qa2", local(WED, 15), 90, 100, None),
    # 00:30 local on Thursday is still Wednesday in UTC: it belongs to Thursday
    ("sales21", "qa1", local(THU, 0, 30), 100, 90, None),
    ("sales11", "qa1", local(NEXT_MON, 11), 75, None, APPEAL_UPHELD),  # revised from 60 on appeal
    ("sales12", "qa2", local(NEXT_MON, 12), 50, 40, APPEAL_REJECTED),
    ("sales11", "qa1", local(dt.date(2026, 10, 1), 11), 10, 10, None),  # outside the range
]
RANGE = ("2026-11-02", "2026-11-15")  # two whole weeks, Monday to Sunday


@pytest.fixture
def arranged(session):
    return arrange(session)


def arrange(session):
    clean_calls(session)
    line = setup_line(session)
    card = QaScorecard(name="report card")
    session.add(card)
    session.flush()
    emps = {u: employee_by_username(session, u) for u in ("sales11", "sales12", "sales21", "qa1", "qa2")}
    for agent, inspector, scored_at, score, machine, decision in INSPECTIONS:
        call = make_call(session, line, emps[agent], scored_at - dt.timedelta(hours=3), CALL_ENDED, 60)
        session.flush()
        session.add(QaInspection(
            call_id=call.id, scorecard_id=card.id, agent_id=emps[agent].id,
            org_unit_id=emps[agent].org_unit_id, inspector_id=emps[inspector].id,
            status=QA_FINAL if decision else QA_SCORED, score=score,
            machine_score=machine, scored_at=scored_at, appealed_at=scored_at if decision else None,
            appeal_decision=decision))
    # Machine-scored but not yet scored by the inspector: not in the report.
    call = make_call(session, line, emps["sales11"], local(WED, 9), CALL_ENDED, 60)
    session.flush()
    session.add(QaInspection(call_id=call.id, scorecard_id=card.id, agent_id=emps["sales11"].id,
                             org_unit_id=emps["sales11"].org_unit_id, status=QA_PENDING, machine_score=0))
    session.commit()
    return emps


def rng(session, start=RANGE[0], end=RANGE[1]):
    return call_reports.date_range(session, local(NEXT_MON, 22), start, end)


def figures(rows) -> dict:
    scores = [r[3] for r in rows]
    machine = [r[4] for r in rows if r[4] is not None]
    return {"inspections": len(rows),
            "average_score": round(sum(scores) / len(scores), 1) if scores else None,
            "average_machine_score": round(sum(machine) / len(machine), 1) if machine else None,
            "appeals": sum(1 for r in rows if r[5]), "upheld": sum(1 for r in rows if r[5] == APPEAL_UPHELD)}


def in_range(r) -> bool:
    return dt.date(2026, 11, 1) <= r[2].date() <= dt.date(2026, 11, 15)


def local_day(r) -> dt.date:
    return (r[2] + dt.timedelta(hours=8)).date()


def picked(bucket) -> dict:
    d = bucket.as_dict()
    return {k: d[k] for k in ("inspections", "average_score", "average_machine_score", "appeals", "upheld")}


def test_daily_trend(session, arranged):
    points = reports.score_trend(session, rng(session))
    assert [p.key for p in points] == rng(session).days  # every day, gaps included
    by_day = {p.key: p for p in points}
    for day in rng(session).days:
        assert picked(by_day[day]) == figures([r for r in INSPECTIONS if local_day(r) == day]), day
    assert picked(by_day[WED]) == {"inspections": 2, "average_score": 85.0, "average_machine_score": 85.0,
                                   "appeals": 0, "upheld": 0}
    assert by_day[THU].inspections == 1  # the 00:30 local inspection is Thursday's
    assert by_day[dt.date(2026, 11, 3)].average_score is None


def test_weekly_trend_averages_from_sums(session, arranged):
    weeks = reports.score_trend(session, rng(session), group="week")
    assert [w.key for w in weeks] == [dt.date(2026, 11, 2), NEXT_MON]
    first = [r for r in INSPECTIONS if local_day(r) in (WED, THU)]
    assert picked(weeks[0]) == figures(first)
    assert weeks[0].average_score == 90.0  # (80 + 90 + 100) / 3, not the mean of the daily means (92.5)
    assert picked(weeks[1]) == figures([r for r in INSPECTIONS if local_day(r) == NEXT_MON])
    assert weeks[1].upheld == 1 and weeks[1].average_machine_score == 40.0  # None is left out


def test_filters_per_agent_and_team(session, arranged):
    sales11 = reports.score_trend(session, rng(session), group="week", agent_id=arranged["sales11"].id)
    assert [w.inspections for w in sales11] == [2, 1]
    # A department takes all its teams; a team only its own.
    department = arranged["sales11"].org_unit.parent_id
    dept = reports.totals(reports.score_trend(session, rng(session), org_unit_id=department))
    assert picked(dept) == figures([r for r in INSPECTIONS if in_range(r)])
    team_id = arranged["sales21"].org_unit_id
    team = reports.totals(reports.score_trend(session, rng(session), org_unit_id=team_id))
    assert picked(team) == figures([r for r in INSPECTIONS if r[0] == "sales21"])
    with pytest.raises(DomainError) as err:
        reports.score_trend(session, rng(session), org_unit_id=987654)
    assert err.value.status == 400 and err.value.field == "team"
    with pytest.raises(DomainError):
        reports.score_trend(session, rng(session), group="month")


def test_per_agent_and_team(session, arranged):
    agents = {r.key: r for r in reports.by_agent(session, rng(session))}
    for username in ("sales11", "sales12", "sales21"):
        want = figures([r for r in INSPECTIONS if r[0] == username and in_range(r)])
        assert picked(agents[arranged[username].id]) == want, username
    assert picked(agents[arranged["sales11"].id])["average_score"] == 81.7  # (80 + 90 + 75) / 3
    assert [r.name for r in reports.by_agent(session, rng(session))][0] == arranged["sales12"].name  # lowest
    teams = {r.name: r for r in reports.by_team(session, rng(session))}
    assert picked(teams["K12 一组"]) == figures(
        [r for r in INSPECTIONS if r[0] in ("sales11", "sales12") and in_range(r)])
    empty = rng(session, "2026-01-01", "2026-01-07")
    assert reports.by_agent(session, empty) == [] and reports.by_team(session, empty) == []
    assert all(p.inspections == 0 for p in reports.score_trend(session, empty))


def test_data_scope_and_permissions(client, session, arranged):
    url = f"/qa/reports/?start={RANGE[0]}&end={RANGE[1]}&format=json"
    login(client, "manager1")  # team scope: K12 一组 (sales11, sales12)
    body = client.get(url).get_json()
    assert {a["key"] for a in body["agents"]} == {arranged["sales11"].id, arranged["sales12"].id}
    assert body["totals"]["inspections"] == len(
        [r for r in INSPECTIONS if r[0] in ("sales11", "sales12") and in_range(r)])

    inspector = client.application.test_client()
    login(inspector, "qa2")  # QA inspectors work across the sales organisation: every inspection
    body = inspector.get(url).get_json()
    assert body["totals"] == {"key": None, "name": "", "unit": None,
                              **figures([r for r in INSPECTIONS if in_range(r)])}

    sales = client.application.test_client()
    login(sales, "sales11")
    assert sales.get(url).status_code == 403


def test_trend_page_and_bad_parameters(client, session, arranged):
    login(client, "director")
    resp = client.get(f"/qa/reports/?start={RANGE[0]}&end={RANGE[1]}&group=week")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'id="crm-qa-trend"' in html and "vendor/chart-4.6.1.umd.min.js" in html
    chart = json.loads(re.search(r'<script id="crm-qa-chart" type="application/json">(.*?)</script>',
                                 html, re.S).group(1))
    assert [(p["key"], p["average_score"], p["average_machine_score"]) for p in chart["trend"]] == [
        ("2026-11-02", 90.0, 86.7), ("2026-11-09", 62.5, 40.0)]
    body = client.get(f"/qa/reports/?start={RANGE[0]}&end={RANGE[1]}&agent={arranged['sales21'].id}"
                      "&format=json").get_json()
    assert [p["inspections"] for p in body["trend"] if p["inspections"]] == [1]
    empty = client.get("/qa/reports/?start=2026-01-01&end=2026-01-07")
    assert empty.status_code == 200
    assert "No scored inspections in this period." in empty.get_data(as_text=True)
    for query, field in [("group=month", "group"), ("agent=x", "agent"), ("team=0", "team"),
                         ("team=987654", "team"), ("start=2026-11-31", "start")]:
        resp = client.get(f"/qa/reports/?{query}&format=json")
        assert resp.status_code == 400 and resp.get_json()["field"] == field, query
        page = client.get(f"/qa/reports/?{query}")
        assert page.status_code == 400 and 'id="crm-report-error"' in page.get_data(as_text=True)


def test_trend_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        emps = arrange(session)
        weeks = reports.score_trend(session, rng(session), group="week")
        assert [picked(w) for w in weeks] == [
            figures([r for r in INSPECTIONS if local_day(r) in (WED, THU)]),
            figures([r for r in INSPECTIONS if local_day(r) == NEXT_MON])]
        agents = {r.key: r for r in reports.by_agent(session, rng(session))}
        assert picked(agents[emps["sales11"].id]) == figures(
            [r for r in INSPECTIONS if r[0] == "sales11" and in_range(r)])
        session.remove()
