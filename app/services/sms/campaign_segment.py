"""A campaign whose audience is a segment: the snapshot of its members taken when the preparation starts,
and the chunked read of that snapshot the preparation streams.

Why the snapshot is taken when the preparation starts (not when the marketer clicks Launch): the campaign
goes to the segment as it is when sending begins — a campaign scheduled for next Monday reaches Monday's
members — and that first step of the preparation is already one transaction that moves the campaign from
scheduled to running (a compare-and-set only one run can win). The members are copied into
sms_audience_entry by ONE `INSERT … SELECT` (the database copies them; none are read into Python) in that
same transaction, together with the audience description (criteria, count, time). So the snapshot, the
description and the status commit together or not at all: a worker killed before the commit leaves the
campaign scheduled and the next run snapshots afresh; after it, `ensure_snapshot` finds "snapshot_at" in
the description (and entries in the table) and does nothing. From then on the preparation reads the
snapshot, never the live segment: tags or segment changes after it do not change who the campaign goes to.

The checks that depend on the person, not on membership, are made at preparation time as for an uploaded
list: the customer a snapshot row names is followed to the customer it was merged into since (its phone
and consent), the blacklist is looked up on that phone, and a number already given a message by this
campaign is a duplicate.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql import bindparam

from app.clock import utcnow
from app.models.bigdata import CUSTOMER, OPPORTUNITY, Segment
from app.models.sales import Customer, Opportunity
from app.models.sms import BlacklistEntry, SmsAudienceEntry, SmsCampaign, SmsMessage
from app.services import segments
from app.services.errors import DomainError
from app.services.sms.campaign_audience import SEGMENT, chunk_reader


def draft_audience(segment: Segment) -> str:
    """The audience description of a draft aimed at `segment` (the snapshot adds criteria and count)."""
    return json.dumps({"kind": SEGMENT, "segment_id": segment.id, "name": segment.name,
                       "subject": segment.subject}, ensure_ascii=False)


def members_query(session, segment: Segment, now: dt.datetime | None = None):
    """SELECT (customer id, phone, name) of the segment's recipients, one row per customer, in customer id
    order. A customer segment: its members (merged customers are never members). An opportunity segment:
    the customers of its opportunities — a merged customer's opportunity counts for the customer it was
    merged into."""
    criteria = segments.criteria_of(segment)
    if segment.subject == OPPORTUNITY:
        ids = segments.ids_query(session, OPPORTUNITY, criteria, now).subquery()
        owner = aliased(Customer)
        wanted = (select(func.coalesce(owner.merged_into_id, owner.id))
                  .select_from(Opportunity).join(owner, owner.id == Opportunity.customer_id)
                  .where(Opportunity.id.in_(select(ids.c.id))))
    else:
        wanted = segments.ids_query(session, CUSTOMER, criteria, now)
    return select(Customer.id, Customer.phone, Customer.name).where(Customer.id.in_(wanted))


def recipient_count(session, segment: Segment, now: dt.datetime | None = None) -> int:
    """How many customers the segment would reach now (the form's "≈ N recipients"): for a customer
    segment `segments.count`; for an opportunity segment its opportunities' distinct customers."""
    if segment.subject != OPPORTUNITY:
        return segments.count(session, CUSTOMER, segments.criteria_of(segment), now=now)
    query = members_query(session, segment, now).subquery()
    return session.scalar(select(func.count()).select_from(query)) or 0


def ensure_snapshot(session, campaign_id: int, now: dt.datetime | None = None) -> int | None:
    """Copy the segment's members into the campaign's audience entries, once, in the caller's transaction
    (which commits it together with whatever else it marks). Returns the number of entries copied, or None
    when there was nothing to do (not a segment campaign, or already snapshot)."""
    row = session.execute(select(SmsCampaign.audience, SmsCampaign.segment_id)
                          .where(SmsCampaign.id == campaign_id).with_for_update()).one_or_none()
    if row is None:
        return None
    try:
        spec = json.loads(row.audience or "{}")
    except ValueError:
        return None
    if not isinstance(spec, dict) or spec.get("kind") != SEGMENT or spec.get("snapshot_at"):
        return None
    segment = session.get(Segment, row.segment_id) if row.segment_id else None
    if segment is None:
        raise DomainError("Choose a segment", field="segment")
    now = now or utcnow()
    entry = SmsAudienceEntry
    taken = session.scalar(select(func.count()).where(entry.campaign_id == campaign_id))
    if not taken:  # a draft's entries are dropped when a segment is chosen; never copy twice
        members = members_query(session, segment, now).subquery()
        rows = select(literal(campaign_id), func.row_number().over(order_by=members.c.id),
                      members.c.phone, members.c.name, members.c.id)
        taken = session.execute(insert(entry).from_select(
            ["campaign_id", "line", "phone", "name", "customer_id"], rows)).rowcount
        if taken is None or taken < 0:  # a driver that does not report it
            taken = session.scalar(select(func.count()).where(entry.campaign_id == campaign_id))
    spec.update(segment_id=segment.id, name=segment.name, subject=segment.subject,
                criteria=segments.criteria_of(segment), count=taken,
                snapshot_at=now.replace(microsecond=0).isoformat())
    session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                    .values(audience=json.dumps(spec, ensure_ascii=False)))
    return taken


def snapshot_reader(session, campaign_id: int, blacklisted: bool, chunk: int):
    """`read(conn, after)`: the next `chunk` snapshot rows after line `after`, each (line, customer id,
    phone, name, consent, blacklist source or None, touched by a merge) — the customer followed to the one
    it was merged into since the snapshot, consent and blacklist as they are now."""
    entry, member, survivor, loser = SmsAudienceEntry, aliased(Customer), aliased(Customer), aliased(Customer)
    phone = func.coalesce(survivor.phone, member.phone, entry.phone)
    listed = BlacklistEntry.source if blacklisted else literal(None).label("source")
    # Whether the row's number may already have a message of this campaign under another line: only when a
    # merge since the snapshot joined two customers (this one merged away, or another merged into it).
    merged = or_(member.merged_into_id.is_not(None), exists().where(loser.merged_into_id == member.id))
    stmt = (select(entry.line, func.coalesce(survivor.id, member.id), phone, entry.name,
                   func.coalesce(survivor.marketing_consent, member.marketing_consent), listed, merged)
            .select_from(entry)
            .outerjoin(member, member.id == entry.customer_id)
            # probed only for a merged customer (NULL otherwise): one customer lookup per row, not two
            .outerjoin(survivor, survivor.id == member.merged_into_id))
    if blacklisted:  # the blacklist's phone is unique: at most one row each
        stmt = stmt.outerjoin(BlacklistEntry, BlacklistEntry.phone == phone)
    # The snapshot's lines run 1…count without gaps: a chunk is a range of line numbers, which every plan
    # reads by the (campaign, line) index whatever the table's statistics say (just after a million-row
    # snapshot they still say "empty", and `line > :after ORDER BY line LIMIT n` was then planned as a sort
    # of everything after the cursor, for every chunk).
    after = bindparam("after")
    stmt = (stmt
            .where(entry.campaign_id == campaign_id, entry.line > after, entry.line <= after + chunk)
            .order_by(entry.line))
    return chunk_reader(session, stmt)


def snapshot_recipients(session, campaign_id: int, rows) -> tuple[list[tuple], set[str] | None]:
    """A chunk of snapshot rows as `Recipient`-shaped tuples, and the numbers among them this campaign has
    already messaged — or None when no row of the chunk is touched by a merge: every other row's number is
    its own customer's, on no other line (and a resumed run starts after the last committed chunk), so
    neither the database nor the chunks still being written need asking."""
    merged = [r[2] for r in rows if r[6]]
    return [row[1:6] for row in rows], (already_messaged(session, campaign_id, merged) if merged else None)


def already_messaged(session, campaign_id: int, phones) -> set[str]:
    """Which of `phones` this campaign has already given a message: they are duplicates."""
    phones = [p for p in phones if p]
    if not phones:
        return set()
    return set(session.scalars(select(SmsMessage.phone).where(SmsMessage.campaign_id == campaign_id,
                                                              SmsMessage.phone.in_(phones))))

