"""Rate limiting with the buckets in the shared store (``server.store``): one global limit,
whichever node a request reaches.

Each bucket is a Redis hash (tokens, time) changed by one Lua script, so the read, the refill
and the take are atomic across every node, and Redis' own clock (TIME) stands for all of
them: nodes whose clocks disagree still share one rate. A bucket expires once it would have
refilled completely, so Redis holds only clients seen within ``burst / rps`` seconds; there
is no table to fill and no overflow bucket (``server.rate_limit_max_clients`` is for the
in-process limiter).

When Redis cannot be reached the limiter fails closed (``check`` raises ``RedisError``: the
guard answers 503) unless built with ``fail_open``, which admits the request and logs a
warning at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from ..redisclient import Client, RedisError, Script
from .ratelimit import Decision

log = logging.getLogger("clinvk.server")

# KEYS[1] the bucket; ARGV burst, rps. Returns {1 if allowed, tokens left as text} (a Lua
# number would come back truncated to an integer).
TAKE_TOKEN = Script("""
local burst = tonumber(ARGV[1])
local rps = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rps)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rps * 1000) + 1000)
return {allowed, string.format('%.6f', tokens)}
""")


class SharedRateLimiter:
    """``RateLimiter``'s ``check`` with the buckets in Redis under ``<prefix>ratelimit:``;
    ``rps`` and ``burst`` are taken as checked by the settings' types."""

    WARN_EVERY_SECS = 60.0

    def __init__(self, store: Client, rps: float, burst: int, fail_open: bool = False) -> None:
        self.store = store
        self.rps = float(rps)
        self.burst = int(burst)
        self.fail_open = fail_open
        self._warned_at: Optional[float] = None
        self._lock = threading.Lock()

    def check(self, key: str, reserved: bool = False) -> Decision:
        """Take one token from ``key``'s bucket if it has one. ``reserved`` is accepted for
        ``RateLimiter``'s sake: every client has a bucket of its own here."""
        try:
            allowed, tokens = self.store.run_script(
                TAKE_TOKEN, [self.store.key("ratelimit:" + key)], [self.burst, repr(self.rps)])
        except RedisError as exc:
            if not self.fail_open:
                raise
            self._warn_open(exc)
            return Decision(True, self.burst, self.burst, 0.0)
        left = float(tokens)
        if allowed:
            return Decision(True, self.burst, int(left), 0.0)
        return Decision(False, self.burst, 0, max(0.0, 1.0 - left) / self.rps)

    def _warn_open(self, exc: RedisError) -> None:
        now = time.monotonic()
        with self._lock:
            if self._warned_at is not None and now - self._warned_at < self.WARN_EVERY_SECS:
                return
            self._warned_at = now
        log.warning("rate limiting is off while the store is unreachable "
                    "(server.rate_limit_fail_open: true): %s", exc)
