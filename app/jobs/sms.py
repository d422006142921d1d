"""Job-runner handlers of SMS campaigns, and their periodic jobs. Thin: one service command per chunk.

Preparation then sending, each a job run (app.services.runner) targeting the campaign. Both are safe to
run twice and to kill at any moment: the preparation resumes from the campaign's cursor (committed with
each chunk's rows), the sender reconciles what a dead worker left in 'sending'. Both return between
chunks when the campaign is paused or cancelled, or the run is cancelled (the campaign is then paused,
so that Resume carries on). The run's done / total are progress for people: each new run recounts them
from the campaign's rows, and in between they may lead the committed rows by the chunks in flight.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select

from app.clock import format_datetime, utcnow
from app.extensions import db, rq
from app.models.jobs import SMS_CAMPAIGN_PREPARE, SMS_CAMPAIGN_SEND
from app.models.sales import Customer
from app.models.sms import (
    CAMPAIGN_CANCELLED,
    CAMPAIGN_COMPLETED,
    CAMPAIGN_PAUSED,
    CAMPAIGN_RUNNING,
    CAMPAIGN_SCHEDULED,
    MSG_CANCELLED,
    MSG_DELIVERED,
    MSG_FAILED,
    MSG_SENT,
    SmsAudienceEntry,
    SmsCampaign,
    SmsMessage,
)
from app.services import runner
from app.services.sms import (
    campaign_audience,
    campaign_preparation,
    campaign_segment,
    campaign_sending,
    campaigns,
)

WAIT_IN_RUN = dt.timedelta(seconds=60)  # a back-off this short is waited out inside the run
CLAIM_POLL = 1.0  # seconds between looks at another worker's live claims


@runner.handler(SMS_CAMPAIGN_PREPARE)
def prepare_campaign(ctx: runner.RunContext) -> str:
    """Prepare the campaign's messages chunk by chunk, then start its sending."""
    session, campaign_id = db.session, ctx.target_id
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None:
        return "The campaign no longer exists"
    base = _message_count(session, campaign_id)
    ctx.checkpoint(session, done=base, total=_audience_size(session, campaign),
                   position={"cursor": campaign.cursor})
    session.commit()

    def on_chunk(result: campaign_preparation.PrepareResult) -> bool:
        ctx.checkpoint(session, done=base + result.rows, position={"cursor": result.cursor})
        return ctx.cancelled(session)

    result = campaign_preparation.prepare(session, campaign_id, rq.redis, chunk=ctx.params.get("chunk",
                                          campaign_preparation.CHUNK), on_chunk=on_chunk)
    session.commit()
    if result.finished:
        ctx.checkpoint(session, done=_message_count(session, campaign_id))
        campaigns.start_sending(session, campaign_id, started_by=ctx.started_by)
        session.commit()
        return f"Prepared {base + result.rows} messages; sending started"
    return _stopped(session, ctx, campaign_id, f"Prepared {base + result.rows} messages")


@runner.handler(SMS_CAMPAIGN_SEND)
def send_campaign(ctx: runner.RunContext) -> str:
    """Send the campaign's messages; waits out short back-offs and other workers' live claims, and
    leaves quiet hours to the scheduled sweep (`start_due_campaigns_job`)."""
    session, campaign_id, redis = db.session, ctx.target_id, rq.redis
    counts = _send_counts(session, campaign_id)
    ctx.checkpoint(session, done=counts["done"], total=counts["total"], failed=counts["failed"])
    session.commit()
    done, failed = counts["done"], counts["failed"]

    def on_batch(result: campaign_sending.SendResult) -> bool:
        ctx.checkpoint(session, done=done + result.sent + result.failed, failed=failed + result.failed)
        session.commit()
        return ctx.cancelled(session)

    while True:
        result = campaign_sending.send(session, campaign_id, redis, on_batch=on_batch)
        done, failed = done + result.sent + result.failed, failed + result.failed
        if result.completed:
            counts = _send_counts(session, campaign_id)  # exact, with what reconciling settled
            ctx.checkpoint(session, done=counts["done"], total=counts["total"], failed=counts["failed"])
            session.commit()
            return f"Completed: {counts['done']} messages sent or failed, {counts['failed']} of them failed"
        if result.stopped is not None or ctx.cancelled(session):
            if result.stopped == CAMPAIGN_CANCELLED:  # what will not be sent gives its slots back now
                campaign_sending.release_slots(session, redis, campaign_id)
            return _stopped(session, ctx, campaign_id, f"{done} messages sent or failed")
        soon = result.next_at is not None and result.next_at - utcnow() <= WAIT_IN_RUN
        if result.wait_for_claims or soon:
            # A worker that may still be alive holds some (until its lease ends), or a short back-off:
            # wait here, still beating (a checkpoint also stops this execution if it was taken over).
            ctx.checkpoint(session)
            session.commit()
            wait = CLAIM_POLL if result.next_at is None else (result.next_at - utcnow()).total_seconds()
            time.sleep(max(CLAIM_POLL / 2, wait))
            continue
        if result.next_at is not None:
            return f"{done} messages sent or failed; the rest waits until {format_datetime(result.next_at)}"
        return f"{done} messages sent or failed; nothing else to send now"


def _stopped(session, ctx: runner.RunContext, campaign_id: int, what: str) -> str:
    """The summary of a run that stopped early; a run cancelled on the Jobs page pauses its campaign."""
    if ctx.cancelled(session):
        paused = campaigns.set_status(session, campaign_id, CAMPAIGN_PAUSED,
                                      (CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING))
        session.commit()
        return f"{what}; the run was cancelled" + ("; the campaign is paused" if paused else "")
    status = session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign_id))
    return f"{what}; stopped: the campaign is {status}"


def _message_count(session, campaign_id: int) -> int:
    return session.scalar(select(func.count()).select_from(SmsMessage)
                          .where(SmsMessage.campaign_id == campaign_id)) or 0


def _audience_size(session, campaign: SmsCampaign) -> int | None:
    """How many recipients the audience holds now (the preparation's total)."""
    spec = campaign_audience.audience_of(campaign)
    if spec["kind"] == campaign_audience.SEGMENT and campaign.segment is not None \
            and not spec.get("snapshot_at"):  # the snapshot is taken by the preparation's first step
        return campaign_segment.recipient_count(session, campaign.segment)
    if spec["kind"] in (campaign_audience.UPLOAD, campaign_audience.SEGMENT):
        return session.scalar(select(func.count()).select_from(SmsAudienceEntry)
                              .where(SmsAudienceEntry.campaign_id == campaign.id))
    query = campaign_audience.filter_query(session, spec, blacklisted=False).with_only_columns(Customer.id)
    return session.scalar(select(func.count()).select_from(query.subquery()))


def _send_counts(session, campaign_id: int) -> dict:
    """The sending's total (messages not cancelled at preparation), done (sent or failed) and failed."""
    by_status = dict(session.execute(select(SmsMessage.status, func.count())
                                     .where(SmsMessage.campaign_id == campaign_id,
                                            SmsMessage.status != MSG_CANCELLED)
                                     .group_by(SmsMessage.status)).all())
    failed = by_status.get(MSG_FAILED, 0)
    done = by_status.get(MSG_SENT, 0) + by_status.get(MSG_DELIVERED, 0) + failed
    return {"total": sum(by_status.values()), "done": done, "failed": failed}


# --- periodic jobs ------------------------------------------------------------------------------------
def start_due_campaigns_job() -> list[int]:
    """Scheduled every minute: start the preparation of campaigns whose time has come, and the sending
    of those with messages due again (after quiet hours or a back-off) and no active run."""
    started = campaigns.start_due(db.session, utcnow())
    db.session.commit()
    return [run.id for run in started]


RELEASED_KEY = "sms:slots-released:"  # campaign id → the sweep gave its slots back already
RELEASE_WITHIN = dt.timedelta(days=2)


def release_slots_job() -> dict:
    """Scheduled: give back the frequency slots of campaigns cancelled or completed lately (once each;
    releasing is idempotent anyway). The sender releases failures as it goes; this catches a cancel made
    while no sender ran and a sender killed between a committed failure and its release."""
    ids = db.session.scalars(select(SmsCampaign.id).where(
        SmsCampaign.status.in_((CAMPAIGN_CANCELLED, CAMPAIGN_COMPLETED)),
        SmsCampaign.finished_at >= utcnow() - RELEASE_WITHIN)).all()
    db.session.commit()
    freed, swept = 0, 0
    for campaign_id in ids:
        if rq.redis.exists(RELEASED_KEY + str(campaign_id)):
            continue
        freed += campaign_sending.release_slots(db.session, rq.redis, campaign_id)
        rq.redis.set(RELEASED_KEY + str(campaign_id), "1", ex=int(RELEASE_WITHIN.total_seconds()) * 2)
        swept += 1
    return {"campaigns": swept, "freed": freed}
