"""The tcp check, and the one way every connection-based checker opens a connection.

:func:`open_stream` resolves through the safe-target policy and connects to an address it returned, never
to the name, so the address judged is the address reached.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from core.checks import targets
from core.checks.base import CheckResult, CheckSpec


def add_timing(result: CheckResult, phase: str, since: float) -> float:
    """Adds the milliseconds since ``since`` to ``phase`` (phases add up across redirect hops); returns now."""
    now = perf_counter()
    result.timings[phase] = result.timings.get(phase, 0.0) + (now - since) * 1000
    return now


async def open_stream(
    host: str, port: int, spec: CheckSpec, result: CheckResult
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``host``:``port``, trying the permitted addresses in the resolver's order.

    Records the ``dns`` and ``connect`` timings and ``resolved_ip``. Raises what :func:`targets.resolve`
    raises, or the last address's ``OSError`` when none accepts.
    """
    started = perf_counter()
    addresses = await targets.resolve(host, allow_private=spec.allow_private, timeout=spec.timeout_ms / 1000)
    started = add_timing(result, "dns", started)
    error: OSError | None = None
    for address in addresses:
        result.resolved_ip = address
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            error = exc
            continue
        add_timing(result, "connect", started)
        return reader, writer
    assert error is not None  # resolve() returns at least one address
    raise error


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when a TCP connection to ``spec.host``:``spec.port`` is accepted; the connection is closed at once."""
    if not spec.host or not spec.port:
        raise ValueError("a tcp check needs a host and a port")
    _, writer = await open_stream(spec.host, spec.port, spec, result)
    writer.close()
    result.ok = True
