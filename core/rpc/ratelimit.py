"""Request-rate limits per CONTRACT.md, from the method's rate-limit class.

Counters use the ``limits`` library's sliding-window counter: in Redis when
``OBSERVE_REDIS_URL`` is set (so every API process shares them), in-process
otherwise. Every limited reply carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset``; a refused one is
``429 RATE_LIMITED`` with ``Retry-After``. If Redis is unreachable, calls
are let through and the outage is logged: a rate limiter must not take the
API down with it.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from observe.v1 import options_pb2

from core.errors import ErrorCode, ObserveError

log = logging.getLogger("observe.ratelimit")

# CONTRACT.md defaults; OBSERVE_RATE_LIMIT_<CLASS> overrides (e.g. "600/minute").
DEFAULTS: dict[str, str] = {
    "TOKEN": "600/minute",
    "AUTH_IP": "10/minute",
    "HEARTBEAT": "60/minute",
    "SUBSCRIBE_IP": "10/hour",
    "PUBLIC_IP": "300/minute",
}
CLASS_NAMES: dict[int, str] = {
    options_pb2.RATE_LIMIT_CLASS_UNSPECIFIED: "TOKEN",
    options_pb2.RATE_LIMIT_CLASS_AUTH_IP: "AUTH_IP",
    options_pb2.RATE_LIMIT_CLASS_HEARTBEAT: "HEARTBEAT",
    options_pb2.RATE_LIMIT_CLASS_SUBSCRIBE_IP: "SUBSCRIBE_IP",
    options_pb2.RATE_LIMIT_CLASS_PUBLIC_IP: "PUBLIC_IP",
}


def storage_for(redis_url: str | None, prefix: str) -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, sep, rest = redis_url.partition("://")
    return RedisStorage(f"async+{scheme}{sep}{rest}", implementation="redispy", key_prefix=prefix)


class RateLimiter:
    def __init__(self, *, limits: dict[str, str], redis_url: str | None, prefix: str = "observe") -> None:
        self.items: dict[str, RateLimitItem] = {name: parse(spec) for name, spec in limits.items()}
        self.strategy = SlidingWindowCounterRateLimiter(storage_for(redis_url, prefix))
        self._last_outage_log = 0.0

    async def hit(self, rate_class: int, key: str) -> list[tuple[str, str]]:
        """Counts one call for ``key`` in its class; returns the RateLimit-*
        headers or raises RATE_LIMITED."""
        name = CLASS_NAMES.get(rate_class, "TOKEN")
        item = self.items[name]
        bucket = f"{name}:{key}"
        try:
            allowed = await self.strategy.hit(item, bucket)
            stats = await self.strategy.get_window_stats(item, bucket)
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_outage_log > 60:
                self._last_outage_log = now
                log.error("rate-limit storage unavailable, letting calls through: %s", type(exc).__name__)
            return []
        reset = max(1, int(stats.reset_time - time.time() + 0.999))
        headers = [
            ("ratelimit-limit", str(item.amount)),
            ("ratelimit-remaining", str(max(0, stats.remaining))),
            ("ratelimit-reset", str(reset)),
        ]
        if not allowed:
            raise ObserveError(
                ErrorCode.ERROR_CODE_RATE_LIMITED,
                f"rate limit of {item.amount} per {item.GRANULARITY.name} reached",
                retry_after=reset,
                headers=dict(headers),
            )
        return headers
