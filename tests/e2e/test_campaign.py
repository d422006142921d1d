"""End to end: a marketer sends a small campaign (to the demo's sink channel) and watches its progress."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import login, open_menu, query

CAMPAIGN = "E2E 春季试听课"
PHONES = ["13812340001", "13812340002", "13812340003"]


def test_marketer_sends_a_small_campaign_and_watches_it(page, live_server):
    login(page, "marketing", then="/smscampaignview/list/")
    open_menu(page, "SMS", "SMS Campaigns")
    page.click("a[href$='/smscampaignview/add']")
    page.fill("input[name=name]", CAMPAIGN)
    page.select_option("select[name=channel]", label="本地测试通道（sink）")
    page.select_option("select[name=audience_kind]", value="upload")  # a segment, or a list uploaded next
    page.shot("campaign-form")
    page.click("form button[type=submit]:has-text('Save')")
    row = page.locator("tr", has_text=CAMPAIGN).first  # the newest first
    expect(row).to_be_visible()
    row.locator("a[href*='/smscampaignview/show/']").first.click()
    page.click("#crm-campaign-progress")
    campaign_id = int(re.search(r"/progress/(\d+)", page.url).group(1))

    page.set_input_files("input[name=file]", files=[{"name": "phones.txt", "mimeType": "text/plain",
                                                     "buffer": "\n".join(PHONES).encode()}])
    page.click("button:has-text('Upload a phone list')")
    expect(page.locator(".alert", has_text="3 lines uploaded")).to_be_visible()
    page.shot("audience-uploaded")
    page.click("button:has-text('Launch')")
    expect(page.locator(".alert", has_text="Campaign scheduled")).to_be_visible()
    page.shot("launched")
    # The progress page polls by itself until the campaign is done.
    expect(page.locator("#crm-campaign-status")).to_have_text(re.compile("completed", re.I), timeout=90_000)
    expect(page.locator("#crm-remaining")).to_have_text("0")
    expect(page.locator("#crm-total")).to_have_text(str(len(PHONES)))
    page.shot("completed")
    # No reload by hand: the page redraws itself once the campaign is done (its job runs done, no Pause or
    # Cancel on a finished campaign).
    expect(page.locator("form button:has-text('Pause'), form button:has-text('Cancel')")).to_have_count(0)
    expect(page.locator("#crm-campaign-status")).to_have_text(re.compile("completed", re.I))
    expect(page.locator("#crm-campaign-runs")).not_to_contain_text("Queued")
    page.shot("completed-reloaded")
    sent = query(live_server, "SELECT count(*) FROM sms_message WHERE campaign_id = :c "
                              "AND status IN ('sent', 'delivered')", c=campaign_id)[0][0]
    assert sent == len(PHONES)
