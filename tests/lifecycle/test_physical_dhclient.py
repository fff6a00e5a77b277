"""Physical mode and the DHCP client of a machine without dhcpcd, or one run by hand (not by a
systemd unit): ISC dhclient, real, against the ISP's dnsmasq (tests/lifecycle/test_physical.py
has the sandbox's eth0 and the simulated provider). A dhclient run by hand is stopped before
eth0 moves, started again by wgns inside `physical` with its own command line in the
foreground, and started again here, as it was, by `down`. (wpa_supplicant and iwd take the same
path; no wireless device exists here: that is the VM's physical boot.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lifecycle import test_physical as base
from tests.lifecycle.test_physical import ETH, PHYS, RANGE, assert_same, curl, v4, write_profile
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider
from wgns.testing.sim.provider import ISP_V4

LEASES = "/var/lib/dhcp"


@pytest.fixture
def dhcp_host(sandbox: Sandbox, host: Provider) -> Iterator[Provider]:
    """base.host, with dhclient's lease directory private to the sandbox."""
    sandbox.run(["mkdir", "-p", LEASES])
    sandbox.run(["mount", "-t", "tmpfs", "tmpfs", LEASES])
    try:
        yield host
    finally:
        sandbox.run(["pkill", "-x", "dhclient"], check=False)


host = base.host  # the fixture: eth0, its DHCP server, the provider


def dhclients(sandbox: Sandbox) -> list[tuple[str, list[str]]]:
    """The dhclient processes of the sandbox: (where: "main" or "physical", argv)."""
    main = sandbox.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout.strip()
    inside = sandbox.run(["stat", "-L", "-c", "%i", f"/run/netns/{PHYS}"], check=False)
    out = sandbox.run(
        ["sh", "-c", "for p in $(pgrep -x dhclient); do "
         "echo $(stat -L -c %i /proc/$p/ns/net) $(tr '\\0' ' ' </proc/$p/cmdline); done"],
        check=False,
    ).stdout  # fmt: skip
    found = []
    for line in out.splitlines():
        if len(line.split()) < 2:
            continue  # exited meanwhile
        ino, *argv = line.split()
        if ino == main:
            found.append(("main", argv))
        elif inside.returncode == 0 and ino == inside.stdout.strip():
            found.append((PHYS, argv))
    return found


def wait_for_lease(sandbox: Sandbox, ns: str | None) -> str:
    import time

    deadline = time.monotonic() + 30
    while not (got := v4(sandbox, ETH, ns)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got, f"no lease on {ETH} in {ns or 'main'}"
    return got[0]


def test_a_dhclient_run_by_hand_runs_inside_physical_and_here_again_after_down(
    sandbox: Sandbox, dhcp_host: Provider, wgns: Any
) -> None:
    sandbox.run(["ip", "-4", "addr", "flush", "dev", ETH])
    argv = ["dhclient", "-4", "-pf", "/run/dhclient.eth0.pid", "-lf", f"{LEASES}/eth0.leases", ETH]
    sandbox.run(argv, timeout=60)  # it forks into the background once it has its lease
    lease = wait_for_lease(sandbox, None)
    assert dhclients(sandbox) == [("main", argv)]
    profile = write_profile(sandbox, dhcp_host)

    plan = wgns("physical", "up", profile, "--dry-run").stdout
    assert "stop dhclient (pid " in plan and f"started again as `{' '.join(argv)}` at down" in plan
    wgns("physical", "up", profile, "--deadman", "0")
    # the same dhclient, in the foreground (wgns holds its pid), inside physical only
    assert dhclients(sandbox) == [(PHYS, [argv[0], "-d", *argv[1:]])]
    assert wait_for_lease(sandbox, PHYS) == lease  # the same lease file, the same address
    assert curl(sandbox, f"http://{dhcp_host.web_v4}/") == "198.18.1.2"  # at the provider
    # dhclient-script's resolv.conf went to /etc/netns/physical; the main one is the tunnel's
    assert f"nameserver {ISP_V4}" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")
    assert ISP_V4 not in sandbox.read_text("/etc/resolv.conf")
    st = json.loads(wgns("physical", "status", "--json").stdout)
    assert st[0]["daemons"] == {"dhclient": True}

    wgns("physical", "down")
    assert dhclients(sandbox) == [("main", argv)]  # as it ran: its own command line, here
    assert wait_for_lease(sandbox, None) == lease
    assert curl(sandbox, f"http://{dhcp_host.web_v4}/") == lease


def test_without_dhcpcd_wgns_runs_dhclient_inside(
    sandbox: Sandbox, dhcp_host: Provider, wgns: Any
) -> None:
    """dhcpcd made unrunnable in the sandbox's own mounts (an empty file over it): wgns's own
    DHCP client inside is dhclient, and `down` leaves nothing of it."""
    dhcpcd = sandbox.run(["sh", "-c", "command -v dhcpcd"]).stdout.strip()
    sandbox.run(["mount", "--bind", "/dev/null", dhcpcd])
    profile = write_profile(sandbox, dhcp_host)
    before = sandbox.settled_snapshot()

    plan = wgns("physical", "up", profile, "--dry-run").stdout
    assert f"dhclient -d -4 {ETH} (inside {PHYS}, supervised)" in plan
    assert "dhcpcd" not in plan
    wgns("physical", "up", profile, "--deadman", "0")
    assert dhclients(sandbox) == [(PHYS, ["dhclient", "-d", "-4", ETH])]
    lease = wait_for_lease(sandbox, PHYS)
    assert RANGE[0] <= lease <= RANGE[1] and len(lease) == len(RANGE[0])
    assert curl(sandbox, f"http://{dhcp_host.web_v4}/") == "198.18.1.2"
    assert f"nameserver {ISP_V4}" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")

    wgns("physical", "down")
    assert dhclients(sandbox) == []
    assert_same(before, sandbox.settled_snapshot())
