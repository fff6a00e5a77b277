"""wireguard-go's UAPI socket: where `wg` and wgns find a userspace device."""

from __future__ import annotations

WIREGUARD_RUN_DIR = "/run/wireguard"


def uapi_socket(ifname: str) -> str:
    """wireguard-go's UAPI socket for IFNAME."""
    return f"{WIREGUARD_RUN_DIR}/{ifname}.sock"
