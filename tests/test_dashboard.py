"""The manager dashboard: its figures against known rows, the data scope, the filters, the drill-down links,
the API's refusals, and the languages. (The aggregates' refresh: tests/test_dashboard_refresh.py.)"""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import pytest

from app import clock
from app.clock import utcnow
from app.models.sales import OWNED, WAITING, WON
from app.services import dashboard_refresh, reference
from tests import factories as f
from tests.conftest import api_token, login


def local(day: str, hour: int = 9, minute: int = 0) -> dt.datetime:
    """A business-zone wall time as stored (naive UTC)."""
    return clock.to_utc(dt.datetime.fromisoformat(f"{day} {hour:02d}:{minute:02d}:00"))


def opportunity(session, team, owner, created: dt.datetime, *, status=OWNED, first_contact_minutes=None,
                product_line=None, source=None, campaign="spring"):
    values = dict(org_unit_id=team.id, owner_id=owner.id if owner else None, status=status,
                  created_at=created, updated_at=created, campaign=campaign,
                  assigned_at=created + dt.timedelta(minutes=1) if owner else None)
    if product_line is not None:
        values["product_line_id"] = product_line.id
    if source is not None:
        values["source_id"] = source.id
    opp = f.OPPORTUNITY.create(session, **values)
    if first_contact_minutes is not None:
        f.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=owner.id,
                           created_at=created + dt.timedelta(minutes=first_contact_minutes))
        f.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=owner.id,
                           created_at=created + dt.timedelta(minutes=first_contact_minutes + 600))
    return opp


def world(app, session):
    """A department with two teams; team A: a manager and two salespeople, team B: one salesperson.

    In the last 30 days (to 2026-06-17): five opportunities came in — A: 30 min to first contact (won),
    2 h (owned), never contacted; B: 30 h (won), and one waiting. One more of A's is older (won, April).
    """
    source = f.reference_item(session, reference.LEAD_SOURCE)
    dept = f.org_unit(session, kind="department", name="Dash dept")
    team_a = f.org_unit(session, parent=dept, name="Dash team A")
    team_b = f.org_unit(session, parent=dept, name="Dash team B")
    manager = f.employee(session, team_a, name="Dash manager")
    f.login_user(app, session, manager, "Sales Manager")
    sp1 = f.salesperson(app, session, team_a, name="Dash seller 1")
    sp2 = f.salesperson(app, session, team_a, name="Dash seller 2")
    sp3 = f.salesperson(app, session, team_b, name="Dash seller 3")
    opps = [
        opportunity(session, team_a, sp1, local("2026-06-10"), status=WON, first_contact_minutes=30,
                    source=source),
        opportunity(session, team_a, sp1, local("2026-06-11"), first_contact_minutes=120, source=source),
        opportunity(session, team_a, sp2, local("2026-06-12"), source=source),
        opportunity(session, team_b, sp3, local("2026-06-12", 8), status=WON, first_contact_minutes=1800,
                    source=source),
        opportunity(session, team_b, None, local("2026-06-16"), status=WAITING, source=source),
        opportunity(session, team_a, sp1, local("2026-04-01"), status=WON, first_contact_minutes=10),
    ]
    dashboard_refresh.refresh(session, utcnow())
    return SimpleNamespace(dept=dept, team_a=team_a, team_b=team_b, manager=manager, sp1=sp1, sp2=sp2,
                           sp3=sp3, opps=opps, source=source)


def summary(client, **args):
    resp = client.get("/api/v1/dashboard/summary", query_string=args)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_the_figures_match_the_rows_behind_them(app, client, session):
    w = world(app, session)
    login(client, "admin")
    data = summary(client, org_unit=w.dept.id)
    assert list(data)[:3] == ["funnel", "ranking", "pools"]
    stages = {s["stage"]: (s["count"], s["rate"]) for s in data["funnel"]["stages"]}
    assert stages == {"acquire": (5, None), "retain": (3, 0.6), "convert": (2, 0.6667)}
    assert data["funnel"]["overall_conversion"] == 0.4
    stl = data["speed_to_lead"]
    figures = (stl["leads"], stl["assigned"], stl["contacted"], stl["contacted_24h"], stl["won"])
    assert figures == (5, 4, 3, 2, 2)
    # First contacts after 30, 120 and 1800 minutes: the median lies in the 120–240 bucket (interpolated).
    assert stl["median_minutes"] == 180.0
    weeks = {w_["week"]: (w_["leads"], w_["won"]) for w_ in data["funnel"]["trend"]}
    assert weeks == {"2026-06-08": (4, 2), "2026-06-15": (1, 0)}

    people = {p["name"]: p for p in data["ranking"]["people"]}
    assert set(people) == {"Dash seller 1", "Dash seller 2", "Dash seller 3"}
    one = people["Dash seller 1"]
    assert (one["leads"], one["contacts"], one["follow_ups"], one["won"]) == (2, 2, 4, 1)
    assert one["conversion"] == 0.5
    assert 30 <= one["median_first_contact_minutes"] < 240
    teams = {t["name"]: (t["leads"], t["won"]) for t in data["ranking"]["teams"]}
    assert teams == {"Dash team A": (3, 1), "Dash team B": (2, 1)}
    assert data["pools"]["waiting"] == 1
    assert data["as_of"].startswith("2026-06-17T10:00")
    assert data["filters"]["start"] == "2026-05-19" and data["filters"]["end"] == "2026-06-17"

    # The older period holds the April opportunity only.
    april = summary(client, org_unit=w.dept.id, **{"from": "2026-04-01", "to": "2026-04-30"})
    assert april["speed_to_lead"]["leads"] == 1 and april["speed_to_lead"]["won"] == 1


def test_filters_narrow_the_figures(app, client, session):
    w = world(app, session)
    login(client, "admin")

    def leads(**args):
        return summary(client, **args)["speed_to_lead"]["leads"]

    assert leads(org_unit=w.team_b.id) == 2
    assert leads(org_unit=w.dept.id, source=w.source.id) == 5
    line = w.opps[0].product_line_id
    assert leads(org_unit=w.dept.id, product_line=line) == 5
    assert leads(org_unit=w.dept.id, product_line=line + 100000) == 0
    assert leads(org_unit=w.dept.id, campaign="spring") == 5
    assert leads(org_unit=w.dept.id, campaign="autumn") == 0
    assert leads(org_unit=w.dept.id, **{"from": "2026-06-12", "to": "2026-06-12"}) == 2


def test_a_manager_sees_only_their_team_and_a_salesperson_not_the_summary(app, client, session):
    w = world(app, session)
    login(client, f"user{w.manager.id}", f.PASSWORD)
    data = summary(client)
    assert data["speed_to_lead"]["leads"] == 3  # team A's three; B's are not theirs
    assert {p["name"] for p in data["ranking"]["people"]} == {"Dash seller 1", "Dash seller 2"}
    assert {t["name"] for t in data["ranking"]["teams"]} == {"Dash team A"}
    assert data["sms"] is None  # managers do not read the SMS reports
    # Asking for the other team answers nothing of it.
    assert summary(client, org_unit=w.team_b.id)["speed_to_lead"]["leads"] == 0

    seller = f.login_user(app, session, f.employee(session, w.team_a), "Salesperson")
    other = app.test_client()
    other.get("/lang/en")
    token = api_token(other, seller.username, f.PASSWORD)
    resp = other.get("/api/v1/dashboard/summary", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    login(other, seller.username, f.PASSWORD)
    assert other.get("/dashboard/").status_code in (302, 403)


def test_the_api_takes_a_jwt_and_refuses_bad_filters_naming_the_field(app, client, session):
    token = api_token(client, "director")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/dashboard/summary", headers=headers).status_code == 200
    for args, field, status in (({"from": "yesterday"}, "from", 400), ({"to": "2026-13-01"}, "to", 400),
                                ({"org_unit": "x"}, "org_unit", 400), ({"source": "0"}, "source", 400),
                                ({"product_line": "99999999999"}, "product_line", 400),
                                ({"campaign": "c" * 101}, "campaign", 400),
                                ({"from": "2026-06-10", "to": "2026-06-01"}, "to", 422),
                                ({"from": "2024-01-01", "to": "2026-01-01"}, "from", 422)):
        resp = client.get("/api/v1/dashboard/summary", query_string=args, headers=headers)
        assert resp.status_code == status, (args, resp.get_json())
        assert resp.get_json()["field"] == field, args
    assert client.get("/api/v1/dashboard/summary").status_code == 401


def _list_ids(client, url: str) -> set[int]:
    resp = client.get(url + "&psize_OpportunityView=100")
    assert resp.status_code == 200, url
    return {int(pk) for pk in re.findall(r'href="/opportunityview/show/(\d+)"', resp.text)}


def test_every_figure_links_to_the_list_showing_the_same_count(app, client, session):
    w = world(app, session)
    login(client, f"user{w.manager.id}", f.PASSWORD)
    html = client.get(f"/dashboard/?org_unit={w.team_a.id}").text
    data = summary(client, org_unit=w.team_a.id)

    def link(element_id):
        match = re.search(rf'<h3 id="{element_id}"><a href="([^"]+)">([^<]+)</a>', html)
        assert match, element_id
        return match.group(1).replace("&amp;", "&"), match.group(2)

    for element, figure in (("crm-dash-leads-in", data["speed_to_lead"]["leads"]),
                            ("crm-dash-won", data["speed_to_lead"]["won"]),
                            ("crm-dash-assigned", data["speed_to_lead"]["assigned"])):
        url, shown = link(element)
        assert int(shown) == figure
        assert len(_list_ids(client, url)) == figure, (element, url)
    url, _ = link("crm-dash-leads-in")
    assert _list_ids(client, url) == {o.id for o in w.opps[:3]}
    # A person's row: their leads.
    row = re.search(rf'<tr data-id="{w.sp1.id}"><td>Dash seller 1</td>\s*'
                    r'<td class="text-right"><a href="([^"]+)">(\d+)', html)
    assert row and int(row.group(2)) == 2
    assert len(_list_ids(client, row.group(1).replace("&amp;", "&"))) == 2


def test_directors_and_managers_land_on_the_dashboard_salespeople_on_their_workbench(app, client, session):
    login(client, "director")
    home = client.get("/")
    assert home.status_code == 200 and 'id="crm-dashboard"' in home.text
    assert 'id="crm-employees"' in home.text  # the organisation strip stays
    seller = app.test_client()
    seller.get("/lang/en")
    login(seller, "sales11")
    page = seller.get("/").text
    assert 'id="crm-dashboard"' not in page and 'id="crm-my-figures"' in page
    admin = app.test_client()
    login(admin, "admin")
    assert 'id="crm-dashboard"' not in admin.get("/").text
    page = admin.get("/dashboard/")
    assert page.status_code == 200
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{3,6}", page.text)  # no microseconds, links included


@pytest.mark.parametrize("lang, present, absent", [
    ("en", ["Sales dashboard", "Leads and speed to lead", "Pool health", "Dispatch fairness"],
     ["销售看板", "公海健康"]),
    ("zh", ["销售看板", "公海健康", "派发公平性"], ["Sales dashboard", "Pool health", "Dispatch fairness"]),
])
def test_the_dashboard_reads_in_chinese_and_english(app, session, lang, present, absent):
    world(app, session)
    client = app.test_client()
    client.get(f"/lang/{lang}")
    login(client, "director")
    html = client.get("/dashboard/").text
    for text in present:
        assert text in html, (lang, text)
    for text in absent:
        assert text not in html, (lang, text)


def test_the_workbench_shows_my_figures_beside_the_team_median(app, session):
    w = world(app, session)
    client = app.test_client()
    client.get("/lang/en")
    login(client, f"user{w.sp1.id}", f.PASSWORD)
    html = client.get("/workbench/").text
    block = html[html.index('id="crm-my-figures"'):]
    mine = dict(re.findall(r'data-figure="(\w+)" data-mine="([^"]*)"', block))
    team = dict(re.findall(r'data-figure="(\w+)" data-mine="[^"]*" data-team="([^"]*)"', block))
    assert mine["leads"] == "2" and mine["won"] == "1" and mine["follow_ups"] == "4"
    # Team A: seller 1 (2 leads), seller 2 (1 lead) → median 1.5.
    assert team["leads"] == "1.5"
