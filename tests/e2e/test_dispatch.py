"""End to end: a sales director adds a dispatch rule, previews it with a dry run and dispatches."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import login, open_menu, query

FINISHED = re.compile("finished", re.I)
RULE = "E2E K12 Maths → K12 一组"


def _waiting(live_server) -> int:
    return query(live_server, "SELECT count(*) FROM opportunity WHERE status = 'waiting'")[0][0]


def test_director_sets_a_rule_dry_runs_and_dispatches(page, live_server):
    login(page, "director", then="/dispatch/")
    open_menu(page, "Dispatch", "Dispatch Rules")
    page.click("a[href$='/dispatchruleview/add']")
    page.fill("input[name=name]", RULE)
    page.fill("input[name=priority]", "5")
    page.check("input[name=enabled]")
    page.select_option("select[name=match_product_line]", label="K12 Maths")
    page.select_option("select[name=target_org_unit]", label="K12 一组")
    page.select_option("select[name=strategy]", label="Round robin")
    page.select_option("select[name=target_pool]", label="K12 公海")
    page.shot("rule-form")
    page.click("form button[type=submit]:has-text('Save')")
    expect(page.locator("td", has_text=RULE).first).to_be_visible()
    page.shot("rule-saved")

    waiting_before = _waiting(live_server)
    open_menu(page, "Dispatch", "Dispatch Console")
    page.click("a:has-text('Dry run')")
    summary = page.locator("#crm-preview-summary")
    expect(summary).to_be_visible()
    page.shot("dry-run")
    if waiting_before:
        expect(page.locator("td", has_text=RULE).first).to_be_visible()  # the new rule takes its share
    # The dry run wrote nothing.
    assert _waiting(live_server) == waiting_before

    page.click("button:has-text('Run dispatch now')")
    expect(page.locator(".alert", has_text="Dispatch started")).to_be_visible()
    page.shot("dispatch-started")
    # The console shows the run; reload it (as a user would) until the run has finished.
    job = page.locator("#crm-job")
    for _ in range(100):
        if job.count() and FINISHED.search(job.inner_text()):
            break
        page.wait_for_timeout(300)
        page.reload()
    expect(job).to_contain_text(FINISHED)
    page.shot("dispatched")
    assigned = int(re.search(r"assigned (\d+)", job.inner_text()).group(1))
    by_rule = query(live_server, "SELECT count(*) FROM assignment_log a JOIN dispatch_rule r "
                                 "ON r.id = a.dispatch_rule_id WHERE r.name = :n", n=RULE)[0][0]
    assert (assigned > 0 and by_rule > 0) or not waiting_before
