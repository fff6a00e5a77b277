"""The built-in relay: TCP and UDP from the main namespace to a service on NS's loopback.

The relaying itself; the process around it (arguments, listeners, supervision) is
:mod:`wgns.features.forward.relayd`. A relay listens in the namespace it was started in and
opens each upstream socket inside NS: a socket belongs to the network namespace its creator
was in when it was created, so the event loop thread switches to NS (``setns``) for the
``socket()`` call only and back at once.

* TCP: one non-blocking socket pair per connection on a single asyncio loop, no process or
  thread per connection. Data moves through one shared buffer; a slow reader only costs the
  bytes it has not taken yet (reading from its peer pauses meanwhile). Half-close is relayed:
  EOF on one side becomes ``shutdown(SHUT_WR)`` on the other, and the connection is closed once
  both directions are done; a reset on one side is relayed as a reset (``SO_LINGER`` 0).
* UDP: one upstream socket per client address (a session), closed after ``--idle`` seconds
  without traffic; at most ``--max-sessions``, the least recently used goes first.
* ``--from``: connections and datagrams from other sources are refused (TCP reset) or dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import os
import resource
import socket
import struct
import time
from collections.abc import Callable, Sequence

from wgns.system import netns

BUFSIZE = 256 * 1024
UDP_MAX = 65535
_LINGER_RESET = struct.pack("ii", 1, 0)

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class NsSockets:
    """Creates sockets inside a network namespace from a thread that lives elsewhere."""

    def __init__(self, ns: str | None) -> None:
        self.ns_fd = -1
        self.home_fd = -1
        if ns is not None:
            self.ns_fd = os.open(netns.path_of(ns), os.O_RDONLY | os.O_CLOEXEC)
            self.home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def socket(self, family: int, kind: int) -> socket.socket:
        if self.ns_fd < 0:
            s = socket.socket(family, kind)
        else:
            netns.setns(self.ns_fd, netns.CLONE_NEWNET)
            try:
                s = socket.socket(family, kind)
            finally:
                netns.setns(self.home_fd, netns.CLONE_NEWNET)
        s.setblocking(False)
        return s


def allowed_from(nets: Sequence[IPNet]) -> Callable[[str], bool]:
    if not nets:
        return lambda _addr: True

    def check(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in nets)

    return check


def _reset_close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    s.close()


# --------------------------------------------------------------------------------------------
# TCP


class _Direction:
    __slots__ = ("dst", "eof", "pending", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.pending: memoryview | None = None
        self.eof = False  # src sent EOF and it has been (or will be) passed on


class TcpConn:
    """One relayed connection: client <-> upstream."""

    __slots__ = ("a", "b", "closed", "done", "down", "loop", "relay", "up")

    def __init__(self, relay: TcpRelay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.a = client
        self.b = upstream
        self.up = _Direction(client, upstream)
        self.down = _Direction(upstream, client)
        self.done = 0
        self.closed = False
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.add_reader(client.fileno(), self._readable, self.up)
        self.loop.add_reader(upstream.fileno(), self._readable, self.down)

    def _readable(self, d: _Direction) -> None:
        buf = self.relay.buf
        try:
            n = d.src.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if n == 0:
            self.loop.remove_reader(d.src.fileno())
            d.eof = True
            self._finish(d)
            return
        try:
            sent = d.dst.send(buf[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < n:
            d.pending = memoryview(bytes(buf[sent:n]))
            self.loop.remove_reader(d.src.fileno())
            self.loop.add_writer(d.dst.fileno(), self._writable, d)

    def _writable(self, d: _Direction) -> None:
        assert d.pending is not None
        try:
            sent = d.dst.send(d.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        d.pending = d.pending[sent:]
        if len(d.pending):
            return
        d.pending = None
        self.loop.remove_writer(d.dst.fileno())
        if d.eof:
            self._finish(d)
        else:
            self.loop.add_reader(d.src.fileno(), self._readable, d)

    def _finish(self, d: _Direction) -> None:
        """D's source said EOF: once its bytes are out, pass the EOF on (half-close)."""
        if d.pending is not None:
            return
        try:
            d.dst.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return
        self.done += 1
        if self.done == 2:
            self.close()

    def _forget(self) -> None:
        for s in (self.a, self.b):
            fd = s.fileno()
            if fd >= 0:
                self.loop.remove_reader(fd)
                self.loop.remove_writer(fd)
        self.relay.conns.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._forget()
        self.a.close()
        self.b.close()

    def abort(self) -> None:
        """An error or reset on one side: reset the other one too."""
        if self.closed:
            return
        self.closed = True
        self._forget()
        _reset_close(self.a)
        _reset_close(self.b)


class TcpRelay:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[socket.socket],
        sockets: NsSockets,
        targets: list[tuple[int, tuple[str, int]]],
        allowed: Callable[[str], bool],
    ) -> None:
        self.loop = loop
        self.listeners = listeners
        self.sockets = sockets
        self.targets = targets  # (family, address) tried in order
        self.allowed = allowed
        self.buf = memoryview(bytearray(BUFSIZE))
        self.conns: set[TcpConn] = set()
        self.connecting: set[socket.socket] = set()
        for ls in listeners:
            loop.add_reader(ls.fileno(), self._accept, ls)

    def _accept(self, ls: socket.socket) -> None:
        for _ in range(256):
            try:
                client, addr = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and friends: the listener stays, try again later
            client.setblocking(False)
            if not self.allowed(addr[0]):
                _reset_close(client)
                continue
            self._connect(client, 0)

    def _connect(self, client: socket.socket, i: int) -> None:
        if i >= len(self.targets):
            _reset_close(client)
            return
        family, target = self.targets[i]
        try:
            up = self.sockets.socket(family, socket.SOCK_STREAM)
        except OSError:
            _reset_close(client)
            return
        err = up.connect_ex(target)
        if err == 0:
            self.conns.add(TcpConn(self, client, up))
        elif err in (115, 11):  # EINPROGRESS, EAGAIN
            self.connecting.add(up)
            self.loop.add_writer(up.fileno(), self._connected, client, up, i)
        else:
            up.close()
            self._connect(client, i + 1)

    def _connected(self, client: socket.socket, up: socket.socket, i: int) -> None:
        self.loop.remove_writer(up.fileno())
        self.connecting.discard(up)
        err = up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            up.close()
            self._connect(client, i + 1)
            return
        self.conns.add(TcpConn(self, client, up))

    def close(self) -> None:
        for ls in self.listeners:
            self.loop.remove_reader(ls.fileno())
            ls.close()
        for c in list(self.conns):
            c.close()
        for s in list(self.connecting):
            s.close()


# --------------------------------------------------------------------------------------------
# UDP


class UdpRelay:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[socket.socket],
        sockets: NsSockets,
        target: tuple[int, tuple[str, int]],
        allowed: Callable[[str], bool],
        idle: float,
        max_sessions: int,
    ) -> None:
        self.loop = loop
        self.listeners = listeners
        self.sockets = sockets
        self.target = target
        self.allowed = allowed
        self.idle = idle
        self.max_sessions = max_sessions
        # (listener fd, client address) -> [upstream socket, last activity]
        self.sessions: collections.OrderedDict[tuple[int, tuple[object, ...]], list[object]] = (
            collections.OrderedDict()
        )
        self.buf = bytearray(UDP_MAX)
        for ls in listeners:
            loop.add_reader(ls.fileno(), self._from_client, ls)
        self._sweeper = loop.call_later(max(idle / 4, 0.05), self._sweep)

    def _from_client(self, ls: socket.socket) -> None:
        for _ in range(256):
            try:
                n, addr = ls.recvfrom_into(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ICMP errors of earlier sends
            if not self.allowed(addr[0]):
                continue
            key = (ls.fileno(), tuple(addr))
            sess = self.sessions.get(key)
            if sess is None:
                sess = self._open(ls, addr, key)
                if sess is None:
                    continue
            else:
                self.sessions.move_to_end(key)
            sess[1] = time.monotonic()
            up = sess[0]
            assert isinstance(up, socket.socket)
            with contextlib.suppress(OSError):
                up.send(memoryview(self.buf)[:n])

    def _open(
        self, ls: socket.socket, addr: tuple[object, ...], key: tuple[int, tuple[object, ...]]
    ) -> list[object] | None:
        while len(self.sessions) >= self.max_sessions:
            _, old = self.sessions.popitem(last=False)
            self._drop(old)
        family, target = self.target
        try:
            up = self.sockets.socket(family, socket.SOCK_DGRAM)
            up.connect(target)
        except OSError:
            return None
        sess: list[object] = [up, time.monotonic()]
        self.sessions[key] = sess
        self.loop.add_reader(up.fileno(), self._from_upstream, ls, addr, sess)
        return sess

    def _from_upstream(
        self, ls: socket.socket, addr: tuple[object, ...], sess: list[object]
    ) -> None:
        up = sess[0]
        assert isinstance(up, socket.socket)
        for _ in range(256):
            try:
                n = up.recv_into(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP port unreachable from the service: the session stays
            sess[1] = time.monotonic()
            with contextlib.suppress(OSError):
                ls.sendto(memoryview(self.buf)[:n], addr)

    def _drop(self, sess: list[object]) -> None:
        up = sess[0]
        assert isinstance(up, socket.socket)
        if up.fileno() >= 0:
            self.loop.remove_reader(up.fileno())
            up.close()

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self.idle
        for key, sess in list(self.sessions.items()):
            last = sess[1]
            assert isinstance(last, float)
            if last < cutoff:
                del self.sessions[key]
                self._drop(sess)
        self._sweeper = self.loop.call_later(max(self.idle / 4, 0.05), self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for ls in self.listeners:
            self.loop.remove_reader(ls.fileno())
            ls.close()
        for sess in self.sessions.values():
            self._drop(sess)
        self.sessions.clear()


# --------------------------------------------------------------------------------------------


def listen(proto: str, addr: str, port: int, backlog: int = 4096) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(backlog)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s
