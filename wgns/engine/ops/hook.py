"""A PreUp/PostUp (and, at `down`, PreDown/PostDown) hook: `sh -c`, %i replaced as wg-quick does."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError


@dataclass(kw_only=True)
class RunHook(Op):
    kind = "hook"
    when: str
    command: str
    ns: str | None
    ifname: str

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"{self.when}{where}: {self.command.replace('%i', self.ifname)}"

    def apply(self, ctx: Context) -> None:
        cmd = self.command.replace("%i", self.ifname)
        if self.ns is None:  # where wgns runs: the host's view, as wg-quick's hooks have it
            returncode = subprocess.run(["sh", "-c", cmd]).returncode
        else:  # NS's /etc/netns files and no host name service: DNS in a hook cannot leak
            from wgns.system import execview

            returncode = int(
                execview.call_in_view(
                    self.ns, lambda: str(subprocess.run(["sh", "-c", cmd]).returncode)
                )
            )
        if returncode != 0:
            raise WgnsError(f"{self.when} hook failed with status {returncode}: {cmd}")
