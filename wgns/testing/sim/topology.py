"""The simulated provider's topology: an ISP, WireGuard servers and "the internet" in a sandbox.

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

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from wgns.testing.isolation import SANDBOX_DIR
from wgns.testing.sandbox import SandboxError

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


def make_server(index: int, public_key: str = "") -> Server:
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


def network_script(servers: Sequence[Server]) -> str:
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


def wg_script(s: Server) -> str:
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
