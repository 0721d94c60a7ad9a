"""The ping check: one ICMP echo to the host, up when the reply comes back in time."""

from __future__ import annotations

from time import perf_counter

import icmplib

from core.checks import targets
from core.checks.base import CheckResult, CheckSpec
from core.checks.tcp import add_timing

NOT_PERMITTED = (
    "this server may not send ICMP: allow unprivileged ping with the sysctl net.ipv4.ping_group_range "
    '(e.g. "0 2147483647"), or give the process CAP_NET_RAW'
)


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when an echo reply arrives within the timeout; ``response_ms`` is then the round trip."""
    if not spec.host:
        raise ValueError("a ping check needs a host")
    started = perf_counter()
    addresses = await targets.resolve(spec.host, allow_private=spec.allow_private, timeout=spec.timeout_ms / 1000)
    add_timing(result, "dns", started)
    result.resolved_ip = addresses[0]
    wait = max(spec.timeout_ms / 1000 - (perf_counter() - started), 0.001)
    # Unprivileged ICMP sockets (Linux, macOS) need no root; raw sockets are the fallback where only they work.
    for privileged in (False, True):
        try:
            host = await icmplib.async_ping(addresses[0], count=1, timeout=wait, privileged=privileged)
            break
        except icmplib.SocketPermissionError:
            continue
        except icmplib.ICMPLibError as exc:
            result.reason, result.error = "unreachable", f"{addresses[0]}: {exc}"
            return
    else:
        result.reason, result.error = "ping_not_permitted", NOT_PERMITTED
        return
    if not host.is_alive:
        result.reason = "unreachable"
        result.error = f"no echo reply from {addresses[0]} within {spec.timeout_ms} ms"
        return
    result.ok = True
    result.response_ms = float(host.avg_rtt)
