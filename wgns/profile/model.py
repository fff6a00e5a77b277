"""The parsed profile: frozen data, no I/O.

`wgns.profile.load` turns a wg-quick ``.conf`` or a TOML profile into a :class:`Profile`; the
planner turns a Profile into operations. Everything here is immutable (frozen dataclasses: change
one with ``dataclasses.replace``) so a plan can be computed, shown and compared without touching
the system.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network


class Secret:
    """A base64 WireGuard key that never shows itself in repr, str, logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Backend(enum.Enum):
    AUTO = "auto"
    KERNEL = "kernel"
    USERSPACE = "userspace"


class HookWhen(enum.Enum):
    PRE_UP = "pre-up"
    POST_UP = "post-up"
    PRE_DOWN = "pre-down"
    POST_DOWN = "post-down"


class HookWhere(enum.Enum):
    """The network namespace a hook runs in."""

    INSIDE = "inside"  # the confined namespace
    BIRTHPLACE = "birthplace"  # where the WireGuard UDP sockets live (wg-quick's behaviour)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A peer's Endpoint: host and UDP port."""

    host: str  # hostname, IPv4 or IPv6 literal (without brackets)
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Peer:
    """One [Peer] of an interface."""

    public_key: str
    preshared_key: Secret | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    line: int | None = None  # line of the [Peer] header, for messages


@dataclass(frozen=True, slots=True)
class Hook:
    """A PreUp/PostUp/PreDown/PostDown command."""

    when: HookWhen
    command: str
    where: HookWhere = HookWhere.BIRTHPLACE
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Interface:
    """One WireGuard interface: what a wg-quick ``.conf`` describes."""

    name: str  # the profile's label (conf file stem or TOML name); never a kernel ifname
    private_key: Secret
    addresses: tuple[IPInterface, ...] = ()
    listen_port: int | None = None
    fwmark: int | None = None
    mtu: int | None = None
    table: str | None = None  # None = auto, "off", or a table number as text
    dns: tuple[IPAddress, ...] = ()
    dns_search: tuple[str, ...] = ()
    hooks: tuple[Hook, ...] = ()
    save_config: bool = False
    peers: tuple[Peer, ...] = ()
    source: str | None = None  # the file it was read from
    # the line of each of `dns` in `source`, for messages (not part of what the interface is)
    dns_lines: tuple[int | None, ...] = field(default=(), compare=False)


class Proto(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


class ForwardMode(enum.Enum):
    NAT = "nat"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class Forward:
    """A port forward from the host into the namespace (issue 5)."""

    host_port: int
    ns_port: int
    proto: Proto = Proto.TCP
    sources: tuple[IPNetwork, ...] = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
    mode: ForwardMode = ForwardMode.NAT
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything `wgns up` needs, validated."""

    name: str  # the namespace name
    source: str  # the profile's file
    interfaces: tuple[Interface, ...]
    dns: tuple[IPAddress, ...] = ()  # union of the interfaces' DNS and the profile's own
    dns_search: tuple[str, ...] = ()
    birthplace: str | None = None  # a netns name; None = the namespace wgns runs in
    kill_switch: bool = True
    backend: Backend = Backend.AUTO
    hooks: tuple[Hook, ...] = ()  # profile-level hooks; interface hooks live on the interface
    forwards: tuple[Forward, ...] = ()
    allow_host: tuple[int, ...] = ()  # host ports the namespace may reach over a forward veth
    dns_line: int | None = field(default=None, compare=False)  # of the profile's own dns key
    # systemd services the generator confines to this namespace (wgns.integrations.systemd)
    units: tuple[str, ...] = ()

    @property
    def has_ipv6(self) -> bool:
        return any(a.version == 6 for i in self.interfaces for a in i.addresses)

    @property
    def has_ipv4(self) -> bool:
        return any(a.version == 4 for i in self.interfaces for a in i.addresses)
