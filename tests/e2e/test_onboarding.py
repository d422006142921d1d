"""End to end: an administrator onboards a person with the one onboarding form (employee, login and roles
together); the new salesperson signs in at once."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import login, logout, open_menu, query

NAME = "E2E 新同事"
USERNAME = "e2e.newhire"
PASSWORD = "Welcome-Pass-2026"


def test_administrator_onboards_a_person_who_then_signs_in(page, live_server):
    login(page, "admin", then="/employeeview/list/")
    open_menu(page, "Organisation", "Onboard a person")
    page.fill("input[name=employee_no]", "E2E001")
    page.fill("input[name=name]", NAME)
    page.fill("input[name=phone]", "13712345678")
    page.fill("input[name=email]", "e2e.newhire@example.com")
    page.select_option("select[name=org_unit]", label="K12 二组")
    page.fill("input[name=position]", "Sales")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.select_option("select[name=roles]", value=["Salesperson"])
    page.shot("onboarding-form")
    page.locator("form button[type=submit], form input[type=submit]").last.click()
    expect(page.locator(".alert", has_text="is onboarded")).to_be_visible()
    page.shot("onboarded")
    [(hr_status, unit, role)] = query(live_server, """
        SELECT e.hr_status, o.name, r.name FROM employee e JOIN org_unit o ON o.id = e.org_unit_id
        JOIN ab_user u ON u.id = e.user_id JOIN ab_user_role ur ON ur.user_id = u.id
        JOIN ab_role r ON r.id = ur.role_id WHERE u.username = :u""", u=USERNAME)
    assert (hr_status, unit, role) == ("active", "K12 二组", "Salesperson")
    logout(page)

    login(page, USERNAME, PASSWORD, then="/workbench/")
    expect(page.locator("body")).to_contain_text(NAME)  # the workbench greets them by name
    assert "/workbench" in page.url
    page.shot("new-person-signed-in")
