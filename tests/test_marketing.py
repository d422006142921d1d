"""Marketing campaigns and their spend: the campaign rules (tracking code, dates, budget, immutable once
used), typed spend (one figure per day, replaced), the ad platform's CSV (aliases, BOM, GBK, title lines,
row errors with line numbers, re-import changes nothing, caps), the audit trail, the pages in zh and en, the
lead form's campaign dropdown, and the demo seed."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.commerce import Order
from app.models.marketing import SPEND_IMPORTED, SPEND_TYPED, CampaignSpend, MarketingCampaign
from app.models.sales import Lead, Opportunity
from app.services import marketing, marketing_import, reference, seed_marketing
from app.services.errors import DomainError
from tests import factories as f
from tests.conftest import login

TODAY = dt.date(2026, 6, 17)  # the tests' instant


def channel(session, code="search_ads"):
    return f.dict_item(session, reference.MARKETING_CHANNEL, code)


def values(session, **overrides) -> marketing.CampaignInput:
    base = dict(code="spring-2026", name="Spring search", channel_id=channel(session).id,
                start_date=dt.date(2026, 5, 1), end_date=dt.date(2026, 6, 30), budget="50000")
    return marketing.CampaignInput(**{**base, **overrides})


def create(session, **overrides) -> MarketingCampaign:
    item = marketing.create_campaign(session, values(session, **overrides))
    session.commit()
    return item


# --- campaigns ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    ({"code": "has space"}, "code"), ({"code": "a/b"}, "code"), ({"code": "x" * 101}, "code"),
    ({"code": ""}, "code"), ({"name": " "}, "name"), ({"end_date": dt.date(2026, 4, 30)}, "end_date"),
    ({"budget": "-1"}, "budget"), ({"budget": "lots"}, "budget"),
    ({"channel_id": None}, "channel"),
])
def test_a_campaign_is_refused_naming_the_field(session, overrides, field):
    with pytest.raises(DomainError) as refused:
        marketing.create_campaign(session, values(session, **overrides))
    assert refused.value.field == field
    session.rollback()


def test_a_channel_must_be_a_marketing_channel(session):
    product_line = f.reference_item(session, reference.PRODUCT_LINE)
    with pytest.raises(DomainError) as refused:
        marketing.create_campaign(session, values(session, channel_id=product_line.id))
    assert refused.value.field == "channel"


def test_tracking_codes_are_unique_whatever_the_case_and_may_be_chinese(session):
    create(session, code="2026-双十一_A")
    with pytest.raises(DomainError) as refused:
        marketing.create_campaign(session, values(session, code="2026-双十一_a"))
    assert refused.value.field == "code"


def test_the_code_may_change_until_leads_carry_it(session):
    item = create(session)
    marketing.update_campaign(session, item, code="spring-2026b")
    session.commit()
    f.LEAD.create(session, campaign="spring-2026b", campaign_id=item.id)
    with pytest.raises(DomainError) as refused:
        marketing.update_campaign(session, item, code="spring-2026c")
    assert refused.value.field == "code"
    session.rollback()
    marketing.update_campaign(session, item, name="Renamed", budget="1")  # the rest may change
    session.commit()


def test_a_new_campaign_adopts_the_leads_that_came_with_its_code(session):
    early = f.LEAD.create(session, campaign="summer-2026")
    opp = f.OPPORTUNITY.create(session, campaign="summer-2026")
    other = f.LEAD.create(session, campaign="autumn-2026")
    item = create(session, code="summer-2026")
    session.expire_all()
    assert session.get(Lead, early.id).campaign_id == item.id
    assert session.get(Opportunity, opp.id).campaign_id == item.id
    assert session.get(Lead, other.id).campaign_id is None


def test_campaign_changes_are_audited(session):
    item = create(session)
    marketing.update_campaign(session, item, budget="60000")
    session.commit()
    actions = session.execute(select(AuditLog.action, AuditLog.after).where(
        AuditLog.target_type == "marketing_campaign", AuditLog.target_id == str(item.id))
        .order_by(AuditLog.id)).all()
    assert [a for a, _ in actions] == ["create", "update"]
    assert "60000" in actions[1][1]


# --- typed spend ----------------------------------------------------------------------------------------
def test_typing_a_day_again_replaces_its_figure_and_is_audited(session):
    item = create(session)
    day = dt.date(2026, 6, 10)
    marketing.record_spend(session, item.id, day, "1,234.50", "10000", "300")
    session.commit()
    row = marketing.record_spend(session, item.id, day, "¥99.999")
    session.commit()
    rows = session.scalars(select(CampaignSpend).where(CampaignSpend.campaign_id == item.id)).all()
    assert len(rows) == 1 and rows[0].id == row.id
    assert (rows[0].amount, rows[0].impressions, rows[0].origin) == (Decimal("100.00"), None, SPEND_TYPED)
    audited = session.scalars(select(AuditLog.action).where(AuditLog.target_type == "campaign_spend")).all()
    assert audited == ["create", "update"]


@pytest.mark.parametrize("day, amount, field", [
    (dt.date(2026, 6, 18), "1", "day"),  # tomorrow
    (dt.date(2026, 4, 30), "1", "day"),  # before the campaign started
    (dt.date(2026, 6, 10), "-5", "amount"), (dt.date(2026, 6, 10), "abc", "amount"),
    (dt.date(2026, 6, 10), "", "amount"), (None, "1", "day"),
])
def test_typed_spend_is_checked(session, day, amount, field):
    item = create(session)
    with pytest.raises(DomainError) as refused:
        marketing.record_spend(session, item.id, day, amount)
    assert refused.value.field == field


def test_spend_is_typed_through_the_page(session, client):
    item = create(session)
    login(client, "admin")
    form = {"campaign": str(item.id), "day": "2026-06-11", "amount": "250", "impressions": "", "clicks": "7"}
    resp = client.post("/campaignspendview/add", data=form, follow_redirects=True)
    assert resp.status_code == 200
    assert session.scalar(select(CampaignSpend.amount).where(CampaignSpend.campaign_id == item.id)) == 250
    again = client.post("/campaignspendview/add", data={**form, "amount": "300"}, follow_redirects=True)
    assert again.status_code == 200
    session.expire_all()
    assert session.scalars(select(CampaignSpend.amount)
                           .where(CampaignSpend.campaign_id == item.id)).all() == [Decimal("300.00")]
    refused = client.post("/campaignspendview/add", data={**form, "amount": "-1"})
    assert "Must not be negative" in refused.get_data(as_text=True)


# --- the ad platform's CSV ------------------------------------------------------------------------------
def csv_bytes(text: str, encoding="utf-8") -> bytes:
    return text.encode(encoding)


ZH_REPORT = ("账户报告,2026-06-01至2026-06-16\n"  # a title line above the header
             "日期,推广计划,消费(元),展现,点击\n"
             "2026-06-01,spring-2026,\"1,000.50\",20000,400\n"
             "2026/06/02,spring-2026,500,10000,200\n"
             "2026-06-02,spring-2026,100,1000,20\n"  # the same day again (another ad group): adds up
             "2026-06-03,unknown-code,100,,\n"
             "2026-06-40,spring-2026,100,,\n"
             "2026-06-04,spring-2026,-3,,\n"
             "2026-07-01,spring-2026,100,,\n")


def test_an_import_reads_chinese_headers_sums_a_day_and_reports_bad_rows_by_line(session):
    item = create(session)
    result = marketing_import.import_spend(session, "report.csv", csv_bytes(ZH_REPORT, "utf-8-sig"))
    session.commit()
    assert (result.rows, result.days, result.created, result.replaced) == (7, 2, 2, 0)
    assert result.total == Decimal("1600.50")
    assert {e["line"]: sorted(e["errors"]) for e in result.errors} == {
        6: ["campaign"], 7: ["day"], 8: ["amount"], 9: ["day"]}
    query = select(CampaignSpend).where(CampaignSpend.campaign_id == item.id)
    rows = {r.day: r for r in session.scalars(query)}
    assert rows[dt.date(2026, 6, 1)].amount == Decimal("1000.50")
    assert (rows[dt.date(2026, 6, 2)].amount, rows[dt.date(2026, 6, 2)].clicks) == (Decimal("600.00"), 220)
    assert rows[dt.date(2026, 6, 1)].origin == SPEND_IMPORTED
    event = session.scalar(select(AuditLog).where(AuditLog.action == "spend_import"))
    assert event is not None and "report.csv" in event.summary


def test_a_reimport_replaces_the_days_and_changes_nothing(session):
    item = create(session)
    data = csv_bytes(ZH_REPORT)
    marketing_import.import_spend(session, "a.csv", data)
    session.commit()
    again = marketing_import.import_spend(session, "a.csv", data)
    session.commit()
    assert (again.created, again.replaced) == (0, 2)
    total = session.scalar(select(func.sum(CampaignSpend.amount)).where(CampaignSpend.campaign_id == item.id))
    assert Decimal(str(total)) == Decimal("1600.50")
    assert session.scalar(select(func.count()).select_from(CampaignSpend)) == 2


@pytest.mark.parametrize("header, encoding", [
    ("date,campaign,cost,impressions,clicks", "utf-8"),
    ("Date,Campaign Code,Spend,Impressions,Clicks", "utf-8-sig"),
    ("日期,活动代码,花费,展现量,点击量", "gbk"),
    ("时间,推广计划,消费（元）,展现,点击", "gb18030"),
])
def test_english_and_chinese_aliases_in_utf8_with_or_without_bom_and_gbk(session, header, encoding):
    create(session, code="春季-搜索")
    text = f"{header}\n2026-06-05,春季-搜索,88.8,100,5\n"
    result = marketing_import.import_spend(session, "x.csv", csv_bytes(text, encoding))
    assert (result.days, result.errors, result.total) == (1, [], Decimal("88.80"))


@pytest.mark.parametrize("data, message", [
    (b"", "no header row"),
    (b"name,phone\nx,1\n", "no header row"),
    (b"date,campaign,cost\n", "no data rows"),
    (b"\xff\xfe\x00d\x00a", "neither UTF-8 nor GBK"),
])
def test_unusable_files_are_refused_whole(session, data, message):
    with pytest.raises(DomainError) as refused:
        marketing_import.import_spend(session, "x.csv", data)
    assert refused.value.field == "file" and message.lower() in refused.value.message.lower()


def test_the_import_is_capped(session, monkeypatch):
    create(session)
    monkeypatch.setattr(marketing_import, "MAX_ROWS", 3)
    rows = "".join(f"2026-06-0{i},spring-2026,1\n" for i in range(1, 6))
    with pytest.raises(DomainError, match="At most 3 rows"):
        marketing_import.import_spend(session, "x.csv", csv_bytes("date,campaign,cost\n" + rows))
    with pytest.raises(DomainError, match="larger than 2 MB"):
        marketing_import.import_spend(session, "x.csv", b"date,campaign,cost\n" + b" " * (2 * 1024 * 1024))
    with pytest.raises(DomainError, match="Upload a .csv"):
        marketing_import.import_spend(session, "x.xlsx", b"date")


def test_the_import_page_shows_what_was_written_and_the_bad_lines(session, client):
    create(session)
    login(client, "admin")
    assert client.get("/campaignspendview/import").status_code == 200
    upload = {"file": (io.BytesIO(csv_bytes(ZH_REPORT)), "r.csv")}
    resp = client.post("/campaignspendview/import", data=upload,
                       content_type="multipart/form-data")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="crm-spend-errors"' in page
    assert "7 rows read: 2 campaign days written (2 new, 0 replaced)" in page
    assert "<td>6</td>" in page and "No campaign has the tracking code" in page
    empty = client.post("/campaignspendview/import", data={}, content_type="multipart/form-data")
    assert "Choose a .csv file" in empty.get_data(as_text=True)


# --- pages, permissions, scope --------------------------------------------------------------------------
def test_campaigns_are_added_through_the_form_and_refused_with_field_errors(session, client):
    login(client, "admin")
    form = {"code": "form-2026", "name": "From the form", "channel": str(channel(session, "seo").id),
            "budget": "1000", "start_date": "2026-06-01", "end_date": "2026-05-01", "active": "y"}
    refused = client.post("/campaignview/add", data=form)
    assert "Must not be before the start date" in refused.get_data(as_text=True)
    client.post("/campaignview/add", data={**form, "end_date": ""}, follow_redirects=True)
    item = session.scalar(select(MarketingCampaign).where(MarketingCampaign.code == "form-2026"))
    assert item is not None and item.end_date is None


def test_spend_figures_are_listed_only_for_viewers_who_see_everything(app, session, client):
    item = create(session)
    marketing.record_spend(session, item.id, dt.date(2026, 6, 3), "777")
    session.commit()
    manager = f.employee(session, f.org_unit(session))
    f.login_user(app, session, manager, "Sales Manager")
    login(client, f"user{manager.id}", f.PASSWORD)
    assert "777" not in client.get("/campaignspendview/list/").get_data(as_text=True)
    assert client.get("/campaignview/list/").status_code == 200  # campaigns: readable
    client.get("/logout/")
    login(client, "admin")
    assert "777" in client.get("/campaignspendview/list/").get_data(as_text=True)


@pytest.mark.parametrize("lang, texts", [
    ("en", ["Campaigns", "Campaign Spend", "Marketing Report", "Tracking code"]),
    ("zh_CN", ["营销", "营销活动", "推广花费", "营销报表", "追踪代码"]),
])
def test_the_pages_speak_both_languages(session, client, lang, texts):
    create(session)
    login(client, "admin")
    client.get(f"/lang/{lang}")
    page = client.get("/campaignview/list/").get_data(as_text=True)
    for text in texts:
        assert text in page


def test_the_lead_form_offers_the_active_campaigns_and_attributes_the_lead(session, client):
    item = create(session)
    create(session, code="ended-2025", start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 2, 1))
    login(client, "admin")
    page = client.get("/leadview/add").get_data(as_text=True)
    assert 'value="spring-2026"' in page and 'value="ended-2025"' not in page
    line = f.reference_item(session, reference.PRODUCT_LINE)
    client.post("/leadview/add", data={"phone": "13900007777", "product_line": line.code,
                                       "campaign": "spring-2026"}, follow_redirects=True)
    lead = session.scalar(select(Lead).where(Lead.phone == "+8613900007777"))
    assert lead.campaign_id == item.id and lead.opportunity.campaign_id == item.id
    show = client.get(f"/leadview/show/{lead.id}").get_data(as_text=True)
    assert "Spring search (spring-2026)" in show


# --- the demo -------------------------------------------------------------------------------------------
def test_the_demo_seed_attributes_the_demo_leads_and_adds_spend_and_revenue_once(session):
    won = session.scalar(select(Opportunity).where(Opportunity.campaign == "2026-双十一-1").limit(1))
    won.status = "won"
    session.commit()
    first = seed_marketing.seed_demo(session)  # (seed-demo may have run it already: then adds the order)
    assert first["paid_orders"] == 1
    codes = [*seed_marketing.SMALL, *seed_marketing.LANDING]
    campaigns = session.scalars(select(MarketingCampaign).where(MarketingCampaign.code.in_(codes))).all()
    assert len(campaigns) == 4  # the three of the demo leads, and the landing page's
    days = session.scalar(select(func.count()).select_from(CampaignSpend)
                          .where(CampaignSpend.campaign_id.in_([c.id for c in campaigns])))
    assert days == 4 * seed_marketing.DAYS
    again = seed_marketing.seed_demo(session)
    assert again == {"campaigns": 0, "attributed_leads": 0, "spend_days": 0, "paid_orders": 0}
    left = select(func.count()).select_from(Lead).where(Lead.campaign_id.is_(None),
                                                        Lead.campaign.like("2026-双十一-%"))
    assert session.scalar(left) == 0
    order = session.scalar(select(Order).where(Order.opportunity_id == won.id))
    assert (order.status, order.number) == ("paid", f"DEMO-WON-{won.id}")


def test_the_dashboards_campaign_filter_offers_the_campaign_codes(session, client):
    create(session)
    login(client, "admin")
    page = client.get("/dashboard/", query_string={"campaign": "spring-2026"}).get_data(as_text=True)
    assert '<option value="spring-2026" selected>spring-2026 — Spring search</option>' in page
    typed = client.get("/dashboard/", query_string={"campaign": "old-text"}).get_data(as_text=True)
    assert '<option value="old-text" selected>old-text</option>' in typed  # a code without a campaign stays


def test_lead_files_may_name_the_campaign_column_by_its_tracking_code_header():
    from app.services import lead_import

    data = "手机号,产品线,活动代码\n13900001111,k12_math,spring-2026\n".encode()
    assert [row["campaign"] for _, row in lead_import.rows("leads.csv", data)] == ["spring-2026"]


def test_editing_a_leads_tracking_code_moves_it_to_that_campaign(session, client):
    item = create(session)
    lead = f.LEAD.create(session, campaign="typo-code")
    login(client, "admin")
    client.post(f"/leadview/edit/{lead.id}", data={"name": lead.name, "campaign": "spring-2026"},
                follow_redirects=True)
    session.expire_all()
    assert session.get(Lead, lead.id).campaign_id == item.id
