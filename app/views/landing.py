"""Marketing › Landing Pages (admin), and the public site: /p/<slug>, /sitemap.xml, /robots.txt.

The rules of a page (TKD lengths, slug, publishing) live in app.services.landing; the form shows every
rule a page breaks at its field, and live width counters for title, keywords and description. The public
pages are app/views/public_site.py.
"""

from __future__ import annotations

from flask import abort, current_app, url_for
from flask_appbuilder import expose
from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from wtforms import StringField, TextAreaField

from app.extensions import db
from app.models.marketing import ChatSession, LandingPage
from app.models.sales import Lead
from app.security import policy
from app.services import landing
from app.services.errors import DomainError
from app.views import layout, public_site
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use

LABELS = {
    "slug": _l("Slug"),
    "title": _l("Title"),
    "keywords": _l("Keywords"),
    "description": _l("Description"),
    "heading": _l("Heading"),
    "content": _l("Content"),
    "image_url": _l("Image URL"),
    "campaign": _l("Marketing campaign"),
    "product_line": _l("Product line"),
    "chat_enabled": _l("Chat widget"),
    "published": _l("Published"),
    "published_at": _l("Published at"),
    "updated_at": _l("Updated at"),
    "created_at": _l("Created at"),
}


def _public_link(slug) -> Markup:
    """The slug, and a link to the page as the public sees it (an icon: a CSV export keeps the slug alone)."""
    if not slug:
        return Markup("")
    return Markup('{slug} <a href="{href}" target="_blank" rel="noopener" class="btn btn-xs btn-default" '
                  'title="{label}" aria-label="{label}"><i class="fa fa-external-link"></i></a>').format(
        slug=slug, href=url_for("public_site.page", slug=slug), label=_l("View public page"))


class LandingRulesMixin:
    """What the page and the API share: the rules of app.services.landing on save, and no delete of a page
    leads or chats came from (their attribution keeps its meaning: unpublish it instead)."""

    def check_item(self, item, creating):
        landing.prepare_save(db.session, item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, Lead.landing_page_id, ChatSession.landing_page_id,
                             instead="unpublish it instead")


class LandingPageView(LandingRulesMixin, CrmModelView):
    datamodel = SQLAInterface(LandingPage)
    class_permission_name = policy.LANDING_PAGE
    method_permission_name = {**policy.METHOD_PERMISSIONS, "preview": "read"}
    list_title = show_title = _l("Landing Pages")
    add_title, edit_title = _l("Add Landing Page"), _l("Edit Landing Page")
    list_columns = ["slug", "title", "campaign", "product_line", "published", "published_at", "updated_at"]
    add_columns = edit_columns = ["slug", "title", "keywords", "description", "heading", "content",
                                  "image_url", "campaign", "product_line", "chat_enabled", "published"]
    show_columns = ["slug", "title", "keywords", "description", "heading", "content", "image_url", "campaign",
                    "product_line", "chat_enabled", "published", "published_at", "created_at", "updated_at"]
    search_columns = ["slug", "title", "campaign", "product_line", "published"]
    order_columns = ["slug", "title", "published", "published_at", "updated_at"]
    label_columns = LABELS
    dict_fields = {"product_line": "product_line"}
    formatters_columns = {"slug": _public_link}
    description_columns = {
        "slug": _l("The address /p/<slug>: lowercase letters, digits and hyphens, e.g. k12-math-trial"),
        "title": _l("The <title> search results show: at most 60 wide (a Chinese character counts 2)"),
        "keywords": _l("Up to 10 keywords separated by commas (, ， or 、), each up to 20 characters, "
                       "100 wide together"),
        "description": _l("The snippet under the title in search results: 40 to 160 wide to publish"),
        "content": _l("Plain text: a blank line starts a paragraph, \"## \" a heading, \"- \" a list item"),
        "image_url": _l("Shown on the page and when shared (og:image): https://… or /static/…"),
        "published": _l("Published pages are public at /p/<slug> and listed in the sitemap"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "title": StringField(_l("Title"), widget=BS3TextFieldWidget()),
        "keywords": StringField(_l("Keywords"), widget=BS3TextFieldWidget()),
        "description": TextAreaField(_l("Description"), widget=BS3TextAreaFieldWidget()),
        "content": TextAreaField(_l("Content"), widget=BS3TextAreaFieldWidget()),
    }
    #: the form's live counters (crm/landing_counters.html)
    tkd_limits = {"title": landing.TITLE_MAX_WIDTH, "keywords": landing.KEYWORDS_MAX_WIDTH,
                  "description_min": landing.DESCRIPTION_MIN_WIDTH,
                  "description": landing.DESCRIPTION_MAX_WIDTH}
    add_template = "crm/landing_add.html"
    edit_template = "crm/landing_edit.html"
    show_template = "crm/landing_show.html"

    def check_form(self, form, pk) -> None:
        """Every rule the page breaks, each at its field (the first one raised, as the base view expects)."""
        with db.session.no_autoflush:
            item = self.datamodel.obj() if pk is None else self.datamodel.get(pk)
            try:
                form.populate_obj(item)
                self.check_relations(item)
                landing.normalize(item)
                problems = landing.check_page(db.session, item)
            except DomainError as exc:
                problems = [exc]
            finally:
                db.session.rollback()
                if pk is not None:
                    db.session.refresh(item)
        if problems:
            for problem in problems[1:]:
                field = getattr(form, problem.field, None) if problem.field else None
                if field is not None:
                    field.errors = [*field.errors, str(escape(problem.message))]
            raise problems[0]

    @expose("/preview/<pk>")
    @has_access
    def preview(self, pk):
        """The page as the public will see it, published or not (not indexed, not cached)."""
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        locale = layout.current_locale() or public_site.visitor_locale()  # the console's language
        html = public_site.render_page(item, locale, preview=True)
        return html, 200, {"Cache-Control": "private, no-store"}


class LandingPageApi(LandingRulesMixin, CrmModelRestApi):
    """Landing pages for other systems (a CMS): the form's rules, refusals as 422 naming the field."""

    datamodel = SQLAInterface(LandingPage)
    resource_name = "landing_page"
    class_permission_name = policy.LANDING_PAGE
    list_columns = ["id", "slug", "title", "campaign.id", "product_line.code", "published", "published_at",
                    "updated_at"]
    show_columns = ["id", "slug", "title", "keywords", "description", "heading", "content", "image_url",
                    "campaign.id", "campaign.code", "product_line.id", "product_line.code", "chat_enabled",
                    "published", "published_at", "created_at", "updated_at"]
    add_columns = edit_columns = ["slug", "title", "keywords", "description", "heading", "content",
                                  "image_url", "campaign", "product_line", "chat_enabled", "published"]
    search_columns = ["slug", "title", "campaign", "product_line", "published"]
    order_columns = ["slug", "title", "published", "published_at", "updated_at"]
    openapi_spec_tag = "Landing Pages"


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    appbuilder.add_view(LandingPageView, "Landing Pages", icon="fa-file-text-o", label=_l("Landing Pages"),
                        category="Marketing", category_label=_l("Marketing"), category_icon="fa-bullhorn")
    appbuilder.add_api(LandingPageApi)
    public_site.register(current_app._get_current_object())  # a plain blueprint: no login
