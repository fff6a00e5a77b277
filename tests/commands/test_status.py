"""`wgns status` tells the truth about a namespace that broke after `up`: its wireguard-go killed,
the namespace deleted by hand, its birthplace gone or replaced. Real namespaces and daemons in the
sandbox (see tests/conftest.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from wgns.testing.sandbox import SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider
from wgns.testing.sim.provider import HOST_UPLINK, HOST_V4, ISP_V4

NS = "vpn"


def write_profile(sandbox: Sandbox, text: str, name: str = "vpn.conf") -> str:
    path = f"{SANDBOX_TMP}/{name}"
    sandbox.write_file(path, text, mode=0o600)
    return path


def status(wgns: Any, ns: str = NS) -> dict[str, Any]:
    doc = json.loads(wgns("status", ns, "--json").stdout)
    assert doc["format"] == 1
    (entry,) = doc["namespaces"]
    return entry  # type: ignore[no-any-return]


def first_line(wgns: Any, ns: str = NS) -> str:
    return str(wgns("status", ns).stdout.splitlines()[0])


def check_line(wgns: Any, name: str) -> dict[str, Any]:
    """The line NAME of `wgns check`, which must fail."""
    proc = wgns("check", NS, "--json", "--timeout", "1", check=False)
    assert proc.returncode == 1, proc
    (line,) = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == name]
    assert line["status"] == "fail", line
    return line  # type: ignore[no-any-return]


def wait_for(wgns: Any, words: str, timeout: float = 5) -> dict[str, Any]:
    """The status once one of its broken reasons contains WORDS (the kernel removes a dead
    daemon's TUN, and a dying namespace's devices, a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(wgns)
        if any(words in why for why in st["broken"]) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def test_a_healthy_namespace_is_up_with_nothing_broken(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    st = status(wgns)
    assert st["phase"] == "up" and st["broken"] == []
    assert first_line(wgns).startswith(f"namespace {NS}: up, ")
    assert "broken" not in wgns("status", NS).stdout
    wgns("down", NS)


def test_killed_wireguard_go_is_reported_broken(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    (iface,) = status(wgns)["interfaces"]
    pid = iface["daemon"]["pid"]
    sandbox.run(["kill", "-9", str(pid)])
    st = wait_for(wgns, "is missing")
    assert st["phase"] == "up"  # the record's phase: what wgns did, not what is
    assert f"wireguard-go of {iface['ifname']} (pid {pid}) is not running" in st["broken"]
    assert f"interface {iface['ifname']} is missing" in st["broken"]
    text = wgns("status", NS).stdout
    assert text.splitlines()[0].startswith(f"namespace {NS}: BROKEN (recorded up), ")
    assert f"  broken: wireguard-go of {iface['ifname']} (pid {pid}) is not running" in text
    assert f"wgns down {NS}" in text
    assert "is not running" in check_line(wgns, "interfaces")["evidence"]
    # the same in the listing of every namespace
    (listed,) = json.loads(wgns("status", "--json").stdout)["namespaces"]
    assert listed["broken"] == st["broken"]
    wgns("down", NS)


def test_a_namespace_deleted_by_hand_is_reported_broken(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    sandbox.run(["ip", "netns", "del", NS])
    st = status(wgns)
    assert st["exists"] is False
    assert f"namespace {NS} is gone (deleted outside wgns)" in st["broken"]
    line = first_line(wgns)
    assert line.startswith(f"namespace {NS}: BROKEN (recorded up) (namespace missing!)"), line
    wgns("down", NS)
    assert json.loads(wgns("status", "--json").stdout)["namespaces"] == []


def _birthplace(sandbox: Sandbox, name: str) -> None:
    """A namespace NAME holding the host's uplink, as in the "physical namespace" layout."""
    sandbox.run(["ip", "netns", "add", name])
    sandbox.run(["ip", "link", "set", HOST_UPLINK, "netns", name])
    layout = [
        "link set lo up",
        f"address add {HOST_V4}/24 dev {HOST_UPLINK}",
        f"link set {HOST_UPLINK} up",
        f"route add default via {ISP_V4} dev {HOST_UPLINK}",
    ]
    sandbox.run(["ip", "-n", name, "-b", "-"], input="\n".join(layout) + "\n")


def test_a_namespace_whose_birthplace_is_gone_or_replaced_is_reported_broken(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    _birthplace(sandbox, "A")
    write_profile(sandbox, provider.client_conf(ipv6=False), name="vpn-wg.conf")
    toml = f'name = "{NS}"\nbirthplace = "A"\n[[interface]]\nconfig = "vpn-wg.conf"\n'
    try:
        wgns("up", write_profile(sandbox, toml, name="vpn.toml"))
        st = status(wgns)
        assert st["birthplace"] == "A" and st["broken"] == []

        sandbox.run(["ip", "netns", "del", "A"])
        st = status(wgns)
        assert "birthplace A is gone: the tunnel's UDP sockets lived there" in st["broken"]
        assert first_line(wgns).startswith(f"namespace {NS}: BROKEN (recorded up), ")
        # its daemon still runs (in the nameless old A): that is not what makes it whole
        assert st["interfaces"][0]["daemon"]["alive"] is True
        assert "birthplace A is gone" in check_line(wgns, "interfaces")["evidence"]

        sandbox.run(["ip", "netns", "add", "A"])  # a new namespace under the old name
        st = status(wgns)
        assert any(why.startswith("birthplace A was replaced") for why in st["broken"]), st
        assert "  broken: birthplace A was replaced" in wgns("status", NS).stdout
        wgns("down", NS)
    finally:
        sandbox.run(["ip", "netns", "del", "A"], check=False)


def test_status_and_check_on_a_damaged_record_say_so_in_one_line(
    sandbox: Sandbox, wgns: Any
) -> None:
    sandbox.write_file(f"/run/wgns/{NS}.json", '{\n "phase": "up",\n "ns": "vpn"')  # truncated
    for args in (
        ["status"],
        ["status", NS],
        ["status", "--json"],
        ["check", NS],
        ["check", NS, "--json"],
    ):
        proc = wgns(*args, check=False)
        assert proc.returncode == 1, (args, proc)
        assert proc.stdout == "", (args, proc.stdout)
        (line,) = proc.stderr.splitlines()
        # the file, and what to do (look at what is left, then delete the file)
        assert line.startswith(f"wgns: state record /run/wgns/{NS}.json is "), line
        assert "`ip netns list`" in line and "internal error" not in line, line
