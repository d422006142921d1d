"""What the win-probability model sees of an opportunity: its variables, read set-wise in SQL by chunks.

`features(session, ids)` / `page(session, after_id=…, limit=…)` return `{opportunity id: {variable: value}}`
(values as app.services.scoring_model expects them): a handful of statements per chunk (the opportunity
with its dictionary codes, then one grouped count per kind of activity, then the tags), never a query per
opportunity, so a million opportunities stream through in flat memory.

Calls count as the tag rules count them: calls that ended (answered or not), not the ones the provider
never placed. What a closed opportunity is allowed to tell (no leakage of its outcome):
- counts (follow-ups, calls, attended lessons) and tags only up to its closed_at: a won customer goes on
  to attend lessons and collects tags after paying, which would otherwise "predict" winning;
- its stage is the closing one ("won" / "lost"), i.e. the outcome itself: the stage it closed from
  (Opportunity.closed_from_stage_id, kept since migration 0016) is read instead, and unknown when that
  was not recorded (opportunities closed before it).
Open opportunities are read as they are now.
"""

from __future__ import annotations

from sqlalchemy import and_, case, func, or_, select

from app.models.bigdata import CustomerTag, OpportunityTag, Tag
from app.models.calls import CALL_FINAL, CallRecord
from app.models.learning import LearningActivity
from app.models.marketing import MarketingCampaign
from app.models.metadata import DictItem, DictType
from app.models.sales import OPEN_STATUSES, Customer, FollowUp, Opportunity
from app.services.sql import id_in

#: The variables an administrator may choose (config key scoring.variables); the UI labels them.
VARIABLES = ("source", "campaign", "product_line", "region", "intention_level", "stage", "follow_ups",
             "calls", "learning", "tags")
#: Variables whose value is a dictionary item's code, and that dictionary.
DICT_VARIABLES = {"source": "lead_source", "product_line": "product_line",
                  "intention_level": "intention_level", "stage": "opportunity_stage"}
CLOSING_STAGES = ("won", "lost")
FOLLOW_UP_BINS = ((0, "0"), (1, "1"), (2, "2-3"), (4, "4-6"), (7, "7+"))
CALL_BINS = ((0, "0"), (1, "1-2"), (3, "3-5"), (6, "6+"))
LESSON_BINS = ((0, "0"), (1, "1-2"), (3, "3-5"), (6, "6+"))
CONNECTED, UNREACHED = "✓", "✗"  # calls: at least one answered / none answered
CHUNK = 2000
NOT_A_CALL = "provider_error"  # CallRecord.result of a call the provider never placed (as the tag rules)


def bin_label(n: int, bins) -> str:
    label = bins[0][1]
    for low, name in bins:
        if n >= low:
            label = name
    return label


def calls_value(count: int, connected: bool) -> str:
    """"0", or the bin of the number of calls and whether any was answered: "3-5 ✓", "1-2 ✗"."""
    if not count:
        return "0"
    return f"{bin_label(count, CALL_BINS)} {CONNECTED if connected else UNREACHED}"


def _rows(session, ids: list[int], variables) -> dict[int, dict]:
    dialect = session.get_bind().dialect.name
    o = Opportunity
    wanted = set(variables)
    columns = [o.id, o.status, o.closed_at, o.customer_id]
    stage = select(DictItem.code).where(DictItem.id == o.stage_id).scalar_subquery()
    closed_from = select(DictItem.code).where(DictItem.id == o.closed_from_stage_id).scalar_subquery()
    source = select(DictItem.code).where(DictItem.id == o.source_id).scalar_subquery()
    line = select(DictItem.code).where(DictItem.id == o.product_line_id).scalar_subquery()
    intention = select(DictItem.code).where(DictItem.id == o.intention_level_id).scalar_subquery()
    campaign = func.coalesce(select(MarketingCampaign.code).where(MarketingCampaign.id == o.campaign_id)
                             .scalar_subquery(), o.campaign)
    region = func.coalesce(o.region, select(Customer.region).where(Customer.id == o.customer_id)
                           .scalar_subquery())
    columns += [stage, source, line, intention, campaign, region, closed_from]
    out: dict[int, dict] = {}
    for oid, status, closed_at, _cust, st, src, pl, il, camp, reg, before in session.execute(
            select(*columns).where(id_in(o.id, ids, dialect))):
        closed = status not in OPEN_STATUSES
        row = {"source": src, "campaign": camp or None, "product_line": pl, "region": reg or None,
               "intention_level": il, "stage": (before if closed and st in CLOSING_STAGES else st)}
        row = {k: v for k, v in row.items() if k in wanted}
        if "follow_ups" in wanted:
            row["follow_ups"] = "0"
        if "calls" in wanted:
            row["calls"] = "0"
        if "learning" in wanted:
            row["learning"] = "0"
        if "tags" in wanted:
            row["tags"] = []
        row["_status"], row["_closed_at"] = status, closed_at
        out[oid] = row
    if not out:
        return out
    ids = list(out)
    before_close = or_(o.closed_at.is_(None), FollowUp.created_at <= o.closed_at)
    if "follow_ups" in wanted:
        query = (select(FollowUp.opportunity_id, func.count()).join(o, o.id == FollowUp.opportunity_id)
                 .where(id_in(FollowUp.opportunity_id, ids, dialect), before_close)
                 .group_by(FollowUp.opportunity_id))
        for oid, n in session.execute(query):
            out[oid]["follow_ups"] = bin_label(n, FOLLOW_UP_BINS)
    if "calls" in wanted:
        c = CallRecord
        answered = func.sum(case((c.answered_at.is_not(None), 1), else_=0))
        query = (select(c.opportunity_id, func.count(), answered)
                 .join(o, o.id == c.opportunity_id)
                 .where(id_in(c.opportunity_id, ids, dialect), c.status.in_(CALL_FINAL),
                        or_(c.result.is_(None), c.result != NOT_A_CALL),
                        or_(o.closed_at.is_(None), c.started_at <= o.closed_at))
                 .group_by(c.opportunity_id))
        for oid, n, answered in session.execute(query):
            out[oid]["calls"] = calls_value(n, bool(answered))
    if "learning" in wanted:
        a = LearningActivity
        attended = and_(a.customer_id == o.customer_id, a.attended.is_(True))
        query = (select(o.id, func.count()).join(a, attended)
                 .where(id_in(o.id, ids, dialect), or_(o.closed_at.is_(None), a.occurred_at <= o.closed_at))
                 .group_by(o.id))
        for oid, n in session.execute(query):
            out[oid]["learning"] = bin_label(n, LESSON_BINS)
    if "tags" in wanted:
        ot, ct = OpportunityTag, CustomerTag
        by_opp = (select(ot.opportunity_id, Tag.code).join(Tag, Tag.id == ot.tag_id)
                  .join(o, o.id == ot.opportunity_id)
                  .where(id_in(ot.opportunity_id, ids, dialect),
                         or_(o.closed_at.is_(None), ot.added_at <= o.closed_at)))
        by_customer = (select(o.id, Tag.code).join(ct, ct.customer_id == o.customer_id)
                       .join(Tag, Tag.id == ct.tag_id)
                       .where(id_in(o.id, ids, dialect),
                              or_(o.closed_at.is_(None), ct.added_at <= o.closed_at)))
        for query in (by_opp, by_customer):
            for oid, code in session.execute(query):
                if code not in out[oid]["tags"]:
                    out[oid]["tags"].append(code)
        for row in out.values():
            row["tags"].sort()
    return out


def _strip(rows: dict[int, dict]) -> dict[int, dict]:
    for row in rows.values():
        row.pop("_status", None)
        row.pop("_closed_at", None)
    return rows


def features(session, opportunity_ids: list[int] | None = None, *, after_id: int | None = None,
             limit: int | None = None, statuses=OPEN_STATUSES, variables=VARIABLES) -> dict[int, dict]:
    """{opportunity id: {variable: value}} of the given ids, or of the next `limit` opportunities (of
    `statuses`) after `after_id` in id order (a keyset page)."""
    if opportunity_ids is None:
        opportunity_ids = page_ids(session, after_id or 0, limit or CHUNK, statuses)
    return _strip(_rows(session, list(opportunity_ids), variables)) if opportunity_ids else {}


def page_ids(session, after_id: int, limit: int, statuses) -> list[int]:
    return list(session.scalars(select(Opportunity.id).where(Opportunity.status.in_(statuses),
                                                             Opportunity.id > after_id)
                                .order_by(Opportunity.id).limit(limit)))


def closed_history(session, variables, statuses, chunk: int = CHUNK):
    """Yield (closed_at, row, won) of every closed opportunity, chunk by chunk (keyset over the id)."""
    after = 0
    while True:
        ids = page_ids(session, after, chunk, statuses)
        if not ids:
            return
        rows = _rows(session, ids, variables)
        for oid in ids:
            row = rows[oid]
            status, closed_at = row.pop("_status"), row.pop("_closed_at")
            if closed_at is not None:
                yield closed_at, row, status == "won"
        after = ids[-1]


def labels(session, tables: dict) -> dict:
    """{variable: {value: label}} for the values a model knows: a dictionary item's {"zh", "en"}, a
    marketing campaign's or a tag's name."""
    out: dict = {}
    for var, spec in tables.get("variables", {}).items():
        values = list(spec.get("effects", {}))
        if not values:
            continue
        if var in DICT_VARIABLES:
            query = (select(DictItem.code, DictItem.label_zh, DictItem.label_en)
                     .join(DictType, DictType.id == DictItem.dict_type_id)
                     .where(DictType.code == DICT_VARIABLES[var], DictItem.code.in_(values)))
            out[var] = {code: {"zh": zh, "en": en} for code, zh, en in session.execute(query)}
        elif var == "campaign":
            query = select(MarketingCampaign.code, MarketingCampaign.name).where(
                MarketingCampaign.code.in_(values))
            out[var] = dict(session.execute(query).all())
        elif var == "tags":
            out[var] = dict(session.execute(select(Tag.code, Tag.name).where(Tag.code.in_(values))).all())
    return out
