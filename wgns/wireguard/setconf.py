"""The `wg setconf` input for a device: a profile's interface without the wg-quick keys.

Imports nothing of the profile parser: `down` and the backends need this, not the parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgns.profile.model import Interface


def setconf_text(iface: Interface) -> str:
    """The `wg setconf` input for IFACE's device (no wg-quick keys). Holds the private key."""
    out = ["[Interface]", f"PrivateKey = {iface.private_key.reveal()}"]
    if iface.listen_port is not None:
        out.append(f"ListenPort = {iface.listen_port}")
    if iface.fwmark is not None:
        out.append(f"FwMark = {iface.fwmark:#x}" if iface.fwmark else "FwMark = off")
    for peer in iface.peers:
        out += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key is not None:
            out.append(f"PresharedKey = {peer.preshared_key.reveal()}")
        if peer.allowed_ips:  # wg rejects an empty AllowedIPs line
            out.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.endpoint is not None:
            out.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive is not None:
            out.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(out) + "\n"
