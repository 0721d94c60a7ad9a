"""``observe serve``: REST and gRPC in one process on one event loop, assembled
on the gateway side (the core never imports the gateway)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from types import FrameType

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.app import Core, build_core
from core.config import Settings
from core.grpc_server import start_grpc
from core.incidents.engine import IncidentEngine
from core.log_alerts.evaluator import LogAlertEvaluator
from core.metrics import ApiMetrics
from core.rpc.methods import build_methods, observe_files
from core.rpc.proxies import TrustedProxies
from core.scheduler.scheduler import Scheduler
from core.storage.migrate import migrate
from gateway.app import create_app
from gateway.dispatch import InProcess, Upstream

log = logging.getLogger("observe.server")


def _listen(host: str, port: int) -> socket.socket:
    """The REST socket, bound before anything is built: with port 0 the port
    it gets is what links (heartbeat URLs, e-mails) must name."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_exit`` when a signal starts its
    graceful shutdown (from the signal handler: it must only schedule)."""

    on_exit: Callable[[], object] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.on_exit is not None:
            self.on_exit()


def _uvicorn(app: object, settings: Settings) -> _Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.http_host,
        port=settings.http_port,
        loop="none",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        # Forwarded headers are believed only from OBSERVE_TRUSTED_PROXIES,
        # by the app (gateway.app); uvicorn's would trust any 127.0.0.1.
        proxy_headers=False,
        server_header=False,
    )
    return _Server(config)


ROLES = ("all", "api", "checker")


async def serve(settings: Settings, *, grpc_upstream: str | None = None, role: str = "all") -> None:
    """``all``: REST, gRPC and the scheduler; ``api``: REST and gRPC;
    ``checker``: the scheduler, with /health and /metrics on the REST port."""
    with _listen(settings.http_host, settings.http_port) as sock:
        settings = settings.with_overrides(http_port=sock.getsockname()[1])
        if grpc_upstream:
            await _serve_gateway_only(settings, grpc_upstream, sock)
        else:
            await _serve_core(settings, role, sock)


async def _serve_core(settings: Settings, role: str, sock: socket.socket) -> None:
    core = build_core(settings)
    settings = core.settings
    await migrate(core.db)
    metrics = ApiMetrics()
    metrics.registry.register(core.rate_limiter)
    metrics.registry.register(core.dispatcher)
    metrics.registry.register(core.ping_writer)
    metrics.registry.register(core.lateness)
    metrics.registry.register(core.log_writer)
    # Every core process keeps the maintenance calendar, turns status changes
    # into incidents and delivers alerts; across processes the event cursor
    # and the outbox claims (SKIP LOCKED) keep each to one of them.
    await core.calendar.start()
    engine = IncidentEngine(
        db=core.db,
        settings=settings,
        calendar=core.calendar,
        monitor_store=core.monitor_store,
        notify=core.dispatcher.wake,
    )
    await engine.start()
    await core.dispatcher.start()
    # Heartbeat status changes go to the incident engine like checked ones.
    core.ping_writer.hooks.subscribe(engine.on_changes)
    core.lateness.hooks.subscribe(engine.on_changes)
    await core.ping_writer.start()
    await core.lateness.start()
    await core.page_views.start()
    await core.log_writer.start()
    await core.log_retention.start()
    # Log alerts count the log store; a round of an alert is claimed by one process.
    log_alerts = LogAlertEvaluator(
        db=core.db, settings=settings, store=core.log_writer.store, notify=core.dispatcher.wake
    )
    await log_alerts.start()
    scheduler: Scheduler | None = None
    if role in ("all", "checker"):
        scheduler = Scheduler(
            db=core.db, store=core.monitor_store, settings=settings, plans=core.plans, metrics=metrics
        )
        scheduler.writer.calendar = core.calendar  # maintenance stays out of the rollups (uptime)
        scheduler.hooks.subscribe(engine.on_changes)
        core.monitors.on_change = scheduler.nudge
        await scheduler.start()
    try:
        if role == "checker":
            await _serve_checker(core, settings, metrics, sock)
        else:
            await _serve_api(core, settings, metrics, sock)
    finally:
        if scheduler is not None:
            await scheduler.stop()
        await log_alerts.stop()
        await core.log_retention.stop()
        await core.log_writer.stop()
        await core.log_tails.close()
        await core.page_views.stop()
        await core.lateness.stop()
        await core.ping_writer.stop()
        await engine.stop()
        await core.dispatcher.stop()
        await core.calendar.stop()
        await core.close()


async def _serve_checker(core: Core, settings: Settings, metrics: ApiMetrics, sock: socket.socket) -> None:
    app = create_app(
        {}, InProcess(core.pipeline), metrics=metrics, ready=core.ready, metrics_token=settings.metrics_token
    )
    http = _uvicorn(app, settings)
    print(
        f"observe checker is running; /health and /metrics on http://{settings.http_host}:{settings.http_port}",
        file=sys.stderr,
        flush=True,
    )
    await http.serve(sockets=[sock])


async def _serve_api(core: Core, settings: Settings, metrics: ApiMetrics, sock: socket.socket) -> None:
    proxies = TrustedProxies.from_setting(settings.trusted_proxies)
    app = create_app(
        core.methods,
        InProcess(core.pipeline),
        metrics=metrics,
        ready=core.ready,
        trusted_proxies=proxies,
        metrics_token=settings.metrics_token,
    )
    grpc_server, grpc_port = await start_grpc(
        core.pipeline,
        core.methods.values(),
        f"{settings.grpc_host}:{settings.grpc_port}",
        metrics,
        trusted_proxies=proxies,
    )
    http = _uvicorn(app, settings)
    base = f"http://{settings.http_host}:{settings.http_port}"
    print(
        f"observe is serving\n"
        f"  REST  {base}/api/v1   docs {base}/docs   OpenAPI {base}/openapi.json\n"
        f"  gRPC  {settings.grpc_host}:{grpc_port}\n"
        f"  data  {core.db.url.split('://', 1)[0]}\n"
        f"First token: observe admin create-user --email you@example.com --print-token",
        file=sys.stderr,
        flush=True,
    )
    # Open live tails would hold uvicorn's graceful shutdown forever (a
    # stream never ends): they end as soon as it begins.
    loop = asyncio.get_running_loop()
    http.on_exit = lambda: loop.call_soon_threadsafe(core.log_tails.end_all)
    try:
        await http.serve(sockets=[sock])
    finally:
        await grpc_server.stop(grace=5)


async def _serve_gateway_only(settings: Settings, upstream: str, sock: socket.socket) -> None:
    methods = build_methods(observe_files(), [])
    dispatcher = Upstream(upstream)

    async def upstream_ready() -> None:
        stub = health_pb2_grpc.HealthStub(dispatcher.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise grpc.RpcError("upstream not serving")

    app = create_app(
        methods,
        dispatcher,
        metrics=ApiMetrics(),
        ready=upstream_ready,
        trusted_proxies=TrustedProxies.from_setting(settings.trusted_proxies),
        metrics_token=settings.metrics_token,
    )
    http = _uvicorn(app, settings)
    print(
        f"observe gateway is serving http://{settings.http_host}:{settings.http_port}/api/v1 -> gRPC {upstream}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await http.serve(sockets=[sock])
    finally:
        await dispatcher.close()
