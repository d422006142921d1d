"""The marketing report: its arithmetic on known numbers (cost per lead, cost per won, ROI; paid orders count,
refunded and pending ones do not; spend of the period's days only), the data scope (a manager sees their
team's counts and no money), the page (chart, drill-down to the leads, zh / en) and the API's refusals."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, update

from app import clock
from app.models.commerce import PAID, PENDING, REFUNDED, Order
from app.models.marketing import CampaignSpend, MarketingCampaign
from app.models.sales import OWNED, WON, Lead, Opportunity
from app.security.scope import viewer_for_user
from app.services import marketing, marketing_report, reference
from app.services.marketing_report import ReportFilters
from tests import factories as f
from tests.conftest import api_token, login

_numbers = itertools.count(1)
PERIOD = {"from": "2026-06-01", "to": "2026-06-16"}


def local(day: str, hour: int = 10) -> dt.datetime:
    return clock.to_utc(dt.datetime.fromisoformat(f"{day} {hour:02d}:00:00"))


def campaign(session, code: str, channel: str) -> MarketingCampaign:
    item = marketing.create_campaign(session, marketing.CampaignInput(
        code=code, name=f"Campaign {code}", channel_id=f.dict_item(session, reference.MARKETING_CHANNEL,
                                                                   channel).id,
        start_date=dt.date(2026, 5, 1), budget="10000"))
    session.commit()
    return item


def opportunity(session, team, c, day, *, won=False, contacted=False, orders=()):
    opp = f.OPPORTUNITY.create(session, org_unit_id=team.id, status=WON if won else OWNED,
                               campaign=c.code, campaign_id=c.id, created_at=local(day),
                               last_followup_at=local(day, 15) if contacted else None)
    for status, total in orders:
        session.add(Order(number=f"MKT-{next(_numbers)}-{opp.id}", opportunity_id=opp.id,
                          customer_id=opp.customer_id, status=status, final_total=Decimal(total),
                          list_total=Decimal(total)))
    session.commit()
    return opp


def lead(session, c, opp, day):
    return f.LEAD.create(session, customer_id=opp.customer_id, opportunity_id=opp.id, campaign=c.code,
                         campaign_id=c.id, created_at=local(day))


def spend(session, c, day: str, amount: str):
    session.add(CampaignSpend(campaign_id=c.id, day=dt.date.fromisoformat(day), amount=Decimal(amount)))
    session.commit()


def world(app, session):
    """Campaign A (search ads) and B (feed ads); team A with its manager, team B.

    From 2026-06-01 to 06-16 — A: opp1 (team A, contacted, won; orders paid 3000, refunded 1000, pending 500)
    with lead L1, opp2 (team A, contacted) with leads L2 and L4, opp3 (team B, contacted, won; paid 2000) with
    lead L3; spend 1000 on 06-01 and 06-10. B: opp5 (team A) with lead L6; spend 300 on 06-12.
    Outside the period: A's opp4 (05-20, won, paid 9999) with L5, and 700 of A's spend on 05-31.
    """
    # The demo's own marketing figures, if any, are set aside: these are the only ones.
    session.execute(delete(CampaignSpend))
    session.execute(update(Lead).values(campaign_id=None))
    session.execute(update(Opportunity).values(campaign_id=None))
    session.commit()
    a, b = campaign(session, "mkt-a", "search_ads"), campaign(session, "mkt-b", "feed_ads")
    team_a, team_b = f.org_unit(session, name="Mkt team A"), f.org_unit(session, name="Mkt team B")
    manager = f.employee(session, team_a, name="Mkt manager")
    manager_user = f.login_user(app, session, manager, "Sales Manager")
    marketer = f.employee(session, team_b, name="Mkt marketer")
    marketer_user = f.login_user(app, session, marketer, "Marketing")
    opp1 = opportunity(session, team_a, a, "2026-06-05", won=True, contacted=True,
                       orders=[(PAID, "3000.00"), (REFUNDED, "1000.00"), (PENDING, "500.00")])
    opp2 = opportunity(session, team_a, a, "2026-06-06", contacted=True)
    opp3 = opportunity(session, team_b, a, "2026-06-07", won=True, contacted=True, orders=[(PAID, "2000.00")])
    opp4 = opportunity(session, team_a, a, "2026-05-20", won=True, contacted=True, orders=[(PAID, "9999.00")])
    opp5 = opportunity(session, team_a, b, "2026-06-10")
    for opp, day in ((opp1, "2026-06-05"), (opp2, "2026-06-06"), (opp3, "2026-06-07"), (opp2, "2026-06-08"),
                     (opp4, "2026-05-20")):
        lead(session, a, opp, day)
    lead(session, b, opp5, "2026-06-10")
    for day, amount in (("2026-06-01", "1000.00"), ("2026-06-10", "1000.00"), ("2026-05-31", "700.00")):
        spend(session, a, day, amount)
    spend(session, b, "2026-06-12", "300.00")
    return SimpleNamespace(a=a, b=b, team_a=team_a, manager=manager, manager_user=manager_user,
                           marketer=marketer, marketer_user=marketer_user)


def rows_of(data: dict, key: str, field: str) -> dict:
    return {r[field]: r for r in data[key]}


def test_cost_per_lead_cost_per_won_and_roi_on_known_numbers(app, session):
    w = world(app, session)
    viewer = viewer_for_user(w.marketer_user)
    data = marketing_report.report(session, viewer, ReportFilters(dt.date(2026, 6, 1), dt.date(2026, 6, 16)))
    assert data["money_visible"] is True
    a, b = rows_of(data, "campaigns", "code")["mkt-a"], rows_of(data, "campaigns", "code")["mkt-b"]
    assert (a["leads"], a["opportunities"], a["contacted"], a["won"]) == (4, 3, 3, 2)
    assert a["revenue"] == Decimal("5000.00")  # paid only: the refunded and the pending order do not count
    assert a["spend"] == Decimal("2000.00")  # 05-31 is outside the period
    assert a["cost_per_lead"] == Decimal("500.00")
    assert a["cost_per_won"] == Decimal("1000.00")
    assert a["roi"] == Decimal("1.5000")  # (5000 - 2000) / 2000
    assert (b["leads"], b["opportunities"], b["contacted"], b["won"]) == (1, 1, 0, 0)
    assert b["cost_per_lead"] == Decimal("300.00")
    assert b["cost_per_won"] is None  # no won deal: "—"
    assert b["roi"] == Decimal("-1.0000")
    channels = rows_of(data, "channels", "channel_id")
    search = channels[w.a.channel_id]
    assert (search["campaigns"], search["leads"], search["won"]) == (1, 4, 2)
    assert search["spend"] == Decimal("2000.00")
    t = data["totals"]
    assert (t["leads"], t["opportunities"], t["contacted"], t["won"]) == (5, 4, 3, 2)
    assert (t["revenue"], t["spend"]) == (Decimal("5000.00"), Decimal("2300.00"))
    assert (t["cost_per_lead"], t["cost_per_won"], t["roi"]) == (Decimal("460.00"), Decimal("1150.00"),
                                                                  Decimal("1.1739"))


def test_no_spend_means_no_ratio_rather_than_a_division_by_zero():
    row = {"leads": 0, "won": 0, "revenue": Decimal("0.00"), "spend": Decimal("0.00")}
    derived = marketing_report.derive(row, money_visible=True)
    assert (derived["cost_per_lead"], derived["cost_per_won"], derived["roi"]) == (None, None, None)
    hidden = marketing_report.derive({**row, "spend": Decimal("5.00")}, money_visible=False)
    assert all(hidden[k] is None for k in marketing_report.MONEY)


def test_a_manager_sees_their_teams_counts_and_no_money(app, session, client):
    w = world(app, session)
    data = marketing_report.report(session, viewer_for_user(w.manager_user),
                                   ReportFilters(dt.date(2026, 6, 1), dt.date(2026, 6, 16)))
    assert data["money_visible"] is False
    a, b = rows_of(data, "campaigns", "code")["mkt-a"], rows_of(data, "campaigns", "code")["mkt-b"]
    assert (a["leads"], a["opportunities"], a["contacted"], a["won"]) == (3, 2, 2, 1)  # not team B's opp3
    assert (b["leads"], b["opportunities"]) == (1, 1)
    assert all(a[k] is None for k in marketing_report.MONEY)
    assert all(data["totals"][k] is None for k in marketing_report.MONEY)
    # The API and the page say the same.
    login(client, f"user{w.manager.id}", f.PASSWORD)
    body = client.get("/api/v1/marketing/report", query_string=PERIOD).get_json()
    api_a = rows_of(body, "campaigns", "code")["mkt-a"]
    assert (api_a["leads"], api_a["won"], api_a["spend"], api_a["roi"]) == (3, 1, None, None)
    page = client.get("/marketing/report/", query_string=PERIOD).get_data(as_text=True)
    assert 'id="crm-marketing-no-money"' in page and "Cost per lead" not in page


def test_the_api_answers_json_with_money_as_decimal_strings(app, session, client):
    w = world(app, session)
    token = api_token(client, f"user{w.marketer.id}", f.PASSWORD)
    resp = client.get("/api/v1/marketing/report", query_string={**PERIOD, "channel": w.a.channel_id},
                      headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["filters"] == {"from": "2026-06-01", "to": "2026-06-16", "channel": w.a.channel_id}
    assert [r["code"] for r in body["campaigns"]] == ["mkt-a"]
    assert body["totals"]["roi"] == "1.5000" and body["totals"]["cost_per_lead"] == "500.00"


@pytest.mark.parametrize("args, field", [
    ({"from": "2026-13-01"}, "from"), ({"to": "yesterday"}, "to"),
    ({"from": "2026-06-10", "to": "2026-06-01"}, "to"),
    ({"from": "2024-01-01", "to": "2026-06-01"}, "from"), ({"channel": "abc"}, "channel"),
    ({"channel": "99999999999"}, "channel"), ({"channel": "2147483647"}, "channel"), ({"from": ""}, "from"),
])
def test_bad_arguments_are_refused_with_400_naming_the_field(client, args, field):
    login(client, "admin")
    resp = client.get("/api/v1/marketing/report", query_string=args)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["field"] == field and body["message"]


def test_the_report_needs_its_permission(app, session, client):
    unit = f.org_unit(session)
    seller = f.salesperson(app, session, unit)
    login(client, f"user{seller.id}", f.PASSWORD)
    assert client.get("/api/v1/marketing/report").status_code in (401, 403)
    assert client.get("/marketing/report/").status_code in (302, 403)


@pytest.mark.parametrize("lang, expected, absent", [
    ("en", ["Marketing report", "Cost per won deal", "By channel"], ["营销报表"]),
    ("zh_CN", ["营销报表", "线索成本", "按渠道"], ["Marketing report", "By channel"]),
])
def test_the_page_shows_the_table_chart_and_drill_down_in_both_languages(app, session, client, lang,
                                                                        expected, absent):
    w = world(app, session)
    login(client, f"user{w.marketer.id}", f.PASSWORD)
    client.get(f"/lang/{lang}")
    page = client.get("/marketing/report/", query_string=PERIOD).get_data(as_text=True)
    for text in expected:
        assert text in page
    for text in absent:
        assert text not in page
    assert 'id="crm-mkt-chart-counts"' in page and "chart-4.6.1.umd.min.js" in page
    assert "¥2,000.00" in page and "150.0 %" in page
    # Marketers read leads (phones masked): the counts lead to the campaign's leads.
    assert "_flt_0_marketing_campaign=" in marketing_report_link(page, w.a.id)


def test_lead_counts_drill_down_to_the_lead_list_of_that_campaign_and_period(app, session, client):
    w = world(app, session)
    login(client, "admin")
    page = client.get("/marketing/report/", query_string=PERIOD).get_data(as_text=True)
    link = marketing_report_link(page, w.a.id).replace("&amp;", "&")
    assert f"_flt_0_marketing_campaign={w.a.id}" in link
    listing = client.get(link)
    assert listing.status_code == 200
    assert _rows_in_list(listing.get_data(as_text=True)) == 4  # not L5 of May, not B's


def marketing_report_link(page: str, campaign_id: int) -> str:
    import re

    row = re.search(rf'<tr data-campaign="{campaign_id}">.*?</tr>', page, re.S).group(0)
    link = re.search(r'href="([^"]+)"', row)
    return link.group(1) if link else None


def _rows_in_list(html: str) -> int:
    import re

    return len(re.findall(r'name="rowid"', html)) or len(re.findall(r'/leadview/show/\d+', html))


def test_a_bad_filter_on_the_page_shows_the_defaults_with_a_warning(client):
    login(client, "admin")
    resp = client.get("/marketing/report/", query_string={"from": "nope"})
    assert resp.status_code == 200
    assert "A filter was not understood (from)" in resp.get_data(as_text=True)


def test_pg_the_same_figures_and_an_idempotent_import_on_postgresql(pg_app):
    from app.extensions import db
    from app.services import marketing_import

    with pg_app.app_context():
        session = db.session
        w = world(pg_app, session)
        data = marketing_report.report(session, viewer_for_user(w.marketer_user),
                                       ReportFilters(dt.date(2026, 6, 1), dt.date(2026, 6, 16)))
        a = rows_of(data, "campaigns", "code")["mkt-a"]
        assert (a["leads"], a["opportunities"], a["contacted"], a["won"]) == (4, 3, 3, 2)
        assert (a["revenue"], a["spend"]) == (Decimal("5000.00"), Decimal("2000.00"))
        assert a["roi"] == Decimal("1.5000")
        manager = marketing_report.report(session, viewer_for_user(w.manager_user),
                                          ReportFilters(dt.date(2026, 6, 1), dt.date(2026, 6, 16)))
        assert rows_of(manager, "campaigns", "code")["mkt-a"]["leads"] == 3
        csv_text = "日期,推广计划,消费\n2026-06-01,mkt-a,10\n2026-06-11,mkt-a,20\n2026-06-11,mkt-a,5\n"
        first = marketing_import.import_spend(session, "a.csv", csv_text.encode("gbk"))
        session.commit()
        again = marketing_import.import_spend(session, "a.csv", csv_text.encode("gbk"))
        session.commit()
        assert (first.created, first.replaced, again.created, again.replaced) == (1, 1, 0, 2)
        after = marketing_report.report(session, viewer_for_user(w.marketer_user),
                                        ReportFilters(dt.date(2026, 6, 1), dt.date(2026, 6, 16)))
        assert rows_of(after, "campaigns", "code")["mkt-a"]["spend"] == Decimal("1035.00")  # 10 + 1000 + 25


def test_the_report_exports_as_csv_for_those_allowed_and_is_audited(app, session, client):
    from sqlalchemy import select

    from app.models.audit import AuditLog

    w = world(app, session)
    login(client, f"user{w.marketer.id}", f.PASSWORD)
    page = client.get("/marketing/report/", query_string=PERIOD).get_data(as_text=True)
    assert 'id="crm-mkt-export"' in page
    resp = client.get("/marketing/report/export.csv", query_string=PERIOD)
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0] == "code,name,channel,leads,opportunities,contacted,won,revenue,spend,cost_per_lead," \
                       "cost_per_won,roi"
    assert "mkt-a,Campaign mkt-a," in resp.get_data(as_text=True)
    assert any(line.endswith(",4,3,3,2,5000.00,2000.00,500.00,1000.00,1.5000") for line in lines)
    assert session.scalar(select(AuditLog.id).where(AuditLog.action == "export",
                                                    AuditLog.target_type == "MarketingReport")) is not None
    client.get("/logout/")
    login(client, f"user{w.manager.id}", f.PASSWORD)  # managers read the report, they do not export it
    assert 'id="crm-mkt-export"' not in client.get("/marketing/report/").get_data(as_text=True)
    assert client.get("/marketing/report/export.csv").status_code in (302, 403)
