"""What ``/health/ready`` checks: can this process serve the API now?

- ``database``: a ``SELECT 1`` answers (``down`` fails readiness).
- ``disk``: on SQLite, a small file can be written next to the database
  (``full`` or ``unwritable`` fails readiness: every write would fail). A write probe, not a
  free-space threshold, because what matters is whether the filesystem still
  takes a write for this user, whatever its size and reserve.
- ``redis``: ``ok``, ``unused`` (no ``OBSERVE_REDIS_URL``) or ``degraded``
  (rate limits counted per process until Redis answers). Degraded does not
  fail readiness: every instance loses Redis at once, and taking them all
  out of the load balancer would turn weaker limits into an outage.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from core.rpc.ratelimit import RateLimiter
from core.storage.db import Database

PROBE_BYTES = 4096
PING_TIMEOUT = 2.0
FAILING = frozenset({"down", "full", "unwritable"})


class NotReadyError(Exception):
    """Readiness failed; ``checks`` says which check, for the reply."""

    def __init__(self, checks: dict[str, str]) -> None:
        self.checks = checks
        super().__init__(", ".join(f"{name} {state}" for name, state in checks.items() if state in FAILING))


def _write_probe(directory: Path) -> None:
    path = directory / f".ready-probe-{os.getpid()}"
    try:
        with path.open("wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    finally:
        path.unlink(missing_ok=True)


class Readiness:
    """``await readiness()`` → the checks, or raises :class:`NotReadyError`."""

    def __init__(self, *, db: Database, rate_limiter: RateLimiter) -> None:
        self.db = db
        self.rate_limiter = rate_limiter
        self.data_dir = Path(db.sqlite_path).parent if db.sqlite_path else None

    async def __call__(self) -> dict[str, str]:
        checks = {"database": "ok"}
        try:
            await asyncio.wait_for(self.db.ping(), PING_TIMEOUT)
        except Exception:
            checks["database"] = "down"
        if self.data_dir is not None:
            try:
                await asyncio.to_thread(_write_probe, self.data_dir)
                checks["disk"] = "ok"
            except OSError as exc:
                checks["disk"] = "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "unwritable"
        checks["redis"] = self.rate_limiter.redis_status
        if FAILING.intersection(checks.values()):
            raise NotReadyError(checks)
        return checks
