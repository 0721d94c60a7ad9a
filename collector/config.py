"""The collector's configuration: a TOML file, overridden by the environment.

``load(path)`` reads the file of CONTRACT.md "Collector configuration" with the
stdlib ``tomllib``, applies ``OBSERVE_COLLECTOR_<SECTION>_<KEY>`` variables
(``OBSERVE_COLLECTOR_INPUTS_<N>_<KEY>`` for the N-th ``[[inputs]]``, 0-based),
then validates the result into frozen dataclasses. Decisions:

- Every problem is collected and reported at once in one ``ConfigError``, each
  line naming its key as a path (``inputs[1].listen: …``); a value that came
  from the environment also names its variable.
- Unknown sections, keys and variables are errors: a typo must not silently
  fall back to a default. An option of another input type counts as unknown.
- Environment values are typed like the key they replace (ints and numbers
  parsed); an override of ``inputs[N]`` past the file's inputs adds inputs, so
  a container can be configured from the environment alone.
- Secrets (``server.token``, ``shared_key``) are left out of ``repr()`` and
  never echoed in an error; nor is the endpoint, which could carry credentials.
- Relative paths (``buffer.dir``, ``cert_file``, ``key_file``) are relative to
  the working directory; the TLS files must exist when the config is loaded, so
  a bad path fails at start, not on the first handshake.

The collector is its own process and never imports ``core``: the PAT format is
repeated here from ``core/tokens/secrets.py``.
"""

from __future__ import annotations

import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

ENV_PREFIX = "OBSERVE_COLLECTOR_"
PAT_RE = re.compile(r"obs_[A-Za-z0-9_-]{43}")

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
# RFC 5424 §6.1: a receiver must accept messages of 480 octets.
SYSLOG_MIN_FRAME_BYTES = 480
MAX_CONCURRENCY = 64
# Beyond this many inputs an INPUTS_<N> override is taken for a typo.
MAX_INPUTS = 100


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Where records are shipped: OTLP/HTTP (``http(s)://`` base URL) or OTLP/gRPC (``grpc(s)://host:port``)."""

    endpoint: str
    token: str = field(repr=False)
    timeout_sec: float = 10.0
    compression: Literal["gzip", "none"] = "gzip"
    concurrency: int = 4  # export requests in flight; at most this many are resent after a crash

    @property
    def transport(self) -> Literal["http", "grpc"]:
        return "grpc" if self.endpoint.startswith(("grpc://", "grpcs://")) else "http"

    @property
    def secure(self) -> bool:
        """TLS towards the server: ``https://`` or ``grpcs://``."""
        return self.endpoint.startswith(("https://", "grpcs://"))

    @property
    def grpc_target(self) -> str:
        """``host:port`` for a gRPC channel (only meaningful when ``transport == "grpc"``)."""
        return self.endpoint.partition("://")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferConfig:
    """The on-disk buffer: at most ``max_bytes`` of segments under ``dir``, oldest dropped first."""

    dir: Path = Path("./data/collector")
    max_bytes: int = GIB


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchConfig:
    """A batch is shipped when it holds ``max_records`` or ``max_bytes``, or is ``max_delay_ms`` old."""

    max_records: int = 1000
    max_bytes: int = MIB
    max_delay_ms: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Listen:
    """A listening address: ``udp``, ``tcp`` or ``tls``, host and port (0 picks a free port)."""

    scheme: Literal["udp", "tcp", "tls"]
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """The TLS context a listening input serves with."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class InputConfig:
    """What every input has; ``tls`` is set exactly when ``listen.scheme == "tls"``."""

    type: ClassVar[str]
    listen: Listen
    tag: str
    tls: TlsFiles | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogInput(InputConfig):
    type: ClassVar[str] = "syslog"
    max_frame_bytes: int = 64 * KIB


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardInput(InputConfig):
    """The Fluent forward protocol; with ``shared_key`` the handshake is required."""

    type: ClassVar[str] = "forward"
    shared_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpInput(InputConfig):
    """Fluent Bit's ``http`` output: plain HTTP on ``tcp://`` or HTTPS on ``tls://``."""

    type: ClassVar[str] = "http"
    max_body_bytes: int = 8 * MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Where ``/metrics`` and ``/health`` are served."""

    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorConfig:
    server: ServerConfig
    buffer: BufferConfig
    batch: BatchConfig
    inputs: tuple[InputConfig, ...]
    metrics: MetricsConfig


# The schema: every key's type, which is also how an environment value is parsed.
SECTION_KEYS: dict[str, dict[str, type]] = {
    "server": {"endpoint": str, "token": str, "timeout_sec": float, "compression": str, "concurrency": int},
    "buffer": {"dir": str, "max_bytes": int},
    "batch": {"max_records": int, "max_bytes": int, "max_delay_ms": int},
    "metrics": {"listen": str},
}
INPUT_COMMON_KEYS: dict[str, type] = {"type": str, "listen": str, "tag": str, "cert_file": str, "key_file": str}
INPUT_TYPE_KEYS: dict[str, dict[str, type]] = {
    "syslog": {"max_frame_bytes": int},
    "forward": {"shared_key": str},
    "http": {"max_body_bytes": int},
}
INPUT_KEYS: dict[str, type] = INPUT_COMMON_KEYS | {k: t for keys in INPUT_TYPE_KEYS.values() for k, t in keys.items()}
LISTEN_SCHEMES: dict[str, tuple[str, ...]] = {
    "syslog": ("udp", "tcp", "tls"),
    "forward": ("tcp", "tls"),
    "http": ("tcp", "tls"),
}


def load(path: str | Path, environ: Mapping[str, str] = os.environ) -> CollectorConfig:
    """The configuration in the TOML file at ``path`` with ``environ``'s overrides; ``ConfigError`` if unusable."""
    try:
        with open(path, "rb") as file:
            raw: dict[str, Any] = tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message gives the line and column and never the value.
        raise ConfigError([f"{path}: {exc}"]) from None
    problems = _Problems()
    _apply_environment(raw, environ, problems)
    config = _validate(raw, problems)
    if problems.messages:
        raise ConfigError(problems.messages)
    return config


class _Problems:
    """Problems found so far; ``origins`` maps a key path to the variable that set it."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.origins: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        origin = self.origins.get(path)
        self.messages.append(f"{path} (from {origin}): {message}" if origin else f"{path}: {message}")

    def unknown(self, path: str, hint: str = "") -> None:
        origin = self.origins.get(path)
        self.messages.append(
            f"unknown key '{path}'" + (f" ({hint})" if hint else "") + (f" (from {origin})" if origin else "")
        )


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], problems: _Problems) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        table: Any
        if section == "inputs":
            index_text, _, key = key.partition("_")
            if not (index_text.isascii() and index_text.isdigit()) or int(index_text) >= MAX_INPUTS:
                problems.messages.append(f"{name}: expected {ENV_PREFIX}INPUTS_<N>_<KEY>, N from 0 to {MAX_INPUTS - 1}")
                continue
            index = int(index_text)
            path, kind = f"inputs[{index}].{key}", INPUT_KEYS.get(key)
            inputs = raw.setdefault("inputs", [])
            if kind is None or not isinstance(inputs, list):
                table = None
            else:
                inputs.extend({} for _ in range(index + 1 - len(inputs)))
                table = inputs[index]
        elif section in SECTION_KEYS:
            path, kind = f"{section}.{key}", SECTION_KEYS[section].get(key)
            table = raw.setdefault(section, {})
        else:
            problems.messages.append(f"{name}: unknown section '{section}'")
            continue
        if kind is None:
            problems.messages.append(f"{name}: unknown key '{path}'")
            continue
        if not isinstance(table, dict):
            continue  # the file's own shape is wrong; validation reports it
        try:
            table[key] = _parse_environment_value(environ[name], kind)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            problems.messages.append(f"{name}: expected {expected}, got {environ[name]!r}")
            continue
        problems.origins[path] = name


def _parse_environment_value(text: str, kind: type) -> str | int | float:
    if kind is int:
        return int(text.strip())
    if kind is float:
        return float(text.strip())
    return text


class _Table:
    """Typed reads from one TOML table; a bad value is reported and replaced by the default."""

    def __init__(self, raw: dict[str, Any], prefix: str, problems: _Problems) -> None:
        self.raw, self.prefix, self.problems = raw, prefix, problems

    def reject_unknown(self, allowed: Mapping[str, type], hints: Mapping[str, str] | None = None) -> None:
        for key in self.raw:
            if key not in allowed:
                self.problems.unknown(self.prefix + key, (hints or {}).get(key, ""))

    def string(self, key: str, default: str | None = None) -> str:
        """The string at ``key``; ``default=None`` makes the key required."""
        value = self.raw.get(key)
        if value is None:
            if default is None:
                self.problems.add(self.prefix + key, "required")
            return default or ""
        if not isinstance(value, str):
            self.problems.add(self.prefix + key, f"expected a string, got {_kind(value)}")
            return default or ""
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problems.add(self.prefix + key, f"expected an integer ≥ {minimum}" + _got(value))
            return default
        return value

    def positive_number(self, key: str, default: float) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            self.problems.add(self.prefix + key, "expected a number > 0" + _got(value))
            return default
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.string(key, default)
        if value and value not in choices:
            self.problems.add(self.prefix + key, f"expected {_alternatives(choices)}, got {value!r}")
            return default or ""
        return value


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _got(value: object) -> str:
    """``, got …`` for a bad numeric value: numbers are echoed, anything else only named by kind."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f", got {value}"
    return f", got {_kind(value)}"


def _alternatives(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _section(raw: dict[str, Any], name: str, problems: _Problems) -> _Table:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        problems.add(name, f"expected a table ([{name}]), got {_kind(value)}")
        value = {}
    table = _Table(value, f"{name}.", problems)
    table.reject_unknown(SECTION_KEYS[name])
    return table


def _validate(raw: dict[str, Any], problems: _Problems) -> CollectorConfig:
    for name in raw:
        if name not in SECTION_KEYS and name != "inputs":
            problems.messages.append(f"unknown section '{name}'")
    config = CollectorConfig(
        server=_server(_section(raw, "server", problems)),
        buffer=_buffer(_section(raw, "buffer", problems)),
        batch=_batch(_section(raw, "batch", problems)),
        inputs=_inputs(raw.get("inputs"), problems),
        metrics=_metrics(_section(raw, "metrics", problems)),
    )
    if config.batch.max_bytes > config.buffer.max_bytes:
        problems.add("batch.max_bytes", f"must not exceed buffer.max_bytes ({config.buffer.max_bytes})")
    return config


def _server(table: _Table) -> ServerConfig:
    endpoint = table.string("endpoint")
    if endpoint and not _valid_endpoint(endpoint):
        table.problems.add(
            "server.endpoint",
            "expected http(s)://host[:port]/path for OTLP/HTTP or grpc(s)://host:port for OTLP/gRPC,"
            " without credentials (the token goes in server.token)",
        )
    token = table.string("token")
    if token and not PAT_RE.fullmatch(token):
        table.problems.add("server.token", "expected a personal access token: obs_ and 43 characters")
    compression = table.choice("compression", ("gzip", "none"), "gzip")
    concurrency = table.integer("concurrency", 4, 1)
    if concurrency > MAX_CONCURRENCY:
        table.problems.add("server.concurrency", f"expected at most {MAX_CONCURRENCY}" + _got(concurrency))
        concurrency = 4
    return ServerConfig(
        endpoint=endpoint.rstrip("/"),
        token=token,
        timeout_sec=table.positive_number("timeout_sec", 10.0),
        compression="none" if compression == "none" else "gzip",
        concurrency=concurrency,
    )


def _valid_endpoint(endpoint: str) -> bool:
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return False
    if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
        return False
    if parts.scheme in ("http", "https"):
        return True
    return parts.scheme in ("grpc", "grpcs") and port is not None and parts.path in ("", "/")


def _buffer(table: _Table) -> BufferConfig:
    directory = table.string("dir", "./data/collector")
    if not directory:
        table.problems.add("buffer.dir", "expected a directory path, got an empty string")
    max_bytes = table.integer("max_bytes", GIB, MIB)
    return BufferConfig(dir=Path(directory or "./data/collector"), max_bytes=max_bytes)


def _batch(table: _Table) -> BatchConfig:
    return BatchConfig(
        max_records=table.integer("max_records", 1000, 1),
        max_bytes=table.integer("max_bytes", MIB, KIB),
        max_delay_ms=table.integer("max_delay_ms", 1000, 1),
    )


def _metrics(table: _Table) -> MetricsConfig:
    listen = table.string("listen", "127.0.0.1:9464")
    address = _host_port(listen)
    if address is None:
        table.problems.add("metrics.listen", f"expected host:port, got {listen!r}")
        return MetricsConfig()
    return MetricsConfig(host=address[0], port=address[1])


def _host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` (IPv6 in brackets) split, or None; port 0 asks for a free port."""
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname, port


def _inputs(value: object, problems: _Problems) -> tuple[InputConfig, ...]:
    if value is None or value == []:
        problems.add("inputs", "at least one [[inputs]] table is required")
        return ()
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add("inputs", "expected an array of tables ([[inputs]])")
        return ()
    inputs = [_input(_Table(item, f"inputs[{index}].", problems), index) for index, item in enumerate(value)]
    _reject_clashes(inputs, problems)
    return tuple(item for item in inputs if item is not None)


def _input(table: _Table, index: int) -> InputConfig | None:
    """One ``[[inputs]]`` table, or None when its type is missing or unknown (the rest cannot be read)."""
    kind = table.choice("type", tuple(INPUT_TYPE_KEYS))
    if not kind:
        table.reject_unknown(INPUT_KEYS)
        return None
    hints = {key: f"an option of {other} inputs" for other, keys in INPUT_TYPE_KEYS.items() for key in keys}
    table.reject_unknown(INPUT_COMMON_KEYS | INPUT_TYPE_KEYS[kind], hints)
    listen = _listen(table, LISTEN_SCHEMES[kind])
    tls = _tls_files(table, listen)
    tag = table.string("tag", f"{kind}-{index}")
    if not tag:
        table.problems.add(table.prefix + "tag", "expected a non-empty string")
        tag = f"{kind}-{index}"
    if kind == "syslog":
        frame = table.integer("max_frame_bytes", 64 * KIB, SYSLOG_MIN_FRAME_BYTES)
        return SyslogInput(listen=listen, tag=tag, tls=tls, max_frame_bytes=frame)
    if kind == "forward":
        shared_key = table.string("shared_key", "") or None
        if "shared_key" in table.raw and shared_key is None:
            table.problems.add(table.prefix + "shared_key", "expected a non-empty string (leave it out: no handshake)")
        return ForwardInput(listen=listen, tag=tag, tls=tls, shared_key=shared_key)
    body = table.integer("max_body_bytes", 8 * MIB, KIB)
    return HttpInput(listen=listen, tag=tag, tls=tls, max_body_bytes=body)


def _listen(table: _Table, schemes: tuple[str, ...]) -> Listen:
    text = table.string("listen")
    scheme, separator, rest = text.partition("://")
    address = _host_port(rest) if separator and scheme in schemes else None
    if address is None:
        if text:
            expected = _alternatives(tuple(f"{scheme}://" for scheme in schemes))
            table.problems.add(table.prefix + "listen", f"expected {expected} and host:port, got {text!r}")
        return Listen(scheme="tcp", host="", port=0)
    return Listen(
        scheme="udp" if scheme == "udp" else "tls" if scheme == "tls" else "tcp", host=address[0], port=address[1]
    )


def _tls_files(table: _Table, listen: Listen) -> TlsFiles | None:
    given = [key for key in ("cert_file", "key_file") if key in table.raw]
    if listen.scheme != "tls":
        for key in given:
            table.problems.add(table.prefix + key, "only used with a tls:// listen address")
        return None
    paths = []
    for key in ("cert_file", "key_file"):
        path = Path(table.string(key))
        if key in table.raw and isinstance(table.raw[key], str) and not path.is_file():
            table.problems.add(table.prefix + key, f"no such file: {str(path)!r}")
        paths.append(path)
    return TlsFiles(cert_file=paths[0], key_file=paths[1])


def _reject_clashes(inputs: list[InputConfig | None], problems: _Problems) -> None:
    """Two inputs on one address, or with one tag (per-input metrics would merge), are refused."""
    addresses: dict[tuple[str, str, int], int] = {}
    tags: dict[str, int] = {}
    for index, item in enumerate(inputs):
        if item is None or not item.listen.host:
            continue
        # UDP and TCP ports are separate; tcp:// and tls:// share one.
        key = ("udp" if item.listen.scheme == "udp" else "tcp", item.listen.host, item.listen.port)
        if item.listen.port and key in addresses:
            problems.add(f"inputs[{index}].listen", f"the same address as inputs[{addresses[key]}]")
        addresses.setdefault(key, index)
        if item.tag in tags:
            problems.add(f"inputs[{index}].tag", f"{item.tag!r} is already the tag of inputs[{tags[item.tag]}]")
        tags.setdefault(item.tag, index)
