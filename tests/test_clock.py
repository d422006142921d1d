"""The one clock (app/clock.py): nothing else in app/ reads the system time, and what it answers —
business days across a DST change, wall-clock times typed by a person, what people and the API read."""

from __future__ import annotations

import ast
import datetime as dt
import pathlib
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from app import clock
from tests.helpers import DEFAULT_INSTANT, child_env, utc

APP = pathlib.Path(__file__).resolve().parent.parent / "app"
CLOCK = APP / "clock.py"
# What reads the system time: datetime.now / utcnow / today, date.today, time.time / time_ns and the
# clock-reading forms of localtime / gmtime / ctime. time.monotonic and perf_counter measure durations:
# they are fine.
DATETIME_READS = {"now", "utcnow", "today"}
TIME_READS = {"time", "time_ns"}
# these read the system time when not given a time: how many arguments make them not read it
TIME_READS_WITHOUT_ARGS = {"localtime": 1, "gmtime": 1, "ctime": 1, "asctime": 1, "strftime": 2}


def system_time_reads(source: str) -> list[tuple[int, str]]:
    """(line, code) of every place `source` reads the system time rather than app.clock."""
    tree = ast.parse(source)
    datetime_modules, datetime_classes, time_modules, time_functions = set(), set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "datetime":
                    datetime_modules.add(alias.asname or "datetime")
                elif alias.name == "time":
                    time_modules.add(alias.asname or "time")
        elif isinstance(node, ast.ImportFrom) and node.module in ("datetime", "time"):
            for alias in node.names:
                if node.module == "datetime" and alias.name in ("datetime", "date"):
                    datetime_classes.add(alias.asname or alias.name)
                elif node.module == "time" and alias.name in TIME_READS | set(TIME_READS_WITHOUT_ARGS):
                    time_functions.add(alias.asname or alias.name)

    def is_datetime_class(node) -> bool:  # datetime / date, however imported
        if isinstance(node, ast.Name):
            return node.id in datetime_classes
        return (isinstance(node, ast.Attribute) and node.attr in ("datetime", "date")
                and isinstance(node.value, ast.Name) and node.value.id in datetime_modules)

    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in DATETIME_READS and is_datetime_class(node.value):
                found.append(node)
            elif isinstance(node.value, ast.Name) and node.value.id in time_modules:
                call = calls.get(id(node))
                given = len(call.args) if call is not None else 0
                if node.attr in TIME_READS or given < TIME_READS_WITHOUT_ARGS.get(node.attr, 0):
                    found.append(node)
        elif isinstance(node, ast.Name) and node.id in time_functions and isinstance(node.ctx, ast.Load):
            found.append(node)
    return sorted((n.lineno, ast.unparse(n)) for n in found)


def test_nothing_in_app_but_the_clock_reads_the_system_time():
    offenders = [f"{path.relative_to(APP.parent)}:{line}: {code}"
                 for path in sorted(APP.rglob("*.py")) if path != CLOCK
                 for line, code in system_time_reads(path.read_text(encoding="utf-8"))]
    assert offenders == [], "read the time through app.clock (or a `now` passed in):\n" + "\n".join(offenders)


def test_the_guard_finds_every_way_of_reading_the_system_time():
    source = """
import datetime as dt, time
import time as t2
from datetime import date, datetime
from time import time as now_seconds
from app import clock
a = dt.datetime.now(dt.UTC)
b = dt.datetime.utcnow()
c = dt.date.today()
d = datetime.now()
e = date.today()
f = time.time()
g = t2.time_ns()
h = now_seconds()
i = time.localtime()
j = time.strftime("%H")
k = dt.datetime.now
ok1 = clock.utcnow(), clock.today(), clock.timestamp(), time.monotonic(), time.perf_counter()
ok2 = time.localtime(0), time.strftime("%H", time.gmtime(0)), dt.datetime(2026, 1, 1), date(2026, 1, 1)
ok3 = dt.datetime.fromtimestamp(0, dt.UTC), datetime.combine(date(2026, 1, 1), dt.time(0))
"""
    assert [line for line, _ in system_time_reads(source)] == list(range(7, 18))


# --- business days -------------------------------------------------------------------------------------
@pytest.fixture
def new_york():
    """The business time zone overridden to one with DST (as BUSINESS_TIMEZONE would), then restored."""
    before = clock.business_timezone().key
    yield clock.configure("America/New_York")
    clock.configure(before)


def test_day_bounds_in_shanghai_are_local_midnights_in_utc():
    now = utc("2026-06-17T00:30:00+08:00")  # 16 June 16:30 UTC: already the 17th in Shanghai
    assert clock.local_date(now) == dt.date(2026, 6, 17)
    assert clock.day_bounds(now) == (dt.datetime(2026, 6, 16, 16), dt.datetime(2026, 6, 17, 16))
    assert clock.day_bounds(dt.date(2026, 6, 17)) == clock.day_bounds(now)
    start, end = clock.day_bounds(now)
    assert clock.day_bounds(end - dt.timedelta(microseconds=1)) == (start, end)
    assert clock.day_bounds(end)[0] == end  # the next day starts where this one ends


def test_day_bounds_across_dst_in_a_zone_that_has_it(new_york):
    # 8 March 2026: clocks go forward at 02:00 (EST -5 → EDT -4), the day has 23 hours
    spring = clock.day_bounds(dt.date(2026, 3, 8))
    assert spring == (dt.datetime(2026, 3, 8, 5), dt.datetime(2026, 3, 9, 4))
    assert spring[1] - spring[0] == dt.timedelta(hours=23)
    # 1 November 2026: clocks go back at 02:00 (EDT → EST), the day has 25 hours
    autumn = clock.day_bounds(dt.date(2026, 11, 1))
    assert autumn == (dt.datetime(2026, 11, 1, 4), dt.datetime(2026, 11, 2, 5))
    assert autumn[1] - autumn[0] == dt.timedelta(hours=25)
    # an instant late on the 1st in New York is still that day, though it is the 2nd in UTC
    assert clock.local_date(dt.datetime(2026, 11, 2, 4, 30)) == dt.date(2026, 11, 1)
    assert clock.day_bounds(dt.datetime(2026, 11, 2, 4, 30)) == autumn


def test_to_utc_and_to_local_round_trip(new_york):
    typed = dt.datetime(2026, 7, 4, 9, 30)  # a wall-clock time a person typed, in the business zone
    stored = clock.to_utc(typed)
    assert stored == dt.datetime(2026, 7, 4, 13, 30) and stored.tzinfo is None
    local = clock.to_local(stored)
    assert local.replace(tzinfo=None) == typed and local.utcoffset() == dt.timedelta(hours=-4)
    assert clock.to_utc(local) == stored  # an aware time keeps its own offset
    assert clock.to_utc(dt.datetime(2026, 7, 4, 9, 30, tzinfo=ZoneInfo("Asia/Shanghai"))) == \
        dt.datetime(2026, 7, 4, 1, 30)
    winter = dt.datetime(2026, 1, 15, 23, 59, 59)
    assert clock.to_local(clock.to_utc(winter)).replace(tzinfo=None) == winter


def test_what_people_and_the_api_read():
    stored = dt.datetime(2026, 6, 17, 1, 2, 3, 456789)  # naive UTC, with microseconds
    assert clock.format_datetime(stored) == "2026-06-17 09:02:03"  # business zone, no microseconds
    assert clock.format_datetime(stored, seconds=False) == "2026-06-17 09:02"
    assert clock.format_datetime(None) == ""
    iso = clock.isoformat(stored)
    assert iso == "2026-06-17T09:02:03+08:00"  # ISO 8601 with the offset, whole seconds
    assert utc(iso) == stored.replace(microsecond=0)
    assert clock.isoformat(None) is None


def test_now_is_the_instant_the_test_runs_at(traveller):
    assert clock.utcnow() - utc(DEFAULT_INSTANT) < dt.timedelta(minutes=5)  # the clock ticks on from it
    assert clock.utcnow().tzinfo is None
    assert clock.today() == dt.date(2026, 6, 17)
    traveller.move_to(dt.datetime.fromisoformat("2026-06-17T23:59:59+08:00"))
    assert clock.today() == dt.date(2026, 6, 17)
    traveller.shift(dt.timedelta(seconds=2))
    assert clock.today() == dt.date(2026, 6, 18)
    assert abs(clock.timestamp() - dt.datetime(2026, 6, 17, 16, 0, 1, tzinfo=dt.UTC).timestamp()) < 60


@pytest.mark.instant("2026-06-17T23:30:00+08:00")
def test_a_test_picks_its_instant_with_a_marker():
    assert clock.today() == dt.date(2026, 6, 17)
    assert clock.local_date(clock.utcnow()) == dt.date(2026, 6, 17)
    assert clock.utcnow().date() == dt.date(2026, 6, 17) and clock.utcnow().hour == 15


@pytest.mark.instant("2026-06-17T23:59:30+08:00")
def test_a_child_process_runs_on_the_tests_clock(traveller):
    """Workers and other Python children started with child_env() read the test's clock, not the real one,
    including the processes they start in turn."""
    script = ("import subprocess, sys\n"
              "from app import clock\n"
              "print(clock.utcnow().isoformat(), clock.today().isoformat())\n"
              "out = subprocess.run([sys.executable, '-c', 'from app import clock; print(clock.today())'],\n"
              "                     capture_output=True, text=True, check=True).stdout\n"
              "print(out.strip())\n")
    traveller.shift(dt.timedelta(seconds=10))  # moved on by the test before the child starts
    out = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    child_now = dt.datetime.fromisoformat(out[0])
    assert dt.timedelta(0) <= child_now - utc("2026-06-17T23:59:40+08:00") < dt.timedelta(seconds=20)
    assert out[1] == "2026-06-17" or child_now >= utc("2026-06-18T00:00:00+08:00")
    assert out[2] in ("2026-06-17", "2026-06-18") and out[2] >= out[1]  # the grandchild: the same clock
