"""The ops the lifecycle adds to the core ones: down hooks as journal data, and the changes of
`up --reload` (a link reconfigured, peers synced, the kill switch replaced).

Each is journaled and undone like any other op (wgns.engine.ops.base); their kinds are named in
KIND_MODULES so that `down` can read a journal that holds them.

PreDown/PostDown: `up` journals one :class:`DownHook` per command of the profile, so `down` runs
exactly what the profile said when it was brought up (or last reloaded), and a failing hook is
the error of one op, not of the whole teardown. Its apply does nothing; its undo runs the
command (`down` undoes the PreDown ones first, then the rest, then the PostDown ones:
wg-quick's order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wgns import log
from wgns.engine.ops import Context, NftTable, Op, RunHook, ip_batch
from wgns.errors import WgnsError
from wgns.system import netns
from wgns.system.links import link_exists
from wgns.system.tools import run

if TYPE_CHECKING:  # the profile model is `up`'s: `down` reads journals without it
    from wgns.profile.model import Interface


@dataclass(kw_only=True)
class DownHook(Op):
    kind = "down_hook"  # wgns.lifecycle.down.DOWN_HOOK (down imports no ops)
    when: str  # HookWhen.PRE_DOWN or POST_DOWN's value (down.PRE_DOWN, down.POST_DOWN)
    command: str
    ns: str | None  # where it runs (None: where wgns runs)
    ifname: str

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"at down, {self.when}{where}: {self.command.replace('%i', self.ifname)}"

    def apply(self, ctx: Context) -> None:
        """Nothing now: the hook runs at `down` (see undo)."""

    def undo(self, ctx: Context) -> None:
        if self.ns is not None and not netns.exists(self.ns):
            log.warning(
                "wgns: %s hook skipped, namespace %s is gone: %s", self.when, self.ns, self.command
            )
            return
        RunHook(when=self.when, command=self.command, ns=self.ns, ifname=self.ifname).apply(ctx)


def _route_line(verb: str, route: list[Any], ifname: str) -> str:
    prefix, table = route
    return f"route {verb} {prefix} dev {ifname}" + (f" table {table}" if table is not None else "")


@dataclass(kw_only=True)
class ReconfigureLink(Op):
    """A wg interface's addresses, MTU and routes changed from BEFORE to AFTER (each a dict with
    "addresses", "mtu", "routes" as ConfigureLink has them); undo puts BEFORE back."""

    kind = "link_reconfig"
    ns: str
    ifname: str
    before: dict[str, Any]
    after: dict[str, Any]

    def lines(self, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """`ip` lines taking the link from OLD to NEW: what goes first, so that nothing of OLD
        outlives the change (a narrowed AllowedIPs' default route), then what comes."""
        gone_routes = [r for r in old["routes"] if r not in new["routes"]]
        new_routes = [r for r in new["routes"] if r not in old["routes"]]
        out = [_route_line("del", r, self.ifname) for r in gone_routes]
        out += [
            f"address del {a} dev {self.ifname}"
            for a in old["addresses"]
            if a not in new["addresses"]
        ]
        out += [
            f"address add {a} dev {self.ifname}"
            for a in new["addresses"]
            if a not in old["addresses"]
        ]
        if old["mtu"] != new["mtu"]:
            out.append(f"link set dev {self.ifname} mtu {new['mtu']}")
        out += [_route_line("replace", r, self.ifname) for r in new_routes]
        return out

    def describe(self) -> str:
        return "; ".join(f"ip -n {self.ns} {line}" for line in self.lines(self.before, self.after))

    def apply(self, ctx: Context) -> None:
        ip_batch(self.lines(self.before, self.after), ns=self.ns)

    def undo(self, ctx: Context) -> None:
        if self.ns in ctx.doomed or not link_exists(self.ifname, ns=self.ns):
            return  # the link's addresses and routes went with it
        # best effort back to BEFORE: a line may fail if APPLY stopped half way, so one by one
        for line in self.lines(self.after, self.before):
            run(["ip", "-n", self.ns, *line.split()], check=False)


@dataclass(kw_only=True)
class SyncWireguard(Op):
    """Keys and peers of a running device replaced by the profile's, keeping the sessions of
    the peers that stay (the backend's sync: `wg syncconf`, the config on stdin). ``config`` is
    never journaled; undo cannot restore old keys (never recorded) and does nothing: the device
    goes at `down`."""

    kind = "wg_sync"
    ifname: str
    ns: str  # where the device is
    backend: str = "kernel"  # a backend's name (wgns.wireguard.backends)
    peers: int = 0
    config: Interface | None = field(default=None, repr=False, metadata={"journal": False})

    def describe(self) -> str:
        return f"wg syncconf {self.ifname} ({self.peers} peer(s), keys not shown)"

    def apply(self, ctx: Context) -> None:
        from wgns.wireguard import backends

        if self.config is None:
            raise WgnsError(f"syncing {self.ifname} needs its interface (never journaled)")
        try:
            backends.get(self.backend).sync(self.ifname, self.config, self.ns)
        except WgnsError as e:
            raise WgnsError(
                f"cannot apply the peers and keys to {self.ifname}: {e.message}",
                hint=f"`wgns status {ctx.ns}`; `wgns up` repairs a broken tunnel",
            ) from None


@dataclass(kw_only=True)
class ReplaceNftTable(NftTable):
    """The kill switch table replaced atomically by RULESET (which deletes the old table first);
    undo loads PREVIOUS back the same way, so that a failed reload leaves the old kill switch,
    never none."""

    kind = "nft_replace"
    previous: str

    def undo(self, ctx: Context) -> None:
        if self.ns is not None and (self.ns in ctx.doomed or not netns.exists(self.ns)):
            return
        t = f"{self.family} {self.table}"
        replace = f"table {t} {{}}\ndelete table {t}\n"
        run(["nft", "-f", "-"], input=replace + self.previous, ns=self.ns)
