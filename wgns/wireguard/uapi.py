"""wireguard-go's UAPI socket: configuring a userspace device as `wg setconf` would, without a
`wg` process and without the keys ever in an argv."""

from __future__ import annotations

import binascii
import socket
from typing import TYPE_CHECKING

from wgns.errors import WgnsError

if TYPE_CHECKING:
    from wgns.profile.model import Interface

WIREGUARD_RUN_DIR = "/run/wireguard"


def uapi_socket(ifname: str) -> str:
    """wireguard-go's UAPI socket for IFNAME, where `wg` and wgns find the daemon."""
    return f"{WIREGUARD_RUN_DIR}/{ifname}.sock"


def listening(path: str) -> bool:
    """The socket at PATH accepts connections. Existing is not enough: between bind() and
    listen() a connect fails, and `wg` then *unlinks* the socket as stale."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _hex(key_b64: str) -> str:
    return binascii.a2b_base64(key_b64.encode("ascii")).hex()


def set_text(iface: Interface) -> str:
    """The cross-platform UAPI `set` request for IFACE: what `wg setconf` sends to wireguard-go,
    with `replace_peers` so that it replaces the whole configuration too. Holds the keys."""
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


def set_config(ifname: str, iface: Interface) -> None:
    """Configure IFNAME (a wireguard-go device) with IFACE through its UAPI socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(uapi_socket(ifname))
            s.sendall(set_text(iface).encode())
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError as e:
            raise WgnsError(f"cannot configure {ifname} through its UAPI socket: {e}") from None
    fields = dict(line.split("=", 1) for line in reply.decode().split("\n") if "=" in line)
    err = int(fields.get("errno", "-1"))
    if err != 0:
        raise WgnsError(f"wireguard-go refused the configuration of {iface.name} (errno {err})")
