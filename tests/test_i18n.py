"""The UI speaks Simplified Chinese by default and English on request."""

from __future__ import annotations

from tests.conftest import login


def test_chinese_by_default_and_english_on_request(app):
    client = app.test_client()  # not the English `client` fixture
    login(client, "admin")
    zh = client.get("/employeeview/list/").get_data(as_text=True)
    assert "员工" in zh and "工号" in zh and "组织管理" in zh
    client.get("/lang/en")
    en = client.get("/employeeview/list/").get_data(as_text=True)
    assert "Employee no." in en and "Organisation" in en and "工号" not in en


def test_every_menu_entry_is_translated(app):
    with app.test_request_context("/"):
        labels = []
        for category in app.appbuilder.menu.get_list():
            labels += [str(category.label or category.name)]
            labels += [str(item.label or item.name) for item in category.childs if item.name != "-"]
    untranslated = [label for label in labels if label.isascii()]
    assert len(labels) > 20 and untranslated == [], untranslated


def test_domain_errors_speak_the_language_of_the_request(app):
    """A rule's refusal reaches the user in their language, its values filled in; outside a request
    (jobs, logs) it is English."""
    from app.services.calls.reports import MAX_DAYS
    from app.services.errors import DomainError

    err = DomainError("Choose at most %(days)s days", field="start", status=400, days=MAX_DAYS)
    assert err.message == str(err) == f"Choose at most {MAX_DAYS} days"

    client = app.test_client()  # Chinese by default
    login(client, "admin")
    too_long = {"start": "2025-01-01", "end": "2026-12-31", "format": "json"}
    zh = client.get("/calls/reports/", query_string=too_long)
    assert zh.status_code == 400
    assert zh.get_json() == {"message": f"最多选择 {MAX_DAYS} 天", "field": "start"}
    client.get("/lang/en")
    en = client.get("/calls/reports/", query_string=too_long)
    assert en.get_json() == {"message": f"Choose at most {MAX_DAYS} days", "field": "start"}
    page = client.get("/calls/reports/", query_string={"start": too_long["start"], "end": too_long["end"]})
    assert page.status_code == 400 and f"Choose at most {MAX_DAYS} days" in page.get_data(as_text=True)


def test_a_caller_that_chose_no_language_gets_its_accept_language(app):
    """An API client (or a first visit) that has chosen no language gets the best match of its
    Accept-Language; a language chosen in the session wins over it; no header: Chinese."""
    from app.services.calls.reports import MAX_DAYS

    too_long = {"start": "2025-01-01", "end": "2026-12-31", "format": "json"}
    english, chinese = f"Choose at most {MAX_DAYS} days", f"最多选择 {MAX_DAYS} 天"
    client = app.test_client()
    login(client, "admin")

    def message(**headers) -> str:
        return client.get("/calls/reports/", query_string=too_long, headers=headers).get_json()["message"]

    assert message(**{"Accept-Language": "en-US,en;q=0.8"}) == english
    assert message(**{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}) == chinese
    assert message(**{"Accept-Language": "fr"}) == chinese  # no match: the company's default
    client.get("/lang/zh_CN")
    assert message(**{"Accept-Language": "en"}) == chinese  # chosen in the session
