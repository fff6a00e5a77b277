"""rtnetlink messages for wgns.system.rtnl: the constants of the kernel's headers, the layouts
of the headers, and the encoding and decoding of their attributes. Pure: no socket.

Built on the C modules ``_socket`` and ``_struct`` (see wgns.system.rtnl: start-up time).
"""

from __future__ import annotations

import _socket
import _struct
import os

# linux/netlink.h
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: only the header of the request is echoed
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ACK attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270  # not in Python's _socket
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
RTA_METRICS = 8
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTAX_MTU = 2
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RTN_UNICAST = 1
RTM_F_CLONED = 0x200
RTM_F_LOOKUP_TABLE = 0x1000
RTEXT_FILTER_SKIP_STATS = 1 << 3

# linux/if_link.h, linux/if.h, linux/if_addr.h
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1  # inside IFLA_LINKINFO
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFF_UP = 0x1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFNAMSIZ = 16

AF_UNSPEC = 0
AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6

NLMSGHDR = _struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = _struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = _struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = _struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags
RTNEXTHOP = _struct.Struct("=HBBi")  # len, flags, hops, ifindex
RTATTR = _struct.Struct("=HH")  # len, type
U32 = _struct.Struct("=I")
I32 = _struct.Struct("=i")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return RTATTR.pack(n, kind) + data + bytes(-n % 4)


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, U32.pack(value))


def parse_attrs(msg: bytes, start: int) -> dict[int, bytes]:
    """The attributes of MSG from offset START (the last one wins for a repeated type)."""
    found: dict[int, bytes] = {}
    end = len(msg)
    while start + 4 <= end:
        n, kind = RTATTR.unpack_from(msg, start)
        if n < 4 or start + n > end:
            break
        found[kind & _NLA_TYPE_MASK] = msg[start + 4 : start + n]
        start += (n + 3) & ~3
    return found


def cstr(data: bytes) -> str:
    return os.fsdecode(data.split(b"\0", 1)[0])


def read_u32(data: bytes | None) -> int | None:
    return None if data is None or len(data) < 4 else int(U32.unpack_from(data)[0])


def encode_ifname(name: str) -> bytes:
    raw = os.fsencode(name)
    if not 0 < len(raw) < IFNAMSIZ or b"\0" in raw:
        raise ValueError(f"invalid interface name {name!r}")
    return raw + b"\0"


def parse_address(text: str, what: str) -> tuple[int, bytes, int]:
    """ADDR[/PLEN] as (family, address bytes, prefix length); a missing PLEN is a host's."""
    addr, slash, plen = text.partition("/")
    family = AF_INET6 if ":" in addr else AF_INET
    try:
        raw = _socket.inet_pton(family, addr)
    except (OSError, ValueError):  # ValueError: an embedded NUL, or not ASCII
        raise ValueError(f"invalid {what} {text!r}") from None
    bits = 8 * len(raw)
    if not slash:
        return family, raw, bits
    if not (plen.isascii() and plen.isdigit() and int(plen) <= bits):
        raise ValueError(f"invalid {what} {text!r}")
    return family, raw, int(plen)


def check_u32(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} {value} out of range")
    return value


def rtnl_error(err: int, what: str, detail: str = "") -> OSError:
    # OSError picks the subclass from the number: EEXIST gives a FileExistsError, and so on
    message = f"RTNETLINK: {what}: {os.strerror(err)}"
    if detail:
        message += f" ({detail})"
    return OSError(err, message)


def ack_detail(msg: bytes, flags: int) -> str:
    """The kernel's extended-ACK message in an NLMSG_ERROR (e.g. "Invalid prefix ...")."""
    if not flags & NLM_F_ACK_TLVS or len(msg) < 36:
        return ""
    echoed = 16 if flags & NLM_F_CAPPED else U32.unpack_from(msg, 20)[0]
    start = 20 + ((echoed + 3) & ~3)
    text = parse_attrs(msg, start).get(NLMSGERR_ATTR_MSG)
    return cstr(text) if text else ""


def route_oif(attrs: dict[int, bytes]) -> int | None:
    """The route's output interface; for a multipath route its first hop's, which is the
    `dev` that wg-quick's pattern finds first in `ip route` output."""
    oif = read_u32(attrs.get(RTA_OIF))
    hops = attrs.get(RTA_MULTIPATH)
    if oif is None and hops is not None and len(hops) >= RTNEXTHOP.size:
        oif = int(RTNEXTHOP.unpack_from(hops)[3])
    return oif


def route_mtu(attrs: dict[int, bytes]) -> int | None:
    metrics = attrs.get(RTA_METRICS)
    return None if metrics is None else read_u32(parse_attrs(metrics, 0).get(RTAX_MTU))
