"""Helpers for tests: reading FAB's HTML, and starting Python child processes on the test's clock."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from html import unescape

import time_machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELUDE = os.path.join(ROOT, "tests", "prelude")
CLOCK_ENV = "CRM_TEST_CLOCK"

# Every test runs at a fixed instant (tests/conftest.py): a Wednesday, 10:00 in Asia/Shanghai, inside
# working hours, the calling window and the SMS window. `@pytest.mark.instant(...)` picks another one.
DEFAULT_INSTANT = "2026-06-17T10:00:00+08:00"
# The template databases (migrations, demo data) are built half an hour earlier, the same day: what a
# test does comes after the demo's history, as it would on a live system.
SEED_INSTANT = "2026-06-17T09:30:00+08:00"


def instant(value: str | dt.datetime) -> dt.datetime:
    """An explicit instant (ISO 8601 with an offset, or an aware datetime) as an aware datetime."""
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"an instant needs an offset: {value!r}")
    return moment


def utc(value: str | dt.datetime) -> dt.datetime:
    """An explicit instant as naive UTC, the way timestamps are stored."""
    return instant(value).astimezone(dt.UTC).replace(tzinfo=None)


def travel(value: str | dt.datetime) -> time_machine.travel:
    """A time-machine travel to an explicit instant; the clock ticks on from there."""
    return time_machine.travel(instant(value), tick=True)


def child_env(env: dict | None = None) -> dict:
    """The environment for a Python child process of a test (a worker, a sender, run.py): the child
    starts on this process's clock, the test's instant (tests/prelude/sitecustomize.py)."""
    env = without_faketime(dict(os.environ if env is None else env))
    # The test's now, and the monotonic clock (one for the whole machine) at that moment: the child's now
    # is that instant plus the monotonic time gone since, whatever its own real-time clock says.
    anchor = f"{time.time()!r} {time.monotonic()!r}"
    paths = [PRELUDE, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    return {**env, CLOCK_ENV: anchor, "PYTHONPATH": os.pathsep.join(paths)}


def without_faketime(env: dict) -> dict:
    """`env` without libfaketime in LD_PRELOAD. When the suite itself runs under `faketime` (to prove no
    test reads the real clock), redis-server cannot start under it (libfaketime clashes with its
    allocator); a Python child needs no libfaketime either: it follows the test's clock by time-machine."""
    kept = [lib for lib in env.get("LD_PRELOAD", "").split(":") if lib and "libfaketime" not in lib]
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    return {**env, "LD_PRELOAD": ":".join(kept)} if kept else env


def field_errors(html: str) -> dict[str, str]:
    """Form field id → the error text FAB renders under that field."""
    errors = {}
    for chunk in html.split('<label for="')[1:]:
        name, _, rest = chunk.partition('"')
        match = re.search(r'<div class="alert alert-danger">(.*?)</div>', rest.split("</tr>")[0], re.S)
        if match:
            errors[name] = " ".join(unescape(match.group(1)).split())
    return errors


def flashes(html: str, category: str = "danger") -> list[str]:
    pattern = rf'<div class="alert alert-{category}">\s*<button[^>]*>&times;</button>(.*?)</div>'
    return [" ".join(unescape(m).split()) for m in re.findall(pattern, html, re.S)]


def wait_for(condition, what: str, timeout: float = 30.0, every: float = 0.01):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` seconds:
    for ordering events between threads or processes without guessing a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
