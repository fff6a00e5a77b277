"""WireGuard devices: reading their state (`wg show dump`; the private key is dropped on parse)
and configuring a userspace one over its UAPI socket."""

from __future__ import annotations

import _socket  # the C module: socket.py adds enums and selectors (~3 ms) unused here
import binascii  # not base64, a wrapper that imports struct too

from wgns.errors import WgnsError
from wgns.profile.frozen import frozen
from wgns.system.tools import run

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from wgns.profile.model import Interface


@frozen
class PeerState:
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix time, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None
    has_preshared_key: bool


@frozen
class DeviceState:
    public_key: str
    listen_port: int
    fwmark: int | None
    peers: tuple[PeerState, ...]


def parse_dump(text: str) -> DeviceState:
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0]
    # head: private-key public-key listen-port fwmark — the private key is never kept
    peers = []
    for f in lines[1:]:
        peers.append(
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
        )
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


def _hex(key_b64: str) -> str:
    return binascii.a2b_base64(key_b64.encode("ascii")).hex()


def uapi_set_text(iface: Interface) -> str:
    """The cross-platform UAPI `set` request for IFACE: what `wg setconf` sends to wireguard-go,
    with `replace_peers` so that it replaces the whole configuration too."""
    lines = ["set=1", f"private_key={_hex(iface.private_key.reveal())}"]
    if iface.listen_port is not None:
        lines.append(f"listen_port={iface.listen_port}")
    if iface.fwmark is not None:
        lines.append(f"fwmark={iface.fwmark}")
    lines.append("replace_peers=true")
    for p in iface.peers:
        lines.append(f"public_key={_hex(p.public_key)}")
        if p.preshared_key is not None:
            lines.append(f"preshared_key={_hex(p.preshared_key.reveal())}")
        if p.endpoint is not None:
            lines.append(f"endpoint={p.endpoint}")
        if p.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={net}" for net in p.allowed_ips)
    return "\n".join(lines) + "\n\n"


def uapi_set(sock_path: str, iface: Interface) -> None:
    """Configure a userspace device through its UAPI socket: no `wg` process, no argv."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(sock_path)
        s.sendall(uapi_set_text(iface).encode())
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    finally:
        s.close()
    fields = dict(line.split("=", 1) for line in reply.decode().split("\n") if "=" in line)
    err = int(fields.get("errno", "-1"))
    if err != 0:
        raise WgnsError(f"wireguard-go refused the configuration of {iface.name} (errno {err})")
