"""Bulk campaigns' life cycle: draft → scheduled → running ⇄ paused → completed, or cancelled.

A campaign's work runs as two job runs (app.services.runner): "sms_campaign_prepare" turns the audience
into messages (app.services.sms.campaign_preparation), then "sms_campaign_send" hands them to the
provider (app.services.sms.campaign_sending); both stop between chunks when the campaign is paused or
cancelled and resume from the campaign's own saved state (the preparation's cursor, the messages'
statuses). The commands here are what the console, the API and the jobs call; the caller commits, and the
runs are enqueued when it does.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select, update

from app.clock import utcnow
from app.models.bigdata import Segment
from app.models.jobs import ACTIVE, FAILED, SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND, JobRun
from app.models.sms import (
    APPROVED,
    CAMPAIGN_CANCELLED,
    CAMPAIGN_DRAFT,
    CAMPAIGN_PAUSED,
    CAMPAIGN_RUNNING,
    CAMPAIGN_SCHEDULED,
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_DELIVERED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    SmsCampaign,
    SmsMessage,
)
from app.services import runner
from app.services.errors import DomainError
from app.services.sms import templates
from app.services.sms.campaign_audience import (
    FILTER,
    SEGMENT,
    UPLOAD,
    audience_of,
    drop_upload,
    kind_of,
    variables_of,
)
from app.services.sms.campaign_segment import draft_audience

TARGET = "sms_campaign"  # the job runs' target_type
T = SmsMessage.__table__


# --- checks -------------------------------------------------------------------------------------------
def check_draft(session, campaign: SmsCampaign, creating: bool, kind: str | None = None,
                segment: Segment | None = None, segment_field: str = "segment") -> None:
    """What a saved draft must hold (the form's and the API's check): a name, an audience — a segment or an
    uploaded list (`kind`: the form's choice; None, as from the API: a segment when one is given, else the
    draft's kind, else an uploaded list) — and valid variables; only a draft can be edited. The audience
    description is written here, never taken from the person."""
    if not (campaign.name or "").strip():
        raise DomainError("Enter a name", field="name")
    if campaign.status not in (None, CAMPAIGN_DRAFT) and not creating:
        raise DomainError("Only a draft campaign can be edited", field="name")
    if kind is None:  # the API: a segment when one is given; an old saved filter stays; else a list
        if segment is not None:
            kind = SEGMENT
        else:
            kind = FILTER if campaign.audience and kind_of(campaign) == FILTER else UPLOAD
    if kind == SEGMENT:
        if segment is None:
            raise DomainError("Choose a segment", field=segment_field)
        if campaign.id is not None and kind_of(campaign) != SEGMENT:
            drop_upload(session, campaign.id)  # the snapshot is taken into an empty list
        campaign.segment, campaign.segment_id = segment, segment.id
        campaign.audience = draft_audience(segment)
    elif kind == UPLOAD:
        campaign.segment, campaign.segment_id = None, None
        campaign.audience = json.dumps({"kind": UPLOAD})
    elif kind != FILTER:  # an old saved filter stays as it is
        raise DomainError("Choose the audience: a segment or an uploaded list", field="audience_kind")
    audience_of(campaign)
    variables_of(campaign)


def check_campaign(session, campaign: SmsCampaign) -> None:
    """What must hold before a campaign is launched (DomainError with the field)."""
    tpl = campaign.template
    if tpl is None:
        raise DomainError("Choose a template", field="template")
    if tpl.status != APPROVED:
        raise DomainError("Only an approved template can be sent", field="template")
    channel = campaign.channel or tpl.channel
    if channel is None or not channel.enabled:
        raise DomainError("Choose an enabled channel", field="channel")
    if audience_of(campaign)["kind"] == SEGMENT and (
            campaign.segment_id is None or session.get(Segment, campaign.segment_id) is None):
        raise DomainError("Choose a segment", field="segment")
    values = variables_of(campaign)
    missing = [n for n in templates.declared(tpl.variables) if n != "name" and n not in values]
    if missing:
        raise DomainError("Give a value for the variables: %(names)s", field="variables",
                          names=", ".join(missing))


# --- commands -----------------------------------------------------------------------------------------
def launch(session, campaign: SmsCampaign, at: dt.datetime | None = None, now: dt.datetime | None = None,
           actor=None, start: bool = True) -> SmsCampaign:
    """Schedule the campaign now or at `at` (naive UTC). One due now has its preparation run started
    (unless `start` is False); a later one is started by the scheduled sweep (`start_due`)."""
    if campaign.status not in (CAMPAIGN_DRAFT, CAMPAIGN_SCHEDULED):
        raise DomainError("A %(state)s campaign cannot be launched", field="status", state=campaign.status)
    check_campaign(session, campaign)
    now = now or utcnow()
    campaign.status = CAMPAIGN_SCHEDULED
    campaign.scheduled_at = at if at and at > now else now
    if campaign.channel_id is None:
        campaign.channel_id = campaign.template.channel_id
    if actor is not None and not campaign.created_by:
        campaign.created_by = getattr(actor, "username", None) or str(actor)
    session.flush()
    if start and campaign.scheduled_at <= now:
        start_preparation(session, campaign.id, started_by=getattr(actor, "id", None))
    return campaign


def set_status(session, campaign_id: int, new: str, allowed_from: tuple[str, ...]) -> bool:
    """Move the campaign to `new` if it is in one of `allowed_from` (compare-and-set); whether it moved."""
    done = session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id,
                                                     SmsCampaign.status.in_(allowed_from))
                           .values(status=new)).rowcount
    return bool(done)


def pause(session, campaign_id: int) -> None:
    """Pause: the running preparation or sending stops at its next chunk (resume carries on)."""
    if not set_status(session, campaign_id, CAMPAIGN_PAUSED, (CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING)):
        raise DomainError("Only a scheduled or running campaign can be paused", field="status")


def resume(session, campaign_id: int, actor=None, start: bool = True) -> JobRun | None:
    """Resume a paused campaign: its preparation carries on from the saved cursor if it was cut short,
    else the sending does. Returns the run started (or already active)."""
    if not set_status(session, campaign_id, CAMPAIGN_RUNNING, (CAMPAIGN_PAUSED,)):
        raise DomainError("Only a paused campaign can be resumed", field="status")
    if not start:
        return None
    prepared = session.scalar(select(SmsCampaign.prepared).where(SmsCampaign.id == campaign_id))
    started_by = getattr(actor, "id", None)
    if prepared:
        return start_sending(session, campaign_id, started_by=started_by)
    return start_preparation(session, campaign_id, started_by=started_by)


def cancel(session, campaign_id: int, now: dt.datetime | None = None, actor=None) -> int:
    """Cancel the campaign: what has not been handed to the provider is cancelled (campaign_cancelled),
    and its active job runs are cancelled. Returns how many messages will not be sent."""
    if not set_status(session, campaign_id, CAMPAIGN_CANCELLED,
                      (CAMPAIGN_DRAFT, CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING, CAMPAIGN_PAUSED)):
        raise DomainError("This campaign is already finished", field="status")
    session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                    .values(finished_at=now or utcnow()))
    for run in active_runs(session, campaign_id):
        runner.cancel(session, run.id, actor)
    return session.execute(update(SmsMessage).where(
        SmsMessage.campaign_id == campaign_id, SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED)))
        .values(status=MSG_CANCELLED, cancel_reason="campaign_cancelled")).rowcount


# --- the campaign's job runs --------------------------------------------------------------------------
def start_preparation(session, campaign_id: int, started_by: int | None = None) -> JobRun:
    """Start (or find active) the run preparing the campaign; enqueued when the caller commits."""
    return runner.start(session, SMS_CAMPAIGN_PREPARE, target_type=TARGET, target_id=campaign_id,
                        started_by=started_by)


def start_sending(session, campaign_id: int, started_by: int | None = None) -> JobRun:
    """Start (or find active) the run sending the campaign; enqueued when the caller commits."""
    return runner.start(session, SMS_CAMPAIGN_SEND, target_type=TARGET, target_id=campaign_id,
                        started_by=started_by)


def active_runs(session, campaign_id: int) -> list[JobRun]:
    return list(session.scalars(select(JobRun).where(JobRun.target_type == TARGET,
                                                     JobRun.target_id == campaign_id,
                                                     JobRun.status.in_(ACTIVE))))


def runs_of(session, campaign_id: int, limit: int = 5) -> list[JobRun]:
    """The campaign's latest job runs, newest first (its page shows them with their errors)."""
    return list(session.scalars(select(JobRun).where(JobRun.target_type == TARGET,
                                                     JobRun.target_id == campaign_id)
                                .order_by(JobRun.id.desc()).limit(limit)))


def start_due(session, now: dt.datetime | None = None) -> list[JobRun]:
    """The scheduled sweep: start what is due and has no active run — the preparation of a scheduled
    campaign whose time has come (or of a running one whose preparation run was lost), and the sending of
    a prepared running campaign with messages due (after quiet hours or a back-off) or left 'sending' by a
    dead worker. A campaign whose last run of that kind failed is left for a person to look at."""
    now = now or utcnow()
    started = []
    due = session.scalars(select(SmsCampaign.id).where(
        SmsCampaign.status == CAMPAIGN_SCHEDULED, SmsCampaign.scheduled_at <= now)).all()
    for campaign_id in due:
        if not active_runs(session, campaign_id) and not _last_run_failed(session, campaign_id,
                                                                          SMS_CAMPAIGN_PREPARE):
            started.append(start_preparation(session, campaign_id))
    for campaign_id, prepared in session.execute(select(SmsCampaign.id, SmsCampaign.prepared)
                                                 .where(SmsCampaign.status == CAMPAIGN_RUNNING)).all():
        kind = SMS_CAMPAIGN_SEND if prepared else SMS_CAMPAIGN_PREPARE
        if active_runs(session, campaign_id) or _last_run_failed(session, campaign_id, kind):
            continue
        if prepared and not _sendable(session, campaign_id, now):
            continue
        started.append(start_sending(session, campaign_id) if prepared else start_preparation(session,
                                                                                              campaign_id))
    return started


def _last_run_failed(session, campaign_id: int, kind: str) -> bool:
    last = runner.latest_run(session, kind, TARGET, campaign_id)
    return last is not None and last.status == FAILED


def _sendable(session, campaign_id: int, now: dt.datetime) -> bool:
    waiting = (T.c.status.in_((MSG_PENDING, MSG_DEFERRED))
               & (T.c.send_after.is_(None) | (T.c.send_after <= now))) | (T.c.status == MSG_SENDING)
    return session.scalar(select(T.c.id).where(T.c.campaign_id == campaign_id, waiting).limit(1)) is not None


# --- progress -----------------------------------------------------------------------------------------
def progress(session, campaign_id: int, now: dt.datetime | None = None) -> dict:
    """Counts per outcome, the sending rate over the last minute and an ETA."""
    now = now or utcnow()
    campaign = session.get(SmsCampaign, campaign_id)
    counts: dict[str, int] = {}
    for status, reason, n in session.execute(
            select(T.c.status, T.c.cancel_reason, func.count()).where(T.c.campaign_id == campaign_id)
            .group_by(T.c.status, T.c.cancel_reason)):
        counts[f"cancelled:{reason}" if status == MSG_CANCELLED else status] = n
    recent = session.scalar(select(func.count()).where(
        T.c.campaign_id == campaign_id, T.c.status.in_((MSG_SENT, MSG_DELIVERED)),
        T.c.sent_at >= now - dt.timedelta(seconds=60))) or 0
    rate = recent / 60.0
    remaining = sum(counts.get(s, 0) for s in (MSG_PENDING, MSG_DEFERRED, MSG_SENDING))
    return {"id": campaign_id, "status": campaign.status if campaign else None,
            "prepared": bool(campaign and campaign.prepared), "counts": counts,
            "total": sum(counts.values()), "remaining": remaining, "rate": round(rate, 2),
            "eta_seconds": round(remaining / rate) if rate else None,
            "runs": [runner.progress(run) for run in runs_of(session, campaign_id)]}

