"""Keeping the dashboard's daily aggregates (app.models.dashboard) current, incrementally.

A refresh looks only at what changed since the previous one (its `mark`, less `OVERLAP` for transactions
that committed late): the business days of opportunities updated since then (the cohort tables: an
opportunity counts on the day it came in, so a follow-up or a win weeks later changes that day), the days
of new follow-ups and assignment-log rows, of calls and QA inspections updated since then, and of SMS sent
recently (receipts arrive later). Each such day is recomputed whole in SQL (DELETE + INSERT … SELECT) and
committed on its own: a refresh is idempotent, and one killed half-way leaves every day either old or new
and the mark unmoved, so the next refresh does the rest. The idle-age snapshot of owned opportunities is
replaced whole. No opportunity, follow-up or call is ever loaded into Python.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Date, case, cast, delete, func, insert, literal, select, true, union_all

from app import clock
from app.models.calls import CallRecord
from app.models.dashboard import (
    FIRST_CONTACT_BUCKETS,
    IDLE_BUCKETS,
    DashActivityDay,
    DashCohortDay,
    DashFirstContactDay,
    DashIdleSnapshot,
    DashRefreshState,
    DashSmsDay,
)
from app.models.employee import Employee
from app.models.qa import QaInspection
from app.models.sales import DISPATCH, LOST, OWNED, RECYCLE, WON, AssignmentLog, FollowUp, Opportunity
from app.models.sms import MSG_DELIVERED, MSG_FAILED, SmsChannel, SmsMessage

#: The measures of `DashActivityDay`, in the order the refresh selects them.
ACTIVITY = ("follow_ups", "dispatched", "recycled", "dials", "connected", "talk_seconds", "qa_scored",
            "qa_score_sum")

#: How far before the previous refresh's start the next one looks (transactions that committed late).
OVERLAP = dt.timedelta(minutes=5)
#: SMS days looked at again however quiet: delivery receipts come in after the sending day.
SMS_RECEIPT_DAYS = 2
STATE_ID = 1
DAY = 86400


# --- dialect helpers -----------------------------------------------------------------------------------
def _dialect(session) -> str:
    return session.get_bind().dialect.name


def local_day(session, column):
    """SQL: the business-zone calendar date of a naive-UTC timestamp column."""
    if _dialect(session) == "postgresql":
        zone = clock.business_timezone().key
        return cast(func.timezone(zone, func.timezone("UTC", column)), Date)
    offset = clock.to_local(clock.utcnow()).utcoffset() or dt.timedelta(0)  # SQLite: today's offset
    return func.date(column, f"{int(offset.total_seconds() // 60):+d} minutes")


def seconds_between(session, later, earlier):
    """SQL: seconds from `earlier` to `later` (both naive UTC)."""
    if _dialect(session) == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * DAY


def _bucket(value, bounds):
    """SQL: the lower bound of `bounds` that `value` falls in (below the first: the first)."""
    return case(
        *[(value < upper, lower) for lower, upper in zip(bounds, bounds[1:], strict=False)], else_=bounds[-1]
    )


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _days(session, column, where) -> set[dt.date]:
    """The business days of `column` over the rows matching `where` (distinct, computed in SQL)."""
    day = local_day(session, column)
    return {_as_date(d) for d in session.scalars(select(day).where(where).distinct()) if d is not None}


# --- one day of each table ------------------------------------------------------------------------------
def _sum_if(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def cohort_day(session, day: dt.date) -> None:
    """Recompute the cohort and first-contact rows of the opportunities that came in on `day`."""
    start, end = clock.day_bounds(day)
    span = (Opportunity.created_at >= start) & (Opportunity.created_at < end)
    columns = [
        Opportunity.org_unit_id,
        Opportunity.owner_id,
        Opportunity.product_line_id,
        Opportunity.source_id,
        Opportunity.campaign,
        Opportunity.status,
        Opportunity.created_at,
        func.coalesce(Opportunity.assigned_at, Opportunity.claimed_at).label("assigned_at"),
    ]
    if _dialect(session) == "postgresql":
        # Each opportunity's first follow-up once, from the (opportunity_id, created_at) index: as a plain
        # correlated subquery it would be evaluated again for every reference to it.
        first = (
            select(FollowUp.created_at.label("first_at"))
            .where(FollowUp.opportunity_id == Opportunity.id)
            .order_by(FollowUp.created_at)
            .limit(1)
            .lateral("first_follow_up")
        )
        query = select(*columns, first.c.first_at).outerjoin(first, true())
    else:
        first = (
            select(func.min(FollowUp.created_at))
            .where(FollowUp.opportunity_id == Opportunity.id)
            .correlate(Opportunity)
            .scalar_subquery()
        )
        query = select(*columns, first.label("first_at"))
    opp = query.where(span).subquery()
    dims = [opp.c.org_unit_id, opp.c.owner_id, opp.c.product_line_id, opp.c.source_id, opp.c.campaign]
    wait = seconds_between(session, opp.c.first_at, opp.c.created_at)
    session.execute(delete(DashCohortDay).where(DashCohortDay.day == day))
    session.execute(delete(DashFirstContactDay).where(DashFirstContactDay.day == day))
    names = ["day", "org_unit_id", "owner_id", "product_line_id", "source_id", "campaign"]
    session.execute(
        insert(DashCohortDay).from_select(
            names + ["leads", "assigned", "contacted", "contacted_24h", "won", "lost"],
            select(
                literal(day, Date),
                *dims,
                func.count(),
                func.count(opp.c.assigned_at),
                func.count(opp.c.first_at),
                _sum_if(opp.c.first_at.isnot(None) & (wait <= DAY)),
                _sum_if(opp.c.status == WON),
                _sum_if(opp.c.status == LOST),
            ).group_by(*dims),
        )
    )
    bucket = _bucket(wait / 60, FIRST_CONTACT_BUCKETS).label("bucket")
    contacted = select(*dims, bucket).where(opp.c.first_at.isnot(None)).subquery()
    cdims = [contacted.c[c.name] for c in dims]
    session.execute(
        insert(DashFirstContactDay).from_select(
            names + ["bucket", "n"],
            select(literal(day, Date), *cdims, contacted.c.bucket, func.count()).group_by(
                *cdims, contacted.c.bucket
            ),
        )
    )


def activity_day(session, day: dt.date) -> None:
    """Recompute what each person did on `day`: follow-ups, dispatches received, opportunities recycled
    from them, calls (by start) and QA scores (by scoring time)."""
    start, end = clock.day_bounds(day)
    zero = literal(0)

    def part(
        employee,
        opportunity,
        follow_ups=zero,
        dispatched=zero,
        recycled=zero,
        dials=zero,
        connected=zero,
        talk=zero,
        qa_n=zero,
        qa_sum=zero,
    ):
        return [
            employee.label("employee_id"),
            opportunity.label("opportunity_id"),
            follow_ups.label("follow_ups"),
            dispatched.label("dispatched"),
            recycled.label("recycled"),
            dials.label("dials"),
            connected.label("connected"),
            talk.label("talk"),
            qa_n.label("qa_n"),
            qa_sum.label("qa_sum"),
        ]

    one = literal(1)
    log_span = (AssignmentLog.created_at >= start) & (AssignmentLog.created_at < end)
    events = union_all(
        select(*part(FollowUp.employee_id, FollowUp.opportunity_id, follow_ups=one)).where(
            FollowUp.created_at >= start, FollowUp.created_at < end, FollowUp.employee_id.isnot(None)
        ),
        select(*part(AssignmentLog.to_owner_id, AssignmentLog.opportunity_id, dispatched=one)).where(
            AssignmentLog.reason == DISPATCH, log_span, AssignmentLog.to_owner_id.isnot(None)
        ),
        select(*part(AssignmentLog.from_owner_id, AssignmentLog.opportunity_id, recycled=one)).where(
            AssignmentLog.reason == RECYCLE, log_span, AssignmentLog.from_owner_id.isnot(None)
        ),
        select(
            *part(
                CallRecord.employee_id,
                CallRecord.opportunity_id,
                dials=one,
                connected=case((CallRecord.answered_at.isnot(None), 1), else_=0),
                talk=CallRecord.duration_seconds,
            )
        ).where(CallRecord.started_at >= start, CallRecord.started_at < end),
        select(*part(QaInspection.agent_id, CallRecord.opportunity_id, qa_n=one, qa_sum=QaInspection.score))
        .join(CallRecord, CallRecord.id == QaInspection.call_id)
        .where(QaInspection.scored_at >= start, QaInspection.scored_at < end, QaInspection.score.isnot(None)),
    ).subquery()
    dims = [
        Employee.org_unit_id,
        events.c.employee_id,
        Opportunity.product_line_id,
        Opportunity.source_id,
        Opportunity.campaign,
    ]
    sums = [
        func.sum(events.c[name])
        for name in ("follow_ups", "dispatched", "recycled", "dials", "connected", "talk", "qa_n", "qa_sum")
    ]
    session.execute(delete(DashActivityDay).where(DashActivityDay.day == day))
    session.execute(
        insert(DashActivityDay).from_select(
            ["day", "org_unit_id", "employee_id", "product_line_id", "source_id", "campaign", *ACTIVITY],
            select(literal(day, Date), *dims, *sums)
            .select_from(
                events.join(Employee, Employee.id == events.c.employee_id).outerjoin(
                    Opportunity, Opportunity.id == events.c.opportunity_id
                )
            )
            .group_by(*dims),
        )
    )


def sms_day(session, day: dt.date) -> None:
    """Recompute the SMS sent on `day`: how many, delivered, failed, segments and their cost."""
    start, end = clock.day_bounds(day)
    row = session.execute(
        select(
            func.count(),
            _sum_if(SmsMessage.status == MSG_DELIVERED),
            _sum_if(SmsMessage.status == MSG_FAILED),
            func.coalesce(func.sum(SmsMessage.segments), 0),
            func.coalesce(func.sum(SmsMessage.segments * func.coalesce(SmsChannel.price_per_segment, 0)), 0),
        )
        .select_from(SmsMessage)
        .outerjoin(SmsChannel, SmsChannel.id == SmsMessage.channel_id)
        .where(SmsMessage.sent_at >= start, SmsMessage.sent_at < end)
    ).one()
    session.execute(delete(DashSmsDay).where(DashSmsDay.day == day))
    if row[0]:
        session.add(
            DashSmsDay(day=day, sent=row[0], delivered=row[1], failed=row[2], segments=row[3], cost=row[4])
        )
        session.flush()


def idle_snapshot(session, now: dt.datetime) -> None:
    """Replace the idle-age snapshot of owned opportunities (idle age in whole days at `now`)."""
    idle = func.coalesce(Opportunity.idle_since, Opportunity.assigned_at, Opportunity.created_at)
    bucket = _bucket(seconds_between(session, literal(now), idle) / DAY, IDLE_BUCKETS).label("bucket")
    owned = (
        select(
            Opportunity.org_unit_id,
            Opportunity.owner_id,
            Opportunity.product_line_id,
            Opportunity.source_id,
            Opportunity.campaign,
            bucket,
        )
        .where(Opportunity.status == OWNED)
        .subquery()
    )
    dims = [
        owned.c.org_unit_id,
        owned.c.owner_id,
        owned.c.product_line_id,
        owned.c.source_id,
        owned.c.campaign,
        owned.c.bucket,
    ]
    session.execute(delete(DashIdleSnapshot))
    session.execute(
        insert(DashIdleSnapshot).from_select(
            ["org_unit_id", "owner_id", "product_line_id", "source_id", "campaign", "bucket", "n"],
            select(*dims, func.count()).group_by(*dims),
        )
    )


# --- the refresh -------------------------------------------------------------------------------------------
def state(session) -> DashRefreshState | None:
    return session.get(DashRefreshState, STATE_ID)


def _span(first: dt.date | None, last: dt.date) -> set[dt.date]:
    if first is None or first > last:
        return set()
    return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}


def _all_days(session, today: dt.date) -> tuple[set, set, set]:
    """Every day that has data (a first refresh, or a full rebuild)."""

    def first(column):
        value = session.scalar(select(func.min(column)))
        return clock.local_date(value) if value is not None else None

    cohort = _span(first(Opportunity.created_at), today)
    starts = [
        d
        for d in (
            first(FollowUp.created_at),
            first(AssignmentLog.created_at),
            first(CallRecord.started_at),
            first(QaInspection.scored_at),
        )
        if d is not None
    ]
    activity = _span(min(starts) if starts else None, today)
    return cohort, activity, _span(first(SmsMessage.sent_at), today)


#: The tables whose new rows (by id) and changed rows (by time) move aggregates: (model, time column whose
#: day they count on, change-time column).
SOURCES = {
    "opportunity": (Opportunity, Opportunity.created_at, Opportunity.updated_at),
    "follow_up": (FollowUp, FollowUp.created_at, FollowUp.created_at),
    "assignment_log": (AssignmentLog, AssignmentLog.created_at, AssignmentLog.created_at),
    "call_record": (CallRecord, CallRecord.started_at, CallRecord.updated_at),
    "qa_inspection": (QaInspection, QaInspection.scored_at, QaInspection.updated_at),
}


def id_marks(session) -> dict[str, int]:
    return {name: session.scalar(select(func.max(model.id))) or 0 for name, (model, _, _) in SOURCES.items()}


def changed_days(session, since: dt.datetime, marks: dict) -> tuple[set, set, set]:
    """The days whose aggregates may have moved since the previous refresh: of rows changed at or after
    `since`, and of rows inserted after `marks` (whatever time they carry): (cohort, activity, SMS)."""
    found, recent = {}, {}
    for name, (model, day_column, changed) in SOURCES.items():
        recent[name] = (changed >= since) | (model.id > marks.get(name, 0))
        found[name] = _days(session, day_column, recent[name])
    # A follow-up may be a first contact: the day its opportunity came in moves too.
    touched = select(FollowUp.opportunity_id).where(recent["follow_up"])
    found["opportunity"] |= _days(session, Opportunity.created_at, Opportunity.id.in_(touched))
    activity = found["follow_up"] | found["assignment_log"] | found["call_record"] | found["qa_inspection"]
    sms = _days(
        session, SmsMessage.sent_at, SmsMessage.sent_at >= since - dt.timedelta(days=SMS_RECEIPT_DAYS)
    )
    return found["opportunity"], activity, sms


def refresh(session, now: dt.datetime, *, full: bool = False) -> dict:
    """Bring the aggregates up to date at `now`; commits each day. Answers what it recomputed."""
    current = state(session)
    today = clock.local_date(now)
    marks = id_marks(session)  # before looking: what is inserted meanwhile is looked at next time
    if full or current is None or current.mark is None:
        cohort, activity, sms = _all_days(session, today)
        if full:
            for model in (DashCohortDay, DashFirstContactDay, DashActivityDay, DashSmsDay):
                session.execute(delete(model))
    else:
        cohort, activity, sms = changed_days(session, current.mark, json.loads(current.id_marks or "{}"))
    for day in sorted(cohort):
        cohort_day(session, day)
        session.commit()
    for day in sorted(activity):
        activity_day(session, day)
        session.commit()
    for day in sorted(sms):
        sms_day(session, day)
        session.commit()
    idle_snapshot(session, now)
    current = state(session)
    if current is None:
        current = DashRefreshState(id=STATE_ID, days_refreshed=0, version=0)
        session.add(current)
    current.as_of = now
    current.mark = now - OVERLAP
    current.id_marks = json.dumps(marks)
    current.version = (current.version or 0) + 1
    current.days_refreshed = len(cohort) + len(activity) + len(sms)
    session.commit()
    return {
        "cohort_days": sorted(d.isoformat() for d in cohort),
        "activity_days": sorted(d.isoformat() for d in activity),
        "sms_days": sorted(d.isoformat() for d in sms),
        "as_of": now.isoformat(),
    }
