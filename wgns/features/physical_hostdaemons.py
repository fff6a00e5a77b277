"""The network daemons already running in the main namespace that physical mode relocates:
DHCP clients (dhcpcd, dhclient) and, when a wireless phy moves, wpa_supplicant or iwd.

A daemon run by a systemd unit is stopped as a unit and its unit started inside the physical
namespace (wgns.features.physical_units). One that is not (started from a shell, a script, an
init system's rc file) is stopped here before its interfaces move, started again *inside* by
wgns with the same command line in the foreground and supervised there
(wgns.features.physical_daemons.StartNetDaemon), and started again here, as it was, at `down`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.features.physical_daemons import StartNetDaemon
from wgns.features.physical_units import SYSTEMD_RUNNING, ConfineUnit, StopUnit, unit_of
from wgns.system.processes import proc_starttime, proc_text, process_alive, stop_process

DHCP_CLIENTS = ("dhcpcd", "dhclient")
WIRELESS = ("wpa_supplicant", "iwd")


@dataclass(frozen=True)
class HostDaemon:
    """A network daemon running in the main namespace: by a systemd unit (UNIT) or not; CWD is
    its working directory (a relative path in its command line means the same there)."""

    name: str
    pid: int
    starttime: int | None
    argv: tuple[str, ...]
    unit: str | None = None
    cwd: str = "/"

    @property
    def is_wireless(self) -> bool:
        return self.name in WIRELESS

    def stop_op(self) -> Op:
        """Stops it before its interfaces move (started again, here, once they are back)."""
        if self.unit is not None:
            return StopUnit(unit=self.unit)
        return StopHostDaemon(
            name=self.name, pid=self.pid, starttime=self.starttime, argv=list(self.argv),
            cwd=self.cwd,
        )  # fmt: skip

    def confine_op(self, ns: str, moved: list[str]) -> Op:
        """What runs it inside NS once the interfaces MOVED are there: its unit started there,
        or (not a unit) the same command line, in the foreground, supervised by wgns."""
        if self.unit is not None:
            return ConfineUnit(unit=self.unit, ns=ns)
        return StartNetDaemon(
            daemon=self.name, ns=ns, ifnames=list(moved), argv=list(self.argv), cwd=self.cwd
        )


def command_line(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command that starts a daemon like the one whose /proc cmdline is ARGV again.

    dhcpcd (privilege separation) rewrites its manager's title to "dhcpcd: eth0 [ip4]" or
    "dhcpcd: [manager] [ip4] [ip6]": its interfaces and address families are read back from
    that; the other options are its configuration file's (/etc/dhcpcd.conf)."""
    if len(argv) != 1 or not argv[0].startswith("dhcpcd:"):
        return argv
    words = argv[0].split()[1:]
    families = {w for w in words if w in ("[ip4]", "[ip6]")}
    ifnames = [w for w in words if not w.startswith("[")]
    out = ["dhcpcd"]
    if families == {"[ip4]"}:
        out.append("--ipv4only")
    elif families == {"[ip6]"}:
        out.append("--ipv6only")
    return (*out, *ifnames)


def is_helper(argv: tuple[str, ...]) -> bool:
    """A dhcpcd helper titled "dhcpcd: [launcher]", "[privileged proxy] ..." (the manager is
    "dhcpcd: IF [ip4]" or "dhcpcd: [manager] ...")."""
    title = argv[0]
    return title.startswith("dhcpcd: [") and not title.startswith("dhcpcd: [manager]")


def _cwd_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "/"


def running(names: tuple[str, ...]) -> list[HostDaemon]:
    """The processes named NAMES in this network namespace (the first of a family: not the
    helpers a daemon forks, whose parent has the same name)."""
    here = os.stat("/proc/self/ns/net").st_ino
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        comm = proc_text(f"/proc/{pid}/comm").strip()
        if comm not in names:
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != here:
                continue
        except OSError:
            continue
        stat = proc_text(f"/proc/{pid}/stat")
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1]) if ")" in stat else 0
        if proc_text(f"/proc/{ppid}/comm").strip() == comm:
            continue
        raw = tuple(a for a in proc_text(f"/proc/{pid}/cmdline").split("\0") if a)
        if not raw or is_helper(raw):
            continue
        argv = command_line(raw)
        unit = unit_of(pid)
        found.append(HostDaemon(comm, pid, proc_starttime(pid), argv, unit, _cwd_of(pid)))
    return sorted(found, key=lambda d: d.pid)


def host_daemons(moving_phys: bool) -> list[HostDaemon]:
    """The network daemons of the main namespace that physical `up` relocates: its DHCP
    clients, and (when a wireless phy moves) wpa_supplicant/iwd; units or not."""
    return running(DHCP_CLIENTS + (WIRELESS if moving_phys else ()))


def start_detached(argv: list[str], cwd: str) -> int:
    """Start ARGV (a daemon's own command line, which may fork into the background) in a
    session of its own; under systemd in a transient scope of its own (systemd-run --scope),
    so that it does not belong to the caller's unit: stopping wgns-physical@.service (whose
    `down` starts it here again) would kill it with the rest of that unit's processes."""
    if os.path.isdir(SYSTEMD_RUNNING) and unit_of(os.getpid()) is not None:
        name = os.path.basename(argv[0])
        argv = [
            "systemd-run", "--scope", "--quiet", "--collect",
            f"--description={name} started again by wgns physical down", "--", *argv,
        ]  # fmt: skip
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd if os.path.isdir(cwd) else "/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        raise WgnsError(f"cannot start {argv[0]}: {e.strerror}") from None
    return proc.pid


@dataclass(kw_only=True)
class StopHostDaemon(Op):
    """A network daemon of the main namespace not run by systemd: stopped before its links
    move, started again (the same command line, in the main namespace) when they are back."""

    kind = "physical_host_daemon"
    name: str
    pid: int
    starttime: int | None
    argv: list[str]
    cwd: str = "/"

    def describe(self) -> str:
        return (
            f"stop {self.name} (pid {self.pid}); started again as `{' '.join(self.argv)}` at down"
        )

    def apply(self, ctx: Context) -> None:
        stop_process(self.pid, self.starttime, grace=5.0)

    def undo(self, ctx: Context) -> None:
        if process_alive(self.pid, self.starttime) or self.result.get("restarted"):
            return  # never stopped (killed before), or already started again
        try:
            self.result["restarted"] = start_detached(self.argv, self.cwd)
        except WgnsError as e:
            raise WgnsError(f"cannot start {self.name} again: {e.message}") from None
        ctx.checkpoint()
