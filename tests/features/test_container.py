"""`wgns up PROFILE --pid PID` (issue 16) end to end: the tunnel in the network namespace of a
process wgns did not start (a stand-in container, tests/features/standin.py), through the
simulated provider: real curl and dig run inside the container, tcpdump on the ISP link."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.features import leakwatch, standin
from tests.features import test_forward as forwarding
from tests.lifecycle.test_lifecycle import assert_same, write_profile
from tests.lifecycle.test_plan import PRIVATE, _iface
from wgns.engine.ops import AddNetns, ConfigureLink, LinkUp, NftTable
from wgns.engine.plan import render
from wgns.features import killswitch
from wgns.features.container import AttachNetns, Identity, KeepRoutes, Placement, Target
from wgns.features.containerdns import ContainerResolvConf
from wgns.lifecycle.plan import Facts, plan_up
from wgns.profile.model import Profile
from wgns.system import names
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider

NAME = "app"
WG = names.wg_ifname(NAME, "vpn")


def status_of(wgns: Any, ns: str = NAME) -> dict[str, Any]:
    (entry,) = json.loads(wgns("status", ns, "--json").stdout)["namespaces"]
    return entry  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["userspace", "kernel"])
@pytest.mark.parametrize("keep", [False, True], ids=["lo-only", "keep-interfaces"])
def test_the_plan_names_the_namespace_first_and_never_creates_one(backend: str, keep: bool) -> None:
    iface = _iface("vpn", 0, ipv6=True, hooks=False)
    profile = Profile(name=NAME, source="/tmp/vpn.conf", interfaces=(iface,), kill_switch=True)
    placed = Placement(
        Identity(pid=42, starttime=7, dev=4, ino=4026532000),
        Target(pid=42, keep_interfaces=keep),
        attach=True,
        resolv="nameserver 10.0.0.1\n",
    )
    facts = Facts(
        ns_exists=True,
        backend=backend,
        mtus={"vpn": 1420},
        resolved={"vpn": iface},
        netns_files={"resolv.conf": "nameserver 10.0.0.1\n"},
        container=placed,
    )
    ops = plan_up(profile, facts)
    kinds = [type(op) for op in ops]
    assert kinds[0] is AttachNetns  # so that the name goes last at `down`
    assert (kinds[1] is KeepRoutes) == keep
    assert AddNetns not in kinds
    kill = kinds.index(NftTable)
    assert kill < kinds.index(ConfigureLink) and kill < kinds.index(LinkUp)
    assert kinds.index(ContainerResolvConf) < kinds.index(ConfigureLink)
    assert all(PRIVATE not in line for line in render(ops))


def gone(pid: int) -> bool:
    """PID has exited (a zombie until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


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
    assert st["container"]["pid"] == c.pid and st["container"]["container"] is None
    assert f"namespace of: process, pid {c.pid}" in wgns("status", NAME).stdout
    # the other commands work by the name
    check = wgns("check", NAME, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    via_exec = wgns(
        "exec", NAME, "--", "curl", "-sS", "--max-time", "5", f"http://{provider.web_v4}/"
    )
    assert via_exec.stdout.strip() == "198.18.1.2"
    assert st["processes"] and c.pid in [p["pid"] for p in st["processes"]]

    wgns("down", NAME)
    assert_same(host_before, sandbox.snapshot())
    assert_same(inside_before, c.snapshot())
    assert sandbox.read_text(c.resolv_source) == standin.RESOLV
    c.stop()


def test_container_gone_status_says_so_and_down_removes_every_trace(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    profile = write_profile(sandbox, provider.client_conf())
    before = sandbox.settled_snapshot()
    c = standin.start(sandbox)
    wgns("up", profile, "--pid", str(c.pid), "--name", NAME)
    daemon = status_of(wgns)["interfaces"][0]["daemon"]
    assert daemon["alive"]
    c.stop()

    st = status_of(wgns)
    assert any(f"process {c.pid} is gone" in b for b in st["broken"]), st["broken"]
    text = wgns("status", NAME).stdout
    assert "BROKEN" in text and "is gone" in text
    # `up` without a new process to go into says what to do, and changes nothing
    again = wgns("up", profile, "--name", NAME, check=False)
    assert again.returncode == 1 and "--container" in again.stderr
    assert status_of(wgns)["interfaces"][0]["daemon"] == daemon

    wgns("down", NAME)  # the nft table, the daemon, the record and the name: all gone
    assert_same(before, sandbox.snapshot())
    assert gone(daemon["pid"])


def test_restarted_container_is_picked_up_again_by_the_same_name(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    profile = write_profile(sandbox, provider.client_conf())
    before = sandbox.settled_snapshot()
    first = standin.start(sandbox)
    wgns("up", profile, "--pid", str(first.pid), "--name", NAME)
    old_daemon = status_of(wgns)["interfaces"][0]["daemon"]["pid"]
    first.stop()
    # restarted: a new process in a new namespace, the engine's resolv.conf file kept (it
    # still holds what wgns wrote)
    second = standin.start(sandbox, resolv=None)
    assert "wgns" in second.resolv()

    plan = wgns("up", profile, "--pid", str(second.pid), "--name", NAME, "--dry-run")
    assert plan.stdout.splitlines()[0] == f"ip netns attach {NAME} {second.pid}"
    r = wgns("up", profile, "--pid", str(second.pid), "--name", NAME)
    assert "repaired" in r.stderr and "is gone" in r.stderr
    assert second.links() == sorted(["lo", WG])
    assert curl_inside(second, f"http://{provider.web_v4}/") == "198.18.1.2"
    st = status_of(wgns)
    assert st["broken"] == [] and second.pid in [p["pid"] for p in st["processes"]]
    # the first daemon was stopped with the rest of the stale namespace
    assert gone(old_daemon)
    assert st["interfaces"][0]["daemon"]["alive"]

    wgns("down", NAME)
    # the original resolv.conf, saved by the first `up`, is back
    assert second.resolv() == standin.RESOLV
    second.stop()
    assert_same(before, sandbox.snapshot())


def test_refused_before_any_change(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    profile = write_profile(sandbox, provider.client_conf())
    busy = standin.start(sandbox, tag="c2", setup="ip link add eth0 type veth peer name eth1")
    host_proc = sandbox.popen(["sleep", "600"])  # in the sandbox's (the host's) namespace
    before = sandbox.settled_snapshot()
    cases = {
        "no process 999999": ["--pid", "999999"],
        "this host's own network namespace": ["--pid", str(host_proc.pid)],
        "interfaces besides lo (eth0, eth1)": ["--pid", str(busy.pid)],
        "namespace provider already exists": ["--pid", str(busy.pid), "--name", "provider"],
    }
    for message, args in cases.items():
        r = wgns("up", profile, "--name", NAME, *args, check=False)
        assert r.returncode == 1 and message in r.stderr, (message, r.stderr)
    assert_same(before, sandbox.snapshot())
    assert busy.links() == ["eth0", "eth1", "lo"]

    # --keep-interfaces: eth0 stays, and the kill switch closes it
    busy.run(["ip", "addr", "add", "198.18.200.1/24", "dev", "eth0"])
    busy.run(["ip", "link", "set", "eth0", "up"])
    busy.run(["ip", "link", "set", "eth1", "up"])
    busy.run(["ip", "route", "add", "default", "via", "198.18.200.2", "dev", "eth0"])
    routes_before = busy.run(["ip", "route"]).stdout
    wgns("up", profile, "--pid", str(busy.pid), "--name", NAME, "--keep-interfaces")
    assert busy.links() == sorted(["eth0", "eth1", "lo", WG])
    table = ["nft", "list", "table", "inet", names.nft_table(NAME)]
    dropped = killswitch.refused(busy.run(table).stdout)
    ping = busy.run(["ping", "-c1", "-W1", "198.18.200.9"], check=False)
    assert ping.returncode != 0 and " 0 received" in ping.stdout
    assert killswitch.refused(busy.run(table).stdout) > dropped
    assert curl_inside(busy, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert "198.18.200.2" not in busy.run(["ip", "route"]).stdout  # the tunnel's default route
    # one container, one name
    twice = wgns("up", profile, "--pid", str(busy.pid), "--name", "other", check=False)
    assert twice.returncode == 1 and f"already named {NAME}" in twice.stderr
    wgns("down", NAME)
    assert busy.links() == ["eth0", "eth1", "lo"]
    assert busy.run(["ip", "route"]).stdout == routes_before
    busy.stop()
    host_proc.kill()
    host_proc.wait()
    sandbox.untrack(host_proc)


def test_dry_run_names_the_attach_and_changes_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox)
    profile = write_profile(sandbox, provider.client_conf())
    before = sandbox.settled_snapshot()
    out = wgns("up", profile, "--pid", str(c.pid), "--name", NAME, "--dry-run").stdout
    lines = out.splitlines()
    assert lines[0] == f"ip netns attach {NAME} {c.pid}"
    assert f"write /etc/resolv.conf of process {c.pid} (its own, in its mount namespace)" in lines
    assert_same(before, sandbox.snapshot())
    assert c.resolv() == standin.RESOLV
    c.stop()


@pytest.mark.parametrize("outage", ["peer unreachable", "daemon killed"])
def test_nothing_leaks_from_the_container_when_the_tunnel_dies(
    outage: str, sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox)
    profile = write_profile(sandbox, provider.client_conf(ipv6=False))
    tag = "ctr" + "".join(w[0] for w in outage.split())
    with provider.capture() as cap:
        # named as the leak tests' namespace, so that their battery runs in it by that name
        wgns("up", profile, "--pid", str(c.pid), "--name", leakwatch.NS)
        got = leakwatch.battery(sandbox, provider, tag + "a", leakwatch.UP_TIMEOUT)
        leakwatch.assert_tunnel_works(got, ipv6=False, provider=provider, tag=tag + "a")
        if outage == "peer unreachable":
            provider.cut_endpoint()
        else:
            (iface,) = status_of(wgns, leakwatch.NS)["interfaces"]
            sandbox.run(["kill", "-9", str(iface["daemon"]["pid"])])
        got = leakwatch.battery(sandbox, provider, tag + "b")
        leakwatch.assert_nothing_gets_through(got)
        # and the container's own resolver, through its own resolv.conf, gets nowhere
        dig = c.run(["dig", "+time=1", "+tries=1", f"{tag}.leak.test"], check=False)
        assert dig.returncode != 0
    leakwatch.assert_only_wireguard(cap, provider, expect_wireguard=True)
    leakwatch.assert_no_server_saw_the_host(provider, tag)
    wgns("down", leakwatch.NS)
    assert c.links() == ["lo"]
    c.stop()


def test_a_forward_reaches_the_container_from_the_host(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox)
    wgns("up", write_profile(sandbox, provider.client_conf()), "--pid", str(c.pid), "--name", NAME)
    inside = ["nsenter", "-t", str(c.pid), "-n", "-m", "--"]
    srv = forwarding.start(sandbox, [*inside, "python3", "-c", forwarding.SERVER, "8080"])
    try:
        wgns("forward", "add", NAME, "9091:8080", env=forwarding.ENV)
        assert forwarding.curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert forwarding.curl(sandbox, "http://[::1]:9091/")[0] == 0  # through the relay
        (row,) = status_of(wgns)["forwards"]
        assert row["host_port"] == 9091 and row["ns_port"] == 8080
        wgns("forward", "remove", NAME, "9091", env=forwarding.ENV)
        assert forwarding.curl(sandbox, "http://127.0.0.1:9091/")[0] == 7
    finally:
        forwarding.stop(sandbox, srv)
    wgns("down", NAME)
    c.stop()


def test_reload_rewrites_the_containers_resolv_conf_and_down_puts_the_original_back(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox)
    conf = provider.client_conf()
    profile = write_profile(sandbox, conf)
    wgns("up", profile, "--pid", str(c.pid), "--name", NAME)
    assert f"nameserver {provider.dns_v4}" in c.resolv()
    extra = "198.19.53.53"  # a second server (inside the tunnel's allowed IPs)
    wider = write_profile(
        sandbox, conf.replace(f"DNS = {provider.dns_v4}", f"DNS = {provider.dns_v4}, {extra}", 1)
    )
    r = wgns("up", "--reload", wider, "--name", NAME)
    assert "resolv.conf of process" in r.stderr + r.stdout
    assert f"nameserver {extra}" in c.resolv() and f"nameserver {provider.dns_v4}" in c.resolv()
    answer = c.run(["dig", "+short", "+time=2", "+tries=1", "whoami.test", "A"]).stdout.split()
    assert answer == [provider.web_v4]
    wgns("down", NAME)
    assert c.resolv() == standin.RESOLV
    c.stop()
