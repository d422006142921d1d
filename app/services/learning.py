"""The learning system, read only: batches of learning activity imported as a job run, and each
customer's learning summary.

A batch (POST /api/v1/learning/activities, or a file uploaded by an administrator) is checked at the edge
only as an envelope (`check_batch`: a list of at most MAX_ROWS objects); it is stored with its job run
(`start_import`: the run's params hold the rows, so the web process and the workers share nothing but the
database) and applied by the "learning_import" handler (app.jobs.learning) in chunks (`apply_chunk`).

Each row stands on its own: a bad row (a message per field) or a row of a user the CRM does not know is
reported with its line (1 = the batch's first row) and the others are kept. An activity is stored once
per `external_id` (INSERT … ON CONFLICT DO NOTHING, on PostgreSQL and SQLite alike): a batch posted again,
or a chunk applied again after a worker died, adds nothing twice. After each chunk the LearningSummary
of the customers it touched is recomputed in SQL from all their activity, so it never drifts.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field

from sqlalchemy import case, delete, func, literal, select, update

from app import clock
from app.models.jobs import JobRun
from app.models.learning import LearningActivity, LearningSummary
from app.models.sales import Customer
from app.services import customers, inputs, runner
from app.services.errors import DomainError
from app.services.signing import parse_time
from app.services.sql import dialect_insert, upsert_from_select

KIND = "learning_import"  # the JobRun kind (handler: app.jobs.learning)
TARGET = "learning_batch"  # its target_type; target_id: a number derived from the batch's content
MAX_ROWS = 5000  # rows per batch (API post or file)
CHUNK = 500  # rows per committed chunk of the job
MAX_REPORTED = 100  # bad / unknown rows listed by line in the run (all are counted)
EXTERNAL_ID_MAX = LearningActivity.__table__.c.external_id.type.length
TEXT_MAX = 200  # course, lesson
FUTURE_SLACK = dt.timedelta(days=1)  # clocks differ; an activity later than this ahead is a bad row
FIELDS = ("id", "user_id", "course", "lesson", "attended", "progress", "occurred_at")


# --- the envelope ---------------------------------------------------------------------------------------
def check_batch(body) -> list:
    """The rows of a batch body {"activities": [...]}; DomainError naming the field when the envelope is
    wrong (rows themselves are checked by the job, each on its own)."""
    if not isinstance(body, dict):
        raise DomainError("The body must be a JSON object", field="body", status=400)
    rows = body.get("activities")
    if rows is None:
        raise DomainError("Give the activities", field="activities", status=400)
    if not isinstance(rows, list):
        raise DomainError("activities must be a JSON list", field="activities", status=400)
    if not rows:
        raise DomainError("activities is empty", field="activities", status=400)
    if len(rows) > MAX_ROWS:
        raise DomainError("At most %(limit)s activities per batch (%(count)s given)", field="activities",
                          status=413, limit=MAX_ROWS, count=len(rows))
    return rows


def start_import(session, rows: list, *, source: str, started_by: int | None = None) -> JobRun:
    """Store a checked batch with a new job run of kind "learning_import" (or, when the same batch is
    already queued or running, that run). The caller commits; the RQ job is enqueued then."""
    text = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{source}\n{text}".encode()).hexdigest()
    target = int(digest[:8], 16) & 0x7FFFFFFF  # an identical batch still at work joins its run
    return runner.start(session, KIND, target_type=TARGET, target_id=target, started_by=started_by,
                        total=len(rows), params={"source": source, "sha256": digest, "rows": rows})


# --- one row --------------------------------------------------------------------------------------------
@dataclass
class Activity:
    external_id: str
    user_id: str
    course: str
    lesson: str | None
    attended: bool | None
    progress: int | None
    occurred_at: dt.datetime


def parse_time_with_zone(problems: dict, name: str, value) -> dt.datetime | None:
    """ISO 8601 with an offset ("2026-03-01T19:30:00+08:00", "…Z") or Unix seconds, as naive UTC. A time
    without an offset is refused: the learning system's zone is not ours to guess."""
    if value is None or value == "":
        problems[name] = "required"
        return None
    if isinstance(value, str) and not value.strip().isdigit():
        try:
            if dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")).tzinfo is None:
                problems[name] = "give the time zone offset (e.g. +08:00 or Z)"
                return None
        except ValueError:
            pass
    elif isinstance(value, str):
        value = int(value.strip()) if len(value.strip()) <= 12 else value
    parsed = parse_time(value)
    if parsed is None:
        problems[name] = "not an ISO 8601 time with offset or Unix seconds"
    return parsed


def parse_row(row) -> tuple[Activity | None, dict]:
    """(activity, {}) or (None, problems by field) for one row of a batch."""
    if not isinstance(row, dict):
        return None, {"row": "must be a JSON object"}
    problems: dict[str, str] = {}
    external_id = inputs.text(problems, "id", row.get("id"), EXTERNAL_ID_MAX, required=True, numbers=True)
    user_id = inputs.text(problems, "user_id", row.get("user_id"), customers.USER_ID_MAX, required=True,
                          numbers=True)
    course = inputs.text(problems, "course", row.get("course"), TEXT_MAX, required=True)
    lesson = inputs.text(problems, "lesson", row.get("lesson"), TEXT_MAX)
    attended = row.get("attended")
    if attended is not None and not isinstance(attended, bool):
        problems["attended"] = "must be true, false or null"
    progress = row.get("progress")
    if progress is not None:
        if isinstance(progress, float) and progress.is_integer():
            progress = int(progress)
        progress = inputs.whole_number(problems, "progress", progress, low=0, high=100)
    occurred_at = parse_time_with_zone(problems, "occurred_at", row.get("occurred_at"))
    if occurred_at is not None and occurred_at > clock.utcnow() + FUTURE_SLACK:
        problems["occurred_at"] = "in the future"
    if problems:
        return None, problems
    return Activity(external_id, user_id, course, lesson, attended, progress, occurred_at), {}


# --- applying a chunk -----------------------------------------------------------------------------------
@dataclass
class Tally:
    """Where an import stands; saved as the run's position with each chunk (so a resumed run goes on)."""

    next: int = 0  # index of the first row not applied yet
    inserted: int = 0
    repeated: int = 0  # the external id was imported before (or earlier in the batch)
    unknown: int = 0  # no customer has that registered user id
    invalid: int = 0
    problems: list[dict] = field(default_factory=list)  # {"line", "id", "errors"}, the first MAX_REPORTED

    @classmethod
    def of(cls, position: dict | None) -> Tally:
        position = position or {}
        return cls(**{k: position[k] for k in ("next", "inserted", "repeated", "unknown", "invalid",
                                                "problems") if k in position})

    def as_position(self) -> dict:
        return {"next": self.next, "inserted": self.inserted, "repeated": self.repeated,
                "unknown": self.unknown, "invalid": self.invalid, "problems": self.problems}

    @property
    def done(self) -> int:
        return self.inserted + self.repeated

    @property
    def failed(self) -> int:
        return self.unknown + self.invalid

    def report(self, line: int, external_id, errors: dict) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append({"line": line, "id": external_id, "errors": errors})

    def summary(self, total: int) -> str:
        text = (f"{total} rows: {self.inserted} imported, {self.repeated} already imported, "
                f"{self.unknown} of unknown users, {self.invalid} invalid")
        if self.problems:
            shown = "; ".join(f"line {p['line']}: " + ", ".join(f"{k} {v}" for k, v in p["errors"].items())
                              for p in self.problems[:20])
            more = len(self.problems) - 20 + (self.failed - len(self.problems))
            text += f" — {shown}" + (f"; … and {more} more" if more > 0 else "")
        return text


def resolve_users(session, user_ids) -> dict[str, int]:
    """registered user id → the id of the customer standing for them now (a merged customer's survivor)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    found = {}
    for customer in session.scalars(select(Customer).where(Customer.registered_user_id.in_(ids))):
        live = customers.live(session, customer)
        if live is not None:
            found[customer.registered_user_id] = live.id
    return found


def apply_chunk(session, rows: list, start: int, tally: Tally, now: dt.datetime | None = None) -> list[int]:
    """Apply rows[start:] of one chunk (at most CHUNK rows; `start` is the index of rows[0] in the batch)
    to the database and to `tally`; returns the customers touched (their summaries are recomputed). The
    caller commits (with the run's checkpoint)."""
    now = now or clock.utcnow()
    parsed: list[tuple[int, Activity]] = []
    seen: set[str] = set()
    for offset, row in enumerate(rows):
        line = start + offset + 1
        activity, problems = parse_row(row)
        if activity is None:
            tally.invalid += 1
            tally.report(line, row.get("id") if isinstance(row, dict) else None, problems)
        elif activity.external_id in seen:
            tally.repeated += 1
        else:
            seen.add(activity.external_id)
            parsed.append((line, activity))
    users = resolve_users(session, [a.user_id for _, a in parsed])
    values = []
    for line, activity in parsed:
        customer_id = users.get(activity.user_id)
        if customer_id is None:
            tally.unknown += 1
            tally.report(line, activity.external_id,
                         {"user_id": f"unknown user {inputs.quote(activity.user_id)}"})
            continue
        values.append({"external_id": activity.external_id, "customer_id": customer_id,
                       "course": activity.course, "lesson": activity.lesson, "attended": activity.attended,
                       "progress": activity.progress, "occurred_at": activity.occurred_at,
                       "imported_at": now})
    if values:
        table = LearningActivity.__table__
        stmt = (dialect_insert(session, table).values(values).returning(table.c.id)
                .on_conflict_do_nothing(index_elements=["external_id"]))
        inserted = len(session.execute(stmt).all())
        tally.inserted += inserted
        tally.repeated += len(values) - inserted
    tally.next = start + len(rows)
    touched = sorted({v["customer_id"] for v in values})
    refresh_summaries(session, touched, now)
    return touched


# --- summaries ------------------------------------------------------------------------------------------
def refresh_summaries(session, customer_ids: list[int], now: dt.datetime | None = None) -> None:
    """Recompute the LearningSummary of these customers from all their activity, in one statement."""
    if not customer_ids:
        return
    a = LearningActivity
    query = (select(a.customer_id,
                    func.sum(case((a.attended.is_(True), 1), else_=0)),
                    func.sum(case((a.attended.is_(False), 1), else_=0)),
                    func.count(func.distinct(a.course)),
                    func.max(a.progress),
                    func.max(case((a.attended.is_(False), None), else_=a.occurred_at)),
                    literal(now or clock.utcnow(), type_=a.occurred_at.type))
             .where(a.customer_id.in_(customer_ids)).group_by(a.customer_id))
    columns = ["customer_id", "lessons_attended", "lessons_missed", "courses", "progress", "last_active_at",
               "updated_at"]
    upsert_from_select(session, LearningSummary.__table__, columns, query, ["customer_id"], columns[1:])


def move_to_survivor(session, merged_id: int, survivor_id: int) -> int:
    """A customer merge: the merged customer's activity moves to the survivor and both summaries are
    recomputed (for app.services.customers.merge to call). Returns how many activities moved."""
    moved = session.execute(update(LearningActivity).where(LearningActivity.customer_id == merged_id)
                            .values(customer_id=survivor_id)
                            .execution_options(synchronize_session=False)).rowcount
    session.execute(delete(LearningSummary).where(LearningSummary.customer_id == merged_id))
    refresh_summaries(session, [survivor_id])
    return moved


def summary_of(session, customer_id: int) -> LearningSummary | None:
    return session.get(LearningSummary, customer_id)


def timeline(session, customer_id: int, limit: int = 50) -> list[LearningActivity]:
    """The customer's newest activities, newest first."""
    return list(session.scalars(select(LearningActivity).where(LearningActivity.customer_id == customer_id)
                                .order_by(LearningActivity.occurred_at.desc(), LearningActivity.id.desc())
                                .limit(limit)))


# --- files an administrator uploads -------------------------------------------------------------------
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
_TRUE, _FALSE = {"true", "1", "yes", "y", "是", "出勤"}, {"false", "0", "no", "n", "否", "缺勤"}


def rows_from_file(filename: str | None, data: bytes | None) -> list:
    """The rows of an uploaded .json ({"activities": [...]} or a list) or .csv (a header row naming the
    batch's fields) file, as the API would take them; DomainError naming `file` otherwise."""
    name = (filename or "").lower()
    data = data or b""
    if not name:
        raise DomainError("Choose a .csv or .json file", field="file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DomainError("The file is larger than %(mb)d MB", field="file", mb=MAX_UPLOAD_BYTES // 2**20)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DomainError("The file is not UTF-8 text", field="file") from None
    if name.endswith(".json"):
        try:
            body = json.loads(text)
        except ValueError:
            raise DomainError("The file is not valid JSON", field="file") from None
        try:
            return check_batch({"activities": body} if isinstance(body, list) else body)
        except DomainError as exc:
            raise DomainError(exc.msgid, field="file", **exc.params) from None
    if not name.endswith(".csv"):
        raise DomainError("Choose a .csv or .json file", field="file")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"id", "user_id", "course", "occurred_at"} <= set(reader.fieldnames):
        raise DomainError("The first row must name the columns: %(columns)s", field="file",
                          columns=", ".join(FIELDS))
    rows = [_csv_row(r) for r in reader]
    try:
        return check_batch({"activities": rows})
    except DomainError as exc:
        raise DomainError(exc.msgid, field="file", **exc.params) from None


def _csv_row(raw: dict) -> dict:
    """A CSV row as the API's JSON would carry it: empty cells null, attended and progress typed (a value
    that cannot be read is left as text, for the row's own check to report)."""
    row = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in raw.items() if k in FIELDS}
    attended = (row.get("attended") or "").lower()
    if attended in _TRUE | _FALSE:
        row["attended"] = attended in _TRUE
    progress = row.get("progress")
    if isinstance(progress, str) and progress.isdigit() and len(progress) <= 3:
        row["progress"] = int(progress)
    return row
