"""The REST error envelope: ``{error, code, fields?, retryAfterSec?}``."""

from __future__ import annotations

from typing import Any

import orjson

from core.errors import ErrorCode, ObserveError


def error_payload(err: ObserveError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": err.message, "code": err.name}
    if err.fields:
        body["fields"] = [{"path": f.path, "code": f.code, "message": f.message} for f in err.fields]
    if err.retry_after is not None:
        body["retryAfterSec"] = err.retry_after
    return body


def error_response(err: ObserveError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the reply for ``err``."""
    content_type = err.page[0].encode() if err.page is not None else b"application/json"
    headers = [(b"content-type", content_type), (b"cache-control", b"no-store")]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(err.retry_after).encode()))
    for key, value in err.headers.items():
        headers.append((key.lower().encode(), value.encode()))
    if err.page is not None:
        headers.append((b"x-error-code", err.name.encode()))
        return err.http_status, headers, err.page[1]
    return err.http_status, headers, orjson.dumps(error_payload(err))


def framework_error(status: int, allow: list[str] | None = None) -> ObserveError:
    """The envelope for errors the HTTP layer itself raises."""
    if status == 404:
        return ObserveError(ErrorCode.ERROR_CODE_NOT_FOUND, "no such route")
    if status == 405:
        err = ObserveError(ErrorCode.ERROR_CODE_METHOD_NOT_ALLOWED, "method not allowed on this route")
        if allow:
            err.headers["Allow"] = ", ".join(allow)
        return err
    if status == 415:
        return ObserveError(ErrorCode.ERROR_CODE_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    if status == 413:
        return ObserveError(ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, "request body too large")
    if status in (400, 422):
        return ObserveError(ErrorCode.ERROR_CODE_VALIDATION_FAILED, "invalid request")
    if status == 503:
        return ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "service unavailable", retry_after=1)
    return ObserveError(ErrorCode.ERROR_CODE_INTERNAL, "internal error")
