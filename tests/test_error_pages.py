"""Refusals are pages of the console (its layout, its language, a way back), JSON under /api/; every person
sees their own profile; the language menu offers both languages whichever is in use."""

from __future__ import annotations

import pytest

from tests.conftest import login

HUMAN_USERS = ("director", "manager1", "sales11", "qa1", "backoffice1", "marketing")


@pytest.mark.parametrize("username", HUMAN_USERS)
def test_every_person_opens_their_own_profile_from_the_user_menu(client, username):
    login(client, username)
    home = client.get("/").get_data(as_text=True)
    assert 'href="/users/userinfo/"' in home  # "Profile" in the user menu …
    resp = client.get("/users/userinfo/")
    assert resp.status_code == 200  # … opens, and shows this user
    assert username in resp.get_data(as_text=True)
    assert client.get("/resetmypassword/form").status_code == 200  # and may change their own password
    assert client.get("/users/list/").status_code == 403  # the user administration stays the admin's


def test_a_refused_page_is_a_page_of_the_console_with_a_way_back(client):
    login(client, "manager1")
    resp = client.get("/dispatch/", headers={"Referer": "http://localhost/workbench/"})
    assert resp.status_code == 403 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert 'id="crm-error"' in page and 'data-status="403"' in page
    assert 'class="navbar' in page and "/users/userinfo/" in page  # the console's layout, menus included
    assert "Access denied" in page and "Forbidden" not in page
    assert 'id="crm-error-back" href="http://localhost/workbench/"' in page
    # no usable referrer (typed, or from another site): back leads home
    page = client.get("/dispatch/", headers={"Referer": "https://elsewhere.example/x"}).get_data(as_text=True)
    assert 'id="crm-error-back" href="/"' in page


def test_a_missing_page_or_record_is_a_page_too(client):
    login(client, "admin")
    for url in ("/no-such-page/", "/opportunityview/show/987654321"):
        resp = client.get(url)
        assert resp.status_code == 404, url
        page = resp.get_data(as_text=True)
        assert 'data-status="404"' in page and 'class="navbar' in page and 'id="crm-error-home"' in page
    client.get("/logout/")
    resp = client.get("/no-such-page/")  # signed out too
    assert resp.status_code == 404 and 'data-status="404"' in resp.get_data(as_text=True)


def test_refusals_speak_the_users_language(app):
    client = app.test_client()  # no language chosen: the default, Chinese
    login(client, "manager1")
    page = client.get("/dispatch/").get_data(as_text=True)
    assert 'data-status="403"' in page and "无权访问" in page and "返回" in page


def test_refusals_under_the_api_stay_json(client):
    login(client, "manager1")
    resp = client.get("/api/v1/no_such_resource/")
    assert resp.status_code == 404 and resp.is_json and resp.get_json()["message"]
    resp = client.get("/api/v1/dispatch/simulate")
    assert resp.status_code == 403 and resp.is_json


def _language_links(page: str) -> set[str]:
    menu = page.split('id="crm-language-menu"', 1)[1].split("</ul>", 1)[0]
    return {lang for lang in ("zh_CN", "en") if f'href="/lang/{lang}"' in menu}


@pytest.mark.parametrize("headers", [{}, {"Accept-Language": "en-US,en;q=0.9"},
                                     {"Accept-Language": "zh-CN,zh;q=0.9"}])
def test_the_language_menu_offers_both_languages_before_any_choice(app, headers):
    client = app.test_client()
    page = client.get("/login/", headers=headers).get_data(as_text=True)
    assert _language_links(page) == {"zh_CN", "en"}
    login(client, "sales11")
    assert _language_links(client.get("/", headers=headers).get_data(as_text=True)) == {"zh_CN", "en"}


def test_choosing_a_language_switches_and_marks_it(app):
    client = app.test_client()
    login(client, "sales11")
    for lang, word in (("en", "Logout"), ("zh_CN", "退出"), ("en", "Logout")):
        resp = client.get(f"/lang/{lang}", follow_redirects=True)
        page = resp.get_data(as_text=True)
        assert word in page and _language_links(page) == {"zh_CN", "en"}
        menu = page.split('id="crm-language-menu"', 1)[1].split("</ul>", 1)[0]
        assert f'class="active">\n            <a tabindex="-1" href="/lang/{lang}"' in menu


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_a_form_post_without_its_csrf_token_is_refused_on_a_page_of_the_console(client):
    """The CSRF check runs before FAB loads the user: the 400 page is still drawn with the console's layout
    (it once fell back to the bare exception, logging a traceback)."""
    import re

    from app.services.seed import DEMO_PASSWORD

    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    assert client.post("/login/", data={"username": "director", "password": DEMO_PASSWORD,
                                        "csrf_token": token}).status_code == 302
    resp = client.post("/scoring/retrain", data={})
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert 'id="crm-error"' in page and 'data-status="400"' in page and 'class="navbar' in page
