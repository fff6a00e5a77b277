"""Physical mode end to end, in a sandbox standing in for the host: its "eth0" is a veth to the
simulated ISP, where a real DHCP server (dnsmasq) runs; the simulated provider is behind it.
`wgns physical up` moves eth0 into `physical`, where dhcpcd (started and supervised by wgns)
gets a lease; the main namespace is left with lo and the tunnel."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from wgns.testing.sandbox import REPO_ROOT, SANDBOX_TMP, Sandbox, snapshot_diff
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
    as_nobody = wgns("physical", "exec", "--user", "nobody", "--", "id", "-u")
    assert as_nobody.stdout.strip() == "65534"
    # dhcpcd's resolv.conf went to /etc/netns/physical; the main one is the tunnel's
    assert f"nameserver {ISP_V4}" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")
    assert "dhcpcd" in sandbox.read_text(f"/etc/netns/{PHYS}/resolv.conf")
    main_resolv = sandbox.read_text("/etc/resolv.conf")
    assert f"nameserver {provider.dns_v4}" in main_resolv and ISP_V4 not in main_resolv
    st = json.loads(wgns("physical", "status", "--json").stdout)
    assert st[0]["links"] == [ETH] and st[0]["daemons"] == {"dhcpcd": True}
    assert "dead-man switch: off" in wgns("physical", "status").stdout
    assert wgns("status").returncode == 0  # the general status reads the record too
    # `wgns up` would take the tunnel in the main namespace for a broken one: refused
    again = wgns("up", profile, "--name", PHYS, check=False)
    assert again.returncode == 1 and "physical mode's namespace" in again.stderr

    wgns("physical", "down")
    assert sandbox.read_text("/etc/resolv.conf") == resolv_before
    assert_same(before, sandbox.settled_snapshot())


def _steps(sandbox: Sandbox, wgns: Any, profile: str, *extra: str) -> list[str]:
    plan = wgns("physical", "up", profile, "--dry-run", *extra).stdout.splitlines()
    assert plan and PHYS not in sandbox.netns_names()  # a dry run changes nothing
    return plan


def test_dry_run_prints_the_plan_in_order_and_changes_nothing(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    profile = write_profile(sandbox, host)
    before = sandbox.settled_snapshot()
    plan = _steps(sandbox, wgns, profile)
    assert_same(before, sandbox.snapshot())
    text = "\n".join(plan)
    assert "PrivateKey" not in text and "keys not shown" in text

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(plan) if needle in line)

    # the main namespace is sealed (kill switch) before anything moves; the tunnel comes into
    # it once created in physical; the dead-man switch is armed last
    assert at("ip netns add physical") < at("nft -f -") < at(f"ip link set {ETH} netns physical")
    assert at(f"netns {PHYS} (state") < at("dhcpcd") < at("netns <main>") < at("dead-man")
    assert at("dead-man") == len(plan) - 1


def test_sigkill_at_every_step_then_down_or_recover_restores_everything(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    profile = write_profile(sandbox, host)
    resolv_before = sandbox.read_text("/etc/resolv.conf")
    before = sandbox.settled_snapshot()
    # with the dead-man switch armed (the last step): `down` stops the watcher too
    steps = len(_steps(sandbox, wgns, profile))
    assert steps >= 11
    n = 0
    for step in range(steps):
        for when in ("", "+"):
            env = {"WGNS_FAULT_KILL_AT": f"{step}{when}"}
            proc = wgns("physical", "up", profile, check=False, env=env)
            assert proc.returncode == -9, (step, when, proc.stderr)
            # half the time `physical down`, half the time `recover` (from a console)
            how = ("physical", "down") if n % 2 == 0 else ("recover",)
            n += 1
            back = wgns(*how, check=False)
            assert back.returncode == 0, (step, when, how, back.stderr)
            assert sandbox.read_text("/etc/resolv.conf") == resolv_before, (step, when)
            after = sandbox.settled_snapshot()
            diffs = snapshot_diff(before, after)
            assert not diffs, (step, when, how, diffs[:10])
    # and after all that, physical mode still works
    wgns("physical", "up", profile, "--deadman", "0")
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"
    wgns("recover")
    assert_same(before, sandbox.settled_snapshot())


def test_refusals_change_nothing(sandbox: Sandbox, host: Provider, wgns: Any) -> None:
    profile = write_profile(sandbox, host)
    before = sandbox.settled_snapshot()
    for args, words in (
        (("--iface", "nosuch0"), "no interface nosuch0"),
        (("--iface", "lo"), "loopback"),
    ):
        proc = wgns("physical", "up", profile, *args, check=False)
        assert proc.returncode == 1 and words in proc.stderr, proc.stderr
    sandbox.run(["ip", "link", "add", "br0", "type", "bridge"])
    proc = wgns("physical", "up", profile, "--iface", "br0", check=False)
    assert "cannot move to another namespace" in proc.stderr
    sandbox.run(["ip", "link", "del", "br0"])
    # an endpoint that does not resolve: refused before anything moves
    bad = f"{SANDBOX_TMP}/bad.conf"
    sandbox.write_file(
        bad, host.client_conf(ipv6=False, endpoint="nosuch.invalid:51820"), mode=0o600
    )
    proc = wgns("physical", "up", bad, check=False)
    assert proc.returncode == 1 and "cannot resolve endpoint" in proc.stderr, proc.stderr
    assert_same(before, sandbox.settled_snapshot())
    assert wgns("physical", "status").stdout.strip() == "physical mode is off"
    assert "nothing to recover" in wgns("recover").stdout


def test_exec_if_up_runs_here_when_physical_mode_is_off(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    seen = wgns(
        "physical",
        "exec",
        "--if-up",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "5",
        f"http://{host.web_v4}/",
    )
    assert seen.stdout.strip() == "198.18.0.2"  # the host's own address: run right here
    proc = wgns("physical", "exec", "--", "true", check=False)
    assert proc.returncode == 1 and "no namespace physical" in proc.stderr


def _dhcpcd_pids(sandbox: Sandbox) -> dict[int, str]:
    """The dhcpcd processes of the sandbox's main namespace (pid -> command line)."""
    main = sandbox.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout.strip()
    out = sandbox.run(
        [
            "sh",
            "-c",
            "for p in $(pgrep -x dhcpcd); do "
            "echo $p $(stat -L -c %i /proc/$p/ns/net) $(tr '\\0' ' ' </proc/$p/cmdline); done",
        ],
        check=False,
    ).stdout
    found = {}
    for line in out.splitlines():
        if len(line.split()) < 3:
            continue  # exited meanwhile
        pid, ino, *argv = line.split()
        # the manager, whose title dhcpcd rewrites (its helpers' say [...proxy] or [BPF ...])
        if (
            ino == main
            and "[ip4]" in argv
            and not any(w.startswith("[B") or "proxy" in w for w in argv)
        ):
            found[int(pid)] = " ".join(argv)
    return found


def test_a_dhcp_client_running_here_is_stopped_and_started_again_after_down(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    sandbox.run(["ip", "-4", "addr", "flush", "dev", ETH])
    sandbox.run(["sh", "-c", f"dhcpcd --ipv4only --waitip=4 {ETH} >/dev/null 2>&1"], timeout=30)
    (lease,) = v4(sandbox, ETH, None)
    assert list(_dhcpcd_pids(sandbox).values()) == [f"dhcpcd: {ETH} [ip4]"]
    profile = write_profile(sandbox, host)

    wgns("physical", "up", profile, "--deadman", "0")
    assert _dhcpcd_pids(sandbox) == {}  # stopped here; wgns runs it inside physical
    st = json.loads(wgns("physical", "status", "--json").stdout)
    assert st[0]["daemons"] == {"dhcpcd": True}

    assert v4(sandbox, ETH, PHYS) == [lease]  # the DHCP server gave the same address again
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"

    wgns("physical", "down")
    assert list(_dhcpcd_pids(sandbox).values()) == [f"dhcpcd: {ETH} [ip4]"]
    assert v4(sandbox, ETH, None) == [lease]
    assert curl(sandbox, f"http://{host.web_v4}/") == lease

    # SIGKILL right before and right after the daemon is stopped and the link moves: `down`
    # (or `recover`) starts it again, once the link is back
    plan = _steps(sandbox, wgns, profile, "--deadman", "0")
    stop = next(i for i, line in enumerate(plan) if line.startswith("stop dhcpcd"))
    # inside, its own command line (from its title), kept in the foreground
    assert any(f"dhcpcd --ipv4only {ETH} --nobackground (inside" in line for line in plan), plan
    for n, fault in enumerate((f"{stop}", f"{stop}+", f"{stop + 1}+")):
        proc = wgns(
            "physical",
            "up",
            profile,
            "--deadman",
            "0",
            check=False,
            env={"WGNS_FAULT_KILL_AT": fault},
        )
        assert proc.returncode == -9, (fault, proc.stderr)
        wgns(*(("physical", "down") if n % 2 == 0 else ("recover",)))
        deadline = time.monotonic() + 15
        while not v4(sandbox, ETH, None) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(_dhcpcd_pids(sandbox).values()) == [f"dhcpcd: {ETH} [ip4]"], fault
        assert v4(sandbox, ETH, None) == [lease], fault
        assert curl(sandbox, f"http://{host.web_v4}/") == lease


def test_networkmanager_owning_eth0_is_refused_before_anything_moves(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    """NetworkManager cannot run here (no D-Bus system bus, no systemd): what it leaves on a
    real system is made by hand, a process named NetworkManager and its device state file
    (/run/NetworkManager/devices/IFINDEX, [device] managed=true), which is what is detected."""
    profile = write_profile(sandbox, host)
    index = sandbox.run(["cat", f"/sys/class/net/{ETH}/ifindex"]).stdout.strip()
    sandbox.write_file(f"/run/NetworkManager/devices/{index}", "[device]\nmanaged=true\n")
    sandbox.run(["cp", "/bin/sleep", f"{SANDBOX_TMP}/NetworkManager"])
    nm = sandbox.popen([f"{SANDBOX_TMP}/NetworkManager", "600"])
    try:
        before = sandbox.settled_snapshot()
        proc = wgns("physical", "up", profile, check=False)
        assert proc.returncode == 1, proc.stderr
        assert f"NetworkManager manages {ETH}" in proc.stderr and "nmcli" in proc.stderr
        assert_same(before, sandbox.settled_snapshot())
        # unmanaged (`nmcli device set eth0 managed no` writes managed=false): it goes ahead
        sandbox.write_file(f"/run/NetworkManager/devices/{index}", "[device]\nmanaged=false\n")
        wgns("physical", "up", profile, "--deadman", "0")
        wgns("physical", "down")
    finally:
        nm.kill()
        nm.wait()
    # NetworkManager stopped, its state files left behind: not in the way
    sandbox.write_file(f"/run/NetworkManager/devices/{index}", "[device]\nmanaged=true\n")
    wgns("physical", "up", profile, "--deadman", "0")
    wgns("physical", "down")


def test_nothing_to_move_says_what_to_do(sandbox: Sandbox, host: Provider, wgns: Any) -> None:
    profile = write_profile(sandbox, host)
    sandbox.run(["ip", "route", "del", "default"])
    sandbox.run(["ip", "-6", "route", "del", "default"])
    proc = wgns("physical", "up", profile, check=False)
    assert proc.returncode == 1 and "no interface to move" in proc.stderr
    assert "--iface" in proc.stderr


def _pure_plan(tmp_path: Any, daemons: tuple[Any, ...] = ()) -> list[str]:
    """The plan (pure, no sandbox) for an ethernet link and a wireless phy with two netdevs,
    the main namespace running DAEMONS."""
    from wgns.features.physical_links import Chosen
    from wgns.lifecycle import physical
    from wgns.profile.load import load_profile

    conf = tmp_path / "p.conf"
    conf.write_text(
        "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
        "Address = 198.19.0.2/32\nDNS = 198.19.0.1\n\n[Peer]\n"
        "PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
        "AllowedIPs = 0.0.0.0/0\nEndpoint = 198.18.1.2:51820\n"
    )
    conf.chmod(0o600)
    profile = load_profile(str(conf), name=PHYS, backend=None)
    snap: dict[str, Any] = {"up": True, "mtu": 1500, "addresses": [], "routes": []}
    facts = physical.PhysicalFacts(
        chosen=Chosen(("eth0",), {"phy0": ("wlan0", "wlan0mon")}),
        backend="userspace",
        resolved={i.name: i for i in profile.interfaces},
        mtus={i.name: 1420 for i in profile.interfaces},
        main_resolv_conf="nameserver 198.19.0.1\n",
        netns_files={"resolv.conf": "", "hosts": "", "nsswitch.conf": ""},
        snapshots={n: snap for n in ("eth0", "wlan0", "wlan0mon")},
        host_daemons=daemons,
    )
    return [op.describe() for op in physical.plan(profile, facts, deadman=30)]


def test_plan_of_a_wireless_phy_moves_it_whole_after_the_links(tmp_path: Any) -> None:
    """No wireless device exists here: only the plan is checked; moving one is VM work."""
    lines = _pure_plan(tmp_path)
    phy = next(i for i, line in enumerate(lines) if line.startswith("iw phy phy0"))
    assert "set netns name physical (wlan0, wlan0mon)" in lines[phy]
    eth = next(i for i, line in enumerate(lines) if "ip link set eth0 netns" in line)
    dhcp = next(i for i, line in enumerate(lines) if line.startswith("dhcpcd"))
    assert eth < phy < dhcp
    assert "eth0 wlan0 wlan0mon" in lines[dhcp]


def test_plan_relocates_units_after_the_move_and_stops_others_before(tmp_path: Any) -> None:
    """Units are stopped before their interfaces move and started inside once they are there
    (at `down`, in reverse: stopped inside, then started here once the interfaces are back);
    a DHCP client unit replaces wgns's own dhcpcd. (systemd is not PID 1 here: the plan only.)"""
    from wgns.features.physical_hostdaemons import HostDaemon

    wpa = HostDaemon("wpa_supplicant", 10, 1, ("wpa_supplicant",), "wpa_supplicant@wlan0.service")
    dhcp = HostDaemon("dhcpcd", 11, 1, ("dhcpcd", "-b"), "dhcpcd.service")
    lines = _pure_plan(tmp_path, (wpa, dhcp))

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(lines) if needle in line)

    move = at("ip link set eth0 netns")
    assert at("systemctl stop wpa_supplicant@wlan0.service") < move
    assert at("systemctl stop dhcpcd.service") < move
    assert at("iw phy phy0") < at("systemctl start wpa_supplicant@wlan0.service (inside physical)")
    assert at("systemctl start dhcpcd.service (inside physical)") < at("netns <main>")
    assert not any(line.startswith("dhcpcd --nobackground") for line in lines)
    loose = HostDaemon("dhclient", 12, 1, ("dhclient", "eth0"))
    lines = _pure_plan(tmp_path, (loose,))
    inside = "dhclient -d eth0 (inside physical, supervised; as it ran here)"
    assert at("stop dhclient (pid 12)") < at("ip link set eth0 netns") < at(inside)
    assert not any("dhcpcd" in line for line in lines)  # it replaces wgns's own


def test_plan_runs_a_wpa_supplicant_started_by_hand_inside_in_the_foreground(
    tmp_path: Any,
) -> None:
    """A wpa_supplicant that no unit runs (`wpa_supplicant -B ...` from a shell) is stopped
    before the phy moves and started inside by wgns with its own command line without -B,
    before the DHCP client; at `down` it is started here again as it was. (No wireless device
    here: the plan only; the VM's physical boot runs it.)"""
    from wgns.features.physical_hostdaemons import HostDaemon

    argv = ("wpa_supplicant", "-B", "-i", "wlan0", "-c", "wpa.conf")
    wpa = HostDaemon("wpa_supplicant", 10, 1, argv, None, "/etc/wpa_supplicant")
    dhcp = HostDaemon("dhcpcd", 11, 1, ("dhcpcd", "-q", "-w", "wlan0"), "dhcpcd@wlan0.service")
    lines = _pure_plan(tmp_path, (wpa, dhcp))

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(lines) if needle in line)

    inside = "wpa_supplicant -i wlan0 -c wpa.conf (inside physical, supervised; as it ran here)"
    assert at("systemctl stop dhcpcd@wlan0") < at("stop wpa_supplicant (pid 10)")
    assert at("stop wpa_supplicant (pid 10)") < at("iw phy phy0") < at(inside)
    assert at(inside) < at("systemctl start dhcpcd@wlan0.service (inside physical)")
    again = "started again as `wpa_supplicant -B -i wlan0 -c wpa.conf` at down"
    assert again in lines[at("stop wpa")]


def test_a_confined_namespace_born_in_physical_and_recover_takes_both_down(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    """Physical mode and an ordinary wgns namespace together: its tunnel is born in
    `physical` (birthplace), where the interfaces are; `physical down` refuses while it is
    up, `recover` takes it down first."""
    profile = write_profile(sandbox, host)
    before = sandbox.settled_snapshot()
    wgns("physical", "up", profile, "--deadman", "0")
    sandbox.write_file(f"{SANDBOX_TMP}/vpn-wg.conf", host.client_conf(ipv6=False), mode=0o600)
    toml = 'name = "vpn"\nbirthplace = "physical"\n[[interface]]\nconfig = "vpn-wg.conf"\n'
    sandbox.write_file(f"{SANDBOX_TMP}/vpn.toml", toml, mode=0o600)
    wgns("up", f"{SANDBOX_TMP}/vpn.toml")
    assert curl(sandbox, f"http://{host.web_v4}/", "vpn") == "198.18.1.2"
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"
    refused = wgns("physical", "down", check=False)
    assert refused.returncode == 1 and "wgns down vpn" in refused.stderr
    out = wgns("recover").stdout
    assert "vpn: given back" in out and "physical: given back" in out
    assert_same(before, sandbox.settled_snapshot())


def test_sigterm_while_waiting_for_the_lease_rolls_everything_back(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    import signal
    import sys

    profile = write_profile(sandbox, host)
    before = sandbox.settled_snapshot()
    argv = [sys.executable, "-m", "wgns", "physical", "up", profile]
    up = sandbox.popen(
        argv, env=sandbox.python_env(), cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until dhcpcd runs inside physical, waiting
        try:
            if "physical_daemon" in sandbox.read_text("/run/wgns/physical.json"):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    assert up.poll() is None, "up finished before it could be interrupted"
    up.send_signal(signal.SIGTERM)
    _out, err = up.communicate(timeout=30)
    assert up.returncode != 0, err
    assert_same(before, sandbox.settled_snapshot())  # eth0 back with its state, no record


def test_listed_interfaces_move_and_one_lease_is_enough(
    sandbox: Sandbox, host: Provider, wgns: Any
) -> None:
    """--iface names what moves; a second link with no DHCP server behind it (an unplugged
    cable) moves too, and does not hold `up` back; both come back as they were."""
    sandbox.run(
        ["ip", "link", "add", "eth1", "mtu", "1400", "type", "veth", "peer", "name", "eth1-peer"]
    )
    sandbox.run(["ip", "addr", "add", "192.0.2.7/24", "dev", "eth1"])
    sandbox.run(["ip", "link", "set", "eth1", "up"])
    profile = write_profile(sandbox, host)
    before = sandbox.settled_snapshot()
    wgns("physical", "up", profile, "--iface", ETH, "--iface", "eth1", "--deadman", "0")
    assert {ETH, "eth1"} <= set(links(sandbox, PHYS))
    assert "eth1-peer" in links(sandbox)  # not listed: stays (the kill switch holds it)
    assert v4(sandbox, "eth1", PHYS) == []
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"
    wgns("physical", "down")
    assert_same(before, sandbox.settled_snapshot())


def test_plan_starts_the_wireless_daemon_inside_before_the_dhcp_client(tmp_path: Any) -> None:
    """Debian's dhcpcd@.service runs `dhcpcd -w`: `systemctl start` returns once it has a
    lease, which needs wpa_supplicant associated first; so inside, wpa_supplicant starts
    before the DHCP client (whatever their pids), and here the DHCP client stops first."""
    from wgns.features.physical_hostdaemons import HostDaemon

    dhcp = HostDaemon("dhcpcd", 10, 1, ("dhcpcd", "-q", "-w", "wlan0"), "dhcpcd@wlan0.service")
    wpa = HostDaemon("wpa_supplicant", 11, 1, ("wpa_supplicant",), "wpa_supplicant@wlan0.service")
    lines = _pure_plan(tmp_path, (dhcp, wpa))

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(lines) if needle in line)

    assert at("systemctl stop dhcpcd@wlan0") < at("systemctl stop wpa_supplicant@wlan0")
    assert at("start wpa_supplicant@wlan0.service (inside") < at(
        "start dhcpcd@wlan0.service (inside"
    )
