"""What the leak tests share: the traffic battery run inside the namespace, and the assertions
on what the capture of the host's uplink, and the servers, saw (see test_leaks, test_escapes)."""

from __future__ import annotations

import ipaddress
import json
import struct
import time
from typing import Any

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


def isp_got(provider: Provider, qname: str) -> bool:
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
        assert got["dns_isp"].startswith("ok") or isp_got(provider, f"isp-{tag}.leak.test")
    if ipv6:
        assert got["http6"] == "ok 2001:db8:1::2", got
        for k in ("udp6", "ping6"):
            assert got[k].startswith("ok"), (k, got)
        if provider is not None:
            assert got["dns_isp6"].startswith("ok") or isp_got(provider, f"isp6-{tag}.leak.test")
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
