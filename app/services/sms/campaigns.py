"""Bulk campaigns: the audience prepared into SmsMessage rows, then sent exactly once.

Preparation (`prepare`) streams the audience in fixed-size chunks by keyset (customer id for a saved
filter, line number for an uploaded list), so memory stays flat whatever the size. Each chunk is rendered,
checked (invalid number, duplicate within the campaign, blacklist / opt-out, consent for marketing,
sensitive words, frequency limit) and written in ONE transaction together with `campaign.cursor`: every
recipient becomes a row — pending (or deferred until the quiet hours end) or cancelled with its reason —
and a worker killed mid-chunk redoes exactly that chunk. The frequency limiter counts the campaign's id
as the member, so the redo does not spend a recipient's quota twice.

Sending (`send`) claims pending messages by compare-and-set — UPDATE … SET status='sending', claim=<token>
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

import csv
import datetime as dt
import io
import json
import re
import secrets
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import phonenumbers
from sqlalchemy import String, and_, cast, exists, func, insert, literal, or_, select, update
from sqlalchemy import text as sql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import bindparam

from app.clock import utcnow
from app.models.metadata import DictItem
from app.models.sales import Customer, Opportunity
from app.models.sms import (
    APPROVED,
    MARKETING,
    MSG_CANCELLED,
    MSG_DEFERRED,
    MSG_DELIVERED,
    MSG_FAILED,
    MSG_PENDING,
    MSG_SENDING,
    MSG_SENT,
    BlacklistEntry,
    SmsAudienceEntry,
    SmsCampaign,
    SmsMessage,
)
from app.services.errors import DomainError
from app.services.sms import blacklist, limits, templates, words
from app.services.sms.providers import OutboundSms, ProviderError, provider_for

CHUNK = 5000
MAX_ATTEMPTS = 3
HEARTBEAT = "sms:sender:"
DEFAULT_NAME = "客户"
_CN_MOBILE = re.compile(r"^\+861[3-9]\d{9}$")
_RAW_CN = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_STRIP = re.compile(r"[\s\-()]")
T = SmsMessage.__table__


# --- campaign life cycle ----------------------------------------------------------------------------
def audience_of(campaign: SmsCampaign) -> dict:
    try:
        spec = json.loads(campaign.audience or "{}")
    except ValueError:
        raise DomainError("The audience is not valid JSON", field="audience") from None
    if not isinstance(spec, dict) or spec.get("kind") not in ("filter", "upload"):
        raise DomainError('The audience needs "kind": "filter" or "upload"', field="audience")
    return spec


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
    audience_of(campaign)
    values = _defaults(campaign)
    missing = [n for n in templates.declared(tpl.variables) if n != "name" and n not in values]
    if missing:
        raise DomainError("Give a value for the variables: %(names)s", field="variables",
                          names=", ".join(missing))


def launch(session, campaign: SmsCampaign, at: dt.datetime | None = None, now: dt.datetime | None = None):
    """Schedule the campaign (now or at `at`, naive UTC); the caller enqueues the preparation job."""
    if campaign.status not in ("draft", "scheduled"):
        raise DomainError("A %(state)s campaign cannot be launched", field="status", state=campaign.status)
    check_campaign(session, campaign)
    now = now or utcnow()
    campaign.status = "scheduled"
    campaign.scheduled_at = at if at and at > now else now
    if campaign.channel_id is None:
        campaign.channel_id = campaign.template.channel_id


def _set_status(session, campaign_id: int, new: str, allowed_from: tuple[str, ...]) -> bool:
    done = session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id,
                                                     SmsCampaign.status.in_(allowed_from))
                           .values(status=new)).rowcount
    return bool(done)


def pause(session, campaign_id: int) -> None:
    if not _set_status(session, campaign_id, "paused", ("scheduled", "running")):
        raise DomainError("Only a scheduled or running campaign can be paused", field="status")


def resume(session, campaign_id: int) -> None:
    if not _set_status(session, campaign_id, "running", ("paused",)):
        raise DomainError("Only a paused campaign can be resumed", field="status")


def cancel(session, campaign_id: int, now: dt.datetime | None = None) -> int:
    """Cancel the campaign: what has not been handed to the provider is cancelled (campaign_cancelled)."""
    if not _set_status(session, campaign_id, "cancelled", ("draft", "scheduled", "running", "paused")):
        raise DomainError("This campaign is already finished", field="status")
    session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                    .values(finished_at=now or utcnow()))
    return session.execute(update(SmsMessage).where(
        SmsMessage.campaign_id == campaign_id, SmsMessage.status.in_((MSG_PENDING, MSG_DEFERRED)))
        .values(status=MSG_CANCELLED, cancel_reason="campaign_cancelled")).rowcount


# --- preparation ------------------------------------------------------------------------------------
def _defaults(campaign: SmsCampaign) -> dict:
    try:
        values = json.loads(campaign.variables or "{}")
    except ValueError:
        raise DomainError("Variables must be a JSON object", field="variables") from None
    if not isinstance(values, dict):
        raise DomainError("Variables must be a JSON object", field="variables")
    return {k: str(v) for k, v in values.items()}


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


def _filter_query(session, spec: dict, blacklisted: bool = True):
    """Keyset-ready query (customer id, phone, name, consent, blacklist source) for a saved filter; the
    blacklist comes by an outer join on its unique phone (NULL: not listed, or `blacklisted` is False)."""
    if blacklisted:
        q = select(Customer.id, Customer.phone, Customer.name, Customer.marketing_consent,
                   BlacklistEntry.source).outerjoin(BlacklistEntry, BlacklistEntry.phone == Customer.phone)
    else:
        q = select(Customer.id, Customer.phone, Customer.name, Customer.marketing_consent,
                   literal(None).label("source"))
    if spec.get("region"):
        q = q.where(Customer.region == spec["region"])
    if spec.get("consent") is not None:
        q = q.where(Customer.marketing_consent.is_(bool(spec["consent"])))
    opp = []
    for key, column in (("product_line", Opportunity.product_line_id), ("stage", Opportunity.stage_id)):
        value = spec.get(key)
        if value:
            codes = value if isinstance(value, list) else [value]
            ids = select(DictItem.id).where(DictItem.code.in_([str(c) for c in codes]))
            opp.append(column.in_(ids))
    if spec.get("status"):
        statuses = spec["status"] if isinstance(spec["status"], list) else [spec["status"]]
        opp.append(Opportunity.status.in_(statuses))
    if opp:
        q = q.where(exists().where(Opportunity.customer_id == Customer.id, *opp))
    return q


def _valid_mobile(phone: str, cache: dict) -> bool:
    if _CN_MOBILE.match(phone):
        return True
    if phone not in cache:
        try:
            parsed = phonenumbers.parse(phone, None)
            cache[phone] = phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in (
                phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
        except phonenumbers.NumberParseException:
            cache[phone] = False
    return cache[phone]


def _normalise_raw(raw: str) -> str | None:
    text = _STRIP.sub("", raw or "")
    m = _RAW_CN.match(text)
    if m:
        return "+86" + m.group(1)
    try:
        parsed = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class PrepareResult:
    chunks: int = 0
    rows: int = 0
    outcomes: Counter = field(default_factory=Counter)
    finished: bool = False


def prepare(session, campaign_id: int, redis, chunk: int = CHUNK, now: dt.datetime | None = None,
            max_chunks: int | None = None) -> PrepareResult:
    """Turn the campaign's audience into messages, chunk by chunk from `campaign.cursor` (resumable).

    Per chunk: one audience query (a saved filter's carries the blacklist as an outer join), one Redis
    call for the frequency limits, one bulk insert with the cursor in one transaction. Rendering, the
    sensitive-word scan and the segment count are done once per distinct name. The Redis call (with the
    quiet hours) and the insert run on two threads of `_ChunkWriter`, the insert on a connection of its
    own, while the next chunk is prepared."""
    result = PrepareResult()
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None or campaign.prepared:
        result.finished = campaign is not None
        return result
    if campaign.status == "scheduled":
        _set_status(session, campaign_id, "running", ("scheduled",))
        session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                        .values(started_at=func.coalesce(SmsCampaign.started_at, now or utcnow())))
        session.commit()
    tpl, channel = campaign.template, campaign.channel or campaign.template.channel
    spec, defaults = audience_of(campaign), _defaults(campaign)
    render = _compiled(tpl.body, defaults)
    kind, marketing = tpl.kind, tpl.kind == MARKETING
    signature = channel.signature
    settle = _settler(limits.FrequencyLimiter(redis), slot_key(channel, tpl.id),
                      limits.limits_for(session, kind), slot_member(campaign_id),
                      limits.quiet_hours(session) if marketing else None)
    blacklist_applies = marketing or not _config(session, "sms.notifications_ignore_blacklist", False)
    upload = spec["kind"] == "upload"
    if not upload:
        _ensure_statistics(session, Customer.__tablename__)
    read_chunk = None if upload else _chunk_reader(session, _filter_query(session, spec, blacklist_applies)
                                                   .where(Customer.id > bindparam("after"))
                                                   .order_by(Customer.id).limit(chunk))
    valid_cache: dict[str, bool] = {}
    texts: dict[str | None, tuple[str, bool, str, int]] = {}  # name → (text, blocked, masked text, segments)
    scan = words.matcher(session)
    fixed = (campaign_id, tpl.id, channel.id)
    this = SmsCampaign.id == campaign_id
    status_of = select(SmsCampaign.status).where(this)
    cursor = campaign.cursor
    writer = _ChunkWriter(session.get_bind(), fixed, kind) if _can_pipeline(session) else None
    in_flight: list[list[list]] = []  # the records of chunks the writer may not have committed
    try:
        while max_chunks is None or result.chunks < max_chunks:
            conn = session.connection()
            if conn.execute(status_of).scalar() != "running":
                break
            if upload:
                entry = SmsAudienceEntry
                rows = conn.execute(select(entry.line, entry.phone, entry.name)
                                    .where(SmsAudienceEntry.campaign_id == campaign_id,
                                           SmsAudienceEntry.line > cursor)
                                    .order_by(SmsAudienceEntry.line).limit(chunk)).all()
            else:
                rows = read_chunk(conn, after=cursor)
            if not rows:
                if writer is not None:
                    result.outcomes.update(writer.wait())
                session.execute(update(SmsCampaign).where(this).values(prepared=True))
                session.commit()
                result.finished = True
                break
            now_ = now or utcnow()
            seen: set[str] = set()
            if upload:
                audience, seen = _upload_audience(session, campaign_id, rows, blacklist_applies)
                for written in in_flight:  # chunks still being written are not visible to queries yet
                    seen.update(r[1] for r in written)
            else:
                audience = rows  # (customer id, phone, name, consent, blacklist source or None)
            # records: [customer_id, phone, content, segments, status, cancel_reason, send_after]
            records: list[list] = []
            candidates: list[list] = []
            add = records.append
            for customer_id, phone, name, consent, listed in audience:
                if not phone or not _valid_mobile(phone, valid_cache):
                    add([customer_id, (phone or "")[:20], None, 1, MSG_CANCELLED, "invalid_number", None])
                    continue
                if phone in seen:
                    add([customer_id, phone, None, 1, MSG_CANCELLED, "duplicate", None])
                    continue
                seen.add(phone)
                text = texts.get(name)
                if text is None:
                    composed = templates.compose(signature, render(name))
                    found = scan.check(composed)
                    text = (composed, found.blocked, found.text, templates.segments(found.text))
                    if len(texts) > 100_000:
                        texts.clear()
                    texts[name] = text
                if listed is not None:
                    add([customer_id, phone, text[0], 1, MSG_CANCELLED,
                         "opted_out" if listed == "inbound" else "blacklisted", None])
                elif marketing and consent is not None and not consent:  # SQLite's raw rows say 0
                    add([customer_id, phone, text[0], 1, MSG_CANCELLED, "no_consent", None])
                elif text[1]:
                    add([customer_id, phone, text[0], 1, MSG_CANCELLED, "sensitive_word", None])
                else:
                    rec = [customer_id, phone, text[2], text[3], MSG_PENDING, None, None]
                    add(rec)
                    candidates.append(rec)
            cursor = rows[-1][0]
            if writer is None:
                result.outcomes.update(settle(records, candidates, now_))
                _persist(session.connection(), fixed, kind, records, now_, cursor)
                session.commit()
            else:
                session.commit()  # ends this chunk's reads; the writer commits its rows with the cursor
                result.outcomes.update(writer.submit(settle, records, candidates, now_, cursor))
                in_flight = [*in_flight[1 - _ChunkWriter.DEPTH:], records]
            result.chunks += 1
            result.rows += len(records)
        if writer is not None:
            result.outcomes.update(writer.wait())
    finally:
        if writer is not None:
            writer.close()
    return result


def _settler(limiter, freq_key: str, freq_limits: dict, member: str, window: dict | None):
    """The last checks of a prepared chunk, done on the chunk writer's settle thread (their Redis round
    trip overlaps the next chunk's preparation): the frequency limit (one Lua call for the chunk's
    candidates; the campaign as the member, so a redone chunk spends no quota twice), then for marketing
    (`window` given) the quiet hours in each recipient's zone — a closed window defers the message to its
    opening. Returns the chunk's outcome counts."""

    def settle(records: list[list], candidates: list[list], now: dt.datetime) -> Counter:
        allowed = limiter.acquire_many([r[1] for r in candidates], freq_key, freq_limits, member,
                                       now=_epoch(now))
        passed = []
        for rec, ok in zip(candidates, allowed, strict=True):
            if ok:
                passed.append(rec)
            else:
                rec[4], rec[5] = MSG_CANCELLED, "frequency_limit"
        if window is not None and passed:
            opening_of = limits.openings(now, window)
            cn = opening_of("+86")
            for rec in passed:
                phone = rec[1]
                opening = cn if phone.startswith("+86") else opening_of(phone)
                if opening is not None:
                    rec[4], rec[6] = MSG_DEFERRED, opening
        return Counter(r[5] or r[4] for r in records)

    return settle


def _ensure_statistics(session, table: str) -> None:
    """ANALYZE `table` on PostgreSQL if it never was (reltuples < 0: created and bulk-loaded since the
    last autovacuum round). Without statistics the planner guesses a few dozen rows and reads every chunk
    by scanning and sorting the whole table — quadratic over a large audience. ANALYZE samples; it takes
    well under a second and blocks no reads or writes."""
    if session.get_bind().dialect.name != "postgresql":
        return
    tuples = session.execute(sql("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                             {"t": table}).scalar()
    if tuples is not None and tuples < 0:
        session.execute(sql(f"ANALYZE {table}"))
    session.commit()


def _chunk_reader(session, stmt):
    """`stmt` compiled once and run on the DBAPI cursor, its rows as plain tuples: building SQLAlchemy
    Row objects for every recipient cost a fifth of the preparation on PostgreSQL."""
    compiled = stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True})
    sql = str(compiled)

    def read(conn, **values) -> list[tuple]:
        params = compiled.construct_params(values)
        args = tuple(params[name] for name in compiled.positiontup) if compiled.positional else params
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, args)
            return cursor.fetchall()
        finally:
            cursor.close()

    return read


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


def _upload_audience(session, campaign_id: int, rows, blacklist_applies: bool):
    """An uploaded chunk as (customer id, E.164 or the raw text, name, consent, blacklist source), and the
    numbers the campaign already holds (a resumed run dedups against them)."""
    audience = [(_normalise_raw(raw), raw, name) for _line, raw, name in rows]
    known = {p for p, _, _ in audience if p}
    customers, seen, listed = {}, set(), {}
    if known:
        customers = {p: (cid, consent) for p, cid, consent in session.execute(
            select(Customer.phone, Customer.id, Customer.marketing_consent).where(Customer.phone.in_(known)))}
        seen = set(session.scalars(select(SmsMessage.phone).where(
            SmsMessage.campaign_id == campaign_id, SmsMessage.phone.in_(known))))
        if blacklist_applies:
            blocked = blacklist.is_blocked(session, known)
            if blocked:
                listed = dict(session.execute(select(BlacklistEntry.phone, BlacklistEntry.source)
                                              .where(BlacklistEntry.phone.in_(blocked))).all())
    out = []
    for phone, raw, name in audience:
        cid, consent = customers.get(phone, (None, None))
        out.append((cid, phone or str(raw), name, consent, listed.get(phone)))
    return out, seen


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


# Column order of the bulk insert; a record adds customer_id … send_after to the chunk's fixed ids.
_COLUMNS = ("campaign_id", "template_id", "channel_id", "customer_id", "phone", "content", "segments",
            "status", "cancel_reason", "send_after", "kind", "attempts", "created_at")


def _persist(conn, fixed: tuple, kind: str, records: list[list], created: dt.datetime, cursor: int) -> None:
    """Insert a chunk of messages — COPY on PostgreSQL (psycopg 3 / psycopg2), INSERT … SELECT over JSON on
    SQLite — and move the campaign's cursor past it, in the caller's transaction: rows and cursor commit
    together or not at all. `fixed` = (campaign id, template id, channel id)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        tail = (kind, 0, created)
        rows = ((*fixed, *r, *tail) for r in records)
        sql = f"COPY sms_message ({', '.join(_COLUMNS)}) FROM STDIN"
        raw = conn.connection.dbapi_connection
        try:
            with raw.cursor() as cur:
                if hasattr(cur, "copy_expert"):  # psycopg2: CSV with an explicit NULL marker
                    buf = io.StringIO()
                    csv.writer(buf).writerows(["\\N" if v is None else v for v in row] for row in rows)
                    buf.seek(0)
                    cur.copy_expert(sql + " WITH (FORMAT csv, NULL '\\N')", buf)
                else:  # psycopg 3: rows formatted by its C row writer
                    with cur.copy(sql) as copy:
                        for row in rows:
                            copy.write_row(row)
        except conn.dialect.loaded_dbapi.Error as exc:  # the driver's error, as SQLAlchemy would raise it
            raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    elif dialect == "sqlite":
        # One INSERT … SELECT over a JSON array: SQLite inserts the whole chunk in one step, which runs
        # without the GIL (executemany re-takes it for every row, so the writer thread would stall behind
        # the preparing one).
        stamp = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's own SQLite DATETIME text form
        stamps: dict = {None: None}
        for r in records:
            after = r[6]
            if after not in stamps:
                stamps[after] = after.strftime(stamp)
            r[6] = stamps[after]
        data = json.dumps(records, ensure_ascii=False, check_circular=False)
        own = ", ".join(f"value ->> {i}" for i in range(7))  # customer_id … send_after
        conn.exec_driver_sql(f"INSERT INTO sms_message ({', '.join(_COLUMNS)}) "
                             f"SELECT ?, ?, ?, {own}, ?, 0, ? FROM json_each(?)",
                             (*fixed, kind, created.strftime(stamp), data))
    else:
        conn.execute(insert(T), [dict(zip(_COLUMNS, (*fixed, *r, kind, 0, created), strict=True))
                                 for r in records])
    conn.execute(update(SmsCampaign).where(SmsCampaign.id == fixed[0]).values(cursor=cursor))


def _epoch(naive_utc: dt.datetime) -> float:
    return naive_utc.replace(tzinfo=dt.UTC).timestamp()


def _config(session, key, default):
    from app.services.metadata import config_value

    return config_value(session, key, default)


# --- sending ----------------------------------------------------------------------------------------
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
    stopped: str | None = None


class _Slots:
    """The frequency-limit slots of a campaign's messages (taken at preparation, member = the campaign).

    A message that ends failed for sure (never handed over) or cancelled gives its slot back, after the
    outcome is committed; ZREM of the member is idempotent, so a second release frees nothing more.
    An "indeterminate" failure keeps its slot: the recipient may have got the message."""

    def __init__(self, redis, campaign_id: int, channel, template_id: int):
        self.limiter = limits.FrequencyLimiter(redis)
        self.key, self.member = slot_key(channel, template_id), slot_member(campaign_id)
        self.ids: list[int] = []

    def note(self, outcomes: list[dict]) -> None:
        self.ids += [o["_id"] for o in outcomes
                     if o["_status"] == MSG_FAILED and o["_code"] != "indeterminate"]

    def flush(self, session) -> int:
        """Release the slots of the noted messages that are failed in the database (after the commit)."""
        ids, self.ids = self.ids, []
        if not ids:
            return 0
        phones = session.scalars(select(T.c.phone).where(T.c.id.in_(ids), T.c.status == MSG_FAILED)).all()
        session.commit()
        return self.limiter.release_many(phones, self.key, self.member)


def slot_key(channel, template_id: int) -> str:
    """The frequency-limit key of a campaign's messages (signature + template), as prepare counts it."""
    return f"{channel.signature}:{template_id}"


def slot_member(campaign_id: int) -> str:
    return f"c{campaign_id}"


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
    gone = and_(T.c.status == MSG_FAILED, or_(T.c.error_code.is_(None), T.c.error_code != "indeterminate"))
    if campaign.status == "cancelled":
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


def _lease(channel) -> float:
    return max(2.0, 2 * (channel.timeout_seconds or 10) + channel.batch_size / max(channel.rate_limit, 1) + 1)


def _beat(redis, token: str, lease: float) -> None:
    redis.set(HEARTBEAT + token, "1", px=int(lease * 1000))


def _claim(session, campaign_id: int, token: str, limit: int, now: dt.datetime) -> list:
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


def _record(session, token: str, results: list[dict]) -> None:
    """Write outcomes by CAS: only rows still 'sending' under our claim move."""
    if not results:
        return
    stmt = (update(T).where(T.c.id == bindparam("_id"), T.c.status == MSG_SENDING, T.c.claim == token)
            .values(status=bindparam("_status"), provider_id=bindparam("_pid"), error_code=bindparam("_code"),
                    sent_at=bindparam("_sent_at"), send_after=bindparam("_after"), claim=None))
    session.connection().execute(stmt, results)


def _commit_outcomes(session, token: str, outcomes: list[dict], slots: _Slots | None) -> None:
    _record(session, token, outcomes)
    session.commit()
    if slots is not None:
        slots.note(outcomes)
        slots.flush(session)


def _outcome(row, ok: bool, provider_id=None, code=None, retryable=False, now=None) -> dict:
    if ok:
        return {"_id": row.id, "_status": MSG_SENT, "_pid": provider_id, "_code": None, "_sent_at": now,
                "_after": None}
    if retryable and row.attempts < MAX_ATTEMPTS:
        backoff = now + dt.timedelta(seconds=2 ** row.attempts)
        return {"_id": row.id, "_status": MSG_PENDING, "_pid": None, "_code": code, "_sent_at": None,
                "_after": backoff}
    return {"_id": row.id, "_status": MSG_FAILED, "_pid": None, "_code": code, "_sent_at": None,
            "_after": None}


def reconcile(session, campaign_id: int, redis, provider, token: str, slots: _Slots | None = None
              ) -> tuple[int, bool]:
    """Settle messages left in 'sending' by claims whose heartbeat is gone (dead workers).

    Returns (how many were settled, whether live claims of other workers remain)."""
    claims = session.scalars(select(T.c.claim).distinct().where(T.c.campaign_id == campaign_id,
                                                                T.c.status == MSG_SENDING)).all()
    settled, live = 0, False
    for claim in claims:
        if claim == token:
            continue
        if claim and redis.exists(HEARTBEAT + claim):
            live = True
            continue
        # Take the orphans over (CAS on the old claim: one reconciler wins).
        session.execute(update(T).where(T.c.campaign_id == campaign_id, T.c.status == MSG_SENDING,
                                        T.c.claim == claim).values(claim=token))
        session.commit()
        rows = session.execute(select(T.c.id, T.c.uid, T.c.attempts).where(
            T.c.campaign_id == campaign_id, T.c.status == MSG_SENDING, T.c.claim == token)).all()
        settled += _settle_unknown(session, provider, token, rows, slots)
    return settled, live


def _settle_unknown(session, provider, token: str, rows, slots: _Slots | None = None) -> int:
    """Messages whose hand-over is in doubt: ask the provider which it accepted."""
    now = utcnow()
    lookup = getattr(provider, "lookup", None)
    outcomes = []
    if lookup is None:
        outcomes = [_outcome(r, False, code="indeterminate", now=now) for r in rows]
    else:
        accepted = lookup([r.uid for r in rows])
        for r in rows:
            if r.uid in accepted:
                outcomes.append(_outcome(r, True, provider_id=accepted[r.uid], now=now))
            else:  # never reached the provider: back to pending, sent again (attempts not spent)
                outcomes.append({"_id": r.id, "_status": MSG_PENDING, "_pid": None, "_code": None,
                                 "_sent_at": None, "_after": None})
    _commit_outcomes(session, token, outcomes, slots)
    return len(outcomes)


def send(session, campaign_id: int, redis, provider=None, max_batches: int | None = None,
         now_fn=utcnow, sleep=time.sleep) -> SendResult:
    """Send the campaign's sendable messages at the channel's batch size and rate limit."""
    result = SendResult()
    campaign = session.get(SmsCampaign, campaign_id)
    if campaign is None:
        result.stopped = "missing"
        return result
    channel = campaign.channel or campaign.template.channel
    provider = provider or provider_for(channel)
    marketing = campaign.template.kind == MARKETING
    window = limits.quiet_hours(session)
    token, lease = uuid.uuid4().hex, _lease(channel)
    batch = channel.batch_size
    rate = limits.ChannelRateLimiter(redis)  # the channel's messages/s, shared by all workers
    slots = _Slots(redis, campaign_id, channel, campaign.template_id)
    _beat(redis, token, lease)
    settled, live = reconcile(session, campaign_id, redis, provider, token, slots)
    result.reconciled += settled
    try:
        while max_batches is None or result.batches < max_batches:
            status = session.scalar(select(SmsCampaign.status).where(SmsCampaign.id == campaign_id))
            if status != "running":
                result.stopped = status
                return result
            now = now_fn()
            if marketing and not window.get("recipient_zone", True):  # one company zone: defer in bulk
                opening = limits.next_window_start(now, window)
                if opening is not None:  # quiet hours: what waits is deferred, not dropped
                    session.execute(update(T).where(T.c.campaign_id == campaign_id, T.c.status == MSG_PENDING)
                                    .values(status=MSG_DEFERRED, send_after=opening))
                    session.commit()
                    result.next_at = opening
                    return result
            _beat(redis, token, lease)
            rows = _claim(session, campaign_id, token, batch, now)
            if not rows:
                break
            if marketing:  # each recipient's own window: a closed one waits again (deferred), not dropped
                rows = hold_for_quiet_hours(session, token, rows, now, window)
                if not rows:
                    continue
            result.batches += 1
            wait = rate.reserve(channel.id, len(rows), channel.rate_limit)
            if wait > 0:  # our turn on the channel comes later: keep the claim alive meanwhile
                redis.set(HEARTBEAT + token, "1", px=int((lease + wait) * 1000))
                sleep(wait)
            out = [OutboundSms(r.uid, r.phone, r.content) for r in rows]
            try:
                answers = {a.uid: a for a in provider.send_batch(out)}
            except ProviderError as exc:
                if getattr(provider, "lookup", None) is not None:
                    settled = _settle_after_error(session, provider, token, rows, exc, now_fn(), slots)
                else:
                    code = "indeterminate" if exc.retryable else f"provider:{str(exc)[:50]}"
                    failed = [_outcome(r, False, code=code, now=now_fn()) for r in rows]
                    _commit_outcomes(session, token, failed, slots)
                    settled = len(rows)
                result.failed += settled
                continue
            done = now_fn()
            outcomes = []
            for r in rows:
                a = answers.get(r.uid)
                if a is None:
                    outcomes.append(_outcome(r, False, code="missing_result", retryable=False, now=done))
                else:
                    outcomes.append(_outcome(r, a.ok, a.provider_id, a.error_code, a.retryable, now=done))
            _commit_outcomes(session, token, outcomes, slots)
            for o in outcomes:
                if o["_status"] == MSG_SENT:
                    result.sent += 1
                elif o["_status"] == MSG_FAILED:
                    result.failed += 1
                else:
                    result.retried += 1
        # Nothing claimable now: settle orphans once more, then see what is left.
        settled, live = reconcile(session, campaign_id, redis, provider, token, slots)
        result.reconciled += settled
        if settled:
            return _again(session, campaign_id, redis, provider, max_batches, result, now_fn, sleep)
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
        if prepared and _set_status(session, campaign_id, "completed", ("running",)):
            session.execute(update(SmsCampaign).where(SmsCampaign.id == campaign_id)
                            .values(finished_at=now_fn()))
            result.completed = True
        session.commit()
        return result
    finally:
        redis.delete(HEARTBEAT + token)


def _again(session, campaign_id, redis, provider, max_batches, result, now_fn, sleep) -> SendResult:
    more = send(session, campaign_id, redis, provider, max_batches, now_fn, sleep)
    for name in ("batches", "sent", "failed", "retried", "reconciled"):
        setattr(result, name, getattr(result, name) + getattr(more, name))
    result.next_at, result.wait_for_claims = more.next_at, more.wait_for_claims
    result.completed, result.stopped = more.completed, more.stopped
    return result


def _settle_after_error(session, provider, token, rows, exc: ProviderError, now: dt.datetime,
                        slots: _Slots | None = None) -> int:
    """A whole batch failed: what the provider accepted anyway is sent; the rest retries or fails."""
    accepted = provider.lookup([r.uid for r in rows])
    outcomes = []
    for r in rows:
        if r.uid in accepted:
            outcomes.append(_outcome(r, True, provider_id=accepted[r.uid], now=now))
        else:
            outcomes.append(_outcome(r, False, code="provider_error", retryable=exc.retryable, now=now))
    _commit_outcomes(session, token, outcomes, slots)
    return sum(1 for o in outcomes if o["_status"] == MSG_FAILED)


# --- progress ---------------------------------------------------------------------------------------
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
            "eta_seconds": round(remaining / rate) if rate else None}
