"""The collector agent as its own process (``python -m collector``) in front of the real server.

Real senders — Python's ``SysLogHandler`` over UDP and TCP and ``fluent-logger`` over the forward
protocol — reach the agent; their records must become searchable on the server with the syslog
hostname/app-name as ``host.name``/``service.name``; ``/metrics`` counts them; ``/health`` answers;
SIGTERM drains and exits 0. A bad configuration exits 2 naming every bad key and the file.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from fluent.sender import FluentSender  # type: ignore[import-untyped]

from tests.conftest import ROOT, SQLITE_ONLY, Persona, Server, free_port, register

AGENT_START_SEC = 15.0
ARRIVAL_SEC = 20.0


def write_config(path: Path, server: Server, token: str, ports: dict[str, int]) -> None:
    path.write_text(
        f"""
[server]
endpoint = "{server.base_url}/api/v1/otlp"
token = "{token}"
timeout_sec = 5

[buffer]
dir = "{path.parent / "buffer"}"
max_bytes = 16777216

[batch]
max_records = 50
max_bytes = 65536
max_delay_ms = 100

[metrics]
listen = "127.0.0.1:{ports["metrics"]}"

[[inputs]]
type = "syslog"
listen = "udp://127.0.0.1:{ports["udp"]}"
tag = "syslog-udp"

[[inputs]]
type = "syslog"
listen = "tcp://127.0.0.1:{ports["tcp"]}"
tag = "syslog-tcp"

[[inputs]]
type = "forward"
listen = "tcp://127.0.0.1:{ports["forward"]}"
tag = "fluent"
"""
    )


def wait_healthy(process: subprocess.Popen[bytes], metrics: str) -> None:
    deadline = time.monotonic() + AGENT_START_SEC
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if httpx.get(metrics + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the collector did not become healthy")


def search(persona: Persona, q: str) -> list[dict[str, object]]:
    with persona.client() as c:
        r = c.get("/api/v1/logs/search", params={"q": q})
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


def wait_for_records(persona: Persona, q: str, count: int, within: float = ARRIVAL_SEC) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        records = search(persona, q)
        if len(records) >= count:
            return records
        time.sleep(0.1)
    raise AssertionError(f"{q}: {len(records)} of {count} records arrived: {records}")


def metric(text: str, name: str, input_tag: str | None = None) -> float:
    label = f'{{input="{input_tag}"}}' if input_tag else ""
    for line in text.splitlines():
        if line.startswith(f"{name}_total{label} ") or line.startswith(f"{name}{label} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{label} not in /metrics")


def syslog_logger(name: str, address: tuple[str, int], socktype: socket.SocketKind, fmt: str) -> logging.Logger:
    handler = logging.handlers.SysLogHandler(address=address, socktype=socktype)
    handler.setFormatter(logging.Formatter(fmt))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


@SQLITE_ONLY
def test_real_senders_arrive_searchable_metrics_count_them_and_sigterm_drains(server: Server, tmp_path: Path) -> None:
    owner = register(server)
    token = owner.mint(name="collector", scopes=["logs:write", "logs:read"])["token"]
    ports = {name: free_port() for name in ("udp", "tcp", "forward", "metrics")}
    config = tmp_path / "collector.toml"
    write_config(config, server, token, ports)
    run = uuid.uuid4().hex[:10]
    metrics_url = f"http://127.0.0.1:{ports['metrics']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_healthy(process, metrics_url)
        # RFC 5424 over UDP, written by the formatter after SysLogHandler's <PRI>.
        udp = syslog_logger(
            f"udp-{run}",
            ("127.0.0.1", ports["udp"]),
            socket.SOCK_DGRAM,
            f"1 - web-{run} udpapp-{run} 7 - - %(message)s",
        )
        # The headerless "<PRI>ident: msg" form over TCP (NUL-terminated frames).
        tcp = syslog_logger(f"tcp-{run}", ("127.0.0.1", ports["tcp"]), socket.SOCK_STREAM, "%(message)s")
        tcp.handlers[0].ident = f"tcpapp-{run}: "  # type: ignore[attr-defined]
        for i in range(5):
            udp.warning("udp%s line %d", run, i)
            tcp.error("tcp%s line %d", run, i)
        sender = FluentSender("app", host="127.0.0.1", port=ports["forward"])
        for i in range(3):
            assert sender.emit("web", {"message": f"fluent{run} line {i}", "level": "info", "user": "ada"})
        sender.close()
        for logger in (udp, tcp):
            for handler in logger.handlers:
                handler.close()

        udp_records = wait_for_records(owner, f"udp{run}", 5)
        tcp_records = wait_for_records(owner, f"tcp{run}", 5)
        fluent_records = wait_for_records(owner, f"fluent{run}", 3)
        assert sorted(str(r["message"]) for r in udp_records) == [f"udp{run} line {i}" for i in range(5)]
        first = udp_records[0]
        assert first["level"] == "warn", first
        assert first["resource"] == {"host.name": f"web-{run}", "service.name": f"udpapp-{run}"}
        assert first["attributes"]["observe.source"] == "syslog-udp"  # type: ignore[index]
        assert sorted(str(r["message"]) for r in tcp_records) == [f"tcp{run} line {i}" for i in range(5)]
        assert tcp_records[0]["level"] == "error"
        assert tcp_records[0]["resource"]["service.name"] == f"tcpapp-{run}"  # type: ignore[index]
        assert tcp_records[0]["attributes"]["observe.source"] == "syslog-tcp"  # type: ignore[index]
        assert sorted(str(r["message"]) for r in fluent_records) == [f"fluent{run} line {i}" for i in range(3)]
        assert fluent_records[0]["level"] == "info"
        assert fluent_records[0]["attributes"]["fluent.tag"] == "app.web"  # type: ignore[index]
        assert fluent_records[0]["attributes"]["user"] == "ada"  # type: ignore[index]

        text = httpx.get(metrics_url + "/metrics", timeout=5).text
        assert metric(text, "observe_collector_received_records", "syslog-udp") == 5
        assert metric(text, "observe_collector_received_records", "syslog-tcp") == 5
        assert metric(text, "observe_collector_received_records", "fluent") == 3
        assert metric(text, "observe_collector_buffered_records", "fluent") == 3
        for tag, count in (("syslog-udp", 5), ("syslog-tcp", 5), ("fluent", 3)):
            assert metric(text, "observe_collector_shipped_records", tag) == count
            assert metric(text, "observe_collector_resent_records", tag) == 0
            for reason in ("buffer_full", "rejected", "permanent_error"):
                assert metric(text, "observe_collector_dropped_records", f'{tag}",reason="{reason}') == 0
        assert metric(text, "observe_collector_failed_permanent") == 0
        assert metric(text, "observe_collector_buffer_records") == 0
        assert httpx.get(metrics_url + "/nothing", timeout=5).status_code == 404

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        output = process.stderr.read().decode()  # type: ignore[union-attr]
        assert "collector stopped; 0 requests left" in output
        assert token not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_a_bad_configuration_names_every_problem_and_the_file_and_exits_2(tmp_path: Path) -> None:
    """Both ways in: ``python -m collector`` and ``observe collector`` (gateway/cli.py)."""
    config = tmp_path / "collector.toml"
    config.write_text('[server]\nendpoint = "ftp://x"\ntoken = "nope"\n[[inputs]]\ntype = "syslog"\nlisten = "x"\n')
    commands = [["-m", "collector"], ["-m", "gateway.cli", "collector"]]
    runs = [
        subprocess.Popen([sys.executable, *command, "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE)
        for command in commands
    ]
    for done in runs:
        _, stderr = done.communicate(timeout=30)
        assert done.returncode == 2
        lines = stderr.decode().splitlines()
        assert [line.split(": ")[1] for line in lines] == ["server.endpoint", "server.token", "inputs[0].listen"]
        assert all(line.startswith(f"{config}: ") for line in lines)
        assert "nope" not in stderr.decode()
