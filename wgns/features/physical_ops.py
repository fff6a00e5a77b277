"""Physical mode's ops (wgns.lifecycle.physical plans them): the interfaces moving into the
physical namespace and back with their state, the tunnel moving into the main namespace, its
addresses there, and the main namespace's resolv.conf.

"Main" is the namespace wgns runs in. A link is moved back there by the pid of the wgns doing
the undo (`ip -n physical link set IF netns PID`), which is in it: nothing needs a name for it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from wgns.engine.ops.base import Context, Op
from wgns.engine.ops.link import configure_link, ip_batch, link_lines
from wgns.errors import WgnsError
from wgns.features import physical_links
from wgns.system import fsutil, links, netns
from wgns.system.tools import run


def _home() -> str:
    """Where `ip ... netns X` finds the namespace this process runs in."""
    return str(os.getpid())


@dataclass(kw_only=True)
class MovePhysicalLink(Op):
    """An ethernet-like link moved into NS; its state (snapshot, taken before) given back when
    it is moved home."""

    kind = "physical_link"
    ifname: str
    ns: str
    # taken by the planner before the first op (before a daemon deconfigures the link)
    snapshot: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"ip link set {self.ifname} netns {self.ns} (state kept to give back)"

    def prepare(self, ctx: Context) -> None:
        if not self.snapshot:
            self.snapshot = physical_links.snapshot(self.ifname)

    def apply(self, ctx: Context) -> None:
        with links.connect(None) as nl:
            try:
                nl.move_link(self.ifname, self.ns)
            except OSError as e:
                raise WgnsError(
                    f"cannot move {self.ifname} into {self.ns}: {links.reason(e)}"
                ) from None
        self.result["moved"] = True

    def undo(self, ctx: Context) -> None:
        # Moved (or killed between the kernel's move and the checkpoint): it is in NS. Still
        # here and never moved: nothing to give back.
        if netns.exists(self.ns) and links.link_exists(self.ifname, ns=self.ns):
            ip_batch([f"link set dev {self.ifname} netns {_home()}"], ns=self.ns)
            self.result["moved"] = True
            ctx.checkpoint()
        if not links.link_exists(self.ifname, ns=None):
            raise WgnsError(f"{self.ifname} is neither in {self.ns} nor here: where did it go?")
        snap = self.snapshot
        if snap and self.result.get("moved") and not self.result.get("restored"):
            physical_links.restore(self.ifname, snap)
            self.result["restored"] = True
            ctx.checkpoint()


@dataclass(kw_only=True)
class MovePhy(Op):
    """A wireless phy moved into NS over nl80211 (`iw phy PHY set netns name NS`): all of its
    netdevs go with it; their states are given back when it comes home."""

    kind = "physical_phy"
    phy: str
    ns: str
    netdevs: list[str]
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        return f"iw phy {self.phy} set netns name {self.ns} ({', '.join(self.netdevs)})"

    def prepare(self, ctx: Context) -> None:
        if not self.snapshots:
            self.snapshots = {d: physical_links.snapshot(d) for d in self.netdevs}
        index = physical_links.phy_index(self.phy)
        if index is not None:
            self.result["index"] = index

    def back_argv(self) -> list[str]:
        """The `iw` command (run inside NS) moving the phy home. By its index (`phy#N`), which
        a move keeps: iw finds a phy's *name* in /sys/class/ieee80211, which shows the phys of
        the namespace that mounted /sys (the main one's, for wgns), not those of NS."""
        index = self.result.get("index")
        target = [f"phy#{int(index)}"] if index is not None else ["phy", self.phy]
        return ["iw", *target, "set", "netns", _home()]

    def apply(self, ctx: Context) -> None:
        run(["iw", "phy", self.phy, "set", "netns", "name", self.ns])
        self.result["moved"] = True

    def undo(self, ctx: Context) -> None:
        if netns.exists(self.ns):  # asked from inside NS: fails harmlessly if it is not there
            back = run(self.back_argv(), ns=self.ns, check=False)
            if back.returncode == 0:
                self.result["moved"] = True
                ctx.checkpoint()
            elif any(links.link_exists(d, ns=self.ns) for d in self.netdevs):
                # still inside: its daemons must not be started here (they would wait for it)
                raise WgnsError(
                    f"cannot move {self.phy} back from {self.ns}: "
                    f"{(back.stderr or back.stdout).strip() or f'iw exited {back.returncode}'}",
                    hint=f"`ip netns exec {self.ns} iw phy {self.phy} set netns 1`, then "
                    "`wgns physical down` again",
                )
        if not self.result.get("moved") or self.result.get("restored"):
            return  # never moved: nothing to give back
        errors = []
        for dev, snap in self.snapshots.items():
            if links.link_exists(dev, ns=None):
                try:
                    physical_links.restore(dev, snap)
                except WgnsError as e:
                    errors.append(str(e))
        if errors:
            raise WgnsError("; ".join(errors))
        self.result["restored"] = True
        ctx.checkpoint()


@dataclass(kw_only=True)
class MoveTunnelHome(Op):
    """The WireGuard device, born in SOURCE (its UDP socket stays there), moved into the main
    namespace; back into SOURCE on undo, where its creation's undo removes it."""

    kind = "physical_tunnel_move"
    ifname: str
    source: str

    def describe(self) -> str:
        return f"ip -n {self.source} link set {self.ifname} netns <main>"

    def apply(self, ctx: Context) -> None:
        ip_batch([f"link set dev {self.ifname} netns {_home()}"], ns=self.source)

    def undo(self, ctx: Context) -> None:
        if links.link_exists(self.ifname, ns=None) and netns.exists(self.source):
            with links.connect(None) as nl:
                try:
                    nl.move_link(self.ifname, self.source)
                except OSError as e:
                    raise WgnsError(f"cannot move {self.ifname} back: {links.reason(e)}") from None


@dataclass(kw_only=True)
class ConfigureMainLink(Op):
    """The tunnel's addresses, MTU, link up and routes in the main namespace (ConfigureLink's
    work, where the namespace is the one wgns runs in). Undone with the device."""

    kind = "physical_tunnel_config"
    ifname: str
    addresses: list[str]
    mtu: int
    routes: list[list[Any]]

    def describe(self) -> str:
        lines = link_lines(self.ifname, self.addresses, self.mtu, self.routes)
        return "; ".join(f"ip {line}" for line in lines)

    def apply(self, ctx: Context) -> None:
        configure_link(None, self.ifname, self.addresses, self.mtu, self.routes)


RESOLV_CONF = "/etc/resolv.conf"


def _write_in_place(path: str, content: str) -> None:
    """Rewrite PATH's own inode: a rename onto it would detach the bind mounts made on it in
    other mount namespaces (those of the daemons and programs in the physical namespace's
    view, Linux >= 3.18), and their writes would then reach this file."""
    with open(path, "r+") as f:
        f.write(content)
        f.truncate()


@dataclass(kw_only=True)
class ReplaceResolvConf(Op):
    """The main namespace's /etc/resolv.conf replaced by the tunnel's; what was there (a file,
    or a symlink such as systemd-resolved's stub) put back on undo."""

    beside_background = True
    kind = "physical_resolv_conf"
    content: str
    path: str = RESOLV_CONF

    def describe(self) -> str:
        return f"write {self.path} (the tunnel's DNS; the old one kept to give back)"

    def prepare(self, ctx: Context) -> None:
        try:
            self.result["link"] = os.readlink(self.path)
        except FileNotFoundError:
            self.result["absent"] = True
        except OSError:  # a regular file
            with open(self.path) as f:
                self.result["content"] = f.read()
            self.result["mode"] = os.stat(self.path).st_mode & 0o7777

    def apply(self, ctx: Context) -> None:
        if "content" in self.result:
            _write_in_place(self.path, self.content)
        else:  # a symlink (or nothing): replaced by a file
            fsutil.write_atomically(self.path, self.content, mode=0o644)

    def undo(self, ctx: Context) -> None:
        r = self.result
        if "link" in r:
            tmp = f"{self.path}.wgns-tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(r["link"], tmp)
            os.replace(tmp, self.path)
        elif "content" in r:
            _write_in_place(self.path, r["content"])
        elif r.get("absent"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
