"""End to end: a salesperson claims from the public pool, logs a follow-up and clicks to call (the demo's
simulator call interface answers)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import list_action, login, open_menu, query

SALESPERSON = "sales13"  # K12 一组: claims from K12 公海
FOLLOW_UP = "E2E: asked about the spring trial class"


def _pool_one_opportunity(live_server) -> int:
    """Put one open K12 Maths opportunity in K12 公海 (what recycling or a give-back does), so there is
    something to claim whatever ran before on this server."""
    [(opp_id,)] = query(live_server, """
        SELECT o.id FROM opportunity o JOIN sales_pool p ON p.name = 'K12 公海'
        WHERE o.status IN ('waiting', 'pooled', 'owned') AND o.locked = :no
          AND o.product_line_id = p.product_line_id
          AND o.id NOT IN (SELECT opportunity_id FROM call_record WHERE opportunity_id IS NOT NULL)
        ORDER BY CASE o.status WHEN 'pooled' THEN 0 WHEN 'waiting' THEN 1 ELSE 2 END, o.id
        LIMIT 1""", no=False)
    query(live_server, """
        UPDATE opportunity SET status = 'pooled', owner_id = NULL,
               pool_id = (SELECT id FROM sales_pool WHERE name = 'K12 公海'),
               org_unit_id = (SELECT org_unit_id FROM sales_pool WHERE name = 'K12 公海')
        WHERE id = :i""", i=opp_id)
    return opp_id


def test_salesperson_claims_follows_up_and_calls(page, live_server):
    opp_id = _pool_one_opportunity(live_server)
    login(page, SALESPERSON, then="/workbench/")
    open_menu(page, "Sales", "Claim from")
    row = page.locator(f"input[name=rowid][value='{opp_id}']")
    expect(row).to_be_visible()
    page.shot("pool")
    list_action(page, [opp_id], "Claim")
    expect(page.locator(".alert-success, .alert-info").first).to_be_visible()
    page.shot("claimed")
    [(status, owner)] = query(live_server, "SELECT o.status, u.username FROM opportunity o "
                                           "JOIN employee e ON e.id = o.owner_id "
                                           "JOIN ab_user u ON u.id = e.user_id WHERE o.id = :i", i=opp_id)
    assert (status, owner) == ("owned", SALESPERSON)

    # The workbench lists it; open it and log a follow-up.
    open_menu(page, "Sales", "My Workbench")
    page.click(f"a[href$='/opportunityview/show/{opp_id}']")
    form = page.locator("form[action$='/opportunityview/follow_up']")
    form.locator("select[name=type]").select_option(index=1)
    form.locator("[name=content]").fill(FOLLOW_UP)
    form.locator("[name=result]").fill("interested")
    page.shot("follow-up-form")
    form.locator("button[type=submit]").click()
    expect(page.locator("td", has_text=FOLLOW_UP).first).to_be_visible()
    page.shot("follow-up-logged")

    # Click to call: the simulator places the call and the page follows its status.
    page.click("#call-button")
    state = page.locator("#call-state")
    expect(state).to_have_class(re.compile("text-info"))
    expect(state).not_to_have_text(re.compile(r"^(|Calling…)$"))
    page.shot("calling")
    calls = query(live_server, "SELECT count(*) FROM call_record WHERE opportunity_id = :i", i=opp_id)[0][0]
    assert calls == 1
