"""docs/logs.md at /docs/logs, and its Vector and Fluent Bit configs replayed
against a real server.

Neither Vector nor Fluent Bit can be installed where this project is built
(no Debian package; not on PyPI or npm), so these tests read the configs from
the page and make the requests those tools make from them, as their sources
build them (Vector ``src/sinks/http/config.rs``; Fluent Bit
``plugins/out_http``, ``plugins/out_opentelemetry``, ``src/flb_pack.c``):

- Vector ``http`` sink, ``encoding.codec = "json"`` + ``framing.method =
  "newline_delimited"``: each event as a JSON object and a newline,
  ``Content-Type: application/x-ndjson``, gzip for ``compression = "gzip"``,
  ``Authorization: Bearer`` for ``auth.strategy = "bearer"``. The events are
  shaped by the page's remap program, run by Vector's own VRL compiler
  (``pyvrl``), so a program Vector would refuse fails here.
- Fluent Bit ``http`` output, ``Format json_lines``: the date key first, then
  the record's keys, one object a line, ``application/x-ndjson``;
  ``Json_date_format iso8601`` writes ``%Y-%m-%dT%H:%M:%S.<6 digits>Z``. The
  records go through the page's ``modify`` and ``record_modifier`` filters as
  configured (only the directives the page uses are interpreted).
- Fluent Bit ``opentelemetry`` output: an ``ExportLogsServiceRequest`` in
  protobuf, the ``Logs_body_key`` value as the body and, with
  ``Logs_body_key_attributes``, the record's other keys as attributes; no
  resource attributes, no severity.

The wire format is the same on every store: the session server on SQLite.
"""

from __future__ import annotations

import gzip
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from tests.conftest import ROOT, SQLITE_ONLY, Persona, Server

PAGE = ROOT / "docs" / "logs.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def code_blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text()) if lang == language]


def search(persona: Persona, q: str) -> list[dict[str, Any]]:
    with persona.client() as c:
        r = c.get("/api/v1/logs/search", params={"q": q})
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


# ---------------------------------------------------------------- the page


@SQLITE_ONLY
def test_the_logs_page_is_served_with_the_anchors_the_api_page_links(server: Server) -> None:
    with server.client() as c:
        r = c.get("/docs/logs")
    assert r.status_code == 200, r.text
    text = r.text
    assert "<title>Logs: ingest, search and live tail · observe</title>" in text
    # The API page links /docs/logs#opentelemetry-otlphttp.
    for anchor in ("opentelemetry-otlphttp", "opentelemetry-otlpgrpc", "the-query-language", "vector", "fluent-bit"):
        assert f'id="{anchor}"' in text, anchor
    assert '<a href="log-alerts">' in text
    assert "<script" not in text.lower()
    assert "[sinks.observe]" in text
    assert "Logs_uri                  /api/v1/otlp/v1/logs" in text


# ---------------------------------------------------------------- Vector


def vector_config() -> dict[str, Any]:
    [block] = [b for b in code_blocks("toml") if "[sinks.observe]" in b]
    return tomllib.loads(block)


def vector_time(moment: datetime) -> str:
    """A timestamp as Vector's JSON encoder writes it (RFC 3339, nanoseconds, Z)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}123Z"


@SQLITE_ONLY
def test_the_vector_config_sends_what_our_json_api_accepts(server: Server, owner: Persona) -> None:
    pyvrl = pytest.importorskip("pyvrl", reason="pyvrl (Vector's VRL compiler) is in the dev extras")
    config = vector_config()
    sink = config["sinks"]["observe"]
    assert sink["type"] == "http"
    assert sink.get("method", "post") == "post"
    assert sink["encoding"]["codec"] == "json"
    assert sink["framing"]["method"] == "newline_delimited"
    assert sink["compression"] == "gzip"
    assert sink["auth"] == {"strategy": "bearer", "token": "${OBSERVE_TOKEN}"}
    assert urlsplit(sink["uri"]).path == "/api/v1/logs"
    shape = config["transforms"][sink["inputs"][0]]
    assert shape["type"] == "remap"
    assert shape["inputs"] == [next(iter(config["sources"]))]
    remap = pyvrl.Transform(shape["source"])

    now = datetime.now(UTC)
    host = f"web-{uuid.uuid4().hex[:6]}"
    # What Vector's file source makes of a line (+ a level where a parser found one).
    events: list[dict[str, Any]] = [
        {"message": "GET /cart 500", "level": "WARNING", "timestamp": vector_time(now - timedelta(seconds=3))},
        {"message": "checkout started", "timestamp": vector_time(now - timedelta(seconds=2))},
        {"message": "out of memory", "level": "critical", "timestamp": vector_time(now - timedelta(seconds=1))},
        {"message": "", "level": "info", "timestamp": vector_time(now)},  # the server rejects an empty message
    ]
    for event in events:
        event.update(host=host, file="/var/log/shop/web.log", source_type="file")
    records = [remap.remap(event) for event in events]
    assert all(set(record) <= {"timestamp", "level", "message", "service", "attributes"} for record in records)

    token = owner.mint(name="vector", scopes=["logs:write"])["token"]
    body = b"".join(orjson.dumps(record) + b"\n" for record in records)  # newline_delimited framing
    headers = {
        "content-type": "application/x-ndjson",  # Vector's type for json + newline_delimited
        "content-encoding": "gzip",
        "authorization": f"Bearer {sink['auth']['token'].replace('${OBSERVE_TOKEN}', token)}",
        "user-agent": "Vector/0.50.0",
    }
    with server.client() as c:
        r = c.post(urlsplit(sink["uri"]).path, content=gzip.compress(body), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 3
    assert r.json()["rejections"] == [
        {"index": 3, "path": "message", "code": "too_small", "message": "Must not be empty"}
    ]

    found = search(owner, f"service:shop-web attr.host:{host}")
    assert [(x["message"], x["level"]) for x in found] == [
        ("out of memory", "fatal"),
        ("checkout started", "info"),
        ("GET /cart 500", "warn"),
    ]
    assert found[2]["attributes"] == {"host": host, "file": "/var/log/shop/web.log"}
    assert found[2]["timestamp"] == (now - timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------- Fluent Bit


@dataclass
class Section:
    name: str
    entries: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str:
        [value] = self.all(key)
        return value

    def all(self, key: str) -> list[str]:
        return [value for k, value in self.entries if k.lower() == key.lower()]


def fluent_bit_configs() -> list[list[Section]]:
    """The page's Fluent Bit configs (classic format) as their sections."""
    configs = []
    for block in code_blocks("ini"):
        sections: list[Section] = []
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                sections.append(Section(line.strip("[]")))
            else:
                key, value = line.split(None, 1)
                sections[-1].entries.append((key, value.strip()))
        configs.append(sections)
    return configs


def fluent_bit_output(name: str) -> tuple[list[Section], Section]:
    for sections in fluent_bit_configs():
        outputs = [s for s in sections if s.name == "OUTPUT" and s.get("Name") == name]
        if outputs:
            return sections, outputs[0]
    raise AssertionError(f"no Fluent Bit {name} output on the page")


def fluent_bit_headers(output: Section, token: str) -> dict[str, str]:
    """``Header Name Value`` lines, ``${OBSERVE_TOKEN}`` filled in (Fluent Bit expands environment variables)."""
    headers = {}
    for line in output.all("Header"):
        name, value = line.split(None, 1)
        headers[name.lower()] = value.replace("${OBSERVE_TOKEN}", token)
    return headers


def apply_filters(sections: list[Section], record: dict[str, Any]) -> dict[str, Any]:
    """The config's ``modify`` and ``record_modifier`` filters, in order, as Fluent Bit applies them."""
    for section in sections:
        if section.name != "FILTER":
            continue
        kind = section.get("Name")
        if kind == "modify":
            for key, value in section.entries:
                if key.lower() == "rename":
                    old, new = value.split()
                    record = {new if k == old else k: v for k, v in record.items()}
                elif key.lower() == "add":
                    name, text = value.split(None, 1)
                    record.setdefault(name, text)
                elif key.lower() not in ("name", "match"):
                    raise AssertionError(f"modify {key}: not replayed here")
        elif kind == "record_modifier":
            keep = section.all("Allowlist_key")
            if keep:
                record = {k: v for k, v in record.items() if k in keep}
            for line in section.all("Record"):  # appended after the kept keys
                name, text = line.split(None, 1)
                record[name] = text
            unknown = {k.lower() for k, _ in section.entries} - {"name", "match", "allowlist_key", "record"}
            assert not unknown, f"record_modifier {unknown}: not replayed here"
        else:
            raise AssertionError(f"filter {kind}: not replayed here")
    return record


@SQLITE_ONLY
def test_the_fluent_bit_http_output_sends_what_our_json_api_accepts(server: Server, owner: Persona) -> None:
    sections, output = fluent_bit_output("http")
    assert output.get("Uri") == "/api/v1/logs"
    assert output.get("Format") == "json_lines"  # out_http: Content-Type application/x-ndjson
    assert output.get("Json_date_format") == "iso8601"
    assert output.get("Compress") == "gzip"
    [source] = [s for s in sections if s.name == "INPUT"]
    assert source.get("Name") == "tail"  # records are {"log": "<the line>"}
    date_key = output.get("Json_date_key")

    token = owner.mint(name="fluent-bit http", scopes=["logs:write"])["token"]
    marker = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    lines = []
    for n, text in enumerate([f"GET /cart 200 {marker}", f"GET /pay 502 {marker}"]):
        when = now - timedelta(seconds=2 - n)
        # flb_pack: "%Y-%m-%dT%H:%M:%S" + ".%06luZ", the date key before the record's keys
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond:06d}Z"
        lines.append(orjson.dumps({date_key: stamp, **apply_filters(sections, {"log": text})}))
    headers = {
        "content-type": "application/x-ndjson",
        "content-encoding": "gzip",
        "user-agent": "Fluent-Bit",
        **fluent_bit_headers(output, token),
    }
    with server.client() as c:
        r = c.post(output.get("Uri"), content=gzip.compress(b"\n".join(lines) + b"\n"), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "rejected": 0, "rejections": []}

    found = search(owner, marker)
    assert [x["message"] for x in found] == [f"GET /pay 502 {marker}", f"GET /cart 200 {marker}"]
    assert {(x["service"], x["level"]) for x in found} == {("shop-web", "info")}
    newest = now - timedelta(seconds=1)
    assert found[0]["timestamp"] == newest.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@SQLITE_ONLY
def test_the_fluent_bit_opentelemetry_output_sends_what_our_otlp_route_accepts(server: Server, owner: Persona) -> None:
    _sections, output = fluent_bit_output("opentelemetry")
    uri = output.get("Logs_uri")
    assert uri == "/api/v1/otlp/v1/logs"
    assert output.get("Compress") == "gzip"
    assert output.get("Logs_body_key_attributes") == "true"
    body_keys = [key.removeprefix("$") for key in output.all("Logs_body_key")]
    assert body_keys[0] == "log"  # what the tail input names the line

    token = owner.mint(name="fluent-bit otel", scopes=["logs:write"])["token"]
    pod = f"web-{uuid.uuid4().hex[:6]}"
    record = {"log": "GET /pay 502 upstream timeout", "pod": pod, "stream": "stdout"}  # a parser added two keys
    body_key = next(key for key in body_keys if key in record)
    when = datetime.now(UTC)
    log_record = logs_pb2.LogRecord(
        time_unix_nano=int(when.timestamp()) * 10**9 + when.microsecond * 1000,
        body=common_pb2.AnyValue(string_value=record[body_key]),
        attributes=[
            common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))
            for key, value in record.items()
            if key != body_key
        ],
    )
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[log_record])])]
    )
    headers = {
        "content-type": "application/x-protobuf",
        "content-encoding": "gzip",
        "user-agent": "Fluent-Bit",
        **fluent_bit_headers(output, token),
    }
    with server.client() as c:
        r = c.post(uri, content=gzip.compress(request.SerializeToString()), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    reply = logs_service_pb2.ExportLogsServiceResponse.FromString(r.content)
    assert not reply.HasField("partial_success")

    [found] = search(owner, f'attr.pod:{pod} attr.stream:stdout "upstream timeout"')
    assert found["message"] == "GET /pay 502 upstream timeout"
    assert found["attributes"] == {"pod": pod, "stream": "stdout"}
    assert (found["level"], found["severityNumber"], found["service"]) == ("", 0, None)
    assert found["resource"] == {}
