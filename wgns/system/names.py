"""Derived kernel names. Users never type these; they only need to be unique and valid."""

from __future__ import annotations

from hashlib import blake2b


def _digest(*parts: str) -> str:
    return blake2b("\0".join(parts).encode(), digest_size=5).hexdigest()


def wg_ifname(ns: str, label: str) -> str:
    """The WireGuard interface for interface LABEL of namespace NS: `wg` + 10 hex = 12 chars."""
    return "wg" + _digest("wg", ns, label)


def veth_ifnames(ns: str) -> tuple[str, str]:
    """The forward veth pair of NS: (end in the main namespace, end inside NS)."""
    d = _digest("veth", ns)
    return "vh" + d, "vn" + d


def nft_table(ns: str) -> str:
    """The nft table wgns owns inside namespace NS (and, for forwards, in the main namespace)."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in ns)
    return f"wgns_{safe}_{_digest('nft', ns)[:6]}" if safe != ns else f"wgns_{ns}"
