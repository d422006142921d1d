"""The CRM's own notification triggers: assignments (the dispatch engine's and managers') notify the new
owner, and follow-ups falling due remind the owning salesperson — in their inbox (app.services.inbox,
the bell) always, and by SMS where an administrator bound an approved template to the event.

Both scan forward from a watermark kept in Redis and never touch the code that made the rows. When Redis
has lost the assignment watermark it is recovered from the newest assignment notification in the
database (or starts at the newest log row on the first run). Each row makes at most one message (its
id is in the event key), so a re-run, an overlap or a concurrent scan is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import and_, false, or_, select

from app import clock
from app.clock import utcnow
from app.models.employee import Employee
from app.models.sales import ASSIGN, DISPATCH, TRANSFER, AssignmentLog, Customer, Opportunity
from app.models.sms import MSG_PENDING, SmsMessage
from app.services import inbox
from app.services.errors import DomainError
from app.services.sms.notifications import ASSIGNED, FOLLOW_UP_DUE, event_key, notify, template_for

log = logging.getLogger(__name__)

ASSIGNMENT_REASONS = (DISPATCH, ASSIGN, TRANSFER)
WATERMARK_KEY = "crm:sms:notify:assignment-watermark"
STALE_AFTER = dt.timedelta(hours=24)  # an assignment older than this is not worth a text any more
RESCAN = dt.timedelta(minutes=5)  # log rows this recent are looked at again (late commits)
RESCAN_ROWS = 20_000  # … among this many ids below the watermark (keeps the look-back an id range)


# --- follow-up due ------------------------------------------------------------------------------------
FOLLOWUP_WATERMARK_KEY = "crm:sms:notify:followup-watermark"
FOLLOWUP_LOOKBACK = dt.timedelta(hours=1)  # with no watermark (first run, Redis lost it): this far back


@dataclass
class FollowUpScan:
    scanned: int = 0
    created: list[int] = field(default_factory=list)
    watermark: dt.datetime | None = None


def notify_followups_due(session, redis=None, now: dt.datetime | None = None, limit: int = 5000
                         ) -> FollowUpScan:
    """Remind the owning salesperson (Employee.phone) of each owned opportunity whose next follow-up
    fell due since the last scan.

    The event key is opportunity + due time, so a re-run, an overlap or a concurrent scan makes one
    reminder, and a follow-up moved to a new time gets a reminder of its own. The watermark (the due
    time scanned up to) lives in Redis; due times a little before it are looked at again (RESCAN) for
    late commits. Commits the messages, then moves the watermark."""
    from app.models.sales import OWNED

    now = now or utcnow()
    raw = None
    if redis is not None:
        try:
            raw = redis.get(FOLLOWUP_WATERMARK_KEY)
        except Exception:
            raw = None
    mark = dt.datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw) if raw else None
    start = (mark - RESCAN) if mark else now - FOLLOWUP_LOOKBACK
    scan = FollowUpScan(watermark=mark)
    rows = session.execute(
        select(Opportunity.id, Opportunity.next_followup_at, Employee.name.label("employee"), Employee.phone,
               Employee.user_id, Customer.name.label("customer"), Customer.id.label("customer_id"))
        .join(Employee, Employee.id == Opportunity.owner_id)
        .join(Customer, Customer.id == Opportunity.customer_id)
        .where(Opportunity.status == OWNED, Opportunity.next_followup_at > start,
               Opportunity.next_followup_at <= now)
        .order_by(Opportunity.next_followup_at, Opportunity.id).limit(limit)).all()
    tpl = template_for(session, FOLLOW_UP_DUE) if rows else None
    for row in rows:
        scan.scanned += 1
        due = clock.to_local(row.next_followup_at).strftime("%m-%d %H:%M")  # short: it goes in a text
        key = f"{row.id}:{row.next_followup_at:%Y%m%d%H%M}"
        customer = row.customer or f"#{row.customer_id}"
        when = clock.format_datetime(row.next_followup_at, seconds=False)
        inbox.notify(session, row.user_id, inbox.FOLLOW_UP_DUE, inbox.TITLES[inbox.FOLLOW_UP_DUE],
                     {"customer": customer, "due": when}, subject=("opportunity", row.id), dedupe_key=key,
                     now=now)
        if tpl is None or not row.phone:
            continue
        variables = {"name": row.employee, "customer": customer, "due": due}
        try:
            notified = notify(session, FOLLOW_UP_DUE, key, row.phone, variables, now=now)
        except DomainError as exc:
            log.warning("sms notifications: follow-up of opportunity %s not notified: %s", row.id,
                        exc.message)
            continue
        if notified.created and notified.status == MSG_PENDING:
            scan.created.append(notified.message_id)
    session.commit()
    scan.watermark = rows[-1].next_followup_at if len(rows) == limit else now
    if redis is not None:
        try:
            redis.set(FOLLOWUP_WATERMARK_KEY, scan.watermark.isoformat())
        except Exception:
            log.warning("sms notifications: could not store the follow-up watermark")
    return scan


# --- the assignment hook ---------------------------------------------------------------------------
@dataclass
class AssignmentScan:
    scanned: int = 0
    created: list[int] = field(default_factory=list)  # pending message ids made by this scan
    watermark: int = 0


def _watermark(session, redis) -> tuple[int, bool]:
    """(the last log id looked at, whether one was stored: False on the very first run). Without Redis's
    watermark: the newest assignment told by SMS or in an inbox."""
    raw = None
    if redis is not None:
        try:
            raw = redis.get(WATERMARK_KEY)
        except Exception:  # Redis down: fall back on the database
            raw = None
    if raw is not None:
        return int(raw), True
    newest = session.scalar(select(SmsMessage.event_key).where(SmsMessage.event == ASSIGNED)
                            .order_by(SmsMessage.id.desc()).limit(1))
    told = inbox.newest_assignment_log_id(session)  # the inbox remembers it too (no SMS template needed)
    if newest or told:
        return max(int(newest.rsplit(":", 1)[1]) if newest else 0, told or 0), True
    # First run: start from now; the history before the feature existed is not notified.
    return session.scalar(select(AssignmentLog.id).order_by(AssignmentLog.id.desc()).limit(1)) or 0, False


def _store_watermark(redis, value: int) -> None:
    if redis is None:
        return
    try:
        redis.set(WATERMARK_KEY, value)
    except Exception:
        log.warning("sms notifications: could not store the assignment watermark %s", value)


def notify_assignments(session, redis=None, limit: int = 1000, now: dt.datetime | None = None
                       ) -> AssignmentScan:
    """Notify the new owners of assignments logged after the watermark (up to `limit` log rows).

    Rows of the last RESCAN are looked at again: a dispatch transaction that took a lower id but
    committed after a later one is not skipped. Safe to run twice or concurrently: each log row makes
    at most one message (the row id is in the event key). Commits the messages, then moves the watermark.
    """
    now = now or utcnow()
    start, stored = _watermark(session, redis)
    scan = AssignmentScan(watermark=start)
    if not stored:
        _store_watermark(redis, start)  # the baseline: what is logged from now on gets notified
    recent = (and_(AssignmentLog.id > start - RESCAN_ROWS, AssignmentLog.created_at >= now - RESCAN)
              if stored else false())
    rows = session.execute(
        select(AssignmentLog.id, AssignmentLog.created_at, AssignmentLog.opportunity_id,
               Employee.name.label("employee"), Employee.phone, Employee.user_id,
               Customer.name.label("customer"), Customer.id.label("customer_id"), Opportunity.product_line_id)
        .join(Employee, Employee.id == AssignmentLog.to_owner_id)
        .join(Opportunity, Opportunity.id == AssignmentLog.opportunity_id)
        .join(Customer, Customer.id == Opportunity.customer_id)
        .where(AssignmentLog.reason.in_(ASSIGNMENT_REASONS),
               or_(AssignmentLog.id > start, recent))
        .order_by(AssignmentLog.id).limit(limit)).all()
    if not rows:
        return scan
    tpl = template_for(session, ASSIGNED)
    done = set(session.scalars(select(SmsMessage.event_key).where(
        SmsMessage.event_key.in_([event_key(ASSIGNED, r.id) for r in rows if r.id <= start]))))
    for row in rows:
        scan.scanned += 1
        if row.created_at < now - STALE_AFTER:
            continue
        customer = row.customer or f"#{row.customer_id}"
        inbox.notify(session, row.user_id, inbox.NEW_ASSIGNMENT, inbox.TITLES[inbox.NEW_ASSIGNMENT],
                     {"customer": customer, "opportunity": row.opportunity_id},
                     subject=("opportunity", row.opportunity_id), dedupe_key=str(row.id), now=now)
        if tpl is None or not row.phone or event_key(ASSIGNED, row.id) in done:
            continue
        variables = {"name": row.employee, "customer": customer,
                     "opportunity": row.opportunity_id, "product": _product(session, row.product_line_id)}
        try:
            notified = notify(session, ASSIGNED, row.id, row.phone, variables, now=now)
        except DomainError as exc:  # a template whose variables this event does not offer
            log.warning("sms notifications: assignment %s not notified: %s", row.id, exc.message)
            continue
        if notified.created and notified.status == MSG_PENDING:
            scan.created.append(notified.message_id)
    session.commit()
    scan.watermark = max(start, rows[-1].id)
    if scan.watermark != start:
        _store_watermark(redis, scan.watermark)
    return scan


def _product(session, product_line_id: int | None) -> str:
    if product_line_id is None:
        return ""
    from app.models.metadata import DictItem

    return session.scalar(select(DictItem.label_zh).where(DictItem.id == product_line_id)) or ""
