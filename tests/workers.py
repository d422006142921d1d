"""Real RQ worker processes for tests: started on the test's database, Redis, settings and clock
(child_env), killed the way a crash or an OOM killer would (SIGKILL to the worker and its work horse),
stopped cleanly at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.helpers import ROOT, child_env

WORKER = """
import json, sys
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from app import create_app
from app.jobs.worker import app_worker_class, dispose_connections
from tests.conftest import make_config

db_url, redis_url, name, spec = sys.argv[1:5]
spec = json.loads(spec)
app = create_app(make_config(db_url, redis_url, **spec["settings"]))
base = SimpleWorker if spec["simple"] else Worker
if base is Worker:
    dispose_connections(app)  # the work horses are forked from this process
redis = Redis.from_url(redis_url)
queues = [Queue(q, connection=redis) for q in spec["queues"]]
app_worker_class(app, base)(queues, connection=redis, name=name).work(burst=spec["burst"],
                                                                      logging_level="WARNING")
"""


def start_worker(app, name: str, *, settings: dict | None = None, simple: bool = False,
                 burst: bool = False, queues=("default",)) -> subprocess.Popen:
    """An RQ worker process named `name`: RQ's forking Worker (each job in a work horse, as in
    production), or a SimpleWorker (`simple=True`: jobs in the worker process itself)."""
    spec = {"settings": settings or {}, "simple": simple, "burst": burst, "queues": list(queues)}
    return subprocess.Popen([sys.executable, "-c", WORKER, app.config["SQLALCHEMY_DATABASE_URI"],
                             app.config["REDIS_URL"], name, json.dumps(spec)], cwd=ROOT, env=child_env())


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a worker's work horse)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


def kill_worker_and_horse(proc: subprocess.Popen, horses: list[int] | None = None) -> int:
    """SIGKILL the worker and its work horse(s); returns how many processes were killed."""
    horses = children(proc.pid) if horses is None else horses
    for pid in [proc.pid, *horses]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    return len(horses) + 1


def stop(procs) -> None:
    """SIGTERM (RQ's warm shutdown), then SIGKILL what has not stopped within 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
