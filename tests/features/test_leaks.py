"""Leak tests: nothing but WireGuard ever leaves, whatever runs inside and however the tunnel fails.

Every packet on the link between the sandbox host and its simulated ISP is captured (tcpdump,
``Provider.capture``) while programs inside send TCP, UDP, ICMP, DNS and IPv6 (link-local and
multicast included): with the tunnel up, and after each way of bringing it down (peer
unreachable, wireguard-go killed, interface deleted, endpoint address changed); test_escapes
has programs inside that try to get around the tunnel. The assertion is always the same: on
that link there is only WireGuard UDP between the host and the peer's endpoint (and, inbound,
ICMP errors about those datagrams), and no server anywhere sees the host's own address on
traffic from inside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.features.leakwatch import (
    NS,
    UP_TIMEOUT,
    WG,
    assert_no_server_saw_the_host,
    assert_nothing_gets_through,
    assert_only_wireguard,
    assert_tunnel_works,
    battery,
    up,
)
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4-only", "dual-stack"])
def test_tunnel_up_only_wireguard_leaves(
    ipv6: bool, sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    tag = f"up{int(ipv6)}"
    with provider.capture() as cap:
        up(sandbox, provider, wgns, ipv6=ipv6)
        got = battery(sandbox, provider, tag, timeout=UP_TIMEOUT)
    assert_tunnel_works(got, ipv6=ipv6, provider=provider, tag=tag)
    assert_only_wireguard(cap, provider, expect_wireguard=True)
    assert_no_server_saw_the_host(provider, tag)
    status = json.loads(wgns("status", NS, "--json").stdout)["namespaces"][0]
    assert status["ipv6"] == ("tunnelled" if ipv6 else "blocked")
    assert ("IPv6 tunnelled" if ipv6 else "IPv6 blocked") in wgns("status", NS).stdout


# Ways of bringing the tunnel down -------------------------------------------------------------


def _peer_unreachable(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    provider.cut_endpoint()


def _daemon_killed(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    doc = json.loads(wgns("status", NS, "--json").stdout)
    pid = doc["namespaces"][0]["interfaces"][0]["daemon"]["pid"]
    sandbox.run(["kill", "-9", str(pid)])
    deadline = time.monotonic() + 5
    while WG in sandbox.run(["ip", "-br", "link"], netns=NS).stdout:
        assert time.monotonic() < deadline, "the tun device outlived its daemon"
        time.sleep(0.02)


def _interface_deleted(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    sandbox.run(["ip", "link", "del", WG], netns=NS)


def _endpoint_moved(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    """The server changes address (198.18.1.2 -> .3); the client still has the old one."""
    sandbox.run(
        ["ip", "-b", "-"],
        netns=provider.server.netns,
        input="addr del 198.18.1.2/24 dev eth0\naddr add 198.18.1.3/24 dev eth0\n"
        "route replace default via 198.18.1.1 dev eth0\n",
    )


OUTAGES: dict[str, Callable[[Sandbox, Provider, Any], None]] = {
    "peer unreachable": _peer_unreachable,
    "daemon killed": _daemon_killed,
    "interface deleted": _interface_deleted,
    "endpoint address changed": _endpoint_moved,
}


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_tunnel_down_programs_get_errors_and_nothing_leaks(
    outage: str, sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    tag = "down" + "".join(w[0] for w in outage.split())
    with provider.capture() as cap:
        up(sandbox, provider, wgns)
        got = battery(sandbox, provider, tag + "a", UP_TIMEOUT)
        assert_tunnel_works(got, ipv6=False, provider=provider, tag=tag + "a")
        OUTAGES[outage](sandbox, provider, wgns)
        got = battery(sandbox, provider, tag + "b")
        assert_nothing_gets_through(got)
        if outage in ("daemon killed", "interface deleted"):
            # no interface left but lo: everything fails at once
            for k in ("http4", "udp4", "dns_tunnel", "dns_isp", "endpoint", "mdns4"):
                assert got[k] == "ENETUNREACH", (k, got)
            assert got["allnodes6"] != "sent", got
        # the self-test says so too
        proc = wgns("check", NS, "--timeout", "1", check=False)
        assert proc.returncode == 1, proc.stdout
        assert "FAIL dns:" in proc.stdout
    assert_only_wireguard(cap, provider, expect_wireguard=True)
    assert_no_server_saw_the_host(provider, tag)
    wgns("down", NS)


# Hostile programs ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _bounded_time() -> Iterator[None]:
    t0 = time.monotonic()
    yield
    assert time.monotonic() - t0 < 45, "a leak test took more than 45 s"
