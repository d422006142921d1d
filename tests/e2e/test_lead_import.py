"""End to end: the back office imports a lead file with bad rows and reads the per-row errors."""

from __future__ import annotations

import csv
import io

from playwright.sync_api import expect

from tests.e2e.conftest import login, open_menu, query

HEADER = ["name", "phone", "source", "product_line", "intention_level", "region"]
ROWS = [
    ["E2E 张家长", "13711112222", "douyin", "k12_math", "A", "上海"],
    ["E2E 李家长", "12345", "douyin", "k12_math", "A", "上海"],  # line 3: not a phone number
    ["E2E 王家长", "13711113333", "wechat", "k12_english", "B", "北京"],
    ["E2E 赵家长", "13711114444", "douyin", "no_such_line", "A", "上海"],  # line 5: unknown product line
]


def _csv() -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(ROWS)
    return buffer.getvalue().encode()


def test_back_office_imports_a_file_and_reads_the_row_errors(page, live_server):
    login(page, "backoffice1", then="/leadimportview/list/")
    open_menu(page, "Leads & Customers", "Lead Imports")
    page.click("a[href$='/leadimportview/add']")
    page.set_input_files("input[name=file]", files=[{"name": "e2e-leads.csv", "mimeType": "text/csv",
                                                     "buffer": _csv()}])
    page.shot("upload")
    page.click("#crm-lead-upload button[type=submit]")
    expect(page.locator("#crm-lead-import")).to_be_visible()
    page.shot("queued")
    # The page follows the job run and reloads itself when it is done.
    expect(page.locator("#crm-lead-import")).to_have_attribute("data-status", "finished", timeout=90_000)
    expect(page.locator("#crm-import-created")).to_have_text("2")
    expect(page.locator("#crm-import-errors")).to_have_text("2")
    rows = page.locator("#crm-import-error-table tbody tr")
    expect(rows).to_have_count(2)
    page.shot("row-errors")
    assert rows.nth(0).locator(".crm-line").inner_text() == "3"
    assert "phone" in rows.nth(0).inner_text().lower()
    assert rows.nth(1).locator(".crm-line").inner_text() == "5"
    assert "product line" in rows.nth(1).inner_text().lower()
    with page.expect_download() as download:
        page.click("a:has-text('Download the errors')")
    assert download.value.suggested_filename.endswith("-errors.csv")
    assert query(live_server, "SELECT count(*) FROM lead WHERE name LIKE 'E2E %'")[0][0] == 2
