"""The network daemons of physical mode that wgns starts and supervises itself (those not run
by systemd units): a DHCP client inside the physical namespace, with that namespace's view of
the files (/etc/netns/NS/resolv.conf seen at /etc/resolv.conf), so that what it writes there
never reaches the main namespace's DNS.

The op (:class:`StartNetDaemon`) is journaled with the daemon's pid and start time before the
daemon can be lost; undoing it stops the daemon (which deconfigures its interfaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import execview
from wgns.system.processes import (
    Supervised,
    last_line,
    log_path,
    proc_starttime,
    remove_log,
    stop_process,
)
from wgns.system.tools import run

DHCP_TIMEOUT = 30.0


class InView(Supervised):
    """A daemon started inside namespace NS as `wgns exec NS` would see the system: its
    network, /etc/netns/NS/* at /etc, its own /sys (wgns.system.execview.enter, in the child
    between fork and exec)."""

    install_hint = "apt install dhcpcd-base"

    def child_setup(self, ns: str | None) -> Callable[[], None] | None:
        if ns is None:
            return None
        where = ns

        # preexec_fn: the executor runs no thread of its own at this op (no link move of the
        # core MoveLink in physical mode's plan), so the forked child may enter the view
        def enter() -> None:  # in the child: single-threaded, about to exec
            execview.enter(where)

        return enter


class Dhcpcd(InView):
    """dhcpcd in the foreground on IFNAMES; ready once one of them has an IPv4 address (a
    laptop's unplugged ethernet must not hold up its wifi)."""

    name = "dhcpcd"

    def __init__(self, ifnames: list[str], ns: str, timeout: float = DHCP_TIMEOUT) -> None:
        super().__init__()
        self.ifnames = ifnames
        self.ns = ns
        self.start_timeout = timeout

    def is_supported(self) -> bool:
        return shutil.which("dhcpcd") is not None

    def argv(self) -> list[str]:
        return ["dhcpcd", "--nobackground", "--ipv4only", *self.ifnames]

    def ready(self) -> bool:
        return any(has_ipv4(i, self.ns) for i in self.ifnames)


def has_ipv4(ifname: str, ns: str) -> bool:
    proc = run(["ip", "-j", "-4", "addr", "show", "dev", ifname], ns=ns, check=False)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return False
    return any(a.get("scope") == "global" for d in data for a in d.get("addr_info", []))


DAEMONS = {"dhcpcd": Dhcpcd}


def kill_session(sid: int) -> None:
    """SIGKILL what is left of the session SID, which a daemon started by wgns leads (its
    start_new_session): dhcpcd's privilege-separated helpers outlive a manager that was
    killed (by the OOM killer, by hand), holding the physical namespace alive."""
    import signal

    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read(f"/proc/{entry.name}/stat")
        if ")" not in stat:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # the session id
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@dataclass(kw_only=True)
class StartNetDaemon(Op):
    """A network daemon (DAEMON: a key of DAEMONS) on IFNAMES inside NS, supervised by wgns."""

    kind = "physical_daemon"
    daemon: str
    ns: str
    ifnames: list[str]
    timeout: float = DHCP_TIMEOUT
    _running: Supervised | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def _make(self) -> Supervised:
        if self.daemon not in DAEMONS:
            raise WgnsError(f"unknown network daemon {self.daemon!r}")
        return DAEMONS[self.daemon](self.ifnames, self.ns, self.timeout)

    def describe(self) -> str:
        return f"{' '.join(self._make().argv())} (inside {self.ns}, supervised)"

    def prepare(self, ctx: Context) -> None:
        if not self._make().is_supported():
            raise WgnsError(f"{self.daemon} is not installed", hint="apt install dhcpcd-base")

    def apply(self, ctx: Context) -> None:
        d = self._make()
        pid, starttime = d.start(self.ns, log_path(self.ns, self.daemon))
        self.result["pid"] = pid
        self.result["starttime"] = starttime
        ctx.checkpoint()
        self._running = d

    def finish(self, ctx: Context) -> None:
        d, self._running = self._running, None
        if d is None:
            return
        try:
            d.wait_ready()
        except WgnsError as e:
            raise WgnsError(
                f"no address from {self.daemon} on {', '.join(self.ifnames)} inside {self.ns}: "
                f"{e.message}",
                hint=f"its log: {log_path(self.ns, self.daemon)}",
            ) from None

    def undo(self, ctx: Context) -> None:
        pid = int(self.result.get("pid", 0))
        if pid:
            stop_process(pid, self.result.get("starttime"), grace=5.0)
            kill_session(pid)
        remove_log(log_path(self.ns, self.daemon))

    def alive(self) -> bool:
        from wgns.system.processes import process_alive

        return process_alive(int(self.result.get("pid", 0)), self.result.get("starttime"))

    def last_words(self) -> str:
        return last_line(log_path(self.ns, self.daemon))


# ---------------------------------------------------------------- daemons already running

DHCP_CLIENTS = ("dhcpcd", "dhclient")
WIRELESS = ("wpa_supplicant", "iwd")
SYSTEMD_RUNNING = "/run/systemd/system"  # sd_booted(3)


@dataclass(frozen=True)
class HostDaemon:
    """A network daemon running in the main namespace: by a systemd unit (UNIT) or not."""

    name: str
    pid: int
    starttime: int | None
    argv: tuple[str, ...]
    unit: str | None = None

    def stop_op(self) -> Op:
        """Stops it before its interfaces move (started again, here, once they are back)."""
        if self.unit is not None:
            from wgns.features.physical_units import StopUnit

            return StopUnit(unit=self.unit)
        return StopHostDaemon(
            name=self.name, pid=self.pid, starttime=self.starttime, argv=list(self.argv)
        )

    def confine_op(self, ns: str) -> Op | None:
        """A unit started inside NS once the interfaces are there (others: wgns's own dhcpcd)."""
        if self.unit is None:
            return None
        from wgns.features.physical_units import ConfineUnit

        return ConfineUnit(unit=self.unit, ns=ns)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def unit_of(pid: int) -> str | None:
    """The systemd service PID belongs to (its cgroup), when systemd runs."""
    if not os.path.isdir(SYSTEMD_RUNNING):
        return None
    return service_in(_read(f"/proc/{pid}/cgroup"))


def service_in(cgroup: str) -> str | None:
    """The service named by a /proc/PID/cgroup text ("0::/system.slice/dhcpcd.service")."""
    for line in cgroup.splitlines():
        path = line.rpartition(":")[2]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


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


def running(names: tuple[str, ...]) -> list[HostDaemon]:
    """The processes named NAMES in this network namespace (the first of a family: not the
    helpers a daemon forks, whose parent has the same name)."""
    here = os.stat("/proc/self/ns/net").st_ino
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        comm = _read(f"/proc/{pid}/comm").strip()
        if comm not in names:
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != here:
                continue
        except OSError:
            continue
        stat = _read(f"/proc/{pid}/stat")
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1]) if ")" in stat else 0
        if _read(f"/proc/{ppid}/comm").strip() == comm:
            continue
        raw = tuple(a for a in _read(f"/proc/{pid}/cmdline").split("\0") if a)
        if not raw or is_helper(raw):
            continue
        argv = command_line(raw)
        found.append(HostDaemon(comm, pid, proc_starttime(pid), argv, unit_of(pid)))
    return sorted(found, key=lambda d: d.pid)


def host_daemons(moving_phys: bool) -> list[HostDaemon]:
    """The network daemons of the main namespace that physical `up` relocates: its DHCP
    clients, and (when a wireless phy moves) wpa_supplicant/iwd. A wireless daemon not run
    by systemd is refused: wgns supervises only the DHCP client itself."""
    daemons = running(DHCP_CLIENTS + (WIRELESS if moving_phys else ()))
    loose = [d for d in daemons if d.name in WIRELESS and d.unit is None]
    if loose:
        raise WgnsError(
            f"{loose[0].name} (pid {loose[0].pid}) runs outside systemd: physical mode moves "
            "wireless daemons only as systemd units; nothing was changed",
            hint="run it as a unit (e.g. wpa_supplicant@IF.service), or stop it and list the "
            "interfaces with --iface",
        )
    return daemons


@dataclass(kw_only=True)
class StopHostDaemon(Op):
    """A network daemon of the main namespace not run by systemd: stopped before its links
    move, started again (the same command line, in the main namespace) when they are back."""

    kind = "physical_host_daemon"
    name: str
    pid: int
    starttime: int | None
    argv: list[str]

    def describe(self) -> str:
        return (
            f"stop {self.name} (pid {self.pid}); started again as `{' '.join(self.argv)}` at down"
        )

    def apply(self, ctx: Context) -> None:
        stop_process(self.pid, self.starttime, grace=5.0)

    def undo(self, ctx: Context) -> None:
        from wgns.system.processes import process_alive

        if process_alive(self.pid, self.starttime) or self.result.get("restarted"):
            return  # never stopped (killed before), or already started again
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            raise WgnsError(f"cannot start {self.name} again: {e.strerror}") from None
        self.result["restarted"] = proc.pid
        ctx.checkpoint()
