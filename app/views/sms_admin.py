"""SMS administration: channels, templates (review workflow, preview), sensitive words, the blacklist.

Templates move draft → pending review → approved / rejected; only approved templates send. Changing the
text, kind, variables or channel of a pending or approved template puts it back to draft. Approving and
rejecting need ("can_approve", "SmsTemplate") and are audited.
"""

from __future__ import annotations

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.actions import action
from flask_appbuilder.api import protect, safe
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextAreaFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, SelectField, TextAreaField

from app.extensions import db
from app.models.sms import (
    APPROVED,
    BLOCK,
    DRAFT,
    MASK,
    PENDING_REVIEW,
    REJECTED,
    TEMPLATE_KINDS,
    BlacklistEntry,
    SensitiveWord,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.security import policy
from app.services import audit
from app.services.errors import DomainError
from app.services.sms import blacklist, words
from app.services.sms.channels import PROVIDERS, check_channel
from app.services.sms.secrets import encrypt
from app.services.sms.templates import check_template, preview
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use

MAX_IMPORT_BYTES = 2 * 1024 * 1024
LABELS = {
    "name": _l("Name"),
    "provider": _l("Provider"),
    "signature": _l("Signature"),
    "base_url": _l("Base URL"),
    "access_key_env": _l("Key id env var"),
    "secret_env": _l("Secret env var"),
    "encrypted_secret": _l("Stored secret"),
    "new_secret": _l("New secret"),
    "clear_secret": _l("Remove the stored secret"),
    "callback_secret_env": _l("Callback secret env var"),
    "rate_limit": _l("Rate limit (msg/s)"),
    "batch_size": _l("Batch size"),
    "timeout_seconds": _l("Timeout (s)"),
    "opt_out_text": _l("Opt-out text"),
    "price_per_segment": _l("Price per segment"),
    "enabled": _l("Enabled"),
    "priority": _l("Priority (lower first)"),
    "options": _l("Options (JSON)"),
    "kind": _l("Kind"),
    "channel": _l("Channel"),
    "body": _l("Text"),
    "variables": _l("Variables"),
    "status": _l("Status"),
    "review_note": _l("Review note"),
    "reviewed_by": _l("Reviewed by"),
    "event": _l("Event"),
    "word": _l("Word"),
    "category": _l("Category"),
    "action": _l("Action"),
    "allowed": _l("Allow-list"),
    "phone": _l("Phone"),
    "reason": _l("Reason"),
    "source": _l("Source"),
    "created_at": _l("Created at"),
    "updated_at": _l("Updated at"),
}
NOT_OFFERED = "not_offered"  # a permission no role has: the method is switched off


def _actor() -> str | None:
    user = getattr(g, "user", None)
    return getattr(user, "username", None)


def _read_upload_or_text(field_text: str = "text", field_file: str = "file") -> str:
    upload = request.files.get(field_file)
    if upload is not None and upload.filename:
        data = upload.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise DomainError("The file is larger than 2 MB", field="file")
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
        raise DomainError("The file is not UTF-8 or GBK text", field="file")
    return request.form.get(field_text, "")


# --- channels -------------------------------------------------------------------------------------
def _apply_secret(item) -> None:
    new = (getattr(item, "new_secret", None) or "").strip()
    if new:
        item.encrypted_secret = encrypt(new)
    elif getattr(item, "clear_secret", False):
        item.encrypted_secret = None


def _secret_state(value) -> str:
    return str(_l("set")) if value else str(_l("not set"))



def _import_page(view, importer, title, kind: str, back_endpoint: str, **extra):
    """The bulk-import page: on POST, run `importer(text)` on the upload or the pasted text and commit."""
    result, error = None, None
    if request.method == "POST":
        try:
            result = importer(_read_upload_or_text())
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            error = exc.message
    return view.render_template("sms/import.html", title=title, result=result, error=error, kind=kind,
                                back=url_for(back_endpoint), **extra)


# The template page and its API: submitting is writing, approving and rejecting need can_approve.
TEMPLATE_PERMISSIONS = {
    **policy.METHOD_PERMISSIONS,
    "preview": "read",
    "preview_draft": "read",
    "submit": "write",
    "approve": "approve",
    "reject": "approve",
}

class SmsChannelView(CrmModelView):
    datamodel = SQLAInterface(SmsChannel)
    class_permission_name = policy.SMS_CHANNEL
    list_title = show_title = _l("SMS Channels")
    add_title, edit_title = _l("Add SMS Channel"), _l("Edit SMS Channel")
    list_columns = [
        "name",
        "provider",
        "signature",
        "enabled",
        "priority",
        "rate_limit",
        "batch_size",
        "encrypted_secret",
    ]
    _form = [
        "name",
        "provider",
        "signature",
        "enabled",
        "priority",
        "base_url",
        "access_key_env",
        "secret_env",
        "new_secret",
        "clear_secret",
        "callback_secret_env",
        "rate_limit",
        "batch_size",
        "timeout_seconds",
        "opt_out_text",
        "price_per_segment",
        "options",
    ]
    add_columns = edit_columns = _form
    show_columns = [
        "name",
        "provider",
        "signature",
        "enabled",
        "priority",
        "base_url",
        "access_key_env",
        "secret_env",
        "encrypted_secret",
        "callback_secret_env",
        "rate_limit",
        "batch_size",
        "timeout_seconds",
        "opt_out_text",
        "price_per_segment",
        "options",
        "updated_at",
    ]
    search_columns = ["name", "provider", "signature", "enabled"]
    base_order = ("priority", "asc")
    label_columns = LABELS
    description_columns = {
        "new_secret": _l("Stored encrypted and never shown again; leave empty to keep the stored one."),
        "secret_env": _l("When set, the environment variable wins over the stored secret."),
        "options": _l('Sink: {"fail_numbers": [...], "fail_rate": 0.1, "delay_ms": 5, "timeout": false}'),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "provider": SelectField(_l("Provider"), choices=[(p, p) for p in PROVIDERS], widget=Select2Widget()),
        "new_secret": PasswordField(_l("New secret"), widget=BS3PasswordFieldWidget()),
        "clear_secret": BooleanField(_l("Remove the stored secret")),
        "enabled": BooleanField(_l("Enabled")),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.formatters_columns["encrypted_secret"] = _secret_state

    def check_item(self, item, creating):
        _apply_secret(item)
        check_channel(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsTemplate.channel_id, SmsCampaign.channel_id, SmsMessage.channel_id)


# --- templates ------------------------------------------------------------------------------------
CONTENT_FIELDS = ("body", "kind", "variables", "channel_id", "channel")


def check_template_item(item, creating: bool) -> None:
    """Save rules; an edit to the content of a pending / approved template sends it back to draft."""
    if creating:
        item.status = DRAFT
    elif item.status in (PENDING_REVIEW, APPROVED):
        state = sa_inspect(item)
        if any(state.attrs[f].history.has_changes() for f in CONTENT_FIELDS):
            item.status, item.reviewed_by, item.review_note = DRAFT, None, None
    check_template(item, item.channel, db.session)


def submit_template(item) -> None:
    if item.status not in (DRAFT, REJECTED):
        raise DomainError(
            "%(name)s is %(state)s: only a draft or rejected template goes to review",
            field="status",
            status=409,
            name=str(item),
            state=item.status,
        )
    check_template(item, item.channel, db.session)
    item.status = PENDING_REVIEW
    audit.record(
        db.session, "sms_template_submit", target_type="sms_template", target_id=item.id, summary=str(item)
    )


def review_template(item, approve: bool, note: str | None = None) -> None:
    if item.status != PENDING_REVIEW:
        raise DomainError(
            "%(name)s is %(state)s: only a pending template can be reviewed",
            field="status",
            status=409,
            name=str(item),
            state=item.status,
        )
    if approve:
        check_template(item, item.channel, db.session)  # the word list may have changed meanwhile
    item.status = APPROVED if approve else REJECTED
    item.reviewed_by = _actor()
    item.review_note = (note or "").strip()[:255] or None
    audit.record(
        db.session,
        "sms_template_approve" if approve else "sms_template_reject",
        target_type="sms_template",
        target_id=item.id,
        summary=f"{item}: {item.status}" + (f" ({item.review_note})" if item.review_note else ""),
    )


def _flash_each(items, work, done_message) -> int:
    done = 0
    for item in items:
        try:
            with db.session.begin_nested():
                work(item)
            done += 1
        except DomainError as exc:
            flash(exc.message, "danger")
    db.session.commit()
    if done:
        flash(str(done_message) % {"n": done}, "success")
    return done


class SmsTemplateView(CrmModelView):
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
    description_columns = {
        "body": _l("Named variables as {name}. Marketing text ends with the channel's opt-out text."),
        "variables": _l("The variables the text uses, comma separated, e.g. name, course"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "kind": SelectField(_l("Kind"), choices=[(k, k) for k in TEMPLATE_KINDS], widget=Select2Widget()),
        "body": TextAreaField(_l("Text"), widget=BS3TextAreaFieldWidget()),
    }
    method_permission_name = TEMPLATE_PERMISSIONS

    show_template = "sms/template_show.html"

    def check_item(self, item, creating):
        check_template_item(item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsCampaign.template_id, SmsMessage.template_id)

    @action("submit", _l("Submit for review"), None, "fa-paper-plane")
    def submit(self, items):
        items = items if isinstance(items, list) else [items]
        _flash_each(items, submit_template, _l("%(n)d template(s) submitted for review"))
        return redirect(self.get_redirect())

    @action("approve", _l("Approve"), _l("Approve the selected templates?"), "fa-check")
    def approve(self, items):
        items = items if isinstance(items, list) else [items]
        _flash_each(items, lambda t: review_template(t, True), _l("%(n)d template(s) approved"))
        return redirect(self.get_redirect())

    @action("reject", _l("Reject"), _l("Reject the selected templates?"), "fa-times")
    def reject(self, items):
        items = items if isinstance(items, list) else [items]
        note = request.form.get("note") or None
        _flash_each(items, lambda t: review_template(t, False, note), _l("%(n)d template(s) rejected"))
        return redirect(self.get_redirect())

    @expose("/preview/<pk>", methods=["GET", "POST"])
    @has_access
    def preview(self, pk):
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        sample = {k: v for k, v in request.values.items() if k != "csrf_token"}
        result = preview(item, sample, session=db.session)
        return self.render_template("sms/preview.html", item=item, result=result, sample=result.values)


# --- sensitive words --------------------------------------------------------------------------------
def check_word_item(item, creating: bool) -> None:
    words.check_word(item)
    clash = db.session.scalar(
        select(SensitiveWord.id).where(SensitiveWord.word == item.word, SensitiveWord.id != (item.id or 0))
    )
    if clash is not None:
        raise DomainError("%(word)s is already on the list", field="word", status=409, word=repr(item.word))


class SensitiveWordView(CrmModelView):
    datamodel = SQLAInterface(SensitiveWord)
    class_permission_name = policy.SENSITIVE_WORD
    list_title = show_title = _l("Sensitive Words")
    add_title, edit_title = _l("Add Sensitive Word"), _l("Edit Sensitive Word")
    list_columns = ["word", "category", "action", "allowed", "updated_at"]
    add_columns = edit_columns = ["word", "category", "action", "allowed"]
    search_columns = ["word", "category", "action", "allowed"]
    base_order = ("word", "asc")
    label_columns = LABELS
    description_columns = {
        "action": _l("block: the message is not sent; mask: the word is replaced by *"),
        "allowed": _l("An allow-list entry: text matching it never hits (e.g. a phrase containing a word)"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "action": SelectField(_l("Action"), choices=[(BLOCK, BLOCK), (MASK, MASK)], widget=Select2Widget()),
        # FAB makes a NOT NULL flag a required checkbox, which an unticked box can never satisfy
        "allowed": BooleanField(_l("Allow-list")),
    }
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write", "test": "read"}
    list_template = "sms/list.html"
    list_links = [
        ("bulk_import", "Import words", "fa-upload", "can_write"),
        ("test", "Test a text", "fa-search", "can_read"),
    ]

    def check_item(self, item, creating):
        check_word_item(item, creating)

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def bulk_import(self):
        return _import_page(
            self, lambda text: words.import_words(db.session, text, request.form.get("category") or None),
            _l("Import sensitive words"), "words", "SensitiveWordView.list")

    @expose("/test/", methods=["GET", "POST"])
    @has_access
    def test(self):
        text = request.values.get("text", "")
        check = words.matcher(db.session).check(text) if text else None
        return self.render_template("sms/word_test.html", text=text, check=check)


# --- blacklist --------------------------------------------------------------------------------------
def check_blacklist_item(item, creating: bool) -> None:
    blacklist.check_entry(item)
    clash = db.session.scalar(
        select(BlacklistEntry.id).where(
            BlacklistEntry.phone == item.phone, BlacklistEntry.id != (item.id or 0)
        )
    )
    if clash is not None:
        raise DomainError("This number is already on the blacklist", field="phone", status=409)


class BlacklistView(CrmModelView):
    datamodel = SQLAInterface(BlacklistEntry)
    class_permission_name = policy.SMS_BLACKLIST
    list_title = show_title = _l("SMS Blacklist")
    add_title, edit_title = _l("Add to Blacklist"), _l("Edit Blacklist Entry")
    list_columns = ["phone", "reason", "source", "created_at"]
    show_columns = ["phone", "reason", "source", "created_at", "updated_at"]
    add_columns = ["phone", "reason"]
    edit_columns = ["reason"]
    search_columns = ["reason", "source", "created_at"]
    base_order = ("created_at", "desc")
    phone_columns = ("phone",)
    label_columns = LABELS
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write"}
    list_template = "sms/list.html"
    list_links = [("bulk_import", "Import numbers", "fa-upload", "can_write")]

    def check_item(self, item, creating):
        if creating:
            item.source = "manual"
        check_blacklist_item(item, creating)

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def bulk_import(self):
        return _import_page(
            self, lambda text: blacklist.import_phones(db.session, text, request.form.get("reason") or None),
            _l("Import blacklist numbers"), "phones", "BlacklistView.list",
            keywords=blacklist.opt_out_keywords(db.session))


# --- REST APIs --------------------------------------------------------------------------------------
class SmsTemplateApi(CrmModelRestApi):
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
    method_permission_name = TEMPLATE_PERMISSIONS
    openapi_spec_tag = "SMS Templates"

    def check_item(self, item, creating):
        check_template_item(item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsCampaign.template_id, SmsMessage.template_id)

    def _item(self, pk):
        item = self.datamodel.get(pk, self._base_filters)
        if item is None:
            raise DomainError("Not found", status=404)
        return item

    def _json(self) -> dict:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    def _transition(self, pk, work):
        try:
            item = self._item(pk)
            work(item)
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self.response(exc.status, **exc.as_dict())
        return self.response(
            200, id=item.id, status=item.status, reviewed_by=item.reviewed_by, review_note=item.review_note
        )

    @expose("/<int:pk>/preview", methods=["POST"])
    @protect()
    @safe
    def preview(self, pk):
        """Preview a template with sample data: {"sample": {"name": "…"}} → text, length, segments."""
        try:
            item = self._item(pk)
        except DomainError as exc:
            return self.response(exc.status, **exc.as_dict())
        sample = self._json().get("sample")
        return self.response(
            200, **preview(item, sample if isinstance(sample, dict) else None, session=db.session).as_dict()
        )

    @expose("/preview", methods=["POST"])
    @protect()
    @safe
    def preview_draft(self):
        """Check and preview unsaved text: {"body", "kind", "variables", "channel_id", "sample"}."""
        data = self._json()
        channel = db.session.get(SmsChannel, data["channel_id"]) if data.get("channel_id") else None
        item = SmsTemplate(
            name="preview",
            body=str(data.get("body") or ""),
            kind=data.get("kind") or "",
            variables=data.get("variables"),
        )
        try:
            check_template(item, channel, db.session)
        except DomainError as exc:
            return self.response(422, **exc.as_dict())
        sample = data.get("sample")
        return self.response(
            200,
            **preview(
                item, sample if isinstance(sample, dict) else None, session=db.session, channel=channel
            ).as_dict(),
        )

    @expose("/<int:pk>/submit", methods=["POST"])
    @protect()
    @safe
    def submit(self, pk):
        """Send a draft or rejected template to review."""
        return self._transition(pk, submit_template)

    @expose("/<int:pk>/approve", methods=["POST"])
    @protect()
    @safe
    def approve(self, pk):
        """Approve a pending template ({"note": "…"} optional)."""
        return self._transition(pk, lambda t: review_template(t, True, self._json().get("note")))

    @expose("/<int:pk>/reject", methods=["POST"])
    @protect()
    @safe
    def reject(self, pk):
        """Reject a pending template ({"note": "…"})."""
        return self._transition(pk, lambda t: review_template(t, False, self._json().get("note")))


class BlacklistApi(CrmModelRestApi):
    datamodel = SQLAInterface(BlacklistEntry)
    resource_name = "sms_blacklist"
    class_permission_name = policy.SMS_BLACKLIST
    list_columns = show_columns = ["id", "phone", "reason", "source", "created_at"]
    add_columns = ["phone", "reason", "source"]
    edit_columns = ["reason"]
    search_columns = ["source", "reason"]
    phone_columns = ("phone",)
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write", "lookup": "read"}
    openapi_spec_tag = "SMS Blacklist"

    def check_item(self, item, creating):
        check_blacklist_item(item, creating)

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    def bulk_import(self):
        """Add numbers: {"phones": ["…"], "reason": "…"} or a text body, one number a line."""
        data = request.get_json(silent=True)
        if isinstance(data, dict) and isinstance(data.get("phones"), list):
            text = "\n".join(str(p).replace(",", " ") for p in data["phones"])
            reason = data.get("reason")
        else:
            text, reason = request.get_data(as_text=True), None
        result = blacklist.import_phones(
            db.session, text, reason if isinstance(reason, str) else None, source="api"
        )
        db.session.commit()
        return self.response(
            200,
            added=result.added,
            existing=result.existing,
            errors=[{"line": n, "message": m} for n, m in result.errors],
        )

    @expose("/lookup", methods=["POST"])
    @protect()
    @safe
    def lookup(self):
        """Which of {"phones": [...]} are blacklisted (answered in the form they were sent)."""
        data = request.get_json(silent=True)
        phones = data.get("phones") if isinstance(data, dict) else None
        if not isinstance(phones, list) or len(phones) > 1000:
            return self.response(400, message='Send {"phones": [...]} with at most 1000 numbers')
        wanted, errors = {}, []
        for raw in phones:
            try:
                wanted[str(raw)] = blacklist.normalise_phone(str(raw))
            except DomainError as exc:
                errors.append({"phone": str(raw), "message": exc.message})
        blocked = blacklist.is_blocked(db.session, [p for p in wanted.values() if p])
        return self.response(
            200, blocked=[raw for raw, e164 in wanted.items() if e164 in blocked], errors=errors
        )


__all__ = [
    "BlacklistApi",
    "BlacklistView",
    "SensitiveWordView",
    "SmsChannelView",
    "SmsTemplateApi",
    "SmsTemplateView",
]
