"""The network daemons of physical mode that wgns starts and supervises itself (those not run
by systemd units): a DHCP client inside the physical namespace, with that namespace's view of
the files (/etc/netns/NS/resolv.conf seen at /etc/resolv.conf), so that what it writes there
never reaches the main namespace's DNS.

The op (:class:`StartNetDaemon`) is journaled with the daemon's pid and start time before the
daemon can be lost; undoing it stops the daemon (which deconfigures its interfaces).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
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

    def start(self, ns: str | None, log_path: str) -> tuple[int, int | None]:
        if ns is None:
            return super().start(None, log_path)
        os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
        argv = self.argv()
        where = ns

        def enter() -> None:  # in the child: single-threaded, about to exec
            execview.enter(where)

        with open(log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=self.env(),
                    start_new_session=True,
                    preexec_fn=enter,
                )
            except FileNotFoundError:
                raise WgnsError(
                    f"{argv[0]} is not installed", hint="apt install dhcpcd-base"
                ) from None
        self._log = log_path
        self._started = time.monotonic()
        return self._proc.pid, proc_starttime(self._proc.pid)


class Dhcpcd(InView):
    """dhcpcd in the foreground on IFNAMES; ready once each of them has an IPv4 address."""

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
        return all(has_ipv4(i, self.ns) for i in self.ifnames)


def has_ipv4(ifname: str, ns: str) -> bool:
    proc = run(["ip", "-j", "-4", "addr", "show", "dev", ifname], ns=ns, check=False)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return False
    return any(a.get("scope") == "global" for d in data for a in d.get("addr_info", []))


DAEMONS = {"dhcpcd": Dhcpcd}


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
        remove_log(log_path(self.ns, self.daemon))

    def alive(self) -> bool:
        from wgns.system.processes import process_alive

        return process_alive(int(self.result.get("pid", 0)), self.result.get("starttime"))

    def last_words(self) -> str:
        return last_line(log_path(self.ns, self.daemon))
