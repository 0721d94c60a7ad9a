"""How checks resolve names: a DNS server that never answers delays only its own monitors, and what the
server's resolver knows about private addresses stays out of check results.

Real servers on this machine: an HTTP target, a DNS zone made the server's resolver with
``OBSERVE_DNS_SERVERS``, and a black hole (UDP and TCP sockets that take questions and never answer), both
asked directly (a dns monitor's ``dnsResolver``) and behind the zone (names delegated to it, the way an
attacker's domain would have a silent authoritative server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from core.checks import resolver, run_check
from core.checks.base import CheckResult, CheckSpec
from tests.dns_servers import black_hole, zone_server
from tests.targets import Target, http_target

NOT_ALLOWED = (
    "private.test resolves to a private or reserved address: not allowed (monitors may only reach public hosts)"
)


@pytest.fixture(scope="module")
def silent() -> Iterator[tuple[str, int]]:
    with black_hole() as address:
        yield address


@pytest.fixture(scope="module")
def nameserver(silent: tuple[str, int]) -> Iterator[str]:
    with zone_server({"stall.test.": silent}) as address:
        yield address


@pytest.fixture
def dns_servers(nameserver: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(resolver.DNS_SERVERS_ENV, nameserver)
    resolver.server_resolver.cache_clear()
    yield nameserver
    resolver.server_resolver.cache_clear()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with http_target() as tgt:
        tgt.server.socket.listen(64)  # room for every check's connection at once: no SYN waits a retransmit
        yield tgt


def spec(kind: str, **fields: Any) -> CheckSpec:
    return CheckSpec(**{"type": kind, "timeout_ms": 2000, **fields})


def run(*specs: CheckSpec) -> list[CheckResult]:
    async def together() -> list[CheckResult]:
        return list(await asyncio.gather(*(run_check(s) for s in specs)))

    return asyncio.run(together())


# One org's silent DNS server


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # uvloop: what observe serve runs on
def test_a_dns_server_that_never_answers_delays_only_its_own_monitors(
    dns_servers: str, silent: tuple[str, int], target: Target, loop: str
) -> None:
    port = target.server.server_address[1]
    # More stalled lookups than the event loop's resolver threads (at most 32) could ever hold.
    stalled = [
        spec("http", url=f"http://site{i}.stall.test:{port}/", timeout_ms=1000, allow_private=True) for i in range(40)
    ] + [
        spec(
            "dns",
            host=f"n{i}.example.com",
            dns_resolver=f"{silent[0]}:{silent[1]}",
            timeout_ms=1000,
            allow_private=True,
        )
        for i in range(8)
    ]
    places: list[tuple[str, dict[str, Any]]] = [
        ("http", {"url": f"http://up.test:{port}/"}),
        ("keyword", {"url": f"http://up.test:{port}/", "keyword": "all good"}),
        ("tcp", {"host": "up.test", "port": port}),
        ("dns", {"host": "public.test", "expected_value": "1.2.3.4"}),
    ]
    others = [spec(kind, allow_private=True, **where) for kind, where in places for _ in range(5)]

    async def stalled_first() -> tuple[list[CheckResult], list[CheckResult]]:
        waiting = asyncio.gather(*(run_check(s) for s in stalled))
        await asyncio.sleep(0.2)  # every stalled question is out and waiting on the black hole
        return list(await asyncio.gather(*(run_check(s) for s in others))), list(await waiting)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        answered, timed_out = runner.run(stalled_first())

    assert [(r.ok, r.error) for r in answered] == [(True, None)] * len(others)
    slow = [(r.response_ms, r.timings) for r in answered if r.response_ms is None or r.response_ms >= 500]
    assert not slow
    assert all(r.timings["dns"] < 500 for r in answered)
    assert all({"dns", "connect", "first_byte"} <= r.timings.keys() for r in answered[:10])  # http, keyword
    assert {(r.ok, r.reason) for r in timed_out[:40]} == {(False, "timeout")}
    assert {(r.ok, r.reason) for r in timed_out[40:]} == {(False, "dns")}  # the dns check names its resolver
    assert timed_out[40].error == f"no answer from {silent[0]}:{silent[1]} within 1000 ms"


# What the server's resolver knows stays private


@pytest.mark.parametrize("kind", ["http", "tcp", "tls", "ping"])
def test_a_name_resolving_to_a_private_address_is_not_allowed_without_naming_it(dns_servers: str, kind: str) -> None:
    where = {"url": "https://private.test/"} if kind in ("http", "tls") else {"host": "private.test", "port": 5432}
    [result] = run(spec(kind, **where))
    assert (result.ok, result.reason, result.error) == (False, "target_not_allowed", NOT_ALLOWED)
    assert result.resolved_ip is None


def test_a_dns_monitor_does_not_show_the_servers_private_answers(dns_servers: str) -> None:
    results = run(
        spec("dns", host="private.test"),
        spec("dns", host="private.test", dns_record_type="AAAA"),
        spec("dns", host="private.test", expected_value="10.9.9.9"),
        spec("dns", host="private.test", expected_value="10.1.2.3"),  # a right guess is not confirmed either
    )
    for result in results:
        assert (result.ok, result.reason, result.error) == (False, "target_not_allowed", NOT_ALLOWED)
        assert "dns" in result.timings


def test_a_dns_monitor_does_not_look_up_private_or_local_names(dns_servers: str) -> None:
    reverse, local = run(
        spec("dns", host="10.1.2.3", dns_record_type="PTR"), spec("dns", host="db.internal", dns_record_type="TXT")
    )
    assert (reverse.ok, reverse.reason, reverse.timings) == (False, "target_not_allowed", {})
    assert (local.ok, local.reason, local.timings) == (False, "target_not_allowed", {})
    assert "db.corp.example" not in str(reverse.error)


def test_a_dns_monitor_shows_public_answers_and_private_ones_when_allowed(dns_servers: str) -> None:
    public, mismatch, allowed, reverse = run(
        spec("dns", host="public.test", expected_value="1.2.3.4"),
        spec("dns", host="public.test", expected_value="5.6.7.8"),
        spec("dns", host="private.test", expected_value="10.1.2.3", allow_private=True),
        spec("dns", host="10.1.2.3", dns_record_type="PTR", expected_value="db.corp.example", allow_private=True),
    )
    assert [public.ok, allowed.ok, reverse.ok] == [True] * 3, (public.error, allowed.error, reverse.error)
    assert (mismatch.reason, mismatch.error) == ("dns_mismatch", "expected '5.6.7.8', got 1.2.3.4")


def test_failures_of_the_servers_resolver_do_not_name_it(dns_servers: str) -> None:
    queried, looked_up = run(spec("dns", host="servfail.test"), spec("http", url="http://servfail.test/"))
    assert (queried.reason, queried.error) == (
        "dns",
        "the server's resolver could not answer for servfail.test (SERVFAIL or refused)",
    )
    assert (looked_up.reason, looked_up.error) == (
        "dns",
        "could not resolve servfail.test: Temporary failure in name resolution",
    )
