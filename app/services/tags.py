"""Tags on customers and opportunities: the definitions (manual, rule, import) and manual tagging.

A tag definition is checked by `check_tag` (the Tags form and the seed call it): a code that stays the
big-data system's key (letters, digits, "-", "_", "."), a name, a source, a subject, and for a rule tag a
known rule with its parameter (app.services.tag_rules computes the members). Source and subject do not
change once the tag has members: the rows would no longer mean what they say.

Manual tagging (`tag` / `untag`) is the only way people change members: only a manual tag, only of the
tag's subject, only on a row in the viewer's data scope (else 404, as if it did not exist). Both are
idempotent (a second add or remove changes nothing and is not audited again) and audited with who and
what. Rule tags are only computed; imported tags are only sent by the big-data system
(app.services.tag_import).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from app import clock
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    IMPORTED,
    MANUAL,
    OPPORTUNITY,
    RULE,
    SUBJECTS,
    TAG_RULES,
    TAG_SOURCES,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    CustomerTag,
    OpportunityTag,
    Tag,
)
from app.models.marketing import MarketingCampaign
from app.models.sales import Customer, Opportunity
from app.security.input_guards import storable_id
from app.security.scope import Viewer, restrict
from app.services import audit
from app.services.errors import DomainError
from app.services.sql import dialect_insert

CODE_MAX = Tag.__table__.c.code.type.length
NAME_MAX = Tag.__table__.c.name.type.length
DESCRIPTION_MAX = Tag.__table__.c.description.type.length
RULE_TEXT_MAX = Tag.__table__.c.rule_text.type.length
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
NUMBER_MAX = 10_000  # lessons, days or calls: more is a typo

#: rule → (the subjects it may be about, the parameter it needs: "number", "text" or "campaign")
RULES = {
    TRIAL_LESSONS: ((CUSTOMER,), "number"),
    IDLE_DAYS: ((OPPORTUNITY,), "number"),
    VISITED_PAGE: ((CUSTOMER,), "text"),
    FROM_CAMPAIGN: ((CUSTOMER, OPPORTUNITY), "campaign"),
    UNREACHED_CALLS: ((OPPORTUNITY,), "number"),
}
TAGGED_ACTION, UNTAGGED_ACTION = "tag_added", "tag_removed"  # AuditLog.action of manual tagging


def member_model(subject: str):
    """The membership table of a subject: (model, the column naming the customer / opportunity)."""
    if subject == OPPORTUNITY:
        return OpportunityTag, OpportunityTag.opportunity_id
    return CustomerTag, CustomerTag.customer_id


def subject_model(subject: str):
    return Opportunity if subject == OPPORTUNITY else Customer


# --- definitions ------------------------------------------------------------------------------------------
def _has_members(session, tag: Tag) -> bool:
    """Whether any customer or opportunity carries the tag (whatever its subject says now)."""
    return any(session.scalar(select(model.tag_id).where(model.tag_id == tag.id).limit(1)) is not None
               for model in (CustomerTag, OpportunityTag))


def check_code(code, field: str = "code") -> str:
    code = (code or "").strip() if isinstance(code, str) else code
    if not code or not isinstance(code, str):
        raise DomainError("Give the tag's code", field=field)
    if len(code) > CODE_MAX:
        raise DomainError("At most %(limit)s characters", field=field, limit=CODE_MAX)
    if not CODE_PATTERN.match(code):
        raise DomainError("A code is letters, digits, - _ and . (starting with a letter or digit)",
                          field=field)
    return code


def check_tag(session, tag: Tag, creating: bool) -> None:
    """Validate (and tidy) a tag definition before it is saved; DomainError naming the field.

    Parameters of other rules are cleared; a changed rule or parameter makes the tag "not computed yet"
    (the next refresh computes it)."""
    tag.code = check_code(tag.code)
    tag.name = (tag.name or "").strip()
    if not tag.name:
        raise DomainError("Give the tag's name", field="name")
    if len(tag.name) > NAME_MAX:
        raise DomainError("At most %(limit)s characters", field="name", limit=NAME_MAX)
    if tag.description and len(tag.description) > DESCRIPTION_MAX:
        raise DomainError("At most %(limit)s characters", field="description", limit=DESCRIPTION_MAX)
    if tag.source not in TAG_SOURCES:
        raise DomainError("Choose a source", field="source")
    if tag.subject not in SUBJECTS:
        raise DomainError("Choose what the tag is about", field="subject")
    same_code = select(Tag.id).where(func.lower(Tag.code) == tag.code.lower())
    if tag.id is not None:
        same_code = same_code.where(Tag.id != tag.id)
    if session.scalar(same_code.limit(1)) is not None:
        raise DomainError("Another tag has the code %(code)s", field="code", code=tag.code)
    if tag.source == RULE:
        _check_rule(session, tag)
    else:
        tag.rule = tag.rule_number = tag.rule_text = tag.rule_campaign_id = None
        if getattr(tag, "rule_campaign", None) is not None:
            tag.rule_campaign = None
    if tag.enabled is None:
        tag.enabled = True
    if not creating:
        changed = _changed(session, tag)
        if changed & {"source", "subject"} and _has_members(session, tag):
            field = "source" if "source" in changed else "subject"
            raise DomainError("The tag has members: its source and subject cannot change", field=field)
        if "code" in changed and tag.source == IMPORTED:
            raise DomainError("An imported tag's code is the big-data system's key: it cannot change",
                              field="code")
        if changed & {"rule", "rule_number", "rule_text", "rule_campaign_id"}:
            tag.computed_at = None
    if creating:
        tag.member_count = 0


_KEPT = ("source", "subject", "code", "rule", "rule_number", "rule_text", "rule_campaign_id")


def _changed(session, tag: Tag) -> set[str]:
    """The columns of `_KEPT` whose new value differs from the stored row (read from the database: an
    attribute set on an expired object has no history to tell)."""
    with session.no_autoflush:
        stored = session.execute(select(*(getattr(Tag, k) for k in _KEPT)).where(Tag.id == tag.id)).first()
    if stored is None:
        return set()
    return {k for k, old in zip(_KEPT, stored, strict=True) if getattr(tag, k) != old}


def _check_rule(session, tag: Tag) -> None:
    if tag.rule not in TAG_RULES:
        raise DomainError("Choose the rule that computes the tag", field="rule")
    subjects, parameter = RULES[tag.rule]
    if tag.subject not in subjects:
        raise DomainError("This rule computes tags of customers only" if subjects == (CUSTOMER,)
                          else "This rule computes tags of opportunities only", field="subject")
    chosen = getattr(tag, "rule_campaign", None)  # a form sets the relationship, the seed / API the id
    campaign_id = chosen.id if chosen is not None else tag.rule_campaign_id
    if parameter == "number":
        number = tag.rule_number
        if isinstance(number, str):
            number = int(number) if number.strip().isdigit() and len(number.strip()) < 8 else None
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= NUMBER_MAX:
            raise DomainError("Give a whole number between 1 and %(high)s", field="rule_number",
                              high=NUMBER_MAX)
        tag.rule_number = number
        tag.rule_text, tag.rule_campaign_id = None, None
        tag.rule_campaign = None
    elif parameter == "text":
        text = (tag.rule_text or "").strip()
        if not text:
            raise DomainError("Give the page: a part of its address, e.g. /price", field="rule_text")
        if len(text) > RULE_TEXT_MAX:
            raise DomainError("At most %(limit)s characters", field="rule_text", limit=RULE_TEXT_MAX)
        tag.rule_text = text
        tag.rule_number, tag.rule_campaign_id = None, None
        tag.rule_campaign = None
    else:
        if not campaign_id or not storable_id(campaign_id) \
                or session.get(MarketingCampaign, campaign_id) is None:
            raise DomainError("Choose the marketing campaign", field="rule_campaign")
        tag.rule_campaign_id = campaign_id
        tag.rule_number, tag.rule_text = None, None


@dataclass
class TagValues:
    """What a tag form or the seed gives (a command's input)."""

    code: str
    name: str
    source: str = MANUAL
    subject: str = CUSTOMER
    rule: str | None = None
    rule_number: int | None = None
    rule_text: str | None = None
    rule_campaign_id: int | None = None
    description: str | None = None
    enabled: bool = True


def save_tag(session, values: TagValues, tag_id: int | None = None) -> Tag:
    """Create (tag_id None) or change a tag definition; the caller commits. Audited by the change capture."""
    tag = Tag() if tag_id is None else session.get(Tag, tag_id)
    if tag is None:
        raise DomainError("No such tag", status=404)
    for name, value in vars(values).items():
        setattr(tag, name, value)
    campaign = values.rule_campaign_id
    if campaign and storable_id(campaign):
        tag.rule_campaign = session.get(MarketingCampaign, campaign)
    with session.no_autoflush:
        check_tag(session, tag, creating=tag_id is None)
    if tag_id is None:
        session.add(tag)
    session.flush()
    return tag


def by_code(session, code: str) -> Tag | None:
    return session.scalar(select(Tag).where(Tag.code == code))


def manual_tags(session, subject: str) -> list[Tag]:
    """The enabled manual tags of a subject (what a person may put on), by name."""
    return list(session.scalars(select(Tag).where(Tag.source == MANUAL, Tag.subject == subject,
                                                  Tag.enabled.is_(True)).order_by(Tag.name, Tag.id)))


def rule_in_words(tag: Tag) -> str:
    """The rule as a sentence (English msgids; views translate them with the same parameters)."""
    return rule_words(tag)[0] % rule_words(tag)[1] if tag.rule else ""


def rule_words(tag: Tag) -> tuple[str, dict]:
    """(msgid, params) of a rule tag's rule, for the views to translate."""
    if tag.rule == TRIAL_LESSONS:
        return "Attended at least %(n)s lessons", {"n": tag.rule_number}
    if tag.rule == IDLE_DAYS:
        return "Open, not followed up for %(n)s days or more", {"n": tag.rule_number}
    if tag.rule == VISITED_PAGE:
        return "Viewed a page whose address contains “%(text)s”", {"text": tag.rule_text}
    if tag.rule == FROM_CAMPAIGN:
        campaign = tag.rule_campaign
        return "Came from the campaign %(campaign)s", {"campaign": str(campaign) if campaign else "?"}
    if tag.rule == UNREACHED_CALLS:
        return "Called %(n)s times or more, never connected", {"n": tag.rule_number}
    return "", {}


# --- manual tagging --------------------------------------------------------------------------------------
def visible_item(session, viewer: Viewer, subject: str, item_id) -> int:
    """The id of the customer / opportunity `item_id` if the viewer may see it, else 404."""
    model = subject_model(subject)
    if not isinstance(item_id, int) or isinstance(item_id, bool) or not storable_id(item_id):
        raise DomainError("Not found or outside your data scope", field="id", status=404)
    query = restrict(select(model.id).where(model.id == item_id), model, viewer)
    if model is Customer:
        query = query.where(Customer.merged_into_id.is_(None))
    if session.scalar(query) is None:
        raise DomainError("Not found or outside your data scope", field="id", status=404)
    return item_id


def _manual_tag(session, subject: str, tag_id) -> Tag:
    tag = session.get(Tag, tag_id) if isinstance(tag_id, int) and not isinstance(tag_id, bool) \
        and storable_id(tag_id) else None
    if tag is None:
        raise DomainError("No such tag", field="tag_id", status=404)
    if tag.source != MANUAL:
        raise DomainError("Only manual tags are put on by hand: %(name)s is a %(source)s tag", field="tag_id",
                          name=tag.name, source=tag.source)
    if tag.subject != subject:
        raise DomainError("%(name)s is not a tag of this kind of record", field="tag_id", name=tag.name)
    return tag


def _refresh_count(session, tag: Tag) -> None:
    model, _ = member_model(tag.subject)
    tag.member_count = session.scalar(select(func.count()).select_from(model).where(model.tag_id == tag.id))


def add_tag(session, viewer: Viewer, subject: str, item_id, tag_id, actor: str | None,
        now: dt.datetime | None = None) -> bool:
    """Put the manual tag `tag_id` on a customer / opportunity in scope; False when it was there already.
    The caller commits."""
    item_id = visible_item(session, viewer, subject, item_id)
    found = _manual_tag(session, subject, tag_id)
    if not found.enabled:
        raise DomainError("%(name)s is disabled", field="tag_id", name=found.name)
    model, column = member_model(subject)
    stmt = (dialect_insert(session, model.__table__)
            .values({"tag_id": found.id, column.key: item_id, "source": MANUAL,
                     "added_at": now or clock.utcnow(), "added_by": actor})
            .on_conflict_do_nothing().returning(model.__table__.c.tag_id))
    added = session.execute(stmt).first() is not None
    if added:
        _refresh_count(session, found)
        audit.record(session, TAGGED_ACTION, target_type=subject, target_id=item_id,
                     summary=f"{found.name} ({found.code})", after={"tag": found.code})
    session.flush()
    return added


def remove_tag(session, viewer: Viewer, subject: str, item_id, tag_id, actor: str | None = None) -> bool:
    """Take the manual tag `tag_id` off a customer / opportunity in scope; False when it was not on."""
    item_id = visible_item(session, viewer, subject, item_id)
    found = _manual_tag(session, subject, tag_id)
    model, column = member_model(subject)
    removed = session.execute(delete(model).where(model.tag_id == found.id, column == item_id,
                                                  model.source == MANUAL).returning(model.tag_id)
                              .execution_options(synchronize_session=False)).first() is not None
    if removed:
        _refresh_count(session, found)
        audit.record(session, UNTAGGED_ACTION, target_type=subject, target_id=item_id,
                     summary=f"{found.name} ({found.code})", before={"tag": found.code})
    session.flush()
    return removed


@dataclass
class Membership:
    tag: Tag
    source: str
    added_at: dt.datetime
    added_by: str | None


def tags_of(session, subject: str, item_id: int) -> list[Membership]:
    """The tags on a customer / opportunity (the caller checked the scope), by name."""
    model, column = member_model(subject)
    rows = session.execute(select(model, Tag).join(Tag, Tag.id == model.tag_id)
                           .where(column == item_id).order_by(Tag.name, Tag.id))
    return [Membership(t, m.source, m.added_at, m.added_by) for m, t in rows]
