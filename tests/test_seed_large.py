"""`flask crm seed-demo --size large`: 90 days of believable history on the demo organisation (run here at a
small scale on the suite's demo database)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import func, select

from app import clock
from app.models.calls import CallRecord
from app.models.metadata import DictItem
from app.models.qa import QaInspection
from app.models.sales import (
    AssignmentLog,
    Customer,
    FollowUp,
    Lead,
    Opportunity,
    SalesProfile,
)
from app.models.sms import BlacklistEntry, SmsMessage
from app.services.seed_large import MARKER, seed_large

COUNT = 1500
STAGES = ("new", "contacted", "interested", "trial", "negotiating", "won")


def _large(session):
    first = session.scalar(select(Lead.opportunity_id).where(Lead.client_key == MARKER))
    return list(session.scalars(select(Opportunity).where(Opportunity.id >= first)).unique())


def test_large_seed_has_a_believable_past(session):
    now = clock.utcnow()
    counts = seed_large(session, count=COUNT)
    opps = _large(session)
    assert counts["opportunities"] == len(opps) == COUNT
    start = now - dt.timedelta(days=90)

    # Every opportunity is owned, in a pool or closed with its owner; none outside the 90 days.
    for o in opps:
        assert start <= o.created_at <= now
        if o.status == "owned":
            assert o.owner_id is not None and o.pool_id is None
        elif o.status == "pooled":
            assert o.owner_id is None and o.pool_id is not None and o.is_recycled
        else:
            assert o.status in ("won", "lost") and o.owner_id is not None and o.closed_at <= now
    status = Counter(o.status for o in opps)
    assert status["owned"] and status["pooled"] and status["lost"]

    # The funnel narrows stage by stage, to a few per cent won.
    codes = dict(session.execute(select(DictItem.id, DictItem.code)).all())
    stage = Counter(codes[o.stage_id] for o in opps)
    assert stage["won"] == status["won"]
    reached = {s: 0 for s in STAGES}
    for o in opps:
        ladder = codes[o.stage_id]
        if ladder == "lost":  # a lost one reached at least its first contact, or none
            continue
        for s in STAGES[:STAGES.index(ladder) + 1]:
            reached[s] += 1
    values = [reached[s] for s in STAGES]
    assert values == sorted(values, reverse=True) and values[1] > values[2] > values[-1]
    assert 0.01 <= status["won"] / COUNT <= 0.08
    assert sum(1 for o in opps if o.is_recycled) > COUNT * 0.05

    # Won ones were followed up and talked to on the phone.
    ids = [o.id for o in opps]
    won = [o.id for o in opps if o.status == "won"]
    fu_per_opp = Counter(session.scalars(select(FollowUp.opportunity_id)
                                         .where(FollowUp.opportunity_id.in_(won))))
    assert all(fu_per_opp[i] >= 5 for i in won)
    connected = set(session.scalars(select(CallRecord.opportunity_id).where(
        CallRecord.opportunity_id.in_(won), CallRecord.answered_at.is_not(None),
        CallRecord.duration_seconds > 0)))
    assert connected == set(won)

    # Follow-ups, calls, QA, logs and SMS all happened in the window, by several people of several teams.
    fu_times = session.execute(select(func.min(FollowUp.created_at), func.max(FollowUp.created_at))
                               .where(FollowUp.opportunity_id.in_(ids))).one()
    assert start <= fu_times[0] and fu_times[1] <= now
    calls = session.execute(select(CallRecord.status, CallRecord.employee_id, CallRecord.org_unit_id,
                                   CallRecord.started_at).where(CallRecord.opportunity_id.in_(ids))).all()
    assert len({c.employee_id for c in calls}) >= 20 and len({c.org_unit_id for c in calls}) == 6
    assert all(start <= c.started_at <= now for c in calls)
    assert {"ended", "no_answer"} <= {c.status for c in calls}
    assert session.scalar(select(func.count(QaInspection.id)).where(QaInspection.score.is_not(None))) > 10
    assert session.scalar(select(func.count(AssignmentLog.id)).where(AssignmentLog.reason == "recycle")) > 0
    sms = Counter(session.scalars(select(SmsMessage.status).where(SmsMessage.uid.like("lgsms%"))))
    assert sms["delivered"] > sms["failed"] > 0
    assert session.scalar(select(func.count(BlacklistEntry.id)).where(BlacklistEntry.source == "inbound")) > 0

    # The counters the dispatch engine reads match what is held.
    for profile in session.scalars(select(SalesProfile)):
        held = session.scalar(select(func.count(Opportunity.id)).where(
            Opportunity.owner_id == profile.employee_id, Opportunity.status == "owned"))
        assert profile.open_count == held


def test_large_seed_runs_once(runner, session):
    result = runner.invoke(args=["crm", "seed-demo", "--size", "large", "--count", "300"])
    assert result.exit_code == 0, result.output
    tables = (Opportunity, Lead, Customer, FollowUp, CallRecord, AssignmentLog, SmsMessage)
    before = {m: session.scalar(select(func.count()).select_from(m)) for m in tables}
    assert before[Opportunity] >= 300
    again = runner.invoke(args=["crm", "seed-demo", "--size", "large", "--count", "300"])
    assert again.exit_code == 0, again.output
    assert "already seeded" in again.output
    session.expire_all()
    assert {m: session.scalar(select(func.count()).select_from(m)) for m in tables} == before
