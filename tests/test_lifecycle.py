"""`wgns up` / `down` / `status` end to end: a real wireguard-go peer, real curl and dig, in a
private sandbox that stands in for the host (see tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.hostdns import HOST_NSSWITCH, STUB, connections, start_backdoors
from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox, snapshot_diff
from wgns.testing.sim import Provider
from wgns.testing.sim.provider import HOST_UPLINK, HOST_V4, HOST_V6, ISP_V4

NS = "vpn"
WHOAMI = "whoami.test"  # answered by the provider's DNS server (and by the ISP's)


def write_profile(sandbox: Sandbox, text: str, name: str = "vpn.conf", mode: int = 0o600) -> str:
    path = f"{SANDBOX_TMP}/{name}"
    sandbox.write_file(path, text, mode=mode)
    return path


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    diffs = snapshot_diff(before, after)
    assert not diffs, "system state changed:\n" + "\n".join(diffs[:20])


def status(wgns: Any, ns: str = NS) -> dict[str, Any]:
    out = wgns("status", ns, "--json").stdout
    doc = json.loads(out)
    assert doc["format"] == 1
    (entry,) = doc["namespaces"]
    return entry  # type: ignore[no-any-return]


def ifname_of(wgns: Any, ns: str = NS) -> str:
    (iface,) = status(wgns, ns)["interfaces"]
    return str(iface["ifname"])


def curl(sandbox: Sandbox, url: str, ns: str = NS, *, ipv6: bool = False) -> str:
    argv = ["curl", "-sS", "--max-time", "5", *(["-6"] if ipv6 else []), url]
    return sandbox.run(argv, netns=ns).stdout.strip()


def test_up_tunnels_ipv4_and_ipv6_and_down_restores_everything(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    profile = write_profile(sandbox, provider.client_conf(client))
    before = sandbox.settled_snapshot()

    wgns("up", profile, "--name", NS)

    # traffic from inside leaves with the provider's addresses...
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert curl(sandbox, f"http://[{provider.web_v6}]/", ipv6=True) == "2001:db8:1::2"
    # ...while the host itself is seen with its own
    assert sandbox.run(["curl", "-sS", f"http://{provider.web_v4}/"]).stdout.strip() == "198.18.0.2"
    assert provider.wait_handshake(client.public_key) > 0

    # DNS inside goes to the tunnel's resolver, through the tunnel
    resolv = sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    assert f"nameserver {provider.dns_v4}" in resolv
    answer = sandbox.run(
        ["dig", "+short", "+time=2", "+tries=1", f"@{provider.dns_v4}", "whoami.test", "A"],
        netns=NS,
    ).stdout.split()
    assert answer == [provider.web_v4]
    answer6 = sandbox.run(
        ["dig", "+short", "+time=2", "+tries=1", f"@{provider.dns_v6}", "whoami.test", "AAAA"],
        netns=NS,
    ).stdout.split()
    assert answer6 == [provider.web_v6]
    assert ("whoami.test", "A") in provider.dns_queries()
    assert ("whoami.test", "AAAA") in provider.dns_queries()
    assert provider.isp_dns_queries() == []

    st = status(wgns)
    assert st["phase"] == "up" and st["owner"] == "wgns" and st["ipv6"] == "tunnelled"
    (iface,) = st["interfaces"]
    assert iface["present"] and iface["up"]
    assert sorted(iface["addresses"]) == sorted([client.address_v4, client.address_v6])
    (peer,) = iface["peers"]
    assert peer["public_key"] == provider.server_public_key
    assert peer["latest_handshake"] > 0 and peer["rx_bytes"] > 0

    wgns("down", NS)
    assert_same(before, sandbox.snapshot())
    # idempotent
    again = wgns("down", NS)
    assert again.returncode == 0 and "not up" in again.stderr


def test_namespace_sees_only_lo_and_wg_and_routes_only_through_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    long_ns = "a-namespace-name-much-longer-than-fifteen-characters"
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", long_ns)
    links = json.loads(sandbox.run(["ip", "-n", long_ns, "-j", "link"]).stdout)
    wg_if = ifname_of(wgns, long_ns)
    assert wg_if == names.wg_ifname(long_ns, "vpn")  # derived from (namespace, label)
    assert sorted(link["ifname"] for link in links) == sorted(["lo", wg_if])
    routes = json.loads(sandbox.run(["ip", "-n", long_ns, "-j", "route"]).stdout)
    assert {r.get("dev") for r in routes} == {wg_if}
    assert any(r["dst"] == "default" for r in routes)
    # the UDP socket lives in the birthplace (the sandbox host), not in the namespace
    host_udp = sandbox.run(["ss", "-Huanp"]).stdout
    inside_udp = sandbox.run(["ss", "-Huan"], netns=long_ns).stdout
    assert "wireguard-go" in host_udp
    assert inside_udp.strip() == ""
    wgns("down", long_ns)


def test_split_allowed_ips_route_only_those_prefixes(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    conf = provider.client_conf(allowed_ips=("198.18.2.0/24", "2001:db8:2::/64"), dns=False)
    wgns("up", write_profile(sandbox, conf), "--name", NS)
    wg_if = ifname_of(wgns)
    r4 = json.loads(sandbox.run(["ip", "-n", NS, "-j", "-4", "route"]).stdout)
    r6 = json.loads(sandbox.run(["ip", "-n", NS, "-j", "-6", "route"]).stdout)
    assert [(r["dst"], r["dev"]) for r in r4] == [("198.18.2.0/24", wg_if)]
    dsts6 = {r["dst"] for r in r6 if r["dev"] == wg_if and not r["dst"].startswith("fe80")}
    assert dsts6 == {"2001:db8:2::/64"} or dsts6 == {
        "2001:db8:2::/64",
        *(r["dst"] for r in r6 if r["dst"].startswith("2001:db8:ff::")),
    }
    assert not any(r["dst"] == "default" for r in r4 + r6)
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)


def test_several_peers_each_carry_their_prefixes(
    sandbox: Sandbox, provider2: Provider, wgns: Any
) -> None:
    client = provider2.new_client()
    s0, s1 = provider2.servers
    v4_1, _ = client.addresses_on(1)
    conf = (
        f"[Interface]\nPrivateKey = {client.private_key}\n"
        f"Address = {client.address_v4}, {v4_1}\n"
        f"[Peer]\nPublicKey = {s0.public_key}\nEndpoint = {s0.endpoint_v4}\n"
        f"AllowedIPs = 198.18.2.0/24, 198.19.0.0/24\n"
        f"[Peer]\nPublicKey = {s1.public_key}\nEndpoint = {s1.endpoint_v4}\n"
        f"AllowedIPs = 198.19.1.0/24\n"
    )
    wgns("up", write_profile(sandbox, conf), "--name", NS)
    # through server 0: the web host; through server 1: its tunnel DNS server
    assert curl(sandbox, f"http://{provider2.web_v4}/") == s0.endpoint_v4.split(":")[0]
    src = v4_1.split("/")[0]  # server 1 accepts only the client's address on server 1
    dig = sandbox.run(
        ["dig", "+short", "+time=2", "+tries=1", "-b", src, f"@{s1.dns_v4}", "whoami.test"],
        netns=NS,
    )
    assert dig.stdout.split() == [provider2.web_v4]
    assert provider2.wait_handshake(client.public_key, server=0) > 0
    assert provider2.wait_handshake(client.public_key, server=1) > 0
    (iface,) = status(wgns)["interfaces"]
    assert {p["public_key"] for p in iface["peers"]} == {s0.public_key, s1.public_key}
    wgns("down", NS)


def test_mtu_is_applied_explicit_and_by_wg_quick_rule(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf(mtu=1280)), "--name", "explicit")
    link = json.loads(sandbox.run(["ip", "-n", "explicit", "-j", "link", "show"]).stdout)
    assert {x["ifname"]: x["mtu"] for x in link}[ifname_of(wgns, "explicit")] == 1280
    # no MTU= : the uplink's MTU (set to 1400 here) minus 80, as wg-quick does
    sandbox.run(["ip", "link", "set", "uplink0", "mtu", "1400"])
    wgns("up", write_profile(sandbox, provider.client_conf(), "auto.conf"), "--name", "auto")
    link = json.loads(sandbox.run(["ip", "-n", "auto", "-j", "link", "show"]).stdout)
    assert {x["ifname"]: x["mtu"] for x in link}[ifname_of(wgns, "auto")] == 1320
    # and it really carries packets of that size without fragmentation on the inside
    sandbox.run(
        ["ping", "-c1", "-W3", "-M", "do", "-s", str(1320 - 28), "198.19.0.1"], netns="auto"
    )
    wgns("down", "explicit")
    wgns("down", "auto")


def test_mtu_rule_uses_a_route_mtu_and_falls_back_when_the_endpoint_is_unreachable(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """wg-quick's rule beyond the plain case: a route's own `mtu` wins over its link's, and an
    endpoint `ip route get` cannot reach leaves the default route's link to decide."""
    sandbox.run(["ip", "link", "set", "uplink0", "mtu", "1400"])
    sandbox.run(["ip", "route", "add", "198.18.251.0/24", "dev", "uplink0", "mtu", "1300"])
    sandbox.run(["ip", "route", "add", "unreachable", "198.18.250.0/24"])
    cases = {"metric": ("198.18.251.1:51820", 1300 - 80), "unreach": ("198.18.250.1:51820", 1320)}
    # two peers, the first unreachable: the second's route decides (the largest MTU of the
    # endpoints that have a route), not the default route's
    cases["both"] = ("198.18.250.1:51820", 1300 - 80)
    second = (
        f"\n[Peer]\nPublicKey = {provider.new_client().public_key}\n"
        "AllowedIPs = 198.18.99.0/24\nEndpoint = 198.18.251.1:51820\n"
    )
    for ns, (endpoint, mtu) in cases.items():
        conf = provider.client_conf(endpoint=endpoint, ipv6=False)
        conf += second if ns == "both" else ""
        wgns("up", write_profile(sandbox, conf, f"{ns}.conf"), "--name", ns)
        link = json.loads(sandbox.run(["ip", "-n", ns, "-j", "link", "show"]).stdout)
        assert {x["ifname"]: x["mtu"] for x in link}[ifname_of(wgns, ns)] == mtu, ns
        wgns("down", ns)


def test_wg_show_agrees_with_profile_and_no_secret_anywhere(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    psk = sandbox.run(["wg", "genpsk"]).stdout.strip()
    conf = provider.client_conf(client, keepalive=25).replace(
        "[Peer]\n", f"[Peer]\nPresharedKey = {psk}\n", 1
    )
    conf = conf.replace("[Interface]\n", "[Interface]\nListenPort = 51999\nFwMark = 0x42\n", 1)
    profile = write_profile(sandbox, conf)
    up = wgns("up", profile, "--name", NS, "--debug")
    wg_if = ifname_of(wgns)
    dump = sandbox.run(["wg", "show", wg_if, "dump"], netns=NS).stdout.splitlines()
    head = dump[0].split("\t")
    assert head[0] == client.private_key  # the device has the profile's key...
    assert head[2] == "51999" and head[3] == "0x42"
    peer = dump[1].split("\t")
    assert peer[0] == provider.server_public_key and peer[1] == psk
    assert peer[2] == provider.endpoint_v4 and peer[7] == "25"
    assert set(peer[3].split(",")) == {"0.0.0.0/0", "::/0"}
    # ...but no secret shows in our output, status, state record or any process's argv
    st = wgns("status", NS, "--json").stdout + wgns("status", NS).stdout
    record = sandbox.read_text(f"/run/wgns/{NS}.json")
    argvs = "\n".join(" ".join(c) for c in _cmdlines(sandbox))
    for text in (up.stdout, up.stderr, st, record, argvs):
        assert client.private_key not in text
        assert psk not in text
    wgns("down", NS)


def _cmdlines(sandbox: Sandbox) -> list[list[str]]:
    out = []
    for pid in sandbox.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append([a.decode(errors="replace") for a in f.read().split(b"\0")])
        except OSError:
            continue
    return out


def test_endpoint_hostname_resolves_in_the_birthplace(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    conf = provider.client_conf(endpoint=f"{provider.endpoint_host}:51820")
    wgns("up", write_profile(sandbox, conf), "--name", NS)
    # resolved by the host's (ISP) resolver, before the tunnel existed
    assert ("vpn.provider.test", "A") in provider.isp_dns_queries()
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)


def _from_inside(sandbox: Sandbox, log: str, ns: str) -> list[dict[str, Any]]:
    """Connections to the host's fake nscd/resolved sockets made from network namespace NS."""
    inode = int(sandbox.run(["stat", "-L", "-c", "%i", f"/run/netns/{ns}"]).stdout)
    return [c for c in connections(sandbox, log) if c["netns"] == inode]


def test_hooks_inside_the_namespace_resolve_through_the_tunnel_only(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    # a host whose glibc would ask nscd and systemd-resolved (unix sockets: reachable from any
    # network namespace) and whose resolv.conf names the ISP's DNS server
    sandbox.write_file("/etc/nsswitch.conf", HOST_NSSWITCH)
    log = start_backdoors(sandbox)
    write_profile(sandbox, provider.client_conf(), name="vpn-wg.conf")
    out = f"{SANDBOX_TMP}/hook"
    toml = (
        f'name = "{NS}"\n'
        '[[interface]]\nconfig = "vpn-wg.conf"\n'
        '[[hook]]\nwhen = "post-up"\nnetns = "inside"\n'
        f'run = "getent hosts {WHOAMI} > {out}.up; cat /etc/resolv.conf >> {out}.up"\n'
        '[[hook]]\nwhen = "pre-down"\nnetns = "inside"\n'
        f'run = "getent hosts {WHOAMI} > {out}.down"\n'
    )
    wgns("up", write_profile(sandbox, toml, name="vpn.toml"))
    up = sandbox.read_text(f"{out}.up")
    web = {provider.web_v4, provider.web_v6}
    assert web & set(up.split())  # answered...
    assert sandbox.read_text(f"/etc/netns/{NS}/resolv.conf") in up  # ...by the tunnel's DNS
    assert (WHOAMI, "A") in provider.dns_queries() or (WHOAMI, "AAAA") in provider.dns_queries()
    assert _from_inside(sandbox, log, NS) == []
    wgns("down", NS)
    assert web & set(sandbox.read_text(f"{out}.down").split())
    assert provider.isp_dns_queries() == []
    assert connections(sandbox, log) == []


def test_a_named_birthplace_resolves_endpoints_with_its_own_resolv_conf(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    # the "physical namespace" layout: the uplink lives in `physical`, whose resolv.conf names the
    # ISP's DNS server; the host itself resolves through a systemd-resolved stub (and nscd)
    # that cannot reach anything from `physical`
    sandbox.write_file("/etc/nsswitch.conf", HOST_NSSWITCH)
    log = start_backdoors(sandbox)
    sandbox.write_file(STUB, "nameserver 127.0.0.53\n")
    sandbox.run(["rm", "-f", "/etc/resolv.conf"])
    sandbox.run(["ln", "-s", STUB, "/etc/resolv.conf"])
    sandbox.run(["ip", "netns", "add", "physical"])
    sandbox.run(["ip", "link", "set", HOST_UPLINK, "netns", "physical"])
    layout = [
        "link set lo up",
        f"address add {HOST_V4}/24 dev {HOST_UPLINK}",
        f"address add {HOST_V6}/64 dev {HOST_UPLINK} nodad",
        f"link set {HOST_UPLINK} up",
        f"route add default via {ISP_V4} dev {HOST_UPLINK}",
    ]
    sandbox.run(["ip", "-n", "physical", "-b", "-"], input="\n".join(layout) + "\n")
    sandbox.write_file("/etc/netns/physical/resolv.conf", f"nameserver {provider.isp_dns}\n")
    conf = provider.client_conf(endpoint=f"{provider.endpoint_host}:51820")
    write_profile(sandbox, conf, name="vpn-wg.conf")
    toml = f'name = "{NS}"\nbirthplace = "physical"\n[[interface]]\nconfig = "vpn-wg.conf"\n'
    try:
        wgns("up", write_profile(sandbox, toml, name="vpn.toml"))
        assert (provider.endpoint_host, "A") in provider.isp_dns_queries()
        assert connections(sandbox, log) == []  # not even tried through the host's daemons
        assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
        # the ciphertext leaves from `physical`, where the UDP socket was born
        assert status(wgns)["birthplace"] == "physical"
        wgns("down", NS)
    finally:
        sandbox.run(["ip", "netns", "del", "physical"], check=False)
        sandbox.run(["rm", "-rf", "/etc/netns/physical"], check=False)


def test_save_config_is_announced_as_ignored_and_the_file_is_left_alone(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    text = provider.client_conf().replace("[Peer]", "SaveConfig = true\n\n[Peer]", 1)
    path = write_profile(sandbox, text)
    up = wgns("up", path, "--name", NS)
    assert "SaveConfig = true is ignored" in up.stderr
    wgns("down", NS)
    assert sandbox.read_text(path) == text
    quiet = wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    assert "SaveConfig" not in quiet.stderr
    wgns("down", NS)


def test_up_twice_is_not_an_error_and_reload_changes_peers_without_dropping(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    path = write_profile(sandbox, provider.client_conf(client, keepalive=None))
    wgns("up", path, "--name", NS)
    again = wgns("up", path, "--name", NS)
    assert again.returncode == 0 and "already up" in again.stderr
    pid_before = status(wgns)["interfaces"][0]["daemon"]["pid"]
    wgns(
        "up",
        write_profile(sandbox, provider.client_conf(client, keepalive=7)),
        "--name",
        NS,
        "--reload",
    )
    st = status(wgns)
    assert st["interfaces"][0]["daemon"]["pid"] == pid_before  # same tunnel, not rebuilt
    assert st["interfaces"][0]["peers"][0]["persistent_keepalive"] == 7
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)


def test_down_after_daemon_killed_or_interface_deleted(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    path = write_profile(sandbox, provider.client_conf())
    wgns("up", path, "--name", NS)
    pid = status(wgns)["interfaces"][0]["daemon"]["pid"]
    sandbox.run(["kill", "-9", str(pid)])
    deadline = time.monotonic() + 5
    while (st := status(wgns))["interfaces"][0]["present"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel removes the TUN once the daemon's fd is closed
    assert st["interfaces"][0]["daemon"]["alive"] is False
    assert st["interfaces"][0]["present"] is False
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())

    wgns("up", path, "--name", NS)
    sandbox.run(["ip", "-n", NS, "link", "del", ifname_of(wgns)])
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def _running(pid: int) -> bool:
    """PID exists and is not a zombie (exited, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2] != "Z"


def test_down_does_not_wait_for_the_kernel_yet_the_daemon_ends_and_up_again_works(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """`down` SIGKILLs the daemon of a namespace it deletes and returns without waiting for the
    kernel to unregister the TUN (~20 ms); the daemon must still be gone right after, and an
    `up` of the same name straight away must not trip over its remains (UAPI socket, TUN)."""
    before = sandbox.settled_snapshot()
    path = write_profile(sandbox, provider.client_conf())
    wgns("up", path, "--name", NS)
    first = status(wgns)["interfaces"][0]["daemon"]["pid"]
    assert _running(first)
    wgns("down", NS)
    wgns("up", path, "--name", NS)  # at once: the old daemon may still be exiting
    second = status(wgns)["interfaces"][0]["daemon"]["pid"]
    assert second != first
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    deadline = time.monotonic() + 5
    while _running(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(first), "the old daemon survived `down`"
    assert _running(second)
    wgns("down", NS)
    assert_same(before, sandbox.settled_snapshot())


def test_preexisting_namespace_is_adopted_and_left_in_place(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    sandbox.run(["ip", "netns", "add", NS])
    sandbox.run(["ip", "-n", NS, "link", "set", "lo", "up"])  # as people do by hand
    before = sandbox.settled_snapshot()
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    assert status(wgns)["owner"] == "pre-existing"
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
    assert NS in sandbox.netns_names()
    assert_same(before, sandbox.snapshot())


def _count_ops(sandbox: Sandbox, wgns: Any, path: str) -> int:
    wgns("up", path, "--name", NS)
    n = len(json.loads(sandbox.read_text(f"/run/wgns/{NS}.json"))["journal"])
    wgns("down", NS)
    return n


def test_sigkill_at_every_step_of_up_then_down_restores_everything(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    path = write_profile(sandbox, provider.client_conf())
    before = sandbox.settled_snapshot()
    steps = _count_ops(sandbox, wgns, path)
    assert steps >= 6
    for step in range(steps):
        for when in ("", "+"):
            proc = wgns(
                "up", path, "--name", NS, check=False, env={"WGNS_FAULT_KILL_AT": f"{step}{when}"}
            )
            assert proc.returncode == -9, (step, when, proc.stderr)
            down = wgns("down", NS, check=False)
            assert down.returncode == 0, (step, when, down.stderr)
            assert_same(before, sandbox.snapshot())
    # and an `up` after a crash recovers by itself instead of "File exists"
    wgns("up", path, "--name", NS, check=False, env={"WGNS_FAULT_KILL_AT": f"{steps - 1}+"})
    wgns("up", path, "--name", NS)
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def test_concurrent_ups(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    path = write_profile(sandbox, provider.client_conf())
    results: list[subprocess.CompletedProcess[str]] = []

    def up(name: str) -> None:
        results.append(wgns("up", path, "--name", name, check=False))

    # the same namespace twice at once: one brings it up, the other sees it up
    threads = [threading.Thread(target=up, args=(NS,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sum("already up" in r.stderr for r in results) == 1
    # different namespaces in parallel
    results.clear()
    paths = [write_profile(sandbox, provider.client_conf(), f"p{i}.conf") for i in range(3)]
    threads = [
        threading.Thread(
            target=lambda p=p, i=i: results.append(wgns("up", p, "--name", f"par{i}", check=False))
        )
        for i, p in enumerate(paths)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    for i in range(3):
        assert curl(sandbox, f"http://{provider.web_v4}/", ns=f"par{i}") == "198.18.1.2"
    for name in (NS, "par0", "par1", "par2"):
        wgns("down", name)


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda c: c.replace("PrivateKey = ", "PrivateKey = x"), "PrivateKey"),
        (lambda c: c.replace("AllowedIPs = 0.0.0.0/0", "AllowedIPs = 0.0.0.0/33"), "AllowedIPs"),
        (lambda c: c.replace(":51820", ":70000"), "Endpoint"),
        (lambda c: c + "Bogus = 1\n", "Bogus"),
    ],
)
def test_bad_profile_changes_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any, mutate: Any, expect: str
) -> None:
    path = write_profile(sandbox, mutate(provider.client_conf()))
    before = sandbox.settled_snapshot()
    proc = wgns("up", path, "--name", NS, check=False)
    assert proc.returncode == 2
    assert expect in proc.stderr and path in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_world_readable_key_and_bad_names_are_refused(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    loose = write_profile(sandbox, provider.client_conf(), "loose.conf", mode=0o644)
    proc = wgns("up", loose, "--name", NS, check=False)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    good = write_profile(sandbox, provider.client_conf())
    for bad in ("../etc", "a/b", ".."):
        proc = wgns("up", good, "--name", bad, check=False)
        assert proc.returncode == 2, bad
        assert "namespace name" in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_failure_midway_rolls_back_exactly(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    # a PostUp hook that fails: everything done before it is undone, nothing else
    conf = provider.client_conf().replace("[Interface]\n", "[Interface]\nPostUp = false\n", 1)
    path = write_profile(sandbox, conf)
    before = sandbox.settled_snapshot()
    proc = wgns("up", path, "--name", NS, check=False)
    assert proc.returncode == 1 and "post-up hook failed" in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_cli_contract_exit_codes(sandbox: Sandbox, wgns: Any) -> None:
    assert wgns("nonsense", check=False).returncode == 2
    assert wgns("up", check=False).returncode == 2
    missing = wgns("up", "/nonexistent/x.conf", check=False)
    assert missing.returncode == 2 and "x.conf" in missing.stderr
    st = wgns("status", "--json")
    assert json.loads(st.stdout) == {"format": 1, "namespaces": []}
    unknown = wgns("status", "nothere", check=False)
    assert unknown.returncode == 1 and "not managed" in unknown.stderr
