"""The nightly purge of read inbox notifications (app.jobs.maintenance.purge_read_notifications), through a
real RQ queue and worker: read long enough ago → deleted; unread, or read recently → kept; the retention is
the config item `inbox.read_retention_days`; safe to run twice."""

from __future__ import annotations

import datetime as dt

from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import select

from app.clock import utcnow
from app.jobs.maintenance import purge_read_notifications
from app.jobs.worker import app_worker_class
from app.models.inbox import InboxNotification
from app.models.metadata import ConfigItem
from app.services import reference
from tests import factories as f


def run(app, func, **kwargs):
    queue = Queue("low", connection=Redis.from_url(app.config["REDIS_URL"]))
    job = queue.enqueue(func, **kwargs)
    assert app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    assert job.get_status() == "finished", job.latest_result()
    return job.return_value()


def notifications(session, user, read_days_ago) -> list[int]:
    """One notification per entry of `read_days_ago` (None: unread), created a year ago."""
    now, ids = utcnow(), []
    for days in read_days_ago:
        row = f.INBOX_NOTIFICATION.create(
            session, recipient_id=user.id, created_at=now - dt.timedelta(days=365),
            read_at=None if days is None else now - dt.timedelta(days=days))
        ids.append(row.id)
    session.commit()
    return ids


def left(session, ids) -> list[int]:
    session.expire_all()
    return list(session.scalars(select(InboxNotification.id).where(InboxNotification.id.in_(ids))
                                .order_by(InboxNotification.id)))


def test_read_notifications_older_than_the_retention_are_purged(app, session):
    assert reference.default("inbox.read_retention_days") == 90
    user = f.USER.create(session)
    old_read = notifications(session, user, [91, 200, 365])
    kept = notifications(session, user, [None, 89, 1])  # unread however old, or read recently

    assert run(app, purge_read_notifications, chunk_size=2) == 3
    assert left(session, old_read + kept) == kept
    assert run(app, purge_read_notifications) == 0  # again: nothing more


def test_the_retention_is_a_config_item(app, session):
    user = f.USER.create(session)
    ids = notifications(session, user, [None, 5, 20])
    item = session.scalar(select(ConfigItem).where(ConfigItem.key == "inbox.read_retention_days"))
    item.value = "10"
    session.commit()  # the config cache drops on change (app.services.metadata)
    assert run(app, purge_read_notifications) == 1
    assert left(session, ids) == ids[:2]
