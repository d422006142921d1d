"""The tags panel of the customer and opportunity pages, and its manual tagging forms.

The panel (can_read, Tag) lists the row's tags as labels with their source (manual / rule / import) and
when each was put on or computed. With (can_write, Tagging) it offers a dropdown of the manual tags of
that kind of record and a remove button on each manual one; both POST with the CSRF token to
/tagging/<subject>/<id>/… and go through app.services.tags (the row must be in the viewer's data scope:
404 otherwise; the change is audited).
"""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import gettext as _

from app.extensions import db
from app.models.bigdata import CUSTOMER, OPPORTUNITY, SUBJECTS
from app.security import policy
from app.security.scope import current_viewer
from app.services import tags
from app.views import panels, uow
from app.views.opportunities import safe_next
from app.views.sales import current_actor
from app.views.tags import SOURCE_LABELS

TEMPLATE = "tags/_panel.html"


def _page(subject: str, item_id: int) -> str:
    endpoint = "OpportunityView.show" if subject == OPPORTUNITY else "CustomerView.show"
    return url_for(endpoint, pk=item_id) if endpoint in current_app.view_functions else "/"


def panel_context(subject: str):
    def context(item) -> dict:
        memberships = tags.tags_of(db.session, subject, item.id)
        on = {m.tag.id for m in memberships}
        can_tag = current_app.appbuilder.sm.has_access(policy.WRITE, policy.TAGGING)
        return {"tag_memberships": memberships, "tag_subject": subject,
                "tag_choices": [t for t in tags.manual_tags(db.session, subject) if t.id not in on]
                if can_tag else [],
                "can_tag": can_tag, "tag_source_labels": SOURCE_LABELS}

    return context


class TaggingView(BaseView):
    """POST /tagging/<subject>/<id>/add (form field tag_id) and /tagging/<subject>/<id>/remove/<tag_id>."""

    route_base = "/tagging"
    class_permission_name = policy.TAGGING
    base_permissions = [policy.WRITE]
    method_permission_name = {"add": "write", "remove": "write"}

    def _done(self, subject: str, item_id: int, outcome, changed_text: str, same_text: str):
        back = safe_next(_page(subject, item_id))
        if outcome.error is not None:
            if outcome.error.status == 404 and outcome.error.field == "id":
                abort(404)
            flash(outcome.error.message, "danger")
        else:
            flash(changed_text if outcome.result else same_text, "success" if outcome.result else "info")
        return redirect(back)

    @expose("/<subject>/<int:item_id>/add", methods=["POST"])
    @has_access
    def add(self, subject, item_id):
        if subject not in SUBJECTS:
            abort(404)
        raw = (request.form.get("tag_id") or "").strip()
        tag_id = int(raw) if raw.isdigit() and len(raw) < 11 else None
        outcome = uow.run(tags.add_tag, db.session, current_viewer(), subject, item_id,
                          tag_id if tag_id is not None else 0, current_actor().name)
        return self._done(subject, item_id, outcome, _("Tag added"), _("The tag was on already"))

    @expose("/<subject>/<int:item_id>/remove/<int:tag_id>", methods=["POST"])
    @has_access
    def remove(self, subject, item_id, tag_id):
        if subject not in SUBJECTS:
            abort(404)
        outcome = uow.run(tags.remove_tag, db.session, current_viewer(), subject, item_id, tag_id,
                          current_actor().name)
        return self._done(subject, item_id, outcome, _("Tag removed"), _("The tag was not on"))


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(TaggingView)
    for page, subject in ((panels.CUSTOMER, CUSTOMER), (panels.OPPORTUNITY, OPPORTUNITY)):
        panels.add(page, TEMPLATE, panel_context(subject), permission=(policy.READ, policy.TAG))
