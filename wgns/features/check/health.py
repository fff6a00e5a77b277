"""Is a namespace that wgns brought up still whole? What `wgns status` and `wgns check` call broken.

A record at phase "up" says what should exist; this compares it with what does, without sending
anything: the namespace itself, its birthplace (where the tunnel's UDP sockets live), every
wireguard-go wgns started, and every recorded wg interface (present and up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wgns.engine import state
from wgns.engine.ops import CreateWireguard
from wgns.errors import WgnsError
from wgns.features.check.facts import ip_json
from wgns.system import netns
from wgns.wireguard import backends


@dataclass(frozen=True)
class Daemon:
    """A wireguard-go wgns started for one interface, as journaled."""

    ifname: str
    pid: int
    alive: bool


def backend_of(rec: state.Record) -> backends.WireguardBackend | None:
    """The backend REC names; None for a name this wgns does not know (a hand-made record)."""
    try:
        return backends.get(rec.backend)
    except WgnsError:
        return None


def daemons(rec: state.Record) -> dict[str, Daemon]:
    """ifname -> the daemon journaled for it, for backends that run one (wireguard-go: its pid
    and start time are in the create op's result); a kernel interface has none."""
    found = {}
    for op in rec.find(CreateWireguard):
        try:
            backend = backends.get(op.backend)
        except WgnsError:
            continue
        if backend.runs_daemon:
            pid = int(op.result.get("pid", 0))
            found[op.ifname] = Daemon(op.ifname, pid, backend.alive(op.result))
    return found


def problems(rec: state.Record, links: Mapping[str, bool] | None = None) -> list[str]:
    """What is broken in REC's namespace, one phrase each (empty: nothing, or not phase "up").

    LINKS maps the namespace's interface names to whether they are up, when the caller has read
    them already (None: read here)."""
    if rec.phase != "up":
        return []  # an interrupted up or down: the phase says so
    ns = rec.ns
    found = []
    exists = netns.exists(ns)
    if not exists:
        found.append(f"namespace {ns} is gone (deleted outside wgns)")
    found += birthplace_problems(rec) + daemon_problems(rec)
    if "container" in rec.extra:  # its process gone or restarted (issue 16)
        from wgns.features import container

        found += container.problems(rec)
    if exists:
        live = links if links is not None else netns_links(ns)
        for entry in rec.interfaces:
            ifname = str(entry["ifname"])
            if ifname not in live:
                found.append(f"interface {ifname} is missing")
            elif not live[ifname]:
                found.append(f"interface {ifname} is down")
    return found


def birthplace_problems(rec: state.Record) -> list[str]:
    """The birthplace (where the tunnel's UDP sockets live) gone, or replaced since `up`."""
    bp = rec.birthplace
    if bp is None:
        return []  # the namespace wgns ran in: it cannot go away
    if not netns.exists(bp):
        return [f"birthplace {bp} is gone: the tunnel's UDP sockets lived there"]
    if rec.birthplace_inode and netns.inode_of(bp) != rec.birthplace_inode:
        return [
            f"birthplace {bp} was replaced by a new namespace of that name: "
            "the tunnel's UDP sockets live in the old one"
        ]
    return []


def daemon_problems(rec: state.Record) -> list[str]:
    return [
        f"wireguard-go of {d.ifname} (pid {d.pid}) is not running"
        for d in daemons(rec).values()
        if not d.alive
    ]


def netns_links(ns: str) -> dict[str, bool]:
    """Interface name -> up, of namespace NS (empty when it cannot be read)."""
    try:
        return {str(x["ifname"]): "UP" in x.get("flags", []) for x in ip_json(ns, ["link"])}
    except WgnsError:
        return {}


def fix_hint(ns: str) -> str:
    return f"`wgns up` its profile repairs it (or says what it cannot); or `wgns down {ns}`"
