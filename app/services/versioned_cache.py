"""A per-process cache that every process drops when any of them commits a change to what it holds.

The processes (web workers, RQ workers) share one version counter in Redis: a commit that touched a
watched model bumps it; each process looks at it at most once per `check_every` seconds and rebuilds
its copy when it moved. Without Redis the cache is process-local (dropped on this process's commits).
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import event


class VersionedCache:
    #: Redis key of the shared version counter; the models whose changes make the cache stale.
    version_key: str = ""
    watched: tuple[type, ...] = ()

    def __init__(self, check_every: float = 1.0) -> None:
        self.check_every = check_every
        self.redis = None  # set by install(); None means process-local only
        self._lock = threading.Lock()
        self._value = None
        self._version: bytes | None = None
        self._checked = 0.0
        self.builds = 0  # how many times the value was (re)built: tests and benchmarks read it
        self._watching: set[int] = set()

    def build(self, session):
        """Read what the cache holds from the database."""
        raise NotImplementedError

    def clear(self) -> None:
        self._value = None

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every or self.redis is None:
            return
        self._checked = now
        try:
            version = self.redis.get(self.version_key)
        except Exception:  # Redis down: keep serving what we have
            return
        if version != self._version:
            self._version = version
            self.clear()

    def get(self, session):
        """The current value; a rebuilt one is swapped in whole, so a reader never sees half of it."""
        self._fresh()
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                self._value = self.build(session)
                self.builds += 1
            return self._value

    def bump(self) -> None:
        """Tell every process that the cached data changed."""
        self.clear()
        self._checked = 0.0
        if self.redis is not None:
            try:
                self._version = str(self.redis.incr(self.version_key)).encode()
            except Exception:
                pass

    # --- wiring to the session ------------------------------------------------------------------------
    def _flag(self) -> str:
        return f"changed:{self.version_key}"

    def _before_flush(self, session, flush_context, instances) -> None:
        if any(isinstance(obj, self.watched) for obj in (*session.new, *session.dirty, *session.deleted)):
            session.info[self._flag()] = True

    def _after_commit(self, session) -> None:
        if session.info.pop(self._flag(), False):
            self.bump()

    def _after_rollback(self, session, previous_transaction) -> None:
        session.info.pop(self._flag(), None)

    def install(self, db) -> None:
        """Use the app's Redis and watch the app's session (listeners attached once per session)."""
        from app.extensions import rq

        try:
            self.redis = rq.redis if rq.url else None
        except RuntimeError:
            self.redis = None
        self.clear()
        self._version = None
        self._checked = 0.0
        target = db.session
        if id(target) not in self._watching:
            event.listen(target, "before_flush", self._before_flush)
            event.listen(target, "after_commit", self._after_commit)
            event.listen(target, "after_soft_rollback", self._after_rollback)
            self._watching.add(id(target))
