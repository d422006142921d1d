"""Frequency limits per number and quiet hours for marketing.

FrequencyLimiter keeps, per phone and per signature+template key, a sorted set in Redis of the sends it
allowed (member = what was sent, score = time in ms). A Lua script counts the members inside each rolling
window (minute / hour / day) and adds the new one only if every window has room: check-and-count is one
atomic step, so two workers can never both take the last slot.

A member that is already in the set counts as allowed without being added again: a campaign passes its own
id as the member, so a preparation chunk run twice (worker killed before its commit) does not spend the
recipient's quota twice.

Quiet hours: marketing goes out only inside a daily window, by default 08:00–21:00 in the RECIPIENT's
time zone (config item `sms.quiet_hours` = {"start": "08:00", "end": "21:00", "recipient_zone": true}).
A number's zone comes from its country / area code (`recipient_zones`: +86 is Asia/Shanghai; others via
phonenumbers' time-zone data); the business time zone (app.clock) is the zone of numbers whose zone is
unknown, and of every number when `recipient_zone` is false. A number that may be in several zones (a country
spanning several, no area code to tell) is messaged only when the window is open in all of them. Outside
the window a message waits (`send_after` = the next opening), it is not dropped.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers

from app import clock
from app.services import reference

WINDOWS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
LIMITS_CONFIG = "sms.frequency_limits"  # JSON {"verification": {"minute": 1, …}, "marketing": {…}, …}
DEFAULT_LIMITS = reference.default(LIMITS_CONFIG)
QUIET_CONFIG = "sms.quiet_hours"
DEFAULT_QUIET = reference.default(QUIET_CONFIG)
CN_ZONE = "Asia/Shanghai"
KEY_PREFIX = "sms:freq:"

# ARGV: now_ms, n_windows, (span_ms, limit) × n, key prefix, member, phone…; the keys are prefix..phone
# (built here, so that a chunk of 5,000 phones costs one short request). Returns "1"/"0" per phone.
_SCRIPT = """
local now = tonumber(ARGV[1])
local nw = tonumber(ARGV[2])
local longest = 0
local spans, limits = {}, {}
for w = 1, nw do
  spans[w] = tonumber(ARGV[1 + 2 * w])
  limits[w] = tonumber(ARGV[2 + 2 * w])
  if spans[w] > longest then longest = spans[w] end
end
local prefix = ARGV[3 + 2 * nw]
local member = ARGV[4 + 2 * nw]
local out = {}
for i = 5 + 2 * nw, #ARGV do
  local key = prefix .. ARGV[i]
  local ok = 1
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest)
    if not redis.call('ZSCORE', key, member) then
      for w = 1, nw do
        if redis.call('ZCOUNT', key, '(' .. (now - spans[w]), '+inf') >= limits[w] then
          ok = 0
          break
        end
      end
    else
      ok = 2
    end
  end
  if ok == 1 then
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, longest)
  end
  out[#out + 1] = ok == 0 and '0' or '1'
end
return table.concat(out)
"""


def limits_for(session, kind: str) -> dict[str, int]:
    """The limits of a template kind: config item `sms.frequency_limits`, else the defaults."""
    from app.services.metadata import config_value

    configured = config_value(session, LIMITS_CONFIG, None) if session is not None else None
    table = configured if isinstance(configured, dict) else DEFAULT_LIMITS
    limits = table.get(kind) or table.get("default") or DEFAULT_LIMITS.get(kind) or DEFAULT_LIMITS["default"]
    return {w: int(n) for w, n in limits.items() if w in WINDOWS}


class FrequencyLimiter:
    def __init__(self, redis):
        self.redis = redis
        self._script = redis.register_script(_SCRIPT)

    @staticmethod
    def _args(limits: dict[str, int]) -> list:
        args = []
        for window, limit in limits.items():
            args += [WINDOWS[window], int(limit)]
        return args

    def try_acquire(self, phone: str, key: str, limits: dict[str, int], member: str | None = None,
                    now: float | None = None) -> bool:
        """Count one send to `phone` under `key` if every window has room; False (nothing counted) if not."""
        return self.acquire_many([phone], key, limits, member, now)[0]

    def acquire_many(self, phones: list[str], key: str, limits: dict[str, int], member: str | None = None,
                     now: float | None = None) -> list[bool]:
        """try_acquire for many phones in one round trip (atomic as a whole).

        With `member` (e.g. a campaign), a phone whose set already holds it is allowed without a new
        count; without one, each phone's send is a new member (with the same member repeated in one
        call, each phone still counts once)."""
        if not phones:
            return []
        if not limits:
            return [True] * len(phones)
        now_ms = int((clock.timestamp() if now is None else now) * 1000)
        if member is None:
            return [self._one(p, key, limits, now_ms) for p in phones]
        out = self._script(args=[now_ms, len(limits), *self._args(limits), f"{KEY_PREFIX}{key}:", member,
                                 *phones])
        return [c == 49 for c in out]  # b"1"

    def _one(self, phone: str, key: str, limits: dict[str, int], now_ms: int) -> bool:
        out = self._script(args=[now_ms, len(limits), *self._args(limits), f"{KEY_PREFIX}{key}:",
                                 uuid.uuid4().hex, phone])
        return out == b"1"

    def release(self, phone: str, key: str, member: str) -> bool:
        """Give back the slot counted for `member` (a message that was never sent); True if one was freed.

        Idempotent: the slot is the member itself (ZREM), so releasing twice frees it once, and another
        campaign's or send's slot on the same number is never touched."""
        return bool(self.redis.zrem(f"{KEY_PREFIX}{key}:{phone}", member))

    def release_many(self, phones, key: str, member: str) -> int:
        """release() for many phones in one round trip; returns how many slots were actually freed."""
        pipe = self.redis.pipeline(transaction=False)
        for phone in phones:
            pipe.zrem(f"{KEY_PREFIX}{key}:{phone}", member)
        return sum(pipe.execute()) if phones else 0


# --- channel rate limit (global across workers) -------------------------------------------------------
RATE_PREFIX = "sms:rate:"
# Virtual scheduling (GCRA-like): the key holds the time (µs) at which the channel's next message may go.
# A caller reserving n messages gets start = max(now, next) and moves next to start + n / rate; it sleeps
# until start, then sends. Reservations are atomic, so however many workers share a channel their sends
# are spaced as if one worker sent them: any second holds at most rate + one batch.
# The clock is Redis's own (TIME), so workers on hosts with skewed clocks share one timeline.
# KEYS[1]: the channel's key. ARGV: n, rate (per second). Returns the wait in µs.
_RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, nxt)
local after = start + math.floor(n * 1000000 / rate)
redis.call('SET', KEYS[1], after, 'PX', math.floor((after - now) / 1000) + 1000)
return start - now
"""


class ChannelRateLimiter:
    """A channel's messages/s, shared by every worker sending on it (campaigns and notifications)."""

    def __init__(self, redis):
        self.redis = redis
        self._script = redis.register_script(_RATE_SCRIPT)

    def reserve(self, channel_id: int, n: int, rate: float) -> float:
        """Reserve `n` sends on the channel; returns the seconds to wait before sending them."""
        if n <= 0:
            return 0.0
        wait = self._script(keys=[f"{RATE_PREFIX}{channel_id}"], args=[int(n), max(float(rate), 0.001)])
        return int(wait) / 1_000_000


# --- quiet hours ------------------------------------------------------------------------------------
def _hm(value: str) -> dt.time:
    hours, minutes = str(value).split(":")
    return dt.time(int(hours), int(minutes))


def quiet_hours(session) -> dict:
    from app.services.metadata import config_value

    configured = config_value(session, QUIET_CONFIG, None) if session is not None else None
    merged = dict(DEFAULT_QUIET)
    if isinstance(configured, dict):
        merged.update({k: v for k, v in configured.items() if k in DEFAULT_QUIET})
    return merged


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else clock.business_timezone()
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        return clock.business_timezone()


def _opening(now_utc: dt.datetime, start: dt.time, end: dt.time, tz: ZoneInfo) -> dt.datetime | None:
    local = now_utc.replace(tzinfo=dt.UTC).astimezone(tz)
    t = local.time()
    inside = start <= t < end if start <= end else (t >= start or t < end)  # a window across midnight
    if inside:
        return None
    day = local.date() if t < start else local.date() + dt.timedelta(days=1)
    opening = dt.datetime.combine(day, start, tzinfo=tz)
    return opening.astimezone(dt.UTC).replace(tzinfo=None)


def next_window_start(now_utc: dt.datetime, window: dict,
                      zones: tuple[str, ...] | None = None) -> dt.datetime | None:
    """None when `now_utc` (naive UTC) is inside the marketing window, else the next opening (naive UTC).

    `zones`: the recipient's possible time zones (default: the window's `tz`); the window must be open in
    all of them. When their windows never overlap, the first zone alone decides."""
    start, end = _hm(window["start"]), _hm(window["end"])
    tzs = [_zone(z) for z in zones] if zones else [clock.business_timezone()]
    at, moved = now_utc, False
    for _ in range(len(tzs) + 2):
        openings = [o for o in (_opening(at, start, end, tz) for tz in tzs) if o is not None]
        if not openings:
            return at if moved else None
        at, moved = max(openings), True
    return _opening(now_utc, start, end, tzs[0])


@lru_cache(maxsize=65_536)
def _zones_of_number(phone: str) -> tuple[str, ...]:
    try:
        from phonenumbers import timezone as phone_timezone  # its data is large: loaded on first use

        found = phone_timezone.time_zones_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return ()
    return tuple(z for z in found if z != phone_timezone.UNKNOWN_TIMEZONE)


def recipient_zones(phone: str | None, window: dict) -> tuple[str, ...]:
    """The time zones the quiet hours of `phone` (E.164) are judged in: +86 → Asia/Shanghai, other
    numbers by country / area code, the business time zone when unknown or when `recipient_zone` is off."""
    fallback = (clock.business_timezone().key,)
    if not phone or not window.get("recipient_zone", True):
        return fallback
    if phone.startswith("+86"):
        return (CN_ZONE,)
    return _zones_of_number(phone) or fallback


def openings(now_utc: dt.datetime, window: dict):
    """`opening(phone)`: when the quiet hours of `phone` end (naive UTC), None when it may be messaged at
    `now_utc`; one window computation per set of zones, +86 numbers on a fast path."""
    by_zones: dict[tuple[str, ...], dt.datetime | None] = {}
    per_recipient = window.get("recipient_zone", True)
    cn = next_window_start(now_utc, window, (CN_ZONE,) if per_recipient else None)

    def opening(phone: str) -> dt.datetime | None:
        if per_recipient and phone.startswith("+86"):
            return cn
        zones = recipient_zones(phone, window)
        if zones not in by_zones:
            by_zones[zones] = next_window_start(now_utc, window, zones)
        return by_zones[zones]

    return opening
