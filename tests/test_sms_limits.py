"""Frequency limits per number: rolling windows, atomic in Redis under concurrent workers, configurable."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter

from redis import Redis

from app.models.sms import MARKETING, NOTIFICATION, VERIFICATION
from app.services.sms import limits
from app.services.sms.limits import FrequencyLimiter
from tests.factories import set_config
from tests.helpers import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_800_000_000.0  # a fixed instant (seconds)


def test_verification_defaults_minute_hour_day(app, session):
    limiter = FrequencyLimiter(Redis.from_url(app.config["REDIS_URL"]))
    rule = limits.limits_for(session, VERIFICATION)
    assert rule == {"minute": 1, "hour": 5, "day": 10}
    phone, key = "+8613900000001", "学而优:7"
    assert limiter.try_acquire(phone, key, rule, now=T0)
    assert not limiter.try_acquire(phone, key, rule, now=T0 + 59)  # same rolling minute
    got = [limiter.try_acquire(phone, key, rule, now=T0 + 61 * k) for k in range(1, 10)]
    assert got == [True] * 4 + [False] * 5  # 5 per rolling hour
    # 10 per rolling day: an hour later the hour window has room again, until the day is full
    later = [limiter.try_acquire(phone, key, rule, now=T0 + 3700 + 61 * k) for k in range(8)]
    assert later == [True] * 5 + [False] * 3
    assert sum(later) + sum(got) + 1 == rule["hour"] * 2
    more = [limiter.try_acquire(phone, key, rule, now=T0 + 7400 + 61 * k) for k in range(3)]
    assert more == [False] * 3  # the day holds 10 already
    assert limiter.try_acquire(phone, key, rule, now=T0 + 86_401)  # the first one left the day window
    # another template (or signature) has a count of its own
    assert limiter.try_acquire(phone, "学而优:8", rule, now=T0 + 59)


def test_others_default_to_fifty_a_day_and_config_overrides(app, session):
    assert limits.limits_for(session, MARKETING) == {"day": 50}
    assert limits.limits_for(session, NOTIFICATION) == {"day": 50}
    set_config(session, limits.LIMITS_CONFIG, {"marketing": {"hour": 2, "day": 3}, "default": {"day": 9}})
    assert limits.limits_for(session, MARKETING) == {"hour": 2, "day": 3}
    assert limits.limits_for(session, NOTIFICATION) == {"day": 9}


def test_the_same_member_counts_once(app):
    limiter = FrequencyLimiter(Redis.from_url(app.config["REDIS_URL"]))
    rule = {"day": 2}
    phone = "+8613900000002"
    assert limiter.try_acquire(phone, "k", rule, member="c1", now=T0)
    assert limiter.try_acquire(phone, "k", rule, member="c1", now=T0 + 1)  # a re-run chunk: no new count
    assert limiter.try_acquire(phone, "k", rule, member="c2", now=T0 + 2)
    assert not limiter.try_acquire(phone, "k", rule, member="c3", now=T0 + 3)


def test_two_threads_never_exceed_the_limit(app):
    url = app.config["REDIS_URL"]
    rule = {"minute": 7, "day": 20}
    phones = [f"+861390000{n:04d}" for n in range(30)]
    granted: list[list[str]] = [[], []]

    def worker(n: int) -> None:
        limiter = FrequencyLimiter(Redis.from_url(url))  # a connection of its own
        for _ in range(10):
            for phone, ok in zip(phones, limiter.acquire_many(phones, "k", rule, now=T0), strict=True):
                if ok:
                    granted[n].append(phone)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_phone = {p: granted[0].count(p) + granted[1].count(p) for p in phones}
    assert per_phone == {p: rule["minute"] for p in phones}
    assert granted[0] and granted[1]  # both workers got some


HAMMER = """
import sys
from redis import Redis
from app.services.sms.limits import FrequencyLimiter
url, phone = sys.argv[1:3]
limiter = FrequencyLimiter(Redis.from_url(url))
print(sum(limiter.try_acquire(phone, "sig:1", {"hour": 5, "day": 10}) for _ in range(200)))
"""


def test_two_processes_share_one_count(app):
    url, phone = app.config["REDIS_URL"], "+8613900009999"
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, url, phone], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env=child_env()) for _ in range(2)]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(counts) == 5  # the hour limit, whoever won the race


def test_release_frees_the_members_slot_once(app):
    """A failed or cancelled message gives back its campaign's slot; releasing twice frees one slot only,
    and another sender's slot on the same number is never touched."""
    limiter = FrequencyLimiter(Redis.from_url(app.config["REDIS_URL"]))
    rule, phone = {"day": 2}, "+8613900000003"
    assert limiter.try_acquire(phone, "k", rule, member="c1", now=T0)
    assert limiter.try_acquire(phone, "k", rule, member="c2", now=T0 + 1)
    assert not limiter.try_acquire(phone, "k", rule, member="c3", now=T0 + 2)  # the day is full
    assert limiter.release(phone, "k", "c1") is True
    assert limiter.release(phone, "k", "c1") is False  # the second release frees nothing
    assert limiter.release_many([phone, phone], "k", "c1") == 0
    assert limiter.try_acquire(phone, "k", rule, member="c3", now=T0 + 3)  # the one freed slot
    assert not limiter.try_acquire(phone, "k", rule, member="c4", now=T0 + 4)  # and no second one
    assert limiter.release_many(["+8613900000004", phone], "k", "c2") == 1


def test_channel_rate_is_shared_by_two_threads(app):
    """Two workers reserving sends on one channel: their combined sends per second stay within the
    channel's rate (plus one batch of tolerance), counted per one-second bucket, not by wall-clock asserts."""
    url, rate, batch, rounds = app.config["REDIS_URL"], 40, 5, 24
    stamps: list[list[float]] = [[], []]

    def worker(n: int) -> None:
        limiter = limits.ChannelRateLimiter(Redis.from_url(url))
        for _ in range(rounds):
            wait = limiter.reserve(4242, batch, rate)
            if wait > 0:
                time.sleep(wait)
            stamps[n] += [time.time()] * batch  # "sent" now

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(stamps[0] + stamps[1])
    assert len(every) == 2 * rounds * batch
    per_second = Counter(int(s) for s in every)
    assert max(per_second.values()) <= rate + batch, per_second
    # 240 messages at 40/s cannot all go within ~5 s; one worker alone would have had no need to wait
    assert every[-1] - every[0] >= (len(every) - rate - batch) / rate - 0.25
    assert stamps[0] and stamps[1]
