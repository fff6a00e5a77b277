"""A profile as wg(8) configuration text: what `wg setconf` reads and `wgns strip` prints."""

from __future__ import annotations

from wgns.errors import ConfigError
from wgns.profile.conf import wg_quick_pass
from wgns.profile.model import Interface
from wgns.profile.values import StrPath, lower, show


def strip_conf(text: str, *, path: StrPath | None = None) -> str:
    """Exactly what `wg-quick strip` prints for a file with this content.

    wg-quick dies (printing nothing) on a SaveConfig that is neither true nor false; so do we.
    PATH only goes into that error.
    """
    consumed, rest = wg_quick_pass(text)
    for q in consumed:
        if q.key == "SaveConfig" and lower(q.value) not in ("true", "false"):
            raise ConfigError(
                f"{show(q.value)} is neither true nor false", path=path, line=q.number, key=q.key
            )
    # wg-quick appends "$line\n" per line, then `echo "$WG_CONFIG"` adds one more newline.
    return "".join(line + "\n" for _, line in rest) + "\n"


def wg_setconf_text(iface: Interface) -> str:
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
