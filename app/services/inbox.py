"""The notification centre: messages to one login user, shown under the bell in the navbar.

    inbox.notify(session, user_or_employee, inbox.JOB_FAILED, TITLES[JOB_FAILED], {"run": 7},
                 subject=("job_run", 7), dedupe_key="7")

A title is an English msgid plus parameters, rendered in the reader's language when read (a parameter
given as {"msgid": "Lead import"} is translated too). `dedupe_key` makes a notification happen at most
once per (recipient, kind, key): the scans that raise them may run twice or overlap. Every query is
scoped to one recipient: a user reads and marks only their own. The caller commits.

Sources: the circulation scan (recycle reminders, once a day per owner), the CRM notification triggers
(follow-ups due, new assignments, beside their SMS), and the job runner (runs of yours that ended).
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select, update

from app import clock
from app.clock import utcnow
from app.models.employee import CrmUser, Employee
from app.models.inbox import (
    FOLLOW_UP_DUE,
    JOB_FAILED,
    JOB_FINISHED,
    KINDS,
    NEW_ASSIGNMENT,
    RECYCLE_REMINDER,
    InboxNotification,
)
from app.services.errors import DomainError
from app.services.sql import dialect_insert

MAX_ID = 2**31 - 1  # an integer column's range on PostgreSQL: anything beyond is no notification
UNREAD_CAP = 100  # the bell counts at most this many ("99+"): a cheap, bounded query on every page


def _(message: str) -> str:
    """Marks a msgid for pybabel (extracted with -k _); it is translated when read, not here."""
    return message


TITLES = {
    RECYCLE_REMINDER: _("%(count)s of your opportunities will be recycled on %(date)s"),
    FOLLOW_UP_DUE: _("Follow-up due at %(due)s: %(customer)s"),
    NEW_ASSIGNMENT: _("New opportunity assigned to you: %(customer)s"),
    JOB_FINISHED: _("Your job %(job)s #%(run)s finished"),
    JOB_FAILED: _("Your job %(job)s #%(run)s failed"),
}
# The job runner's kinds as the Jobs page names them (same msgids as app.views.jobs.KIND_LABELS).
JOB_KINDS = {"lead_import": _("Lead import"), "sms_campaign_prepare": _("Campaign preparation"),
             "sms_campaign_send": _("Campaign sending"), "dispatch": _("Dispatch run"),
             "circulation_scan": _("Circulation scan"), "export": _("Export"),
             "learning_import": _("Learning import")}


# --- writing ------------------------------------------------------------------------------------------
def recipient_id(session, recipient) -> int | None:
    """The login user (ab_user.id) of a CrmUser, an Employee or a user id; None for an employee
    without a login (nobody would read it)."""
    if recipient is None:
        return None
    if isinstance(recipient, CrmUser):
        return recipient.id
    if isinstance(recipient, Employee):
        return recipient.user_id
    return int(recipient)


def users_of_employees(session, employee_ids) -> dict[int, int]:
    """employee id → login user id, for the employees that have a login."""
    ids = sorted({e for e in employee_ids if e is not None})
    if not ids:
        return {}
    rows = session.execute(select(Employee.id, Employee.user_id)
                           .where(Employee.id.in_(ids), Employee.user_id.is_not(None)))
    return dict(rows.all())


def notify(session, recipient, kind: str, title: str, params: dict | None = None, *,
           subject: tuple[str, int] | None = None, dedupe_key: str | None = None,
           now: dt.datetime | None = None) -> int | None:
    """Put a notification in `recipient`'s inbox; returns its id, or None when it was there already
    (same recipient, kind and `dedupe_key`) or there is nobody to read it. The caller commits."""
    if kind not in KINDS:
        raise DomainError("Unknown notification kind %(kind)s", field="kind", kind=repr(kind))
    user_id = recipient_id(session, recipient)
    if user_id is None:
        return None
    subject_type, subject_id = subject if subject else (None, None)
    values = {"recipient_id": user_id, "kind": kind, "msgid": title[:255],
              "params": json.dumps(params, ensure_ascii=False, default=str) if params else None,
              "subject_type": subject_type, "subject_id": subject_id,
              "dedupe_key": dedupe_key[:120] if dedupe_key else None, "created_at": now or utcnow()}
    if dedupe_key is None:
        row = InboxNotification(**values)
        session.add(row)
        session.flush()
        return row.id
    table = InboxNotification.__table__  # (RETURNING, not rowcount: PostgreSQL's is -1 here)
    stmt = (dialect_insert(session, table).values(**values).returning(table.c.id)
            .on_conflict_do_nothing(index_elements=["recipient_id", "kind", "dedupe_key"]))
    return session.execute(stmt).scalar()


def remind_recycling(session, owners: dict[int, tuple[int, dt.date]], now: dt.datetime | None = None
                     ) -> int:
    """Recycle reminders, one a business day per owner: `owners` maps employee id → (how many of
    their opportunities were newly found about to be recycled, the earliest date one will be).

    A later scan of the same day that finds more adds them to that day's notification (and makes it
    unread again) instead of making a second one; a scan that finds nothing new changes nothing.
    Returns how many owners were notified."""
    now = now or utcnow()
    day = clock.local_date(now).isoformat()
    users = users_of_employees(session, owners)
    notified = 0
    for employee_id, (count, date) in sorted(owners.items()):
        user_id = users.get(employee_id)
        if user_id is None or count <= 0:
            continue
        notified += 1
        params = {"count": count, "date": date.isoformat()}
        if notify(session, user_id, RECYCLE_REMINDER, TITLES[RECYCLE_REMINDER], params,
                  dedupe_key=day, now=now) is not None:
            continue
        row = session.scalar(select(InboxNotification).where(
            InboxNotification.recipient_id == user_id, InboxNotification.kind == RECYCLE_REMINDER,
            InboxNotification.dedupe_key == day).with_for_update())
        earlier = row.param_values
        params = {"count": int(earlier.get("count", 0)) + count,
                  "date": min(earlier.get("date") or params["date"], params["date"])}
        row.params, row.read_at = json.dumps(params), None
    session.flush()
    return notified


def job_ended(session, run) -> int | None:
    """Tell whoever started `run` (a JobRun just marked completed or failed) how it ended."""
    from app.models.jobs import COMPLETED, FAILED

    if run is None or run.started_by_fk is None or run.status not in (COMPLETED, FAILED):
        return None
    kind = JOB_FINISHED if run.status == COMPLETED else JOB_FAILED
    job = {"msgid": JOB_KINDS[run.kind]} if run.kind in JOB_KINDS else run.kind
    return notify(session, run.started_by_fk, kind, TITLES[kind], {"job": job, "run": run.id},
                  subject=("job_run", run.id), dedupe_key=str(run.id), now=run.finished_at)


def newest_assignment_log_id(session) -> int | None:
    """The assignment log id of the newest new-assignment notification (its dedupe key), if any."""
    key = session.scalar(select(InboxNotification.dedupe_key).where(InboxNotification.kind == NEW_ASSIGNMENT)
                         .order_by(InboxNotification.id.desc()).limit(1))
    return int(key) if key and key.isdigit() else None


# --- reading (always one recipient's own) -------------------------------------------------------------
def _mine(user_id: int):
    return InboxNotification.recipient_id == user_id


def unread_count(session, user_id: int | None) -> int:
    """Unread notifications of `user_id`, counted up to UNREAD_CAP (an index range, however many)."""
    if user_id is None:
        return 0
    unread = (select(InboxNotification.id).where(_mine(user_id), InboxNotification.read_at.is_(None))
              .limit(UNREAD_CAP))
    return session.scalar(select(func.count()).select_from(unread.subquery())) or 0


def listing(session, user_id: int, *, page: int = 0, page_size: int = 50, unread_only: bool = False
            ) -> tuple[list[InboxNotification], int]:
    """(`user_id`'s notifications on that page, newest first; how many there are in all)."""
    stmt = select(InboxNotification).where(_mine(user_id))
    if unread_only:
        stmt = stmt.where(InboxNotification.read_at.is_(None))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(InboxNotification.created_at.desc(), InboxNotification.id.desc())
                           .offset(max(0, page) * page_size).limit(page_size)).all()
    return list(rows), total


def mark_read(session, user_id: int, notification_id: int, now: dt.datetime | None = None
              ) -> InboxNotification:
    """Mark one of `user_id`'s notifications read (404 when it is not theirs). The caller commits."""
    valid = isinstance(notification_id, int) and not isinstance(notification_id, bool) \
        and 0 < notification_id <= MAX_ID
    row = session.scalar(select(InboxNotification).where(
        _mine(user_id), InboxNotification.id == notification_id)) if valid else None
    if row is None:
        raise DomainError("No such notification", field="id", status=404)
    if row.read_at is None:
        row.read_at = now or utcnow()
        session.flush()
    return row


def mark_all_read(session, user_id: int, now: dt.datetime | None = None) -> int:
    """Mark every unread notification of `user_id` read; returns how many. The caller commits."""
    result = session.execute(update(InboxNotification)
                             .where(_mine(user_id), InboxNotification.read_at.is_(None))
                             .values(read_at=now or utcnow()).execution_options(synchronize_session=False))
    return result.rowcount


def settle(session, kind: str, dedupe_key: str, now: dt.datetime | None = None) -> int:
    """Mark read, for every recipient, the unread notifications of `kind` and `dedupe_key`: what they asked
    for was done (e.g. one manager decided the discount the others were also asked about)."""
    result = session.execute(update(InboxNotification)
                             .where(InboxNotification.kind == kind,
                                    InboxNotification.dedupe_key == dedupe_key,
                                    InboxNotification.read_at.is_(None))
                             .values(read_at=now or utcnow()).execution_options(synchronize_session=False))
    return result.rowcount
