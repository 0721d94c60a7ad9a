"""Fixtures: a real `observe serve` per database backend, an SMTP sink, personas.

SQLite always; PostgreSQL too when OBSERVE_TEST_DATABASE_URL is set (CI sets
it). Every test makes its own users and organisations, so tests share a
server without sharing state.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("OBSERVE_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
REDIS_URL = os.environ.get("OBSERVE_TEST_REDIS_URL")
PASSWORD = "correct horse battery staple"
# The suite signs up hundreds of users from 127.0.0.1: its servers get
# generous limits; test_rate_limits starts servers with tight ones.
GENEROUS_LIMITS = {
    "TOKEN": "100000/minute",
    "AUTH_IP": "100000/minute",
    "PUBLIC_IP": "100000/minute",
    "SUBSCRIBE_IP": "100000/minute",
    "UNLOCK_IP": "100000/minute",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset_postgres(url: str) -> None:
    """Drops and re-creates the public schema of the test database."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()

    asyncio.run(run())


def database_beside(url: str, suffix: str) -> str:
    """A PostgreSQL database beside ``url``'s (its name + ``suffix``), created if absent, its schema
    emptied: for a test whose server must not share the session server's database (whose background
    loops would claim its work)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"{parsed.database}{suffix}"

    async def create() -> None:
        conn = await asyncpg.connect(
            host=parsed.host, port=parsed.port or 5432, user=parsed.username, password=parsed.password,
            database=parsed.database,
        )  # fmt: skip
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    own = parsed.set(database=name).render_as_string(hide_password=False)
    reset_postgres(own)
    return own


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def wait_for(self, to: str, timeout: float = 10) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if msg["To"] == to:
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no mail to {to}")


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@dataclass
class Server:
    """A running `observe serve` subprocess."""

    base_url: str
    grpc_target: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    backend: str
    log_path: Path
    # The schemathesis runs started with a session server (tests/contract_runs.py).
    contract_runs: Any = None

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def database_url(self) -> str:
        return self.env.get("OBSERVE_DATABASE_URL") or f"sqlite+aiosqlite:///{self.data_dir / 'observe.db'}"

    def sql(self, statement: Any) -> Any:
        """Runs one SQLAlchemy statement against the server's database (test
        set-up and inspection only) and returns its rows, if any."""
        from sqlalchemy.ext.asyncio import create_async_engine

        async def run() -> Any:
            engine = create_async_engine(self.database_url)
            try:
                async with engine.begin() as conn:
                    result = await conn.execute(statement)
                    return result.all() if result.returns_rows else None
            finally:
                await engine.dispose()

        return asyncio.run(run())


# Per-monitor series on /metrics need `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = "test-metrics-token"
# The session server checks monitors against local targets, with intervals
# shrunk 20× (30 s → 1.5 s) so thresholds flip within a test.
CHECKING_ENV = {
    "OBSERVE_METRICS_TOKEN": METRICS_TOKEN,
    "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
    "OBSERVE_CHECK_INTERVAL_SCALE": "0.05",
    "OBSERVE_CHECK_FLUSH_MS": "100",
    "OBSERVE_LEASE_TTL_SEC": "3",
    # Alert retries after 0.3, 0.6, 1.2 and 2.4 s instead of minutes.
    "OBSERVE_ALERT_RETRY_DELAYS": "0.3,0.6,1.2,2.4",
}


def start_server(
    tmp: Path,
    *,
    backend: str,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    role: str = "api",
    database_url: str | None = None,
) -> Server:
    """A server subprocess. Only the session server (and tests about
    checking) run a scheduler: others would share the PostgreSQL database's
    monitors with it through leases."""
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "OBSERVE_DATA_DIR": str(tmp / "data"),
        "OBSERVE_HTTP_PORT": str(http_port),
        "OBSERVE_GRPC_PORT": str(grpc_port),
        "OBSERVE_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        **{f"OBSERVE_RATE_LIMIT_{name}": spec for name, spec in GENEROUS_LIMITS.items()},
        # Sign-ups hash at Argon2id's minimum cost: the suite registers hundreds of users.
        "OBSERVE_INSECURE_TEST_PASSWORD_HASHING": "1",
        **(extra_env or {}),
    }
    if database_url:
        env["OBSERVE_DATABASE_URL"] = database_url
    elif backend == "postgresql":
        assert PG_URL
        env["OBSERVE_DATABASE_URL"] = PG_URL
    else:
        env.pop("OBSERVE_DATABASE_URL", None)
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"server-{http_port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", *(args or []), *([] if args else ["--role", role])],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(
        f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", tmp / "data", env, process, backend, log_path
    )
    wait_ready(server)
    return server


def set_plan(server: Server, org_id: int, plan: str) -> subprocess.CompletedProcess[str]:
    """``observe admin set-plan`` against the server's database."""
    args = ["admin", "set-plan", "--org-id", str(org_id), "--plan", plan]
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=server.env, capture_output=True, text=True
    )


def wait_ready(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready:\n{server.log()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink
) -> Iterator[Server]:
    backend = request.param
    if backend == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL)
    srv = start_server(
        tmp_path_factory.mktemp(backend),
        backend=backend,
        extra_env={"OBSERVE_SMTP_HOST": "127.0.0.1", "OBSERVE_SMTP_PORT": str(smtp_sink.port), **CHECKING_ENV},
        role="all",
    )
    if backend == "sqlite" and backend in request.config.stash.get(CONTRACT_BACKENDS, set()):
        from tests import contract_runs

        # The fuzz, and the full run too when there is no PostgreSQL (postgresql_contract_runs has it).
        srv.contract_runs = contract_runs.start(srv, tmp_path_factory.mktemp("contract-sqlite"), full=not PG_URL)
    yield srv
    if srv.contract_runs is not None:
        srv.contract_runs.stop()
    stop_server(srv)


@pytest.fixture(scope="session")
def postgresql_contract_runs(tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink) -> Iterator[Any]:
    """The schemathesis runs on PostgreSQL (the full run and the fuzz), against a server and database of
    their own. tests/test_contract_tools.py starts them first (``background_start``): they take minutes
    of a busy client and server, spread over the whole suite instead of ending it. Role ``api``: the
    hundreds of monitors they create are not checked (the session servers check theirs)."""
    from tests import contract_runs

    assert PG_URL
    srv = start_server(
        tmp_path_factory.mktemp("contract-pg-server"),
        backend="postgresql",
        database_url=database_beside(PG_URL, "_contract"),
        extra_env={"OBSERVE_SMTP_HOST": "127.0.0.1", "OBSERVE_SMTP_PORT": str(smtp_sink.port), **CHECKING_ENV},
        role="api",
    )
    runs = contract_runs.start(srv, tmp_path_factory.mktemp("contract-postgresql"), full=True)
    yield runs
    if runs is not None:
        runs.stop()
    stop_server(srv)


CONTRACT_BACKENDS = pytest.StashKey[set[str]]()

# For a test of behaviour that is the same on every backend (the scheduler's timing, a proxy, input
# validation): the session server on SQLite only, which every run has. A second run on PostgreSQL would
# take its seconds again and prove nothing more; what does differ per backend is tested on both.
SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The contract tests (tests/test_contract_tools.py) collect schemathesis runs that their backend's session
    server starts as soon as it is ready: they go last in that backend's group, so the runs overlap the group's
    other tests instead of adding minutes to the suite."""

    def backend(item: pytest.Item) -> str | None:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("server") if callspec is not None else None

    contract = [i for i in items if i.nodeid.startswith("tests/test_contract_tools.py") and backend(i) is not None]
    config.stash[CONTRACT_BACKENDS] = {b for i in contract if (b := backend(i)) is not None}
    rest = [i for i in items if i not in contract]
    for item in contract:
        group = [k for k, other in enumerate(rest) if backend(other) == backend(item)]
        rest.insert(group[-1] + 1 if group else len(rest), item)
    # A run that mostly waits (the collector's 30 s outage) starts first and is checked last, so it
    # overlaps the suite instead of adding its wall time.
    first = [i for i in rest if i.get_closest_marker("background_start")]
    last = [i for i in rest if i.get_closest_marker("background_finish")]
    items[:] = first + [i for i in rest if i not in first and i not in last] + last


class HasClient(Protocol):
    def client(self, token: str | None = None) -> httpx.Client: ...


@dataclass
class Persona:
    """A registered user with a session and a wildcard PAT."""

    email: str
    user_id: int
    org_id: int
    session: str
    pat: str
    pat_id: int
    server: HasClient
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token or self.pat)

    def mint(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "test token")
        with self.client() as c:
            r = c.post("/api/v1/me/tokens", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def register(server: HasClient, **overrides: Any) -> Persona:
    email = overrides.pop("email", f"user-{uuid.uuid4().hex[:12]}@example.com")
    body = {"email": email, "password": PASSWORD, "name": "Test User", **overrides}
    with server.client() as c:
        r = c.post("/api/v1/auth/register", json=body)
        assert r.status_code == 201, r.text
        reg = r.json()
        session = reg["sessionToken"]
        r = c.post("/api/v1/me/tokens", json={"name": "persona"}, headers={"authorization": f"Bearer {session}"})
        assert r.status_code == 201, r.text
    persona = Persona(email, reg["user"]["id"], reg["org"]["id"], session, r.json()["token"], r.json()["id"], server)
    persona.extra["role"] = reg["role"]
    return persona


@pytest.fixture
def owner(server: Server) -> Persona:
    return register(server)


@pytest.fixture
def outsider(server: Server) -> Persona:
    """Someone from another organisation."""
    return register(server)


@pytest.fixture(scope="session")
def echo_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real app plus the test-only EchoService (tests/protos), in-process,
    on the same backend as ``server``."""
    from core.config import Settings
    from tests.harness import ThreadServer, compile_test_protos, echo_service

    tmp = tmp_path_factory.mktemp(f"echo-{server.backend}")
    echo_pb2, echo_grpc, descriptors = compile_test_protos(tmp_path_factory.getbasetemp() / "echo-gen")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=PG_URL if server.backend == "postgresql" else None,
        rate_limits=GENEROUS_LIMITS,
    )
    holder: list[ThreadServer] = []
    srv = ThreadServer(
        settings,
        extra_files=[echo_pb2.DESCRIPTOR],
        extra_services=[echo_service(echo_pb2, echo_grpc, lambda: holder[0].core)],
        descriptor_sets=[descriptors],
    )
    holder.append(srv)
    srv.start()
    srv.echo_pb2 = echo_pb2  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@dataclass
class Team:
    """One organisation with a persona per role, joined through real invites."""

    owner: Persona
    admin: Persona
    member: Persona
    viewer: Persona

    def by_role(self) -> dict[str, Persona]:
        return {"owner": self.owner, "admin": self.admin, "member": self.member, "viewer": self.viewer}


def invite_token(sink: SmtpSink, email: str) -> str:
    import re

    mail = sink.wait_for(email)
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    match = re.search(r"obsi_[A-Za-z0-9_-]{43}", body)
    assert match, body
    return match.group(0)


def join(server: HasClient, sink: SmtpSink, inviter: Persona, role: str) -> Persona:
    """A new user invited by ``inviter`` with ``role``, signed up with the e-mailed token."""
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    with inviter.client() as c:
        r = c.post("/api/v1/me/invites", json={"email": email, "role": role})
        assert r.status_code == 201, r.text
    return register(server, email=email, inviteToken=invite_token(sink, email))


def make_team(server: HasClient, sink: SmtpSink) -> Team:
    """The three invitees join side by side: each waits on its mail and its password hash, not on the others."""
    owner = register(server)
    with ThreadPoolExecutor(3) as pool:
        admin, member, viewer = pool.map(lambda role: join(server, sink, owner, role), ("admin", "member", "viewer"))
    return Team(owner, admin, member, viewer)


@pytest.fixture
def team(server: Server, smtp_sink: SmtpSink) -> Team:
    return make_team(server, smtp_sink)
