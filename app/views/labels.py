"""One place that names every stored code on screen: (kind, code) → its translated label.

Statuses, types, providers and role names are stored as codes (`draft`, `running`, `sink`, `Sales Director`);
people read labels. Each label's msgid is "<kind>.<code>" (e.g. "sms_campaign.status.running"), so one code
can read differently per kind ("pending" is 待发送 for an SMS and 待质检 for an inspection) without msgctxt;
both catalogs carry it (Chinese in zh, the English text in en). The English text below is the fallback when
a catalog lacks the entry; an unknown code is shown as it is stored.

Use:
    formatters_columns = labels.formatters(status="sms_campaign.status", kind="sms_template.kind")
    SelectField(_l("Status"), choices=labels.choices("sms_campaign.status"))
    {{ campaign.status|label("sms_campaign.status") }}          (Jinja filter, installed by `install`)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from flask import has_request_context
from flask_babel import LazyString, get_translations, gettext
from markupsafe import escape

from app.security.masking import mask_phones_in_text

#: kind → {code: English label}. The msgid of each is f"{kind}.{code}".
KINDS: dict[str, dict[str, str]] = {
    "role": {
        "Admin": "Administrator", "Sales Director": "Sales director", "Sales Manager": "Sales manager",
        "Salesperson": "Salesperson", "QA Inspector": "QA inspector", "Back Office": "Back office",
        "Marketing": "Marketing", "HR Integration": "HR integration", "Lead Integration": "Lead integration",
        "Notification Integration": "Notification integration", "Public": "Public",
    },
    "data_scope": {
        "own": "Own records", "own_subordinates": "Own + subordinates", "team": "Own team",
        "org_subtree": "Org unit and below", "all": "Everything",
    },
    "hr_status": {"active": "Active", "on_leave": "On leave", "resigned": "Resigned"},
    "org_kind": {"company": "Company", "division": "Division", "department": "Department", "team": "Team"},
    "config.value_type": {"int": "Integer", "bool": "Yes / no", "str": "Text", "duration": "Duration",
                          "json": "JSON"},
    "opportunity.status": {"waiting": "Waiting for dispatch", "owned": "Owned", "pooled": "In a public pool",
                           "won": "Won", "lost": "Lost"},
    "assignment.reason": {
        "dispatch": "Dispatched", "claim": "Claimed", "give_back": "Given back",
        "assign": "Assigned by a manager", "transfer": "Transferred", "recycle": "Recycled",
        "sticky": "Repeat lead (sticky)", "to_pool": "To a pool",
    },
    "dispatch_rule.strategy": {"round_robin": "Round robin", "weighted": "Weighted",
                               "least_loaded": "Least loaded", "pool": "To pool",
                               "score_aware": "Score-aware"},
    "lead.channel": {"form": "Form", "import": "Import", "api": "API"},
    "sms_channel.provider": {"sink": "Local test sink", "http": "HTTP gateway"},
    "sms_template.kind": {"marketing": "Marketing", "notification": "Notification",
                          "verification": "Verification code"},
    "sms_template.status": {"draft": "Draft", "pending": "Pending review", "approved": "Approved",
                            "rejected": "Rejected"},
    "sms_campaign.status": {"draft": "Draft", "scheduled": "Scheduled", "running": "Sending",
                            "paused": "Paused", "cancelled": "Cancelled", "completed": "Completed",
                            "failed": "Failed"},
    "sms_message.status": {"pending": "Waiting to send", "deferred": "Deferred", "sending": "Sending",
                           "sent": "Sent", "delivered": "Delivered", "failed": "Failed",
                           "cancelled": "Cancelled"},
    "sms_message.cancel_reason": {
        "blacklisted": "Blacklisted", "opted_out": "Opted out", "no_consent": "No consent",
        "duplicate": "Duplicate", "invalid_number": "Invalid number", "sensitive_word": "Sensitive word",
        "frequency_limit": "Frequency limit", "campaign_cancelled": "Campaign cancelled",
        "template_not_approved": "Template not approved",
    },
    "sensitive_word.action": {"block": "Block", "mask": "Mask"},
    "list.source": {"manual": "Entered by hand", "import": "Imported", "inbound": "Reply from the recipient"},
    "call.provider": {"simulator": "Simulator", "http": "HTTP call centre"},
    "call.result": {"normal_clearing": "Normal hang-up", "no_answer": "No answer", "user_busy": "Callee busy",
                    "network_error": "Network error", "caller_cancel": "Caller hung up",
                    "provider_error": "Call centre error"},
    "call_number.status": {"active": "In service", "suspended": "Suspended", "flagged": "Flagged"},
    "call.status": {"requested": "Requested", "dialing": "Dialling", "ringing": "Ringing",
                    "answered": "Answered", "ended": "Ended", "no_answer": "No answer", "busy": "Busy",
                    "failed": "Failed"},
    "qa_check.kind": {"manual": "Manual (inspector only)", "forbidden_words": "Forbidden words",
                      "required_words": "Required words", "silence": "Silence", "speech_rate": "Speech rate"},
    "qa_plan.mode": {"count": "Calls per agent", "percent": "Percent of each agent's calls"},
    "qa_plan.period": {"day": "Day", "week": "Week", "month": "Month"},
    "qa.status": {"pending": "Awaiting inspection", "scored": "Scored", "appealed": "Appealed",
                  "final": "Final"},
    "qa.appeal_decision": {"upheld": "Upheld (score revised)", "rejected": "Rejected"},
    "job.kind": {"lead_import": "Lead import", "sms_campaign_prepare": "Campaign preparation",
                 "sms_campaign_send": "Campaign sending", "dispatch": "Dispatch run",
                 "circulation_scan": "Circulation scan", "export": "Export"},
    "job.status": {"queued": "Queued", "running": "Running", "completed": "Completed", "failed": "Failed",
                   "cancelled": "Cancelled"},
}


def _resolve(kind: str, code) -> str:
    english = KINDS.get(kind, {}).get(code)
    if english is None:
        return "" if code is None else str(code)
    msgid = f"{kind}.{code}"
    text = gettext(msgid)
    return english if text == msgid else text


def label(kind: str, code) -> LazyString | str:
    """The label of `code` as `kind`, translated when rendered (safe at import time)."""
    if code is None:
        return ""
    return LazyString(_resolve, kind, code)


def text(kind: str, code) -> str:
    """The label now, in the request's language (for code that builds strings)."""
    return "" if code is None else _resolve(kind, code)


def codes(kind: str) -> list[str]:
    return list(KINDS[kind])


def choices(kind: str, only: Iterable[str] | None = None) -> list[tuple[str, LazyString]]:
    """(code, label) pairs for a SelectField or a filter's choices, in the table's (or `only`'s) order."""
    return [(code, label(kind, code)) for code in (KINDS[kind] if only is None else only)]


def formatter(kind: str) -> Callable[[object], object]:
    """A FAB `formatters_columns` entry showing the column's code as its label."""
    def format_code(value):
        return label(kind, value)
    format_code.label_kind = kind  # read by search_fields
    return format_code


def search_fields(formatters_columns: dict | None, search_columns, label_columns: dict | None) -> dict:
    """`search_form_extra_fields` for a view: each searched column shown through `formatter(kind)` is
    searched by a dropdown of its labels (the stored code is what the filter compares), not a text box."""
    from flask_appbuilder.fieldwidgets import Select2Widget
    from wtforms import SelectField

    fields = {}
    for column in search_columns or ():
        kind = getattr((formatters_columns or {}).get(column), "label_kind", None)
        if kind:
            title = (label_columns or {}).get(column)
            fields[column] = SelectField(title, choices=[("", "—"), *choices(kind)], widget=Select2Widget())
    return fields


def formatters(**columns: str) -> dict[str, Callable[[object], object]]:
    """`formatters_columns` for several columns: formatters(status="sms_campaign.status", ...)."""
    return {column: formatter(kind) for column, kind in columns.items()}


def role_name(name) -> LazyString | str:
    """A role's translated name (roles are stored by their English code name)."""
    return label("role", getattr(name, "name", name))


def config_description(description):
    """A config item's description in the reader's language when it is the one the deploy declared
    (app.services.reference.SETTINGS, whose English texts are msgids); an edited one is shown as written."""
    from app.services.reference import SETTINGS

    if description and any(s.description == description for s in SETTINGS):
        return LazyString(gettext, description)
    return description


_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
_patterns: dict[int, list[tuple[re.Pattern, str]]] = {}


def _message_patterns() -> list[tuple[re.Pattern, str]]:
    """(regex, msgid) for every msgid with %(name)s values, most specific first; built once per catalog."""
    translations = get_translations()
    key = id(translations)
    if key not in _patterns:
        msgids = [m for m in getattr(translations, "_catalog", {}) if isinstance(m, str) and "%(" in m]
        built = []
        for msgid in sorted(msgids, key=lambda m: -len(_PLACEHOLDER.sub("", m))):
            parts = _PLACEHOLDER.split(msgid)  # literal, name, literal, name, ...
            if len(set(parts[1::2])) != len(parts[1::2]):
                continue
            regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
            built.append((re.compile(regex + r"\Z", re.S), msgid))
        _patterns.clear()
        _patterns[key] = built
    return _patterns[key]


def stored_message(message) -> str:
    """A message stored in English (a job's per-row error, written without a reader) in the reader's
    language: translated when it is a msgid, or a msgid with its values filled in; else as stored."""
    if not message or not isinstance(message, str):
        return "" if message is None else str(message)
    translated = gettext(message) if "%" not in message else message
    if translated != message:
        return translated
    for regex, msgid in _message_patterns():
        match = regex.match(message)
        if match:
            return gettext(msgid, **match.groupdict())
    return message


def sms_count_labels() -> dict[str, str]:
    """Labels of a campaign's progress counts: message statuses, and "cancelled:<reason>"."""
    names = {code: text("sms_message.status", code) for code in KINDS["sms_message.status"]}
    cancelled = names["cancelled"]
    for reason in KINDS["sms_message.cancel_reason"]:
        names[f"cancelled:{reason}"] = f"{cancelled}: {text('sms_message.cancel_reason', reason)}"
    names["cancelled:None"] = cancelled
    return names


def catalog_entries(chinese: dict[str, dict[str, str]]) -> list[list[str]]:
    """po_add.py entries for every label: [msgid, 中文, English]."""
    return [[f"{kind}.{code}", chinese[kind][code], english]
            for kind, table in KINDS.items() for code, english in table.items()]


class _TranslatedName(str):
    """A str (JSON, logs: the English name) that pages render in the reader's language."""

    def __str__(self) -> str:
        return gettext(str.__str__(self)) if has_request_context() else str.__str__(self)

    def __html__(self) -> str:
        return str(escape(str(self)))


def install(app) -> None:
    """The `label` Jinja filter: {{ value|label("kind") }}; `role_name`; the app's name in the reader's
    language (APP_NAME is its English msgid)."""
    name = app.config.get("APP_NAME") or ""
    if name.isascii():
        app.config["APP_NAME"] = _TranslatedName(name)
    app.jinja_env.filters["label"] = lambda value, kind: label(kind, value)
    app.jinja_env.filters["role_name"] = role_name
    app.jinja_env.filters["stored_message"] = stored_message
    # Free text people typed (consult notes, follow-ups, notes): the phone numbers in it masked.
    app.jinja_env.filters["mask_text"] = mask_phones_in_text
