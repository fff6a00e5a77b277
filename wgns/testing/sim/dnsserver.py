"""A small authoritative DNS server for the simulated provider (stdlib only, UDP and TCP).

    python -m wgns.testing.sim.dnsserver --listen 198.18.0.1 --listen 2001:db8::1 \\
        --zone vpn.provider.test=198.18.1.2 --zone vpn.provider.test=2001:db8:1::2 --log FILE

Answers A and AAAA (and ANY) from ``--zone NAME=ADDR`` records, NOERROR with no answer for
names that exist without that type (or are ancestors of a zone name), NXDOMAIN otherwise.
Answers carry the query's ID, question (as sent, case included) and RD bit, with AA and RA set,
and an EDNS OPT record when the query had one: what ``dig`` and the glibc stub resolver accept.

Every query is appended to the ``--log`` file as one JSON object per line
(``{"qname": "whoami.test", "qtype": "A", "client": "...", "proto": "udp"}``) *before* the answer
is sent. Sockets are bound with IP_FREEBIND, so the server can start before its addresses exist.
Prints ``ready`` on stdout once every socket is bound.

This file must stay stdlib-only and importable on its own: the provider runs it as a script
(``python -I -S dnsserver.py``) for a fast start.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence

if __package__:
    from wgns.testing.sim.servutil import bind_socket, json_line, parse_args
else:  # run as a script (`python -E -s -S .../dnsserver.py`): its directory is on sys.path
    from servutil import bind_socket, json_line, parse_args  # type: ignore[import-not-found,no-redef]

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_SVCB = 64
TYPE_HTTPS = 65
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

QTYPE_NAMES = {
    TYPE_A: "A",
    TYPE_NS: "NS",
    TYPE_CNAME: "CNAME",
    TYPE_SOA: "SOA",
    TYPE_PTR: "PTR",
    TYPE_MX: "MX",
    TYPE_TXT: "TXT",
    TYPE_AAAA: "AAAA",
    TYPE_SRV: "SRV",
    TYPE_SVCB: "SVCB",
    TYPE_HTTPS: "HTTPS",
    TYPE_ANY: "ANY",
}

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

TTL = 30
EDNS_UDP_SIZE = 1232


def qtype_name(qtype: int) -> str:
    return QTYPE_NAMES.get(qtype, f"TYPE{qtype}")


class FormatError(Exception):
    pass


class Zone:
    """name (lower case, no trailing dot) -> [(rrtype, rdata)]"""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[int, bytes]]] = {}

    def add(self, name: str, address: str) -> None:
        ip = ipaddress.ip_address(address)
        rrtype = TYPE_A if ip.version == 4 else TYPE_AAAA
        self.records.setdefault(normalise(name), []).append((rrtype, ip.packed))

    def exists(self, name: str) -> bool:
        if name in self.records:
            return True
        suffix = "." + name
        return any(n.endswith(suffix) for n in self.records)  # an empty non-terminal


def normalise(name: str) -> str:
    return name.rstrip(".").lower()


class Query:
    def __init__(
        self, id: int, flags: int, qname: str, qtype: int, qclass: int, question: bytes
    ) -> None:
        self.id = id
        self.flags = flags
        self.qname = qname  # as decoded, original case
        self.qtype = qtype
        self.qclass = qclass
        self.question = question  # raw question section (echoed in the answer)
        self.edns = False
        self.udp_size = 512


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if off >= len(msg):
            raise FormatError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise FormatError("truncated pointer")
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > 20:
                raise FormatError("pointer loop")
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n & 0xC0:
            raise FormatError("bad label type")
        off += 1
        if n == 0:
            break
        if off + n > len(msg):
            raise FormatError("label runs past the message")
        labels.append(msg[off : off + n].decode("ascii", errors="replace"))
        off += n
    return ".".join(labels), (end if end >= 0 else off)


def parse_query(msg: bytes) -> Query:
    if len(msg) < 12:
        raise FormatError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if qd != 1:
        raise FormatError("expected exactly one question")
    qname, off = _read_name(msg, 12)
    if off + 4 > len(msg):
        raise FormatError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[off : off + 4])
    question = msg[12 : off + 4]
    q = Query(qid, flags, qname, qtype, qclass, question)
    off += 4
    # skip answer/authority, look for OPT in additional
    try:
        for i in range(an + ns + ar):
            name, off = _read_name(msg, off)
            rrtype, rrclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
            off += 10 + rdlen
            if i >= an + ns and rrtype == TYPE_OPT and name == "":
                q.edns = True
                q.udp_size = max(512, rrclass)
    except (struct.error, FormatError):
        pass  # a broken additional section does not spoil the question
    return q


def _header(qid: int, query_flags: int, rcode: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    opcode = (query_flags >> 11) & 0xF
    rd = query_flags & 0x0100
    cd = query_flags & 0x0010
    flags = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | cd | (rcode & 0xF)
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def _opt_record() -> bytes:
    return b"\x00" + struct.pack("!HHIH", TYPE_OPT, EDNS_UDP_SIZE, 0, 0)


def answer(msg: bytes, zone: Zone, *, tcp: bool = False) -> tuple[bytes | None, Query | None]:
    """The response to MSG (None: not worth an answer) and the parsed query if any."""
    if len(msg) < 12:
        return None, None
    qid, flags = struct.unpack("!HH", msg[:4])
    if flags & 0x8000:
        return None, None  # a response; never answer those
    try:
        q = parse_query(msg)
    except FormatError:
        return _header(qid, flags, RCODE_FORMERR, 0, 0, 0, 0), None
    opt = _opt_record() if q.edns else b""
    ar = 1 if q.edns else 0
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        return _header(qid, flags, RCODE_NOTIMP, 1, 0, 0, ar) + q.question + opt, q
    if q.qclass not in (CLASS_IN, CLASS_ANY):
        return _header(qid, flags, RCODE_REFUSED, 1, 0, 0, ar) + q.question + opt, q
    name = normalise(q.qname)
    if not zone.exists(name):
        return _header(qid, flags, RCODE_NXDOMAIN, 1, 0, 0, ar) + q.question + opt, q
    rrs = [(t, rdata) for t, rdata in zone.records.get(name, []) if q.qtype in (t, TYPE_ANY)]
    body = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", t, CLASS_IN, TTL, len(rdata)) + rdata for t, rdata in rrs
    )
    resp = _header(qid, flags, RCODE_NOERROR, 1, len(rrs), 0, ar) + q.question + body + opt
    limit = 65535 if tcp else (q.udp_size if q.edns else 512)
    if len(resp) > limit:  # truncate: the client retries over TCP
        hdr = bytearray(_header(qid, flags, RCODE_NOERROR, 1, 0, 0, ar))
        hdr[2] |= 0x02  # TC
        resp = bytes(hdr) + q.question + opt
    return resp, q


def parse_listen(spec: str, default_port: int = 53) -> tuple[int, str, int]:
    """'198.18.0.1', '198.18.0.1:53', '2001:db8::1', '[2001:db8::1]:53' -> (family, addr, port)"""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    else:
        host, port = spec, default_port
    ip = ipaddress.ip_address(host)
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), str(ip), port


class Server:
    def __init__(self, zone: Zone, log: io.TextIOWrapper | None) -> None:
        self.zone = zone
        self.log = log
        self.log_lock = threading.Lock()

    def record(self, q: Query, client: str, proto: str) -> None:
        if self.log is None:
            return
        line = json_line(
            qname=normalise(q.qname), qtype=qtype_name(q.qtype), client=client, proto=proto
        )
        with self.log_lock:
            self.log.write(line + "\n")
            self.log.flush()

    def handle(self, msg: bytes, client: str, proto: str) -> bytes | None:
        resp, q = answer(msg, self.zone, tcp=(proto == "tcp"))
        if q is not None:
            self.record(q, client, proto)
        return resp

    def serve_tcp_conn(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(10)
        with conn:
            try:
                while True:
                    hdr = _recv_exact(conn, 2)
                    if hdr is None:
                        return
                    (n,) = struct.unpack("!H", hdr)
                    msg = _recv_exact(conn, n)
                    if msg is None:
                        return
                    resp = self.handle(msg, client, "tcp")
                    if resp is None:
                        return
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
            except OSError:
                return

    def serve(self, socks: Sequence[socket.socket]) -> None:
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock.type == socket.SOCK_DGRAM:
                    try:
                        msg, peer = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        continue
                    resp = self.handle(msg, peer[0], "udp")
                    if resp is not None:
                        with contextlib.suppress(OSError):
                            sock.sendto(resp, peer)
                else:
                    try:
                        conn, peer = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        continue
                    conn.setblocking(True)
                    threading.Thread(
                        target=self.serve_tcp_conn, args=(conn, peer[0]), daemon=True
                    ).start()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


USAGE = """usage: dnsserver --listen ADDR[:PORT] [--listen ...] [--zone NAME=ADDR ...]
                 [--log FILE] [--no-tcp]"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        sys.argv[1:] if argv is None else argv,
        USAGE,
        multi=("--listen", "--zone"),
        flags=("--no-tcp",),
        single=("--log",),
    )
    listens = args.list("--listen")
    log_path = args.value("--log")
    if not listens:
        sys.exit(f"{USAGE}\n--listen is required")
    zone = Zone()
    for z in args.list("--zone"):
        name, sep, addr = z.partition("=")
        if not sep:
            sys.exit(f"--zone wants NAME=ADDR, got {z!r}")
        zone.add(name, addr)
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    socks = []
    for spec in listens:
        family, addr, port = parse_listen(spec)
        socks.append(bind_socket(family, socket.SOCK_DGRAM, addr, port))
        if not args.flag("--no-tcp"):
            socks.append(bind_socket(family, socket.SOCK_STREAM, addr, port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        Server(zone, log).serve(socks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
