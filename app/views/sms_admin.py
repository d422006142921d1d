"""SMS administration: channels, sensitive words and the blacklist (templates and their review:
app.views.sms_templates).
"""

from __future__ import annotations

from flask import request
from flask_appbuilder import expose
from flask_appbuilder.api import protect, safe
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, SelectField

from app.extensions import db
from app.models.sms import (
    BLOCK,
    MASK,
    BlacklistEntry,
    SensitiveWord,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.security import policy
from app.services.errors import DomainError
from app.services.sms import blacklist, words
from app.services.sms.channels import PROVIDERS, check_channel
from app.services.sms.secrets import encrypt
from app.views import labels
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use
from app.views.imports import (
    PhoneListMixin,
    import_page,
    import_summary,
    import_text,
    posted_phone_list,
    posted_phones,
)
from app.views.uow import error_json, json_result

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


# --- channels -------------------------------------------------------------------------------------
def _apply_secret(item) -> None:
    new = (getattr(item, "new_secret", None) or "").strip()
    if new:
        item.encrypted_secret = encrypt(new)
    elif getattr(item, "clear_secret", False):
        item.encrypted_secret = None


def _secret_state(value) -> str:
    return str(_l("set")) if value else str(_l("not set"))



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
    formatters_columns = labels.formatters(provider="sms_channel.provider")
    description_columns = {
        "new_secret": _l("Stored encrypted and never shown again; leave empty to keep the stored one."),
        "secret_env": _l("When set, the environment variable wins over the stored secret."),
        "options": _l('Sink: {"fail_numbers": [...], "fail_rate": 0.1, "delay_ms": 5, "timeout": false}'),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "provider": SelectField(_l("Provider"), choices=labels.choices("sms_channel.provider", PROVIDERS),
                                widget=Select2Widget()),
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
    formatters_columns = labels.formatters(action="sensitive_word.action")
    description_columns = {
        "action": _l("block: the message is not sent; mask: the word is replaced by *"),
        "allowed": _l("An allow-list entry: text matching it never hits (e.g. a phrase containing a word)"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "action": SelectField(_l("Action"), choices=labels.choices("sensitive_word.action", (BLOCK, MASK)),
                              widget=Select2Widget()),
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
        return import_page(
            self, lambda text: words.import_words(db.session, text, request.form.get("category") or None),
            _l("Import sensitive words"), "words", "SensitiveWordView.list")

    @expose("/test/", methods=["GET", "POST"])
    @has_access
    def test(self):
        text = request.values.get("text", "")
        check = words.matcher(db.session).check(text) if text else None
        return self.render_template("sms/word_test.html", text=text, check=check)


# --- blacklist --------------------------------------------------------------------------------------
class BlacklistCheckMixin:
    """Form and API saves of a blacklist entry: a valid number, not on the list yet."""

    def check_item(self, item, creating):
        blacklist.check_entry(item)
        clash = db.session.scalar(
            select(BlacklistEntry.id).where(
                BlacklistEntry.phone == item.phone, BlacklistEntry.id != (item.id or 0)
            )
        )
        if clash is not None:
            raise DomainError("This number is already on the blacklist", field="phone", status=409)


class BlacklistView(PhoneListMixin, BlacklistCheckMixin, CrmModelView):
    datamodel = SQLAInterface(BlacklistEntry)
    class_permission_name = policy.SMS_BLACKLIST
    list_title = show_title = _l("SMS Blacklist")
    add_title, edit_title = _l("Add to Blacklist"), _l("Edit Blacklist Entry")
    list_columns = ["phone", "reason", "source", "created_at"]
    show_columns = ["phone", "reason", "source", "created_at", "updated_at"]
    add_columns = ["phone", "reason"]
    edit_columns = ["reason"]
    search_columns = ["reason", "source", "created_at"]
    label_columns = LABELS
    formatters_columns = labels.formatters(source="list.source")
    import_title = _l("Import blacklist numbers")

    def import_phones(self, text, reason):
        return blacklist.import_phones(db.session, text, reason)

    def import_page_extra(self) -> dict:
        return {"keywords": blacklist.opt_out_keywords(db.session)}


# --- REST APIs --------------------------------------------------------------------------------------
class BlacklistApi(BlacklistCheckMixin, CrmModelRestApi):
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

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    def bulk_import(self):
        """Add numbers: {"phones": ["…"], "reason": "…"} or a text body, one number a line."""
        def work():
            text, reason = posted_phones(text_body=True)
            return import_text(lambda lines: blacklist.import_phones(db.session, lines, reason, source="api"),
                               text)
        return json_result(work, body=import_summary)

    @expose("/lookup", methods=["POST"])
    @protect()
    @safe
    def lookup(self):
        """Which of {"phones": [...]} are blacklisted (answered in the form they were sent)."""
        try:
            phones = posted_phone_list()
        except DomainError as exc:
            return error_json(exc)
        wanted, errors = {}, []
        for raw in phones:
            try:
                wanted[raw] = blacklist.normalise_phone(raw)
            except DomainError as exc:
                errors.append({"phone": raw, "message": exc.message})
        blocked = blacklist.is_blocked(db.session, [p for p in wanted.values() if p])
        return self.response(
            200, blocked=[raw for raw, e164 in wanted.items() if e164 in blocked], errors=errors
        )


__all__ = ["BlacklistApi", "BlacklistView", "SensitiveWordView", "SmsChannelView"]
