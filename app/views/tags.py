"""Big Data › Tags: the tag definitions (manual, rule, import) with their members' count and when computed.

The form offers the rule as a dropdown with its parameter as a number, a text or a campaign — never JSON;
app.services.tags.check_tag validates it. "Recompute now" starts a TAG_REFRESH run (app.jobs.tags). The
panels of the customer and opportunity pages and the manual tagging forms are app.views.tags_panel; the
APIs app.views.tags_api. Reading is (can_read, Tag); changing definitions (can_write, Tag).
"""

from __future__ import annotations

from flask import current_app, flash, g, redirect, url_for
from flask_appbuilder.actions import action
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import IntegerField, SelectField, StringField
from wtforms.validators import Optional

from app.extensions import db
from app.jobs.tags import start_refresh
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    IMPORTED,
    MANUAL,
    OPPORTUNITY,
    RULE,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    Tag,
)
from app.security import policy
from app.services import tags
from app.views.base import CrmModelView

CATEGORY = "Big Data"
SOURCE_LABELS = {MANUAL: _l("Manual"), RULE: _l("Rule"), IMPORTED: _l("Imported")}
SUBJECT_LABELS = {CUSTOMER: _l("Customers"), OPPORTUNITY: _l("Opportunities")}
RULE_LABELS = {
    TRIAL_LESSONS: _l("Attended trial lessons (number of lessons)"),
    IDLE_DAYS: _l("Not followed up (days)"),
    VISITED_PAGE: _l("Viewed a page (part of its address)"),
    FROM_CAMPAIGN: _l("From a marketing campaign"),
    UNREACHED_CALLS: _l("Called, never connected (number of calls)"),
}
LABELS = {
    "code": _l("Code"), "name": _l("Name"), "description": _l("Description"), "source": _l("Source"),
    "subject": _l("About"), "rule": _l("Rule"), "rule_number": _l("Number (lessons, days, calls)"),
    "rule_text": _l("Page (part of its address)"), "rule_campaign": _l("Campaign"),
    "enabled": _l("Enabled"), "member_count": _l("Members"), "computed_at": _l("Last computed"),
    "created_at": _l("Created at"), "updated_at": _l("Updated at"), "id": _l("Rule"),
    "tag_id": _l("Tag"),
}


def rule_text_of(tag: Tag) -> str:
    """The tag's rule in words, in the request's language."""
    msgid, params = tags.rule_words(tag)
    return _(msgid, **params) if msgid else ""


def _rule_of_id(tag_id) -> str:
    """The list's "Rule" column: the row is in the session's identity map already (no query)."""
    tag = db.session.get(Tag, tag_id) if tag_id else None
    return rule_text_of(tag) if tag is not None else ""


def _choices(labels: dict, blank: bool = False):
    def choices():
        return ([("", "—")] if blank else []) + [(k, str(v)) for k, v in labels.items()]

    return choices


class TagView(CrmModelView):
    """Tag definitions. The list's "Rule" column is the rule in words (computed from the row)."""

    datamodel = SQLAInterface(Tag)
    class_permission_name = policy.TAG
    list_title = _l("Tags")
    add_title, edit_title, show_title = _l("Add tag"), _l("Edit tag"), _l("Tag")
    list_columns = ["code", "name", "source", "subject", "id", "member_count", "computed_at", "enabled"]
    show_columns = ["code", "name", "description", "source", "subject", "id", "enabled", "member_count",
                    "computed_at", "created_at", "updated_at"]
    add_columns = ["code", "name", "description", "source", "subject", "rule", "rule_number", "rule_text",
                   "rule_campaign", "enabled"]
    # Source and subject stay what they were: the members were put on as such.
    edit_columns = ["code", "name", "description", "rule", "rule_number", "rule_text", "rule_campaign",
                    "enabled"]
    search_columns = ["code", "name", "source", "subject", "enabled", "computed_at"]
    order_columns = ["code", "name", "source", "subject", "member_count", "computed_at"]
    base_order = ("code", "asc")
    label_columns = LABELS
    formatters_columns = {"source": lambda v: SOURCE_LABELS.get(v, v),
                          "subject": lambda v: SUBJECT_LABELS.get(v, v), "id": _rule_of_id}
    description_columns = {
        "code": _l("The big-data system's key of the tag: letters, digits, - _ and ."),
        "source": _l("Manual: people put it on. Rule: computed every night from the rule below. Imported "
                     "tags are created by the big-data system's API."),
        "rule": _l("Rule tags only; fill in the one field the rule needs below"),
        "rule_number": _l("Trial lessons: lessons attended; not followed up: days; called: calls"),
        "rule_text": _l("Viewed a page: a part of the page's address, e.g. /price"),
        "rule_campaign": _l("From a marketing campaign: the campaign"),
    }
    add_form_extra_fields = {
        "source": SelectField(_l("Source"), choices=_choices({MANUAL: SOURCE_LABELS[MANUAL],
                                                               RULE: SOURCE_LABELS[RULE]}),
                              widget=Select2Widget()),
        "subject": SelectField(_l("About"), choices=_choices(SUBJECT_LABELS), widget=Select2Widget()),
        "rule": SelectField(_l("Rule"), choices=_choices(RULE_LABELS, blank=True), validators=[Optional()],
                            widget=Select2Widget()),
        "rule_number": IntegerField(_l("Number (lessons, days, calls)"), validators=[Optional()],
                                    widget=BS3TextFieldWidget()),
        "rule_text": StringField(_l("Page (part of its address)"), validators=[Optional()],
                                 widget=BS3TextFieldWidget()),
    }
    edit_form_extra_fields = {k: v for k, v in add_form_extra_fields.items()
                              if k not in ("source", "subject")}

    def check_item(self, item, creating):
        item.rule = item.rule or None
        tags.check_tag(db.session, item, creating)

    def check_delete(self, item):
        if item.source == IMPORTED:
            from app.services.errors import DomainError

            raise DomainError("An imported tag belongs to the big-data system: disable it instead",
                              status=409)

    @action("recompute", _l("Recompute now"), None, "fa-refresh")
    def recompute(self, items):
        items = items if isinstance(items, list) else [items]
        rule_tags = [t for t in items if t.source == RULE]
        if not rule_tags:
            flash(_("Only rule tags are computed"), "warning")
            return redirect(url_for(".list"))
        one = rule_tags[0].id if len(rule_tags) == 1 else None
        run = start_refresh(db.session, one, started_by=getattr(g.user, "id", None))
        db.session.commit()
        flash(_("Recomputing started (job run #%(id)s); the members change when it ends", id=run.id),
              "info")
        if "JobsView.show" in current_app.view_functions and run.started_by_fk == getattr(g.user, "id", None):
            return redirect(url_for("JobsView.show", pk=run.id))
        return redirect(url_for(".list"))


def register(appbuilder) -> None:
    """Big Data › Tags, the tag panels of the customer and opportunity pages, and the APIs."""
    from app.views import tags_api, tags_panel

    appbuilder.add_view(TagView, "Tags", icon="fa-tags", label=_l("Tags"), category=CATEGORY,
                        category_label=_l("Big Data"), category_icon="fa-database")
    tags_panel.register(appbuilder)
    tags_api.register(appbuilder)
