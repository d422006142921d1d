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
