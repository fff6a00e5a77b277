"""Ops on links: moving one between namespaces, its addresses, MTU, state and routes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import links, netns
from wgns.system.tools import run

# What `ip` says when the thing it was asked to delete is not there
_GONE_MARKERS = (
    "Cannot find device",
    "does not exist",
    "No such file or directory",
    "No such process",
    "Cannot open network namespace",
    "Invalid argument",
)


def gone(stderr: str) -> bool:
    """STDERR of a failed `ip`/`nft` deletion says that there was nothing to delete."""
    return any(m in stderr for m in _GONE_MARKERS)


def ip_batch(lines: Sequence[str], *, ns: str | None = None) -> None:
    """Many iproute2 commands in one process (`ip -b`): one fork instead of one per command."""
    if not lines:
        return
    argv = ["ip", "-n", ns, "-b", "-"] if ns else ["ip", "-b", "-"]
    proc = run(argv, input="\n".join(lines) + "\n", check=False)
    if proc.returncode != 0:
        raise WgnsError(f"ip failed{' in namespace ' + ns if ns else ''}: {proc.stderr.strip()}")


@dataclass(kw_only=True)
class MoveLink(Op):
    # not beside_background: the daemon must be up (see CreateWireguard.finish)
    kind = "link_move"
    ifname: str
    source: str | None
    target: str
    _moving: threading.Thread | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )
    _failed: list[BaseException] = field(
        default_factory=list, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        return f"ip link set {self.ifname} netns {self.target}"

    def apply(self, ctx: Context) -> None:
        # Moving a link costs the kernel an rcu_barrier() (~20 ms on the CI machine) during
        # which the caller only waits: a thread waits instead, while `up` goes on with what
        # cannot carry traffic (configuring the daemon, writing files). finish() joins it.
        nl = links.connect(self.source)

        def move() -> None:
            try:
                nl.move_link(self.ifname, self.target)
            except BaseException as e:  # reported by finish(), in the thread that can act on it
                self._failed.append(e)
            finally:
                nl.close()

        thread = threading.Thread(target=move, name=f"move {self.ifname}", daemon=True)
        try:
            thread.start()
        except BaseException:
            nl.close()
            raise
        self._moving = thread

    def finish(self, ctx: Context) -> None:
        thread, self._moving = self._moving, None
        if thread is None:
            return
        thread.join()
        if self._failed:
            raise WgnsError(links.reason(self._failed.pop(0)))


@dataclass(kw_only=True)
class ConfigureLink(Op):
    """Addresses, MTU, link state and routes of a wg interface inside the namespace: what
    wg-quick does with `ip`, over one netlink socket (wgns.system.rtnl) instead of a process."""

    kind = "link_config"
    ns: str
    ifname: str
    addresses: list[str]
    mtu: int
    routes: list[list[Any]]  # [prefix, table number or None (main)]
    lo_up: bool = False

    def lines(self) -> list[str]:
        """The same change as `ip` command lines (for --debug and the docs)."""
        return link_lines(self.ifname, self.addresses, self.mtu, self.routes, lo_up=self.lo_up)

    def describe(self) -> str:
        return "; ".join(f"ip -n {self.ns} {line}" for line in self.lines())

    def apply(self, ctx: Context) -> None:
        configure_link(
            self.ns, self.ifname, self.addresses, self.mtu, self.routes, lo_up=self.lo_up
        )


def link_lines(
    ifname: str, addresses: list[str], mtu: int, routes: list[list[Any]], *, lo_up: bool = False
) -> list[str]:
    """What :func:`configure_link` does, as `ip` command lines (without `ip -n NS`)."""
    out = ["link set lo up"] if lo_up else []
    out += [f"address add {a} dev {ifname}" for a in addresses]
    out.append(f"link set dev {ifname} mtu {mtu} up")
    for prefix, table in routes:
        out.append(
            f"route replace {prefix} dev {ifname}"
            + (f" table {table}" if table is not None else "")
        )
    return out


def configure_link(
    ns: str | None,
    ifname: str,
    addresses: list[str],
    mtu: int,
    routes: list[list[Any]],
    *,
    lo_up: bool = False,
) -> None:
    """Addresses, MTU, link up and routes ([prefix, table or None]) of IFNAME in namespace NS
    (None: the one wgns runs in), over one netlink socket."""
    # rtnl's errors name the request ("RTNETLINK: add address A dev D: File exists"); the
    # namespace is what they lack
    try:
        with links.connect(ns) as nl:
            if lo_up:
                nl.set_link("lo", up=True)
            for a in addresses:
                nl.add_address(ifname, a)
            nl.set_link(ifname, mtu=mtu, up=True)
            for prefix, table in routes:
                nl.replace_route(prefix, ifname, table=table)
    except OSError as e:
        where = f"in namespace {ns}" if ns is not None else "in the main namespace"
        raise WgnsError(f"{links.reason(e)} ({where})") from None


@dataclass(kw_only=True)
class LinkUp(Op):
    """Bring a link up in a namespace wgns did not create, restoring its old state on undo."""

    kind = "link_up"
    ns: str
    ifname: str

    def describe(self) -> str:
        return f"ip -n {self.ns} link set {self.ifname} up"

    def prepare(self, ctx: Context) -> None:
        proc = run(["ip", "-n", self.ns, "-j", "link", "show", "dev", self.ifname], check=False)
        self.result["was_up"] = '"UP"' in proc.stdout

    def apply(self, ctx: Context) -> None:
        ip_batch([f"link set {self.ifname} up"], ns=self.ns)

    def undo(self, ctx: Context) -> None:
        if self.result.get("was_up", True) or not netns.exists(self.ns):
            return
        # bringing lo up made the kernel add 127.0.0.1/8 and ::1: take them away again
        ip_batch([f"link set {self.ifname} down", f"address flush dev {self.ifname}"], ns=self.ns)
