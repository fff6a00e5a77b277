"""wgns.wireguard.backends: the backends behind one interface, auto selection, and a real
wireguard-go device created, configured, read and removed inside the test's private sandbox."""

from __future__ import annotations

import json

import pytest

from wgns.errors import WgnsError
from wgns.profile.model import Backend
from wgns.testing.sandbox import Sandbox
from wgns.wireguard import backends


def test_get_gives_the_backend_a_record_names_and_refuses_others() -> None:
    assert isinstance(backends.get("kernel"), backends.Kernel)
    assert isinstance(backends.get("userspace"), backends.Userspace)
    assert backends.NAMES == ("kernel", "userspace")
    with pytest.raises(WgnsError, match="unknown WireGuard backend 'vpp'"):
        backends.get("vpp")


def test_where_each_backend_puts_and_configures_its_device() -> None:
    kernel, userspace = backends.get("kernel"), backends.get("userspace")
    # the kernel's device is created in the target and configured there
    assert not kernel.moves_device and kernel.configured_in("vpn", "home") == "vpn"
    assert not kernel.runs_daemon and backends.get("userspace").runs_daemon
    assert kernel.link_kind == "wireguard"
    # wireguard-go's TUN is born where the daemon runs, configured there, then moved
    assert userspace.moves_device and userspace.configured_in("vpn", "home") == "home"
    assert userspace.configured_in("vpn", None) is None
    assert userspace.link_kind == "tun"
    assert kernel.describe_create("wg0", None, "vpn") == "ip link add wg0 netns vpn type wireguard"
    assert userspace.describe_create("wg0", "home", "vpn") == "wireguard-go -f wg0 in home"


@pytest.mark.parametrize(
    ("kernel", "userspace", "requested", "chosen"),
    [
        (True, True, Backend.AUTO, "kernel"),
        (False, True, Backend.AUTO, "userspace"),
        (True, True, Backend.USERSPACE, "userspace"),
        (True, False, Backend.KERNEL, "kernel"),
        (False, False, Backend.KERNEL, "the kernel has no WireGuard module"),
        (True, False, Backend.USERSPACE, "wireguard-go is not installed"),
        (False, False, Backend.AUTO, "no WireGuard backend"),
    ],
)
def test_select(
    monkeypatch: pytest.MonkeyPatch, kernel: bool, userspace: bool, requested: Backend, chosen: str
) -> None:
    monkeypatch.setattr(backends.Kernel, "is_supported", lambda self: kernel)
    monkeypatch.setattr(backends.Userspace, "is_supported", lambda self: userspace)
    if " " not in chosen:
        assert backends.select(requested) is backends.get(chosen)
    else:
        with pytest.raises(WgnsError, match=chosen):
            backends.select(requested)


def test_alive_follows_the_daemon_for_userspace_only() -> None:
    assert backends.get("kernel").alive({})
    assert not backends.get("userspace").alive({})
    assert not backends.get("userspace").alive({"pid": 2**22 + 1, "starttime": 1})


USERSPACE = r"""
import json, os
from ipaddress import ip_network
from wgns.profile.model import Endpoint, Interface, Peer, Secret
from wgns.system import links, netns, processes
from wgns.system.tools import run
from wgns.wireguard import backends, uapi

priv = run(["wg", "genkey"]).stdout.strip()
peer_priv = run(["wg", "genkey"]).stdout.strip()
peer_pub = run(["wg", "pubkey"], input=peer_priv).stdout.strip()
iface = Interface(
    name="x",
    private_key=Secret(priv),
    listen_port=51999,
    peers=(Peer(public_key=peer_pub, allowed_ips=(ip_network("198.18.0.0/24"),),
                endpoint=Endpoint("198.18.1.1", 51820), persistent_keepalive=25),),
)
netns.add("vpn")
b = backends.get("userspace")
result = {}
daemon = b.create("wgt0", birthplace=None, target="vpn",
                  on_spawn=lambda pid, st: result.update(pid=pid, starttime=st))
daemon.wait_ready()
out = {"alive": b.alive(result), "log": processes.log_path("vpn", "wgt0")}
out["log_exists"] = os.path.exists(out["log"])
b.configure("wgt0", iface, b.configured_in("vpn", None))
dev = b.read("wgt0", None)
out["public_key_ok"] = dev.public_key == run(["wg", "pubkey"], input=priv).stdout.strip()
out["listen_port"] = dev.listen_port
out["peers"] = [[p.public_key == peer_pub, list(p.allowed_ips), p.endpoint,
                 p.persistent_keepalive] for p in dev.peers]
out["private_key_kept"] = priv in repr(dev)
other_pub = run(["wg", "pubkey"], input=run(["wg", "genkey"]).stdout.strip()).stdout.strip()
wider = Interface(name="x", private_key=Secret(priv), listen_port=51998,
                  peers=(*iface.peers, Peer(public_key=other_pub)))
b.sync("wgt0", wider, "vpn")  # the TUN is still here; wg finds the daemon by its socket
synced = b.read("wgt0", "vpn")
out["synced"] = [synced.listen_port, sorted(p.public_key == other_pub for p in synced.peers)]
b.remove("wgt0", birthplace=None, target="vpn", result=result)
out["alive_after"] = b.alive(result)
out["link_after"] = links.link_exists("wgt0", ns=None)
out["socket_after"] = os.path.exists(uapi.uapi_socket("wgt0"))
out["log_after"] = os.path.exists(out["log"])
out["read_after"] = b.read("wgt0", None)
print(json.dumps(out))
"""


def test_userspace_device_created_configured_read_and_removed(sandbox: Sandbox) -> None:
    out = json.loads(sandbox.python(USERSPACE).stdout)
    assert out["alive"] and out["log_exists"]
    assert out["log"] == "/run/wgns/log/vpn/wgt0.log"
    assert out["public_key_ok"] and out["listen_port"] == 51999
    assert out["peers"] == [[True, ["198.18.0.0/24"], "198.18.1.1:51820", 25]]
    assert not out["private_key_kept"]
    assert out["synced"] == [51998, [False, True]]
    assert not out["alive_after"] and not out["link_after"]
    assert not out["socket_after"] and not out["log_after"]
    assert out["read_after"] is None


FAILING_DAEMON = r"""
import json
from wgns.errors import WgnsError
from wgns.wireguard import backends
backends.USERSPACE_BINARY = "/tmp/fake-wireguard-go"
with open(backends.USERSPACE_BINARY, "w") as f:
    f.write("#!/bin/sh\necho 'ERROR: Failed to create TUN device' >&2\nexit 1\n")
import os; os.chmod(backends.USERSPACE_BINARY, 0o755)
daemon = backends.get("userspace").create("wgt1", birthplace=None, target="vpn",
                                          on_spawn=lambda pid, st: None)
try:
    daemon.wait_ready()
    print(json.dumps(None))
except WgnsError as e:
    print(json.dumps([e.message, e.hint]))
"""


def test_a_daemon_that_dies_at_start_says_why(sandbox: Sandbox) -> None:
    message, hint = json.loads(sandbox.python(FAILING_DAEMON).stdout)
    assert message == (
        "/tmp/fake-wireguard-go for wgt1 exited with status 1: ERROR: Failed to create TUN device"
    )
    assert hint is None
