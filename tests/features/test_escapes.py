"""Escape attempts: a hostile unprivileged program (`wgns exec --user nobody`) and a root process
inside that adds its own routes try to get around the tunnel. As in test_leaks: on the host's
uplink there is only WireGuard UDP to the peer's endpoint, and no server sees the host's address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.features.leakwatch import (
    ENDPOINT,
    NS,
    POOL,
    WG,
    assert_no_server_saw_the_host,
    assert_nothing_gets_through,
    assert_only_wireguard,
    battery,
    isp_got,
    up,
)
from wgns.system import names
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider

HOSTILE = r"""
import errno, json, os, socket, struct, subprocess, sys
cfg = json.loads(sys.argv[1])
out = {"uid": os.getuid()}

def name_of(e):
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__

def attempt(name, fn):
    try:
        out[name] = fn() or "ok"
    except BaseException as e:
        out[name] = name_of(e)

def query(qname):
    q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\0"
    return q + struct.pack("!HH", 1, 1)

def udp(dst, port, *, bind=None, opts=(), payload=b"hostile", wait=False, fam=socket.AF_INET):
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for level, opt, val in opts:
            s.setsockopt(level, opt, val)
        if bind is not None:
            s.bind(bind)
        s.settimeout(0.5)
        s.sendto(payload, (dst, port))
        if wait:
            s.recvfrom(4096)
            return "answered"
        return "sent"

def tcp(dst, port, *, bind=None, opts=()):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        for level, opt, val in opts:
            s.setsockopt(level, opt, val)
        if bind is not None:
            s.bind(bind)
        s.settimeout(0.5)
        s.connect((dst, port))
        return "connected"

IP_FREEBIND, IP_TRANSPARENT, IPV6_FREEBIND = 15, 19, 78
host, isp, web, veth_host, veth_ns = (cfg[k] for k in
    ("host", "isp_dns", "web", "veth_host", "veth_ns"))
tag = cfg["tag"]

# raw and packet sockets
attempt("raw4", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close())
attempt("raw4_icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close())
attempt("raw6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, 58).close())
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
# somebody else's source address
attempt("bind_host_addr", lambda: udp(isp, 53, bind=(host, 0),
        payload=query(f"bind-{tag}.leak.test")))
attempt("freebind_host_addr", lambda: udp(isp, 53, bind=(host, 0), wait=True,
        opts=[(socket.IPPROTO_IP, IP_FREEBIND, 1)], payload=query(f"freebind-{tag}.leak.test")))
attempt("transparent", lambda: udp(isp, 53, bind=(host, 0),
        opts=[(socket.IPPROTO_IP, IP_TRANSPARENT, 1)]))
attempt("freebind6_host_addr", lambda: udp(cfg["isp_dns6"], 53, bind=(cfg["host6"], 0),
        fam=socket.AF_INET6, opts=[(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)]))
attempt("bindtodevice_uplink", lambda: udp(isp, 53, opts=[
        (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg["uplink"].encode())]))
# the host's resolver, plainly: only ever through the tunnel
attempt("dns_isp", lambda: udp(isp, 53, wait=True, payload=query(f"plain-{tag}.leak.test")))
attempt("dns_isp_tcp", lambda: tcp(isp, 53))
# the forward's veth: its peer in the host, and the veth's own address as a source
if veth_host:
    attempt("bindtodevice_veth", lambda: udp(isp, 53, opts=[
            (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg["veth"].encode())]))
    attempt("veth_peer_udp", lambda: udp(veth_host, 53, payload=query(f"veth-{tag}.leak.test")))
    for port in (22, 80, 8080):
        attempt(f"veth_peer_tcp{port}", lambda port=port: tcp(veth_host, port))
    attempt("veth_peer_bcast", lambda: udp("255.255.255.255", 67, opts=[
            (socket.SOL_SOCKET, socket.SO_BROADCAST, 1),
            (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg["veth"].encode())]))
    attempt("veth_mcast", lambda: udp("224.0.0.251", 5353, opts=[
            (socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(veth_ns))]))
    attempt("from_veth_addr_udp", lambda: udp(isp, 53, bind=(veth_ns, 0),
            payload=query(f"fromveth-{tag}.leak.test")))
    attempt("from_veth_addr_tcp", lambda: tcp(web, 80, bind=(veth_ns, 0)))
    attempt("veth_peer_ping", lambda: subprocess.run(["ping", "-c1", "-W1", veth_host],
            capture_output=True).returncode and "no reply")
# link-local / multicast IPv6 on wg
attempt("allnodes6", lambda: udp("ff02::1", 9, fam=socket.AF_INET6, opts=[
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(cfg["wg"]))]))
# a user namespace of one's own gives no power over this network namespace
def userns():
    p = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
        "nft flush ruleset 2>&1; ip link add x0 type veth peer name x1 2>&1; "
        "ip route add default dev lo table 9 2>&1; echo done"],
        capture_output=True, text=True)
    return "rc=%d %s %s" % (p.returncode, p.stdout.strip().replace("\n", " | "), p.stderr.strip())
attempt("userns", userns)
print(json.dumps(out))
"""


def test_hostile_unprivileged_program_finds_no_way_out(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    env = {"WGNS_FORWARD_POOL": POOL}
    up(sandbox, provider, wgns)
    wgns("forward", "add", NS, "8080", env=env)  # a declared forward: a veth to the host
    (fwd,) = json.loads(wgns("forward", "list", NS, "--json").stdout)["forwards"]
    veth_host, veth_ns = fwd["veth"]["host"], fwd["veth"]["ns"]
    vh, vn = names.veth_ifnames(NS)
    tag = "hostile"
    cfg = {
        "host": provider.host_v4,
        "host6": provider.host_v6,
        "isp_dns": provider.isp_dns,
        "isp_dns6": provider.isp_dns_v6,
        "web": provider.web_v4,
        "uplink": provider.host_uplink,
        "wg": WG,
        "veth": vn,
        "veth_host": veth_host,
        "veth_ns": veth_ns,
        "tag": tag,
    }
    with provider.capture() as cap, provider.capture(None, vh) as cap_veth:
        proc = wgns(
            "exec", NS, "--user", "nobody", "--",
            "python3", "-I", "-S", "-c", HOSTILE, json.dumps(cfg),
        )  # fmt: skip
        got = json.loads(proc.stdout)
    assert got["uid"] == 65534
    # no raw or packet sockets for an unprivileged user
    for k in ("raw4", "raw4_icmp", "raw6", "packet", "transparent"):
        assert got[k] == "EPERM", (k, got)
    # other source addresses: refused (with IP_FREEBIND the bind works, but no route takes a
    # source that is not local; were one sent into the tunnel, the provider drops a source it
    # did not assign)
    assert got["bind_host_addr"] == "EADDRNOTAVAIL", got
    assert got["freebind_host_addr"] in ("timeout", "ENETUNREACH"), got
    assert got["freebind6_host_addr"] in ("EPERM", "ENETUNREACH"), got
    assert got["bindtodevice_uplink"] in ("ENODEV", "EPERM"), got
    # the host's resolver answers only through the tunnel
    assert got["dns_isp"] == "answered" or isp_got(provider, f"plain-{tag}.leak.test"), got
    assert got["dns_isp_tcp"] == "connected", got
    # the veth peer: nothing but the forward's own replies may pass
    assert got["bindtodevice_veth"] == "EPERM", got
    assert got["veth_peer_udp"] == "EPERM", got
    for port in (22, 80, 8080):
        assert got[f"veth_peer_tcp{port}"] == "ECONNREFUSED", got  # the kill switch's reset
    assert got["veth_peer_bcast"] == "EPERM", got
    assert got["veth_mcast"] == "EPERM", got
    assert got["from_veth_addr_udp"] == "EPERM", got
    assert got["from_veth_addr_tcp"] == "ECONNREFUSED", got
    assert got["veth_peer_ping"] != "ok", got
    assert got["allnodes6"] == "EPERM", got
    # a user namespace of its own: no power over this network namespace
    assert got["userns"].count("Operation not permitted") == 3, got

    assert_only_wireguard(cap, provider, expect_wireguard=True)
    assert not cap_veth.traffic(), f"reached the host over the veth: {cap_veth.traffic()}"
    assert_no_server_saw_the_host(provider, tag)
    assert not [e for e in provider.isp_dns_log_entries() if "fromveth" in e["qname"]]
    # and the namespace is as wgns left it
    proc = wgns("check", NS, check=False)
    assert proc.returncode == 0, proc.stdout


# routes and addresses a root process adds (only lo and wg to point them at)
ROOT_ROUTES = """\
route add 198.18.0.0/24 dev lo
route add {endpoint}/32 dev {wg}
route add 224.0.0.0/4 dev lo
addr add 198.18.0.2/32 dev lo
addr add 198.18.0.77/32 dev {wg}
route add default dev {wg} table 201
rule add pref 101 from 198.18.0.2 lookup 201
addr add 2001:db8::2/128 dev {wg} nodad
route add ::/0 dev {wg}
route add 2001:db8:2::/48 dev lo
"""
# then: everything through lo
ROOT_CATCH_ALL = """\
rule add pref 100 lookup 200
route add default dev lo table 200
"""

ROOT_TRICKS = r"""
import errno, json, socket, struct, sys
cfg = json.loads(sys.argv[1])
out = {}
def name_of(e):
    return errno.errorcode.get(e.errno, str(e)) if isinstance(e, OSError) and e.errno else repr(e)
def ipv4_udp(src, dst, dport, payload):
    udp = struct.pack("!HHHH", 5353, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + udp
# from the host's address to the web server's UDP echo (its log shows every datagram)
pkt = ipv4_udp(cfg["host"], cfg["web"], 7, b"spoofed")
# a spoofed IPv4 packet through a raw socket (IP_HDRINCL)
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(pkt, (cfg["web"], 0))
    out["raw_spoof"] = "sent"
except OSError as e:
    out["raw_spoof"] = name_of(e)
# packet sockets bypass netfilter: straight onto each device there is
for dev in cfg["devices"]:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        s.sendto(pkt, (dev, 0x0800))
        out["packet_" + dev] = "sent"
    except OSError as e:
        out["packet_" + dev] = name_of(e)
print(json.dumps(out))
"""


def test_root_inside_adding_routes_finds_no_way_out(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """No forward: lo and wg are all there is, whatever root does to the routing."""
    up(sandbox, provider, wgns)
    links = sandbox.run(["ip", "-br", "link"], netns=NS).stdout.split()
    assert [w for w in links if w.startswith(("lo", "wg", "vn"))] == ["lo", WG]
    tag = "root"
    cfg = {"host": provider.host_v4, "web": provider.web_v4, "devices": ["lo", WG]}
    tricks = ["python3", "-I", "-S", "-c", ROOT_TRICKS, json.dumps(cfg)]
    with provider.capture() as cap:
        sandbox.run(["ip", "-b", "-"], netns=NS, input=ROOT_ROUTES.format(endpoint=ENDPOINT, wg=WG))
        got = battery(sandbox, provider, tag + "1", 2.0)
        # what still goes, goes through the tunnel; IPv6 routed into wg is refused
        assert got["http4"] == "ok 198.18.1.2", got
        assert not got["dns_isp"].startswith("ok"), got  # 198.18.0.0/24 now loops on lo
        for k in ("dns_isp6", "allnodes6", "mdns6", "ll6"):
            assert got[k] == "EPERM", (k, got)
        assert not got["http6"].startswith("ok"), got  # 2001:db8:2::/48 loops on lo
        first = json.loads(sandbox.run(tricks, netns=NS).stdout)
        sandbox.run(["ip", "-b", "-"], netns=NS, input=ROOT_CATCH_ALL)
        got = battery(sandbox, provider, tag + "2")
        assert_nothing_gets_through(got)
        second = json.loads(sandbox.run(tricks, netns=NS).stdout)
    for k in ("http6", "udp6", "allnodes6", "mdns6", "ll6"):
        assert got[k] in ("EPERM", "ENETUNREACH", "ECONNREFUSED", "timeout"), (k, got)
    for tried in (first, second):
        assert tried == {"raw_spoof": "sent", "packet_lo": "sent", f"packet_{WG}": "sent"}
    assert_only_wireguard(cap, provider, expect_wireguard=True)
    assert_no_server_saw_the_host(provider, tag)
    for entry in provider.isp_dns_log_entries():
        assert entry["client"] != provider.host_v4, entry
    # the self-test notices the routes
    proc = wgns("check", NS, "--timeout", "1", check=False)
    assert proc.returncode == 1
    assert "FAIL routes:" in proc.stdout


@pytest.fixture(autouse=True)
def _bounded_time() -> Iterator[None]:
    t0 = time.monotonic()
    yield
    assert time.monotonic() - t0 < 45, "a leak test took more than 45 s"
