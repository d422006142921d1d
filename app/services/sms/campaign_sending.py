"""Campaign sending: each prepared message handed to the provider exactly once.

`send` claims pending messages by compare-and-set — UPDATE … SET status='sending', claim=<token>
WHERE id IN (…) AND status='pending' (the inner SELECT uses FOR UPDATE SKIP LOCKED on PostgreSQL) — and
commits the claim before the provider sees anything. The provider gets our uid as its correlation id.
Results are written by CAS too (… WHERE status='sending' AND claim=<token>). The claim token has a
heartbeat key in Redis, refreshed every batch; a message left in 'sending' whose claim's heartbeat is gone
belongs to a dead worker and is reconciled: the provider is asked which of those uids it accepted
(`lookup`; the sink's unique correlation column answers exactly) — accepted ones become sent, the rest go
back to pending and are sent again. A provider that cannot answer gets them marked failed "indeterminate"
(never a possible second send). Hence: no number twice, none skipped.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import String, and_, cast, func, literal, or_, select, update
from sqlalchemy.sql import bindparam

from app.clock import utcnow
from app.models.sms import (
    CAMPAIGN_CANCELLED,
    CAMPAIGN_COMPLETED,
    CAMPAIGN_RUNNING,
    MARKETING,
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_FAILED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    SmsCampaign,
    SmsMessage,
)
from app.services.sms import limits
from app.services.sms.campaign_preparation import CHUNK, slot_key, slot_member
from app.services.sms.campaigns import set_status
from app.services.sms.providers import OutboundSms, ProviderError, provider_for

MAX_ATTEMPTS = 3
HEARTBEAT = "sms:sender:"
INDETERMINATE = "indeterminate"  # the provider may or may not have the message: never sent again
INTERRUPTED = "interrupted"  # SendResult.stopped when the caller's `on_batch` asked to stop
T = SmsMessage.__table__


@dataclass
class SendResult:
    batches: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    reconciled: int = 0
    next_at: dt.datetime | None = None  # the next time something becomes sendable (quiet hours, back-off)
    wait_for_claims: bool = False  # 'sending' messages of a worker that may still be alive
    completed: bool = False
    stopped: str | None = None  # the campaign's status when it stopped being running, or INTERRUPTED


class Outcome(NamedTuple):
    """What becomes of one claimed message (written by CAS on the claim)."""

    id: int
    status: str
    provider_id: str | None = None
    error_code: str | None = None
    sent_at: dt.datetime | None = None
    send_after: dt.datetime | None = None  # back to pending: not before (retry back-off)

    def params(self) -> dict:
        return {"_id": self.id, "_status": self.status, "_pid": self.provider_id, "_code": self.error_code,
                "_sent_at": self.sent_at, "_after": self.send_after}


def outcome_of(row, ok: bool, provider_id=None, code=None, retryable=False, now=None) -> Outcome:
    """A claimed row's outcome: sent, back to pending after a back-off (retryable, attempts left), failed."""
    if ok:
        return Outcome(row.id, MSG_SENT, provider_id, sent_at=now)
    if retryable and row.attempts < MAX_ATTEMPTS:
        backoff = now + dt.timedelta(seconds=2 ** row.attempts)
        return Outcome(row.id, MSG_PENDING, error_code=code, send_after=backoff)
    return Outcome(row.id, MSG_FAILED, error_code=code)


def send(session, campaign_id: int, redis, provider=None, max_batches: int | None = None,
         now_fn=utcnow, sleep=time.sleep, on_batch: Callable[[SendResult], bool] | None = None) -> SendResult:
    """Send the campaign's sendable messages at the channel's batch size and rate limit.

    Rounds of: settle what dead workers left, claim and send batches until none is claimable. It returns
    when the campaign stops running, at quiet hours or a back-off (`next_at`), when live claims of
    another worker remain (`wait_for_claims`), after `max_batches`, when `on_batch(result)` (called after
    each batch) answers True, or when everything is settled — then the campaign is completed."""
    result = SendResult()
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None:
        result.stopped = "missing"
        return result
    sender = _Sender(session, campaign, redis, provider, now_fn, sleep)
    sender.beat()
    try:
        result.reconciled += sender.reconcile()
        while True:
            if sender.batches(result, max_batches, on_batch):
                return result
            settled = sender.reconcile()  # nothing claimable now: settle orphans once more
            result.reconciled += settled
            if not settled:
                break
        return sender.finish(result)
    finally:
        sender.end()


class _Sender:
    """One sender run of a campaign: its claim token (with a heartbeat in Redis), the channel's batch size
    and shared rate limit, the quiet hours, and the frequency slots its failures give back."""

    def __init__(self, session, campaign: SmsCampaign, redis, provider, now_fn, sleep):
        self.session, self.campaign_id, self.redis = session, campaign.id, redis
        self.channel = channel = campaign.channel or campaign.template.channel
        self.provider = provider or provider_for(channel)
        self.marketing = campaign.template.kind == MARKETING
        self.window = limits.quiet_hours(session)
        self.token, self.lease = uuid.uuid4().hex, lease_seconds(channel)
        self.rate = limits.ChannelRateLimiter(redis)  # the channel's messages/s, shared by all workers
        self.slots = _Slots(redis, campaign.id, channel, campaign.template_id)
        self.now_fn, self.sleep = now_fn, sleep

    def beat(self, extra: float = 0.0) -> None:
        beat(self.redis, self.token, self.lease + extra)

    def end(self) -> None:
        self.redis.delete(HEARTBEAT + self.token)

    def reconcile(self) -> int:
        return reconcile(self.session, self.campaign_id, self.redis, self.provider, self.token, self.slots,
                         self.now_fn)

    def batches(self, result: SendResult, max_batches: int | None, on_batch) -> bool:
        """Claim and send batches until none is claimable (False) or the run must return now (True)."""
        session, campaign_id = self.session, self.campaign_id
        while max_batches is None or result.batches < max_batches:
            status = session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign_id))
            if status != CAMPAIGN_RUNNING:
                result.stopped = status
                return True
            now = self.now_fn()
            if self.marketing and not self.window.get("recipient_zone", True):  # one zone: defer in bulk
                opening = limits.next_window_start(now, self.window)
                if opening is not None:  # quiet hours: what waits is deferred, not dropped
                    session.execute(update(T).where(T.c.campaign_id == campaign_id, T.c.status == MSG_PENDING)
                                    .values(status=MSG_DEFERRED, send_after=opening))
                    session.commit()
                    result.next_at = opening
                    return True
            self.beat()
            rows = claim(session, campaign_id, self.token, self.channel.batch_size, now)
            if not rows:
                return False
            if self.marketing:  # each recipient's own window: a closed one waits again (deferred)
                rows = hold_for_quiet_hours(session, self.token, rows, now, self.window)
                if not rows:
                    continue
            result.batches += 1
            wait = self.rate.reserve(self.channel.id, len(rows), self.channel.rate_limit)
            if wait > 0:  # our turn on the channel comes later: keep the claim alive meanwhile
                self.beat(extra=wait)
                self.sleep(wait)
            self._hand_over(rows, result)
            if on_batch is not None and on_batch(result):
                result.stopped = INTERRUPTED
                return True
        return False

    def _hand_over(self, rows, result: SendResult) -> None:
        """One batch to the provider, its outcomes recorded (and counted in `result`)."""
        out = [OutboundSms(r.uid, r.phone, r.content) for r in rows]
        try:
            answers = {a.uid: a for a in self.provider.send_batch(out)}
        except ProviderError as exc:
            if getattr(self.provider, "lookup", None) is not None:
                result.failed += self._settle_after_error(rows, exc)
            else:
                code = INDETERMINATE if exc.retryable else f"provider:{str(exc)[:50]}"
                now = self.now_fn()
                commit_outcomes(self.session, self.token, [outcome_of(r, False, code=code, now=now)
                                                           for r in rows], self.slots)
                result.failed += len(rows)
            return
        done = self.now_fn()
        outcomes = []
        for r in rows:
            a = answers.get(r.uid)
            if a is None:
                outcomes.append(outcome_of(r, False, code="missing_result", now=done))
            else:
                outcomes.append(outcome_of(r, a.ok, a.provider_id, a.error_code, a.retryable, now=done))
        commit_outcomes(self.session, self.token, outcomes, self.slots)
        for o in outcomes:
            if o.status == MSG_SENT:
                result.sent += 1
            elif o.status == MSG_FAILED:
                result.failed += 1
            else:
                result.retried += 1

    def _settle_after_error(self, rows, exc: ProviderError) -> int:
        """A whole batch failed: what the provider accepted anyway is sent; the rest retries or fails.
        Returns how many failed."""
        accepted = self.provider.lookup([r.uid for r in rows])
        now = self.now_fn()
        outcomes = [outcome_of(r, True, provider_id=accepted[r.uid], now=now) if r.uid in accepted
                    else outcome_of(r, False, code="provider_error", retryable=exc.retryable, now=now)
                    for r in rows]
        commit_outcomes(self.session, self.token, outcomes, self.slots)
        return sum(1 for o in outcomes if o.status == MSG_FAILED)

    def finish(self, result: SendResult) -> SendResult:
        """Nothing claimable and no orphan left: say when to come back, or complete the campaign."""
        session, campaign_id = self.session, self.campaign_id
        left = dict(session.execute(select(T.c.status, func.count()).where(
            T.c.campaign_id == campaign_id, T.c.status.in_((MSG_PENDING, MSG_DEFERRED, MSG_SENDING)))
            .group_by(T.c.status)).all())
        if left.get(MSG_PENDING) or left.get(MSG_DEFERRED):
            result.next_at = session.scalar(select(func.min(T.c.send_after)).where(
                T.c.campaign_id == campaign_id, T.c.status.in_((MSG_PENDING, MSG_DEFERRED))))
            return result
        if left.get(MSG_SENDING):
            result.wait_for_claims = True
            return result
        prepared = session.scalar(select(SmsCampaign.prepared).where(SmsCampaign.id == campaign_id))
        if prepared and set_status(session, campaign_id, CAMPAIGN_COMPLETED, (CAMPAIGN_RUNNING,)):
            session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                            .values(finished_at=self.now_fn()))
            result.completed = True
        session.commit()
        return result


# --- claims -------------------------------------------------------------------------------------------
def lease_seconds(channel) -> float:
    """How long a claim's heartbeat lives without a refresh: longer than a batch can take."""
    return max(2.0, 2 * (channel.timeout_seconds or 10) + channel.batch_size / max(channel.rate_limit, 1) + 1)


def beat(redis, token: str, lease: float) -> None:
    redis.set(HEARTBEAT + token, "1", px=int(lease * 1000))


def claim(session, campaign_id: int, token: str, limit: int, now: dt.datetime) -> list:
    """Up to `limit` sendable messages moved to 'sending' under `token` (committed): rows of
    (id, uid, phone, content, attempts)."""
    sendable = and_(T.c.campaign_id == campaign_id, T.c.status.in_((MSG_PENDING, MSG_DEFERRED)),
                    or_(T.c.send_after.is_(None), T.c.send_after <= now))
    inner = select(T.c.id).where(sendable).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        # No ORDER BY: any pending rows will do, and without it LIMIT stops early instead of sorting the
        # whole pending set of a large campaign on every batch.
        inner = inner.with_for_update(skip_locked=True)
    else:
        inner = inner.order_by(T.c.id)  # free on SQLite (the index ends in the rowid)
    # A message's uid (the provider's correlation id) is made at its first claim — unique by the id,
    # unguessable by a random prefix — and kept by every later claim, so a re-send carries the same one.
    uid = func.coalesce(T.c.uid, literal(secrets.token_hex(8)) + cast(T.c.id, String))
    stmt = (update(T).where(T.c.id.in_(inner.scalar_subquery()), T.c.status.in_((MSG_PENDING, MSG_DEFERRED)))
            .values(status=MSG_SENDING, claim=token, attempts=T.c.attempts + 1, uid=uid)
            .returning(T.c.id, T.c.uid, T.c.phone, T.c.content, T.c.attempts))
    rows = session.execute(stmt).all()
    session.commit()
    return sorted(rows)


def hold_for_quiet_hours(session, token: str, rows, now: dt.datetime, window: dict) -> list:
    """For the sender, after a claim: claimed marketing rows (with .id, .phone) whose recipient's window is
    closed at `now` go back to 'deferred' until it opens (CAS on the claim, attempt not spent); returns
    the rows that may be sent now. A message prepared inside its window can reach the sender after it."""
    opening_of = limits.openings(now, window)
    held: dict[dt.datetime, list[int]] = {}
    ready = []
    for row in rows:
        opening = opening_of(row.phone)
        if opening is None:
            ready.append(row)
        else:
            held.setdefault(opening, []).append(row.id)
    for opening, ids in held.items():
        session.execute(update(T).where(T.c.id.in_(ids), T.c.status == MSG_SENDING, T.c.claim == token)
                        .values(status=MSG_DEFERRED, send_after=opening, claim=None,
                                attempts=T.c.attempts - 1))
    if held:
        session.commit()
    return ready


def commit_outcomes(session, token: str, outcomes: list[Outcome], slots: _Slots | None) -> None:
    """Write outcomes by CAS (only rows still 'sending' under our claim move), commit, then give back the
    frequency slots of the messages that failed for sure."""
    if outcomes:
        stmt = (update(T).where(T.c.id == bindparam("_id"), T.c.status == MSG_SENDING, T.c.claim == token)
                .values(status=bindparam("_status"), provider_id=bindparam("_pid"),
                        error_code=bindparam("_code"), sent_at=bindparam("_sent_at"),
                        send_after=bindparam("_after"), claim=None))
        session.connection().execute(stmt, [o.params() for o in outcomes])
    session.commit()
    if slots is not None:
        slots.note(outcomes)
        slots.flush(session)


def reconcile(session, campaign_id: int, redis, provider, token: str, slots: _Slots | None = None,
              now_fn=utcnow) -> int:
    """Settle messages left in 'sending' by claims whose heartbeat is gone (dead workers): the provider
    is asked which it accepted. Returns how many were settled."""
    claims = session.scalars(select(T.c.claim).distinct().where(T.c.campaign_id == campaign_id,
                                                                T.c.status == MSG_SENDING)).all()
    settled = 0
    for old in claims:
        if old == token or (old and redis.exists(HEARTBEAT + old)):
            continue  # ours, or a live worker's
        # Take the orphans over (CAS on the old claim: one reconciler wins).
        session.execute(update(T).where(T.c.campaign_id == campaign_id, T.c.status == MSG_SENDING,
                                        T.c.claim == old).values(claim=token))
        session.commit()
        rows = session.execute(select(T.c.id, T.c.uid, T.c.attempts).where(
            T.c.campaign_id == campaign_id, T.c.status == MSG_SENDING, T.c.claim == token)).all()
        settled += _settle_unknown(session, provider, token, rows, slots, now_fn())
    return settled


def _settle_unknown(session, provider, token: str, rows, slots: _Slots | None, now: dt.datetime) -> int:
    """Messages whose hand-over is in doubt: ask the provider which it accepted."""
    lookup = getattr(provider, "lookup", None)
    if lookup is None:
        outcomes = [outcome_of(r, False, code=INDETERMINATE, now=now) for r in rows]
    else:
        accepted = lookup([r.uid for r in rows])
        # never reached the provider: back to pending, sent again (attempts not spent)
        outcomes = [outcome_of(r, True, provider_id=accepted[r.uid], now=now) if r.uid in accepted else
                    Outcome(r.id, MSG_PENDING) for r in rows]
    commit_outcomes(session, token, outcomes, slots)
    return len(outcomes)


# --- frequency slots given back -----------------------------------------------------------------------
class _Slots:
    """The frequency-limit slots of a campaign's messages (taken at preparation, member = the campaign).

    A message that ends failed for sure (never handed over) or cancelled gives its slot back, after the
    outcome is committed; ZREM of the member is idempotent, so a second release frees nothing more.
    An "indeterminate" failure keeps its slot: the recipient may have got the message."""

    def __init__(self, redis, campaign_id: int, channel, template_id: int):
        self.limiter = limits.FrequencyLimiter(redis)
        self.key, self.member = slot_key(channel, template_id), slot_member(campaign_id)
        self.ids: list[int] = []

    def note(self, outcomes: list[Outcome]) -> None:
        self.ids += [o.id for o in outcomes if o.status == MSG_FAILED and o.error_code != INDETERMINATE]

    def flush(self, session) -> int:
        """Release the slots of the noted messages that are failed in the database (after the commit)."""
        ids, self.ids = self.ids, []
        if not ids:
            return 0
        phones = session.scalars(select(T.c.phone).where(T.c.id.in_(ids), T.c.status == MSG_FAILED)).all()
        session.commit()
        return self.limiter.release_many(phones, self.key, self.member)


def release_slots(session, redis, campaign_id: int, chunk: int = CHUNK) -> int:
    """Give back the slots of a campaign's messages that will never be sent (idempotent; streamed).

    Failed ones (not "indeterminate") always; of a cancelled campaign also the cancelled-by-cancel and
    any still pending or deferred. Run after a cancel and at completion (the sweep job), it also covers a
    worker killed between committing a failure and releasing its slot."""
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None:
        return 0
    channel = campaign.channel or campaign.template.channel
    limiter = limits.FrequencyLimiter(redis)
    key, member = slot_key(channel, campaign.template_id), slot_member(campaign_id)
    gone = and_(T.c.status == MSG_FAILED, or_(T.c.error_code.is_(None), T.c.error_code != INDETERMINATE))
    if campaign.status == CAMPAIGN_CANCELLED:
        gone = or_(gone, T.c.status.in_((MSG_PENDING, MSG_DEFERRED)),
                   and_(T.c.status == MSG_CANCELLED, T.c.cancel_reason == "campaign_cancelled"))
    freed, after = 0, 0
    while True:
        rows = session.execute(select(T.c.id, T.c.phone).where(T.c.campaign_id == campaign_id, T.c.id > after,
                                                               gone).order_by(T.c.id).limit(chunk)).all()
        session.commit()
        if not rows:
            return freed
        freed += limiter.release_many([r.phone for r in rows], key, member)
        after = rows[-1].id
