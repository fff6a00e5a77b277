"""`wgns check NS`: a self-test that shows, with evidence, that NS has no way out but the tunnel.

Each check yields one :class:`Result` (PASS, FAIL or SKIP with the evidence). The expected state
comes from the state record (/run/wgns/NS.json), the actual state from the kernel:

* ``interfaces``: only lo, the recorded wg interface(s) (of the recorded kind) and declared
  forward veths exist, and the wg interfaces are up;
* ``routes``: every route of every table leaves through a wg interface (lo only for local,
  loopback and unreachable routes; a declared forward veth, whose traffic the kill switch's
  openings narrow, for the routes the forward made);
* ``killswitch``: the live nft table equals the one rendered from the state record, seal
  included (nft itself renders the expected table, in a throwaway network namespace);
* ``handshake``: every peer's latest handshake is younger than WireGuard's REJECT_AFTER_TIME
  (180 s), after a nudge through the tunnel when it was not;
* ``dns``: /etc/netns/NS/resolv.conf names exactly the servers wgns wrote, each routed through
  wg, and each answers a query sent from inside NS while the tunnel's byte counters move;
* ``ipv6``: a profile with IPv6 has it on wg and routed through wg; one without has it dropped
  (probe datagrams to a global and a link-local multicast address fail from inside NS);
* ``exit`` (with an echo URL): the address seen from inside differs from the one seen outside.

Checks only read, except the probe packets they send from inside NS.
"""

from wgns.features.check.confinement import route_verdict
from wgns.features.check.facts import Facts, gather, spec_of
from wgns.features.check.probes import REJECT_AFTER_TIME, ask_dns, dns_query, nameservers
from wgns.features.check.report import DEFAULT_TIMEOUT, ORDER, is_root, report, run_checks
from wgns.features.check.result import Result

__all__ = [
    "DEFAULT_TIMEOUT",
    "ORDER",
    "REJECT_AFTER_TIME",
    "Facts",
    "Result",
    "ask_dns",
    "dns_query",
    "gather",
    "is_root",
    "nameservers",
    "report",
    "route_verdict",
    "run_checks",
    "spec_of",
]
