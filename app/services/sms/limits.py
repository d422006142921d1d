"""Frequency limits per number and quiet hours for marketing.

FrequencyLimiter keeps, per phone and per signature+template key, a sorted set in Redis of the sends it
allowed (member = what was sent, score = time in ms). A Lua script counts the members inside each rolling
window (minute / hour / day) and adds the new one only if every window has room: check-and-count is one
atomic step, so two workers can never both take the last slot.

A member that is already in the set counts as allowed without being added again: a campaign passes its own
id as the member, so a preparation chunk run twice (worker killed before its commit) does not spend the
recipient's quota twice.

Quiet hours: marketing goes out only inside a daily window (default 08:00–21:00 Asia/Shanghai, config
item `sms.quiet_hours` = {"start": "08:00", "end": "21:00", "tz": "Asia/Shanghai"}); outside it a message
waits (`send_after` = the next opening), it is not dropped.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from zoneinfo import ZoneInfo

from app.models.sms import VERIFICATION

WINDOWS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
DEFAULT_LIMITS = {VERIFICATION: {"minute": 1, "hour": 5, "day": 10}, "default": {"day": 50}}
LIMITS_CONFIG = "sms.frequency_limits"  # JSON {"verification": {"minute": 1, …}, "marketing": {…}, …}
QUIET_CONFIG = "sms.quiet_hours"
DEFAULT_QUIET = {"start": "08:00", "end": "21:00", "tz": "Asia/Shanghai"}
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
        now_ms = int((time.time() if now is None else now) * 1000)
        if member is None:
            return [self._one(p, key, limits, now_ms) for p in phones]
        out = self._script(args=[now_ms, len(limits), *self._args(limits), f"{KEY_PREFIX}{key}:", member,
                                 *phones])
        return [c == 49 for c in out]  # b"1"

    def _one(self, phone: str, key: str, limits: dict[str, int], now_ms: int) -> bool:
        out = self._script(args=[now_ms, len(limits), *self._args(limits), f"{KEY_PREFIX}{key}:",
                                 uuid.uuid4().hex, phone])
        return out == b"1"

    def release(self, phone: str, key: str, member: str) -> None:
        """Give back a slot counted for `member` (a message that was never sent)."""
        self.redis.zrem(f"{KEY_PREFIX}{key}:{phone}", member)


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


def next_window_start(now_utc: dt.datetime, window: dict) -> dt.datetime | None:
    """None when `now_utc` (naive UTC) is inside the marketing window, else the next opening (naive UTC)."""
    tz = ZoneInfo(window.get("tz") or DEFAULT_QUIET["tz"])
    start, end = _hm(window["start"]), _hm(window["end"])
    local = now_utc.replace(tzinfo=dt.UTC).astimezone(tz)
    t = local.time()
    inside = start <= t < end if start <= end else (t >= start or t < end)  # a window across midnight
    if inside:
        return None
    day = local.date() if t < start else local.date() + dt.timedelta(days=1)
    opening = dt.datetime.combine(day, start, tzinfo=tz)
    return opening.astimezone(dt.UTC).replace(tzinfo=None)
