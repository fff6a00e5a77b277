"""A small rtnetlink (NETLINK_ROUTE) client: the few `ip` commands `wgns up` runs, in-process.

Each `ip` invocation is a fork+exec of a program that then opens a netlink socket; here a socket
is opened once per namespace and each command is one request and its ACK. The requests are the
ones iproute2 6.1 sends for the same command lines (read with strace; links are addressed by
name, see Rtnl._link), so the kernel ends up in the same state: tests/test_rtnl.py makes the
changes both ways in twin namespaces and compares what `ip -d -j` reports.

Measured inside a test sandbox (Python 3.11, Linux 6.18, medians): a no-op `link set lo up` is
1.4 ms as an `ip -n NS -b -` process run from Python, 0.06 ms here, opening the socket in the
namespace included; one interface's addresses, MTU, up and default routes (six `ip -b` lines)
2.0 ms against 0.5 ms. Moving a link to another namespace is ~30 ms of kernel time (RCU grace
periods) either way. Importing this module costs ~1 ms over a bare interpreter's `os`.

Built on the C modules ``_socket`` and ``_struct``: ``socket`` imports enum and selectors and
``struct`` is a wrapper; the two cost ~7 ms of start-up, more than the module saves.
"""

from __future__ import annotations

import _socket
import errno
import os

from wgns.system.rtnlmsg import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    I32,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFF_UP,
    IFINFOMSG,
    IFLA_EXT_MASK,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSGHDR,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RT_TABLE_UNSPEC,
    RTA_DST,
    RTA_OIF,
    RTA_TABLE,
    RTEXT_FILTER_SKIP_STATS,
    RTM_DELLINK,
    RTM_F_CLONED,
    RTM_F_LOOKUP_TABLE,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMSG,
    RTN_UNICAST,
    RTPROT_BOOT,
    SOL_NETLINK,
    ack_detail,
    attr,
    check_u32,
    cstr,
    encode_ifname,
    parse_address,
    parse_attrs,
    read_u32,
    route_mtu,
    route_oif,
    rtnl_error,
    u32_attr,
)

# The kernel sends a dump in datagrams of at most 32 KiB unless one message needs more; a
# bigger datagram is measured with MSG_PEEK|MSG_TRUNC first, as iproute2 does, so none is cut.
_BUFSIZE = 64 * 1024
_PEEK = bytearray(1)  # not 0 bytes: Python's recv_into() returns 0 for those without a recv()
_DUMP_ATTEMPTS = 5


def _open_socket() -> _socket.socket:
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _socket.NETLINK_ROUTE)
    try:
        for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError as e:  # kernels before 4.3 / 4.12: plain errors, whole echoes
                if e.errno != errno.ENOPROTOOPT:
                    raise
    except BaseException:
        sock.close()
        raise
    return sock


def _open_netns(ns: str) -> int:
    """A descriptor of namespace NS, for IFLA_NET_NS_FD."""
    from wgns.system import netns

    return os.open(netns.path_of(ns), os.O_RDONLY | os.O_CLOEXEC)


class Rtnl:
    """One NETLINK_ROUTE socket, bound to the network namespace it was opened in.

    ``ns`` is a name under /run/netns, entered only while the socket is created (a netlink
    socket belongs to the namespace it was created in, whatever the thread does later); None
    is the calling thread's namespace. Use as a context manager, or call :meth:`close`.

    Kernel errors raise OSError with the kernel's errno and a message that names the
    operation, e.g. ``RTNETLINK: add address 198.19.0.2/32 dev wg0: File exists``; malformed
    addresses, prefixes or names raise ValueError before anything is sent."""

    def __init__(self, ns: str | None = None) -> None:
        if ns is None:
            self._sock = _open_socket()
        else:
            from wgns.system import (
                netns,  # imported here: not needed for the caller's own namespace
            )

            with netns.entered(ns):
                self._sock = _open_socket()
        self._seq = 0
        self._dumping: int | None = None  # the sequence number of a dump not read to its end
        self._buf = bytearray(_BUFSIZE)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ changes

    def move_link(self, ifname: str, ns: str) -> None:
        """`ip link set IFNAME netns NS`."""
        fd = _open_netns(ns)
        try:
            self._link(
                RTM_NEWLINK, ifname, u32_attr(IFLA_NET_NS_FD, fd), f"set dev {ifname} netns {ns}"
            )
        finally:
            os.close(fd)

    def add_address(self, ifname: str, address: str) -> None:
        """`ip address add ADDRESS dev IFNAME` (ADDRESS as "198.19.0.2/32", "2001:db8::2/128")."""
        family, raw, plen = parse_address(address, "address")
        what = f"add address {address} dev {ifname}"
        index = self._index(ifname, what)
        # iproute2's default_scope(): host for 127/8, universe for everything else
        scope = RT_SCOPE_HOST if family == AF_INET and raw[0] == 127 else RT_SCOPE_UNIVERSE
        # with no `peer`, iproute2 sends the address as IFA_ADDRESS too (the kernel would copy
        # it anyway); sent the same way so that nothing depends on that copy
        body = (
            IFADDRMSG.pack(family, plen, 0, scope, index)
            + attr(IFA_LOCAL, raw)
            + attr(IFA_ADDRESS, raw)
        )
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what)

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        """`ip link set dev IFNAME [mtu MTU] [up|down]` (None: leave as it is)."""
        what = f"set dev {ifname}"
        attrs = b""
        if mtu is not None:
            attrs = u32_attr(IFLA_MTU, check_u32("mtu", mtu))
            what += f" mtu {mtu}"
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
            what += " up" if up else " down"
        self._link(RTM_NEWLINK, ifname, attrs, what, flags=flags, change=change)

    def replace_route(self, prefix: str, ifname: str, *, table: int | None = None) -> None:
        """`ip route replace PREFIX dev IFNAME [table TABLE]` (None: the main table)."""
        family, raw, plen = parse_address(prefix, "prefix")
        what = f"replace route {prefix} dev {ifname}"
        if table is not None:
            what += f" table {table}"
        tid = RT_TABLE_MAIN if table is None else check_u32("table", table)
        index = self._index(ifname, what)
        # iproute_modify() without a gateway: link scope for IPv4, universe for IPv6 (whose
        # routes have no scope); the table id in the header while it fits a byte
        scope = RT_SCOPE_UNIVERSE if family == AF_INET6 else RT_SCOPE_LINK
        body = RTMSG.pack(
            family,
            plen,
            0,
            0,
            tid if tid < 256 else RT_TABLE_UNSPEC,
            RTPROT_BOOT,
            scope,
            RTN_UNICAST,
            0,
        )
        body += attr(RTA_DST, raw)  # also for /0, as iproute2 does for a written-out prefix
        if tid >= 256:
            body += u32_attr(RTA_TABLE, tid)
        body += u32_attr(RTA_OIF, index)
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, what)

    def add_link(self, ifname: str, kind: str, *, ns: str | None = None) -> None:
        """`ip link add IFNAME [netns NS] type KIND`. With NS the link is born there, but asked
        for from this socket's namespace, which the kernel keeps as the link's creating
        namespace: a WireGuard device keeps its UDP socket in it (the birthplace)."""
        if not kind or not kind.isascii() or not kind.isprintable():
            raise ValueError(f"bad link type {kind!r}")
        body = IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, encode_ifname(ifname))
        # iproute2 sends the kind without its NUL, in a nest without NLA_F_NESTED
        body += attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind.encode()))
        what = f"add dev {ifname}{' netns ' + ns if ns else ''} type {kind}"
        fd = -1 if ns is None else _open_netns(ns)
        try:
            if fd >= 0:
                body += u32_attr(IFLA_NET_NS_FD, fd)
            self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what)
        finally:
            if fd >= 0:
                os.close(fd)

    def del_link(self, ifname: str) -> bool:
        """`ip link del IFNAME`. False when there is no such link."""
        try:
            self._link(RTM_DELLINK, ifname, b"", f"delete dev {ifname}")
        except OSError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    # ------------------------------------------------------------------ lookups

    def index(self, ifname: str) -> int:
        """The ifindex of IFNAME; OSError(ENODEV) when there is no such link."""
        return self._index(ifname, f"find dev {ifname}")

    def link_mtus(self) -> dict[str, int]:
        """Every link's MTU, by name (`ip link show`)."""
        body = IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
        body += u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        mtus: dict[str, int] = {}
        for msg in self._dump(RTM_GETLINK, body, "list links"):
            attrs = parse_attrs(msg, 16 + IFINFOMSG.size)
            name = attrs.get(IFLA_IFNAME)
            mtu = read_u32(attrs.get(IFLA_MTU))
            if name is not None and mtu is not None:
                mtus[cstr(name)] = mtu
        return mtus

    def route_get(self, address: str) -> tuple[str | None, int | None]:
        """`ip route get ADDRESS`: the outgoing link's name and the route's MTU metric (None
        where the route has none). An unroutable address raises OSError (ENETUNREACH, ...)."""
        family, raw, plen = parse_address(address, "address")
        # RTM_F_LOOKUP_TABLE as iproute2 sends it: the reply names the table that matched
        body = RTMSG.pack(family, plen, 0, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE)
        body += attr(RTA_DST, raw)
        for msg in self._request(RTM_GETROUTE, 0, body, f"route get {address}"):
            attrs = parse_attrs(msg, 16 + RTMSG.size)
            return self._name(route_oif(attrs)), route_mtu(attrs)
        return None, None

    def default_routes(self) -> list[tuple[str | None, int | None]]:
        """`ip route show default`: the IPv4 default routes of the main table, in the kernel's
        order, as (link name, MTU metric) pairs."""
        body = RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        found: list[tuple[int | None, int | None]] = []
        for msg in self._dump(RTM_GETROUTE, body, "list routes"):
            _family, dst_len, _src, _tos, table, _p, _s, _t, flags = RTMSG.unpack_from(msg, 16)
            attrs = parse_attrs(msg, 16 + RTMSG.size)
            table = read_u32(attrs.get(RTA_TABLE)) or table
            if dst_len == 0 and table == RT_TABLE_MAIN and not flags & RTM_F_CLONED:
                found.append((route_oif(attrs), route_mtu(attrs)))
        return [(self._name(oif), mtu) for oif, mtu in found]

    # ------------------------------------------------------------------ plumbing

    def _link(
        self, kind: int, ifname: str, attrs: bytes, what: str, *, flags: int = 0, change: int = 0
    ) -> None:
        # Addressed by IFLA_IFNAME, not by an index looked up first (iproute2's two steps): the
        # kernel resolves the name itself, in one round trip and with no window between them
        header = IFINFOMSG.pack(AF_UNSPEC, 0, 0, flags, change)
        self._request(kind, 0, header + attr(IFLA_IFNAME, encode_ifname(ifname)) + attrs, what)

    def _index(self, ifname: str, what: str) -> int:
        body = IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, encode_ifname(ifname))
        body += u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        for msg in self._request(RTM_GETLINK, 0, body, what):
            return int(IFINFOMSG.unpack_from(msg, 16)[2])
        raise rtnl_error(errno.ENODEV, what)

    def _name(self, index: int | None) -> str | None:
        if not index:
            return None
        body = IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0)
        body += u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        try:
            replies = self._request(RTM_GETLINK, 0, body, f"find link {index}")
        except OSError as e:
            if e.errno == errno.ENODEV:  # gone since the route named it
                return None
            raise
        for msg in replies:
            name = parse_attrs(msg, 16 + IFINFOMSG.size).get(IFLA_IFNAME)
            if name is not None:
                return cstr(name)
        return None

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._sock.send(NLMSGHDR.pack(16 + len(body), kind, flags, self._seq, 0) + body)
        return self._seq

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Send one request with NLM_F_ACK; the replies that came before the ACK."""
        seq = self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        return self._replies(seq, what)[0]

    def _dump(self, kind: int, body: bytes, what: str) -> list[bytes]:
        """A dump request's messages, up to NLMSG_DONE, redone when the kernel says it was
        interrupted (a change during the dump: the parts may not fit together)."""
        if self._dumping is not None:
            self._finish_abandoned_dump()
        for _ in range(_DUMP_ATTEMPTS):
            seq = self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, body)
            self._dumping = seq
            messages, interrupted = self._replies(seq, what)
            if not interrupted:
                return messages
        raise rtnl_error(errno.EINTR, what, "the dump kept changing")

    def _finish_abandoned_dump(self) -> None:
        """Read to its end a dump abandoned half-way (an exception while it was read): the
        kernel refuses another dump on the socket (EBUSY) until then.

        Without waiting: the kernel queues a dump's next part inside the recv() that takes
        the last one, so an empty queue means there is no more of it (which also covers a
        final part that was received but lost to the exception)."""
        while self._dumping is not None:
            try:
                messages = self._receive(_socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._dumping = None
                break
            for msg_type, _flags, msg_seq, _msg in messages:
                if msg_type in (NLMSG_ERROR, NLMSG_DONE) and msg_seq == self._dumping:
                    self._dumping = None

    def _replies(self, seq: int, what: str) -> tuple[list[bytes], bool]:
        """The messages answering request SEQ up to its final NLMSG_ERROR (an ACK) or
        NLMSG_DONE, and whether one was flagged NLM_F_DUMP_INTR; a kernel error is raised.
        The rest of an abandoned dump, read meanwhile, is told apart by its sequence number."""
        messages: list[bytes] = []
        interrupted = False
        while True:
            for msg_type, flags, msg_seq, msg in self._receive():
                final = msg_type in (NLMSG_ERROR, NLMSG_DONE)
                if final and msg_seq == self._dumping:
                    self._dumping = None
                if msg_seq != seq or msg_type == NLMSG_NOOP:
                    continue
                interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                if final:
                    err = I32.unpack_from(msg, 16)[0] if len(msg) >= 20 else 0
                    if err < 0:
                        raise rtnl_error(-err, what, ack_detail(msg, flags))
                    return messages, interrupted
                messages.append(msg)

    def _receive(self, flags: int = 0) -> list[tuple[int, int, int, bytes]]:
        """The messages of the next datagram from the kernel (another sender's are dropped)."""
        while True:
            peek = flags | _socket.MSG_PEEK | _socket.MSG_TRUNC
            size = self._sock.recv_into(_PEEK, 1, peek)
            if size > len(self._buf):
                self._buf = bytearray(size)
            n, (sender, _groups) = self._sock.recvfrom_into(self._buf, 0, flags)
            if sender == 0:
                break
        buf = self._buf
        messages = []
        offset = 0
        while offset + 16 <= n:
            length, msg_type, msg_flags, msg_seq, _pid = NLMSGHDR.unpack_from(buf, offset)
            if length < 16 or offset + length > n:
                raise OSError(errno.EBADMSG, f"RTNETLINK: malformed reply ({length} of {n} bytes)")
            messages.append((msg_type, msg_flags, msg_seq, bytes(buf[offset : offset + length])))
            offset += (length + 3) & ~3
        return messages
