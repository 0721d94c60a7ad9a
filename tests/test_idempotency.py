"""Idempotency-Key, Stripe semantics, over REST and gRPC alike."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select

from core.storage import tables as t
from tests.conftest import Persona, Server, register


def _key() -> str:
    return str(uuid.uuid4())


def _post(srv: Any, persona: Persona, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"idempotency-key": key} if key is not None else {}
    with srv.client(persona.pat) as c:
        response: httpx.Response = c.post("/api/v1/test/records", json=body, headers=headers)
    return response


def test_replay_returns_the_identical_reply_without_running_again(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    first = _post(echo_server, persona, {"text": "hello"}, key)
    second = _post(echo_server, persona, {"text": "hello"}, key)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    third = _post(echo_server, persona, {"text": "hello"}, _key())
    assert third.json()["execution"] > first.json()["execution"]


def test_two_concurrent_requests_run_once_and_one_gets_409(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    body = {"text": "slow", "delayMs": 1500}
    results: list[httpx.Response] = []
    start = threading.Barrier(2)

    def call() -> None:
        start.wait()
        results.append(_post(echo_server, persona, body, key))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 409]
    conflict = next(r for r in results if r.status_code == 409)
    assert conflict.json()["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert int(conflict.headers["retry-after"]) >= 1
    done = next(r for r in results if r.status_code == 201)
    replay = _post(echo_server, persona, body, key)
    assert replay.json() == done.json()  # the one execution, replayed


def test_same_key_with_another_body_is_422(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    assert _post(echo_server, persona, {"text": "a"}, key).status_code == 201
    reused = _post(echo_server, persona, {"text": "b"}, key)
    assert reused.status_code == 422
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_same_key_on_another_route_is_422(owner: Persona) -> None:
    key = _key()
    with owner.client() as c:
        assert c.post("/api/v1/me/tokens", json={"name": "a"}, headers={"idempotency-key": key}).status_code == 201
        other = c.delete("/api/v1/me/tokens/999999", headers={"idempotency-key": key})
    assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")


def test_keys_are_scoped_per_token(echo_server: Any) -> None:
    a, b = register(echo_server), register(echo_server)
    key = _key()
    ra = _post(echo_server, a, {"text": "x"}, key)
    rb = _post(echo_server, b, {"text": "x"}, key)
    assert "idempotent-replayed" not in rb.headers
    assert ra.json()["execution"] != rb.json()["execution"]


def test_a_5xx_is_not_stored_and_a_retry_runs_again(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    failed = _post(echo_server, persona, {"text": "x", "fail": True}, key)
    assert (failed.status_code, failed.json()["code"]) == (500, "INTERNAL")
    again = _post(echo_server, persona, {"text": "x", "fail": True}, key)
    assert again.status_code == 500
    assert "idempotent-replayed" not in again.headers


def test_a_4xx_from_the_handler_is_replayed(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    first = _post(echo_server, persona, {"text": "x", "reject": True}, key)
    second = _post(echo_server, persona, {"text": "x", "reject": True}, key)
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"


def test_key_longer_than_255_is_refused(echo_server: Any) -> None:
    persona = register(echo_server)
    r = _post(echo_server, persona, {"text": "x"}, "k" * 256)
    assert (r.status_code, r.json()["code"]) == (400, "IDEMPOTENCY_KEY_TOO_LONG")
    assert _post(echo_server, persona, {"text": "x"}, "k" * 255).status_code == 201


def test_grpc_uses_the_same_store(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    over_rest = _post(echo_server, persona, {"text": "both"}, key)
    pb2 = echo_server.echo_pb2
    with grpc.insecure_channel(echo_server.grpc_target) as ch:
        record = ch.unary_unary(
            "/observetest.v1.EchoService/Record",
            request_serializer=pb2.RecordRequest.SerializeToString,
            response_deserializer=pb2.RecordResponse.FromString,
        )
        md = (("authorization", f"Bearer {persona.pat}"), ("idempotency-key", key))
        reply, call = record.with_call(pb2.RecordRequest(text="both"), metadata=md)
        assert reply.execution == over_rest.json()["execution"]
        assert ("idempotent-replayed", "true") in list(call.initial_metadata())
        with pytest.raises(grpc.RpcError) as err:
            record(pb2.RecordRequest(text="other"), metadata=md)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_replayed_mint_is_stored_sealed(server: Server, owner: Persona) -> None:
    key = _key()
    with owner.client() as c:
        first = c.post("/api/v1/me/tokens", json={"name": "once"}, headers={"idempotency-key": key})
        second = c.post("/api/v1/me/tokens", json={"name": "once"}, headers={"idempotency-key": key})
    assert first.json() == second.json()
    stored = server.sql(select(t.idempotency_keys.c.response).where(t.idempotency_keys.c.key == key))[0][0]
    assert first.json()["token"].encode() not in bytes(stored)
    assert b"once" not in bytes(stored)


def test_a_claim_left_by_a_crash_lapses(server: Server, owner: Persona) -> None:
    from datetime import UTC, datetime, timedelta

    from observe.v1 import tokens_pb2
    from sqlalchemy import insert

    from core.rpc.idempotency import fingerprint
    from core.rpc.methods import build_method

    create = build_method(tokens_pb2.DESCRIPTOR.services_by_name["TokenService"].methods_by_name["CreateToken"])
    now = datetime.now(UTC)

    def claim(key: str, locked_until: datetime) -> None:
        server.sql(
            insert(t.idempotency_keys).values(
                token_id=owner.pat_id,
                key=key,
                fingerprint=fingerprint(create, tokens_pb2.CreateTokenRequest(name="after-crash")),
                state="in_progress",
                locked_until=locked_until,
                expires_at=now + timedelta(hours=24),
                created_at=now,
            )
        )

    live, lapsed = _key(), _key()
    claim(live, now + timedelta(seconds=30))  # its process is still working
    claim(lapsed, now - timedelta(seconds=1))  # its process died
    with owner.client() as c:
        busy = c.post("/api/v1/me/tokens", json={"name": "after-crash"}, headers={"idempotency-key": live})
        taken = c.post("/api/v1/me/tokens", json={"name": "after-crash"}, headers={"idempotency-key": lapsed})
        replay = c.post("/api/v1/me/tokens", json={"name": "after-crash"}, headers={"idempotency-key": lapsed})
    assert (busy.status_code, busy.json()["code"]) == (409, "IDEMPOTENCY_IN_PROGRESS")
    assert taken.status_code == 201
    assert replay.json() == taken.json()
    assert replay.headers["idempotent-replayed"] == "true"


def test_an_empty_key_is_refused_not_taken_as_none(server: Server, owner: Persona) -> None:
    from observe.v1 import tokens_pb2, tokens_pb2_grpc

    from core.rpc.status import from_rpc_error

    with owner.client() as c:
        before = len(c.get("/api/v1/me/tokens").json()["tokens"])
        r = c.post("/api/v1/me/tokens", json={"name": "empty key"}, headers={"idempotency-key": ""})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED"), r.text
        assert [f["path"] for f in r.json()["fields"]] == ["Idempotency-Key"]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = tokens_pb2_grpc.TokenServiceStub(ch)
        md = (("authorization", f"Bearer {owner.pat}"), ("idempotency-key", ""))
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateToken(tokens_pb2.CreateTokenRequest(name="empty key"), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = from_rpc_error(err.value)
    assert refused.name == "VALIDATION_FAILED"
    assert [f.path for f in refused.fields] == ["Idempotency-Key"]
    with owner.client() as c:
        assert len(c.get("/api/v1/me/tokens").json()["tokens"]) == before  # nothing minted


def test_a_replay_carries_one_set_of_fresh_rate_limit_headers(echo_server: Any) -> None:
    persona = register(echo_server)
    key = _key()
    first = _post(echo_server, persona, {"text": "limits"}, key)
    second = _post(echo_server, persona, {"text": "limits"}, key)
    assert second.headers["idempotent-replayed"] == "true"
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert len(first.headers.get_list(name)) == 1, name
        assert len(second.headers.get_list(name)) == 1, name
    # The replay's own admission counted: what remains is its, not the stored reply's.
    assert int(second.headers["ratelimit-remaining"]) < int(first.headers["ratelimit-remaining"])
    pb2 = echo_server.echo_pb2
    with grpc.insecure_channel(echo_server.grpc_target) as ch:
        record = ch.unary_unary(
            "/observetest.v1.EchoService/Record",
            request_serializer=pb2.RecordRequest.SerializeToString,
            response_deserializer=pb2.RecordResponse.FromString,
        )
        md = (("authorization", f"Bearer {persona.pat}"), ("idempotency-key", key))
        _, call = record.with_call(pb2.RecordRequest(text="limits"), metadata=md)
    sent = [*call.initial_metadata(), *call.trailing_metadata()]
    assert ("idempotent-replayed", "true") in sent
    assert [k for k, _ in sent if k.startswith("ratelimit-")] == [
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ]
