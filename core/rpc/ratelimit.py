"""Request-rate limits per CONTRACT.md, from the method's rate-limit class.

Counters use the ``limits`` library's sliding-window counter: in Redis when
``OBSERVE_REDIS_URL`` is set (so every API process shares them), in-process
otherwise. Every limited reply carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset``; a refused one is
``429 RATE_LIMITED`` with ``Retry-After``.

If Redis fails (refuses, resets, or does not answer within
``REDIS_TIMEOUT``), calls are counted in-process instead: limits per process
rather than shared, never no limits, and the API does not go down with the
limiter. The outage is logged once, counted in
``observe_ratelimit_fallback_calls_total``, and shown by ``/health/ready``
(``redis: degraded``); Redis is tried again every ``REDIS_RETRY_SEC`` by one
call at a time, so a mute Redis costs one timeout per retry, not one per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from observe.v1 import options_pb2
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.errors import ErrorCode, ObserveError
from core.rpc.windows import LocalWindows

log = logging.getLogger("observe.ratelimit")

# CONTRACT.md defaults; OBSERVE_RATE_LIMIT_<CLASS> overrides (e.g. "600/minute").
DEFAULTS: dict[str, str] = {
    "TOKEN": "600/minute",
    "AUTH_IP": "10/minute",
    "HEARTBEAT": "60/minute",
    "SUBSCRIBE_IP": "10/hour",
    "PUBLIC_IP": "300/minute",
    "UNLOCK_IP": "10/hour",
}
CLASS_NAMES: dict[int, str] = {
    options_pb2.RATE_LIMIT_CLASS_UNSPECIFIED: "TOKEN",
    options_pb2.RATE_LIMIT_CLASS_AUTH_IP: "AUTH_IP",
    options_pb2.RATE_LIMIT_CLASS_HEARTBEAT: "HEARTBEAT",
    options_pb2.RATE_LIMIT_CLASS_SUBSCRIBE_IP: "SUBSCRIBE_IP",
    options_pb2.RATE_LIMIT_CLASS_PUBLIC_IP: "PUBLIC_IP",
    options_pb2.RATE_LIMIT_CLASS_UNLOCK_IP: "UNLOCK_IP",
}


# Seconds to connect to Redis and for each reply: a shared counter that takes
# longer is not worth the wait, the in-process one answers at once.
REDIS_TIMEOUT = 0.25
# Seconds on in-process counters before Redis is tried again.
REDIS_RETRY_SEC = 2.0


def storage_for(redis_url: str, prefix: str) -> Storage:
    scheme, sep, rest = redis_url.partition("://")
    return RedisStorage(
        f"async+{scheme}{sep}{rest}",
        implementation="redispy",
        key_prefix=prefix,
        socket_connect_timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        # redis-py retries three times with backoff by default: each retry
        # would be another timeout on every call while Redis is mute.
        retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
    )


class RateLimiter:
    def __init__(self, *, limits: dict[str, str], redis_url: str | None, prefix: str = "observe") -> None:
        self.items: dict[str, RateLimitItem] = {name: parse(spec) for name, spec in limits.items()}
        self.local = LocalWindows()  # core.rpc.windows: the same algorithm, in this process
        self.shared = SlidingWindowCounterRateLimiter(storage_for(redis_url, prefix)) if redis_url else None
        self.redis_down = False
        self._retry_at = 0.0
        self.fallback_calls = 0
        self.outages = 0

    @property
    def redis_status(self) -> str:
        """For /health/ready: "unused" (no Redis set), "ok" or "degraded"."""
        if self.shared is None:
            return "unused"
        return "degraded" if self.redis_down else "ok"

    def _strategy(self) -> SlidingWindowCounterRateLimiter | LocalWindows:
        if self.shared is None:
            return self.local
        if self.redis_down:
            now = time.monotonic()
            if now < self._retry_at:
                return self.local
            # This call tries Redis; the others stay local until it answers.
            self._retry_at = now + REDIS_RETRY_SEC
        return self.shared

    async def _count(
        self, strategy: SlidingWindowCounterRateLimiter | LocalWindows, item: RateLimitItem, bucket: str
    ) -> tuple[bool, WindowStats]:
        if isinstance(strategy, LocalWindows):
            allowed, remaining, reset_time = strategy.hit(item, bucket)
            return allowed, WindowStats(reset_time, remaining)
        allowed = await strategy.hit(item, bucket)
        return allowed, await strategy.get_window_stats(item, bucket)

    async def hit(self, rate_class: int, key: str) -> list[tuple[str, str]]:
        """Counts one call for ``key`` in its class; returns the RateLimit-*
        headers or raises RATE_LIMITED."""
        name = CLASS_NAMES.get(rate_class, "TOKEN")
        item = self.items[name]
        bucket = f"{name}:{key}"
        strategy = self._strategy()
        try:
            allowed, stats = await self._count(strategy, item, bucket)
        except Exception as exc:
            if strategy is self.local:
                raise
            self._went_down(exc)
            strategy = self.local
            allowed, stats = await self._count(strategy, item, bucket)
        else:
            if strategy is self.shared and self.redis_down:
                self.redis_down = False
                log.warning("rate-limit storage (Redis) reachable again: limits are shared again")
        if strategy is self.local and self.shared is not None:
            self.fallback_calls += 1
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

    def _went_down(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + REDIS_RETRY_SEC
        if not self.redis_down:
            self.redis_down = True
            self.outages += 1
            log.error(
                "rate-limit storage (Redis) unavailable, counting per process until it answers: %s: %s",
                type(exc).__name__,
                exc,
            )

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: register with ``registry.register(limiter)``."""
        yield CounterMetricFamily(
            "observe_ratelimit_fallback_calls",
            "Calls counted by this process's own rate limiter because Redis was unavailable.",
            value=self.fallback_calls,
        )
        yield CounterMetricFamily(
            "observe_ratelimit_redis_outages", "Times Redis became unavailable to the rate limiter.", value=self.outages
        )
        yield GaugeMetricFamily(
            "observe_ratelimit_redis_up",
            "1 while rate-limit counters are shared through Redis, 0 while counted per process, -1 without Redis.",
            value=-1 if self.shared is None else 0 if self.redis_down else 1,
        )
