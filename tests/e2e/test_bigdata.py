"""End to end: a marketer defines a tag, a salesperson puts it on a customer (it shows on the customer page
and in its timeline), and the marketer builds a segment of the tagged customers, watching its live count."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import login, open_menu, query

TAG_CODE, TAG_NAME = "e2e-hot", "E2E 高意向家长"
SEGMENT = "E2E 高意向家长客群"
SALESPERSON = "sales11"


def test_a_tag_goes_on_a_customer_and_a_segment_counts_it(page, live_server):
    # The marketer defines a manual tag (Big Data › Tags).
    login(page, "marketing", then="/tagview/list/")
    open_menu(page, "Big Data", "Tags")
    page.goto("/tagview/add")
    page.fill("input[name=code]", TAG_CODE)
    page.fill("input[name=name]", TAG_NAME)
    page.select_option("select[name=source]", value="manual")
    page.select_option("select[name=subject]", value="customer")
    page.shot("tag-form")
    page.click("form button[type=submit]:has-text('Save')")
    expect(page.locator("table", has_text=TAG_NAME)).to_be_visible()

    # The salesperson puts it on the customer of one of their opportunities (given to them as dispatch
    # would: the demo leaves the opportunities waiting).
    [(opp_id, customer_id)] = query(live_server, """
        SELECT o.id, o.customer_id FROM opportunity o WHERE o.status IN ('waiting', 'pooled')
        ORDER BY o.id DESC LIMIT 1""")
    query(live_server, """
        UPDATE opportunity SET status = 'owned', pool_id = NULL,
               owner_id = (SELECT e.id FROM employee e JOIN ab_user u ON u.id = e.user_id
                           WHERE u.username = :who),
               org_unit_id = (SELECT e.org_unit_id FROM employee e JOIN ab_user u ON u.id = e.user_id
                              WHERE u.username = :who)
        WHERE id = :i""", i=opp_id, who=SALESPERSON)
    page.context.clear_cookies()
    login(page, SALESPERSON, then=f"/customerview/show/{customer_id}")
    panel = page.locator("#crm-customer-tags")
    panel.locator("select[name=tag_id]").select_option(label=TAG_NAME)
    panel.locator("button:has-text('Add tag')").click()
    expect(page.locator(f"#crm-customer-tags li[data-tag='{TAG_CODE}']")).to_contain_text("Manual")
    # The customer page's timeline says so too, and no phone number shows in clear on the page.
    expect(page.locator("#crm-customer-timeline")).to_contain_text(TAG_NAME)
    page.shot("customer-tagged")
    assert not re.search(r"1[3-9]\d{9}", page.locator("#crm-customer-timeline").inner_text())

    # The marketer builds a segment of the customers with the tag; the count follows the form.
    page.context.clear_cookies()
    login(page, "marketing", then="/segments/add/")
    page.fill("#seg-name", SEGMENT)
    page.select_option("#seg-subject", value="customer")
    expect(page.locator("#crm-segment-count")).not_to_have_text("…")
    [tag_option] = page.locator("#seg-tags_any option", has_text=TAG_NAME).all()
    page.select_option("#seg-tags_any", value=tag_option.get_attribute("value"))
    expect(page.locator("#crm-segment-count")).to_have_text("1 customer")
    page.shot("segment-count")
    page.click("#crm-segment-form button[type=submit]")
    expect(page.locator("table", has_text=SEGMENT)).to_be_visible()
    [(criteria,)] = query(live_server, "SELECT criteria FROM segment WHERE name = :n", n=SEGMENT)
    [(tag_id,)] = query(live_server, "SELECT id FROM tag WHERE code = :c", c=TAG_CODE)
    assert f"[{tag_id}]" in criteria.replace(" ", "")
