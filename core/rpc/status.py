"""ObserveError ⇄ gRPC status with google.rpc.ErrorInfo and BadRequest."""

from __future__ import annotations

import gzip
import zlib

import grpc
from google.api import httpbody_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from core.errors import CODES_BY_NAME, ErrorCode, FieldViolation, ObserveError

DOMAIN = "observe.dev"


def to_status(err: ObserveError) -> grpc.Status:
    """The rich gRPC status for ``err``: ErrorInfo(reason=code) always,
    BadRequest when there are field violations, RetryInfo with retry_after."""
    info = err.info
    details = status_pb2.Status(code=info.grpc_status.value[0], message=err.message)
    error_info = error_details_pb2.ErrorInfo(reason=info.name, domain=DOMAIN)
    if err.retry_after is not None:
        error_info.metadata["retryAfterSec"] = str(err.retry_after)
    for key, value in err.headers.items():
        error_info.metadata[f"header:{key}"] = value
    details.details.add().Pack(error_info)
    if err.retry_after is not None:
        # What gRPC clients read (OTLP exporters wait this long before retrying).
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds = err.retry_after
        details.details.add().Pack(retry)
    if err.page is not None:
        # A page for people travels gzip-compressed: status details ride in
        # the trailers, which a peer may cap at 8 KB.
        details.details.add().Pack(httpbody_pb2.HttpBody(content_type=err.page[0], data=gzip.compress(err.page[1])))
    if err.fields:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f.path, description=f.message, reason=f.code)
                for f in err.fields
            ]
        )
        details.details.add().Pack(bad)
    return rpc_status.to_status(details)


def from_rpc_error(exc: grpc.RpcError) -> ObserveError:
    """Reads back an ObserveError from a failed call (the gateway's proxy mode)."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        # grpc.aio's AioRpcError is no grpc.Call, but it has code() all the same.
        code_of = getattr(exc, "code", None)
        code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
        if code == grpc.StatusCode.UNAVAILABLE or code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "upstream unavailable", retry_after=1)
        return ObserveError(ErrorCode.ERROR_CODE_INTERNAL, "internal error")
    err = ObserveError(ErrorCode.ERROR_CODE_INTERNAL, status.message)
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            err.code = CODES_BY_NAME.get(info.reason, ErrorCode.ERROR_CODE_INTERNAL)
            if "retryAfterSec" in info.metadata:
                err.retry_after = int(info.metadata["retryAfterSec"])
            err.headers = {k[7:]: v for k, v in info.metadata.items() if k.startswith("header:")}
        elif any_detail.Is(httpbody_pb2.HttpBody.DESCRIPTOR):
            body = httpbody_pb2.HttpBody()
            any_detail.Unpack(body)
            try:
                err.page = (body.content_type, gzip.decompress(body.data))
            except (OSError, EOFError, zlib.error):
                err.page = None  # not ours: the envelope then
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            err.fields = [FieldViolation(v.field, v.reason, v.description) for v in bad.field_violations]
    if status.code == code_pb2.UNAVAILABLE and err.code == ErrorCode.ERROR_CODE_INTERNAL:
        err.code = ErrorCode.ERROR_CODE_UNAVAILABLE
    return err
