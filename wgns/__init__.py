"""wgns: WireGuard VPNs confined to Linux network namespaces."""

__version__ = "0.1.0"
