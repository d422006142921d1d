"""The public site, no login: landing pages at /p/<slug> (and their thanks page), /sitemap.xml, /robots.txt.

A plain Flask blueprint (FAB guards only its own views; no before_request hook of the app asks for a
login). Pages are server-rendered in their own light layout (no console navbar or script), in Chinese
by default and English when the visitor asks for it (`?lang=en`) or their browser prefers it, and cacheable:
`Cache-Control: public, max-age=300`, an ETag and Last-Modified, 304 on a matching conditional request.

The page embeds a signed form token (app.services.capture) that expires: the ETag and Last-Modified change
every quarter of the token's validity, so a copy revalidated from a cache never holds a token older than
that (plus max-age), and the visitor still has most of its validity to send the form.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from xml.sax.saxutils import escape as xml_escape

from flask import Blueprint, Response, current_app, render_template, request, session, url_for
from flask_babel import force_locale
from werkzeug.http import is_resource_modified

from app import clock
from app.extensions import db
from app.services import capture, landing, metadata

bp = Blueprint("public_site", __name__)

MAX_AGE = 300  # seconds a page may be reused without asking again
FORM_FIELDS = ("name", "phone", "consult_note")
ERROR_MESSAGE_MAX = 200
UTM_MAX = 100
HTML_LANG = {"zh_CN": "zh-CN", "en": "en"}
OG_LOCALE = {"zh_CN": "zh_CN", "en": "en_US"}


class PublicResponse(Response):
    """An answer that depends on no cookie. Flask marks the answer of every request that touched the session
    `Vary: Cookie` (the console's login machinery does, on every request), which would keep shared caches
    from reusing it; unless the answer sets a cookie, that mark is dropped."""

    def get_wsgi_headers(self, environ):
        headers = super().get_wsgi_headers(environ)
        if "Set-Cookie" not in headers and "Vary" in headers:
            kept = [v.strip() for v in headers["Vary"].split(",") if v.strip().lower() not in ("", "cookie")]
            if kept:
                headers["Vary"] = ", ".join(kept)
            else:
                del headers["Vary"]
        return headers


def visitor_locale() -> str:
    """`?lang=` (or FAB's `?_l_=`), else the browser's Accept-Language, else the default (zh_CN). The
    session is not read: the page is the same for every visitor of a language (cacheable, no cookie)."""
    languages = list(current_app.config["LANGUAGES"])
    for arg in ("lang", "_l_"):
        wanted = (request.args.get(arg) or "").strip().replace("-", "_").lower()
        for key in languages if wanted else ():
            if wanted in (key.lower(), key.split("_")[0].lower()):
                return key
    best = request.accept_languages.best_match(languages)
    return best or current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN")


def public_base() -> str:
    """The site's root URL without a trailing slash: PUBLIC_BASE_URL, else the request's host root."""
    return (current_app.config.get("PUBLIC_BASE_URL") or request.url_root).rstrip("/")


def canonical_url(slug: str) -> str:
    return f"{public_base()}/p/{slug}"


def _token_window() -> tuple[int, dt.datetime]:
    """(index, start) of the current form-token window: a quarter of the token's validity, at least a
    minute."""
    minutes = metadata.config_value(db.session, "capture.form_token_minutes")
    seconds = max(60, int(minutes) * 60 // 4)
    now = clock.utcnow()
    index = int(now.replace(tzinfo=dt.UTC).timestamp()) // seconds
    return index, dt.datetime.fromtimestamp(index * seconds, dt.UTC).replace(tzinfo=None)


def _cache_headers(response: Response, etag: str | None, modified: dt.datetime | None) -> Response:
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    response.vary.add("Accept-Language")
    if etag:
        response.set_etag(etag)
    if modified:
        response.last_modified = modified.replace(tzinfo=dt.UTC, microsecond=0)
    return response


def _not_found(locale: str):
    with force_locale(locale):
        html = render_template("public/not_found.html", html_lang=HTML_LANG.get(locale, locale),
                               locale=locale)
    response = PublicResponse(html, 404, mimetype="text/html")
    response.headers["Cache-Control"] = "public, max-age=60"
    response.vary.add("Accept-Language")
    return response


def _image_url(page) -> str | None:
    if not page.image_url:
        return None
    return public_base() + page.image_url if page.image_url.startswith("/") else page.image_url


def _refusal() -> dict | None:
    """The capture endpoint's refusal of a form posted without script (`?error=<field>&message=<text>`)."""
    field = request.args.get("error")
    if field is None:
        return None
    message = (request.args.get("message") or "").strip()[:ERROR_MESSAGE_MAX]
    return {"field": field if field in FORM_FIELDS else None, "message": message}


def render_page(page, locale: str, preview: bool = False) -> str:
    """The page's HTML in `locale`, with a fresh form token (also the console's preview)."""
    refused = _refusal()
    with force_locale(locale):
        return render_template(
            "public/page.html", page=page, locale=locale, html_lang=HTML_LANG.get(locale, locale),
            og_locale=OG_LOCALE.get(locale, locale), canonical=canonical_url(page.slug),
            base_url=public_base(), image_url=_image_url(page),
            keywords=landing.split_keywords(page.keywords),
            content=landing.render_content(page.content),
            form_token=capture.issue_token(page.id, page.campaign_id),
            utm_campaign=(request.args.get("utm_campaign") or "")[:UTM_MAX], refused=refused,
            noindex=preview or refused is not None, preview=preview,
            lead_endpoint="/api/v1/public/lead",
        )


@bp.get("/p/<slug>")
def page(slug: str):
    locale = visitor_locale()
    lp = landing.published_page(db.session, slug)
    if lp is None:
        return _not_found(locale)
    if _refusal() is not None:  # one visitor's refusal: neither cached nor indexed
        response = PublicResponse(render_page(lp, locale), mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response
    window, window_start = _token_window()
    modified = max(landing.last_modified(lp) or window_start, window_start)
    parts = (lp.id, lp.updated_at, lp.published_at, locale, window, request.query_string)
    tag = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]
    if not is_resource_modified(request.environ, etag=tag,
                                last_modified=modified.replace(tzinfo=dt.UTC, microsecond=0)):
        return _cache_headers(PublicResponse(status=304), tag, modified)
    return _cache_headers(PublicResponse(render_page(lp, locale), mimetype="text/html"), tag, modified)


@bp.get("/p/<slug>/thanks")
def thanks(slug: str):
    locale = visitor_locale()
    lp = landing.published_page(db.session, slug)
    if lp is None:
        return _not_found(locale)
    with force_locale(locale):
        html = render_template("public/thanks.html", page=lp, locale=locale,
                               html_lang=HTML_LANG.get(locale, locale),
                               back_url=url_for("public_site.page", slug=lp.slug))
    response = PublicResponse(html, mimetype="text/html")
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    response.vary.add("Accept-Language")
    return response


@bp.get("/sitemap.xml")
def sitemap():
    """The sitemap protocol (sitemaps.org 0.9): every published page's canonical URL and last change."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">']
    for slug, modified in landing.published_pages(db.session):
        lastmod = modified.replace(microsecond=0).isoformat() + "+00:00"
        lines.append(f"  <url><loc>{xml_escape(canonical_url(slug))}</loc><lastmod>{lastmod}</lastmod></url>")
    lines.append("</urlset>")
    response = PublicResponse("\n".join(lines) + "\n", mimetype="application/xml")
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/robots.txt")
def robots():
    """Crawlers may read the landing pages (and the styles they use), not the console."""
    body = "\n".join((
        "User-agent: *",
        "Allow: /p/",
        "Allow: /static/crm/",
        "Disallow: /",
        "",
        f"Sitemap: {public_base()}/sitemap.xml",
        "",
    ))
    response = PublicResponse(body, mimetype="text/plain")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.add_etag()
    return response.make_conditional(request)


@bp.after_request
def _not_shared_when_a_cookie_is_set(response: Response) -> Response:
    """Should something have written the session (a cookie goes out), the answer is that visitor's own."""
    if session.modified:
        response.headers["Cache-Control"] = "private, no-store"
    return response


def register(app) -> None:
    if "public_site" not in app.blueprints:
        app.register_blueprint(bp)
