"""End to end: people. An administrator marks an employee resigned; that person can no longer sign in."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import list_action, login, logout, query

RESIGNING = "sales65"


def test_a_resigned_employee_cannot_log_in(page, live_server):
    [(emp_id, name)] = query(live_server, "SELECT e.id, e.name FROM employee e "
                                          "JOIN ab_user u ON u.id = e.user_id WHERE u.username = :u",
                             u=RESIGNING)
    # Still able to sign in before.
    login(page, RESIGNING)
    page.shot("signed-in-before")
    logout(page)

    login(page, "admin")
    page.goto(f"/employeeview/list/?_flt_0_name={name}")
    expect(page.locator(f"input[name=rowid][value='{emp_id}']")).to_be_visible()
    page.shot("employee-found")
    list_action(page, [emp_id], "Mark resigned")
    page.shot("marked-resigned")
    assert query(live_server, "SELECT hr_status FROM employee WHERE id = :i", i=emp_id) == [("resigned",)]
    logout(page)

    page.goto("/login/")
    page.fill("input[name=username]", RESIGNING)
    page.fill("input[name=password]", "Demo-Pass-2026")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state()
    page.shot("login-refused")
    assert "/login" in page.url
    expect(page.locator(".alert", has_text="Invalid login")).to_be_visible()
    assert page.goto("/workbench/").url.split("?")[0].endswith("/login/")
