"""The collector's ``/metrics`` and ``/health``: what each input received, buffered, shipped, retried
and dropped, and the buffer's state, served by a minimal asyncio HTTP/1.0 server.

Per input (label ``input``, the input's tag), counters since the process started:

=============================================  ====================================================
``observe_collector_received_records``         records (syslog messages, Fluent events) received
``observe_collector_buffered_records``         records appended to the on-disk buffer
``observe_collector_buffered_bytes``           bytes of export requests appended to the buffer
``observe_collector_batches``                  export requests appended
``observe_collector_shipped_records``          records the server accepted
``observe_collector_retried``                  export attempts that failed and were tried again
``observe_collector_dropped_records``          records lost, by ``reason``: ``buffer_full`` (the
                                               oldest data made room), ``rejected`` (the server
                                               refused them in a partial success),
                                               ``permanent_error`` (a 4xx or a non-retryable status)
``observe_collector_resent_records``           records shipped again after a restart that the last
                                               process had sent without seeing the answer: the
                                               possible duplicates (at most one request a restart)
``observe_collector_malformed``                malformed frames or connections
``observe_collector_oversized``                oversized frames or messages
=============================================  ====================================================

Totals without a label: requests shipped and failed permanently, the buffer's unshipped bytes and
requests (gauges), its size on disk, segments, corrupt and redelivered requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collector.agent import Agent


@dataclass(slots=True)
class InputCounters:
    """What one input did (module doc)."""

    received: int = 0
    buffered_records: int = 0
    buffered_bytes: int = 0
    batches: int = 0
    shipped_records: int = 0
    retried: int = 0
    rejected_records: int = 0
    failed_records: int = 0
    resent_records: int = 0
    malformed: int = 0
    oversized: int = 0

    def count_retry(self) -> None:
        self.retried += 1


PER_INPUT = {
    "received": ("observe_collector_received_records", "records received by an input"),
    "buffered_records": ("observe_collector_buffered_records", "records an input appended to the buffer"),
    "buffered_bytes": ("observe_collector_buffered_bytes", "bytes of requests an input appended"),
    "batches": ("observe_collector_batches", "requests an input appended to the buffer"),
    "shipped_records": ("observe_collector_shipped_records", "records of an input the server accepted"),
    "retried": ("observe_collector_retried", "export attempts of an input's requests retried"),
    "resent_records": (
        "observe_collector_resent_records",
        "records shipped again after a restart (possible duplicates)",
    ),
    "malformed": ("observe_collector_malformed", "malformed frames or connections"),
    "oversized": ("observe_collector_oversized", "oversized frames or messages"),
}


class AgentMetrics(Collector):
    """The agent's counters, read at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterable[Metric]:
        agent = self.agent
        inputs = agent.input_counters()
        for attribute, (name, documentation) in PER_INPUT.items():
            family = CounterMetricFamily(name, documentation, labels=["input"])
            for tag, counters in inputs.items():
                family.add_metric([tag], getattr(counters, attribute))
            yield family
        stats = agent.buffer.stats() if agent.buffer is not None else None
        dropped = CounterMetricFamily(
            "observe_collector_dropped_records", "records lost, by input and reason", labels=["input", "reason"]
        )
        for tag, counters in inputs.items():
            dropped.add_metric([tag, "buffer_full"], stats.dropped_by.get(tag, 0) if stats else 0)
            dropped.add_metric([tag, "rejected"], counters.rejected_records)
            dropped.add_metric([tag, "permanent_error"], counters.failed_records)
        yield dropped
        shipper = agent.shipper.counters
        yield CounterMetricFamily(
            "observe_collector_shipped_batches", "requests the server accepted", value=shipper.shipped_batches
        )
        yield CounterMetricFamily(
            "observe_collector_failed_permanent",
            "requests dropped on a permanent error",
            value=shipper.failed_permanent,
        )
        if stats is None:
            return
        yield GaugeMetricFamily(
            "observe_collector_buffer_bytes", "unshipped bytes in the buffer", value=stats.buffered_bytes
        )
        yield GaugeMetricFamily(
            "observe_collector_buffer_records", "unshipped requests in the buffer", value=stats.buffered_records
        )
        yield GaugeMetricFamily("observe_collector_buffer_disk_bytes", "buffer size on disk", value=stats.disk_bytes)
        yield GaugeMetricFamily("observe_collector_buffer_segments", "buffer segment files", value=stats.segments)
        for name, value, documentation in (
            ("observe_collector_buffer_dropped_records", stats.dropped_records, "requests dropped: buffer full"),
            ("observe_collector_buffer_dropped_bytes", stats.dropped_bytes, "bytes dropped: buffer full"),
            ("observe_collector_buffer_corrupt_records", stats.corrupt_records, "corrupt buffer records skipped"),
            ("observe_collector_buffer_redelivered", stats.redelivered, "requests read again after a restart"),
        ):
            yield CounterMetricFamily(name, documentation, value=value)


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentMetrics(agent))
    return registry


def http_handler(
    registry: CollectorRegistry, draining: Callable[[], bool]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """``GET /metrics`` (Prometheus text) and ``GET /health`` (200 ``ok``, or ``draining``)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head.decode("latin-1").split(" ", 2)
            path = path.split("?", 1)[0]
            if method != "GET":
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                body = await asyncio.to_thread(generate_latest, registry)
                status, kind = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/health":
                status, kind = "200 OK", "text/plain"
                body = b"draining\n" if draining() else b"ok\n"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ValueError, TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return serve
