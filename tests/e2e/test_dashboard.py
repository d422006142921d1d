"""End to end: a sales manager opens the dashboard (their home page) and drills down from a figure to the
list behind it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, run_job


def test_manager_drills_down_from_the_dashboard_to_a_list(page, live_server):
    if page.request.get("/dashboard/", max_redirects=0).status == 404:
        pytest.skip("dashboard not built")
    # The scheduler refreshes the dashboard's daily aggregates every two minutes; here, once, now.
    run_job(live_server, "app.jobs.dashboard.refresh_dashboard_job", queue="low")
    login(page, "manager1")  # a manager's home page is the dashboard
    expect(page.locator("#crm-dashboard")).to_be_visible()
    expect(page.locator("#crm-as-of")).to_be_visible()
    page.shot("dashboard")

    # The team's dials over the last 30 days (the demo's call history), down to the call records behind them.
    dials = page.locator("#crm-dash-dials a")
    count = int(dials.inner_text())
    assert count > 0
    dials.click()
    page.wait_for_load_state()
    assert "/dashboard" not in page.url and page.url != live_server.url + "/"
    expect(page.locator("a[href*='/callrecordview/show/']").first).to_be_visible()  # rows of calls
    page.shot("drilled-to-calls")
    expect(page.locator("body")).to_contain_text(re.compile(rf"\b{count}\b"))  # the list's count: the same
