"""The public site: /p/<slug> with its TKD and Open Graph tags, caching, the lead form, sitemap.xml,
robots.txt; no login needed, zh by default and en on request."""

from __future__ import annotations

import re
import urllib.robotparser
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from app.models.marketing import LandingPage
from app.services import capture, landing, seed_landing
from tests.conftest import login

SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


class Tags(HTMLParser):
    """The page's tags with their attributes, and the text of <title>."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def meta(self, key: str, value: str) -> str | None:
        found = [a.get("content") for t, a in self.tags if t == "meta" and a.get(key) == value]
        return found[0] if found else None

    def first(self, tag: str, **match) -> dict | None:
        for name, attrs in self.tags:
            if name == tag and all(attrs.get(k) == v for k, v in match.items()):
                return attrs
        return None


@pytest.fixture
def pages(session):
    seed_landing.seed_demo(session)
    return {p.slug: p for p in session.scalars(select(LandingPage))}


def visitor(app):
    """A browser with no session and no language chosen."""
    return app.test_client()


def test_a_published_page_carries_its_tkd_canonical_and_open_graph(app, pages):
    page = pages["k12-math-trial"]
    resp = visitor(app).get("/p/k12-math-trial")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    tags = Tags(resp.get_data(as_text=True))
    assert tags.title == page.title
    assert tags.meta("name", "keywords") == "K12数学,小学数学,初中数学,数学试听课,数学辅导"
    assert tags.meta("name", "description") == page.description
    canonical = "http://localhost/p/k12-math-trial"  # the request's host root when PUBLIC_BASE_URL is empty
    assert tags.first("link", rel="canonical")["href"] == canonical
    assert tags.meta("property", "og:title") == page.title
    assert tags.meta("property", "og:description") == page.description
    assert tags.meta("property", "og:url") == canonical
    assert tags.meta("property", "og:type") == "website"
    assert tags.meta("property", "og:locale") == "zh_CN"
    assert tags.meta("property", "og:image") is None  # no image set
    assert tags.first("html")["lang"] == "zh-CN"
    assert tags.meta("name", "robots") is None
    assert tags.first("link", rel="stylesheet")["href"] == "/static/crm/public.css"
    html = resp.get_data(as_text=True)
    assert "<h2>为什么选择我们的数学试听课</h2>" in html and "<li>名师直播互动，课堂即时答疑</li>" in html
    # its own layout: nothing of the console
    assert "navbar" not in html and "appbuilder" not in html and "jquery" not in html.lower()
    assert app.test_client().get("/static/crm/public.css").status_code == 200


def test_canonical_and_og_image_use_the_public_base_url(app, session, pages):
    app.config["PUBLIC_BASE_URL"] = "https://www.example.com/"
    page = pages["k12-math-trial"]
    page.image_url = "/static/crm/k12.png"
    session.commit()
    tags = Tags(visitor(app).get("/p/k12-math-trial").get_data(as_text=True))
    assert tags.first("link", rel="canonical")["href"] == "https://www.example.com/p/k12-math-trial"
    assert tags.meta("property", "og:url") == "https://www.example.com/p/k12-math-trial"
    assert tags.meta("property", "og:image") == "https://www.example.com/static/crm/k12.png"
    chat = tags.first("script", src="/static/crm/chat-widget.js")
    assert chat["data-crm-base"] == "https://www.example.com" and chat["data-page"] == "k12-math-trial"
    assert "defer" in chat


def test_text_from_the_database_is_escaped(app, session, pages):
    page = pages["k12-math-trial"]
    page.title = "<script>alert('t')</script>试听"
    page.description = '"><script>alert("d")</script>' + "数" * 20
    page.content = "## <script>alert('h')</script>\n<b>bold</b> & <img src=x onerror=alert(1)>"
    page.heading = None
    landing.prepare_save(session, page)
    session.commit()
    html = visitor(app).get("/p/k12-math-trial").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;试听" in html  # title, h1
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in html
    tags = Tags(html)
    assert tags.title == page.title and tags.meta("name", "description") == page.description
    assert len(re.findall(r"<script\b", html)) == 2  # ours: the form's script and the chat widget


def test_unpublished_and_unknown_pages_are_not_found(app, session, pages):
    client = visitor(app)
    for path in ("/p/adult-english-spring", "/p/no-such-page", "/p/K12-MATH-TRIAL", "/p/" + "a" * 200,
                 "/p/adult-english-spring/thanks"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        html = resp.get_data(as_text=True)
        assert "页面不存在" in html and "navbar" not in html and 'content="noindex"' in html
    pages["k12-math-trial"].published = False
    landing.prepare_save(session, pages["k12-math-trial"])
    session.commit()
    assert client.get("/p/k12-math-trial").status_code == 404


def test_pages_are_cacheable_with_etag_last_modified_and_304(app, session, pages, traveller):
    client = visitor(app)
    first = client.get("/p/k12-math-trial")
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.headers["Vary"] == "Accept-Language"  # no cookie makes it differ
    assert "Set-Cookie" not in first.headers  # nothing per visitor: shared caches may keep it
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag and modified
    again = client.get("/p/k12-math-trial", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "public, max-age=300"
    since = client.get("/p/k12-math-trial", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    # another language is another representation
    english = client.get("/p/k12-math-trial?lang=en", headers={"If-None-Match": etag})
    assert english.status_code == 200 and english.headers["ETag"] != etag
    # an edit changes it
    traveller.shift(5)
    pages["k12-math-trial"].heading = "K12 数学春季试听"
    landing.prepare_save(session, pages["k12-math-trial"])
    session.commit()
    edited = client.get("/p/k12-math-trial", headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert edited.status_code == 200 and edited.headers["ETag"] != etag
    assert "K12 数学春季试听" in edited.get_data(as_text=True)


def test_a_cached_page_never_keeps_an_old_form_token(app, session, pages, traveller):
    """The token in the page expires (capture.form_token_minutes, 120): the representation changes every
    quarter of that, so revalidating a copy fetches a fresh token."""
    client = visitor(app)
    first = client.get("/p/k12-math-trial")
    etag = first.headers["ETag"]
    traveller.shift(31 * 60)
    later = client.get("/p/k12-math-trial", headers={"If-None-Match": etag})
    assert later.status_code == 200 and later.headers["ETag"] != etag
    token = Tags(later.get_data(as_text=True)).first("input", name="form_token")["value"]
    with app.test_request_context():
        assert capture.read_token(session, token).landing_page_id == pages["k12-math-trial"].id


def test_the_lead_form_has_its_fields_honeypot_and_a_valid_token(app, session, pages):
    page = pages["k12-math-trial"]
    html = visitor(app).get("/p/k12-math-trial?utm_campaign=bd-k12").get_data(as_text=True)
    tags = Tags(html)
    form = tags.first("form", id="lead-form")
    assert form["action"] == "/api/v1/public/lead" and form["method"] == "post"
    name, phone = tags.first("input", name="name"), tags.first("input", name="phone")
    assert name["maxlength"] == "64" and "required" in name
    assert "required" in phone and phone["type"] == "tel"
    assert tags.first("textarea", name="consult_note") is not None
    honeypot = tags.first("input", name="website")
    assert honeypot["tabindex"] == "-1" and honeypot["autocomplete"] == "off"
    assert re.search(r'<div class="lp-hp" aria-hidden="true">\s*<label[^>]*>[^<]*</label>\s*'
                     r'<input id="lead-website" name="website"', html)
    css = app.test_client().get("/static/crm/public.css").get_data(as_text=True)
    assert re.search(r"\.lp-hp \{ position: absolute; left: -10000px;", css)
    assert tags.first("input", name="page")["value"] == "k12-math-trial"
    assert tags.first("input", name="utm_campaign")["value"] == "bd-k12"
    token = tags.first("input", name="form_token")["value"]
    with app.test_request_context():
        read = capture.read_token(session, token)
    assert (read.landing_page_id, read.campaign_id) == (page.id, page.campaign_id)
    assert tags.first("script", src="/static/crm/landing-form.js") is not None
    assert "fetch(" in app.test_client().get("/static/crm/landing-form.js").get_data(as_text=True)


def test_the_chat_widget_is_included_only_when_enabled(app, session, pages):
    assert "crm/chat-widget.js" in visitor(app).get("/p/k12-math-trial").get_data(as_text=True)
    pages["k12-math-trial"].chat_enabled = False
    session.commit()
    assert "crm/chat-widget.js" not in visitor(app).get("/p/k12-math-trial").get_data(as_text=True)


def test_a_refusal_without_script_shows_at_its_field_and_is_not_cached(app, pages):
    resp = visitor(app).get("/p/k12-math-trial?error=phone&message=<b>手机号格式不正确</b>")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    assert re.search(r'data-error-for="phone" role="alert">&lt;b&gt;手机号格式不正确&lt;/b&gt;</p>', html)
    assert 'content="noindex"' in html
    general = visitor(app).get("/p/k12-math-trial?error=form_token&message=expired").get_data(as_text=True)
    assert re.search(r"data-form-status[^>]*>expired</p>", general)


def test_the_thanks_page(app, pages):
    resp = visitor(app).get("/p/k12-math-trial/thanks")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "public, max-age=300"
    html = resp.get_data(as_text=True)
    assert "课程顾问会尽快与您联系" in html and 'href="/p/k12-math-trial"' in html and "noindex" in html
    english = visitor(app).get("/p/k12-math-trial/thanks?lang=en").get_data(as_text=True)
    assert "A course adviser will contact you soon" in english


def test_chinese_by_default_english_on_request(app, pages):
    zh = visitor(app).get("/p/k12-math-trial").get_data(as_text=True)
    assert "姓名" in zh and "手机号" in zh and "提交" in zh and ">English</a>" in zh
    for en in (visitor(app).get("/p/k12-math-trial?lang=en"),
               visitor(app).get("/p/k12-math-trial", headers={"Accept-Language": "en-US,en;q=0.9"})):
        html = en.get_data(as_text=True)
        tags = Tags(html)
        assert tags.first("html")["lang"] == "en" and tags.meta("property", "og:locale") == "en_US"
        assert ">Your name" in html and "Mobile phone" in html and ">Submit<" in html and "姓名" not in html
        assert "Too many attempts: please try again later." in html  # the script's messages
    not_found = visitor(app).get("/p/nothing-here?lang=en").get_data(as_text=True)
    assert "Page not found" in not_found


def test_pages_need_no_login_and_work_while_logged_in(app, pages):
    client = app.test_client()
    login(client, "sales11")
    for path in ("/p/k12-math-trial", "/p/k12-math-trial/thanks", "/sitemap.xml", "/robots.txt"):
        assert visitor(app).get(path).status_code == 200, path
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert "Set-Cookie" not in resp.headers and "Cookie" not in resp.headers.get("Vary", ""), path
    assert "navbar" not in client.get("/p/k12-math-trial").get_data(as_text=True)


def test_sitemap_lists_published_pages_with_lastmod(app, session, pages):
    app.config["PUBLIC_BASE_URL"] = "https://www.example.com"
    extra = landing_page(session, "spring-open-day", published=True)
    resp = visitor(app).get("/sitemap.xml")
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    root = ET.fromstring(resp.data)  # well-formed XML
    assert root.tag == f"{SITEMAP_NS}urlset"
    urls = {u.find(f"{SITEMAP_NS}loc").text: u.find(f"{SITEMAP_NS}lastmod").text for u in root}
    assert set(urls) == {"https://www.example.com/p/k12-math-trial", "https://www.example.com/p/spring-open-day"}
    lastmod = urls["https://www.example.com/p/spring-open-day"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", lastmod)
    assert lastmod == extra.updated_at.replace(microsecond=0).isoformat() + "+00:00"
    etag = resp.headers["ETag"]
    assert visitor(app).get("/sitemap.xml", headers={"If-None-Match": etag}).status_code == 304


def test_robots_allows_the_pages_and_not_the_console(app):
    app.config["PUBLIC_BASE_URL"] = "https://www.example.com"
    resp = visitor(app).get("/robots.txt")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    body = resp.get_data(as_text=True)
    assert "Sitemap: https://www.example.com/sitemap.xml" in body
    robots = urllib.robotparser.RobotFileParser()
    robots.parse(body.splitlines())
    for allowed in ("/p/k12-math-trial", "/static/crm/public.css"):
        assert robots.can_fetch("*", "https://www.example.com" + allowed), allowed
    for refused in ("/", "/login/", "/leadview/list/", "/api/v1/lead/", "/landingpageview/list/"):
        assert not robots.can_fetch("*", "https://www.example.com" + refused), refused


def landing_page(session, slug: str, **values) -> LandingPage:
    from tests.test_landing import make_page

    page = make_page(session, slug=slug, **values)
    landing.prepare_save(session, page, creating=True)
    session.add(page)
    session.commit()
    return page


def test_the_form_posted_without_script_lands_on_thanks_or_back_at_the_field(app, session, pages):
    """The page's form as a browser without JavaScript sends it, through the real capture endpoint."""
    from app.models.sales import Lead

    client = visitor(app)
    tags = Tags(client.get("/p/k12-math-trial").get_data(as_text=True))
    form = {t: tags.first("input", name=t)["value"] for t in ("form_token", "page", "utm_campaign")}
    form.update(name="张三", phone="13912345678", consult_note="想了解初二数学", website="")
    refused = client.post("/api/v1/public/lead", data={**form, "phone": "12"})
    assert refused.status_code == 303
    back = refused.headers["Location"]
    assert "/p/k12-math-trial?" in back and "error=phone" in back and back.endswith("#lead-form")
    page = client.get(back.split("#")[0]).get_data(as_text=True)
    assert re.search(r'data-error-for="phone" role="alert">[^<]+</p>', page)
    sent = client.post("/api/v1/public/lead", data=form)
    assert sent.status_code == 303 and sent.headers["Location"].endswith("/p/k12-math-trial/thanks")
    assert client.get(sent.headers["Location"]).status_code == 200
    lead = session.scalar(select(Lead).where(Lead.landing_page_id == pages["k12-math-trial"].id))
    assert lead is not None and lead.name == "张三"


def test_the_form_script_posts_json_as_a_logged_in_user_too(app, session, pages):
    """What landing-form.js sends (JSON, no cookie needed) — and a console user visiting the page."""
    client = app.test_client()
    login(client, "sales11")
    tags = Tags(client.get("/p/k12-math-trial").get_data(as_text=True))
    body = {"name": "李四", "phone": "13912345679", "consult_note": "", "website": "",
            "form_token": tags.first("input", name="form_token")["value"], "page": "k12-math-trial",
            "utm_campaign": ""}
    resp = client.post("/api/v1/public/lead", json=body, headers={"Accept": "application/json"})
    assert resp.status_code == 201, resp.get_json()


def test_on_postgresql_the_site_and_the_rules_hold(pg_app):
    """Real SQL on PostgreSQL: the slug check, publishing, the page, its 304 and the sitemap."""
    from app.extensions import db

    with pg_app.app_context():
        seed_landing.seed_demo(db.session)
        extra = landing_page(db.session, "pg-open-day", published=True)
        assert extra.published_at is not None
        from tests.test_landing import make_page

        dup = make_page(db.session, slug="pg-open-day")
        assert [p.field for p in landing.check_page(db.session, dup)] == ["slug"]
        db.session.rollback()
    client = pg_app.test_client()
    first = client.get("/p/pg-open-day")
    assert first.status_code == 200
    assert client.get("/p/pg-open-day", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    root = ET.fromstring(client.get("/sitemap.xml").data)
    assert {u.find(f"{SITEMAP_NS}loc").text for u in root} == {"http://localhost/p/k12-math-trial",
                                                                "http://localhost/p/pg-open-day"}
