"""Ops on namespaces: creating one, and its /etc/netns/NS files."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from wgns.engine.ops.base import Context, Op
from wgns.system import netns


@dataclass(kw_only=True)
class AddNetns(Op):
    beside_background = True  # an empty namespace: nothing in it can carry traffic
    kind = "netns_add"
    ns: str

    def describe(self) -> str:
        return f"ip netns add {self.ns}"

    def apply(self, ctx: Context) -> None:
        netns.add(self.ns)

    def undo(self, ctx: Context) -> None:
        netns.delete(self.ns)


@dataclass(kw_only=True)
class WriteNetnsFiles(Op):
    """/etc/netns/NS/* (resolv.conf, hosts, nsswitch.conf): restores what was there before."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "netns_files"
    ns: str
    files: dict[str, str]

    def describe(self) -> str:
        d = netns.etc_dir_of(self.ns)
        return f"write {', '.join(f'{d}/{n}' for n in self.files)}"

    def prepare(self, ctx: Context) -> None:
        d = netns.etc_dir_of(self.ns)
        self.result["dir_created"] = not os.path.exists(d)
        self.result["etc_netns_created"] = not os.path.exists(netns.NETNS_ETC_DIR)
        prior: dict[str, str | None] = {}
        for name in self.files:
            try:
                with open(f"{d}/{name}") as f:
                    prior[name] = f.read()
            except FileNotFoundError:
                prior[name] = None
        self.result["prior"] = prior

    def apply(self, ctx: Context) -> None:
        d = netns.etc_dir_of(self.ns)
        os.makedirs(d, exist_ok=True)
        for name, content in self.files.items():
            tmp = f"{d}/.{name}.wgns-tmp"
            with open(tmp, "w") as f:
                f.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, f"{d}/{name}")

    def undo(self, ctx: Context) -> None:
        d = netns.etc_dir_of(self.ns)
        prior: dict[str, str | None] = self.result.get("prior", {})
        for name in self.files:
            old = prior.get(name)
            if old is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{d}/{name}")
            else:
                with open(f"{d}/{name}", "w") as f:
                    f.write(old)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{d}/.{name}.wgns-tmp")
        if self.result.get("dir_created", True):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if self.result.get("etc_netns_created", False):
            with contextlib.suppress(OSError):
                os.rmdir(netns.NETNS_ETC_DIR)
