"""Physical mode end to end, in a sandbox standing in for the host: its "eth0" is a veth to the
simulated ISP, where a real DHCP server (dnsmasq) runs; the simulated provider is behind it.
`wgns physical up` moves eth0 into `physical`, where dhcpcd (started and supervised by wgns)
gets a lease; the main namespace is left with lo and the tunnel."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from wgns.testing.sandbox import SANDBOX_TMP, Sandbox, snapshot_diff
from wgns.testing.sim import Provider
from wgns.testing.sim.provider import HOST_UPLINK, ISP_V4
from wgns.testing.sim.topology import ISP_HOST_IF, ISP_NS

PHYS = "physical"
ETH = "eth0"
RANGE = ("198.18.0.100", "198.18.0.150")


def _dnsmasq(sandbox: Sandbox) -> subprocess.Popen[Any]:
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",  # DHCP only: the ISP's DNS server is the simulator's
        f"--interface={ISP_HOST_IF}",
        "--bind-interfaces",
        f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,1h",
        f"--dhcp-option=option:router,{ISP_V4}",
        f"--dhcp-option=option:dns-server,{ISP_V4}",
        f"--dhcp-leasefile={SANDBOX_TMP}/dnsmasq.leases",
        "--pid-file=",
        "--log-facility=-",
        "--log-dhcp",
    ]
    return sandbox.popen(argv, netns=ISP_NS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def host(sandbox: Sandbox, provider: Provider) -> Iterator[Provider]:
    """The sandbox's uplink renamed eth0 (static 198.18.0.2/24 and default routes, as the
    simulator made it), a DHCP server on the ISP's side of it, and dhcpcd's lease directory
    private to the sandbox."""
    sandbox.run(["ip", "link", "set", HOST_UPLINK, "down"])
    sandbox.run(["ip", "link", "set", HOST_UPLINK, "name", ETH])
    sandbox.run(["ip", "link", "set", ETH, "up"])
    sandbox.run(["ip", "route", "replace", "default", "via", ISP_V4, "dev", ETH])
    # a link going down loses its IPv6 addresses (keep_addr_on_down=0)
    sandbox.run(["ip", "-6", "addr", "add", "2001:db8::2/64", "dev", ETH, "nodad"])
    sandbox.run(["ip", "-6", "route", "replace", "default", "via", "2001:db8::1", "dev", ETH])
    sandbox.run(["mkdir", "-p", "/var/lib/dhcpcd"])
    sandbox.run(["mount", "-t", "tmpfs", "tmpfs", "/var/lib/dhcpcd"])
    _dnsmasq(sandbox)
    yield provider


def write_profile(sandbox: Sandbox, provider: Provider, **kw: Any) -> str:
    path = f"{SANDBOX_TMP}/phys.conf"
    sandbox.write_file(path, provider.client_conf(ipv6=False, **kw), mode=0o600)
    return path


def links(sandbox: Sandbox, ns: str | None = None) -> list[str]:
    out = sandbox.run(["ip", "-j", "link"], netns=ns).stdout
    return sorted(link["ifname"] for link in json.loads(out))


def v4(sandbox: Sandbox, ifname: str, ns: str | None) -> list[str]:
    out = sandbox.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], netns=ns).stdout
    return [a["local"] for d in json.loads(out) for a in d["addr_info"]]


def curl(sandbox: Sandbox, url: str, ns: str | None = None) -> str:
    return sandbox.run(["curl", "-sS", "--max-time", "5", url], netns=ns).stdout.strip()


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    diffs = snapshot_diff(before, after)
    assert not diffs, "system state changed:\n" + "\n".join(d[:2000] for d in diffs[:20])


def test_up_moves_eth0_dhcp_inside_tunnel_outside_and_down_restores(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    provider = host
    profile = write_profile(sandbox, provider)
    resolv_before = sandbox.read_text("/etc/resolv.conf")
    before = sandbox.settled_snapshot()

    wgns("physical", "up", profile, "--deadman", "0")

    # eth0 is inside physical, with an address from the DHCP server
    assert ETH in links(sandbox, PHYS)
    (lease,) = v4(sandbox, ETH, PHYS)
    assert RANGE[0] <= lease <= RANGE[1] and len(lease) == len(RANGE[0])
    # the main namespace holds lo and the tunnel, nothing else
    main = links(sandbox)
    assert len(main) == 2 and "lo" in main, main
    (tunnel,) = [n for n in main if n != "lo"]
    assert tunnel.startswith("wg")
    # traffic from the main namespace leaves at the provider; from physical at the ISP
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert curl(sandbox, f"http://{provider.web_v4}/", PHYS) == lease
    seen = wgns(
        "physical", "exec", "--", "curl", "-sS", "--max-time", "5", f"http://{provider.web_v4}/"
    )
    assert seen.stdout.strip() == lease
    # dhcpcd's resolv.conf went to /etc/netns/physical; the main one is the tunnel's
    assert f"nameserver {ISP_V4}" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")
    assert "dhcpcd" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")
    main_resolv = sandbox.read_text("/etc/resolv.conf")
    assert f"nameserver {provider.dns_v4}" in main_resolv and ISP_V4 not in main_resolv
    st = json.loads(wgns("physical", "status", "--json").stdout)
    assert st[0]["links"] == [ETH] and st[0]["daemons"] == {"dhcpcd": True}

    wgns("physical", "down")
    assert sandbox.read_text("/etc/resolv.conf") == resolv_before
    assert_same(before, sandbox.settled_snapshot())
