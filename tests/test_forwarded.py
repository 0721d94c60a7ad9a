"""`X-Forwarded-For` / `Forwarded` are believed only from addresses in
OBSERVE_TRUSTED_PROXIES, on REST and gRPC alike (CONTRACT.md, input
hygiene): a client cannot walk around the per-IP login limit by naming
another address, and a trusted proxy's client is counted by its own address.

Clients come from other loopback addresses (127.0.0.2 …) to look like other
machines: httpx binds its source address; gRPC goes through a TCP proxy that
connects from the address wanted."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from observe.v1 import accounts_pb2, accounts_pb2_grpc

from core.rpc.proxies import TrustedProxies
from tests.conftest import PASSWORD, Server, start_server, stop_server
from tests.faults import TcpProxy

# An hour, not a minute: the sliding-window counter weighs the previous
# window by the part of it still in view, so a run that crosses a window
# boundary would be let through once more.
LIMIT = {"OBSERVE_RATE_LIMIT_AUTH_IP": "3/hour"}
LOGIN = {"email": "nobody@example.com", "password": PASSWORD}


def rest_login(server: Server, source: str = "127.0.0.1", **headers: str) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=30) as c:
        return c.post("/api/v1/auth/login", json=LOGIN, headers=headers).status_code


def grpc_login(target: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        stub = accounts_pb2_grpc.AuthServiceStub(channel)
        try:
            stub.Login(accounts_pb2.LoginRequest(email=LOGIN["email"], password=PASSWORD), metadata=metadata)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Trusts 127.0.0.2 only: 127.0.0.1 is an ordinary client. Each test
    spends the limits of addresses of its own."""
    tmp = tmp_path_factory.mktemp("trusting")
    srv = start_server(tmp, backend="sqlite", extra_env={**LIMIT, "OBSERVE_TRUSTED_PROXIES": "127.0.0.2/32"})
    yield srv
    stop_server(srv)


def test_spoofed_headers_from_an_untrusted_client_do_not_walk_around_the_limit(trusting: Server) -> None:
    # One client, a new made-up address on every call, on both transports:
    # all count against 127.0.0.1's one limit of 3.
    rest = [
        rest_login(trusting, **{"x-forwarded-for": "203.0.113.1"}),
        rest_login(trusting, forwarded="for=203.0.113.2"),
        rest_login(trusting, **{"x-forwarded-for": "203.0.113.3", "forwarded": "for=203.0.113.3"}),
    ]
    assert rest == [401, 401, 401]
    spoofed_grpc = grpc_login(trusting.grpc_target, [("x-forwarded-for", "203.0.113.4")])
    assert spoofed_grpc == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_login(trusting.grpc_target, [("forwarded", "for=203.0.113.5")]) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rest_login(trusting, **{"x-forwarded-for": "203.0.113.6"}) == 429


def test_a_trusted_proxy_counts_each_client_by_its_forwarded_address(trusting: Server) -> None:
    proxy = "127.0.0.2"
    first = [rest_login(trusting, proxy, **{"x-forwarded-for": "198.51.100.7"}) for _ in range(3)]
    assert first == [401, 401, 401]
    # The same client again, by the other header, and behind a spoofed entry
    # it wrote itself (only the proxy's own, rightmost entry is believed).
    assert rest_login(trusting, proxy, forwarded='for="198.51.100.7:4711"') == 429
    assert rest_login(trusting, proxy, **{"x-forwarded-for": "192.0.2.99, 198.51.100.7"}) == 429
    # Another client behind the same proxy has its own limit; so has the proxy.
    assert rest_login(trusting, proxy, **{"x-forwarded-for": "198.51.100.8"}) == 401
    assert rest_login(trusting, proxy) == 401


def test_a_trusted_proxy_counts_each_grpc_client_by_its_forwarded_address(trusting: Server) -> None:
    host, port = trusting.grpc_target.rsplit(":", 1)
    proxy = TcpProxy(host, int(port), source="127.0.0.2")
    try:
        via = f"127.0.0.1:{proxy.port}"
        client = [("x-forwarded-for", "198.51.100.20")]
        codes = [grpc_login(via, client) for _ in range(4)]
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert grpc_login(via, [("forwarded", 'for="198.51.100.20"')]) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert grpc_login(via, [("x-forwarded-for", "198.51.100.21")]) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def gateways(trusting: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Two proxy-mode gateways in front of ``trusting``: one reaches it from
    127.0.0.2 (trusted), the other from 127.0.0.5 (not)."""
    host, port = trusting.grpc_target.rsplit(":", 1)
    routes = {
        "trusted": TcpProxy(host, int(port), source="127.0.0.2"),
        "untrusted": TcpProxy(host, int(port), source="127.0.0.5"),
    }
    tmp = tmp_path_factory.mktemp("gateways")

    def start(name: str) -> Server:
        upstream = f"127.0.0.1:{routes[name].port}"
        return start_server(tmp / name, backend="sqlite", args=["--grpc-upstream", upstream])

    with ThreadPoolExecutor(2) as pool:
        started = dict(zip(routes, pool.map(start, routes), strict=True))
    yield started
    for server in started.values():
        stop_server(server)
    for route in routes.values():
        route.close()


@pytest.mark.slow
@pytest.mark.parametrize("route", ["trusted", "untrusted"])
def test_proxy_mode_forwards_the_client_address_only_to_a_core_that_trusts_the_gateway(
    gateways: dict[str, Server], route: str
) -> None:
    # Clients of the gateway come from 127.0.0.3 and 127.0.0.4.
    gateway = gateways[route]
    assert [rest_login(gateway, "127.0.0.3") for _ in range(3)] == [401, 401, 401]
    assert rest_login(gateway, "127.0.0.3") == 429
    # Trusted: .4 is counted on its own. Not trusted: the core sees only the
    # gateway, whose limit .3 has spent, whatever metadata the gateway sends.
    assert rest_login(gateway, "127.0.0.4") == (401 if route == "trusted" else 429)


@pytest.mark.parametrize(
    ("peer", "x_forwarded_for", "forwarded", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], [], "203.0.113.9"),  # not a proxy of ours
        ("10.0.0.5", [], [], "10.0.0.5"),  # a proxy, speaking for itself
        ("10.0.0.5", ["198.51.100.1"], [], "198.51.100.1"),
        ("10.0.0.5", ["6.6.6.6, 198.51.100.1"], [], "198.51.100.1"),  # left entry written by the client
        ("10.0.0.5", ["198.51.100.1, 10.0.0.7"], [], "198.51.100.1"),  # two proxies of ours
        ("10.0.0.5", ["6.6.6.6", "198.51.100.1"], [], "198.51.100.1"),  # header lines join in order
        ("10.0.0.5", ["10.0.0.8, 10.0.0.7"], [], "10.0.0.8"),  # only proxies: the farthest
        ("10.0.0.5", ["198.51.100.1:5555"], [], "198.51.100.1"),
        ("10.0.0.5", ["[2001:db8::1]:443"], [], "2001:db8::1"),
        ("10.0.0.5", ["unknown"], [], "10.0.0.5"),  # unreadable: the proxy that wrote it
        ("10.0.0.5", ["6.6.6.6, garbage, 10.0.0.7"], [], "10.0.0.7"),
        ("10.0.0.5", [], ['for="[2001:db8::2]:80";proto=https'], "2001:db8::2"),
        ("10.0.0.5", [], ["for=6.6.6.6, for=198.51.100.3;by=10.0.0.5"], "198.51.100.3"),
        ("10.0.0.5", [], ["proto=https"], "10.0.0.5"),
        ("10.0.0.5", [], ["for=_hidden"], "10.0.0.5"),
        ("10.0.0.5", ["198.51.100.4"], ["for=198.51.100.5"], "198.51.100.4"),  # X-Forwarded-For wins
        ("::ffff:10.0.0.5", ["198.51.100.6"], [], "198.51.100.6"),  # IPv4-mapped peer
        ("", ["198.51.100.1"], [], ""),  # a unix socket
    ],
)
def test_the_client_address_is_read_from_the_right(
    peer: str, x_forwarded_for: list[str], forwarded: list[str], client: str
) -> None:
    proxies = TrustedProxies.from_setting("10.0.0.0/24")
    assert proxies.client(peer, x_forwarded_for, forwarded) == client


def test_a_setting_entry_that_is_not_an_address_or_cidr_is_refused() -> None:
    assert TrustedProxies.from_setting("10.0.0.0/8, 192.168.1.7 ::1").networks[1].num_addresses == 1
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an address or CIDR"):
        TrustedProxies.from_setting("10.0.0.0/8, proxy.local")
