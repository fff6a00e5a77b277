"""A WireGuard device's state as `wg show IFNAME dump` prints it; the private key is dropped on
parse, never kept."""

from __future__ import annotations

from dataclasses import dataclass

from wgns.system.tools import run


@dataclass(frozen=True)
class PeerState:
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix time, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None
    has_preshared_key: bool


@dataclass(frozen=True)
class DeviceState:
    public_key: str
    listen_port: int
    fwmark: int | None
    peers: tuple[PeerState, ...]


def parse_dump(text: str) -> DeviceState:
    """TEXT of `wg show IFNAME dump`: a line for the device, then one per peer, tab-separated."""
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0]
    # head: private-key public-key listen-port fwmark; the private key is never kept
    peers = [
        PeerState(
            public_key=f[0],
            has_preshared_key=f[1] != "(none)",
            endpoint=None if f[2] == "(none)" else f[2],
            allowed_ips=tuple(a for a in f[3].split(",") if a and a != "(none)"),
            latest_handshake=int(f[4]),
            rx_bytes=int(f[5]),
            tx_bytes=int(f[6]),
            persistent_keepalive=None if f[7] == "off" else int(f[7]),
        )
        for f in lines[1:]
    ]
    return DeviceState(
        public_key=head[1],
        listen_port=int(head[2]),
        fwmark=None if head[3] == "off" else int(head[3], 0),
        peers=tuple(peers),
    )


def show(ifname: str, *, ns: str | None) -> DeviceState | None:
    """The device's state, or None when it is gone (daemon dead, deleted by hand)."""
    proc = run(["wg", "show", ifname, "dump"], ns=ns, check=False)
    if proc.returncode != 0:
        return None
    return parse_dump(proc.stdout)
