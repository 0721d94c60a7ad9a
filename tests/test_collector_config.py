"""collector/config.py: the CONTRACT.md "Collector configuration" file, its
environment overrides and its errors, each naming the bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.config import (
    GIB,
    MIB,
    BatchConfig,
    BufferConfig,
    ConfigError,
    ForwardInput,
    HttpInput,
    Listen,
    MetricsConfig,
    SyslogInput,
    TlsFiles,
    load,
)
from tests.conftest import ROOT

TOKEN = "obs_" + "A" * 43
MINIMAL = f"""
[server]
endpoint = "http://127.0.0.1:8080/api/v1/otlp"
token = "{TOKEN}"
[[inputs]]
type = "syslog"
listen = "udp://0.0.0.0:5514"
"""


def contract_example() -> str:
    """The TOML block of CONTRACT.md's "Collector configuration" section, as written there."""
    text = (ROOT.parent / "shared" / "spec" / "CONTRACT.md").read_text()
    section = text.split("## Collector configuration", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ or {})
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def test_the_contract_example_parses_to_what_it_says(tmp_path: Path) -> None:
    example = contract_example()
    # The example's token is a placeholder, refused as such; a real-shaped PAT is accepted.
    assert problems(tmp_path, example) == ["server.token: expected a personal access token: obs_ and 43 characters"]
    config = load(write(tmp_path, example.replace('"obs_..."', f'"{TOKEN}"')), {})
    assert config.server.endpoint == "http://127.0.0.1:8080/api/v1/otlp"
    assert config.server.token == TOKEN
    assert config.server.transport == "http"
    assert not config.server.secure
    assert config.buffer == BufferConfig(dir=Path("./data/collector"), max_bytes=1073741824)
    assert config.inputs == (SyslogInput(listen=Listen(scheme="udp", host="0.0.0.0", port=5514), tag="syslog-0"),)
    assert config.metrics == MetricsConfig(host="127.0.0.1", port=9464)


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL), {})
    assert config.server.timeout_sec == 10.0
    assert config.server.compression == "gzip"
    assert config.buffer == BufferConfig(dir=Path("./data/collector"), max_bytes=GIB)
    assert config.batch == BatchConfig(max_records=1000, max_bytes=MIB, max_delay_ms=1000)
    assert config.metrics == MetricsConfig(host="127.0.0.1", port=9464)
    (syslog,) = config.inputs
    assert isinstance(syslog, SyslogInput)
    assert syslog.max_frame_bytes == 64 * 1024
    assert syslog.tls is None


def test_every_input_type_with_its_options(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    config = load(
        write(
            tmp_path,
            f"""
[server]
endpoint = "grpcs://collector.example:4317"
token = "{TOKEN}"
timeout_sec = 2.5
compression = "none"
[batch]
max_records = 10
max_bytes = 2048
max_delay_ms = 50
[[inputs]]
type = "syslog"
listen = "tls://[::1]:6514"
cert_file = "{cert}"
key_file = "{key}"
max_frame_bytes = 480
tag = "edge"
[[inputs]]
type = "forward"
listen = "tcp://0.0.0.0:24224"
shared_key = "s3cret-shared"
[[inputs]]
type = "http"
listen = "tcp://127.0.0.1:0"
max_body_bytes = 4096
[metrics]
listen = "0.0.0.0:0"
""",
        ),
        {},
    )
    assert (config.server.transport, config.server.secure, config.server.grpc_target) == (
        "grpc",
        True,
        "collector.example:4317",
    )
    assert (config.server.timeout_sec, config.server.compression) == (2.5, "none")
    assert config.batch == BatchConfig(max_records=10, max_bytes=2048, max_delay_ms=50)
    assert config.inputs == (
        SyslogInput(
            listen=Listen(scheme="tls", host="::1", port=6514),
            tag="edge",
            tls=TlsFiles(cert_file=cert, key_file=key),
            max_frame_bytes=480,
        ),
        ForwardInput(
            listen=Listen(scheme="tcp", host="0.0.0.0", port=24224), tag="forward-1", shared_key="s3cret-shared"
        ),
        HttpInput(listen=Listen(scheme="tcp", host="127.0.0.1", port=0), tag="http-2", max_body_bytes=4096),
    )
    assert config.metrics == MetricsConfig(host="0.0.0.0", port=0)
    assert "s3cret-shared" not in repr(config)
    assert TOKEN not in repr(config)


def test_every_problem_is_reported_at_once_naming_its_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[server]
endpoint = "ftp://somewhere"
tokn = "obs_typo"
compression = "brotli"
timeout_sec = -1
[buffer]
max_bytes = 1000
dir = 7
[batch]
max_records = true
max_delay_ms = "soon"
[[inputs]]
type = "forward"
listen = "udp://0.0.0.0:24224"
max_body_bytes = 10
[[inputs]]
type = "sislog"
listen = "udp://0.0.0.0:5514"
[[inputs]]
type = "http"
listen = "tcp://0.0.0.0:8888/path"
[[inputs]]
listen = "tcp://0.0.0.0:5514"
cert_file = "cert.pem"
[[inputs]]
type = "syslog"
listen = "udp://0.0.0.0:99999"
max_frame_bytes = 100
[[inputs]]
type = "syslog"
[metrics]
listen = "9464"
[storage]
path = "x"
""",
    )
    assert found == [
        "unknown section 'storage'",
        "unknown key 'server.tokn'",
        "server.endpoint: expected http(s)://host[:port]/path for OTLP/HTTP or grpc(s)://host:port for OTLP/gRPC,"
        " without credentials (the token goes in server.token)",
        "server.token: required",
        "server.compression: expected gzip or none, got 'brotli'",
        "server.timeout_sec: expected a number > 0, got -1",
        "buffer.dir: expected a string, got an integer",
        "buffer.max_bytes: expected an integer ≥ 1048576, got 1000",
        "batch.max_records: expected an integer ≥ 1, got a boolean",
        "batch.max_delay_ms: expected an integer ≥ 1, got a string",
        "unknown key 'inputs[0].max_body_bytes' (an option of http inputs)",
        "inputs[0].listen: expected tcp:// or tls:// and host:port, got 'udp://0.0.0.0:24224'",
        "inputs[1].type: expected syslog, forward or http, got 'sislog'",
        "inputs[2].listen: expected tcp:// or tls:// and host:port, got 'tcp://0.0.0.0:8888/path'",
        "inputs[3].type: required",
        "inputs[4].listen: expected udp://, tcp:// or tls:// and host:port, got 'udp://0.0.0.0:99999'",
        "inputs[4].max_frame_bytes: expected an integer ≥ 480, got 100",
        "inputs[5].listen: required",
        "metrics.listen: expected host:port, got '9464'",
    ]


def test_shape_errors_and_clashes_name_their_key(tmp_path: Path) -> None:
    assert problems(tmp_path, 'server = "x"\ninputs = 3') == [
        "server: expected a table ([server]), got a string",
        "server.endpoint: required",
        "server.token: required",
        "inputs: expected an array of tables ([[inputs]])",
    ]
    assert problems(tmp_path, MINIMAL.split("[[inputs]]")[0]) == ["inputs: at least one [[inputs]] table is required"]
    clashes = (
        MINIMAL
        + """
[[inputs]]
type = "syslog"
listen = "udp://0.0.0.0:5514"
tag = "syslog-0"
[[inputs]]
type = "syslog"
listen = "tcp://0.0.0.0:5514"
[batch]
max_bytes = 2000000
[buffer]
max_bytes = 1048576
"""
    )
    assert problems(tmp_path, clashes) == [
        "inputs[1].listen: the same address as inputs[0]",
        "inputs[1].tag: 'syslog-0' is already the tag of inputs[0]",
        "batch.max_bytes: must not exceed buffer.max_bytes (1048576)",
    ]


def test_toml_syntax_errors_name_line_and_column_and_missing_files_the_path(tmp_path: Path) -> None:
    [message] = problems(tmp_path, MINIMAL + "\n[batch]\nmax_records = = 3\n")
    assert message.endswith("collector.toml: Invalid value (at line 10, column 15)")
    with pytest.raises(ConfigError, match=r"nowhere\.toml: cannot read: No such file or directory"):
        load(tmp_path / "nowhere.toml", {})


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    tls_input = f"""
[[inputs]]
type = "forward"
listen = "tls://0.0.0.0:24224"
cert_file = "{cert}"
"""
    assert problems(tmp_path, MINIMAL + tls_input) == ["inputs[1].key_file: required"]
    missing = tmp_path / "missing-key.pem"
    assert problems(tmp_path, MINIMAL + tls_input + f'key_file = "{missing}"') == [
        f"inputs[1].key_file: no such file: {str(missing)!r}"
    ]


def test_environment_overrides_are_typed_like_the_key_they_replace(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    other_token = "obs_" + "b" * 43
    config = load(
        write(tmp_path, MINIMAL),
        {
            "OBSERVE_COLLECTOR_SERVER_TOKEN": other_token,
            "OBSERVE_COLLECTOR_SERVER_TIMEOUT_SEC": "0.5",
            "OBSERVE_COLLECTOR_BUFFER_MAX_BYTES": "2097152",
            "OBSERVE_COLLECTOR_BATCH_MAX_DELAY_MS": " 250 ",
            "OBSERVE_COLLECTOR_METRICS_LISTEN": "0.0.0.0:9999",
            "OBSERVE_COLLECTOR_INPUTS_0_LISTEN": "tls://0.0.0.0:6514",
            "OBSERVE_COLLECTOR_INPUTS_0_CERT_FILE": str(cert),
            "OBSERVE_COLLECTOR_INPUTS_0_KEY_FILE": str(key),
            "OBSERVE_COLLECTOR_INPUTS_0_MAX_FRAME_BYTES": "8192",
            # An index past the file's inputs adds one.
            "OBSERVE_COLLECTOR_INPUTS_1_TYPE": "forward",
            "OBSERVE_COLLECTOR_INPUTS_1_LISTEN": "tcp://127.0.0.1:24224",
            "OBSERVE_COLLECTOR_INPUTS_1_SHARED_KEY": "from-env",
            "OBSERVE_OTHER_THING": "ignored",
        },
    )
    assert config.server.token == other_token
    assert config.server.timeout_sec == 0.5
    assert config.buffer.max_bytes == 2 * MIB
    assert config.batch.max_delay_ms == 250
    assert config.metrics == MetricsConfig(host="0.0.0.0", port=9999)
    assert config.inputs == (
        SyslogInput(
            listen=Listen(scheme="tls", host="0.0.0.0", port=6514),
            tag="syslog-0",
            tls=TlsFiles(cert_file=cert, key_file=key),
            max_frame_bytes=8192,
        ),
        ForwardInput(listen=Listen(scheme="tcp", host="127.0.0.1", port=24224), tag="forward-1", shared_key="from-env"),
    )


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        MINIMAL,
        {
            "OBSERVE_COLLECTOR_BUFFER_MAX_BYTES": "1GiB",
            "OBSERVE_COLLECTOR_SERVER_TOKN": "x",
            "OBSERVE_COLLECTOR_SRVER_TOKEN": "x",
            "OBSERVE_COLLECTOR_INPUTS_X_TYPE": "http",
            "OBSERVE_COLLECTOR_INPUTS_0_COLOUR": "blue",
            "OBSERVE_COLLECTOR_INPUTS_2_TYPE": "http",
            "OBSERVE_COLLECTOR_BATCH_MAX_RECORDS": "0",
        },
    ) == [
        "OBSERVE_COLLECTOR_BUFFER_MAX_BYTES: expected an integer, got '1GiB'",
        "OBSERVE_COLLECTOR_INPUTS_0_COLOUR: unknown key 'inputs[0].colour'",
        "OBSERVE_COLLECTOR_INPUTS_X_TYPE: expected OBSERVE_COLLECTOR_INPUTS_<N>_<KEY>, N from 0 to 99",
        "OBSERVE_COLLECTOR_SERVER_TOKN: unknown key 'server.tokn'",
        "OBSERVE_COLLECTOR_SRVER_TOKEN: unknown section 'srver'",
        "batch.max_records (from OBSERVE_COLLECTOR_BATCH_MAX_RECORDS): expected an integer ≥ 1, got 0",
        # The gap the index-2 override leaves is an input without type or listen.
        "inputs[1].type: required",
        "inputs[2].listen: required",
    ]


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    leaky = "obs_" + "Z" * 42 + "!"  # one character off a PAT
    text = MINIMAL.replace(TOKEN, leaky) + '[[inputs]]\ntype = "forward"\nlisten = "tcp://:1"\nshared_key = 5\n'
    found = problems(tmp_path, text, {"OBSERVE_COLLECTOR_SERVER_ENDPOINT": f"https://user:{leaky}@host/"})
    assert found[:2] == [
        "server.endpoint (from OBSERVE_COLLECTOR_SERVER_ENDPOINT): expected http(s)://host[:port]/path for OTLP/HTTP"
        " or grpc(s)://host:port for OTLP/gRPC, without credentials (the token goes in server.token)",
        "server.token: expected a personal access token: obs_ and 43 characters",
    ]
    assert not any(leaky in line or "Z" * 10 in line for line in found)
    config = load(write(tmp_path, MINIMAL), {})
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config.server)


def test_concurrency_is_1_to_64_default_4_and_the_environment_may_set_it(tmp_path: Path) -> None:
    assert load(write(tmp_path, MINIMAL), {}).server.concurrency == 4
    assert load(write(tmp_path, MINIMAL), {"OBSERVE_COLLECTOR_SERVER_CONCURRENCY": "16"}).server.concurrency == 16
    for bad in ("0", "65"):
        text = MINIMAL.replace("[[inputs]]", f"concurrency = {bad}\n[[inputs]]", 1)
        assert [line.split(":")[0] for line in problems(tmp_path, text)] == ["server.concurrency"]
