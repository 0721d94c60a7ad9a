"""The ``observe`` command: ``serve`` (assembled here, where both transports
are known), ``collector`` (the agent of collector/, which core may not import)
and the core's commands (core.cli: migrate, admin)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from core import cli as core_cli


def main(argv: list[str] | None = None) -> int:
    parser, sub = core_cli.build_parser()
    parser.description = "Uptime monitoring API: checks and their stats, organisations, tokens, audit."
    serve = sub.add_parser("serve", help="serve REST, gRPC and the check scheduler in one process")
    serve.add_argument("--host", help="REST host (OBSERVE_HTTP_HOST, default 127.0.0.1)")
    serve.add_argument(
        "--port", "--http-port", type=int, help="REST port (OBSERVE_HTTP_PORT, default 8080; 0: any free)"
    )
    serve.add_argument("--grpc-host", help="gRPC host (OBSERVE_GRPC_HOST, default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (OBSERVE_GRPC_PORT, default 50051)")
    serve.add_argument("--data-dir", help="data directory (OBSERVE_DATA_DIR, default ./data)")
    serve.add_argument("--database-url", help="database URL (OBSERVE_DATABASE_URL)")
    serve.add_argument(
        "--grpc-upstream",
        metavar="HOST:PORT",
        help="run only the REST gateway, proxying every call to this remote gRPC core",
    )
    serve.add_argument(
        "--role",
        choices=("all", "api", "checker"),
        default="all",
        help="all (default): API and checks; api: REST and gRPC only; checker: checks only, sharing the "
        "monitors with other checkers through leases in the database",
    )
    collector = sub.add_parser("collector", help="run the collector agent: Syslog and Fluent in, OTLP out")
    collector.add_argument("--config", default="collector.toml", help="the TOML file (default collector.toml)")
    args = parser.parse_args(argv)
    if args.command == "collector":
        # Imported here: the collector is its own process and needs none of the server.
        from collector.agent import main as run_collector

        return run_collector(["--config", args.config])
    settings = core_cli.settings_for(args)
    if args.command == "serve":
        from gateway.server import serve as run_server

        with contextlib.suppress(KeyboardInterrupt):
            _event_loop_runner()(run_server(settings, grpc_upstream=args.grpc_upstream, role=args.role))
        return 0
    code = core_cli.run(args, settings)
    if code is None:
        parser.error("unknown command")
    return code or 0


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop when installed (it comes with uvicorn[standard]), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    raise SystemExit(main())
