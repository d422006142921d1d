"""SMS templates: named variables, rendering, segment counting, the save rules, the review workflow,
preview.

A body names its variables as `{name}` (letters, digits, underscore; not starting with a digit); the
template declares them, comma separated, in `variables`. What the operator receives is
"【signature】" + rendered body (`compose`); its length decides the segments: up to 70 characters is one
message, longer text is split in parts of 67.

Review: draft → pending review (`submit`) → approved / rejected (`review`, audited); only approved
templates send. Saving a change to the text, kind, variables or channel of a pending or approved template
puts it back to draft (`prepare_save`). Forms, the API and any other caller go through these commands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from sqlalchemy import inspect as sa_inspect

from app.models.sms import (
    APPROVED,
    DRAFT,
    MARKETING,
    NOTIFICATION,
    PENDING_REVIEW,
    REJECTED,
    TEMPLATE_KINDS,
    VERIFICATION,
)
from app.services import audit
from app.services.errors import DomainError

VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINK = re.compile(
    r"(https?://|www\.|(?<![a-z0-9-])[a-z0-9-]+\.(com|cn|net|org|top|vip|xyz|io|cc|me|info|co|shop|link)"
    r"(?![a-z0-9]))",
    re.IGNORECASE,
)
MAX_BODY = 500
SINGLE, PART = 70, 67
CODE_VARIABLE = "code"
CODE_MIN, CODE_MAX = 4, 6
CONTENT_FIELDS = ("body", "kind", "variables", "channel_id", "channel")  # a change needs a new review
MAX_NOTE = 255
DEFAULT_OPT_OUT = "拒收请回复R"
_FILLER = re.compile(r"[\W_]+")  # what does not count as content: spaces, punctuation, symbols


def variables_used(body: str | None) -> list[str]:
    """The variables a body names, in order of first use."""
    seen: list[str] = []
    for name in VAR.findall(body or ""):
        if name not in seen:
            seen.append(name)
    return seen


def declared(spec: str | None) -> list[str]:
    """Declared variable names from "a, b ,c" (empty parts dropped)."""
    return [p.strip() for p in (spec or "").replace("，", ",").split(",") if p.strip()]


def render(template_body: str, variables: dict) -> str:
    """The body with each {name} replaced; DomainError(field="variables") for a missing one."""
    def sub(match: re.Match) -> str:
        name = match.group(1)
        value = variables.get(name)
        if value is None:
            raise DomainError("Missing variable %(name)s", field="variables", name=repr(name))
        return str(value)

    return VAR.sub(sub, template_body or "")


def compose(signature: str | None, text: str) -> str:
    """The full message: 【signature】 before the text (no brackets when there is no signature)."""
    return f"【{signature}】{text}" if signature else text


def segments(text: str) -> int:
    """Billed parts: up to 70 characters is 1; longer text goes in parts of 67."""
    n = len(text or "")
    return 1 if n <= SINGLE else math.ceil(n / PART)


def literal_parts(body: str) -> list[str]:
    """The fixed text of a body between its variables."""
    return VAR.split(body or "")[::2]


def opt_out_text(channel) -> str:
    return (getattr(channel, "opt_out_text", None) or DEFAULT_OPT_OUT).strip()


def check_values(tpl, variables: dict) -> None:
    """Rules on the values a message is rendered with: a verification code has 4–6 letters/digits."""
    if tpl.kind == VERIFICATION:
        code = str(variables.get(CODE_VARIABLE) or "")
        if not (CODE_MIN <= len(code) <= CODE_MAX) or not code.isalnum():
            raise DomainError("A verification code has %(low)s–%(high)s letters or digits",
                              field="variables", low=CODE_MIN, high=CODE_MAX)


def check_template(tpl, channel=None, session=None) -> None:
    """The save rules of a template (DomainError with the field at fault).

    `channel` defaults to the template's channel; `session` enables the sensitive-word check.
    """
    channel = channel if channel is not None else getattr(tpl, "channel", None)
    body = (tpl.body or "").strip()
    if tpl.kind not in TEMPLATE_KINDS:
        raise DomainError("Kind must be one of %(values)s", field="kind", values=", ".join(TEMPLATE_KINDS))
    if not body:
        raise DomainError("Enter the message text", field="body")
    if len(body) > MAX_BODY:
        raise DomainError("The text has %(count)s characters; at most %(limit)s", field="body",
                          count=len(body), limit=MAX_BODY)
    names = declared(tpl.variables)
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise DomainError("Not a variable name: %(names)s (letters, digits, _)", field="variables",
                          names=", ".join(bad))
    if len(set(names)) != len(names):
        raise DomainError("A variable is declared twice", field="variables")
    used = variables_used(body)
    undeclared = [n for n in used if n not in names]
    if undeclared:
        raise DomainError("The text uses undeclared variables: %(names)s", field="body",
                          names=", ".join(undeclared))
    unused = [n for n in names if n not in used]
    if unused:
        raise DomainError("Declared but not used in the text: %(names)s", field="variables",
                          names=", ".join(unused))
    opt_out = opt_out_text(channel)
    content = body
    if tpl.kind == MARKETING:
        if not body.endswith(opt_out):
            raise DomainError("A marketing text must end with the channel's opt-out text %(text)s",
                              field="body", text=repr(opt_out))
        content = body[: -len(opt_out)]
    elif tpl.kind == NOTIFICATION and opt_out and body.endswith(opt_out):
        raise DomainError("A notification must not end with the opt-out text %(text)s", field="body",
                          text=repr(opt_out))
    if not _FILLER.sub("", "".join(literal_parts(content))):
        raise DomainError("The text cannot be made of variables only", field="body")
    if tpl.kind == VERIFICATION:
        if CODE_VARIABLE not in used:
            raise DomainError("A verification text must contain the {%(name)s} variable",
                              field="body", name=CODE_VARIABLE)
        if LINK.search(body):
            raise DomainError("A verification text must not contain links", field="body")
    if session is not None:
        from app.services.sms.words import matcher

        scan = matcher(session)
        hits: list[str] = []
        for part in literal_parts(body):
            result = scan.check(part)
            if result.blocked:
                hits += [h for h in result.hits if h not in hits]
        if hits:
            raise DomainError("The text contains blocked words: %(words)s", field="body",
                              words=", ".join(hits))


# --- the review workflow ------------------------------------------------------------------------------
def prepare_save(session, tpl, creating: bool) -> None:
    """The save rules of a new or edited template; a new one is a draft, and a content change to a
    pending or approved one sends it back to draft. DomainError with the field at fault."""
    if creating:
        tpl.status = DRAFT
    elif tpl.status in (PENDING_REVIEW, APPROVED):
        state = sa_inspect(tpl)
        if any(state.attrs[f].history.has_changes() for f in CONTENT_FIELDS):
            tpl.status, tpl.reviewed_by, tpl.review_note = DRAFT, None, None
    check_template(tpl, tpl.channel, session)


def submit(session, tpl) -> None:
    """Send a draft or rejected template to review (audited). The caller commits."""
    if tpl.status not in (DRAFT, REJECTED):
        raise DomainError("%(name)s is %(state)s: only a draft or rejected template goes to review",
                          field="status", status=409, name=str(tpl), state=tpl.status)
    check_template(tpl, tpl.channel, session)
    tpl.status = PENDING_REVIEW
    audit.record(session, "sms_template_submit", target_type="sms_template", target_id=tpl.id,
                 summary=str(tpl))


def review(session, tpl, approve: bool, note: str | None = None, actor: str | None = None) -> None:
    """Approve or reject a pending template, with the reviewer and an optional note (audited). Approval
    checks the text again: the sensitive-word list may have changed since it was submitted. The caller
    commits."""
    if tpl.status != PENDING_REVIEW:
        raise DomainError("%(name)s is %(state)s: only a pending template can be reviewed",
                          field="status", status=409, name=str(tpl), state=tpl.status)
    if approve:
        check_template(tpl, tpl.channel, session)
    tpl.status = APPROVED if approve else REJECTED
    tpl.reviewed_by = actor
    tpl.review_note = (note or "").strip()[:MAX_NOTE] or None
    audit.record(session, "sms_template_approve" if approve else "sms_template_reject",
                 target_type="sms_template", target_id=tpl.id,
                 summary=f"{tpl}: {tpl.status}" + (f" ({tpl.review_note})" if tpl.review_note else ""))


def sample_values(tpl, sample: dict | None = None) -> dict:
    """Values to preview with: the given sample, then a plausible stand-in per variable."""
    values = {}
    for name in variables_used(tpl.body) or declared(tpl.variables):
        given = (sample or {}).get(name)
        if given is not None and str(given) != "":
            values[name] = str(given)
        elif name == CODE_VARIABLE:
            values[name] = "123456"
        else:
            values[name] = f"[{name}]"
    return values


@dataclass
class Preview:
    text: str  # the full message, signature included, sensitive words masked
    length: int
    segments: int
    blocked: bool = False
    hits: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"text": self.text, "length": self.length, "segments": self.segments,
                "blocked": self.blocked, "hits": self.hits, "values": self.values}


def preview(tpl, sample: dict | None = None, session=None, channel=None) -> Preview:
    """The message the template gives with sample data: text, length, segments, sensitive hits."""
    channel = channel if channel is not None else getattr(tpl, "channel", None)
    values = sample_values(tpl, sample)
    text = render(tpl.body or "", values)
    blocked, hits = False, []
    if session is not None:
        from app.services.sms.words import matcher

        result = matcher(session).check(text)
        text, blocked, hits = result.text, result.blocked, result.hits
    full = compose(getattr(channel, "signature", None), text)
    return Preview(full, len(full), segments(full), blocked, hits, values)
