"""The namespace's nft table (the kill switch): created or replaced atomically by one `nft -f`."""

from __future__ import annotations

from dataclasses import dataclass, field

from wgns.engine.ops.base import Context, Op
from wgns.engine.ops.link import gone
from wgns.errors import WgnsError
from wgns.system import netns
from wgns.system.tools import Running, checked, run, start


@dataclass(kw_only=True)
class NftTable(Op):
    beside_background = True  # a table of rules: nothing a packet could use to leave
    kind = "nft_table"
    ns: str | None
    family: str
    table: str
    ruleset: str
    _running: Running | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"nft -f - (table {self.family} {self.table}){where}"

    def apply(self, ctx: Context) -> None:
        # nft runs beside the next steps (in `up`: the TUN's move, the daemon's configuration);
        # the executor waits for it before anything that could let a packet flow.
        self._running = start(["nft", "-f", "-"], input=self.ruleset, ns=self.ns)

    def finish(self, ctx: Context) -> None:
        running, self._running = self._running, None
        if running is not None:
            checked(running.wait())

    def undo(self, ctx: Context) -> None:
        if self.ns is not None and (self.ns in ctx.doomed or not netns.exists(self.ns)):
            return  # a table dies with its namespace; deleting it first costs an RCU grace period
        proc = run(["nft", "delete", "table", self.family, self.table], ns=self.ns, check=False)
        if proc.returncode != 0 and not (
            gone(proc.stderr) or "No such file" in proc.stderr or proc.stderr == ""
        ):
            raise WgnsError(f"cannot delete nft table {self.table}: {proc.stderr.strip()}")
