"""The real OpenTelemetry SDKs ship logs to a real server, configured the way
docs/logs.md tells users to (the standard ``OTEL_*`` environment variables),
and a search then finds every record with its attributes, severity, resource,
scope and trace context intact.

- Python (``opentelemetry-sdk``): ``logging`` through ``LoggingHandler`` and
  the SDK's own ``Logger.emit``, inside a real span, over OTLP/HTTP protobuf
  (``opentelemetry-exporter-otlp-proto-http``, gzip) and OTLP/gRPC
  (``opentelemetry-exporter-otlp-proto-grpc``, gzip).
- Python with no code at all: ``opentelemetry-instrument`` (``opentelemetry-distro``)
  picks the exporter by ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` (``grpc`` and
  ``http/protobuf``) and hands ``logging`` to it.
- Node (``@opentelemetry/sdk-logs`` with ``@opentelemetry/exporter-logs-otlp-http``,
  OTLP/HTTP JSON): ``tests/otel-js/ship-logs.mjs``, installed by
  ``npm ci --prefix tests/otel-js`` (.ci/run does it); skipped, saying why,
  without node or those modules.

The exporters are flushed and shut down explicitly, so no test waits for a
batch timer. Behaviour under test is the wire format, the same on every
store: the session server on SQLite only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.conftest import ROOT, SQLITE_ONLY, Persona, Server

OTEL_JS = ROOT / "tests" / "otel-js"
BIN = Path(sys.executable).parent  # opentelemetry-instrument, from opentelemetry-distro
OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OTEL_* setting of the environment running the suite leaks into a test."""
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def search(persona: Persona, q: str, limit: int = 100) -> list[dict[str, Any]]:
    with persona.client() as c:
        r = c.get("/api/v1/logs/search", params={"q": q, "limit": limit})
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


def ship_with_python_sdk(exporter: LogRecordExporter, service: str, *, batch: bool) -> tuple[str, str]:
    """Two records in one span: ``logging.error`` through ``LoggingHandler``
    and ``Logger.emit`` at WARN. Returns the span's (trace id, span id) in hex."""
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    processor = BatchLogRecordProcessor(exporter) if batch else SimpleLogRecordProcessor(exporter)
    provider.add_log_record_processor(processor)
    with warnings.catch_warnings():
        # opentelemetry-sdk 1.4x deprecates its LoggingHandler (for opentelemetry-instrumentation-logging's).
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    app_log = logging.getLogger(f"shop.{service}")
    app_log.propagate = False
    app_log.setLevel(logging.DEBUG)
    app_log.addHandler(handler)
    tracer = TracerProvider().get_tracer("shop")
    try:
        with tracer.start_as_current_span("charge") as span:
            app_log.error(
                "payment failed for order %s",
                1234,
                extra={"order.id": 1234, "http.status_code": 502, "retry": True, "user.tier": "gold"},
            )
            provider.get_logger("shop.worker", "1.2.3").emit(
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body="slow charge",
                attributes={"latency.ms": 812.5, "tags": ["a", "b"]},
            )
            ids = span.get_span_context()
        assert provider.force_flush(10_000)
    finally:
        app_log.removeHandler(handler)
        provider.shutdown()
    return format(ids.trace_id, "032x"), format(ids.span_id, "016x")


def check_shipped(persona: Persona, service: str, trace_id: str, span_id: str) -> None:
    """The two records of ``ship_with_python_sdk`` as a search shows them."""
    records = search(persona, f"service:{service}")
    assert [r["message"] for r in records] == ["slow charge", "payment failed for order 1234"], records
    warn, error = records  # newest first
    assert error["level"] == "error"
    assert error["severityNumber"] == 17
    assert error["severityText"] == "ERROR"
    assert error["traceId"] == trace_id
    assert error["spanId"] == span_id
    assert error["service"] == service
    assert error["resource"]["service.name"] == service
    assert error["resource"]["telemetry.sdk.language"] == "python"
    assert error["scopeName"] == f"shop.{service}"
    attributes = error["attributes"]
    assert attributes["order.id"] == 1234
    assert attributes["http.status_code"] == 502
    assert attributes["retry"] is True
    assert attributes["user.tier"] == "gold"
    assert attributes["code.function.name"] == "ship_with_python_sdk"
    assert warn["level"] == "warn"
    assert warn["severityNumber"] == 13
    assert warn["severityText"] == "WARN"
    assert (warn["traceId"], warn["spanId"]) == (trace_id, span_id)
    assert (warn["scopeName"], warn["scopeVersion"]) == ("shop.worker", "1.2.3")
    assert warn["attributes"] == {"latency.ms": 812.5, "tags": ["a", "b"]}
    # The query language over what the SDK sent: ids, levels, attributes by their text.
    q = f"traceId:{trace_id} spanId:{span_id} level>=error attr.order.id:1234 attr.retry:true payment"
    assert [r["message"] for r in search(persona, q)] == ["payment failed for order 1234"]
    assert [r["message"] for r in search(persona, f"service:{service} attr.latency.ms:812.5")] == ["slow charge"]


@SQLITE_ONLY
def test_the_python_sdk_ships_logs_over_otlp_http_and_grpc(
    server: Server, owner: Persona, otel_env: pytest.MonkeyPatch
) -> None:
    token = owner.mint(name="otel python", scopes=["logs:write"])["token"]
    # The header as the OTel spec writes it in the environment: URL-encoded (a space is %20).
    otel_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{token}")
    otel_env.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")

    # OTLP/HTTP protobuf: the base endpoint, to which the exporter adds /v1/logs.
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"{server.base_url}/api/v1/otlp")
    http_service = f"http-{uuid.uuid4().hex[:8]}"
    http_ids = ship_with_python_sdk(HttpLogExporter(), http_service, batch=True)

    # OTLP/gRPC: the gRPC port; http:// means no TLS.
    otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"http://{server.grpc_target}")
    grpc_service = f"grpc-{uuid.uuid4().hex[:8]}"
    grpc_ids = ship_with_python_sdk(GrpcLogExporter(), grpc_service, batch=False)

    check_shipped(owner, http_service, *http_ids)
    check_shipped(owner, grpc_service, *grpc_ids)
    assert http_ids[0] != grpc_ids[0]


# A program that knows nothing of OTLP: `opentelemetry-instrument` sets the SDK up from OTEL_* alone.
ZERO_CODE_APP = """
import logging
from opentelemetry import trace
with trace.get_tracer("billing").start_as_current_span("nightly invoice run") as span:
    logging.getLogger("billing.jobs").warning("invoice run slow: %d invoices", 420, extra={"invoices": 420})
    ids = span.get_span_context()
    print(format(ids.trace_id, "032x"), format(ids.span_id, "016x"))
"""


@SQLITE_ONLY
def test_opentelemetry_instrument_ships_logs_by_protocol_from_the_environment(
    server: Server, owner: Persona, tmp_path: Path
) -> None:
    token = owner.mint(name="otel zero-code", scopes=["logs:write"])["token"]
    (tmp_path / "app.py").write_text(ZERO_CODE_APP)
    endpoints = {"grpc": f"http://{server.grpc_target}", "http/protobuf": f"{server.base_url}/api/v1/otlp/v1/logs"}
    runs = {}
    for protocol, endpoint in endpoints.items():
        env = {
            "PATH": os.environ["PATH"],
            "OTEL_SERVICE_NAME": f"billing-{protocol.replace('/', '-')}-{uuid.uuid4().hex[:6]}",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{token}",
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        }
        command = [str(BIN / "opentelemetry-instrument"), sys.executable, str(tmp_path / "app.py")]
        runs[protocol] = (env["OTEL_SERVICE_NAME"], subprocess.Popen(command, env=env, stdout=PIPE, stderr=PIPE))
    for protocol, (service, process) in runs.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, (protocol, err)
        assert err == b"", (protocol, err)
        trace_id, span_id = out.decode().split()
        [record] = search(owner, f"service:{service}")
        assert record["message"] == "invoice run slow: 420 invoices", protocol
        assert (record["level"], record["severityNumber"], record["severityText"]) == ("warn", 13, "WARN")
        assert (record["traceId"], record["spanId"]) == (trace_id, span_id)
        assert record["attributes"]["invoices"] == 420
        assert record["scopeName"] == "billing.jobs"


def node_modules_missing() -> str:
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("sdk-logs", "api-logs", "exporter-logs-otlp-http", "resources", "api"):
        if not (OTEL_JS / "node_modules" / "@opentelemetry" / package / "package.json").is_file():
            return f"@opentelemetry/{package} is not installed: npm ci --prefix tests/otel-js"
    return ""


@SQLITE_ONLY
def test_the_js_sdk_ships_logs_over_otlp_http_json(server: Server, owner: Persona) -> None:
    missing = node_modules_missing()
    if missing:
        pytest.skip(missing)
    token = owner.mint(name="otel js", scopes=["logs:write"])["token"]
    service = f"js-{uuid.uuid4().hex[:8]}"
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{server.base_url}/api/v1/otlp/v1/logs",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{token}",
        "SERVICE": service,
        "TRACE_ID": trace_id,
        "SPAN_ID": span_id,
    }
    done = subprocess.run(["node", "ship-logs.mjs"], cwd=OTEL_JS, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flushed", done.stdout
    assert done.stderr == "", done.stderr  # diag warnings: a failed export says so here

    records = search(owner, f"service:{service}")
    assert [r["message"] for r in records] == ["charge attempt finished", "card declined for order 77"], records
    info, error = records
    assert (error["level"], error["severityNumber"], error["severityText"]) == ("error", 17, "ERROR")
    assert (info["level"], info["severityNumber"], info["severityText"]) == ("info", 10, "INFO")
    for record in records:
        assert (record["traceId"], record["spanId"]) == (trace_id, span_id)
        assert (record["scopeName"], record["scopeVersion"]) == ("checkout-js", "2.0.1")
        assert record["resource"]["service.name"] == service
        assert record["resource"] == {"service.name": service, "deployment.environment": "test"}
    assert error["attributes"] == {
        "order.id": 77,
        "http.status_code": 402,
        "retry": False,
        "user.tier": "gold",
        "tags": ["a", "b"],
    }
    assert info["attributes"] == {"latency.ms": 812.5}
    found = search(owner, f'traceId:{trace_id} level:error attr.order.id:77 attr.retry:false "card declined"')
    assert [r["message"] for r in found] == ["card declined for order 77"]
