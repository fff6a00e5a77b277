"""WireGuard backends: the kernel module, or wireguard-go owned by wgns, behind one interface.

A backend creates a device (in the birthplace, so that its UDP socket lives there), configures
it (keys never in an argv), reads it, says whether it is alive and removes it. The kernel's
device is created directly in the target namespace, asked for from the birthplace (WireGuard
keeps the namespace of the request for its socket). wireguard-go's TUN is born in the birthplace,
where the daemon runs, and moved into the target (``moves_device``); wgns configures the daemon
over its UAPI socket, /run/wireguard/IFNAME.sock (IFNAME is derived from the namespace and the
label, so sockets never clash).

The backend's name (``kernel`` | ``userspace``) is what the state record and the journal keep;
``get`` turns it back into the object, and nothing else compares the names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from wgns.errors import WgnsError
from wgns.system import links
from wgns.system.processes import (
    Supervised,
    log_path,
    process_alive,
    remove_log,
    stop_process,
)
from wgns.system.tools import run
from wgns.wireguard import dump, uapi
from wgns.wireguard.dump import DeviceState
from wgns.wireguard.setconf import setconf_text

if TYPE_CHECKING:  # the model (ipaddress, dataclasses) is the profile's: `down` needs none of it
    from wgns.profile.model import Backend, Interface

__all__ = ["Kernel", "Userspace", "WireguardBackend", "WireguardGo", "get", "select"]

USERSPACE_BINARY = os.environ.get("WGNS_USERSPACE_IMPLEMENTATION", "wireguard-go")


class WireguardBackend:
    """What every backend provides; the ops and the features go through this, never a name."""

    name = ""
    moves_device = False  # the device is born in the birthplace, then moved into the target
    runs_daemon = False  # a process of wgns's (create's result: its pid and start time) serves it
    link_kind = ""  # the link's kind as `ip -d link` reports it

    def is_supported(self) -> bool:
        raise NotImplementedError

    def unsupported(self) -> WgnsError:
        """The error when this backend is asked for and is not supported here."""
        raise NotImplementedError

    def describe_create(self, ifname: str, birthplace: str | None, target: str) -> str:
        raise NotImplementedError

    def create(
        self,
        ifname: str,
        *,
        birthplace: str | None,
        target: str,
        on_spawn: Callable[[int, int | None], None],
    ) -> Supervised | None:
        """Create IFNAME. A daemon's pid and start time go to ON_SPAWN the moment it exists;
        the returned daemon (None: nothing runs) is ready after its wait_ready()."""
        raise NotImplementedError

    def configured_in(self, ns: str, birthplace: str | None) -> str | None:
        """Where the device is when it is configured, in `up` (NS: its target namespace)."""
        raise NotImplementedError

    def in_use(self, ifname: str, *, birthplace: str | None, target: str) -> str | None:
        """What already holds IFNAME (None: nothing): creating it anyway would take over, and
        a rollback would then remove, something this run did not make."""
        for where in (target, birthplace):
            if links.link_exists(ifname, ns=where):
                return f"a link {ifname} exists in {where or 'the namespace wgns runs in'}"
        return None

    def describe_configure(self, ifname: str) -> str:
        raise NotImplementedError

    def configure(self, ifname: str, iface: Interface, ns: str | None) -> None:
        """Replace IFNAME's keys and peers (the device in NS) by IFACE's."""
        raise NotImplementedError

    def sync(self, ifname: str, iface: Interface, ns: str | None) -> None:
        """Change IFNAME (the device in NS) to IFACE's keys and peers, keeping the sessions of
        the peers that stay (`wg syncconf`, which speaks to both backends' devices)."""
        run(["wg", "syncconf", ifname, "/dev/stdin"], input=setconf_text(iface), ns=ns)

    def read(self, ifname: str, ns: str | None) -> DeviceState | None:
        """IFNAME's state (the device in NS), None when it is gone."""
        return dump.show(ifname, ns=ns)

    def alive(self, result: Mapping[str, Any]) -> bool:
        """Whether what was created (RESULT: what create learnt) still works by itself."""
        return True

    def remove(
        self,
        ifname: str,
        *,
        birthplace: str | None,
        target: str,
        result: Mapping[str, Any],
        doomed: frozenset[str] = frozenset(),
    ) -> None:
        """Remove IFNAME wherever it is; tolerate "never created" and "already gone". DOOMED
        namespaces are deleted later in the same teardown: what is only in them goes too."""
        errors = []
        for where in (target, birthplace):
            if where is not None and where in doomed:
                continue  # destroyed with its namespace, which nothing else holds
            try:
                if links.link_exists(ifname, ns=where):
                    links.delete_link(ifname, ns=where)
            except WgnsError as e:
                errors.append(str(e))
        if errors:
            raise WgnsError("; ".join(errors))


def _kernel_module_available() -> bool:
    """Loaded, built in, or loadable (the kernel autoloads it on `ip link add ... wireguard`).
    Read from /sys and modules.dep rather than by running `modprobe -n`."""
    if os.path.exists("/sys/module/wireguard"):
        return True
    moddir = f"/lib/modules/{os.uname().release}"
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(f"{moddir}/{index}") as f:
                for line in f:
                    path = line.split(":", 1)[0]
                    if path.endswith(("/wireguard.ko", "/wireguard.ko.xz", "/wireguard.ko.zst")):
                        return True
        except OSError:
            continue
    return False


class Kernel(WireguardBackend):
    name = "kernel"
    moves_device = False
    link_kind = "wireguard"

    def is_supported(self) -> bool:
        return _kernel_module_available()

    def unsupported(self) -> WgnsError:
        return WgnsError(
            "the kernel has no WireGuard module",
            hint="use --backend userspace (wireguard-go) or load the wireguard module",
        )

    def describe_create(self, ifname: str, birthplace: str | None, target: str) -> str:
        where = f" in {birthplace}" if birthplace else ""
        return f"ip link add {ifname} netns {target} type wireguard{where}"

    def create(
        self,
        ifname: str,
        *,
        birthplace: str | None,
        target: str,
        on_spawn: Callable[[int, int | None], None],
    ) -> Supervised | None:
        # Born in the target namespace, but asked for from the birthplace: the same birthplace
        # semantics as add-then-move, without the move's RCU grace periods.
        with links.connect(birthplace) as nl:
            try:
                nl.add_link(ifname, "wireguard", ns=target)
            except OSError as e:
                raise WgnsError(links.reason(e)) from None
        return None

    def configured_in(self, ns: str, birthplace: str | None) -> str | None:
        return ns

    def describe_configure(self, ifname: str) -> str:
        return f"wg setconf {ifname}"

    def configure(self, ifname: str, iface: Interface, ns: str | None) -> None:
        run(["wg", "setconf", ifname, "/dev/stdin"], input=setconf_text(iface), ns=ns)


class WireguardGo(Supervised):
    """wireguard-go in the foreground (``-f``) for one device; ready when its UAPI socket
    answers."""

    def __init__(self, ifname: str) -> None:
        super().__init__()
        self.ifname = ifname
        self.name = f"{USERSPACE_BINARY} for {ifname}"

    def is_supported(self) -> bool:
        return shutil.which(USERSPACE_BINARY) is not None

    def argv(self) -> list[str]:
        return [USERSPACE_BINARY, "-f", self.ifname]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        env.setdefault("LOG_LEVEL", "error")
        env.pop("WG_TUN_FD", None)
        env.pop("WG_UAPI_FD", None)
        return env

    def ready(self) -> bool:
        return uapi.listening(uapi.uapi_socket(self.ifname))


class Userspace(WireguardBackend):
    name = "userspace"
    moves_device = True
    runs_daemon = True
    link_kind = "tun"

    def is_supported(self) -> bool:
        return shutil.which(USERSPACE_BINARY) is not None

    def unsupported(self) -> WgnsError:
        return WgnsError(f"{USERSPACE_BINARY} is not installed", hint="apt install wireguard-go")

    def describe_create(self, ifname: str, birthplace: str | None, target: str) -> str:
        where = f" in {birthplace}" if birthplace else ""
        return f"{USERSPACE_BINARY} -f {ifname}{where}"

    def create(
        self,
        ifname: str,
        *,
        birthplace: str | None,
        target: str,
        on_spawn: Callable[[int, int | None], None],
    ) -> Supervised | None:
        # The daemon outlives wgns by design, in its own session; whoever inherits it reaps it
        daemon = WireguardGo(ifname)
        pid, starttime = daemon.start(birthplace, log_path(target, ifname))
        on_spawn(pid, starttime)
        return daemon

    def configured_in(self, ns: str, birthplace: str | None) -> str | None:
        return birthplace  # before the move; the UAPI socket is a file, found from anywhere

    def describe_configure(self, ifname: str) -> str:
        return f"uapi set {ifname}"

    def configure(self, ifname: str, iface: Interface, ns: str | None) -> None:
        uapi.set_config(ifname, iface)

    def in_use(self, ifname: str, *, birthplace: str | None, target: str) -> str | None:
        if uapi.listening(uapi.uapi_socket(ifname)):
            return f"a wireguard-go serves {uapi.uapi_socket(ifname)}"
        return super().in_use(ifname, birthplace=birthplace, target=target)

    def alive(self, result: Mapping[str, Any]) -> bool:
        pid = int(result.get("pid", 0))
        return pid > 0 and process_alive(pid, result.get("starttime"))

    def remove(
        self,
        ifname: str,
        *,
        birthplace: str | None,
        target: str,
        result: Mapping[str, Any],
        doomed: frozenset[str] = frozenset(),
    ) -> None:
        pid = int(result.get("pid", 0))
        if pid:
            # The daemon closes its TUN on the way out, which removes the interface; that
            # unregistering costs the kernel ~20 ms of RCU grace periods. When the TUN sits in a
            # namespace this teardown deletes, nothing can use it any more once the daemon is
            # SIGKILLed, and the kernel finishes both in the background: `down` need not wait.
            # (Still in the birthplace, after a crash mid-`up`: wait, so that the name is free.)
            gone_with_ns = target in doomed and not links.link_exists(ifname, ns=birthplace)
            stop_process(pid, result.get("starttime"), wait=not gone_with_ns)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uapi.uapi_socket(ifname))
        if result.get("run_dir_created", False):
            with contextlib.suppress(OSError):
                os.rmdir(uapi.WIREGUARD_RUN_DIR)
        remove_log(log_path(target, ifname))
        super().remove(ifname, birthplace=birthplace, target=target, result=result, doomed=doomed)


_BACKENDS: dict[str, WireguardBackend] = {b.name: b for b in (Kernel(), Userspace())}
NAMES = tuple(_BACKENDS)  # in the order auto selection tries them


def get(name: str) -> WireguardBackend:
    """The backend a state record or journal names."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise WgnsError(f"unknown WireGuard backend {name!r}") from None


AUTO = "auto"  # Backend.AUTO's value: try each backend in turn


def select(requested: Backend) -> WireguardBackend:
    """The backend to use for REQUESTED (auto: the kernel's, else wireguard-go); a WgnsError
    when the requested one, or any, is missing."""
    if requested.value != AUTO:
        chosen = get(requested.value)
        if not chosen.is_supported():
            raise chosen.unsupported()
        return chosen
    for backend in _BACKENDS.values():
        if backend.is_supported():
            return backend
    raise WgnsError(
        "no WireGuard backend: no kernel module and no wireguard-go",
        hint="apt install wireguard-go, or a kernel with CONFIG_WIREGUARD",
    )
