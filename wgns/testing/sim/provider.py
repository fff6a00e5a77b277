"""The simulated VPN provider: an ISP, a WireGuard server and "the internet", inside a sandbox.

Topology (addresses only from 198.18.0.0/15 and 2001:db8::/32)::

    sandbox host ns              ns isp (router)                 ns provider
    uplink0 198.18.0.2/24  ---  isp-host 198.18.0.1/24            eth0 198.18.1.2/24
            2001:db8::2/64               2001:db8::1/64                2001:db8:1::2/64
    default via isp             isp-prov 198.18.1.1/24  -------   wgsrv 198.19.0.1/24
    resolv.conf: 198.18.0.1              2001:db8:1::1/64               2001:db8:ff::1/64
                                isp-web  198.18.2.1/24  ---+      (wireguard-go, :51820,
                                         2001:db8:2::1/64   |       NAT of tunnel clients,
                                ISP DNS on 198.18.0.1:53    |       DNS on 198.19.0.1:53)
                                       and [2001:db8::1]:53 |
                                                            |     ns web ("the internet")
                                                            +---  eth0 198.18.2.2/24
                                                                       2001:db8:2::2/64
                                                                  HTTP :80 (your address),
                                                                  UDP/TCP echo :7

With ``second_server=True`` a second WireGuard server lives in ns ``provider2``
(198.18.3.2 / 2001:db8:3::2, tunnel 198.19.1.1/24 and 2001:db8:fe::1/64, DNS on its tunnel
addresses, ``vpn2.provider.test``), behind ``isp-prov2`` (198.18.3.1 / 2001:db8:3::1).

Key material never appears on a command line: private keys go through stdin/stdout of ``wg`` and
files under the sandbox's private /run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from wgns.testing.sandbox import SANDBOX_DIR, Sandbox, SandboxError

SIM_DIR = f"{SANDBOX_DIR}/sim"
WG_PORT = 51820
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}

HOST_UPLINK = "uplink0"
ISP_NS = "isp"
WEB_NS = "web"
ISP_HOST_IF = "isp-host"

HOST_V4, HOST_V6 = "198.18.0.2", "2001:db8::2"
ISP_V4, ISP_V6 = "198.18.0.1", "2001:db8::1"
WEB_V4, WEB_V6 = "198.18.2.2", "2001:db8:2::2"

_HERE = Path(__file__).resolve().parent
_DNS_SCRIPT = str(_HERE / "dnsserver.py")
_ECHO_SCRIPT = str(_HERE / "echo.py")

READY_TIMEOUT = 10.0


class ProviderError(SandboxError):
    pass


@dataclass(frozen=True)
class Server:
    """One WireGuard server of the provider."""

    index: int
    netns: str  # "provider"
    ifname: str  # "wgsrv"
    isp_ifname: str  # the ISP's interface towards it
    public_key: str
    uplink_v4: str  # 198.18.1.2
    uplink_v6: str
    isp_v4: str  # its gateway, 198.18.1.1
    isp_v6: str
    tunnel_v4: str  # 198.19.0.1 (the server's tunnel address, also its DNS)
    tunnel_v6: str
    tunnel_prefix_v4: str  # 198.19.0.0/24
    tunnel_prefix_v6: str  # 2001:db8:ff::/64
    hostname: str  # vpn.provider.test
    port: int = WG_PORT

    @property
    def endpoint_v4(self) -> str:
        return f"{self.uplink_v4}:{self.port}"

    @property
    def endpoint_v6(self) -> str:
        return f"[{self.uplink_v6}]:{self.port}"

    @property
    def endpoint_name(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def dns_v4(self) -> str:
        return self.tunnel_v4

    @property
    def dns_v6(self) -> str:
        return self.tunnel_v6

    @property
    def uapi_dir(self) -> str:
        """Bind-mounted over /run/wireguard in the server's own mount namespace."""
        return f"{SIM_DIR}/wg-{self.ifname}"

    @property
    def key_path(self) -> str:
        return f"{SIM_DIR}/{self.ifname}.key"

    @property
    def dns_log(self) -> str:
        return f"{SIM_DIR}/dns-{self.netns}.log"

    def client_addresses(self, n: int) -> tuple[str, str]:
        v4 = ipaddress.ip_network(self.tunnel_prefix_v4)[n]
        v6 = ipaddress.ip_network(self.tunnel_prefix_v6)[n]
        return f"{v4}/32", f"{v6}/128"


def _make_server(index: int, public_key: str = "") -> Server:
    if index == 0:
        return Server(
            index=0,
            netns="provider",
            ifname="wgsrv",
            isp_ifname="isp-prov",
            public_key=public_key,
            uplink_v4="198.18.1.2",
            uplink_v6="2001:db8:1::2",
            isp_v4="198.18.1.1",
            isp_v6="2001:db8:1::1",
            tunnel_v4="198.19.0.1",
            tunnel_v6="2001:db8:ff::1",
            tunnel_prefix_v4="198.19.0.0/24",
            tunnel_prefix_v6="2001:db8:ff::/64",
            hostname="vpn.provider.test",
        )
    if index == 1:
        return Server(
            index=1,
            netns="provider2",
            ifname="wgsrv2",
            isp_ifname="isp-prov2",
            public_key=public_key,
            uplink_v4="198.18.3.2",
            uplink_v6="2001:db8:3::2",
            isp_v4="198.18.3.1",
            isp_v6="2001:db8:3::1",
            tunnel_v4="198.19.1.1",
            tunnel_v6="2001:db8:fe::1",
            tunnel_prefix_v4="198.19.1.0/24",
            tunnel_prefix_v6="2001:db8:fe::/64",
            hostname="vpn2.provider.test",
        )
    raise ValueError(f"no server #{index}")


@dataclass(frozen=True)
class Client:
    """One wgns-side identity, registered as a peer on every server of the provider."""

    private_key: str = field(repr=False)
    public_key: str
    address_v4: str  # on server 0, e.g. 198.19.0.2/32
    address_v6: str  # e.g. 2001:db8:ff::2/128
    index: int = 2
    addresses: tuple[tuple[str, str], ...] = ()  # (v4, v6) per server

    def addresses_on(self, server: int) -> tuple[str, str]:
        return self.addresses[server]


# --------------------------------------------------------------------------------------------
# Packet capture


# MLD query/report/done, router solicitation/advertisement, neighbour solicitation/advertisement,
# redirect, MLDv2 report
_ICMP6_HOUSEKEEPING = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})


@dataclass(frozen=True)
class Packet:
    """A summary of one captured frame."""

    proto: str  # "udp", "tcp", "icmp", "icmp6", "arp", "ip4:N"/"ip6:N", "eth:0xNNNN"
    src: str | None
    dst: str | None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    length: int = 0

    # ARP and ICMPv6 neighbour/router discovery and MLD: link housekeeping, not traffic
    @property
    def is_housekeeping(self) -> bool:
        if self.proto == "arp":
            return True
        return self.proto == "icmp6" and self.icmp_type in _ICMP6_HOUSEKEEPING


def _parse_l3(ethertype: int, data: bytes, length: int) -> Packet:
    if ethertype == 0x0806:
        if len(data) >= 28:
            spa = str(ipaddress.IPv4Address(data[14:18]))
            tpa = str(ipaddress.IPv4Address(data[24:28]))
            return Packet("arp", spa, tpa, length=length)
        return Packet("arp", None, None, length=length)
    if ethertype == 0x0800 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        proto = data[9]
        frag = struct.unpack("!H", data[6:8])[0] & 0x1FFF
        src = str(ipaddress.IPv4Address(data[12:16]))
        dst = str(ipaddress.IPv4Address(data[16:20]))
        return _parse_l4(proto, data[ihl:], src, dst, length, first=frag == 0, v6=False)
    if ethertype == 0x86DD and len(data) >= 40:
        nh = data[6]
        src = str(ipaddress.IPv6Address(data[8:24]))
        dst = str(ipaddress.IPv6Address(data[24:40]))
        off = 40
        first = True
        while nh in (0, 43, 44, 60) and off + 8 <= len(data):
            if nh == 44:  # fragment header
                first = (struct.unpack("!H", data[off + 2 : off + 4])[0] >> 3) == 0
                nh, off = data[off], off + 8
            else:
                nh, off = data[off], off + (data[off + 1] + 1) * 8
        return _parse_l4(nh, data[off:], src, dst, length, first=first, v6=True)
    return Packet(f"eth:0x{ethertype:04x}", None, None, length=length)


def _parse_l4(
    proto: int, data: bytes, src: str, dst: str, length: int, *, first: bool, v6: bool
) -> Packet:
    if proto in (6, 17):
        name = "tcp" if proto == 6 else "udp"
        if first and len(data) >= 4:
            sport, dport = struct.unpack("!HH", data[:4])
            return Packet(name, src, dst, sport, dport, length=length)
        return Packet(name, src, dst, length=length)
    if proto == 1 and not v6:
        return Packet("icmp", src, dst, icmp_type=data[0] if data else None, length=length)
    if proto == 58 and v6:
        return Packet("icmp6", src, dst, icmp_type=data[0] if data else None, length=length)
    return Packet(f"ip{6 if v6 else 4}:{proto}", src, dst, length=length)


def parse_pcap(raw: bytes) -> list[Packet]:
    """Parse a classic pcap file (Ethernet, Linux cooked v1/v2 or raw IP link types)."""
    if len(raw) < 24:
        return []
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack(endian + "I", raw[20:24])[0] & 0x0FFFFFFF
    out: list[Packet] = []
    off = 24
    while off + 16 <= len(raw):
        _sec, _frac, incl, orig = struct.unpack(endian + "IIII", raw[off : off + 16])
        off += 16
        frame = raw[off : off + incl]
        off += incl
        if linktype == 1:  # Ethernet
            if len(frame) < 14:
                continue
            ethertype = struct.unpack("!H", frame[12:14])[0]
            payload = frame[14:]
            while ethertype in (0x8100, 0x88A8) and len(payload) >= 4:
                ethertype = struct.unpack("!H", payload[2:4])[0]
                payload = payload[4:]
            out.append(_parse_l3(ethertype, payload, orig))
        elif linktype == 113:  # Linux cooked v1
            if len(frame) >= 16:
                out.append(_parse_l3(struct.unpack("!H", frame[14:16])[0], frame[16:], orig))
        elif linktype == 276:  # Linux cooked v2
            if len(frame) >= 20:
                out.append(_parse_l3(struct.unpack("!H", frame[0:2])[0], frame[20:], orig))
        elif linktype in (12, 101) and frame:  # raw IP
            et = 0x0800 if frame[0] >> 4 == 4 else 0x86DD
            out.append(_parse_l3(et, frame, orig))
    return out


class Capture:
    """tcpdump on one interface of one namespace of the sandbox.

    Use as a context manager (or :meth:`start`/:meth:`stop`); the capture is listening when
    start() returns, and :meth:`packets` parses what it saw (stopping it first if needed)."""

    _counter = 0

    def __init__(self, sandbox: Sandbox, netns: str | None, ifname: str) -> None:
        Capture._counter += 1
        self.sandbox = sandbox
        self.netns = netns
        self.ifname = ifname
        self.file = f"{SIM_DIR}/capture-{os.getpid()}-{Capture._counter}.pcap"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = b""

    def start(self, timeout: float = 10) -> Capture:
        if self._proc is not None:
            raise ProviderError("capture already started")
        self.sandbox.path(SIM_DIR).mkdir(parents=True, exist_ok=True)
        argv = [
            "tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root",
            "-i", self.ifname, "-w", self.file,
        ]  # fmt: skip
        self._proc = self.sandbox.popen(
            argv, netns=self.netns, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"listening on" not in self._stderr:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise ProviderError(f"tcpdump did not start: {self._stderr.decode()!r}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._proc.wait()
                    raise ProviderError(
                        f"tcpdump exited ({self._proc.returncode}): {self._stderr.decode()!r}"
                    )
                self._stderr += chunk
        return self

    def stop(self) -> None:
        p = self._proc
        if p is None or p.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        self._stderr += err or b""
        self.sandbox.untrack(p)

    def packets(self) -> list[Packet]:
        """Every captured frame (ARP and ICMPv6 housekeeping included)."""
        if self._proc is None:
            raise ProviderError("capture never started")
        self.stop()
        try:
            raw = self.sandbox.read_bytes(self.file)
        except FileNotFoundError:
            return []
        return parse_pcap(raw)

    def traffic(self) -> list[Packet]:
        """The captured packets minus link housekeeping (ARP, ICMPv6 ND/RS/RA/MLD)."""
        return [p for p in self.packets() if not p.is_housekeeping]

    def __enter__(self) -> Capture:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------


class Provider:
    """A running simulated provider inside a sandbox (see the module docstring)."""

    isp_dns = ISP_V4
    isp_dns_v6 = ISP_V6
    web_v4 = WEB_V4
    web_v6 = WEB_V6
    host_v4 = HOST_V4
    host_v6 = HOST_V6
    host_uplink = HOST_UPLINK
    isp_link = (ISP_NS, ISP_HOST_IF)  # (namespace, ifname) for captures
    isp_dns_log = f"{SIM_DIR}/dns-isp.log"
    web_log = f"{SIM_DIR}/web.log"

    def __init__(self, sandbox: Sandbox, servers: Sequence[Server]) -> None:
        self.sandbox = sandbox
        self.servers: list[Server] = list(servers)
        self._procs: list[subprocess.Popen[Any]] = []
        self._wg_procs: dict[int, subprocess.Popen[Any]] = {}
        self._next_client = 2
        self._closed = False
        self.build_time = 0.0

    # server 0 shortcuts -----------------------------------------------------------------
    @property
    def server(self) -> Server:
        return self.servers[0]

    @property
    def server_public_key(self) -> str:
        return self.servers[0].public_key

    @property
    def endpoint_v4(self) -> str:
        return self.servers[0].endpoint_v4

    @property
    def endpoint_v6(self) -> str:
        return self.servers[0].endpoint_v6

    @property
    def endpoint_host(self) -> str:
        return self.servers[0].hostname

    @property
    def endpoint_name(self) -> str:
        return self.servers[0].endpoint_name

    @property
    def dns_v4(self) -> str:
        return self.servers[0].dns_v4

    @property
    def dns_v6(self) -> str:
        return self.servers[0].dns_v6

    @property
    def namespaces(self) -> list[str]:
        return [ISP_NS, WEB_NS, *(s.netns for s in self.servers)]

    # clients --------------------------------------------------------------------------------
    def genkey(self) -> tuple[str, str]:
        """A fresh (private, public) key pair; the private key only travels through pipes."""
        priv = self.sandbox.run(["wg", "genkey"]).stdout.strip()
        pub = self.sandbox.run(["wg", "pubkey"], input=priv + "\n").stdout.strip()
        return priv, pub

    def wg(
        self, server: int, args: Sequence[str], *, raw: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `wg ARGS` for server #SERVER (in its namespaces, where its UAPI socket is).

        With ``raw`` ARGS is a whole command instead of arguments to `wg`."""
        s = self.servers[server]
        p = self._wg_procs[server]
        argv = [*args] if raw else ["wg", *args]
        return self.sandbox.run(
            ["nsenter", f"--mount=/proc/{p.pid}/ns/mnt", "--", *argv], netns=s.netns, check=check
        )

    def new_client(self) -> Client:
        """Generate a key pair and register it as a peer on every server."""
        n = self._next_client
        if n > 254:
            raise ProviderError("out of client addresses")
        self._next_client += 1
        priv, pub = self.genkey()
        addresses = tuple(s.client_addresses(n) for s in self.servers)
        for s, (v4, v6) in zip(self.servers, addresses, strict=True):
            conf = f"[Peer]\nPublicKey = {pub}\nAllowedIPs = {v4}, {v6}\n"
            path = f"{SIM_DIR}/peer-{s.ifname}-{n}.conf"
            self.sandbox.write_file(path, conf, mode=0o600)
            self.wg(s.index, ["addconf", s.ifname, path])
        return Client(
            private_key=priv,
            public_key=pub,
            address_v4=addresses[0][0],
            address_v6=addresses[0][1],
            index=n,
            addresses=addresses,
        )

    def client_conf(
        self,
        client: Client | None = None,
        *,
        ipv6: bool = True,
        allowed_ips: Sequence[str] = ("0.0.0.0/0", "::/0"),
        dns: bool = True,
        endpoint: str | None = None,
        mtu: int | None = None,
        keepalive: int | None = None,
        server: int = 0,
    ) -> str:
        """wg-quick .conf text for CLIENT (a new one if None) talking to server #SERVER.

        ``ipv6=False`` leaves out the IPv6 address, DNS server and allowed IPs."""
        if client is None:
            client = self.new_client()
        s = self.servers[server]
        v4, v6 = client.addresses[server]
        addrs = [v4, v6] if ipv6 else [v4]
        allowed = [a for a in allowed_ips if ipv6 or ":" not in a]
        lines = ["[Interface]", f"PrivateKey = {client.private_key}"]
        lines.append(f"Address = {', '.join(addrs)}")
        if dns:
            lines.append(f"DNS = {', '.join([s.dns_v4, s.dns_v6] if ipv6 else [s.dns_v4])}")
        if mtu is not None:
            lines.append(f"MTU = {mtu}")
        lines += ["", "[Peer]", f"PublicKey = {s.public_key}"]
        lines.append(f"AllowedIPs = {', '.join(allowed)}")
        lines.append(f"Endpoint = {endpoint or s.endpoint_v4}")
        if keepalive is not None:
            lines.append(f"PersistentKeepalive = {keepalive}")
        return "\n".join(lines) + "\n"

    # observations ----------------------------------------------------------------------------
    def _read_log(self, path: str) -> list[dict[str, Any]]:
        try:
            text = self.sandbox.read_text(path)
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def dns_log(self, server: int = 0) -> list[dict[str, Any]]:
        """Full query records of a server's DNS (qname, qtype, client, proto)."""
        return self._read_log(self.servers[server].dns_log)

    def dns_queries(self, server: int = 0) -> list[tuple[str, str]]:
        """(qname, qtype) seen by the provider's DNS (of server #SERVER), in order."""
        return [(r["qname"], r["qtype"]) for r in self.dns_log(server)]

    def isp_dns_log_entries(self) -> list[dict[str, Any]]:
        return self._read_log(self.isp_dns_log)

    def isp_dns_queries(self) -> list[tuple[str, str]]:
        """(qname, qtype) seen by the ISP resolver, in order."""
        return [(r["qname"], r["qtype"]) for r in self.isp_dns_log_entries()]

    def web_requests(self) -> list[dict[str, Any]]:
        """HTTP requests and UDP echo datagrams seen by the web server."""
        return self._read_log(self.web_log)

    def server_dump(self, server: int = 0) -> list[dict[str, Any]]:
        """The peers of a server from `wg show IF dump`."""
        s = self.servers[server]
        out = self.wg(server, ["show", s.ifname, "dump"]).stdout
        peers = []
        for line in out.splitlines()[1:]:
            f = line.split("\t")
            if len(f) < 8:
                continue
            peers.append(
                {
                    "public_key": f[0],
                    "endpoint": None if f[2] == "(none)" else f[2],
                    "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
                    "latest_handshake": int(f[4]),
                    "rx": int(f[5]),
                    "tx": int(f[6]),
                }
            )
        return peers

    def server_handshakes(self, server: int = 0) -> dict[str, int]:
        """peer public key -> latest handshake (unix time, 0 = never)."""
        return {p["public_key"]: p["latest_handshake"] for p in self.server_dump(server)}

    def wait_handshake(self, public_key: str, *, server: int = 0, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while True:
            hs = self.server_handshakes(server).get(public_key, 0)
            if hs:
                return hs
            if time.monotonic() > deadline:
                raise ProviderError(f"no handshake from {public_key} within {timeout}s")
            time.sleep(0.05)

    def capture(self, netns: str | None = None, ifname: str | None = None) -> Capture:
        """A capture on the ISP link (default) or any interface of the sandbox; use ``with``."""
        if netns is None and ifname is None:
            netns, ifname = self.isp_link
        return Capture(self.sandbox, netns, ifname or self.isp_link[1])

    # lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the provider's processes and remove its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
            self.sandbox.untrack(p)
        self._procs.clear()
        if self.sandbox.closed:
            return
        # the host's uplink first (synchronously, with its peer): namespaces die asynchronously
        batch = f"link delete {HOST_UPLINK}\n"
        batch += "".join(f"netns delete {ns}\n" for ns in self.namespaces)
        self.sandbox.run(["ip", "-force", "-batch", "-"], input=batch, check=False)

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Building


def _network_script(servers: Sequence[Server]) -> str:
    """One shell script (run inside the sandbox) building all links, addresses and routes."""
    sh: list[str] = ["set -e"]

    def sysctl(ns: str | None, *settings: str) -> None:
        pre = f"nsenter --net=/run/netns/{ns} " if ns else ""
        sh.append(f"{pre}sysctl -q -w {' '.join(settings)}")

    def batch(ns: str | None, lines: Sequence[str]) -> None:
        n = f"-n {ns} " if ns else ""
        body = "\n".join(lines)
        sh.append(f"ip {n}-batch - <<'EOF'\n{body}\nEOF")

    quiet_v6 = (
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.default.router_solicitations=0",
    )
    router = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    sysctl(ISP_NS, *quiet_v6, *router)
    sysctl(WEB_NS, *quiet_v6)
    for s in servers:
        sysctl(s.netns, *quiet_v6, *router)

    # Every veth end gets an ifindex of its own across all namespaces: the kernel treats a
    # carrier change as urgent only when a device's ifindex differs from its peer's, otherwise
    # it is processed up to a second later (and the links take that long to settle).
    batch(
        None,
        [
            f"link add {HOST_UPLINK} index 10 type veth "
            f"peer name {ISP_HOST_IF} index 11 netns {ISP_NS}"
        ],
    )
    # no router solicitations or DAD probes from the host's uplink: captures stay quiet
    sysctl(
        None,
        f"net.ipv6.conf.{HOST_UPLINK}.accept_dad=0",
        f"net.ipv6.conf.{HOST_UPLINK}.router_solicitations=0",
    )
    batch(
        None,
        [
            f"addr add {HOST_V4}/24 dev {HOST_UPLINK}",
            f"addr add {HOST_V6}/64 dev {HOST_UPLINK} nodad",
            f"link set {HOST_UPLINK} up",
            f"route add default via {ISP_V4} dev {HOST_UPLINK}",
            f"route add default via {ISP_V6} dev {HOST_UPLINK}",
        ],
    )
    isp = [
        "link set lo up",
        "link add isp-web index 12 type veth peer name eth0 index 13 netns web",
        f"addr add {ISP_V4}/24 dev {ISP_HOST_IF}",
        f"addr add {ISP_V6}/64 dev {ISP_HOST_IF} nodad",
        "addr add 198.18.2.1/24 dev isp-web",
        "addr add 2001:db8:2::1/64 dev isp-web nodad",
        f"link set {ISP_HOST_IF} up",
        "link set isp-web up",
    ]
    for s in servers:
        isp += [
            f"link add {s.isp_ifname} index {14 + 2 * s.index} type veth "
            f"peer name eth0 index {15 + 2 * s.index} netns {s.netns}",
            f"addr add {s.isp_v4}/24 dev {s.isp_ifname}",
            f"addr add {s.isp_v6}/64 dev {s.isp_ifname} nodad",
            f"link set {s.isp_ifname} up",
        ]
    batch(ISP_NS, isp)
    batch(
        WEB_NS,
        [
            "link set lo up",
            f"addr add {WEB_V4}/24 dev eth0",
            f"addr add {WEB_V6}/64 dev eth0 nodad",
            "link set eth0 up",
            "route add default via 198.18.2.1 dev eth0",
            "route add default via 2001:db8:2::1 dev eth0",
        ],
    )
    for s in servers:
        batch(
            s.netns,
            [
                "link set lo up",
                f"addr add {s.uplink_v4}/24 dev eth0",
                f"addr add {s.uplink_v6}/64 dev eth0 nodad",
                "link set eth0 up",
                f"route add default via {s.isp_v4} dev eth0",
                f"route add default via {s.isp_v6} dev eth0",
            ],
        )
        nat = (
            "table inet wgns-sim {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "eth0" ip saddr {s.tunnel_prefix_v4} masquerade\n'
            f'    oifname "eth0" ip6 saddr {s.tunnel_prefix_v6} masquerade\n'
            "  }\n"
            "}"
        )
        sh.append(f"nsenter --net=/run/netns/{s.netns} nft -f - <<'EOF'\n{nat}\nEOF")
        # the server key: generated into a private file, only the public half is printed
        sh.append(
            f"(umask 077; wg genkey > {s.key_path}); printf 'pubkey {s.index} '; "
            f"wg pubkey < {s.key_path}"
        )
    return "\n".join(sh) + "\n"


def _wg_script(s: Server) -> str:
    return "\n".join(
        [
            "set -e",
            f"wg set {s.ifname} listen-port {s.port} private-key {s.key_path}",
            f"ip -n {s.netns} -batch - <<'EOF'",
            f"addr add {s.tunnel_v4}/24 dev {s.ifname}",
            f"addr add {s.tunnel_v6}/64 dev {s.ifname} nodad",
            f"link set {s.ifname} up",
            "EOF",
        ]
    )


def _wait_ready(
    sandbox: Sandbox,
    pythons: dict[str, subprocess.Popen[bytes]],
    sockets: dict[str, tuple[subprocess.Popen[bytes], str]],
    timeout: float,
) -> None:
    """Wait for each Python server to print 'ready' and each UAPI socket to appear."""
    deadline = time.monotonic() + timeout
    pending = dict(pythons)
    buffers: dict[str, bytes] = {name: b"" for name in pythons}
    with selectors.DefaultSelector() as sel:
        for name, p in pythons.items():
            assert p.stdout is not None
            sel.register(p.stdout.fileno(), selectors.EVENT_READ, name)
        waiting_sockets = dict(sockets)
        while pending or waiting_sockets:
            for name, (p, sock) in list(waiting_sockets.items()):
                if sandbox.path(sock).exists():
                    del waiting_sockets[name]
                elif p.poll() is not None:
                    raise ProviderError(
                        f"{name} exited with {p.returncode}: {_errlog(sandbox, name)}"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProviderError(
                    f"not ready after {timeout}s: {sorted([*pending, *waiting_sockets])}"
                )
            if not pending:
                time.sleep(0.002)
                continue
            for key, _ in sel.select(min(left, 0.002 if waiting_sockets else left)):
                name = key.data
                chunk = os.read(key.fd, 4096)
                buffers[name] += chunk
                if b"ready" in buffers[name]:
                    sel.unregister(key.fd)
                    del pending[name]
                elif not chunk:
                    sel.unregister(key.fd)
                    p = pending.pop(name)
                    p.wait(timeout=5)
                    raise ProviderError(
                        f"{name} exited with {p.returncode}: {_errlog(sandbox, name)}"
                    )


def _wait_settled(sandbox: Sandbox, namespaces: Sequence[str | None], timeout: float) -> None:
    """Wait until the kernel has finished bringing the veth links up.

    Carrier changes are processed asynchronously (linkwatch): operstate, and with it the IPv6
    link-local address and multicast route of one end of each veth pair, appear a moment after
    `ip link set up` (up to a second on a busy machine). A snapshot taken before that would
    differ from one taken after, so the provider only returns once everything is settled."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [
            subprocess.Popen(
                sandbox.command(["ip", "-j", "link", "show", "type", "veth"], netns=ns),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for ns in namespaces
        ]
        pending = []
        for ns, p in zip(namespaces, procs, strict=True):
            out, _ = p.communicate(timeout=30)
            links = json.loads(out or b"[]")
            pending += [(ns, x["ifname"]) for x in links if x.get("operstate") != "UP"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ProviderError(f"links not up after {timeout}s: {pending}")
        time.sleep(0.01)


def _errlog(sandbox: Sandbox, name: str) -> str:
    try:
        return sandbox.read_text(f"{SIM_DIR}/{name}.err").strip()[-2000:]
    except OSError:
        return "(no output)"


def build_provider(sandbox: Sandbox, *, second_server: bool = False) -> Provider:
    """Build the simulated provider inside SANDBOX (see the module docstring)."""
    t0 = time.monotonic()
    servers = [_make_server(0), *([_make_server(1)] if second_server else [])]
    provider = Provider(sandbox, servers)
    sandbox.path(SIM_DIR).mkdir(mode=0o755, parents=True, exist_ok=True)
    namespaces = [ISP_NS, WEB_NS, *(s.netns for s in servers)]
    sandbox.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in namespaces))

    try:
        # start every daemon now, they come up while the network is being built
        def start(
            name: str, argv: list[str], ns: str, env: dict[str, str] | None = None
        ) -> subprocess.Popen[bytes]:
            with open(sandbox.path(f"{SIM_DIR}/{name}.err"), "wb") as err:
                # Python servers say "ready" on stdout; wireguard-go's output goes to the log
                out: Any = err if env is not None else subprocess.PIPE
                p: subprocess.Popen[bytes] = sandbox.popen(
                    argv, netns=ns, stdout=out, stderr=err, env=env
                )
            provider._procs.append(p)
            return p

        py = [sys.executable, "-E", "-s", "-S"]  # fast start; servutil.py is a sibling
        zones = [
            "--zone", f"{servers[0].hostname}={servers[0].uplink_v4}",
            "--zone", f"{servers[0].hostname}={servers[0].uplink_v6}",
            "--zone", f"whoami.test={WEB_V4}",
            "--zone", f"whoami.test={WEB_V6}",
        ]  # fmt: skip
        for s in servers[1:]:
            zones += [
                "--zone",
                f"{s.hostname}={s.uplink_v4}",
                "--zone",
                f"{s.hostname}={s.uplink_v6}",
            ]
        pythons: dict[str, subprocess.Popen[bytes]] = {}
        sockets: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        for s in servers:
            # a private /run/wireguard: the server is a remote machine, and `wg show` run by
            # wgns anywhere in the sandbox must not list it
            sandbox.path(s.uapi_dir).mkdir(mode=0o700, exist_ok=True)
            wg = start(
                f"wireguard-go-{s.ifname}",
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1" /run/wireguard && exec wireguard-go -f "$2"',
                 "sh", s.uapi_dir, s.ifname],
                s.netns,
                WG_ENV,
            )  # fmt: skip
            provider._wg_procs[s.index] = wg
            sockets[f"wireguard-go-{s.ifname}"] = (wg, f"{s.uapi_dir}/{s.ifname}.sock")
        pythons["dns-isp"] = start(
            "dns-isp",
            [*py, _DNS_SCRIPT, "--listen", ISP_V4, "--listen", ISP_V6, *zones,
             "--log", provider.isp_dns_log],
            ISP_NS,
        )  # fmt: skip
        for s in servers:
            pythons[f"dns-{s.netns}"] = start(
                f"dns-{s.netns}",
                [*py, _DNS_SCRIPT, "--listen", s.tunnel_v4, "--listen", s.tunnel_v6, *zones,
                 "--log", s.dns_log],
                s.netns,
            )  # fmt: skip
        pythons["web"] = start(
            "web", [*py, _ECHO_SCRIPT, "--http", "80", "--echo", "7", "--log", provider.web_log],
            WEB_NS,
        )  # fmt: skip

        out = sandbox.run(["sh", "-c", _network_script(servers)]).stdout
        keys = {}
        for line in out.splitlines():
            if line.startswith("pubkey "):
                _, idx, key = line.split()
                keys[int(idx)] = key
        provider.servers = [_make_server(s.index, keys[s.index]) for s in servers]

        _wait_ready(sandbox, {}, sockets, READY_TIMEOUT)
        for s in provider.servers:
            provider.wg(s.index, ["sh", "-c", _wg_script(s)], raw=True)
        sandbox.write_file("/etc/resolv.conf", f"nameserver {ISP_V4}\n")
        _wait_ready(sandbox, pythons, {}, READY_TIMEOUT)
        for p in pythons.values():
            assert p.stdout is not None
            p.stdout.close()
        _wait_settled(sandbox, [None, *namespaces], READY_TIMEOUT)
    except BaseException:
        provider.close()
        raise
    provider.build_time = time.monotonic() - t0
    return provider
