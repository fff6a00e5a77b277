"""The tunnel in a namespace wgns did not create: a container's, or any process's (issue 16).

`wgns up PROFILE --pid PID` (or `--container NAME`, whose PID the engine gives: see
wgns.integrations.containers) gives the process's network namespace a name, as `ip netns
attach NAME PID` does: /proc/PID/ns/net bind-mounted on /run/netns/NAME (:class:`AttachNetns`).
From then on every command works by that name, and `down` only removes the name: the
namespace belongs to the container, which wgns never deletes. The name also keeps the
namespace alive once the container is gone, so that `down` can still remove the kill switch
and the tunnel from it.

The record keeps the namespace's identity (the process's pid and start time, the st_dev and
st_ino of its namespace) under ``extra.container``; :func:`stale` compares it with the system
at every command: the container dead, or restarted (a new process, a new namespace), is what
`status` says and what `up` with the same name replaces.

The container's DNS is its own /etc/resolv.conf, in its mount namespace: wgns.features.
containerdns.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import netns
from wgns.system.processes import proc_starttime, process_alive

if TYPE_CHECKING:
    from wgns.engine.state import Record
    from wgns.profile.model import Profile


@dataclass(frozen=True)
class Target:
    """What the user pointed `up` at: PID (from --pid, or the engine for --container)."""

    pid: int
    engine: str | None = None  # "docker" | "podman" for --container
    container: str | None = None  # the container's name, for --container
    keep_interfaces: bool = False  # --keep-interfaces: other links stay (closed by the kill switch)

    @property
    def label(self) -> str:
        if self.container is not None:
            return f"{self.engine} container {self.container} (pid {self.pid})"
        return f"process {self.pid}"


@dataclass(frozen=True)
class Identity:
    """A network namespace as one process holds it: what `up` records and later checks."""

    pid: int
    starttime: int
    dev: int
    ino: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def identity_of(pid: int) -> Identity:
    """PID's network namespace now; a WgnsError when there is no such process."""
    start = proc_starttime(pid) if pid > 0 else None
    try:
        if start is None:
            raise FileNotFoundError
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        raise WgnsError(
            f"no process {pid}", hint="give the pid of a running process (`ps -p PID`)"
        ) from None
    return Identity(pid, start, st.st_dev, st.st_ino)


def _same_ns(path: str, ident: Identity | dict[str, Any]) -> bool:
    d = ident.to_json() if isinstance(ident, Identity) else ident
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (d.get("dev"), d.get("ino"))


def recorded(rec: Record) -> dict[str, Any] | None:
    """REC's container (identity and how it was named), None for a namespace of its own."""
    c = rec.extra.get("container")
    return c if isinstance(c, dict) else None


def stale(rec: Record) -> str | None:
    """Why REC's container namespace is not the one it was brought up in any more (None: it
    is, or REC is not a container's): the process gone, or in another namespace now."""
    c = recorded(rec)
    if c is None:
        return None
    pid, label = int(c.get("pid", 0)), str(c.get("label", "the process"))
    if not process_alive(pid, c.get("starttime")):
        return (
            f"{label} is gone (restarted or stopped): the tunnel is in a namespace nothing "
            f"but its name {netns.path_of(rec.ns)} holds"
        )
    if not _same_ns(f"/proc/{pid}/ns/net", c):
        return f"{label} is in another network namespace now"
    return None


def problems(rec: Record) -> list[str]:
    """What `wgns status` calls broken about REC's container, one phrase each."""
    why = stale(rec)
    if why is not None:
        return [why]
    c = recorded(rec)
    if c is not None and netns.exists(rec.ns) and not _same_ns(netns.path_of(rec.ns), c):
        return [f"{netns.path_of(rec.ns)} names another namespace than the container's"]
    return []


def check_reuse(rec: Record | None, target: Target | None, ns: str) -> Target | None:
    """The target `up` of NS works on, given its record REC: TARGET when given, else the
    recorded container (to repair or to report "already up"). Refused: a container
    namespace whose process is gone without a new one given; another live process for a name
    that is up; a pid for a namespace wgns made itself."""
    if target is not None:
        _not_the_host(target, identity_of(target.pid))
    c = None if rec is None else recorded(rec)
    if c is None:
        if target is not None and rec is not None and rec.phase == "up":
            raise WgnsError(
                f"{ns} is up as a namespace of its own, not a container's",
                hint=f"choose another --name, or `wgns down {ns}` first",
            )
        return target
    assert rec is not None
    why = stale(rec)
    if target is None:
        if why is not None and rec.phase == "up":
            raise WgnsError(
                f"{ns}: {why}",
                hint=f"`wgns up PROFILE --container NAME` (or --pid) brings the tunnel into the "
                f"new one; `wgns down {ns}` removes what is left",
            )
        pid = int(c.get("pid", 0))
        return Target(pid=pid, engine=c.get("engine"), container=c.get("container"))
    if why is None and rec.phase == "up" and identity_of(target.pid).ino != c.get("ino"):
        raise WgnsError(
            f"{ns} is up in {c.get('label')}, which still runs; {target.label} is another one",
            hint=f"`wgns down {ns}` first, or choose another --name",
        )
    return target


def link_names(nsfile: str) -> list[str]:
    """The interfaces of the network namespace NSFILE (/proc/PID/ns/net), read from inside it
    by this thread, which then returns home."""
    target = os.open(nsfile, os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns.setns(target, netns.CLONE_NEWNET)
        try:
            return sorted(name for _, name in socket.if_nameindex())
        finally:
            netns.setns(home, netns.CLONE_NEWNET)
    finally:
        os.close(home)
        os.close(target)


def _named_elsewhere(ident: Identity) -> list[str]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(netns.NETNS_RUN_DIR)):
            if netns.exists(name) and _same_ns(netns.path_of(name), ident):
                out.append(name)
    return out


def _not_the_host(target: Target, ident: Identity) -> None:
    if _same_ns("/proc/thread-self/ns/net", ident):
        raise WgnsError(
            f"{target.label} is in this host's own network namespace: its tunnel would be the "
            "host's",
            hint="start the container with its own network (`--network none`)",
        )


def validate(profile: Profile, target: Target, *, replacing: bool = False) -> tuple[Identity, bool]:
    """Everything checked before `up` changes anything: (the namespace's identity, whether
    the name must be made). Refused: no such process; the host's (wgns's own) or the
    birthplace's namespace; a name that already names another namespace (REPLACING: the name
    is a stale record's, removed first); a namespace with interfaces besides lo, unless
    --keep-interfaces."""
    ns = profile.name
    ident = identity_of(target.pid)
    nsfile = f"/proc/{target.pid}/ns/net"
    _not_the_host(target, ident)
    bp = profile.birthplace
    if bp is not None and _same_ns(netns.path_of(bp), ident):
        raise WgnsError(f"{target.label} is in the birthplace namespace {bp}")
    if netns.exists(ns) and not replacing:
        if _same_ns(netns.path_of(ns), ident):
            return ident, False  # already named so (by `ip netns attach`, or a repair)
        raise WgnsError(
            f"namespace {ns} already exists and is not the network namespace of {target.label}",
            hint="choose another --name",
        )
    others = [n for n in _named_elsewhere(ident) if n != ns]
    if others:
        raise WgnsError(
            f"the network namespace of {target.label} is already named {', '.join(others)}",
            hint=f"use --name {others[0]}, or remove that name first",
        )
    extra = [n for n in link_names(nsfile) if n != "lo"]
    if extra and not target.keep_interfaces:
        raise WgnsError(
            f"the network namespace of {target.label} has interfaces besides lo "
            f"({', '.join(extra)}): they would be other ways out than the tunnel",
            hint="start the container with `--network none`, or give --keep-interfaces to keep "
            "them, closed by the kill switch (the tunnel's routes replace theirs until `down`)",
        )
    return ident, True


@dataclass(kw_only=True)
class AttachNetns(Op):
    """Name a process's network namespace NS, as `ip netns attach NS PID` does; undo removes
    the name only (never the namespace, which is the process's)."""

    beside_background = True  # a name for a namespace changes nothing that carries traffic
    kind = "netns_attach"
    ns: str
    pid: int
    starttime: int
    dev: int
    ino: int

    def describe(self) -> str:
        return f"ip netns attach {self.ns} {self.pid}"

    def prepare(self, ctx: Context) -> None:
        if os.path.lexists(netns.path_of(self.ns)):
            raise WgnsError(f"cannot name namespace {self.ns}: {netns.path_of(self.ns)} exists")

    def apply(self, ctx: Context) -> None:
        # the namespace through an fd of the process checked now, not a pid that may be reused
        try:
            fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise WgnsError(f"process {self.pid} is gone: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (self.dev, self.ino) or not process_alive(
                self.pid, self.starttime
            ):
                raise WgnsError(f"process {self.pid} changed namespace or exited during `up`")
            netns.attach(self.ns, fd)
        finally:
            os.close(fd)

    def undo(self, ctx: Context) -> None:
        path = netns.path_of(self.ns)
        if netns.exists(self.ns) and not _same_ns(path, {"dev": self.dev, "ino": self.ino}):
            return  # the name is someone else's now: not ours to remove
        try:
            netns.delete(self.ns)
        except OSError as e:
            raise WgnsError(f"cannot remove the name {path}: {e.strerror}") from None


def _route_line(r: dict[str, Any]) -> str | None:
    """An `ip route replace` line for R (`ip -j route` output), None for what it cannot be."""
    dst, dev = r.get("dst"), r.get("dev")
    if (
        not isinstance(dst, str)
        or not isinstance(dev, str)
        or r.get("type", "unicast") != "unicast"
    ):
        return None
    words = ["route", "replace", dst]
    if r.get("gateway"):
        words += ["via", str(r["gateway"])]
    words += ["dev", dev]
    for key, word in (("protocol", "proto"), ("scope", "scope"), ("metric", "metric")):
        if r.get(key) is not None:
            words += [word, str(r[key])]
    if r.get("prefsrc"):
        words += ["src", str(r["prefsrc"])]
    if "onlink" in r.get("flags", ()):
        words.append("onlink")
    return " ".join(words)


@dataclass(kw_only=True)
class KeepRoutes(Op):
    """--keep-interfaces: the main table's routes of NS (a container's own) as they were before
    the tunnel's routes replaced some (its default route), put back by undo."""

    beside_background = True  # reads only
    kind = "netns_keep_routes"
    ns: str

    def describe(self) -> str:
        return f"note the routes of {self.ns} (put back at `down`)"

    def _routes(self) -> dict[str, list[dict[str, Any]]]:
        from wgns.system.tools import run

        out = {}
        for family in ("-4", "-6"):
            proc = run(["ip", "-n", self.ns, "-j", family, "route", "show", "table", "main"])
            out[family] = json.loads(proc.stdout or "[]")
        return out

    def prepare(self, ctx: Context) -> None:
        self.result["routes"] = {
            family: [line for r in routes if (line := _route_line(r)) is not None]
            for family, routes in self._routes().items()
        }

    def apply(self, ctx: Context) -> None:
        pass

    def undo(self, ctx: Context) -> None:
        saved: dict[str, list[str]] = self.result.get("routes", {})
        if not saved or not netns.exists(self.ns):
            return
        from wgns.system.tools import run

        now = {
            family: {line for r in routes if (line := _route_line(r)) is not None}
            for family, routes in self._routes().items()
        }
        errors = []
        for family, lines in saved.items():
            for line in lines:
                if line in now.get(family, set()):
                    continue
                proc = run(["ip", "-n", self.ns, family, *line.split()], check=False)
                if proc.returncode != 0:
                    errors.append(f"{line}: {proc.stderr.strip()}")
        if errors:
            raise WgnsError(f"cannot put back the routes of {self.ns}: {'; '.join(errors)}")


@dataclass(frozen=True)
class Placement:
    """The facts `up` plans a container's namespace from (wgns.lifecycle.plan)."""

    ident: Identity
    target: Target
    attach: bool  # the name is made by this `up` (AttachNetns)
    resolv: str | None  # the container's new resolv.conf; None: left alone (see notes)
    inherited: str | None = None  # the original resolv.conf a stale `up` of the name saved

    def attach_ops(self, ns: str) -> list[Op]:
        i = self.ident
        ops: list[Op] = []
        if self.attach:
            ops.append(AttachNetns(ns=ns, pid=i.pid, starttime=i.starttime, dev=i.dev, ino=i.ino))
        if self.target.keep_interfaces:
            ops.append(KeepRoutes(ns=ns))
        return ops

    def dns_ops(self) -> list[Op]:
        if self.resolv is None:
            return []
        from wgns.features.containerdns import ContainerResolvConf

        i = self.ident
        return [
            ContainerResolvConf(
                pid=i.pid, starttime=i.starttime, content=self.resolv, inherited=self.inherited
            )
        ]

    def to_json(self) -> dict[str, Any]:
        """What the record keeps (``extra.container``)."""
        t = self.target
        return {
            **self.ident.to_json(),
            "label": t.label,
            "engine": t.engine,
            "container": t.container,
        }


def placement(
    profile: Profile,
    target: Target,
    resolv: str,
    *,
    inherited: str | None = None,
    replacing: bool = False,
) -> Placement:
    """Validate TARGET for PROFILE (see :func:`validate`) and decide about its DNS: RESOLV goes
    into the container's own resolv.conf, or, where that cannot be done safely, a warning says
    so and which --dns option the engine should be given."""
    from wgns import log
    from wgns.features import containerdns

    ident, attach = validate(profile, target, replacing=replacing)
    why = containerdns.writable(target.pid)
    if why is not None:
        servers = [str(a) for a in profile.dns]
        log.warning(
            "wgns: %s: the container's DNS is left as it is: %s; %s",
            profile.name,
            why,
            containerdns.engine_hint(target.engine, servers),
        )
    return Placement(ident, target, attach, None if why else resolv, inherited)
