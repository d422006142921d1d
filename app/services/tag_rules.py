"""Rule tags: one tag's members computed set-wise in SQL.

`recompute(session, tag)` runs three statements whatever the size of the database:
  INSERT INTO <customer|opportunity>_tag SELECT the matching rows that are not members yet;
  DELETE the members (source "rule" only) that no longer match;
  UPDATE the tag's member_count and computed_at.
Each rule is one correlated condition (`matches`) on the subject's id — EXISTS / IN over an indexed
column — so PostgreSQL plans semi- and anti-joins (hash joins over the big tables) rather than a loop per
row in Python. Recomputing is idempotent: run twice, the second changes nothing but computed_at.

The rules (the tag's parameter in brackets):
- trial_lessons [rule_number] customers whose learning summary counts ≥ n lessons attended;
- idle_days [rule_number]: open opportunities whose circulation clock (idle_since: the later of the last
  assignment and the last follow-up; the creation time while neither happened) is ≥ n days old;
- visited_page [rule_text]: customers with a page_view event whose address contains the text;
- from_campaign [rule_campaign_id]: a customer with a lead or opportunity of the campaign; an
  opportunity whose first-touch campaign it is;
- unreached_calls [rule_number]: open opportunities called ≥ n times (calls that ended; a provider error
  is no call) and never connected (no call answered).
Merged customers are never members (the survivor stands for them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, false, func, literal, or_, select, update

from app import clock
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    OPPORTUNITY,
    PAGE_VIEW,
    RULE,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    CustomerEvent,
    Tag,
)
from app.models.calls import CALL_FINAL, CallRecord
from app.models.learning import LearningSummary
from app.models.sales import OPEN_STATUSES, Customer, Lead, Opportunity
from app.services.errors import DomainError
from app.services.sql import dialect_insert
from app.services.tags import member_model

NOT_A_CALL = "provider_error"  # CallRecord.result of a call the provider never placed


@dataclass
class Recomputed:
    tag_id: int
    added: int
    removed: int
    members: int


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def matches(tag: Tag, now: dt.datetime, per_row: bool = False):
    """(the subject's table, WHERE condition on it) selecting the rows the rule tag applies to.

    `per_row`: the condition is checked for a few rows at a time (the members, in the DELETE), so it must
    be a lookup by the row's id; otherwise it may compute a set once (the calls grouped per opportunity)."""
    if tag.subject == CUSTOMER:
        c = Customer
        standing = c.merged_into_id.is_(None)
        if tag.rule == TRIAL_LESSONS:
            return c, and_(standing, exists().where(LearningSummary.customer_id == c.id,
                                                    LearningSummary.lessons_attended >= tag.rule_number))
        if tag.rule == VISITED_PAGE:
            e = CustomerEvent
            return c, and_(standing, exists().where(e.customer_id == c.id, e.kind == PAGE_VIEW,
                                                    e.detail.like(_like_pattern(tag.rule_text or ""),
                                                                  escape="\\")))
        if tag.rule == FROM_CAMPAIGN:
            cid = tag.rule_campaign_id
            return c, and_(standing, or_(exists().where(Lead.customer_id == c.id, Lead.campaign_id == cid),
                                         exists().where(Opportunity.customer_id == c.id,
                                                        Opportunity.campaign_id == cid)))
    elif tag.subject == OPPORTUNITY:
        o = Opportunity
        is_open = o.status.in_(OPEN_STATUSES)
        if tag.rule == IDLE_DAYS:
            cutoff = now - dt.timedelta(days=tag.rule_number)
            return o, and_(is_open, or_(o.idle_since <= cutoff,
                                        and_(o.idle_since.is_(None), o.created_at <= cutoff)))
        if tag.rule == FROM_CAMPAIGN:
            return o, o.campaign_id == tag.rule_campaign_id
        if tag.rule == UNREACHED_CALLS:
            cr = CallRecord
            placed = and_(cr.status.in_(CALL_FINAL), or_(cr.result.is_(None), cr.result != NOT_A_CALL))
            # any call answered (one still going on too) means reached
            reached = exists().where(cr.opportunity_id == o.id, cr.answered_at.is_not(None))
            if per_row:  # the calls of this opportunity, through the index on opportunity_id
                calls = select(func.count()).where(cr.opportunity_id == o.id, placed).scalar_subquery()
                return o, and_(is_open, calls >= tag.rule_number, ~reached)
            unreached = (select(cr.opportunity_id).where(cr.opportunity_id.is_not(None), placed)
                         .group_by(cr.opportunity_id)
                         .having(func.count() >= tag.rule_number)
                         .having(func.count(cr.answered_at) == 0))
            return o, and_(is_open, o.id.in_(unreached), ~reached)
    raise DomainError("The rule %(rule)s does not compute tags of %(subject)s", field="rule",
                      rule=tag.rule or "", subject=tag.subject)


def recompute(session, tag: Tag, now: dt.datetime | None = None) -> Recomputed:
    """Bring the rule tag's members in line with its rule (see the module docstring); the caller commits."""
    if tag.source != RULE:
        raise DomainError("Only rule tags are computed", field="source")
    now = now or clock.utcnow()
    member, column = member_model(tag.subject)
    counted = select(func.count()).select_from(member).where(member.tag_id == tag.id)
    before = session.scalar(counted)  # rowcount of INSERT … SELECT is not reliable on every driver
    # First the members that no longer match: a lookup per member (the set being the old one, small on
    # the first run), then the rows that match and are not members: one anti-join over the subject.
    subject, still = matches(tag, now, per_row=True)
    session.execute(delete(member).where(member.tag_id == tag.id, member.source == RULE,
                                         ~exists().where(subject.id == column, still))
                    .execution_options(synchronize_session=False))
    kept = session.scalar(counted)
    subject, condition = matches(tag, now)
    already = exists().where(member.tag_id == tag.id, column == subject.id)
    new = (select(literal(tag.id), subject.id, literal(RULE), literal(now, type_=member.added_at.type))
           .where(condition, ~already))
    # ON CONFLICT: a run of this tag alone and the nightly run of all tags may overlap
    columns = ["tag_id", column.key, "source", "added_at"]
    session.execute(dialect_insert(session, member.__table__).from_select(columns, new)
                    .on_conflict_do_nothing())
    count = session.scalar(counted)
    added, removed = count - kept, before - kept
    session.execute(update(Tag).where(Tag.id == tag.id).values(member_count=count, computed_at=now)
                    .execution_options(synchronize_session=False))
    tag.member_count, tag.computed_at = count, now
    session.flush()
    return Recomputed(tag.id, added, removed, count)


def refreshable(session, after_id: int = 0, only: list[int] | None = None):
    """The enabled rule tags to compute, in id order, after `after_id` (a resumed run goes on)."""
    query = select(Tag).where(Tag.source == RULE, Tag.enabled.is_(True), Tag.id > after_id)
    if only is not None:
        query = query.where(Tag.id.in_(only) if only else false())
    return list(session.scalars(query.order_by(Tag.id)))


def recompute_all(session, now: dt.datetime | None = None) -> list[Recomputed]:
    """Every enabled rule tag, one after the other (the demo seed and the bench; the job commits per tag)."""
    return [recompute(session, t, now) for t in refreshable(session)]
