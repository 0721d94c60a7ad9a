"""The same RPCs over gRPC: same data as REST, errors as rich statuses,
health and reflection."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from observe.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    members_pb2,
    members_pb2_grpc,
    monitors_pb2,
    monitors_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)

from core.rpc.jsonmap import JsonCodec
from tests.conftest import ROOT, Persona, Server

codec = JsonCodec()


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _details(exc: grpc.RpcError) -> tuple[str, list[tuple[str, str]]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [(v.field, v.reason) for v in bad.field_violations]
    return reason, fields


def test_get_me_matches_rest(owner: Persona, channel: grpc.Channel) -> None:
    over_grpc = accounts_pb2_grpc.MeServiceStub(channel).GetMe(accounts_pb2.GetMeRequest(), metadata=_auth(owner.pat))
    with owner.client() as c:
        over_rest = c.get("/api/v1/me").json()
    assert codec.encode(over_grpc) == over_rest


def test_token_list_matches_rest(owner: Persona, channel: grpc.Channel) -> None:
    owner.mint(name="capped", scopes=["monitors:read"], dailyMutationLimit=3)
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    over_grpc = stub.ListTokens(tokens_pb2.ListTokensRequest(), metadata=_auth(owner.pat))
    with owner.client() as c:
        over_rest = c.get("/api/v1/me/tokens").json()
    assert codec.encode(over_grpc) == over_rest
    assert len(over_rest["tokens"]) == 2


def test_mint_and_revoke_over_grpc(owner: Persona, channel: grpc.Channel) -> None:
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    minted = stub.CreateToken(
        tokens_pb2.CreateTokenRequest(name="grpc-bot", scopes=["monitors:*"]), metadata=_auth(owner.pat)
    )
    assert minted.token.startswith("obs_")
    assert minted.prefix == minted.token[:12]
    with owner.client() as c:
        listed = {t["id"]: t for t in c.get("/api/v1/me/tokens").json()["tokens"]}
    assert listed[minted.id]["scopes"] == ["monitors:*"]
    stub.RevokeToken(tokens_pb2.RevokeTokenRequest(id=minted.id), metadata=_auth(owner.pat))
    with pytest.raises(grpc.RpcError) as err:
        accounts_pb2_grpc.MeServiceStub(channel).GetMe(accounts_pb2.GetMeRequest(), metadata=_auth(minted.token))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _details(err.value)[0] == "TOKEN_INVALID"


def test_errors_carry_error_info_and_field_violations(owner: Persona, channel: grpc.Channel) -> None:
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateToken(tokens_pb2.CreateTokenRequest(name="", scopes=["bogus"]), metadata=_auth(owner.pat))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err.value) == ("VALIDATION_FAILED", [("name", "required"), ("scopes[0]", "invalid_enum_value")])


def test_grpc_callers_meet_the_proto_rules_too(owner: Persona, channel: grpc.Channel) -> None:
    """No JSON parser stands in front of gRPC: an enum number the proto does
    not define and a value outside its set are refused by the same rules."""
    stub = monitors_pb2_grpc.MonitorServiceStub(channel)
    bad = monitors_pb2.MonitorInput(name="n", type=99, url="http://h/", interval_sec=45)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMonitor(monitors_pb2.CreateMonitorRequest(monitor=bad), metadata=_auth(owner.pat))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err.value) == (
        "VALIDATION_FAILED",
        [("type", "invalid_enum_value"), ("intervalSec", "invalid_literal")],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.BulkDeleteMonitors(monitors_pb2.BulkDeleteMonitorsRequest(ids=range(1, 102)), metadata=_auth(owner.pat))
    assert _details(err.value)[0] == "BULK_LIMIT_EXCEEDED"


def test_a_role_number_the_proto_does_not_define_is_refused(owner: Persona, channel: grpc.Channel) -> None:
    """role=99 became "member" on one path and a 500 on another (issue 9)."""
    stub = members_pb2_grpc.MemberServiceStub(channel)
    invite = members_pb2.CreateInviteRequest(email="someone@example.com", role=99)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateInvite(invite, metadata=_auth(owner.pat))
    assert _details(err.value) == ("VALIDATION_FAILED", [("role", "invalid_enum_value")])
    change = members_pb2.UpdateMemberRequest(user_id=owner.user_id, role=99)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateMember(change, metadata=_auth(owner.pat))
    assert _details(err.value) == ("VALIDATION_FAILED", [("role", "invalid_enum_value")])


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [([], "AUTH_REQUIRED"), ([("authorization", "Bearer obs_nope")], "TOKEN_INVALID")],
)
def test_authentication_is_the_same_pipeline(
    channel: grpc.Channel, metadata: list[tuple[str, str]], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        accounts_pb2_grpc.MeServiceStub(channel).GetMe(accounts_pb2.GetMeRequest(), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _details(err.value)[0] == reason


def test_scope_is_enforced_over_grpc(owner: Persona, channel: grpc.Channel) -> None:
    narrow = owner.mint(name="narrow", scopes=["monitors:read"])
    with pytest.raises(grpc.RpcError) as err:
        tokens_pb2_grpc.TokenServiceStub(channel).ListTokens(
            tokens_pb2.ListTokensRequest(), metadata=_auth(narrow["token"])
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _details(err.value)[0] == "PAT_SCOPE_INSUFFICIENT"


def test_oversized_message_is_refused(owner: Persona, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        tokens_pb2_grpc.TokenServiceStub(channel).CreateToken(
            tokens_pb2.CreateTokenRequest(name="x" * 20000), metadata=_auth(owner.pat)
        )
    assert _details(err.value)[0] == "PAYLOAD_TOO_LARGE"


def test_login_over_grpc_sends_the_cookie_as_metadata(owner: Persona, channel: grpc.Channel) -> None:
    from tests.conftest import PASSWORD

    reply, call = accounts_pb2_grpc.AuthServiceStub(channel).Login.with_call(
        accounts_pb2.LoginRequest(email=owner.email, password=PASSWORD)
    )
    assert reply.session_token.startswith("obss_")
    assert any(k == "set-cookie" and reply.session_token in v for k, v in call.initial_metadata())


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="observe.v1.TokenService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "observe.v1.TokenService",
        "observe.v1.MeService",
        "observe.v1.AuthService",
        "grpc.health.v1.Health",
    } <= names


def test_reflection_v1_alongside_v1alpha(channel: grpc.Channel, owner: Persona, server: Server) -> None:
    """grpc.reflection.v1 (what current grpcurl, buf curl and Postman ask for
    first) and v1alpha both list and describe every service."""
    from google.protobuf import descriptor_pb2

    def ask(service: str, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        # v1 is v1alpha's messages in another package: the same bytes on the wire.
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return next(iter(info(iter([request]))))

    for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        listed = ask(service, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {"observe.v1.MeService", "grpc.reflection.v1.ServerReflection"} <= names, service
        for symbol, package in (
            ("observe.v1.MeService", "observe.v1"),
            ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1"),
        ):
            reply = ask(service, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in reply.file_descriptor_response.file_descriptor_proto
            ]
            assert package in {f.package for f in files}, (service, symbol, reply.error_response)

    buf = ROOT / ".venv" / "bin" / "buf"
    if not buf.exists():
        return
    # buf curl: an independent reflection client, made to speak v1 only.
    base = f"http://{server.grpc_target}"
    common = [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1"]
    listed_by_buf = subprocess.run([*common, "--list-services", base], capture_output=True, text=True, timeout=60)
    assert listed_by_buf.returncode == 0, listed_by_buf.stderr
    assert "observe.v1.MeService" in listed_by_buf.stdout.split()
    me = subprocess.run(
        [*common, "-H", f"authorization: Bearer {owner.pat}", f"{base}/observe.v1.MeService/GetMe"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["email"] == owner.email
