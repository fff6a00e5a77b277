"""The decisions of the health loop (wgns.lifecycle.watch), as pure functions of observations.

Nothing here reads the system or the clock: the loop passes what it saw and the time, and acts
on the answer. The numbers are WireGuard's where it has them (wireguard-tools' reresolve-dns.sh
re-resolves an endpoint whose last handshake is older than 135 s; a handshake is retried every
REKEY_TIMEOUT = 5 s), and otherwise short enough for the goal of issue 13: traffic back within
2 s of the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# a handshake older than this, for a hostname endpoint: resolve it again (reresolve-dns.sh)
STALE_HANDSHAKE = 135.0
# tx grew and rx did not for this long: the peer does not answer where we send
STALL_SECONDS = 5.0
# at most one lookup of a peer's host name per this many seconds
RESOLVE_INTERVAL = 15.0
# network events: act once they have been quiet this long, or this long after the first...
DEBOUNCE = 0.15
MAX_DEBOUNCE = 1.0
# ...and no two forced handshakes closer than this
KICK_INTERVAL = 1.0
# CLOCK_BOOTTIME ran ahead of CLOCK_MONOTONIC by more than this between two cycles: the
# machine was suspended in between
RESUME_GAP = 2.0


@dataclass(frozen=True)
class PeerSample:
    """One peer of one interface as the device reports it."""

    ifname: str
    public_key: str
    endpoint: str | None
    latest_handshake: int  # unix time, 0: never
    rx_bytes: int
    tx_bytes: int


def handshake_phrase(latest_handshake: int, now: float) -> str:
    if latest_handshake <= 0:
        return "no handshake yet"
    age = max(0, int(now - latest_handshake))
    return f"handshake {age}s ago"


def status_line(samples: list[PeerSample], ifnames: list[str], now: float) -> str:
    """STATUS= for systemd: per interface, the peer with the latest handshake (ties: the first),
    its age and endpoint: "handshake 12s ago via 198.18.1.2:51820"; with several interfaces
    each is named: "wg1: ...; wg2: no handshake yet via ..."."""
    parts = []
    for ifname in ifnames:
        mine = [s for s in samples if s.ifname == ifname]
        if not mine:
            parts.append((ifname, "device not readable"))
            continue
        best = max(mine, key=lambda s: s.latest_handshake)
        via = f" via {best.endpoint}" if best.endpoint else ""
        parts.append((ifname, f"{handshake_phrase(best.latest_handshake, now)}{via}"))
    if len(parts) == 1:
        return parts[0][1]
    return "; ".join(f"{ifname}: {text}" for ifname, text in parts)


@dataclass
class Traffic:
    """A peer's counters over time: since when tx has been growing while rx stood still."""

    rx: int = -1
    tx: int = -1
    stalled_since: float | None = None

    def update(self, rx: int, tx: int, now: float) -> None:
        if self.rx < 0 or rx != self.rx or rx < self.rx:  # first sample, an answer, or a reset
            self.stalled_since = None
        elif tx > self.tx and self.stalled_since is None:
            self.stalled_since = now
        self.rx, self.tx = rx, tx

    def stalled(self, now: float) -> bool:
        return self.stalled_since is not None and now - self.stalled_since >= STALL_SECONDS


def resolve_reason(
    *,
    hostname: bool,
    latest_handshake: int,
    wall_now: float,
    traffic: Traffic,
    now: float,
    last_resolved: float | None,
    resumed: bool = False,
) -> str | None:
    """Why the peer's host name should be looked up again now (None: it should not).

    Only hostname endpoints; at most once per RESOLVE_INTERVAL (NOW and LAST_RESOLVED are
    monotonic seconds); when the last handshake (unix time, against WALL_NOW) is stale, when
    traffic stalls, or after a resume."""
    if not hostname:
        return None
    if last_resolved is not None and now - last_resolved < RESOLVE_INTERVAL:
        return None
    if resumed:
        return "after a resume"
    if traffic.stalled(now):
        return f"no answer for {now - (traffic.stalled_since or now):.0f}s"
    if latest_handshake <= 0 or wall_now - latest_handshake > STALE_HANDSHAKE:
        return "handshake stale" if latest_handshake > 0 else "no handshake yet"
    return None


@dataclass
class Kicker:
    """When to force a fresh handshake after network events: DEBOUNCE after the last event
    (at most MAX_DEBOUNCE after the first of a burst), never twice within KICK_INTERVAL."""

    pending_since: float | None = None
    last_event: float = 0.0
    last_kick: float | None = None
    reasons: list[str] = field(default_factory=list)

    def event(self, now: float, reason: str) -> None:
        if self.pending_since is None:
            self.pending_since = now
            self.reasons = []
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.last_event = now

    def due_at(self) -> float | None:
        """The monotonic time the pending kick is due (None: none pending)."""
        if self.pending_since is None:
            return None
        at = min(self.last_event + DEBOUNCE, self.pending_since + MAX_DEBOUNCE)
        if self.last_kick is not None:
            at = max(at, self.last_kick + KICK_INTERVAL)
        return at

    def due(self, now: float) -> bool:
        at = self.due_at()
        return at is not None and now >= at

    def done(self, now: float, *, kicked: bool) -> str:
        """The pending kick was handled (KICKED: a handshake was forced): its reasons."""
        why = ", ".join(self.reasons)
        self.pending_since = None
        self.reasons = []
        if kicked:
            self.last_kick = now
        return why


def resumed(previous_gap: float | None, gap: float) -> bool:
    """GAP is CLOCK_BOOTTIME - CLOCK_MONOTONIC now (the time spent suspended since boot);
    it grew by more than RESUME_GAP since the previous cycle: the machine slept."""
    return previous_gap is not None and gap - previous_gap > RESUME_GAP


# rtnetlink message types (linux/rtnetlink.h)
NEWLINK, NEWADDR, NEWROUTE = 16, 20, 24
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000


@dataclass(frozen=True)
class NetEvent:
    """One rtnetlink notification from the birthplace, reduced to what the loop judges."""

    kind: int  # RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE (or a DEL one)
    ifname: str | None  # the link (of an address or a route: its device), when known
    flags: int = 0  # a link's IFF_* flags
    table: int = 254  # a route's table
    cloned: bool = False  # a route cache entry, not a route


def relevant(event: NetEvent, ours: frozenset[str]) -> str | None:
    """Whether EVENT may mean the network the tunnel's packets leave through came (back): a link
    that is up with its carrier, an address or a route added; not the loopback, not wgns's own
    tunnel devices (OURS: born in the birthplace before they move). The reason, or None."""
    if event.ifname == "lo" or (event.ifname is not None and event.ifname in ours):
        return None
    name = event.ifname or "?"
    if event.kind == NEWLINK:
        up = IFF_UP | IFF_LOWER_UP
        return f"link {name} up" if event.flags & up == up else None
    if event.kind == NEWADDR:
        return f"address on {name}"
    if event.kind == NEWROUTE and not event.cloned:
        return f"route via {name}"
    return None
