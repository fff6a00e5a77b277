"""The simulated VPN provider used by the tests and by `wgns demo`.

See :mod:`wgns.testing.sim.provider` for the topology. Servers (:mod:`wgns.testing.sim.dnsserver`,
:mod:`wgns.testing.sim.echo`) are stdlib-only scripts run inside the sandbox's namespaces.
"""

from wgns.testing.sim.capture import Capture, Packet
from wgns.testing.sim.provider import Provider, build_provider
from wgns.testing.sim.topology import Client, ProviderError, Server

__all__ = [
    "Capture",
    "Client",
    "Packet",
    "Provider",
    "ProviderError",
    "Server",
    "build_provider",
]
