"""Campaign preparation: the audience turned into SmsMessage rows, chunk by chunk, exactly once.

`prepare` streams the audience in fixed-size chunks by keyset (line number for an uploaded list and for a
segment's snapshot — taken in the transaction that starts the preparation, see campaign_segment — customer
id for an old saved filter), so memory stays flat whatever the size. Each chunk is rendered, checked (invalid
number, duplicate within the campaign, blacklist / opt-out, consent for marketing, sensitive words,
frequency limit, quiet hours) and written in ONE transaction together with `campaign.cursor`: every
recipient becomes a row — pending (or deferred until the quiet hours end) or cancelled with its reason —
and a worker killed mid-chunk redoes exactly that chunk. The frequency limiter counts the campaign's id as
the member (`slot_member`), so the redo does not spend a recipient's quota twice.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError

from app.clock import utcnow
from app.models.sms import (
    CAMPAIGN_RUNNING,
    CAMPAIGN_SCHEDULED,
    MARKETING,
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_PENDING,
    SmsCampaign,
    SmsMessage,
)
from app.services.metadata import config_value
from app.services.sms import campaign_segment, limits, templates, words
from app.services.sms.campaign_audience import (
    SEGMENT,
    UPLOAD,
    audience_of,
    filter_reader,
    read_upload_chunk,
    upload_recipients,
    valid_mobile,
    variables_of,
)
from app.services.sms.campaigns import set_status

CHUNK = 5000
DEFAULT_NAME = "客户"
T = SmsMessage.__table__


@dataclass(slots=True)
class PreparedMessage:
    """One recipient's message as the checks leave it, before it is written."""

    customer_id: int | None
    phone: str
    content: str | None
    segments: int
    status: str
    cancel_reason: str | None = None
    send_after: dt.datetime | None = None  # deferred: when the recipient's quiet hours end

    def cancel(self, reason: str) -> None:
        self.status, self.cancel_reason = MSG_CANCELLED, reason

    def defer(self, until: dt.datetime) -> None:
        self.status, self.send_after = MSG_DEFERRED, until

    @property
    def outcome(self) -> str:
        return self.cancel_reason or self.status


@dataclass
class PrepareResult:
    chunks: int = 0
    rows: int = 0
    outcomes: Counter = field(default_factory=Counter)
    finished: bool = False
    cursor: int = 0  # the audience key the last chunk prepared ended at


def slot_key(channel, template_id: int) -> str:
    """The frequency-limit key of a campaign's messages (signature + template), as prepare counts it."""
    return f"{channel.signature}:{template_id}"


def slot_member(campaign_id: int) -> str:
    """The member a campaign's frequency slots are held under: a redone chunk takes none twice."""
    return f"c{campaign_id}"


def prepare(session, campaign_id: int, redis, chunk: int = CHUNK, now: dt.datetime | None = None,
            max_chunks: int | None = None, on_chunk: Callable[[PrepareResult], bool] | None = None
            ) -> PrepareResult:
    """Turn the campaign's audience into messages, chunk by chunk from `campaign.cursor` (resumable).

    It stops when the campaign is no longer running (paused, cancelled), after `max_chunks`, or when
    `on_chunk(result)` — called for each chunk inside the transaction that ends its reads (and, without
    the writer thread, writes it) — answers True. Per chunk: one audience query (a saved
    filter's carries the blacklist as an outer join), one Redis call for the frequency limits, one bulk
    insert with the cursor in one transaction. Rendering, the sensitive-word scan and the segment count
    are done once per distinct name. The Redis call (with the quiet hours) and the insert run on two
    threads of `_ChunkWriter`, the insert on a connection of its own, while the next chunk is prepared."""
    result = PrepareResult()
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None or campaign.prepared:
        result.finished = campaign is not None
        return result
    if campaign.status in (CAMPAIGN_SCHEDULED, CAMPAIGN_RUNNING):
        # One transaction: scheduled → running, and a segment's snapshot (only when none was taken yet:
        # a campaign paused before its preparation began is running without one when resumed).
        if campaign.status == CAMPAIGN_SCHEDULED:
            set_status(session, campaign_id, CAMPAIGN_RUNNING, (CAMPAIGN_SCHEDULED,))
            session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                            .values(started_at=func.coalesce(SmsCampaign.started_at, now or utcnow())))
        campaign_segment.ensure_snapshot(session, campaign_id, now)
        session.commit()
    tpl, channel = campaign.template, campaign.channel or campaign.template.channel
    spec, marketing = audience_of(campaign), tpl.kind == MARKETING
    checks = _Checks(session, tpl.body, variables_of(campaign), channel.signature, marketing)
    settle = _settler(limits.FrequencyLimiter(redis), slot_key(channel, tpl.id),
                      limits.limits_for(session, tpl.kind), slot_member(campaign_id),
                      limits.quiet_hours(session) if marketing else None)
    blacklist_applies = marketing or not config_value(session, "sms.notifications_ignore_blacklist")
    upload, snapshot = spec["kind"] == UPLOAD, spec["kind"] == SEGMENT
    if upload:
        read = functools.partial(read_upload_chunk, campaign_id=campaign_id, chunk=chunk)
    elif snapshot:
        read = campaign_segment.snapshot_reader(session, campaign_id, blacklist_applies, chunk)
    else:
        read = filter_reader(session, spec, blacklist_applies, chunk)
    fixed = (campaign_id, tpl.id, channel.id)
    this = SmsCampaign.id == campaign_id
    status_of = select(SmsCampaign.status).where(this)
    cursor = result.cursor = campaign.cursor
    writer = _ChunkWriter(session.get_bind(), fixed, tpl.kind) if _can_pipeline(session) else None
    in_flight: list[list[PreparedMessage]] = []  # chunks the writer may not have committed yet
    try:
        while max_chunks is None or result.chunks < max_chunks:
            conn = session.connection()
            if conn.execute(status_of).scalar() != CAMPAIGN_RUNNING:
                break
            rows = read(conn, after=cursor)
            if not rows:
                if writer is not None:
                    result.outcomes.update(writer.wait())
                session.execute(update(SmsCampaign).where(this).values(prepared=True))
                session.commit()
                result.finished = True
                break
            now_ = now or utcnow()
            if upload:
                audience, seen = upload_recipients(session, campaign_id, rows, blacklist_applies)
            elif snapshot:  # the snapshot's customers: no phone to resolve
                audience, seen = campaign_segment.snapshot_recipients(session, campaign_id, rows)
            else:
                audience, seen = rows, set()
            if upload or (snapshot and seen is not None):
                for written in in_flight:  # chunks still being written are not visible to queries yet
                    seen.update(m.phone for m in written)
            seen = seen or set()
            records, candidates = checks.run(audience, seen)
            cursor = result.cursor = rows[-1][0]
            result.chunks += 1
            result.rows += len(records)
            # The caller's progress (a job run's checkpoint) goes into this transaction, committed now.
            stop = on_chunk is not None and on_chunk(result)
            if writer is None:
                result.outcomes.update(settle(records, candidates, now_))
                _persist(session.connection(), fixed, tpl.kind, records, now_, cursor)
                session.commit()
            else:
                session.commit()  # ends this chunk's reads; the writer commits its rows with the cursor
                result.outcomes.update(writer.submit(settle, records, candidates, now_, cursor))
                in_flight = [*in_flight[1 - _ChunkWriter.DEPTH:], records]
            if stop:
                break
        if writer is not None:
            result.outcomes.update(writer.wait())
    finally:
        if writer is not None:
            writer.close()
    return result


class _Checks:
    """The per-recipient checks of one campaign, in the order they apply; the rendered text, its scan and
    its segment count are kept per distinct name (a chunk repeats names a lot)."""

    def __init__(self, session, body: str, defaults: dict, signature: str, marketing: bool):
        self.render = _compiled(body, defaults)
        self.signature, self.marketing = signature, marketing
        self.scan = words.matcher(session)
        self.valid_cache: dict[str, bool] = {}
        self.texts: dict[str | None, tuple[str, bool, str, int]] = {}  # name → (text, blocked, masked, segs)

    def _text(self, name: str | None) -> tuple[str, bool, str, int]:
        composed = templates.compose(self.signature, self.render(name))
        found = self.scan.check(composed)
        if len(self.texts) > 100_000:
            self.texts.clear()
        text = self.texts[name] = (composed, found.blocked, found.text, templates.segments(found.text))
        return text

    def run(self, audience, seen: set[str]) -> tuple[list[PreparedMessage], list[PreparedMessage]]:
        """Every recipient of `audience` (Recipient-shaped tuples) as a message, and those of them still
        to pass the frequency limit and quiet hours (the settle step). `seen`: numbers already taken."""
        records: list[PreparedMessage] = []
        candidates: list[PreparedMessage] = []
        add, texts, cache, marketing = records.append, self.texts, self.valid_cache, self.marketing
        for customer_id, phone, name, consent, listed in audience:
            if not phone or not valid_mobile(phone, cache):
                add(PreparedMessage(customer_id, (phone or "")[:20], None, 1, MSG_CANCELLED,
                                    "invalid_number"))
                continue
            if phone in seen:
                add(PreparedMessage(customer_id, phone, None, 1, MSG_CANCELLED, "duplicate"))
                continue
            seen.add(phone)
            text = texts.get(name) or self._text(name)
            if listed is not None:
                add(PreparedMessage(customer_id, phone, text[0], 1, MSG_CANCELLED,
                                    "opted_out" if listed == "inbound" else "blacklisted"))
            elif marketing and consent is not None and not consent:  # SQLite's raw rows say 0
                add(PreparedMessage(customer_id, phone, text[0], 1, MSG_CANCELLED, "no_consent"))
            elif text[1]:
                add(PreparedMessage(customer_id, phone, text[0], 1, MSG_CANCELLED, "sensitive_word"))
            else:
                message = PreparedMessage(customer_id, phone, text[2], text[3], MSG_PENDING)
                add(message)
                candidates.append(message)
        return records, candidates


def _compiled(body: str, defaults: dict):
    """A fast renderer of `body`: literal parts and variable slots, defaults filled in once."""
    parts = templates.VAR.split(body)
    literals, names = parts[::2], parts[1::2]

    def render(name: str | None) -> str:
        out = [literals[0]]
        for var, lit in zip(names, literals[1:], strict=True):
            out.append((name or defaults.get("name") or DEFAULT_NAME) if var == "name" else defaults[var])
            out.append(lit)
        return "".join(out)

    return render


def _settler(limiter, freq_key: str, freq_limits: dict, member: str, window: dict | None):
    """The last checks of a prepared chunk, done on the chunk writer's settle thread (their Redis round
    trip overlaps the next chunk's preparation): the frequency limit (one Lua call for the chunk's
    candidates; the campaign as the member, so a redone chunk spends no quota twice), then for marketing
    (`window` given) the quiet hours in each recipient's zone — a closed window defers the message to its
    opening. Returns the chunk's outcome counts."""

    def settle(records: list[PreparedMessage], candidates: list[PreparedMessage],
               now: dt.datetime) -> Counter:
        allowed = limiter.acquire_many([m.phone for m in candidates], freq_key, freq_limits, member,
                                       now=epoch(now))
        passed = []
        for message, ok in zip(candidates, allowed, strict=True):
            if ok:
                passed.append(message)
            else:
                message.cancel("frequency_limit")
        if window is not None and passed:
            opening_of = limits.openings(now, window)
            cn = opening_of("+86")
            for message in passed:
                opening = cn if message.phone.startswith("+86") else opening_of(message.phone)
                if opening is not None:
                    message.defer(opening)
        return Counter(m.outcome for m in records)

    return settle


def _can_pipeline(session) -> bool:
    """Whether a second connection sees the same database (not so for an in-memory SQLite one)."""
    url = session.get_bind().url
    return url.get_backend_name() == "postgresql" or (
        url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"))


class _ChunkWriter:
    """Finishes prepared chunks in two threads while the caller prepares the next one (Redis and the
    database work while Python does): one runs the last checks (`settle`: the frequency limit's Redis
    call, quiet hours), the other writes the rows and the campaign's cursor in ONE transaction on a
    connection of its own, in chunk order. At most two chunks are in flight; `submit` and `wait` return
    the outcome counts of the chunks finished meanwhile and raise their error. After a failed write no
    later chunk is written (the cursor never passes a chunk that is not in the database): a crash or an
    error loses only uncommitted chunks, which a re-run redoes."""

    DEPTH = 2

    def __init__(self, engine, fixed: tuple, kind: str):
        self.engine, self.fixed, self.kind = engine, fixed, kind
        self._settling = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sms-prepare-settle")
        self._writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sms-prepare-writer")
        self._in_flight: list[Future] = []
        self._failed = False

    def _write(self, settled: Future, records, created, cursor) -> Counter:
        if self._failed:
            raise RuntimeError("an earlier chunk was not written")
        try:
            outcomes = settled.result()
            with self.engine.begin() as conn:
                _persist(conn, self.fixed, self.kind, records, created, cursor)
        except BaseException:
            self._failed = True
            raise
        return outcomes

    def submit(self, settle, records, candidates, created, cursor) -> Counter:
        done = Counter()
        while len(self._in_flight) >= self.DEPTH:
            done.update(self._in_flight.pop(0).result())
        settled = self._settling.submit(settle, records, candidates, created)
        self._in_flight.append(self._writing.submit(self._write, settled, records, created, cursor))
        return done

    def wait(self) -> Counter:
        done = Counter()
        while self._in_flight:
            done.update(self._in_flight.pop(0).result())
        return done

    def close(self) -> None:
        """Let the threads finish; errors of chunks left in flight were caused by the one the caller
        is already raising (a normal end has waited for every chunk)."""
        self._settling.shutdown()
        self._writing.shutdown()
        self._in_flight.clear()


# Column order of the bulk insert: the chunk's fixed ids, a message's own fields, then the constant tail.
_COLUMNS = ("campaign_id", "template_id", "channel_id", "customer_id", "phone", "content", "segments",
            "status", "cancel_reason", "send_after", "kind", "attempts", "created_at")
_SQLITE_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's own SQLite DATETIME text form


def _persist(conn, fixed: tuple, kind: str, records: list[PreparedMessage], created: dt.datetime,
             cursor: int) -> None:
    """Insert a chunk of messages — COPY on PostgreSQL (psycopg 3 / psycopg2), INSERT … SELECT over JSON on
    SQLite — and move the campaign's cursor past it, in the caller's transaction: rows and cursor commit
    together or not at all. `fixed` = (campaign id, template id, channel id)."""
    dialect = conn.dialect.name
    tail = (kind, 0, created)
    if dialect == "postgresql":
        rows = ((*fixed, m.customer_id, m.phone, m.content, m.segments, m.status, m.cancel_reason,
                 m.send_after, *tail) for m in records)
        statement = f"COPY sms_message ({', '.join(_COLUMNS)}) FROM STDIN"
        raw = conn.connection.dbapi_connection
        try:
            with raw.cursor() as cur:
                if hasattr(cur, "copy_expert"):  # psycopg2: CSV with an explicit NULL marker
                    buf = io.StringIO()
                    csv.writer(buf).writerows(["\\N" if v is None else v for v in row] for row in rows)
                    buf.seek(0)
                    cur.copy_expert(statement + " WITH (FORMAT csv, NULL '\\N')", buf)
                else:  # psycopg 3: rows formatted by its C row writer
                    with cur.copy(statement) as copy:
                        for row in rows:
                            copy.write_row(row)
        except conn.dialect.loaded_dbapi.Error as exc:  # the driver's error, as SQLAlchemy would raise it
            raise DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    elif dialect == "sqlite":
        # One INSERT … SELECT over a JSON array: SQLite inserts the whole chunk in one step, which runs
        # without the GIL (executemany re-takes it for every row, so the writer thread would stall behind
        # the preparing one).
        stamps: dict = {None: None}
        for m in records:
            if m.send_after not in stamps:
                stamps[m.send_after] = m.send_after.strftime(_SQLITE_STAMP)
        data = json.dumps([[m.customer_id, m.phone, m.content, m.segments, m.status, m.cancel_reason,
                            stamps[m.send_after]] for m in records], ensure_ascii=False, check_circular=False)
        own = ", ".join(f"value ->> {i}" for i in range(7))  # customer_id … send_after
        conn.exec_driver_sql(f"INSERT INTO sms_message ({', '.join(_COLUMNS)}) "
                             f"SELECT ?, ?, ?, {own}, ?, 0, ? FROM json_each(?)",
                             (*fixed, kind, created.strftime(_SQLITE_STAMP), data))
    else:
        conn.execute(insert(T), [dict(zip(_COLUMNS, (*fixed, m.customer_id, m.phone, m.content, m.segments,
                                                     m.status, m.cancel_reason, m.send_after, *tail),
                                          strict=True)) for m in records])
    conn.execute(update(SmsCampaign).where(SmsCampaign.id == fixed[0]).values(cursor=cursor))


def epoch(naive_utc: dt.datetime) -> float:
    """Seconds since the epoch of a naive UTC instant (the frequency limiter's clock)."""
    return naive_utc.replace(tzinfo=dt.UTC).timestamp()
