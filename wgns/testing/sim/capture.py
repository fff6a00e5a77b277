"""Packet capture in the sandbox: tcpdump on one interface, and a parser for what it wrote.

Only the standard library parses the pcap file: a :class:`Packet` is a summary (protocol,
addresses, ports, ICMP type) good enough to assert that nothing but WireGuard crossed a link.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from types import TracebackType

from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.topology import SIM_DIR, ProviderError

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
