"""SMS templates: the page and the API of the review workflow (draft → pending review → approved /
rejected) and the preview. The rules and the audit live in app.services.sms.templates; approving and
rejecting need ("can_approve", "SmsTemplate").
"""

from __future__ import annotations

from flask import abort, flash, g, redirect, request
from flask_appbuilder import expose
from flask_appbuilder.actions import action
from flask_appbuilder.api import protect, safe
from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from wtforms import SelectField, TextAreaField

from app.extensions import db
from app.models.sms import TEMPLATE_KINDS, SmsCampaign, SmsChannel, SmsMessage, SmsTemplate
from app.security import policy
from app.services import inputs
from app.services.errors import DomainError
from app.services.sms import templates
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use
from app.views.sms_admin import LABELS
from app.views.uow import error_json, flash_error, json_result, run


class TemplateRulesMixin:
    """What the template page and its API share: the rules of app.services.sms.templates on save, no
    delete of a template campaigns or messages used, and the permissions (submitting is writing,
    approving and rejecting need can_approve)."""

    method_permission_name = {
        **policy.METHOD_PERMISSIONS,
        "preview": "read",
        "preview_draft": "read",
        "submit": "write",
        "approve": "approve",
        "reject": "approve",
    }

    def check_item(self, item, creating):
        templates.prepare_save(db.session, item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsCampaign.template_id, SmsMessage.template_id)


def _actor() -> str | None:
    user = getattr(g, "user", None)
    return getattr(user, "username", None)


def _each(items, work, done_message) -> int:
    """Run `work(item)` on each selected template as its own unit of work: a refusal is flashed and
    leaves the others done."""
    done = 0
    for item in items if isinstance(items, list) else [items]:
        outcome = run(work, item)
        if outcome.error is not None:
            flash_error(outcome.error)
        else:
            done += 1
    if done:
        flash(str(done_message) % {"n": done}, "success")
    return done


# A draft longer than the longest text a template may have is refused unread (check_template says why
# a shorter one is too long); a sample value longer than a template's text is no sample.
LONGEST_TEXT = 10 * templates.MAX_BODY
VARIABLES_MAX = SmsTemplate.__table__.c.variables.type.length


def _sample(data: dict) -> tuple[dict | None, dict]:
    """(the preview's sample values, {field: problem}) from the body's "sample"."""
    sample = data.get("sample")
    if sample is None:
        return None, {}
    if not isinstance(sample, dict):
        return None, {"sample": "must be a JSON object of variable values"}
    bad = [name for name, value in sample.items()
           if value is not None and not inputs.scalar(value, templates.MAX_BODY)]
    if bad:
        return None, {"sample": f"values must be strings or numbers of at most {templates.MAX_BODY} "
                                f"characters: {inputs.quote(', '.join(sorted(bad)), 200)}"}
    return sample, {}


def _status(tpl) -> dict:
    return {"id": tpl.id, "status": tpl.status, "reviewed_by": tpl.reviewed_by,
            "review_note": tpl.review_note}


class SmsTemplateView(TemplateRulesMixin, CrmModelView):
    datamodel = SQLAInterface(SmsTemplate)
    class_permission_name = policy.SMS_TEMPLATE
    list_title = show_title = _l("SMS Templates")
    add_title, edit_title = _l("Add SMS Template"), _l("Edit SMS Template")
    list_columns = ["name", "kind", "channel", "status", "event", "reviewed_by", "updated_at"]
    add_columns = edit_columns = ["name", "kind", "channel", "body", "variables", "event"]
    show_columns = [
        "name",
        "kind",
        "channel",
        "status",
        "body",
        "variables",
        "event",
        "review_note",
        "reviewed_by",
        "updated_at",
    ]
    search_columns = ["name", "kind", "channel", "status", "event"]
    label_columns = LABELS
    formatters_columns = labels.formatters(kind="sms_template.kind", status="sms_template.status")
    description_columns = {
        "body": _l("Named variables as {name}. Marketing text ends with the channel's opt-out text."),
        "variables": _l("The variables the text uses, comma separated, e.g. name, course"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "kind": SelectField(_l("Kind"), choices=labels.choices("sms_template.kind", TEMPLATE_KINDS),
                            widget=Select2Widget()),
        "body": TextAreaField(_l("Text"), widget=BS3TextAreaFieldWidget()),
    }
    show_template = "sms/template_show.html"

    @action("submit", _l("Submit for review"), None, "fa-paper-plane")
    def submit(self, items):
        _each(items, lambda t: templates.submit(db.session, t), _l("%(n)d template(s) submitted for review"))
        return redirect(self.get_redirect())

    @action("approve", _l("Approve"), _l("Approve the selected templates?"), "fa-check")
    def approve(self, items):
        _each(items, lambda t: templates.review(db.session, t, True, actor=_actor()),
              _l("%(n)d template(s) approved"))
        return redirect(self.get_redirect())

    @action("reject", _l("Reject"), _l("Reject the selected templates?"), "fa-times")
    def reject(self, items):
        note = request.form.get("note") or None
        _each(items, lambda t: templates.review(db.session, t, False, note, actor=_actor()),
              _l("%(n)d template(s) rejected"))
        return redirect(self.get_redirect())

    @expose("/preview/<pk>", methods=["GET", "POST"])
    @has_access
    def preview(self, pk):
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        sample = {k: v for k, v in request.values.items() if k != "csrf_token"}
        result = templates.preview(item, sample, session=db.session)
        return self.render_template("sms/preview.html", item=item, result=result, sample=result.values)


class SmsTemplateApi(TemplateRulesMixin, CrmModelRestApi):
    datamodel = SQLAInterface(SmsTemplate)
    resource_name = "sms_template"
    class_permission_name = policy.SMS_TEMPLATE
    list_columns = show_columns = [
        "id",
        "name",
        "kind",
        "channel.id",
        "channel.name",
        "body",
        "variables",
        "status",
        "review_note",
        "reviewed_by",
        "event",
        "updated_at",
    ]
    add_columns = edit_columns = ["name", "kind", "channel", "body", "variables", "event"]
    search_columns = ["name", "kind", "status", "event"]
    openapi_spec_tag = "SMS Templates"

    def _item(self, pk):
        """The template within the user's scope, for a command."""
        item = self.datamodel.get(pk, self._base_filters)
        if item is None:
            raise DomainError("Not found", status=404)
        return item

    def _json(self) -> dict:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    def _note(self) -> str | None:
        """The review note of the body: a string, or DomainError (400) naming it."""
        note = self._json().get("note")
        if note is not None and not isinstance(note, str):
            raise DomainError("The note must be a string", field="note", status=400)
        return note

    def _transition(self, pk, work):
        def command():
            item = self._item(pk)
            work(item)
            return item

        return json_result(command, body=_status)

    @expose("/<int:pk>/preview", methods=["POST"])
    @protect()
    @safe
    def preview(self, pk):
        """Preview a template with sample data: {"sample": {"name": "…"}} → text, length, segments."""
        item = self.datamodel.get(pk, self._base_filters)
        if item is None:
            return self.response(404, message="Not found")
        sample, problems = _sample(self._json())
        if problems:
            return self.response(400, message="Invalid preview", errors=problems)
        result = templates.preview(item, sample, session=db.session)
        return self.response(200, **result.as_dict())

    @expose("/preview", methods=["POST"])
    @protect()
    @safe
    def preview_draft(self):
        """Check and preview unsaved text: {"body", "kind", "variables", "channel_id", "sample"}.
        ---
        post:
          responses:
            200:
              description: The text as sent, its length and segments, and the sensitive words found
            400:
              $ref: '#/components/responses/400'
            422:
              description: The draft breaks a rule of templates, or `channel_id` names no channel
              content:
                application/json:
                  schema:
                    $ref: '#/components/schemas/Refusal'
        """
        data = self._json()
        sample, problems = _sample(data)
        item = SmsTemplate(
            name="preview",
            body=inputs.text(problems, "body", data.get("body"), LONGEST_TEXT) or "",
            kind=inputs.text(problems, "kind", data.get("kind"), 20) or "",
            variables=inputs.text(problems, "variables", data.get("variables"), VARIABLES_MAX),
        )
        channel_id = inputs.whole_number(problems, "channel_id", data.get("channel_id"))
        if problems:
            return self.response(400, message="Invalid preview", errors=problems)
        channel = db.session.get(SmsChannel, channel_id) if channel_id is not None else None
        if channel_id is not None and channel is None:  # well-formed, but names nothing
            return self.response(422, message="Invalid preview", field="channel_id",
                                 errors={"channel_id": "no such channel"})
        try:
            templates.check_template(item, channel, db.session)
        except DomainError as exc:  # a check of unsaved text: nothing to roll back
            return error_json(exc)
        result = templates.preview(item, sample, session=db.session, channel=channel)
        return self.response(200, **result.as_dict())

    @expose("/<int:pk>/submit", methods=["POST"])
    @protect()
    @safe
    def submit(self, pk):
        """Send a draft or rejected template to review."""
        return self._transition(pk, lambda t: templates.submit(db.session, t))

    @expose("/<int:pk>/approve", methods=["POST"])
    @protect()
    @safe
    def approve(self, pk):
        """Approve a pending template ({"note": "…"} optional)."""
        return self._transition(pk, lambda t: templates.review(db.session, t, True, self._note(),
                                                               actor=_actor()))

    @expose("/<int:pk>/reject", methods=["POST"])
    @protect()
    @safe
    def reject(self, pk):
        """Reject a pending template ({"note": "…"})."""
        return self._transition(pk, lambda t: templates.review(db.session, t, False, self._note(),
                                                               actor=_actor()))

