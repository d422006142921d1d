"""Every page a person reads is in one language: the main pages of every role, rendered in zh and in en,
hold no text of the other language.

"Main pages" are found, not listed: every entry of the role's menu (walked from the rendered navbar, so new
pages are covered as they appear), the home page, and from each list the first record's show page, its
edit form and the add form. Visible text is the page's text nodes (scripts and styles left out) plus the
title, placeholder and aria-label attributes.

- In English no CJK character may show, except user data (names, org units … as stored in the database).
- In Chinese no run of two or more English words may show, except user data and a short allow-list
  (brand and proper names, units and codes).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from flask_appbuilder.models.sqla import Model
from sqlalchemy import String, Text, inspect, select

from app.extensions import db
from app.views import labels
from tests.conftest import login

ROLES = ("admin", "director", "manager1", "sales11", "qa1", "backoffice1", "marketing")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff01-\uff5e]+")
WORDS = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:[ \t]+[A-Za-z][A-Za-z'’-]*)+")
#: A lone English word in a Chinese page (e.g. "Cursor"): four letters or more, not an acronym.
WORD = re.compile(r"(?<![\w.@/-])[A-Za-z][a-z]{3,}(?![\w.@/-])")
#: English that may stand in a Chinese page: brand and proper names, units, standard codes.
ALLOWED_EN = {
    "Flask AppBuilder", "Font Awesome", "E.164", "Swagger UI", "OpenAPI", "Bearer", "Excel",
    "AccessKey ID", "AccessKey Secret", "English",
}
#: Chinese that may stand in an English page: the language menu names Chinese in Chinese.
ALLOWED_ZH = {"简体中文"}
#: Stored text that is shown translated (not user data): the declared config items' descriptions, role
#: names, and the columns holding codes (statuses, kinds, providers …: shown by their labels).
TRANSLATED_DATA = {"config_item.description", "ab_role.name"}
CODE_COLUMNS = {"status", "kind", "provider", "action", "scope", "hr_status", "value_type", "mode", "period",
                "channel", "source", "appeal_decision", "cancel_reason", "strategy", "match_recycled",
                "result"}
#: Codes that must never show as they are stored (app/views/labels.py names each).
RAW_CODE_KINDS = ("status", "provider", "action", "kind", "reason", "strategy", "data_scope")
RAW_CODES = {code for kind, table in labels.KINDS.items() if kind.endswith(RAW_CODE_KINDS)
             for code, english in table.items() if code != english}
SKIP_PATHS = ("/logout", "/lang/", "/static/", "/api/", "/swagger", "/export", "/download", "/csv",
              "/xlsx", "/reveal", "/phone", "/run_now", "/delete", "/action")
SKIP_TAGS = {"script", "style", "noscript", "template"}
#: Not language: codes (file headers, identifiers) and text marked with its own language (lang="zh").
CODE_TAGS = {"code", "kbd", "samp", "pre"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
             "wbr"}
VISIBLE_ATTRS = ("title", "placeholder", "aria-label")


class VisibleText(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            pass
        elif self._skip or tag in SKIP_TAGS | CODE_TAGS or (tag != "html" and dict(attrs).get("lang")):
            self._skip += 1
        for name, value in attrs:
            if name in VISIBLE_ATTRS and value and not self._skip:
                self.texts.append(value)

    def handle_endtag(self, tag):
        if tag not in VOID_TAGS and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(" ".join(data.split()))


def _menu_links(html: str) -> list[str]:
    """The hrefs of the navbar: its menu, and the user menu on the right (not sign-out or languages)."""
    start = html.find('<ul class="nav navbar-nav">')
    end = html.find("</div>", html.find('<ul class="nav navbar-nav navbar-right">'))
    return re.findall(r'href="(/[^"#]*)"', html[start:end]) if start >= 0 else []


def _followed(path: str) -> bool:
    return path.startswith("/") and not any(skip in path for skip in SKIP_PATHS)


def _record_links(html: str, list_path: str) -> list[str]:
    """From a list page: the first show link, the first edit link and the add link of that view."""
    base = list_path.rsplit("/list", 1)[0] if "/list" in list_path else None
    if not base:
        return []
    links = []
    for kind in ("show", "edit"):
        match = re.search(rf'href="({re.escape(base)}/{kind}/[^"?#]+)', html)
        if match:
            links.append(match.group(1))
    if f'href="{base}/add' in html:
        links.append(f"{base}/add")
    return links


def _user_data(app) -> str:
    """Every string stored in the database, one per line: text found here is user data."""
    values = []
    with app.app_context():
        for table in Model.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)
                       and f"{table.name}.{c.name}" not in TRANSLATED_DATA and c.name not in CODE_COLUMNS]
            if not columns or not inspect(db.engine).has_table(table.name):
                continue
            for row in db.session.execute(select(*columns).limit(5000)):
                values += [str(v) for v in row if v]
        db.session.remove()
    return "\n".join(values)


def _foreign(texts: list[str], lang: str, data: str) -> list[str]:
    lines = set(data.split("\n"))
    found = [text for text in texts if text in RAW_CODES and text not in lines]  # a username is no code
    for text in texts:
        if lang == "en":
            runs = [run for run in CJK.findall(text)
                    if run not in data and run not in ALLOWED_ZH and run not in "：，。（）、"]
            if runs and text not in data:
                found.append(text)
        else:
            lone = WORD.findall(text) if not CJK.search(text) else []  # a whole English node: "Cursor"
            for run in WORDS.findall(text) + lone:
                if run in ALLOWED_EN or run in data or text in data:
                    continue
                found.append(text)
                break
    return found


def _walk(client) -> dict[str, list[str]]:
    """path → its visible text, for the home page, the menu and the first records of each list."""
    home = client.get("/")
    assert home.status_code in (200, 302)
    if home.status_code == 302:
        home = client.get(home.headers["Location"])
    pages, queue, seen = {}, ["/"] + _menu_links(home.get_data(as_text=True)), set()
    while queue:
        path = queue.pop(0)
        if path in seen or not _followed(path):
            continue
        seen.add(path)
        response = client.get(path)
        if response.status_code in (301, 302, 303):
            target = urlsplit(response.headers["Location"]).path
            if target not in seen and _followed(target):
                queue.append(target)
            continue
        if response.status_code != 200 or "text/html" not in response.content_type:
            continue
        html = response.get_data(as_text=True)
        pages[path] = VisibleText(html).texts
        if len(seen) < 400:
            queue += [link for link in _record_links(html, urlsplit(path).path) if link not in seen]
    return pages


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("username", ROLES)
def test_every_main_page_speaks_one_language(app, username, lang):
    data = _user_data(app)
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get(f"/lang/{'zh_CN' if lang == 'zh' else 'en'}")
    pages = _walk(client)
    assert len(pages) >= 3, sorted(pages)
    problems = {path: _foreign(texts, lang, data) for path, texts in pages.items()}
    problems = {path: sorted(set(found)) for path, found in problems.items() if found}
    if problems:
        pytest.fail(f"{username} in {lang}: text of the other language on {len(problems)} page(s):\n"
                    + "\n".join(f"{p}: {found}" for p, found in sorted(problems.items())), pytrace=False)


def test_the_walk_covers_menu_show_and_forms(app):
    """The walk reaches the menu's pages, a show page and both forms (so the test above has teeth)."""
    client = app.test_client()
    login(client, "admin")
    client.get("/lang/en")
    pages = _walk(client)
    assert any("/employeeview/show/" in p for p in pages)
    assert any("/employeeview/edit/" in p for p in pages)
    assert "/employeeview/add" in pages and "/onboarding/form" in pages
    assert len(pages) > 40
