"""/health/live, /health/ready, /metrics."""

from __future__ import annotations

import grpc
from observe.v1 import accounts_pb2, accounts_pb2_grpc

from tests.conftest import Persona, Server


def test_liveness_and_readiness(server: Server) -> None:
    with server.client() as c:
        assert c.get("/health/live").json() == {"status": "ok"}
        ready = c.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_metrics_count_requests_by_route_and_code(owner: Persona) -> None:
    with owner.client() as c:
        c.get("/api/v1/me")
        c.delete("/api/v1/me/tokens/999999")
        text = c.get("/metrics").text
    assert 'observe_http_requests_total{code="200",method="GET",route="/api/v1/me"}' in text
    assert 'observe_http_requests_total{code="404",method="DELETE",route="/api/v1/me/tokens/{id}"}' in text
    assert 'observe_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/me"}' in text


def test_metrics_count_grpc_calls(owner: Persona) -> None:
    with grpc.insecure_channel(owner.server.grpc_target) as ch:  # type: ignore[attr-defined]
        accounts_pb2_grpc.MeServiceStub(ch).GetMe(
            accounts_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {owner.pat}")]
        )
    with owner.client() as c:
        text = c.get("/metrics").text
    assert 'observe_grpc_requests_total{code="OK",method="/observe.v1.MeService/GetMe"}' in text


def test_unknown_paths_do_not_explode_metric_labels(server: Server) -> None:
    with server.client() as c:
        c.get("/api/v1/random-a1")
        c.get("/api/v1/random-b2")
        text = c.get("/metrics").text
    assert "random-a1" not in text
    assert 'route="unmatched"' in text
