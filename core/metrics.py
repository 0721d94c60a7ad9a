"""Prometheus metrics of the API itself (HTTP and gRPC), one registry per app.

What /metrics shows depends on who asks (CONTRACT.md, input hygiene):
process and API series for anyone who can reach it; series that name an
org's monitors (``observe_monitor_*``) only to a scraper holding
``OBSERVE_METRICS_TOKEN``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.http_requests = Counter(
            "observe_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "observe_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "observe_grpc_requests_total",
            "gRPC calls by full method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "observe_grpc_request_duration_seconds",
            "gRPC call latency by full method.",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Exposition text appended to the registry's at /metrics (the
        # scheduler's); called with whether per-monitor series may be shown.
        self.extra: list[Callable[[bool], bytes]] = []
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._grpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe_http(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(route, method, str(code)),
                self.http_latency.labels(route, method),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._grpc_children.get(key)
        if children is None:
            children = (self.grpc_requests.labels(method, code), self.grpc_latency.labels(method))
            self._grpc_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, *, monitors: bool = False) -> bytes:
        """The exposition text; with ``monitors``, the per-monitor series too."""
        return generate_latest(self.registry) + b"".join(render(monitors) for render in self.extra)
