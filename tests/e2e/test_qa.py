"""End to end: a salesperson appeals the score of one of their calls; QA inspects the call (details,
transcript, marks) and decides the appeal."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import login, logout, open_menu, query

REASON = "E2E: the customer asked me to call back, I did not skip the greeting"
NOTE = "E2E: listened again; the greeting is missing, the score stands"


def test_qa_inspects_a_call_and_decides_an_appeal(page, live_server):
    [(inspection, agent)] = query(live_server, """
        SELECT i.id, u.username FROM qa_inspection i JOIN employee e ON e.id = i.agent_id
        JOIN ab_user u ON u.id = e.user_id
        WHERE i.status = 'scored' AND u.username NOT IN ('sales13', 'sales65')
        ORDER BY i.id LIMIT 1""")
    show = f"a[href$='/qainspectionview/show/{inspection}']"

    # The salesperson finds the inspection of their call and appeals, once.
    login(page, agent, then="/workbench/")
    open_menu(page, "Quality Inspection", "QA Workbench")
    page.click("#qa-queues a[data-queue=my_calls]")
    page.click(show)
    page.fill("#qa-reason", REASON)
    page.shot("appeal-form")
    page.click("#qa-appeal-form button[type=submit]")
    expect(page.locator(".alert", has_text="Appeal submitted")).to_be_visible()
    expect(page.locator("#qa-appeal")).to_contain_text(REASON)
    page.shot("appealed")
    logout(page)

    # QA opens the appealed queue, inspects the call and rejects the appeal with a note.
    login(page, "qa1", then="/qainspectionview/list/")
    open_menu(page, "Quality Inspection", "QA Workbench")
    page.click("#qa-queues a[data-queue=appealed]")
    page.click(show)
    expect(page.locator("#qa-call")).to_be_visible()
    expect(page.locator("#qa-transcript")).to_be_visible()
    expect(page.locator("#qa-items")).to_be_visible()
    expect(page.locator("#qa-appeal")).to_contain_text(REASON)
    page.shot("inspection")
    form = page.locator("#qa-decide-form")
    form.locator("input[name=decision][value=rejected]").check()
    form.locator("#qa-decision-note").fill(NOTE)
    form.locator("button[type=submit]").click()
    expect(page.locator(".alert", has_text="Appeal decided")).to_be_visible()
    expect(page.locator("#qa-decision")).to_be_visible()
    page.shot("decided")
    assert query(live_server, "SELECT status, appeal_decision FROM qa_inspection WHERE id = :i",
                 i=inspection) == [("final", "rejected")]
