"""Every RPC in the descriptor pool has an http rule, a route, an OpenAPI
entry, a rule option and an implementation; every error code a mapping."""

from __future__ import annotations

import re
from typing import Any

import pytest
from buf.validate import validate_pb2
from google.protobuf.descriptor import FieldDescriptor

from core.app import build_core
from core.config import Settings
from core.errors import CODES, ErrorCode
from core.rpc.methods import Method
from gateway.dispatch import InProcess
from gateway.openapi import build_openapi, openapi_path
from gateway.transcoder import Transcoder


@pytest.fixture(scope="module")
def methods(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Method]:
    core = build_core(Settings(data_dir=tmp_path_factory.mktemp("coverage")))
    return core.methods


def _concrete(path: str) -> str:
    """A request path for a template: every variable filled in."""
    path = re.sub(r"\{[^}=]+=([^}]*)\}", lambda m: m.group(1).replace("**", "x/y").replace("*", "1"), path)
    return re.sub(r"\{[^}]+\}", "1", path)


def test_foreign_methods_are_served_with_their_rule(methods: dict[str, Method]) -> None:
    export = methods["/opentelemetry.proto.collector.logs.v1.LogsService/Export"]
    assert export.foreign
    assert export.rule.scope == "logs:write"
    assert export.handler is not None
    assert export.input_class.DESCRIPTOR.full_name == "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest"


def test_the_pool_is_not_empty(methods: dict[str, Method]) -> None:
    assert len(methods) >= 10
    assert {m.service for m in methods.values()} >= {
        "observe.v1.AuthService",
        "observe.v1.MeService",
        "observe.v1.TokenService",
    }


def test_every_rpc_is_complete(methods: dict[str, Method]) -> None:
    transcoder = Transcoder(methods.values(), InProcess(None))  # type: ignore[arg-type]
    spec = build_openapi(methods.values(), {})
    for method in methods.values():
        assert method.has_rule, f"{method.grpc_path} has no (observe.v1.rule)"
        # A foreign method (OTLP's LogsService.Export) is gRPC only: its REST
        # route is one of ours (ExportOtlpLogs).
        assert method.bindings or method.foreign, f"{method.grpc_path} has no google.api.http rule"
        assert method.handler is not None, f"{method.grpc_path} has no implementation"
        if method.rule.mutation:
            assert bool(method.rule.audit_action) != method.rule.unaudited, (
                f"{method.grpc_path} mutates: it names an audit action or says it is unaudited, not both"
            )
        for index, binding in enumerate(method.bindings):
            matched = transcoder.router.match(binding.verb, _concrete(binding.path))
            assert not isinstance(matched, list), f"no route for {binding.verb} {binding.path}"
            assert matched[0].method is method
            operation = spec["paths"][openapi_path(method.descriptor.input_type, binding.path)][binding.verb.lower()]
            suffix = f"_{index + 1}" if index else ""  # additional bindings have ids of their own
            assert operation["operationId"] == f"{method.descriptor.containing_service.name}_{method.name}{suffix}"
            assert str(method.success_status) in operation["responses"]


def test_every_error_code_has_a_mapping() -> None:
    names = {v.name for v in ErrorCode.DESCRIPTOR.values if v.number}
    assert {f"ERROR_CODE_{info.name}" for info in CODES.values()} == names
    for info in CODES.values():
        assert 400 <= info.http_status <= 599, info


def test_contract_codes_are_all_declared() -> None:
    contract = {
        "AUTH_REQUIRED": 401, "TOKEN_INVALID": 401, "TOKEN_EXPIRED": 401, "PAT_SCOPE_INSUFFICIENT": 403,
        "ROLE_INSUFFICIENT": 403, "NOT_FOUND": 404, "VALIDATION_FAILED": 400, "BULK_LIMIT_EXCEEDED": 400,
        "PAYLOAD_TOO_LARGE": 413, "CONFLICT": 409, "SOLE_OWNER": 409, "IDEMPOTENCY_IN_PROGRESS": 409,
        "IDEMPOTENCY_KEY_TOO_LONG": 400, "IDEMPOTENCY_KEY_REUSED": 422, "PAT_DAILY_LIMIT_EXCEEDED": 429,
        "RATE_LIMITED": 429, "PLAN_LIMIT_MONITORS": 402, "PLAN_LIMIT_CHECKS": 402, "PLAN_LIMIT_LOG_BYTES": 402,
        "PASSWORD_REQUIRED": 401, "PASSWORD_INVALID": 401, "INVALID_CREDENTIALS": 401,
        "HEARTBEAT_TOKEN_UNKNOWN": 404, "TARGET_NOT_ALLOWED": 400, "METHOD_NOT_ALLOWED": 405,
        "UNSUPPORTED_MEDIA_TYPE": 415, "INTERNAL": 500, "UNAVAILABLE": 503,
        "OAUTH_FAILED": 400, "LAST_SIGN_IN_METHOD": 409,
    }  # fmt: skip
    assert {info.name: info.http_status for info in CODES.values()} == contract


def _unbounded(desc: Any, path: str, seen: set[str]) -> list[str]:
    """Request fields a client could make arbitrarily large: strings without
    a length bound or a closed set, repeated fields and maps without a size."""
    if desc.full_name in seen or desc.full_name.startswith("google."):
        return []
    seen = seen | {desc.full_name}
    out: list[str] = []
    for fd in desc.fields:
        rules = fd.GetOptions().Extensions[validate_pb2.field]
        where = f"{path}.{fd.name}"
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if not rules.map.HasField("max_pairs"):
                out.append(f"{where} (map without max_pairs)")
            for part, sub in (("keys", rules.map.keys), ("values", rules.map.values)):
                inner = fd.message_type.fields_by_name["key" if part == "keys" else "value"]
                if inner.type == FieldDescriptor.TYPE_STRING and not _bounded_string(sub.string):
                    out.append(f"{where} (map {part} without a length bound)")
            continue
        item = rules.repeated.items if fd.is_repeated else rules
        if fd.is_repeated and not rules.repeated.HasField("max_items"):
            out.append(f"{where} (repeated without max_items)")
        if fd.type == FieldDescriptor.TYPE_STRING and not _bounded_string(item.string):
            out.append(f"{where} (string without a length bound)")
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            out += _unbounded(fd.message_type, where, seen)
    return out


def _bounded_string(rules: Any) -> bool:
    return (
        rules.HasField("max_len") or rules.HasField("max_bytes") or rules.HasField("len") or bool(getattr(rules, "in"))
    )


def test_every_request_field_is_bounded_by_the_proto(methods: dict[str, Method]) -> None:
    """The body limit bounds a request as a whole; each string, list and map
    in it is bounded by its own rule too, so the OpenAPI document says how
    large each may be and no store meets a value it cannot keep."""
    found: set[str] = set()
    for method in methods.values():
        if method.descriptor.containing_service.full_name.startswith("observe.v1."):
            found.update(_unbounded(method.descriptor.input_type, method.descriptor.input_type.name, set()))
    assert sorted(found) == []
