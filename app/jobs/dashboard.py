"""The dashboard's aggregates refresh (app.services.dashboard_refresh), every few minutes from the scheduler.

One refresh at a time (a Redis lock): two at once would both rebuild the same days. A refresh killed
half-way has committed the days it finished and left its mark unmoved; the next one does the rest.
"""

from __future__ import annotations

from app.clock import utcnow
from app.extensions import db, rq
from app.services import dashboard_refresh

LOCK_KEY = "crm:dashboard-refresh"
LOCK_SECONDS = 1800  # longer than a first refresh of a large install takes; released at the end


def refresh_dashboard_job(full: bool = False) -> dict | None:
    """Bring the dashboard's aggregates up to date (`full`: rebuild every day). None when another refresh
    is running."""
    lock = rq.redis.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return None
    try:
        return dashboard_refresh.refresh(db.session, utcnow(), full=full)
    except Exception:
        db.session.rollback()
        raise
    finally:
        try:
            lock.release()
        except Exception:  # expired meanwhile: nothing to release
            pass
