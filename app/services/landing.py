"""Landing pages: the rules a page must meet as search engines want it, publishing, and its content markup.

TKD (title, keywords, description) lengths are counted in display width, as Baidu and Google truncate
their results: a CJK (wide or full-width) character counts 2, any other 1. A title is at most 60 wide
(about 30 Chinese characters); keywords are at most 10, each at most 20 characters, no duplicates, 100
wide together; a description is at most 160 wide, and at least 40 once the page is published (shorter is
no description to show in a result). Every page names its product line (where its leads go). Publishing
needs every rule met, and stamps `published_at` (cleared again on unpublishing).

`check_page` finds every problem (a form shows each at its field); `prepare_save` is the one command the
admin form and any API call before a page is stored: it normalises, refuses with the first problem, and
stamps publishing. The audit of page changes is the generic change capture (app/services/audit.py).

Content is plain text with a tiny markup, rendered escaped (`render_content`): a blank line starts a new
paragraph, a line starting "## " is a heading, lines starting "- " are list items. No HTML from the
database ever reaches a visitor as markup.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from app.clock import utcnow
from app.models.marketing import LandingPage
from app.services.errors import DomainError

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SLUG_MAX = 80
#: Slugs that would read as a part of the site rather than a page, or clash with its paths.
RESERVED_SLUGS = frozenset({
    "admin", "api", "app", "console", "crm", "edit", "index", "login", "logout", "new", "p", "preview",
    "robots", "search", "sitemap", "static", "thanks", "www",
})
TITLE_MAX_WIDTH = 60
KEYWORDS_MAX = 10
KEYWORD_MAX_CHARS = 20
KEYWORDS_MAX_WIDTH = 100
DESCRIPTION_MIN_WIDTH, DESCRIPTION_MAX_WIDTH = 40, 160
HEADING_MAX = LandingPage.__table__.c.heading.type.length
CONTENT_MAX = 20_000  # characters: a landing page, not a book
IMAGE_URL_MAX = LandingPage.__table__.c.image_url.type.length
KEYWORD_SEPARATORS = re.compile(r"[,，、]")
KEYWORD_JOIN = ","


def display_width(text: str | None) -> int:
    """Width as a search result shows it: wide and full-width characters (CJK) 2, others 1."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text or "")


def split_keywords(text: str | None) -> list[str]:
    """The keywords of "a, b，c、d" (separated by , ， or 、; blanks dropped)."""
    return [part.strip() for part in KEYWORD_SEPARATORS.split(text or "") if part.strip()]


def normalize(page: LandingPage) -> None:
    """Trim the text fields (empty → None) and store keywords as "a,b,c"."""
    page.slug = (page.slug or "").strip()
    page.title = (page.title or "").strip()
    for name in ("description", "heading", "image_url"):
        value = (getattr(page, name) or "").strip()
        setattr(page, name, value or None)
    page.content = (page.content or "").strip("\n") or None
    page.keywords = KEYWORD_JOIN.join(split_keywords(page.keywords)) or None


def _check_slug(session, page: LandingPage) -> DomainError | None:
    slug = page.slug or ""
    if not slug:
        return DomainError("Enter the page address (slug)", field="slug")
    if len(slug) > SLUG_MAX:
        return DomainError("The slug has %(count)s characters; at most %(limit)s", field="slug",
                           count=len(slug), limit=SLUG_MAX)
    if not SLUG.match(slug):
        return DomainError("The slug may hold lowercase letters a–z, digits and single hyphens between "
                           "them, e.g. k12-math-trial", field="slug")
    if slug in RESERVED_SLUGS:
        return DomainError("The slug %(slug)s is reserved: choose another", field="slug", slug=slug)
    if session is not None:
        taken = select(LandingPage.id).where(func.lower(LandingPage.slug) == slug)
        if page.id is not None:
            taken = taken.where(LandingPage.id != page.id)
        if session.scalar(taken.limit(1)) is not None:
            return DomainError("Another landing page already has the slug %(slug)s", field="slug", slug=slug)
    return None


def _check_title(page: LandingPage) -> DomainError | None:
    if not page.title:
        return DomainError("Enter the title", field="title")
    width = display_width(page.title)
    if width > TITLE_MAX_WIDTH:
        return DomainError("The title is %(width)s wide; at most %(limit)s (about 30 Chinese characters): "
                           "search engines cut the rest", field="title", width=width, limit=TITLE_MAX_WIDTH)
    return None


def _check_keywords(page: LandingPage) -> DomainError | None:
    words = split_keywords(page.keywords)
    if len(words) > KEYWORDS_MAX:
        return DomainError("%(count)s keywords; at most %(limit)s", field="keywords", count=len(words),
                           limit=KEYWORDS_MAX)
    seen: set[str] = set()
    for word in words:
        if len(word) > KEYWORD_MAX_CHARS:
            return DomainError("The keyword %(word)s has %(count)s characters; at most %(limit)s",
                               field="keywords", word=word, count=len(word), limit=KEYWORD_MAX_CHARS)
        if word.casefold() in seen:
            return DomainError("The keyword %(word)s is given twice", field="keywords", word=word)
        seen.add(word.casefold())
    width = display_width(KEYWORD_JOIN.join(words))
    if width > KEYWORDS_MAX_WIDTH:
        return DomainError("The keywords are %(width)s wide together; at most %(limit)s", field="keywords",
                           width=width, limit=KEYWORDS_MAX_WIDTH)
    return None


def _check_description(page: LandingPage) -> DomainError | None:
    width = display_width(page.description)
    if width > DESCRIPTION_MAX_WIDTH:
        return DomainError("The description is %(width)s wide; at most %(limit)s: search engines cut the "
                           "rest", field="description", width=width, limit=DESCRIPTION_MAX_WIDTH)
    if page.published and width < DESCRIPTION_MIN_WIDTH:
        return DomainError("A published page needs a description at least %(limit)s wide (now %(width)s; "
                           "about 20 Chinese characters)", field="description", width=width,
                           limit=DESCRIPTION_MIN_WIDTH)
    return None


def _check_other(page: LandingPage) -> list[DomainError]:
    found = []
    if page.heading and len(page.heading) > HEADING_MAX:
        found.append(DomainError("The heading has %(count)s characters; at most %(limit)s", field="heading",
                                 count=len(page.heading), limit=HEADING_MAX))
    if page.content and len(page.content) > CONTENT_MAX:
        found.append(DomainError("The content has %(count)s characters; at most %(limit)s", field="content",
                                 count=len(page.content), limit=CONTENT_MAX))
    if page.image_url and not valid_image_url(page.image_url):
        found.append(DomainError("The image must be an http(s) address or a path on this site starting with "
                                 "/, at most %(limit)s characters", field="image_url", limit=IMAGE_URL_MAX))
    if page.product_line_id is None and getattr(page, "product_line", None) is None:
        found.append(DomainError("Choose the product line: the page's leads go to that line's sales",
                                 field="product_line"))
    return found


def valid_image_url(url: str) -> bool:
    if len(url) > IMAGE_URL_MAX or any(ch.isspace() or ch in "\"'<>" for ch in url):
        return False
    if url.startswith("/") and not url.startswith("//"):
        return True
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[bad" is no URL
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_page(session, page: LandingPage) -> list[DomainError]:
    """Every rule the page breaks, one per field at most, in form order (empty: the page may be saved)."""
    found = [_check_slug(session, page), _check_title(page), _check_keywords(page), _check_description(page)]
    return [problem for problem in found if problem is not None] + _check_other(page)


def prepare_save(session, page: LandingPage, creating: bool = False) -> None:
    """The command before a page is stored (form and API): normalise, refuse with the first rule broken
    (DomainError naming the field), and stamp publishing: `published_at` is set when the page becomes
    published and cleared when it stops being published."""
    normalize(page)
    problems = check_page(session, page)
    if problems:
        raise problems[0]
    was_published = not creating and _was_published(page)
    if page.published and (not was_published or page.published_at is None):
        page.published_at = utcnow()
    elif not page.published:
        page.published_at = None


def _was_published(page: LandingPage) -> bool:
    """Whether the stored page (before this change) was published."""
    state = sa_inspect(page)
    if not state.persistent:
        return False
    history = state.attrs.published.history
    if history.deleted:
        return bool(history.deleted[0])
    return bool(page.published) and not history.added


def published_page(session, slug: str) -> LandingPage | None:
    """The published page at /p/<slug>, or None."""
    if not slug or len(slug) > SLUG_MAX or not SLUG.match(slug):
        return None
    return session.scalar(select(LandingPage).where(LandingPage.slug == slug,
                                                    LandingPage.published.is_(True)))


def last_modified(page: LandingPage):
    """When the page as the public sees it last changed (naive UTC)."""
    stamps = [t for t in (page.updated_at, page.published_at) if t is not None]
    return max(stamps) if stamps else None


def published_pages(session, limit: int = 50_000) -> list[tuple[str, object]]:
    """(slug, last modified) of every published page, by slug: the sitemap (at most 50,000 URLs, the
    protocol's limit per file)."""
    rows = session.execute(select(LandingPage.slug, LandingPage.updated_at, LandingPage.published_at)
                           .where(LandingPage.published.is_(True)).order_by(LandingPage.slug).limit(limit))
    return [(slug, max(t for t in (updated, published) if t is not None))
            for slug, updated, published in rows]


# --- content --------------------------------------------------------------------------------------------
def render_content(text: str | None) -> Markup:
    """The content as HTML: every piece of text escaped; blank line → new paragraph, "## " → <h2>, "- " →
    list item, other lines of a paragraph joined with <br>."""
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + "<br>".join(str(escape(line)) for line in paragraph) + "</p>")
            paragraph.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>")
            items.clear()

    for raw in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("## "):
            flush()
            out.append(f"<h2>{escape(line[3:].strip())}</h2>")
        elif line.startswith("- "):
            if paragraph:
                flush()
            items.append(line[2:].strip())
        else:
            if items:
                flush()
            paragraph.append(line)
    flush()
    return Markup("\n".join(out))
