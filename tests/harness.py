"""In-process servers for tests that need to add services or swap parts:
the real app and gRPC server, run by uvicorn on a free port in a thread."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn

from core.app import Core, build_core
from core.config import Settings
from core.grpc_server import start_grpc
from core.metrics import ApiMetrics
from core.storage.migrate import migrate
from gateway.app import create_app
from gateway.dispatch import InProcess
from tests.conftest import ROOT, free_port

TEST_PROTOS = Path(__file__).parent / "protos"


def compile_test_protos(out: Path) -> tuple[ModuleType, ModuleType, Path]:
    """Generates tests/protos with grpcio-tools into ``out``; returns the
    echo_pb2 and echo_pb2_grpc modules and the descriptor set path."""
    import grpc_tools

    if "observetest.v1.echo_pb2" in sys.modules:  # compiled once per session
        return (
            sys.modules["observetest.v1.echo_pb2"],
            sys.modules["observetest.v1.echo_pb2_grpc"],
            out / "echo.binpb",
        )
    out.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    descriptors = out / "echo.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{TEST_PROTOS}",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "--include_source_info",
            f"--descriptor_set_out={descriptors}",
            str(TEST_PROTOS / "observetest" / "v1" / "echo.proto"),
        ],
        check=True,
    )
    for pkg in (out / "observetest", out / "observetest" / "v1"):
        (pkg / "__init__.py").touch()
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("observetest.v1.echo_pb2"),
        importlib.import_module("observetest.v1.echo_pb2_grpc"),
        descriptors,
    )


class ThreadServer:
    """The real app served by uvicorn (and gRPC) on free ports in a thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_files: Iterable[Any] = (),
        extra_services: Iterable[object] = (),
        descriptor_sets: list[Path] | None = None,
        configure: Callable[[Core], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.settings = settings.with_overrides(http_port=self.port, grpc_port=self.grpc_port)
        self.extra_files = list(extra_files)
        self.extra_services = list(extra_services)
        self.descriptor_sets = descriptor_sets or []
        self.configure = configure
        self.core: Core | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self._started = threading.Event()
        self._uvicorn: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        core = build_core(self.settings, extra_files=self.extra_files, extra_services=self.extra_services)
        self.core = core
        self._loop = asyncio.get_running_loop()
        if self.configure:
            self.configure(core)
        await migrate(core.db)
        metrics = ApiMetrics()
        app = create_app(
            core.methods,
            InProcess(core.pipeline),
            metrics=metrics,
            ready=core.db.ping,
            descriptor_sets=self.descriptor_sets,
        )
        grpc_server, _ = await start_grpc(core.pipeline, core.methods.values(), self.grpc_target, metrics)
        # As `observe serve`: forwarded headers are the app's to judge (OBSERVE_TRUSTED_PROXIES).
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", proxy_headers=False
        )
        self._uvicorn = uvicorn.Server(config)
        serve = asyncio.ensure_future(self._uvicorn.serve())
        while not self._uvicorn.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.02)
        self._started.set()
        try:
            await serve
        finally:
            await grpc_server.stop(grace=1)
            await core.close()

    def start(self) -> ThreadServer:
        self._thread.start()
        self._started.wait(timeout=30)
        if self._error is not None:
            raise self._error
        return self

    def set_role(self, user_id: int, role: str) -> None:
        """Changes a membership's role in the server's own database (test setup
        for roles the members API will grant)."""
        from sqlalchemy import update

        from core.storage import tables as t

        assert self.core is not None
        assert self._loop is not None

        async def run() -> None:
            assert self.core is not None
            async with self.core.db.write() as conn:
                await conn.execute(update(t.memberships).where(t.memberships.c.user_id == user_id).values(role=role))

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self._thread.join(timeout=15)


def echo_service(echo_pb2: ModuleType, echo_grpc: ModuleType, core: Callable[[], Core | None]) -> object:
    """The implementation of tests/protos' EchoService (``core`` gives the
    running server's core, for the calls that write)."""
    from google.api import httpbody_pb2

    from core.errors import Violations
    from core.rpc.context import CallContext

    class EchoService(echo_grpc.EchoServiceServicer):  # type: ignore[name-defined,misc]
        executions = 0

        async def Echo(self, request: Any, ctx: CallContext) -> Any:
            return echo_pb2.EchoResponse(
                thing_id=request.thing_id, note=request.note, tags=request.tags, loud=request.loud, kind=request.kind
            )

        async def GetBook(self, request: Any, ctx: CallContext) -> Any:
            return echo_pb2.GetBookResponse(name=request.name, caller=ctx.require_principal().user_id)

        async def Badge(self, request: Any, ctx: CallContext) -> Any:
            svg = f'<svg xmlns="http://www.w3.org/2000/svg"><text>{request.thing_id}</text></svg>'
            return httpbody_pb2.HttpBody(content_type="image/svg+xml", data=svg.encode())

        async def Purge(self, request: Any, ctx: CallContext) -> Any:
            return echo_pb2.PurgeResponse()

        async def Record(self, request: Any, ctx: CallContext) -> Any:
            type(self).executions += 1
            execution = type(self).executions
            if request.delay_ms:
                await asyncio.sleep(request.delay_ms / 1000)
            if request.count_checks:
                running = core()
                assert running is not None
                org_id = ctx.require_principal().org_id
                await running.plans.add_usage(running.db, org_id, checks=request.count_checks)
            if request.break_audit:
                ctx.audit.before = "not a message"  # type: ignore[assignment]
            if request.fail:
                raise RuntimeError("asked to fail")
            if request.reject:
                v = Violations()
                v.add("reject", "custom", "Asked to reject")
                v.raise_if_any()
            return echo_pb2.RecordResponse(execution=execution, text=request.text)

        async def Count(self, request: Any, ctx: CallContext) -> Any:
            if not 1 <= request.upto <= 100:
                v = Violations()
                v.add("upto", "too_big" if request.upto > 100 else "too_small", "Must be 1-100")
                v.raise_if_any()
            for n in range(1, request.upto + 1):
                yield echo_pb2.CountResponse(n=n)

    return EchoService()
