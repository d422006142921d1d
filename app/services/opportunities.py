"""An opportunity's way along the funnel: follow-ups (which restart its idle clock and extend its
protection), stage changes, and closing it as won or lost; and the follow-up clocks lists filter by.

Like app.services.ownership, each command locks the opportunity, checks, then writes in the caller's
transaction; the caller commits, or rolls back on DomainError.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, select

from app import clock
from app.models.employee import Employee
from app.models.metadata import DictItem, DictType
from app.models.sales import LOST, OPEN_STATUSES, OWNED, WON, FollowUp, Opportunity
from app.services import audit
from app.services.circulation import rule_of
from app.services.errors import DomainError
from app.services.ownership import as_actor, lock_opportunities, lock_profiles, require_all

STAGE_DICT, LOST_REASON_DICT, FOLLOWUP_TYPE_DICT = "opportunity_stage", "lost_reason", "followup_type"


def due_today_clause(now: dt.datetime):
    """WHERE condition: the next follow-up is still ahead today (business calendar day)."""
    _, end = clock.day_bounds(now)
    return and_(Opportunity.next_followup_at >= now, Opportunity.next_followup_at < end)


def overdue_clause(now: dt.datetime):
    """WHERE condition: the next follow-up time has passed without a follow-up (one resets it)."""
    return Opportunity.next_followup_at < now


def _dict_item(session, type_code: str, value, field_name: str, required: bool = False) -> DictItem | None:
    if value is None or value == "":
        if required:
            raise DomainError("Required", field=field_name)
        return None
    item_id = value.id if hasattr(value, "id") else value
    try:
        item_id = int(item_id)
    except (TypeError, ValueError):
        raise DomainError("Unknown option %(value)s", field=field_name, value=repr(value)) from None
    item = session.scalar(select(DictItem).join(DictItem.dict_type)
                          .where(DictItem.id == item_id, DictType.code == type_code))
    if item is None:
        raise DomainError("Unknown option %(value)s", field=field_name, value=repr(value))
    return item


def add_follow_up(session, opportunity, employee: Employee | None, type_id, content: str | None,
                  result: str | None, next_followup_at: dt.datetime | None, now: dt.datetime) -> FollowUp:
    """Record a contact attempt; it restarts the idle clock and extends the protection period (each
    follow-up by the rule's protect_extend_days, never beyond claimed_at + protect_max_days)."""
    opp_id = opportunity.id if hasattr(opportunity, "id") else opportunity
    content = (content or "").strip()
    if not content:
        raise DomainError("Write what happened", field="content")
    if len(content) > 4000:
        raise DomainError("At most 4000 characters", field="content")
    result = (result or "").strip() or None
    if result and len(result) > 100:
        raise DomainError("At most 100 characters", field="result")
    if next_followup_at is not None and next_followup_at <= now:
        raise DomainError("The next follow-up must be in the future", field="next_followup_at")
    kind = _dict_item(session, FOLLOWUP_TYPE_DICT, type_id, "type")
    if kind is not None and not kind.enabled:
        raise DomainError("%(name)s is disabled and cannot be chosen", field="type", name=str(kind))
    opps = lock_opportunities(session, [opp_id])
    require_all(opps, [opp_id])
    opp = opps[0]
    if opp.status not in OPEN_STATUSES:
        raise DomainError("#%(id)s is closed (%(state)s)", status=409, id=opp.id, state=opp.status)
    follow_up = FollowUp(opportunity_id=opp.id, employee_id=employee.id if employee else None,
                         type_id=kind.id if kind else None, content=content, result=result,
                         next_followup_at=next_followup_at, created_at=now, updated_at=now)
    session.add(follow_up)
    opp.last_followup_at = now
    opp.next_followup_at = next_followup_at
    opp.idle_since = now
    opp.recycle_reminded_at = None
    if opp.status == OWNED and opp.protected_until is not None and opp.claimed_at is not None:
        rule = rule_of(session, opp)
        if rule is not None and rule.protect_extend_days:
            extended = opp.protected_until + dt.timedelta(days=rule.protect_extend_days)
            if rule.protect_max_days is not None:
                extended = min(extended, opp.claimed_at + dt.timedelta(days=rule.protect_max_days))
            opp.protected_until = max(opp.protected_until, extended)
    session.flush()
    return follow_up


def set_stage(session, opportunity, stage_item, lost_reason, now: dt.datetime, actor=None) -> Opportunity:
    """Move an open opportunity along the funnel; "won" and "lost" close it (lost needs a reason)."""
    actor = as_actor(actor)
    opp_id = opportunity.id if hasattr(opportunity, "id") else opportunity
    stage = _dict_item(session, STAGE_DICT, stage_item, "stage", required=True)
    opps = lock_opportunities(session, [opp_id])
    require_all(opps, [opp_id])
    opp = opps[0]
    if opp.status not in OPEN_STATUSES:
        raise DomainError("#%(id)s is already closed (%(state)s)", field="stage", status=409, id=opp.id,
                          state=opp.status)
    if not stage.enabled and stage.id != opp.stage_id:
        raise DomainError("%(name)s is disabled and cannot be chosen", field="stage", name=str(stage))
    reason = None
    if stage.code == LOST:
        reason = _dict_item(session, LOST_REASON_DICT, lost_reason, "lost_reason", required=True)
        if not reason.enabled:
            raise DomainError("%(name)s is disabled and cannot be chosen", field="lost_reason",
                              name=str(reason))
    if stage.id == opp.stage_id:
        return opp
    if stage.code in (WON, LOST):
        opp.closed_from_stage_id = opp.stage_id
    opp.stage_id = stage.id
    opp.stage_changed_at = now
    if stage.code in (WON, LOST):
        owner_id = opp.owner_id if opp.status == OWNED else None
        if owner_id is not None:
            profile = lock_profiles(session, [owner_id])[owner_id]
            rule = rule_of(session, opp)
            if stage.code == WON:
                profile.won_count += 1
            if not (stage.code == WON and rule is not None and rule.capacity_counts_won):
                profile.open_count = max(profile.open_count - 1, 0)
        opp.status = WON if stage.code == WON else LOST
        opp.lost_reason_id = reason.id if reason else None
        opp.closed_at = now
        opp.protected_until = None
        opp.dispatch_after = None
        audit.record(session, "update", target_type="opportunity", target_id=opp.id,
                     summary=f"#{opp.id} closed as {stage.code} by {actor.name}")
    session.flush()
    return opp
