"""End to end: the lead form of a landing page in a real browser — with its script (the refused field's
message next to the field, then the thanks in place) and without script (the plain post's round trip
through the capture endpoint: back to the field, then the thanks page)."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS, query

SLUG = "e2e-landing-form"


def _page(live_server) -> str:
    """A published page of this test's own (no chat widget: the form alone)."""
    if not query(live_server, "SELECT id FROM landing_page WHERE slug = :s", s=SLUG):
        query(live_server, """
            INSERT INTO landing_page (slug, title, heading, description, content, product_line_id,
                                      chat_enabled, published, published_at, created_at, updated_at)
            SELECT :s, 'K12数学免费试听课', 'K12 数学免费试听课', '免费试听，顾问24小时内联系您。',
                   :content, i.id, :no, :yes, CURRENT_TIMESTAMP,
                   CURRENT_TIMESTAMP, CURRENT_TIMESTAMP
            FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id
            WHERE t.code = 'product_line' AND i.code = 'k12_math'""", s=SLUG, yes=True, no=False,
            content="## 课程亮点\n- 名师直播")
    return SLUG


def _phone() -> str:
    return f"137{int(time.time() * 1000) % 10**8:08d}"  # a new customer on every run


def test_the_form_script_shows_the_refused_field_then_thanks(page, live_server):
    slug = _page(live_server)
    page.goto(f"/p/{slug}?utm_campaign=e2e-utm")
    expect(page.locator("#lead-form")).to_be_visible()
    expect(page.locator("#lead-website")).not_to_be_in_viewport()  # the honeypot: out of sight
    expect(page.locator("input[name=utm_campaign]")).to_have_value("e2e-utm")
    expect(page.locator("label[for=lead-name]")).to_contain_text("Your name")  # the browser speaks English
    page.fill("#lead-name", "赵小明")
    page.fill("#lead-phone", "12345")
    page.click("#lead-form button[type=submit]")
    expect(page.locator("[data-error-for=phone]")).not_to_be_empty()
    expect(page.locator("#lead-phone")).to_have_attribute("aria-invalid", "true")
    page.shot("phone-refused")
    phone = _phone()
    page.fill("#lead-phone", phone)
    page.click("#lead-form button[type=submit]")
    expect(page.locator(".lp-form-done")).to_contain_text("A course adviser will contact you soon")
    page.shot("sent")
    rows = query(live_server, "SELECT l.name FROM lead l JOIN landing_page p ON p.id = l.landing_page_id "
                              "WHERE l.phone = :p AND p.slug = :s", p=f"+86{phone}", s=slug)
    assert [name for (name,) in rows] == ["赵小明"]


def test_the_form_works_without_script(browser, live_server):
    slug = _page(live_server)
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    try:
        tab.goto(f"/p/{slug}")
        tab.fill("#lead-name", "钱小红")
        tab.fill("#lead-phone", "12345")
        tab.click("#lead-form button[type=submit]")
        tab.wait_for_url(lambda url: "error=phone" in url)
        expect(tab.locator("[data-error-for=phone]")).not_to_be_empty()
        phone = _phone()
        tab.fill("#lead-name", "钱小红")
        tab.fill("#lead-phone", phone)
        tab.click("#lead-form button[type=submit]")
        tab.wait_for_url(lambda url: url.endswith(f"/p/{slug}/thanks"))
        expect(tab.locator("#thanks")).to_contain_text("课程顾问会尽快与您联系")
        assert query(live_server, "SELECT id FROM lead WHERE phone = :p", p=f"+86{phone}")
    finally:
        context.close()
