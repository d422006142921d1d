"""Segments: saved filters over customers or opportunities, compiled to SQL.

A segment's criteria is a JSON object written only by `validate` (from the segment form or the API),
never typed by hand. Every key is optional; an empty object matches every customer (or opportunity):

    tags_any / tags_all / tags_none   tag ids (a customer tag is looked up on the customer, an
                                      opportunity tag on the opportunity — for a customer segment, on
                                      any of the customer's opportunities)
    stages, product_lines             dictionary item ids         (of the opportunity)
    campaigns                         marketing campaign ids      (the opportunity's first touch)
    statuses                          opportunity statuses (waiting / owned / pooled / won / lost)
    regions                           region names                (the customer's; the opportunity's own)
    lessons_min                       lessons attended at least   (learning summary)
    active_within_days                seen in class within N days (learning summary)
    contacted_within_days             last follow-up within N days
    not_contacted_days                no follow-up for N days or more (never counts as not contacted)
    win_min / win_max                 win probability in percent, 0…100 (unscored opportunities fail both)
    consent                           true / false: the customer's marketing consent

For a customer segment, the opportunity criteria (stages … win) hold when one opportunity of the customer
meets all of them together.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import exists, func, not_, or_, select, text
from sqlalchemy.orm import aliased

from app.clock import utcnow
from app.models.bigdata import CUSTOMER, OPPORTUNITY, SUBJECTS, CustomerTag, OpportunityTag, Segment, Tag
from app.models.learning import LearningSummary
from app.models.sales import STATUSES, Customer, Opportunity
from app.security.scope import Viewer, scope_clause
from app.services.errors import DomainError

ID_LISTS = ("tags_any", "tags_all", "tags_none", "stages", "product_lines", "campaigns")
NUMBERS = {"lessons_min": (0, 10_000), "active_within_days": (1, 3650), "contacted_within_days": (1, 3650),
           "not_contacted_days": (1, 3650), "win_min": (0, 100), "win_max": (0, 100)}
KEYS = (*ID_LISTS, "statuses", "regions", *NUMBERS, "consent")
_OPPORTUNITY_KEYS = ("stages", "product_lines", "campaigns", "statuses", "contacted_within_days",
                     "not_contacted_days", "win_min", "win_max")
MAX_LIST = 200
REGION_MAX = 64


def validate(criteria, strict: bool = False) -> dict:
    """The criteria, checked and normalised (ints, sorted lists, no empty values); a DomainError names the
    first bad key. `strict` (the JSON API): ids and numbers must be JSON integers, as its document says,
    not their digits in a string (which the form's fields send)."""
    if not isinstance(criteria, dict):
        raise DomainError("The criteria must be an object", field="criteria", status=400)
    unknown = sorted(set(criteria) - set(KEYS))
    if unknown:
        raise DomainError("Unknown criterion: %(name)s", field=unknown[0], name=unknown[0])
    if strict:
        _strict_types(criteria)
    out: dict = {}
    for key in ID_LISTS:
        values = criteria.get(key)
        if values in (None, "", []):
            continue
        if not isinstance(values, list) or len(values) > MAX_LIST:
            raise DomainError("Choose up to %(n)s items", field=key, n=MAX_LIST)
        try:
            ids = sorted({int(v) for v in values})
        except (TypeError, ValueError):
            raise DomainError("Not a valid choice", field=key) from None
        if any(i <= 0 or i > 2**31 - 1 for i in ids):
            raise DomainError("Not a valid choice", field=key)
        out[key] = ids
    for key in ("statuses", "regions"):
        values = criteria.get(key)
        if values in (None, "", []):
            continue
        if not isinstance(values, list) or len(values) > MAX_LIST \
                or not all(isinstance(v, str) for v in values):
            raise DomainError("Choose up to %(n)s items", field=key, n=MAX_LIST)
        values = sorted({v.strip()[:64] for v in values if v.strip()})
        if key == "statuses" and not set(values) <= set(STATUSES):
            raise DomainError("Not a valid choice", field=key)
        if values:
            out[key] = values
    for key, (low, high) in NUMBERS.items():
        value = criteria.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, bool):
            raise DomainError("Enter a whole number", field=key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise DomainError("Enter a whole number", field=key) from None
        if not low <= number <= high:
            raise DomainError("Enter a number from %(low)s to %(high)s", field=key, low=low, high=high)
        out[key] = number
    if "win_min" in out and "win_max" in out and out["win_min"] > out["win_max"]:
        raise DomainError("The lowest win probability is above the highest", field="win_min")
    consent = criteria.get("consent")
    if consent not in (None, ""):
        if not isinstance(consent, bool):
            raise DomainError("Consent must be true or false", field="consent")
        out["consent"] = consent
    return out


def _strict_types(criteria: dict) -> None:
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for key in ID_LISTS:
        values = criteria.get(key)
        if values is not None and (not isinstance(values, list) or not all(whole(v) for v in values)):
            raise DomainError("Not a valid choice", field=key)
    for key in NUMBERS:
        if criteria.get(key) is not None and not whole(criteria[key]):
            raise DomainError("Enter a whole number", field=key)
    statuses, regions = criteria.get("statuses"), criteria.get("regions")
    if isinstance(statuses, list) and not all(v in STATUSES for v in statuses):
        raise DomainError("Not a valid choice", field="statuses")
    if isinstance(regions, list) and any(isinstance(v, str) and len(v) > REGION_MAX for v in regions):
        raise DomainError("At most %(n)s characters", field="regions", n=REGION_MAX)


def criteria_of(segment: Segment) -> dict:
    try:
        return validate(json.loads(segment.criteria or "{}"))
    except ValueError:
        return {}


# --- compiling ----------------------------------------------------------------------------------------
# How the tag criteria compile, for PostgreSQL at a million customers (bench/segments.py):
# - one kind of tag (customer tags, or opportunity tags): `id IN (SELECT … FROM customer_tag WHERE tag_id
#   IN (…))`, a range of the tag table's primary key (tag_id, subject id) that the planner turns into a
#   semi-join (hash, merge or nested loop, whichever the sizes call for);
# - customer and opportunity tags mixed in "any of": an OR of two correlated EXISTS. Never an OR of two
#   IN: a member set too big to hash in work_mem would then be scanned once per row; an EXISTS in an OR
#   is hashed when it fits and otherwise probes the primary key per row;
# - "none of": NOT EXISTS, an anti-join (NOT IN can be neither).
def _tag_subjects(session, ids: list[int]) -> dict[int, str]:
    return dict(session.execute(select(Tag.id, Tag.subject).where(Tag.id.in_(ids))).all()) if ids else {}


def _one_of(column, ids: list[int]):
    return column == ids[0] if len(ids) == 1 else column.in_(ids)


def _members(kind: str, tag_ids: list[int], subject: str):
    """SELECT of the ids of the `subject` rows carrying one of `tag_ids` (all tags of `kind`), as the
    column the subject row is matched on (see _tagged)."""
    if kind == CUSTOMER:
        return select(CustomerTag.customer_id).where(_one_of(CustomerTag.tag_id, tag_ids))
    tagged = select(OpportunityTag.opportunity_id).where(_one_of(OpportunityTag.tag_id, tag_ids))
    if subject == OPPORTUNITY:
        return tagged
    holder = aliased(Opportunity)
    return (select(holder.customer_id).join(OpportunityTag, OpportunityTag.opportunity_id == holder.id)
            .where(_one_of(OpportunityTag.tag_id, tag_ids)))


def _tagged_one_kind(kind: str, tag_ids: list[int], subject: str, opportunity=Opportunity):
    """The subject rows carrying one of `tag_ids` (all of `kind`): a semi-join."""
    members = _members(kind, tag_ids, subject)
    if subject == CUSTOMER:
        return Customer.id.in_(members)
    return (opportunity.customer_id if kind == CUSTOMER else opportunity.id).in_(members)


def _has_tag(tag_ids: list[int], kind: str, subject: str, opportunity=Opportunity):
    """EXISTS: the subject row carries one of `tag_ids` (all of `kind`), correlated to the row."""
    if kind == CUSTOMER:
        customer_id = Customer.id if subject == CUSTOMER else opportunity.customer_id
        return exists().where(_one_of(CustomerTag.tag_id, tag_ids), CustomerTag.customer_id == customer_id)
    if subject == OPPORTUNITY:
        return exists().where(_one_of(OpportunityTag.tag_id, tag_ids),
                              OpportunityTag.opportunity_id == opportunity.id)
    holder = aliased(Opportunity)
    return exists().where(_one_of(OpportunityTag.tag_id, tag_ids), holder.customer_id == Customer.id,
                          OpportunityTag.opportunity_id == holder.id)


def _tag_clauses(session, c: dict, subject: str) -> list:
    tag_ids = [t for k in ("tags_any", "tags_all", "tags_none") for t in c.get(k, ())]
    subjects = _tag_subjects(session, tag_ids)
    clauses = []
    if "tags_any" in c:
        kinds: dict[str, list[int]] = {}
        for t in c["tags_any"]:
            kinds.setdefault(subjects.get(t, CUSTOMER), []).append(t)
        if len(kinds) == 1:
            (kind, ids), = kinds.items()
            clauses.append(_tagged_one_kind(kind, ids, subject))
        else:
            clauses.append(or_(*(_has_tag(ids, kind, subject) for kind, ids in sorted(kinds.items()))))
    clauses += [_tagged_one_kind(subjects.get(t, CUSTOMER), [t], subject) for t in c.get("tags_all", ())]
    clauses += [not_(_has_tag([t], subjects.get(t, CUSTOMER), subject)) for t in c.get("tags_none", ())]
    return clauses


def _opportunity_clauses(c: dict, now: dt.datetime) -> list:
    clauses = []
    if "stages" in c:
        clauses.append(Opportunity.stage_id.in_(c["stages"]))
    if "product_lines" in c:
        clauses.append(Opportunity.product_line_id.in_(c["product_lines"]))
    if "campaigns" in c:
        clauses.append(Opportunity.campaign_id.in_(c["campaigns"]))
    if "statuses" in c:
        clauses.append(Opportunity.status.in_(c["statuses"]))
    if "contacted_within_days" in c:
        clauses.append(Opportunity.last_followup_at >= now - dt.timedelta(days=c["contacted_within_days"]))
    if "not_contacted_days" in c:
        since = now - dt.timedelta(days=c["not_contacted_days"])
        clauses.append(func.coalesce(Opportunity.last_followup_at, Opportunity.created_at) < since)
    if "win_min" in c:
        clauses.append(Opportunity.win_probability >= c["win_min"] / 100)
    if "win_max" in c:
        clauses.append(Opportunity.win_probability <= c["win_max"] / 100)
    return clauses


def _customer_clauses(c: dict, now: dt.datetime, customer_id) -> list:
    clauses = []
    if "lessons_min" in c or "active_within_days" in c:
        learned = [LearningSummary.customer_id == customer_id]
        if "lessons_min" in c:
            learned.append(LearningSummary.lessons_attended >= c["lessons_min"])
        if "active_within_days" in c:
            learned.append(LearningSummary.last_active_at >= now - dt.timedelta(days=c["active_within_days"]))
        clauses.append(exists().where(*learned))
    return clauses


def where(session, subject: str, criteria: dict, now: dt.datetime | None = None) -> list:
    """WHERE clauses over Customer (subject customer) or Opportunity (subject opportunity: the customer's
    own criteria are subqueries correlated to Opportunity.customer_id) for the validated `criteria`."""
    if subject not in SUBJECTS:
        raise DomainError("Not a valid choice", field="subject")
    c, now = criteria, now or utcnow()
    clauses = _tag_clauses(session, c, subject)
    if "regions" in c:
        column = Customer.region if subject == CUSTOMER else Opportunity.region
        clauses.append(column.in_(c["regions"]))
    if "consent" in c and subject == CUSTOMER:
        clauses.append(Customer.marketing_consent.is_(c["consent"]))
    elif "consent" in c:  # the customers who refused are few: (NOT) EXISTS among them, no join of all
        refused = exists().where(Customer.id == Opportunity.customer_id,
                                 Customer.marketing_consent.is_(False))
        clauses.append(not_(refused) if c["consent"] else refused)
    customer_id = Customer.id if subject == CUSTOMER else Opportunity.customer_id
    clauses += _customer_clauses(c, now, customer_id)
    opportunity = _opportunity_clauses(c, now)
    if subject == OPPORTUNITY:
        clauses += opportunity
    else:
        clauses.append(Customer.merged_into_id.is_(None))
        if opportunity:
            clauses.append(exists().where(Opportunity.customer_id == Customer.id, *opportunity))
    return clauses


def _or(clauses):
    return or_(*clauses) if len(clauses) > 1 else clauses[0]


def ids_query(session, subject: str, criteria: dict, now: dt.datetime | None = None):
    """SELECT of the ids of the customers (or opportunities) the criteria match."""
    if subject == CUSTOMER:
        return select(Customer.id).where(*where(session, subject, criteria, now))
    return select(Opportunity.id).where(*where(session, subject, criteria, now))


def count(session, subject: str, criteria: dict, extra=(), now: dt.datetime | None = None) -> int:
    """How many customers / opportunities match (`extra`: more clauses, e.g. the viewer's data scope)."""
    query = ids_query(session, subject, criteria, now).where(*extra)
    if session.get_bind().dialect.name == "postgresql":
        # A count's per-row subplans inflate the estimated cost past jit_above_cost, and compiling the
        # plan (hundreds of ms) then costs more than it saves: not for this transaction's queries.
        session.execute(text("SET LOCAL jit = off"))
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def opportunities_among(session, segment: Segment, opportunity_ids,
                        now: dt.datetime | None = None) -> set[int]:
    """Which of `opportunity_ids` are in the segment (a customer segment: whose customer is in it); for the
    dispatch engine's match."""
    ids = list(opportunity_ids)
    if not ids:
        return set()
    criteria = criteria_of(segment)
    if segment.subject == OPPORTUNITY:
        query = ids_query(session, OPPORTUNITY, criteria, now).where(
            Opportunity.id.between(min(ids), max(ids)))
    else:
        members = ids_query(session, CUSTOMER, criteria, now).where(Customer.id == Opportunity.customer_id)
        query = select(Opportunity.id).where(Opportunity.id.between(min(ids), max(ids)), members.exists())
    wanted = set(ids)
    return {i for i in session.scalars(query) if i in wanted}


# --- commands -----------------------------------------------------------------------------------------
NAME_MAX, DESCRIPTION_MAX = 100, 255

# A segment steers who is messaged and where leads go: every create, change and delete is audited as a
# configuration change (the counters last_count / counted_at are not configuration).


def scope_clauses(subject: str, viewer: Viewer) -> list:
    """The viewer's data scope over the segment's subject (a customer: one of their opportunities is
    visible), as `extra` clauses for count / ids_query."""
    clause = scope_clause(Customer if subject == CUSTOMER else Opportunity, viewer)
    return [] if clause is None else [clause]


def count_for(session, subject: str, criteria: dict, viewer: Viewer, now: dt.datetime | None = None,
              strict: bool = False) -> int:
    """How many of the rows the viewer may see match (a salesperson counts only their own)."""
    if subject not in SUBJECTS:
        raise DomainError("Not a valid choice", field="subject")
    return count(session, subject, validate(criteria, strict), scope_clauses(subject, viewer), now)


def _text(value, field: str, limit: int, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise DomainError("This field is required", field=field)
        return None
    if not isinstance(value, str):
        raise DomainError("Must be text", field=field)
    value = value.strip()
    if required and not value:
        raise DomainError("This field is required", field=field)
    if len(value) > limit:
        raise DomainError("At most %(n)s characters", field=field, n=limit)
    return value or None


def _known_ids(session, criteria: dict) -> None:
    """Every id in the criteria names a row that exists (a tag, a dictionary item, a campaign)."""
    from app.models.marketing import MarketingCampaign
    from app.models.metadata import DictItem

    for key, model in (("tags_any", Tag), ("tags_all", Tag), ("tags_none", Tag), ("stages", DictItem),
                       ("product_lines", DictItem), ("campaigns", MarketingCampaign)):
        ids = criteria.get(key)
        if ids and session.scalar(select(func.count()).where(model.id.in_(ids))) != len(ids):
            raise DomainError("Not a valid choice", field=key)


def save(session, segment_id: int | None, values: dict, author: str | None, viewer: Viewer | None = None,
         now: dt.datetime | None = None, strict: bool = False) -> Segment:
    """Create (segment_id None) or change a segment from `values` (name, description, subject,
    criteria); counts it for its author's scope when a viewer is given. `strict`: see validate."""
    now = now or utcnow()
    if not isinstance(values, dict):
        raise DomainError("The body must be a JSON object", status=400)
    segment = None
    if segment_id is not None:
        segment = session.get(Segment, segment_id)
        if segment is None:
            raise DomainError("No such segment", field="id", status=404)
    name = _text(values.get("name", segment.name if segment else None), "name", NAME_MAX, required=True)
    description = _text(values.get("description", segment.description if segment else None),
                        "description", DESCRIPTION_MAX)
    subject = values.get("subject", segment.subject if segment else CUSTOMER)
    if subject not in SUBJECTS:
        raise DomainError("Not a valid choice", field="subject")
    criteria = validate(values["criteria"], strict) if "criteria" in values else (
        criteria_of(segment) if segment else {})
    _known_ids(session, criteria)
    clash = session.scalar(select(Segment.id).where(func.lower(Segment.name) == name.lower(),
                                                    Segment.id != (segment_id or 0)))
    if clash is not None:
        raise DomainError("A segment with this name already exists", field="name", status=409)
    if segment is None:
        segment = Segment(created_by=author)
        session.add(segment)
    segment.name, segment.description, segment.subject = name, description, subject
    segment.criteria = json.dumps(criteria, sort_keys=True)
    if viewer is not None:
        segment.last_count = count(session, subject, criteria, scope_clauses(subject, viewer), now)
        segment.counted_at = now
    session.flush()
    return segment


def users_of(session, segment_id: int) -> tuple[str, str] | None:
    """(field, name) of the first SMS campaign or dispatch rule that uses the segment, else None."""
    from app.models.sales import DispatchRule
    from app.models.sms import SmsCampaign

    name = session.scalar(select(SmsCampaign.name).where(SmsCampaign.segment_id == segment_id).limit(1))
    if name is not None:
        return "sms_campaign.segment_id", name
    name = session.scalar(select(DispatchRule.name).where(DispatchRule.match_segment_id == segment_id)
                          .limit(1))
    return ("dispatch_rule.match_segment_id", name) if name is not None else None


def delete(session, segment_id: int) -> str:
    """Delete a segment nothing uses (an SMS campaign's audience, a dispatch rule's match); its name."""
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise DomainError("No such segment", field="id", status=404)
    used = users_of(session, segment_id)
    if used is not None:
        field, name = used
        message = ("Used by the SMS campaign %(name)s" if field.startswith("sms")
                   else "Used by the dispatch rule %(name)s")
        raise DomainError(message, field=field, status=409, name=name)
    session.delete(segment)
    session.flush()
    return segment.name


def recount(session, segment: Segment, viewer: Viewer, now: dt.datetime | None = None) -> int:
    """Count the segment for the viewer's scope and keep it as its last count."""
    now = now or utcnow()
    segment.last_count = count(session, segment.subject, criteria_of(segment),
                               scope_clauses(segment.subject, viewer), now)
    segment.counted_at = now
    session.flush()
    return segment.last_count


def visible_ids_clause(session, segment: Segment, subject: str, now: dt.datetime | None = None):
    """A clause over Customer (subject customer) or Opportunity (subject opportunity) keeping the rows in
    `segment` — for a list filter. A customer segment filters opportunities by their customer; an
    opportunity segment filters customers by one of their opportunities."""
    criteria = criteria_of(segment)
    if subject == segment.subject:
        model = Customer if subject == CUSTOMER else Opportunity
        return model.id.in_(ids_query(session, subject, criteria, now))
    if subject == OPPORTUNITY:
        return Opportunity.customer_id.in_(ids_query(session, CUSTOMER, criteria, now))
    return Customer.id.in_(ids_query(session, OPPORTUNITY, criteria, now)
                           .with_only_columns(Opportunity.customer_id))
