"""Ops on WireGuard devices: creating one (in its birthplace) and configuring it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from wgns.engine.ops.base import Context, Op
from wgns.engine.ops.link import del_link, link_exists, open_netlink
from wgns.errors import WgnsError
from wgns.profile.model import Interface
from wgns.system.processes import stop_process
from wgns.system.tools import run
from wgns.wireguard import backends
from wgns.wireguard.uapi import WIREGUARD_RUN_DIR, uapi_socket


@dataclass(kw_only=True)
class CreateWireguard(Op):
    """The wg interface, created in the birthplace so its UDP socket lives there."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_create"
    ifname: str
    backend: str  # a backend's name (wgns.wireguard.backends)
    birthplace: str | None
    target: str
    _starting: backends.Starting | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        where = f" in {self.birthplace}" if self.birthplace else ""
        if self.backend == "kernel":
            return f"ip link add {self.ifname} netns {self.target} type wireguard{where}"
        return f"wireguard-go -f {self.ifname}{where}"

    def prepare(self, ctx: Context) -> None:
        # Remove /run/wireguard on undo only if this op made it: an rmdir also detaches a
        # mount on it in other mount namespaces (Linux >= 3.18), e.g. another daemon's private one
        self.result["run_dir_created"] = not os.path.exists(WIREGUARD_RUN_DIR)

    def apply(self, ctx: Context) -> None:
        if self.backend == "kernel":
            # Born in the target namespace, but asked for from the birthplace: WireGuard keeps
            # the namespace of the request (its creating_net) for its UDP socket. The same
            # birthplace semantics as add-then-move, without the move's RCU grace periods.
            with open_netlink(self.birthplace) as nl:
                try:
                    nl.add_link(self.ifname, "wireguard", ns=self.target)
                except OSError as e:
                    raise WgnsError(str(e.strerror or e)) from None
        else:  # the executor goes on while the daemon starts; finish() waits for it

            def note(pid: int, starttime: int | None) -> None:
                self.result["pid"] = pid
                self.result["starttime"] = starttime
                ctx.checkpoint()

            self._starting = backends.start_userspace(self.ifname, self.birthplace, on_spawn=note)

    def finish(self, ctx: Context) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.wait()

    def undo(self, ctx: Context) -> None:
        if self.backend == "userspace":
            pid = int(self.result.get("pid", 0))
            if pid:
                # The daemon closes its TUN on the way out, which removes the interface; that
                # unregistering costs the kernel ~20 ms of RCU grace periods. When the TUN sits
                # in a namespace this teardown deletes, nothing can use it any more once the
                # daemon is SIGKILLed, and the kernel finishes both in the background: `down`
                # need not wait. (Still in the birthplace, after a crash mid-`up`: wait, so
                # that the name is free when this returns.)
                doomed = self.target in ctx.doomed and not link_exists(
                    self.ifname, ns=self.birthplace
                )
                stop_process(pid, self.result.get("starttime"), wait=not doomed)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uapi_socket(self.ifname))
            if self.result.get("run_dir_created", False):
                with contextlib.suppress(OSError):
                    os.rmdir(WIREGUARD_RUN_DIR)
        errors = []
        for where in (self.target, self.birthplace):
            if where is not None and where in ctx.doomed:
                continue  # destroyed with its namespace, which nothing else holds
            try:
                if link_exists(self.ifname, ns=where):
                    del_link(self.ifname, ns=where)
            except WgnsError as e:
                errors.append(str(e))
        if errors:
            raise WgnsError("; ".join(errors))


@dataclass(kw_only=True)
class ConfigureWireguard(Op):
    """Keys and peers, never through argv: the UAPI socket for wireguard-go, `wg setconf` with
    the config on stdin for the kernel. ``config`` (the resolved interface, keys included) is
    given by the planner and never journaled."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_config"
    ifname: str
    ns: str | None  # where the device is when configured
    backend: str = "kernel"
    peers: int = 0
    config: Interface | None = field(default=None, repr=False, metadata={"journal": False})

    def describe(self) -> str:
        how = "uapi set" if self.backend == "userspace" else "wg setconf"
        return f"{how} {self.ifname} ({self.peers} peer(s), keys not shown)"

    def apply(self, ctx: Context) -> None:
        if self.config is None:
            raise WgnsError(f"configuring {self.ifname} needs its interface (never journaled)")
        if self.backend == "userspace":
            from wgns.wireguard import wg

            wg.uapi_set(uapi_socket(self.ifname), self.config)
            return
        from wgns.profile import config

        run(
            ["wg", "setconf", self.ifname, "/dev/stdin"],
            input=config.wg_setconf_text(self.config),
            ns=self.ns,
        )
