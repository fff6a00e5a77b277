"""Leak tests: nothing but WireGuard ever leaves, whatever runs inside and however the tunnel fails.

Every packet on the link between the sandbox host and its simulated ISP is captured (tcpdump,
``Provider.capture``) while programs inside send TCP, UDP, ICMP, DNS and IPv6 (link-local and
multicast included): with the tunnel up, and after each way of bringing it down (peer
unreachable, wireguard-go killed, interface deleted, endpoint address changed). A hostile
unprivileged program (`wgns exec --user nobody`) and a root process that adds its own routes try
to get around the tunnel. The assertion is always the same: on that link there is only
WireGuard UDP between the host and the peer's endpoint (and, inbound, ICMP errors about those
datagrams), and no server anywhere sees the host's own address on traffic from inside.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider
from wgns.testing.sim.capture import Capture, Packet

NS = "vpn"
WG = names.wg_ifname(NS, "vpn")
ENDPOINT = "198.18.1.2"
ENDPOINT_PORT = 51820
PROBE_TIMEOUT = 1.0  # with the tunnel down: every probe fails or times out within this
UP_TIMEOUT = 4.0  # with the tunnel up: answers come in ms, but a loaded CI machine is slow
POOL = "198.18.64.0/24"  # forward veths (issue 5) from the test ranges
REQUEST_RESPONSE = (
    "http4", "http6", "udp4", "udp6", "ping4", "ping6",
    "dns_tunnel", "dns_tunnel_tcp", "dns_isp", "dns_isp6", "dns_isp_tcp",
)  # fmt: skip

# --------------------------------------------------------------------------------------------
# The traffic battery: every probe in a thread, each bounded by a timeout; one JSON line out.

BATTERY = r"""
import errno, json, os, socket, struct, subprocess, sys, threading, time
cfg = json.loads(sys.argv[1])
T = cfg["timeout"]
results = {}

def name_of(e):
    if isinstance(e, socket.timeout) or isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__

def fam(a):
    return socket.AF_INET6 if ":" in a else socket.AF_INET

def sockaddr(a, port):
    if "%" in a:
        host, dev = a.split("%")
        return (host, port, 0, socket.if_nametoindex(dev))
    return (a, port)

def query(qname, qtype=1):
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\0"
    return qid, q + struct.pack("!HH", qtype, 1)

def rcode(qid, data):
    rid, flags = struct.unpack("!HH", data[:4])
    return "ok rcode %d" % (flags & 15) if rid == qid and flags & 0x8000 else "bad answer"

def http(a):
    with socket.socket(fam(a), socket.SOCK_STREAM) as s:
        s.settimeout(T)
        s.connect(sockaddr(a, 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return "ok " + data.split(b"\r\n\r\n", 1)[-1].decode().strip()

def udp_echo(a):
    with socket.socket(fam(a), socket.SOCK_DGRAM) as s:
        s.settimeout(T)
        s.sendto(b"wgns-leak-test", sockaddr(a, 7))
        s.recvfrom(4096)
    return "ok"

def udp_send(a, port):
    with socket.socket(fam(a), socket.SOCK_DGRAM) as s:
        if fam(a) == socket.AF_INET:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(b"wgns-leak-test", sockaddr(a, port))
    return "sent"

def dns(a, qname):
    with socket.socket(fam(a), socket.SOCK_DGRAM) as s:
        s.settimeout(T)
        qid, q = query(qname)
        s.sendto(q, sockaddr(a, 53))
        return rcode(qid, s.recvfrom(4096)[0])

def dns_tcp(a, qname):
    with socket.socket(fam(a), socket.SOCK_STREAM) as s:
        s.settimeout(T)
        s.connect(sockaddr(a, 53))
        qid, q = query(qname)
        s.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", s.recv(2))[0]
        return rcode(qid, s.recv(n))

def ping(a, wait=None):
    wait = int(wait or T) or 1
    argv = ["ping", "-6" if ":" in a else "-4", "-n", "-c1", "-W", str(wait), a]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=T + 3)
    if p.returncode == 0:
        return "ok"
    return "failed: " + (p.stderr.strip().splitlines() or ["no reply"])[-1]

KINDS = {"http": http, "udp_echo": udp_echo, "udp_send": udp_send, "dns": dns,
         "dns_tcp": dns_tcp, "ping": ping}

def run(name, kind, args):
    t0 = time.monotonic()
    try:
        r = KINDS[kind](*args)
    except BaseException as e:
        r = name_of(e)
    results[name] = {"result": r, "seconds": round(time.monotonic() - t0, 3)}

threads = [threading.Thread(target=run, args=(p[0], p[1], p[2:])) for p in cfg["probes"]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
"""


def probes(provider: Provider, tag: str) -> list[list[Any]]:
    """(name, kind, args...) for the battery. TAG makes the DNS names of this run unique."""
    return [
        ["http4", "http", provider.web_v4],
        ["http6", "http", provider.web_v6],
        ["udp4", "udp_echo", provider.web_v4],
        ["udp6", "udp_echo", provider.web_v6],
        ["ping4", "ping", provider.web_v4],
        ["ping6", "ping", provider.web_v6],
        ["dns_tunnel", "dns", provider.dns_v4, f"tunnel-{tag}.leak.test"],
        ["dns_tunnel_tcp", "dns_tcp", provider.dns_v4, f"tunneltcp-{tag}.leak.test"],
        # the host's resolver (what /etc/resolv.conf of the host names)
        ["dns_isp", "dns", provider.isp_dns, f"isp-{tag}.leak.test"],
        ["dns_isp6", "dns", provider.isp_dns_v6, f"isp6-{tag}.leak.test"],
        ["dns_isp_tcp", "dns_tcp", provider.isp_dns, f"isptcp-{tag}.leak.test"],
        # straight at the endpoint, and the link-local / multicast / broadcast chatter
        ["endpoint", "udp_send", ENDPOINT, ENDPOINT_PORT],
        ["mdns4", "udp_send", "224.0.0.251", 5353],
        ["ssdp4", "udp_send", "239.255.255.250", 1900],
        ["bcast4", "udp_send", "255.255.255.255", 67],
        ["allnodes6", "udp_send", f"ff02::1%{WG}", 9],
        ["mdns6", "udp_send", f"ff02::fb%{WG}", 5353],
        ["ssdp6", "udp_send", f"ff02::c%{WG}", 1900],
        ["llping6", "ping", f"ff02::1%{WG}", 1],  # no error from ping -6 when refused
        ["ll6", "udp_send", f"fe80::1%{WG}", 9],
    ]


def battery(
    sandbox: Sandbox, provider: Provider, tag: str, timeout: float = PROBE_TIMEOUT
) -> dict[str, str]:
    """Run the battery inside NS as root; every probe must end within its timeout."""
    cfg = {"timeout": timeout, "probes": probes(provider, tag)}
    t0 = time.monotonic()
    out = sandbox.run(["python3", "-I", "-S", "-c", BATTERY, json.dumps(cfg)], netns=NS).stdout
    took = time.monotonic() - t0
    results: dict[str, dict[str, Any]] = json.loads(out)
    slow = {k: v for k, v in results.items() if v["seconds"] > timeout + 1.5}
    assert not slow, f"probes that neither failed nor timed out quickly: {slow}"
    assert took < timeout + 5, took
    return {k: str(v["result"]) for k, v in results.items()}


# --------------------------------------------------------------------------------------------
# What the capture may contain


def _icmp_errors_about_wireguard(raw: bytes, host: str) -> tuple[int, list[str]]:
    """(ICMP errors sent to HOST about its WireGuard datagrams, descriptions of any other ICMP
    error) in a pcap of an Ethernet link."""
    ok, other = 0, list[str]()
    if len(raw) < 24:
        return ok, other
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(endian + "I", raw[20:24])[0] & 0xFFFF == 1, "not an Ethernet capture"
    off = 24
    while off + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[off + 8 : off + 12])[0]
        frame = raw[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0xF) * 4
        if ip[9] != 1:
            continue
        icmp = ip[ihl:]
        if icmp[0] not in (3, 11):
            continue
        inner = icmp[8:]
        iihl = (inner[0] & 0xF) * 4
        dst = str(ipaddress.IPv4Address(inner[16:20]))
        dport = struct.unpack("!H", inner[iihl + 2 : iihl + 4])[0] if len(inner) >= iihl + 4 else 0
        to = str(ipaddress.IPv4Address(ip[16:20]))
        if to == host and inner[9] == 17 and dst == ENDPOINT and dport == ENDPOINT_PORT:
            ok += 1
        else:
            other.append(f"icmp {icmp[0]}/{icmp[1]} to {to} about proto {inner[9]} to {dst}")
    return ok, other


def assert_only_wireguard(cap: Capture, provider: Provider, *, expect_wireguard: bool) -> None:
    host = provider.host_v4
    packets = cap.traffic()  # everything but ARP and ICMPv6 neighbour discovery / MLD

    def is_wireguard(p: Packet) -> bool:
        return p.proto == "udp" and (
            (p.src == host and p.dst == ENDPOINT and p.dport == ENDPOINT_PORT)
            or (p.src == ENDPOINT and p.dst == host and p.sport == ENDPOINT_PORT)
        )

    wg = [p for p in packets if is_wireguard(p)]
    rest = [p for p in packets if not is_wireguard(p)]
    icmp_ok, icmp_other = _icmp_errors_about_wireguard(provider.sandbox.read_bytes(cap.file), host)
    unexplained = [p for p in rest if not (p.proto == "icmp" and p.dst == host)]
    assert not unexplained, f"not WireGuard on the ISP link: {unexplained}"
    assert not icmp_other, icmp_other
    assert icmp_ok == len(rest)
    if expect_wireguard:
        assert wg, "the capture saw no WireGuard at all: is it capturing?"
    # the housekeeping that was filtered out never comes from inside the namespace
    for p in cap.packets():
        if p.is_housekeeping and p.src is not None and p.proto == "arp":
            assert p.src in (host, provider.isp_dns), p


def assert_no_server_saw_the_host(provider: Provider, tag: str) -> None:
    """Whatever reached a server from inside came through the tunnel (the provider's exit
    addresses), never from the host's own address around it."""
    host = {provider.host_v4, provider.host_v6}
    exits = {"198.18.1.2", "2001:db8:1::2"}
    for entry in provider.web_requests():
        assert entry.get("client") not in host, entry
    for entry in provider.isp_dns_log_entries():
        if tag in entry["qname"]:
            assert entry["client"] in exits, entry
    for entry in provider.dns_log():
        if tag in entry["qname"]:
            assert entry["client"] not in host, entry


# --------------------------------------------------------------------------------------------


def up(sandbox: Sandbox, provider: Provider, wgns: Any, *, ipv6: bool = False) -> None:
    path = f"{SANDBOX_TMP}/vpn.conf"
    sandbox.write_file(path, provider.client_conf(ipv6=ipv6), mode=0o600)
    wgns("up", path, "--name", NS)


def _isp_got(provider: Provider, qname: str) -> bool:
    """The ISP resolver saw QNAME, from the provider's exit (through the tunnel)."""
    return any(
        e["qname"] == qname and e["client"] in ("198.18.1.2", "2001:db8:1::2")
        for e in provider.isp_dns_log_entries()
    )


def assert_tunnel_works(
    got: dict[str, str], *, ipv6: bool, provider: Provider | None = None, tag: str = ""
) -> None:
    assert got["http4"] == "ok 198.18.1.2", got  # the provider's exit, not 198.18.0.2
    for k in ("udp4", "ping4", "dns_tunnel", "dns_tunnel_tcp", "dns_isp_tcp"):
        assert got[k].startswith("ok"), (k, got)
    # The host's resolver, through the tunnel. (The simulated ISP resolver sometimes answers
    # UDP from the wrong source address, which the provider's NAT then drops: the query
    # reaching it through the tunnel is what matters here.)
    if provider is not None:
        assert got["dns_isp"].startswith("ok") or _isp_got(provider, f"isp-{tag}.leak.test")
    if ipv6:
        assert got["http6"] == "ok 2001:db8:1::2", got
        for k in ("udp6", "ping6"):
            assert got[k].startswith("ok"), (k, got)
        if provider is not None:
            assert got["dns_isp6"].startswith("ok") or _isp_got(provider, f"isp6-{tag}.leak.test")
    else:
        # no IPv6 in the profile: refused at once, not silently timing out
        for k in ("http6", "udp6", "dns_isp6"):
            assert got[k] in ("ENETUNREACH", "EPERM"), (k, got)
        for k in ("allnodes6", "mdns6", "ssdp6", "ll6"):
            assert got[k] == "EPERM", (k, got)
        assert got["ping6"].startswith("failed"), got
        assert got["llping6"].startswith("failed"), got


def assert_nothing_gets_through(got: dict[str, str]) -> None:
    through = {k: got[k] for k in REQUEST_RESPONSE if got[k].startswith("ok")}
    assert not through, f"answered with the tunnel down: {through}"


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
    sandbox.run(
        ["nft", "-f", "-"],
        netns="isp",
        input="table inet outage {\n chain forward_block {\n"
        "  type filter hook forward priority 0; udp dport 51820 drop\n }\n}\n",
    )


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
    assert got["dns_isp"] == "answered" or _isp_got(provider, f"plain-{tag}.leak.test"), got
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
