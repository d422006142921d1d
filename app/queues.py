"""Redis connection and RQ queues, bound to the app's REDIS_URL."""

from __future__ import annotations

from redis import Redis
from rq import Queue


class RedisQueues:
    """Holds one Redis connection and the named RQ queues (high, default, low)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._redis: Redis | None = None
        self._queues: dict[str, Queue] = {}

    def init_app(self, app) -> None:
        self.url = app.config["REDIS_URL"] or None
        self._redis = None
        self._queues = {}
        app.extensions["crm_rq"] = self

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            if not self.url:
                raise RuntimeError(
                    "REDIS_URL is not set: start the app with `python run.py all` (embedded Redis) "
                    "or point REDIS_URL at a Redis server"
                )
            self._redis = Redis.from_url(self.url)
        return self._redis

    def queue(self, name: str = "default") -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.redis)
        return self._queues[name]
