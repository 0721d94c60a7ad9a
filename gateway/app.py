"""The HTTP application: the generated REST gateway on /api (and the web
pages the protos bind outside it, such as /status/{slug}), and a FastAPI
shell for operations (/health, /metrics), /openapi.json and /docs.

Requests under ``/api/`` and the web pages go straight to the transcoder: its routes are
generated from the descriptors and its hot path needs none of FastAPI's
per-route dependency injection or pydantic models. Everything else is the
FastAPI app. Both are measured by the same metrics wrapper and answer
errors with the same envelope.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import swagger_ui
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ErrorCode, ObserveError
from core.health import NotReadyError
from core.metrics import ApiMetrics
from core.rpc.methods import Method
from core.rpc.proxies import TrustedProxies
from gateway.dispatch import Dispatcher
from gateway.docs_pages import DocPages
from gateway.envelope import error_response, framework_error
from gateway.openapi import build_openapi, load_comments
from gateway.transcoder import Receive, Scope, Send, Transcoder, send_error

log = logging.getLogger("observe.http")

SWAGGER_ASSETS = Path(swagger_ui.__file__).parent / "static"
DESCRIPTOR_SETS = [Path(__file__).resolve().parent.parent / "gen" / "observe" / "v1" / "descriptors.binpb"]

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>observe API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""

# Returns the checks it made (None: just the database), raises when not ready
# (core.health.NotReadyError says which check failed).
ReadyCheck = Callable[[], Awaitable[dict[str, str] | None]]
READY_RETRY_AFTER = 5


def _envelope(err: ObserveError) -> Response:
    status, headers, body = error_response(err)
    return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})


def _not_ready(message: str) -> Response:
    return _envelope(ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, message, retry_after=READY_RETRY_AFTER))


def _bearer_matches(request: Request, token: str | None) -> bool:
    """Constant-time: the reply's timing says nothing about the token."""
    if not token:
        return False
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


def build_shell(
    openapi: dict[str, Any], metrics: ApiMetrics, ready: ReadyCheck, metrics_token: str | None = None
) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="observe")
    openapi_bytes = orjson.dumps(openapi)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        allow = exc.headers.get("Allow", "").split(", ") if exc.headers else None
        return _envelope(framework_error(exc.status_code, allow))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _envelope(framework_error(400))

    @app.get("/health/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", include_in_schema=False)
    async def health_ready() -> Response:
        try:
            checks = await asyncio.wait_for(ready(), timeout=3) or {"database": "ok"}
        except NotReadyError as exc:
            log.warning("not ready: %s", exc)
            return _not_ready(f"not ready: {exc}")
        except Exception as exc:
            log.warning("readiness check failed: %s", type(exc).__name__)
            return _not_ready("not ready: the check failed or timed out")
        status = "ok" if all(state in ("ok", "unused") for state in checks.values()) else "degraded"
        return Response(orjson.dumps({"status": status, "checks": checks}), media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        monitors = _bearer_matches(request, metrics_token)
        return Response(metrics.exposition(monitors=monitors), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> Response:
        return Response(openapi_bytes, media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    @app.get("/docs/openapi", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")
    pages = DocPages()  # docs/<name>.md; after the routes above, so /docs/openapi stays Swagger UI's

    @app.api_route("/docs/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def doc_page(name: str, request: Request) -> Response:
        return pages.response(name, request.method)

    return app


class ObserveApp:
    """Top-level ASGI app: routes /api/ to the transcoder, the rest to the shell,
    and records every request's route, status and latency. A request from a
    trusted proxy gets the client address its forwarded headers name."""

    def __init__(
        self, transcoder: Transcoder, shell: FastAPI, metrics: ApiMetrics, proxies: TrustedProxies | None = None
    ) -> None:
        self.transcoder = transcoder
        self.shell = shell
        self.metrics = metrics
        self.proxies = proxies or TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.shell(scope, receive, send)
            return
        if self.proxies:
            _resolve_client(scope, self.proxies)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_recording(message: Any) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            if self.transcoder.serves(scope["path"]):
                await self.transcoder(scope, receive, send_recording)
            else:
                await self.shell(scope, receive, send_recording)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope.get("observe.route", "?"))
            if not response_started:
                await send_error(send_recording, ObserveError(ErrorCode.ERROR_CODE_INTERNAL, "internal error"))
        finally:
            route = str(scope.get("observe.route") or getattr(scope.get("route"), "path", "unmatched"))
            self.metrics.observe_http(route, scope["method"], status, time.perf_counter() - started)


def _resolve_client(scope: Scope, proxies: TrustedProxies) -> None:
    client = scope.get("client")
    if not client or not proxies.is_trusted_peer(client[0]):
        return
    x_forwarded_for: list[str] = []
    forwarded: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            x_forwarded_for.append(value.decode("latin-1"))
        elif name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
    address = proxies.client(client[0], x_forwarded_for, forwarded)
    if address != client[0]:
        scope["client"] = (address, 0)


def create_app(
    methods: dict[str, Method],
    dispatcher: Dispatcher,
    *,
    metrics: ApiMetrics,
    ready: ReadyCheck,
    descriptor_sets: list[Path] | None = None,
    trusted_proxies: TrustedProxies | None = None,
    metrics_token: str | None = None,
) -> ObserveApp:
    """The whole HTTP app for ``methods``, served through ``dispatcher``.
    Forwarded headers are believed only from ``trusted_proxies`` (serve it
    with uvicorn's own ``proxy_headers`` off); /metrics shows per-monitor
    series only to ``Authorization: Bearer <metrics_token>``."""
    routed = [m for m in methods.values() if m.bindings]
    comments = load_comments(DESCRIPTOR_SETS + (descriptor_sets or []))
    openapi = build_openapi(routed, comments)
    transcoder = Transcoder(routed, dispatcher)
    return ObserveApp(transcoder, build_shell(openapi, metrics, ready, metrics_token), metrics, trusted_proxies)
