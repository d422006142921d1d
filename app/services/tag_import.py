"""What the big-data system sends: imported tags with their members, and behaviour events (page views …).

Both arrive by signed API (app.views.tags_api) as a batch that is checked at the edge only as an envelope
(`check_tags_batch`, `check_events_batch`), stored with a job run of kind TAG_IMPORT (`start_import`: the
run's params hold the batch) and applied by the handler (app.jobs.tags) chunk by chunk, each chunk
committed with the run's checkpoint (`Tally`, its position) so that a resumed run goes on where it was.

Tags batch: {"tags": [{"code", "name", "subject", "description"}…], "assignments": [{"tag": code,
"customer_phone" | "customer_id" | "opportunity_id", "action": "add" | "remove", "id": the sender's id}…]}.
The definitions are applied first: an unknown code becomes a tag of source "import" (a code that a manual
or rule tag has is refused for that line). An assignment naming a code not defined yet creates it too
(name = code, subject from the key it names). Adding is INSERT … ON CONFLICT DO NOTHING and removing deletes
only imported memberships, so a batch applied twice (or a chunk after a kill) ends the same; within a
chunk the last line about a (tag, customer / opportunity) pair wins, chunks apply in order.

Events batch: {"events": [{"id", "customer_phone" | "customer_id", "kind", "detail", "occurred_at"}…]},
stored once per id (CustomerEvent.external_id). The visited_page rule reads the page views.

Each row stands on its own: a bad row (a message per field) or a row naming someone the CRM does not know
is reported with its line (1 = the list's first row) and the rest are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field

from sqlalchemy import delete, func, or_, select, tuple_, update

from app import clock
from app.models.bigdata import (
    CUSTOMER,
    IMPORTED,
    OPPORTUNITY,
    PAGE_VIEW,
    SUBJECTS,
    CustomerEvent,
    Tag,
)
from app.models.jobs import TAG_IMPORT, JobRun
from app.models.sales import Customer, Opportunity
from app.security.input_guards import storable_id
from app.services import customers, inputs, runner
from app.services.errors import DomainError
from app.services.learning import parse_time_with_zone
from app.services.phones import normalise_phone
from app.services.sql import dialect_insert
from app.services.tags import CODE_MAX, CODE_PATTERN, DESCRIPTION_MAX, NAME_MAX, member_model

TAGS, EVENTS = "tags", "events"  # the two kinds of batch (the run's params["batch"])
TARGETS = {TAGS: "bigdata_tags", EVENTS: "bigdata_events"}  # JobRun.target_type
MAX_ROWS = 5000  # assignments or events per batch
MAX_TAGS = 500  # tag definitions per batch
CHUNK = 500
MAX_REPORTED = 100
ADDED_BY = "bigdata"  # CustomerTag.added_by of imported memberships
EXTERNAL_ID_MAX = CustomerEvent.__table__.c.external_id.type.length
DETAIL_MAX = CustomerEvent.__table__.c.detail.type.length
KIND_MAX = CustomerEvent.__table__.c.kind.type.length
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
FUTURE_SLACK = dt.timedelta(days=1)
ACTIONS = ("add", "remove")
KEYS = ("customer_phone", "customer_id", "opportunity_id")
PLURALS = {CUSTOMER: "customers", OPPORTUNITY: "opportunities"}


# --- the envelope ---------------------------------------------------------------------------------------
def _list(body: dict, name: str, limit: int, required: bool) -> list:
    rows = body.get(name)
    if rows is None:
        if required:
            raise DomainError("Give the %(name)s", field=name, status=400, name=name)
        return []
    if not isinstance(rows, list):
        raise DomainError("%(name)s must be a JSON list", field=name, status=400, name=name)
    if len(rows) > limit:
        raise DomainError("At most %(limit)s %(name)s per batch (%(count)s given)", field=name, status=413,
                          limit=limit, name=name, count=len(rows))
    return rows


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise DomainError("The body must be a JSON object", field="body", status=400)
    return body


def check_tags_batch(body) -> tuple[list, list]:
    """(tag definitions, assignments) of a tags batch; DomainError naming the field when the envelope is
    wrong (the rows themselves are checked by the job)."""
    body = _object(body)
    tags = _list(body, "tags", MAX_TAGS, required=False)
    rows = _list(body, "assignments", MAX_ROWS, required=False)
    if not tags and not rows:
        raise DomainError("Give tags or assignments", field="assignments", status=400)
    return tags, rows


def check_events_batch(body) -> list:
    rows = _list(_object(body), "events", MAX_ROWS, required=True)
    if not rows:
        raise DomainError("events is empty", field="events", status=400)
    return rows


def start_import(session, batch: str, rows: list, tags: list | None = None, *, source: str = "api",
                 started_by: int | None = None) -> JobRun:
    """Store a checked batch with a TAG_IMPORT run (an identical batch still at work joins its run). The
    caller commits; the RQ job is enqueued then."""
    content = {"rows": rows, "tags": tags or []}
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{batch}\n{source}\n{text}".encode()).hexdigest()
    target = int(digest[:8], 16) & 0x7FFFFFFF
    return runner.start(session, TAG_IMPORT, target_type=TARGETS[batch], target_id=target,
                        started_by=started_by, total=len(rows) + len(tags or []),
                        params={"batch": batch, "source": source, "sha256": digest, **content})


# --- where a run stands ---------------------------------------------------------------------------------
@dataclass
class Tally:
    """Saved as the run's position with each chunk (a resumed run goes on from `next`)."""

    defined: bool = False  # the tag definitions of the batch are applied
    next: int = 0  # the first row (assignment / event) not applied yet
    created: int = 0  # tags created
    updated: int = 0  # tag definitions changed
    added: int = 0  # memberships added / events stored
    removed: int = 0
    unchanged: int = 0  # already so / event stored before
    unknown: int = 0  # no such customer / opportunity
    invalid: int = 0
    problems: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, position: dict | None) -> Tally:
        position = position or {}
        return cls(**{k: position[k] for k in cls.__dataclass_fields__ if k in position})

    def as_position(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def done(self) -> int:
        return self.created + self.updated + self.added + self.removed + self.unchanged

    @property
    def failed(self) -> int:
        return self.unknown + self.invalid

    def report(self, where: str, line: int, external_id, errors: dict) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append({"list": where, "line": line, "id": external_id, "errors": errors})

    def summary(self, batch: str, total: int) -> str:
        if batch == EVENTS:
            text = (f"{total} events: {self.added} stored, {self.unchanged} already stored, "
                    f"{self.unknown} of unknown customers, {self.invalid} invalid")
        else:
            text = (f"{total} rows: {self.created} tags created, {self.updated} tags updated, {self.added} "
                    f"added, {self.removed} removed, {self.unchanged} unchanged, {self.unknown} of unknown "
                    f"customers or opportunities, {self.invalid} invalid")
        if self.problems:
            shown = "; ".join(f"{p['list']} line {p['line']}: "
                              + ", ".join(f"{k} {v}" for k, v in p["errors"].items())
                              for p in self.problems[:20])
            more = self.failed - min(len(self.problems), 20)
            text += f" — {shown}" + (f"; … and {more} more" if more > 0 else "")
        return text


# --- tag definitions ------------------------------------------------------------------------------------
def _code(problems: dict, name: str, value) -> str | None:
    code = inputs.text(problems, name, value, CODE_MAX, required=True, numbers=True)
    if code is not None and not CODE_PATTERN.match(code):
        problems[name] = "letters, digits, - _ and . only"
        return None
    return code


def apply_definitions(session, rows: list, tally: Tally, now: dt.datetime) -> None:
    for line, row in enumerate(rows, 1):
        problems: dict[str, str] = {}
        if not isinstance(row, dict):
            tally.invalid += 1
            tally.report(TAGS, line, None, {"row": "must be a JSON object"})
            continue
        code = _code(problems, "code", row.get("code"))
        name = inputs.text(problems, "name", row.get("name"), NAME_MAX)
        description = inputs.text(problems, "description", row.get("description"), DESCRIPTION_MAX)
        subject = inputs.text(problems, "subject", row.get("subject"), 12)
        if subject is not None and subject not in SUBJECTS:
            problems["subject"] = "customer or opportunity"
        existing = session.scalar(select(Tag).where(Tag.code == code)) if code else None
        if existing is not None and existing.source != IMPORTED:
            problems["code"] = f"a {existing.source} tag has this code"
        elif existing is not None and subject and subject != existing.subject:
            problems["subject"] = f"the tag is about {PLURALS[existing.subject]}"
        if problems:
            tally.invalid += 1
            tally.report(TAGS, line, row.get("code"), problems)
            continue
        if existing is None:
            session.add(Tag(code=code, name=name or code, description=description, source=IMPORTED,
                            subject=subject or CUSTOMER, enabled=True, member_count=0, computed_at=now))
            tally.created += 1
        elif (name and name != existing.name) or (description and description != existing.description):
            existing.name = name or existing.name
            existing.description = description or existing.description
            tally.updated += 1
        else:
            tally.unchanged += 1
        session.flush()
    tally.defined = True


# --- assignments ----------------------------------------------------------------------------------------
def _key(problems: dict, row: dict) -> tuple[str | None, object]:
    given = [k for k in KEYS if row.get(k) not in (None, "")]
    if len(given) != 1:
        problems["customer_phone" if not given else given[1]] = \
            "give one of customer_phone, customer_id, opportunity_id"
        return None, None
    key = given[0]
    if key == "customer_phone":
        raw = inputs.text(problems, key, row[key], customers.PHONE_MAX, numbers=True)
        try:
            return key, normalise_phone(raw, field=key) if raw else None
        except DomainError as exc:
            problems[key] = exc.message
            return None, None
    return key, inputs.ident(problems, key, row[key], required=True)


def _resolve(session, keyed: list[tuple[str, object]]) -> dict[tuple[str, object], int]:
    """(key, value) → the live customer's / the opportunity's id, for those the CRM knows."""
    found: dict[tuple[str, object], int] = {}
    phones = sorted({v for k, v in keyed if k == "customer_phone"})
    ids = sorted({v for k, v in keyed if k == "customer_id" and storable_id(v)})
    opps = sorted({v for k, v in keyed if k == "opportunity_id" and storable_id(v)})
    if phones or ids:
        rows = session.scalars(select(Customer).where(or_(Customer.phone.in_(phones), Customer.id.in_(ids))))
        for customer in rows:
            live = customers.live(session, customer)
            if live is None:
                continue
            if customer.phone in phones:
                found[("customer_phone", customer.phone)] = live.id
            if customer.id in ids:
                found[("customer_id", customer.id)] = live.id
    if opps:
        for opp_id in session.scalars(select(Opportunity.id).where(Opportunity.id.in_(opps))):
            found[("opportunity_id", opp_id)] = opp_id
    return found


def _tag_for(session, code: str, subject: str, now: dt.datetime, tally: Tally) -> tuple[Tag | None, str]:
    tag = session.scalar(select(Tag).where(Tag.code == code))
    if tag is None:
        tag = Tag(code=code, name=code, source=IMPORTED, subject=subject, enabled=True, member_count=0,
                  computed_at=now)
        session.add(tag)
        session.flush()
        tally.created += 1
    if tag.source != IMPORTED:
        return None, f"{code!r} is a {tag.source} tag, not an imported one"
    if tag.subject != subject:
        return None, f"{code!r} is a tag of {PLURALS[tag.subject]}"
    return tag, ""


def apply_assignments(session, rows: list, start: int, tally: Tally, now: dt.datetime | None = None) -> None:
    """Apply one chunk of assignments (`start`: the index of rows[0] in the batch); the caller commits."""
    now = now or clock.utcnow()
    parsed = []
    for offset, row in enumerate(rows):
        line = start + offset + 1
        problems: dict[str, str] = {}
        if not isinstance(row, dict):
            tally.invalid += 1
            tally.report("assignments", line, None, {"row": "must be a JSON object"})
            continue
        external_id = inputs.text(problems, "id", row.get("id"), EXTERNAL_ID_MAX, numbers=True)
        code = _code(problems, "tag", row.get("tag"))
        action = row.get("action", "add")
        if action not in ACTIONS:
            problems["action"] = "add or remove"
        key, value = _key(problems, row)
        if problems:
            tally.invalid += 1
            tally.report("assignments", line, row.get("id"), problems)
            continue
        parsed.append((line, external_id, code, action, key, value))
    known = _resolve(session, [(k, v) for *_, k, v in parsed])
    wanted: dict[tuple[int, str, int], str] = {}  # (tag id, subject, item id) → the last action
    tags: dict[int, Tag] = {}
    for line, external_id, code, action, key, value in parsed:
        subject = OPPORTUNITY if key == "opportunity_id" else CUSTOMER
        item = known.get((key, value))
        if item is None:
            tally.unknown += 1
            tally.report("assignments", line, external_id, {key: f"unknown {inputs.quote(value)}"})
            continue
        tag, refusal = _tag_for(session, code, subject, now, tally)
        if tag is None:
            tally.invalid += 1
            tally.report("assignments", line, external_id, {"tag": refusal})
            continue
        tags[tag.id] = tag
        wanted.pop((tag.id, subject, item), None)  # the last line about the pair wins, in line order
        wanted[(tag.id, subject, item)] = action
    for subject in SUBJECTS:
        model, column = member_model(subject)
        adds = [(t, i) for (t, s, i), a in wanted.items() if s == subject and a == "add"]
        removes = [(t, i) for (t, s, i), a in wanted.items() if s == subject and a == "remove"]
        if adds:
            stmt = (dialect_insert(session, model.__table__)
                    .values([{"tag_id": t, column.key: i, "source": IMPORTED, "added_at": now,
                              "added_by": ADDED_BY} for t, i in adds])
                    .on_conflict_do_nothing().returning(model.__table__.c.tag_id))
            inserted = len(session.execute(stmt).all())
            tally.added += inserted
            tally.unchanged += len(adds) - inserted
        if removes:
            gone = len(session.execute(delete(model).where(tuple_(model.tag_id, column).in_(removes),
                                                           model.source == IMPORTED)
                                       .returning(model.tag_id)
                                       .execution_options(synchronize_session=False)).all())
            tally.removed += gone
            tally.unchanged += len(removes) - gone
    for tag in tags.values():
        model, _ = member_model(tag.subject)
        count = select(func.count()).select_from(model).where(model.tag_id == tag.id).scalar_subquery()
        session.execute(update(Tag).where(Tag.id == tag.id).values(member_count=count, computed_at=now)
                        .execution_options(synchronize_session=False))
    tally.next = start + len(rows)
    session.flush()


# --- events ---------------------------------------------------------------------------------------------
def apply_events(session, rows: list, start: int, tally: Tally, now: dt.datetime | None = None) -> None:
    """Store one chunk of events once per id; the caller commits."""
    now = now or clock.utcnow()
    parsed, seen = [], set()
    for offset, row in enumerate(rows):
        line = start + offset + 1
        problems: dict[str, str] = {}
        if not isinstance(row, dict):
            tally.invalid += 1
            tally.report(EVENTS, line, None, {"row": "must be a JSON object"})
            continue
        external_id = inputs.text(problems, "id", row.get("id"), EXTERNAL_ID_MAX, required=True, numbers=True)
        kind = inputs.text(problems, "kind", row.get("kind") or PAGE_VIEW, KIND_MAX)
        if kind and not KIND_PATTERN.match(kind):
            problems["kind"] = "lower-case letters, digits and _ (e.g. page_view)"
        detail = inputs.text(problems, "detail", row.get("detail"), DETAIL_MAX, required=kind == PAGE_VIEW)
        occurred_at = parse_time_with_zone(problems, "occurred_at", row.get("occurred_at"))
        if occurred_at is not None and occurred_at > now + FUTURE_SLACK:
            problems["occurred_at"] = "in the future"
        key, value = (None, None)
        if "opportunity_id" in row:
            problems["opportunity_id"] = "events are about customers: give customer_phone or customer_id"
        else:
            key, value = _key(problems, row)
        if problems:
            tally.invalid += 1
            tally.report(EVENTS, line, row.get("id"), problems)
        elif external_id in seen:
            tally.unchanged += 1
        else:
            seen.add(external_id)
            parsed.append((line, external_id, kind, detail, occurred_at, key, value))
    known = _resolve(session, [(k, v) for *_, k, v in parsed])
    values = []
    for line, external_id, kind, detail, occurred_at, key, value in parsed:
        customer_id = known.get((key, value))
        if customer_id is None:
            tally.unknown += 1
            tally.report(EVENTS, line, external_id, {key: f"unknown {inputs.quote(value)}"})
            continue
        values.append({"external_id": external_id, "customer_id": customer_id, "kind": kind,
                       "detail": detail, "occurred_at": occurred_at, "imported_at": now})
    if values:
        table = CustomerEvent.__table__
        stmt = (dialect_insert(session, table).values(values).returning(table.c.id)
                .on_conflict_do_nothing(index_elements=["external_id"]))
        inserted = len(session.execute(stmt).all())
        tally.added += inserted
        tally.unchanged += len(values) - inserted
    tally.next = start + len(rows)
    session.flush()


def events_of(session, customer_id: int, limit: int = 20) -> list[CustomerEvent]:
    """A customer's newest behaviour events (the caller checked the scope)."""
    return list(session.scalars(select(CustomerEvent).where(CustomerEvent.customer_id == customer_id)
                                .order_by(CustomerEvent.occurred_at.desc(), CustomerEvent.id.desc())
                                .limit(limit)))

