"""The health loop of `wgns up --foreground`: watch a namespace that is up, repair its tunnel
in place, and bring traffic back quickly after the network changes, never restarting anything.

About once a second (wgns.lifecycle.watchlogic decides, this module acts):

- the record is read again: gone or no longer "up" means someone else took the namespace down
  (`wgns down`): the loop ends with TAKEN_DOWN; a namespace deleted by hand ends it with
  DELETED (what runs in it is gone with it: there is nothing to repair in place);
- a dead wireguard-go or a deleted device is remade as `wgns up` repairs it
  (wgns.lifecycle.up.repair_tunnels), under the namespace's lock: the namespace, its kill
  switch and the processes inside stay as they are;
- every statusfile.REFRESH seconds the namespace's status file (wgns.features.statusfile,
  what a user's status bar reads) is published again;
- each peer's handshake age and endpoint become systemd's STATUS=, and WATCHDOG=1 is sent
  whatever the tunnel's state (the watchdog says this loop is alive; a restart by systemd
  would be the very thing the loop exists to avoid);
- a peer whose Endpoint is a host name is looked up again in the birthplace (where its UDP
  socket lives) when its handshake is stale, when it stops answering, or after a resume, and
  moved when the name points elsewhere now;
- link, address and route notifications from the birthplace, and a resume from suspend,
  force a fresh handshake (wgns.lifecycle.watchnet.kick) once the burst of events is over.

Every repair is one line on stderr (the journal, under systemd).
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgns import log
from wgns.engine import state
from wgns.errors import WgnsError
from wgns.features import statusfile
from wgns.lifecycle import probe, watchlogic, watchnet
from wgns.lifecycle.watchlogic import Kicker, PeerSample, Traffic
from wgns.profile.model import Endpoint
from wgns.profile.values import is_ip
from wgns.system import names, netns, sdnotify
from wgns.wireguard import backends

if TYPE_CHECKING:
    from types import FrameType

    from wgns.profile.model import Interface, Profile

CYCLE = 1.0
REPAIR_RETRY = 5.0  # a repair that failed is tried again this much later
LOCK_WAIT = 2.0  # a change of a namespace another wgns is changing waits this long, then skips
RESOLVE_TIMEOUT = 3.0

STOPPED = "stopped"  # a signal: the caller takes the namespace down
TAKEN_DOWN = "taken down"  # by someone else: nothing left to take down
DELETED = "deleted"  # the namespace was deleted by hand: the caller clears its remains


@dataclass
class _Peer:
    """What the loop remembers of one peer between cycles."""

    traffic: Traffic = field(default_factory=Traffic)
    last_resolved: float | None = None


class Watcher:
    """The loop for the namespace of PROFILE (LOAD gives it again after a reload: the profile
    file is read whenever the record changed, so that a peer is put back as `up --reload`
    last configured it)."""

    def __init__(
        self,
        profile: Profile,
        load: Callable[[], Profile],
        *,
        notify: Callable[..., bool] = sdnotify.notify,
    ) -> None:
        self.ns = profile.name
        self.profile = profile
        self._load = load
        self._notify = notify
        self._watchdog = sdnotify.watchdog_interval() is not None
        self._stamp = self._record_stamp()
        self._peers: dict[tuple[str, str], _Peer] = {}
        self._kicker = Kicker()
        self._gap: float | None = None
        self._resumed = False
        self._repair_after = 0.0
        self._published = -statusfile.REFRESH  # the first cycle publishes
        self._monitor: watchnet.NetMonitor | None = None
        self._monitor_inode = 0
        start = time.monotonic()
        for iface in profile.interfaces:  # `up` has just looked the names up
            for p in iface.peers:
                key = (names.wg_ifname(self.ns, iface.name), p.public_key)
                self._peers[key] = _Peer(last_resolved=start)

    # ------------------------------------------------------------------ the loop

    def run(self, stop: Stop) -> str:
        """Watch until STOP is signalled (STOPPED) or the namespace is gone (TAKEN_DOWN,
        DELETED)."""
        try:
            next_cycle = time.monotonic()
            while stop.signum is None:
                now = time.monotonic()
                if now >= next_cycle:
                    outcome = self.cycle(now)
                    if outcome is not None:
                        return outcome
                    next_cycle = now + CYCLE
                self.network(time.monotonic())
                due = self._kicker.due_at()
                until = min(next_cycle, due if due is not None else next_cycle)
                if stop.signum is None:
                    self._wait(stop.fd, max(0.0, until - time.monotonic()))
        finally:
            self._close_monitor()
        return STOPPED

    def _wait(self, wake: int, timeout: float) -> None:
        fds = [wake] + ([self._monitor.fileno()] if self._monitor is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if wake in ready:
            while True:
                try:
                    if not os.read(wake, 512):
                        break
                except BlockingIOError:
                    break

    def cycle(self, now: float) -> str | None:
        """One round of checks; an outcome when the loop must end."""
        rec = state.load(self.ns)
        if rec is None or rec.phase != "up":
            log.info("wgns: %s was taken down outside this service (wgns down?): stopping", self.ns)
            return TAKEN_DOWN
        self._refresh_profile()
        gone, problems = probe.broken(rec)
        if gone:
            log.info(
                "wgns: %s: the namespace was deleted outside wgns, and what ran in it with it: "
                "stopping (%s)",
                self.ns,
                "; ".join(problems),
            )
            return DELETED
        if problems and now >= self._repair_after:
            outcome = self._repair(problems)
            if outcome is not None:
                return outcome
            rec = state.load(self.ns) or rec
        self._ensure_monitor(rec)
        gap = watchnet.suspend_gap()
        if watchlogic.resumed(self._gap, gap):
            self._resumed = True
            self._kicker.event(now, f"resume after {gap - (self._gap or gap):.0f}s asleep")
        self._gap = gap
        samples = self._samples(rec)
        if now >= self._published + statusfile.REFRESH:  # the status bars' copy
            statusfile.refresh(self.ns, rec)
            self._published = now
        self._resolve(rec, samples, now)
        self._resumed = False
        ifnames = [str(i["ifname"]) for i in rec.interfaces]
        fields: dict[str, object] = {
            "status": watchlogic.status_line(samples, ifnames, time.time())
        }
        if self._watchdog:
            fields["watchdog"] = 1
        self._notify(**fields)
        return None

    # ------------------------------------------------------------------ repairs

    def _repair(self, problems: list[str]) -> str | None:
        from wgns.lifecycle import up

        try:
            with state.locked(self.ns, wait=LOCK_WAIT):
                rec = state.load(self.ns)
                if rec is None or rec.phase != "up":
                    return None  # the next cycle says so
                gone, problems = probe.broken(rec)
                if gone or not problems:
                    return None
                bp = rec.birthplace
                if bp is not None and not netns.exists(bp):
                    raise WgnsError(f"its birthplace {bp} is gone; waiting for it to come back")
                self._refresh_profile(force=True)
                up.repair_tunnels(self.profile, rec, probe.broken_ifnames(rec))
        except WgnsError as e:
            self._repair_after = time.monotonic() + REPAIR_RETRY
            log.info(
                "wgns: %s is broken (%s) and could not be repaired: %s (trying again in %.0fs)",
                self.ns,
                "; ".join(problems),
                e.message,
                REPAIR_RETRY,
            )
            return None
        log.info(
            "wgns: %s repaired in place (%s): same namespace, processes inside untouched",
            self.ns,
            "; ".join(problems),
        )
        for peer in self._peers.values():
            peer.traffic = Traffic()
        self._close_monitor()  # a replaced birthplace: listen to the new one
        return None

    def _refresh_profile(self, *, force: bool = False) -> None:
        stamp = self._record_stamp()
        if stamp != self._stamp or force:
            try:
                self.profile = self._load()
            except WgnsError as e:
                log.info("wgns: %s: cannot read the profile again: %s", self.ns, e.message)
            self._stamp = stamp

    def _record_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(state.path_of(self.ns))
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_ino)

    def _interface(self, ifname: str) -> Interface | None:
        for iface in self.profile.interfaces:
            if names.wg_ifname(self.ns, iface.name) == ifname:
                return iface
        return None

    # ------------------------------------------------------------------ observations

    def _samples(self, rec: state.Record) -> list[PeerSample]:
        backend = backends.get(rec.backend)
        now = time.monotonic()
        out = []
        for entry in rec.interfaces:
            ifname = str(entry["ifname"])
            device = backend.read(ifname, rec.ns)
            if device is None:
                continue
            for p in device.peers:
                s = PeerSample(
                    ifname, p.public_key, p.endpoint, p.latest_handshake, p.rx_bytes, p.tx_bytes
                )
                out.append(s)
                self._peers.setdefault((ifname, p.public_key), _Peer()).traffic.update(
                    p.rx_bytes, p.tx_bytes, now
                )
        return out

    # ------------------------------------------------------------------ host names

    def _resolve(self, rec: state.Record, samples: list[PeerSample], now: float) -> None:
        wall = time.time()
        for s in samples:
            iface = self._interface(s.ifname)
            peer = (
                next((p for p in iface.peers if p.public_key == s.public_key), None)
                if iface
                else None
            )
            if peer is None or peer.endpoint is None:
                continue
            memory = self._peers.setdefault((s.ifname, s.public_key), _Peer())
            why = watchlogic.resolve_reason(
                hostname=not is_ip(peer.endpoint.host),
                latest_handshake=s.latest_handshake,
                wall_now=wall,
                traffic=memory.traffic,
                now=now,
                last_resolved=memory.last_resolved,
                resumed=self._resumed,
            )
            if why is None:
                continue
            memory.last_resolved = now
            host, port = peer.endpoint.host, peer.endpoint.port
            try:
                address = probe.resolve_host(
                    host, port, where=rec.birthplace, timeout=RESOLVE_TIMEOUT
                )
            except WgnsError as e:
                log.info("wgns: %s: %s (%s): %s", self.ns, host, why, e.message)
                continue
            new = Endpoint(address, port)
            if str(new) == s.endpoint:
                log.debug("wgns: %s: %s (%s) still resolves to %s", self.ns, host, why, address)
                continue
            if self._change(
                s.ifname, frozenset([s.public_key]), f"{host} moved", {s.public_key: new}
            ):
                log.info(
                    "wgns: %s: peer %s: %s now resolves to %s (%s; was %s): endpoint moved, "
                    "fresh handshake",
                    self.ns,
                    s.public_key[:8],
                    host,
                    address,
                    why,
                    s.endpoint or "none",
                )
                memory.traffic = Traffic()

    # ------------------------------------------------------------------ network changes

    def network(self, now: float) -> None:
        """Take in the birthplace's notifications; force a handshake when one is due."""
        if self._monitor is not None:
            ours = frozenset(names.wg_ifname(self.ns, i.name) for i in self.profile.interfaces)
            for event in self._monitor.drain():
                why = watchlogic.relevant(event, ours)
                if why is not None:
                    self._kicker.event(now, why)
        if not self._kicker.due(now):
            return
        rec = state.load(self.ns)
        if rec is None or rec.phase != "up":
            self._kicker.done(now, kicked=False)
            return
        kicked = 0
        for entry in rec.interfaces:
            ifname = str(entry["ifname"])
            iface = self._interface(ifname)
            if iface is None:
                continue
            keys = frozenset(p.public_key for p in iface.peers if p.endpoint is not None)
            if keys and self._change(ifname, keys, "network change", {}, routable_only=True):
                kicked += len(keys)
        why = self._kicker.done(now, kicked=kicked > 0)
        if kicked:
            log.info(
                "wgns: %s: network changed in the birthplace (%s): fresh handshake with %d peer(s)",
                self.ns,
                why,
                kicked,
            )

    def _change(
        self,
        ifname: str,
        keys: frozenset[str],
        what: str,
        endpoints: dict[str, Endpoint],
        *,
        routable_only: bool = False,
    ) -> bool:
        """Kick the peers KEYS of IFNAME (moving them to ENDPOINTS) under the namespace's lock;
        with ROUTABLE_ONLY, only when the birthplace has a route to one of their endpoints.
        Whether it was done."""
        try:
            with state.locked(self.ns, wait=LOCK_WAIT):
                rec = state.load(self.ns)
                if rec is None or rec.phase != "up":
                    return False
                self._refresh_profile()
                iface = self._interface(ifname)
                backend = backends.get(rec.backend)
                device = backend.read(ifname, rec.ns)
                if iface is None or device is None:
                    return False
                config = watchnet.live_config(iface, device)
                if routable_only and not any(
                    watchnet.routable(p.endpoint.host, rec.birthplace)
                    for p in config.peers
                    if p.public_key in keys and p.endpoint is not None
                ):
                    log.debug("wgns: %s: %s: no route to the endpoints yet", self.ns, what)
                    return False
                watchnet.kick(backend, ifname, config, rec.ns, keys, endpoints=endpoints)
        except WgnsError as e:
            log.info(
                "wgns: %s: %s: cannot renew the handshake of %s: %s",
                self.ns,
                what,
                ifname,
                e.message,
            )
            return False
        return True

    def _ensure_monitor(self, rec: state.Record) -> None:
        if self._monitor is not None and self._monitor_inode == rec.birthplace_inode:
            return
        self._close_monitor()
        try:
            self._monitor = watchnet.NetMonitor(rec.birthplace)
        except OSError as e:
            log.info("wgns: %s: cannot watch the network of its birthplace: %s", self.ns, e)
            return
        self._monitor_inode = rec.birthplace_inode

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None


@dataclass
class Stop:
    """Set by SIGTERM, SIGINT or SIGHUP (see signals): which one came; FD wakes a select."""

    fd: int
    signum: int | None = None


@contextmanager
def signals() -> Iterator[Stop]:
    """SIGTERM, SIGINT and SIGHUP are noted in the Stop yielded, not raised: `up --foreground`
    holds this from before its `up` (whose rollback on SIGTERM still works: `up` installs its own
    handlers while it changes the system) to its `down`. A pipe wakes the loop's select."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stop = Stop(rfd)

    def note(signum: int, frame: FrameType | None) -> None:
        stop.signum = signum

    wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old = {s: signal.signal(s, note) for s in wanted}
    old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(rfd)
        os.close(wfd)


class AlreadyWatched(WgnsError):
    """Another `up --foreground` watches the namespace. Exit status 2, which wgns@.service does
    not restart on: a second loop would repair and re-resolve against the first."""

    exit_code = 2


def claim(ns: str) -> socket.socket:
    """Hold NS's watch for as long as the socket returned is open: a listening unix socket with
    an abstract name (the kernel frees it when the process dies, however it dies; no file to
    leave behind). A second claim fails, naming the holder (SO_PEERCRED of a connect)."""
    name = f"wgns/watch/{ns}"
    if len(name) > 100:  # sun_path is 108 bytes
        name = "wgns/watch/#" + hashlib.sha256(ns.encode()).hexdigest()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind("\0" + name)
        sock.listen(1)
        return sock
    except OSError:
        sock.close()
    holder = "another process"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as peer:
        try:
            peer.connect("\0" + name)
            cred = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            holder = f"pid {struct.unpack('3i', cred)[0]}"
        except OSError:
            pass
    raise AlreadyWatched(
        f"{ns} is already watched by another `wgns up --foreground` ({holder})",
        hint=f"`systemctl status wgns@{ns}` shows whether it is the unit's",
    )
