"""Landing pages: the TKD rules search engines use, publishing, and the rules as form errors."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models.audit import AuditLog
from app.models.marketing import LandingPage
from app.models.metadata import DictItem, DictType
from app.services import landing, seed_landing
from app.services.errors import DomainError
from tests.conftest import login


def product_line(session, code="k12_math") -> DictItem:
    return session.scalar(select(DictItem).join(DictItem.dict_type)
                          .where(DictType.code == "product_line", DictItem.code == code))


def make_page(session, **values) -> LandingPage:
    """An unsaved page that meets every rule, with `values` changed."""
    fields = {"slug": "spring-trial", "title": "春季数学试听课", "keywords": "数学,试听课",
              "description": "春季数学试听课：名师直播，一对一学情诊断，课后练习与学习报告，立即预约。",
              "product_line_id": product_line(session).id, "published": False, "chat_enabled": True}
    return LandingPage(**{**fields, **values})


def problem(session, page, field) -> DomainError | None:
    landing.normalize(page)
    found = [p for p in landing.check_page(session, page) if p.field == field]
    return found[0] if found else None


def test_display_width_counts_cjk_as_two():
    assert landing.display_width("abc") == 3
    assert landing.display_width("数学") == 4
    assert landing.display_width("ＡＢ，") == 6  # full-width forms are wide too
    assert landing.display_width("K12 数学") == 8
    assert landing.display_width(None) == 0


def test_title_is_required_and_at_most_60_wide(session):
    assert problem(session, make_page(session, title="  "), "title").msgid == "Enter the title"
    assert problem(session, make_page(session, title="数" * 30), "title") is None  # 60 wide
    too_wide = problem(session, make_page(session, title="数" * 31), "title")
    assert too_wide is not None and too_wide.params["width"] == 62
    assert problem(session, make_page(session, title="a" * 60), "title") is None
    assert problem(session, make_page(session, title="a" * 61), "title") is not None
    assert problem(session, make_page(session, title="数" * 29 + "ab"), "title") is None  # 58 + 2


def test_keywords_count_length_duplicates_and_total_width(session):
    ten = ",".join(f"kw{i}" for i in range(10))
    assert problem(session, make_page(session, keywords=ten), "keywords") is None
    assert problem(session, make_page(session, keywords=ten + ",kw10"), "keywords").params["count"] == 11
    assert problem(session, make_page(session, keywords="a" * 20), "keywords") is None
    long_one = problem(session, make_page(session, keywords="ok," + "a" * 21), "keywords")
    assert long_one.params["count"] == 21 and long_one.params["word"] == "a" * 21
    twice = problem(session, make_page(session, keywords="Math, 数学, math"), "keywords")
    assert twice.msgid == "The keyword %(word)s is given twice"
    # 8 keywords of 6 Chinese characters and a digit: 8 × 13 + 7 commas = 111 wide
    wide = problem(session, make_page(session, keywords="，".join("数学试听课程" + str(i) for i in range(8))),
                   "keywords")
    assert wide is not None and wide.params["width"] == 111
    assert problem(session, make_page(session, keywords=None), "keywords") is None  # optional


def test_keywords_are_stored_normalised(session):
    page = make_page(session, keywords=" 数学，试听课、 K12 ,, online ")
    landing.normalize(page)
    assert page.keywords == "数学,试听课,K12,online"
    assert landing.split_keywords("a，b、c,d") == ["a", "b", "c", "d"]


def test_description_width_rules(session):
    assert problem(session, make_page(session, description="a" * 160), "description") is None
    assert problem(session, make_page(session, description="数" * 80), "description") is None
    assert problem(session, make_page(session, description="数" * 81), "description").params["width"] == 162
    # short or missing: fine for a draft, refused when publishing
    assert problem(session, make_page(session, description="数" * 19), "description") is None
    short = problem(session, make_page(session, description="数" * 19, published=True), "description")
    assert short is not None and short.params == {"width": 38, "limit": 40}
    assert problem(session, make_page(session, description=None, published=True), "description") is not None
    assert problem(session, make_page(session, description="数" * 20, published=True), "description") is None


@pytest.mark.parametrize("slug", ["Spring", "spring--trial", "-spring", "spring-", "spring_trial", "春季",
                                  "spring trial", "a" * 81, "", "sitemap", "api"])
def test_bad_slugs_are_refused(session, slug):
    assert problem(session, make_page(session, slug=slug), "slug") is not None


def test_a_slug_is_unique(session):
    seed_landing.seed_demo(session)
    taken = problem(session, make_page(session, slug="k12-math-trial"), "slug")
    assert taken.msgid == "Another landing page already has the slug %(slug)s"
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "k12-math-trial"))
    assert problem(session, page, "slug") is None  # its own slug


def test_image_url_must_be_http_or_a_local_path(session):
    for good in ("https://cdn.example.com/a.png", "/static/crm/a.png", None):
        assert problem(session, make_page(session, image_url=good), "image_url") is None
    for bad in ("javascript:alert(1)", "//evil.example/a.png", "ftp://x/a.png", "https://x/a b.png",
                "http://[::1/a.png"):
        assert problem(session, make_page(session, image_url=bad), "image_url") is not None


def test_publishing_needs_every_rule_and_a_product_line(session):
    page = make_page(session, published=False, product_line_id=None)  # the table needs it, drafts too
    landing.normalize(page)
    assert "product_line" in [p.field for p in landing.check_page(session, page)]
    page = make_page(session, published=True, description="太短", title="")
    with pytest.raises(DomainError) as refused:
        landing.prepare_save(session, page, creating=True)
    assert refused.value.field == "title"  # the first rule broken, in form order
    assert [p.field for p in landing.check_page(session, page)] == ["title", "description"]


def test_publishing_stamps_published_at_and_unpublishing_clears_it(session, traveller):
    page = make_page(session)
    landing.prepare_save(session, page, creating=True)
    session.add(page)
    session.commit()
    assert page.published_at is None
    page.published = True
    landing.prepare_save(session, page)
    session.commit()
    first = page.published_at
    assert first is not None
    traveller.shift(3600)
    page.title = "春季数学试听课（新）"
    landing.prepare_save(session, page)
    session.commit()
    assert page.published_at == first  # an edit of a published page keeps its publication time
    page.published = False
    landing.prepare_save(session, page)
    session.commit()
    assert page.published_at is None


def test_content_markup_is_rendered_escaped():
    html = landing.render_content("## 课程<b>亮点</b>\n- 名师 & 直播\n- <script>alert(1)</script>\n\n"
                                  "第一行\n第二行 <img src=x onerror=alert(1)>\n\n最后一段")
    assert "<h2>课程&lt;b&gt;亮点&lt;/b&gt;</h2>" in html
    assert "<ul><li>名师 &amp; 直播</li><li>&lt;script&gt;alert(1)&lt;/script&gt;</li></ul>" in html
    assert "<p>第一行<br>第二行 &lt;img src=x onerror=alert(1)&gt;</p>" in html
    assert "<p>最后一段</p>" in html
    assert "<script" not in html and "<img" not in html
    assert landing.render_content(None) == ""


def test_seed_is_idempotent(session):
    first = seed_landing.seed_demo(session)
    again = seed_landing.seed_demo(session)
    assert first["landing_pages"] == 2 and again["landing_pages"] == 0
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "k12-math-trial"))
    assert page.published and page.published_at is not None and page.chat_enabled
    assert page.product_line.code == "k12_math"
    assert landing.check_page(session, page) == []


# --- the console ----------------------------------------------------------------------------------------
FORM = {"slug": "summer-camp", "title": "暑期数学营", "keywords": "数学营,暑期",
        "description": "暑期数学营：名师直播小班课，每日练习与周测，帮助孩子巩固所学并提前预习新学期内容。",
        "heading": "暑期数学营", "content": "## 亮点\n- 小班", "image_url": "", "chat_enabled": "y"}


def test_the_form_shows_every_broken_rule_at_its_field(app, session, client):
    login(client, "marketing")
    line = product_line(session).id
    bad = {**FORM, "slug": "Bad Slug", "title": "数" * 31, "keywords": "a,A", "product_line": line,
           "published": "y", "description": "短"}
    page = client.post("/landingpageview/add", data=bad).get_data(as_text=True)
    assert "The title is 62 wide; at most 60" in page
    assert "The slug may hold lowercase letters" in page
    assert "is given twice" in page
    assert "A published page needs a description at least 40 wide" in page
    assert session.scalar(select(LandingPage).where(LandingPage.title == "数" * 31)) is None
    no_line = client.post("/landingpageview/add", data=FORM)
    assert no_line.status_code == 200 and "This field is required." in no_line.get_data(as_text=True)
    assert session.scalar(select(LandingPage).where(LandingPage.slug == FORM["slug"])) is None


def test_a_marketer_publishes_a_page_audited(app, session, client):
    login(client, "marketing")
    resp = client.post("/landingpageview/add",
                       data={**FORM, "product_line": product_line(session).id, "published": "y"})
    assert resp.status_code == 302
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "summer-camp"))
    assert page.published and page.published_at is not None and page.keywords == "数学营,暑期"
    log = session.scalar(select(AuditLog).where(AuditLog.target_type == "landing_page",
                                                AuditLog.target_id == str(page.id)))
    assert log.action == "create" and log.actor_name == "marketing"
    listing = client.get("/landingpageview/list/").get_data(as_text=True)
    assert 'href="/p/summer-camp"' in listing and "View public page" in listing
    show = client.get(f"/landingpageview/show/{page.id}").get_data(as_text=True)
    assert f"/landingpageview/preview/{page.id}" in show
    form = client.get(f"/landingpageview/edit/{page.id}").get_data(as_text=True)
    assert "crm/landing-admin.js" in form and "data-limits" in form
    assert client.get("/static/crm/landing-admin.js").status_code == 200


def test_a_draft_is_previewed_in_the_console_only(app, session, client):
    seed_landing.seed_demo(session)
    draft = session.scalar(select(LandingPage).where(LandingPage.slug == "adult-english-spring"))
    assert client.get("/p/adult-english-spring").status_code == 404
    login(client, "marketing")
    preview = client.get(f"/landingpageview/preview/{draft.id}")
    assert preview.status_code == 200 and "no-store" in preview.headers["Cache-Control"]
    html = preview.get_data(as_text=True)
    assert '<meta name="robots" content="noindex">' in html and "成人英语春季班" in html
    anonymous = app.test_client()
    assert anonymous.get(f"/landingpageview/preview/{draft.id}").status_code in (302, 401, 403)


def test_a_salesperson_cannot_edit_landing_pages(app, client):
    login(client, "sales11")
    assert client.get("/landingpageview/add").status_code in (302, 403)


def test_landing_pages_are_in_the_marketing_menu(app, client):
    login(client, "admin")
    with app.test_request_context("/"):
        menu = {c.name: [i.name for i in c.childs] for c in app.appbuilder.menu.get_list()}
    assert "Landing Pages" in menu.get("Marketing", [])


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_the_console_pages_speak_one_language(app, session, lang):
    from tests.test_i18n_pages import VisibleText, _foreign, _user_data

    seed_landing.seed_demo(session)
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "k12-math-trial"))
    data = _user_data(app)
    client = app.test_client()
    login(client, "marketing")
    client.get(f"/lang/{lang}")
    problems = {}
    for path in ("/landingpageview/list/", "/landingpageview/add", f"/landingpageview/show/{page.id}",
                 f"/landingpageview/edit/{page.id}", f"/landingpageview/preview/{page.id}"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        found = _foreign(VisibleText(resp.get_data(as_text=True)).texts, lang[:2], data)
        if found:
            problems[path] = found
    assert problems == {}


def test_the_api_applies_the_same_rules(app, session):
    from tests.conftest import api_token

    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'marketing')}", "Accept-Language": "en"}
    client = app.test_client()
    body = {**{k: v for k, v in FORM.items() if k not in ("chat_enabled", "image_url")},
            "product_line": product_line(session).id, "published": True, "chat_enabled": True}
    wide = client.post("/api/v1/landing_page/", json={**body, "title": "数" * 31}, headers=jwt)
    assert wide.status_code == 422 and wide.get_json()["field"] == "title"
    assert "62 wide" in wide.get_json()["message"]
    short = client.post("/api/v1/landing_page/", json={**body, "description": "短"}, headers=jwt)
    assert short.status_code == 422 and short.get_json()["field"] == "description"
    created = client.post("/api/v1/landing_page/", json={**body, "keywords": "数学营、暑期"}, headers=jwt)
    assert created.status_code == 201, created.get_json()
    pk = created.get_json()["id"]
    shown = client.get(f"/api/v1/landing_page/{pk}", headers=jwt).get_json()["result"]
    assert shown["keywords"] == "数学营,暑期" and shown["published"] and shown["published_at"]
    taken = client.post("/api/v1/landing_page/", json=body, headers=jwt)
    assert taken.status_code == 422 and taken.get_json()["field"] == "slug"
    off = client.put(f"/api/v1/landing_page/{pk}", json={"published": False}, headers=jwt)
    assert off.status_code == 200
    assert session.get(LandingPage, pk).published_at is None
    assert client.get("/p/summer-camp").status_code == 404


def test_a_page_leads_came_from_is_not_deleted(app, session):
    from app.services.leads import LeadInput, intake
    from tests.conftest import api_token

    seed_landing.seed_demo(session)
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "k12-math-trial"))
    intake(session, LeadInput(phone="13912340000", product_line_id=page.product_line_id, name="王五",
                              landing_page_id=page.id), "api")
    session.commit()
    jwt = {"Authorization": f"Bearer {api_token(app.test_client(), 'marketing')}", "Accept-Language": "en"}
    resp = app.test_client().delete(f"/api/v1/landing_page/{page.id}", headers=jwt)
    assert resp.status_code == 409 and "unpublish it instead" in resp.get_json()["message"]


def test_seed_attaches_the_demo_campaign_when_there_is_one(session, traveller):
    import datetime as dt

    from app.models.marketing import MarketingCampaign

    seed_landing.seed_demo(session)  # no campaign yet
    page = session.scalar(select(LandingPage).where(LandingPage.slug == "k12-math-trial"))
    assert page.campaign_id is None
    seo = session.scalar(select(DictItem).join(DictItem.dict_type)
                         .where(DictType.code == "marketing_channel", DictItem.code == "seo"))
    campaign = MarketingCampaign(code="k12-math-trial", name="K12 数学免费试听落地页", channel_id=seo.id,
                                 start_date=dt.date(2026, 6, 1), budget=0)
    session.add(campaign)
    session.commit()
    assert seed_landing.seed_demo(session) == {"landing_pages": 0, "landing_campaigns": 1}
    assert page.campaign_id == campaign.id


def test_form_errors_speak_chinese_by_default(app, session):
    client = app.test_client()  # Chinese, the default
    login(client, "marketing")
    bad = {**FORM, "title": "数" * 31, "product_line": product_line(session).id}
    page = client.post("/landingpageview/add", data=bad).get_data(as_text=True)
    assert "标题宽度为 62，最多 60" in page
