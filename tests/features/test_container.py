"""`wgns up PROFILE --pid PID` (issue 16) end to end: the tunnel in the network namespace of a
process wgns did not start (a stand-in container, tests/features/standin.py), through the
simulated provider: real curl and dig run inside the container, tcpdump on the ISP link."""

from __future__ import annotations

import json
from typing import Any

from tests.features import standin
from tests.lifecycle.test_lifecycle import assert_same, write_profile
from wgns.system import names
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider

NAME = "app"
WG = names.wg_ifname(NAME, "vpn")


def status_of(wgns: Any, ns: str = NAME) -> dict[str, Any]:
    (entry,) = json.loads(wgns("status", ns, "--json").stdout)["namespaces"]
    return entry  # type: ignore[no-any-return]


def curl_inside(c: standin.StandIn, url: str) -> str:
    return c.run(["curl", "-sS", "--max-time", "5", url]).stdout.strip()


def test_pid_gets_the_tunnel_dns_and_down_leaves_host_and_container_as_they_were(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox)
    profile = write_profile(sandbox, provider.client_conf())
    host_before = sandbox.settled_snapshot()
    inside_before = c.snapshot()

    wgns("up", profile, "--pid", str(c.pid), "--name", NAME)

    assert c.links() == sorted(["lo", WG])
    # traffic from inside leaves at the provider; the host is seen with its own address
    assert curl_inside(c, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert sandbox.run(["curl", "-sS", f"http://{provider.web_v4}/"]).stdout.strip() == "198.18.0.2"
    # DNS: the container's own resolv.conf names the tunnel's servers, and dig uses it
    resolv = c.resolv()
    assert f"nameserver {provider.dns_v4}" in resolv and "192.0.2.53" not in resolv
    answer = c.run(["dig", "+short", "+time=2", "+tries=1", "whoami.test", "A"]).stdout.split()
    assert answer == [provider.web_v4]
    assert ("whoami.test", "A") in provider.dns_queries()
    assert provider.isp_dns_queries() == []
    # the host's resolv.conf is not the container's
    assert sandbox.read_text(c.resolv_source) == resolv

    st = status_of(wgns)
    assert st["phase"] == "up" and st["broken"] == [] and st["owner"] == "pre-existing"
    assert st["processes"] and c.pid in [p["pid"] for p in st["processes"]]

    wgns("down", NAME)
    assert_same(host_before, sandbox.snapshot())
    assert_same(inside_before, c.snapshot())
    assert sandbox.read_text(c.resolv_source) == standin.RESOLV
    c.stop()
