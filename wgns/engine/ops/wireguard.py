"""Ops on WireGuard devices: creating one (in its birthplace) and configuring it, through the
backend object the journaled name stands for (wgns.wireguard.backends)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system.processes import Supervised
from wgns.wireguard import backends
from wgns.wireguard.uapi import WIREGUARD_RUN_DIR

if TYPE_CHECKING:  # the profile model is `up`'s: `down` reads journals without it
    from wgns.profile.model import Interface


@dataclass(kw_only=True)
class CreateWireguard(Op):
    """The wg interface, created in the birthplace so its UDP socket lives there."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_create"
    ifname: str
    backend: str  # a backend's name: wgns.wireguard.backends.get(backend)
    birthplace: str | None
    target: str
    _daemon: Supervised | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        return backends.get(self.backend).describe_create(self.ifname, self.birthplace, self.target)

    def prepare(self, ctx: Context) -> None:
        # Refused before it is journaled: undoing it would remove what holds the name, which
        # this run did not make (a record deleted by hand, a device made by someone else)
        holder = backends.get(self.backend).in_use(
            self.ifname, birthplace=self.birthplace, target=self.target
        )
        if holder is not None:
            raise WgnsError(
                f"cannot create {self.ifname}: {holder}, and this run did not make it",
                hint=f"if it is left over from wgns, remove it by hand (`ip link del {self.ifname}`"
                f" in that namespace) or stop its daemon, then run `wgns up` again",
            )
        # Remove /run/wireguard on undo only if this op made it: an rmdir also detaches a
        # mount on it in other mount namespaces (Linux >= 3.18), e.g. another daemon's private one
        self.result["run_dir_created"] = not os.path.exists(WIREGUARD_RUN_DIR)

    def apply(self, ctx: Context) -> None:
        def note(pid: int, starttime: int | None) -> None:
            self.result["pid"] = pid
            self.result["starttime"] = starttime
            ctx.checkpoint()  # journaled before it can be lost: `down` finds the daemon

        # a daemon starts beside the next ops; finish() waits until it is ready
        self._daemon = backends.get(self.backend).create(
            self.ifname, birthplace=self.birthplace, target=self.target, on_spawn=note
        )

    def finish(self, ctx: Context) -> None:
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            daemon.wait_ready()

    def undo(self, ctx: Context) -> None:
        backends.get(self.backend).remove(
            self.ifname,
            birthplace=self.birthplace,
            target=self.target,
            result=self.result,
            doomed=ctx.doomed,
        )


@dataclass(kw_only=True)
class ConfigureWireguard(Op):
    """Keys and peers, never through argv (the backend's configure). ``config`` (the resolved
    interface, keys included) is given by the planner and never journaled."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_config"
    ifname: str
    ns: str | None  # where the device is when configured
    backend: str = "kernel"
    peers: int = 0
    config: Interface | None = field(default=None, repr=False, metadata={"journal": False})

    def describe(self) -> str:
        how = backends.get(self.backend).describe_configure(self.ifname)
        return f"{how} ({self.peers} peer(s), keys not shown)"

    def apply(self, ctx: Context) -> None:
        if self.config is None:
            raise WgnsError(f"configuring {self.ifname} needs its interface (never journaled)")
        backends.get(self.backend).configure(self.ifname, self.config, self.ns)
