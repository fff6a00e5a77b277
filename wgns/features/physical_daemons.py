"""The network daemons of physical mode that wgns starts and supervises itself inside the
physical namespace, with that namespace's view of the files (/etc/netns/NS/resolv.conf seen at
/etc/resolv.conf), so that what they write there never reaches the main namespace's DNS:

* its own DHCP client (dhcpcd, or dhclient where only that is installed) when none ran here;
* a daemon of the main namespace that no systemd unit runs (wpa_supplicant, iwd, dhcpcd,
  dhclient: wgns.features.physical_hostdaemons), started again inside with its own command
  line, kept in the foreground (:func:`foreground`) so that wgns holds its pid.

The op (:class:`StartNetDaemon`) is journaled with the daemon's pid and start time before the
daemon can be lost; undoing it stops the daemon (which deconfigures its interfaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import execview
from wgns.system.processes import (
    Supervised,
    last_line,
    log_path,
    proc_text,
    remove_log,
    stop_process,
)
from wgns.system.tools import run

DHCP_TIMEOUT = 30.0
WIRELESS_TIMEOUT = 10.0  # wpa_supplicant/iwd bring their interfaces up in milliseconds
DHCP_NAMES = ("dhcpcd", "dhclient")  # = physical_hostdaemons.DHCP_CLIENTS


class InView(Supervised):
    """A daemon started inside namespace NS with NS's view of the files: its network,
    /etc/netns/NS/* at /etc, its own /sys (wgns.system.execview.enter, in the child between
    fork and exec). Unlike `wgns exec`, the host's sockets stay in view, as they do for the
    daemons' units (whose drop-in changes only the network and resolv.conf): these are the
    physical network's own daemons, and wpa_supplicant -u registers on the system bus."""

    install_hint = "apt install dhcpcd-base"

    def child_setup(self, ns: str | None) -> Callable[[], None] | None:
        if ns is None:
            return None
        where = ns

        # preexec_fn: the executor runs no thread of its own at this op (no link move of the
        # core MoveLink in physical mode's plan), so the forked child may enter the view
        def enter() -> None:  # in the child: single-threaded, about to exec
            execview.enter(where, hide=False)

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
        return shutil.which(self.name) is not None

    def argv(self) -> list[str]:
        return ["dhcpcd", "--nobackground", "--ipv4only", *self.ifnames]

    def ready(self) -> bool:
        return any(has_ipv4(i, self.ns) for i in self.ifnames)


class Dhclient(Dhcpcd):
    """ISC dhclient in the foreground, for a machine that has no dhcpcd (Debian before 12).
    Its dhclient-script writes resolv.conf through the file (`cat >`), so the write lands in
    the view's /etc/resolv.conf, /etc/netns/NS/resolv.conf."""

    name = "dhclient"
    install_hint = "apt install isc-dhcp-client"

    def argv(self) -> list[str]:
        return ["dhclient", "-d", "-4", *self.ifnames]


def own_dhcp_client() -> str:
    """The DHCP client wgns runs inside when none ran here: dhcpcd, else dhclient (else dhcpcd,
    whose absence StartNetDaemon reports with the command that installs it)."""
    return next((c.name for c in (Dhcpcd, Dhclient) if shutil.which(c.name)), Dhcpcd.name)


# wpa_supplicant's getopt(3) string (wpa_supplicant/main.c, 2.10 with the optional y and z):
# its -B daemonizes; the letters followed by ':' take an argument
WPA_OPTSTRING = "b:Bc:C:D:de:f:g:G:hi:I:KLMm:No:O:p:P:qsTtuvWyz:"


def _takes_argument(letter: str) -> bool:
    pos = WPA_OPTSTRING.find(letter)
    return pos >= 0 and WPA_OPTSTRING[pos + 1 : pos + 2] == ":"


def wpa_options(argv: list[str]) -> list[tuple[str, str | None]]:
    """wpa_supplicant's options in ARGV[1:] as getopt(3) reads them: (letter, argument);
    letters may be grouped (-Bc FILE), an argument attached (-iwlan0) or the next word."""
    out: list[tuple[str, str | None]] = []
    words = iter(argv[1:])
    for word in words:
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            continue  # wpa_supplicant takes no operands
        for j in range(1, len(word)):
            if _takes_argument(word[j]):
                out.append((word[j], word[j + 1 :] or next(words, "")))
                break
            out.append((word[j], None))
    return out


def without_daemonize(argv: list[str]) -> list[str]:
    """wpa_supplicant's ARGV without its -B, wherever getopt(3) would read one (grouped with
    other letters too), and nothing else changed."""
    out = argv[:1]
    argument_next = False
    for word in argv[1:]:
        if argument_next or not word.startswith("-") or word == "-" or word == "--":
            out.append(word)
            argument_next = False
            continue
        kept = "-"
        for j in range(1, len(word)):
            if _takes_argument(word[j]):
                kept += word[j:]
                argument_next = j == len(word) - 1
                break
            if word[j] != "B":
                kept += word[j]
        if kept != "-":
            out.append(kept)
    return out


def foreground(name: str, argv: list[str]) -> list[str]:
    """ARGV, the command line of daemon NAME, made to stay in the foreground (wgns supervises
    the process it starts: one that forks into the background would be lost)."""
    if name == "wpa_supplicant":
        return without_daemonize(argv)
    if name == "dhcpcd":  # -B (--nobackground) wins over -b (--background)
        return argv if "--nobackground" in argv or "-B" in argv else [*argv, "--nobackground"]
    if name == "dhclient":  # -d wins over -nw; its interfaces come after its options
        return argv if "-d" in argv else [argv[0], "-d", *argv[1:]]
    return argv  # iwd runs in the foreground


class Relocated(InView):
    """A daemon of the main namespace not run by systemd (physical_hostdaemons.HostDaemon),
    started inside NS with its own command line in the foreground and its working directory.
    Ready: a wireless daemon once the interfaces it names with -i are up (it brings them up
    as it starts; a phy's netdevs arrive down), a DHCP client once one of IFNAMES has an IPv4
    address; one that names no interface (iwd, dhcpcd's manager mode for the wireless ones)
    as soon as it runs."""

    def __init__(
        self, name: str, argv: list[str], cwd: str, ns: str, ifnames: list[str], timeout: float
    ) -> None:
        super().__init__()
        self.name, self._argv, self.cwd, self.ns = name, argv, cwd, ns
        self.ifnames = ifnames
        self.start_timeout = timeout if name in DHCP_NAMES else WIRELESS_TIMEOUT
        self.install_hint = f"{name} was running here: is it still installed?"

    def is_supported(self) -> bool:
        return shutil.which(self._argv[0]) is not None

    def argv(self) -> list[str]:
        return foreground(self.name, self._argv)

    def child_setup(self, ns: str | None) -> Callable[[], None] | None:
        enter = super().child_setup(ns)
        cwd = self.cwd

        def setup() -> None:  # in the child, about to exec
            if enter is not None:
                enter()
            try:
                os.chdir(cwd)
            except OSError:
                os.chdir("/")

        return setup

    def named_interfaces(self) -> list[str]:
        if self.name == "wpa_supplicant":
            return [str(a) for letter, a in wpa_options(self._argv) if letter == "i" and a]
        return []

    def ready(self) -> bool:
        if self.name in DHCP_NAMES:
            if "--ipv6only" in self._argv or "-6" in self._argv:
                return True  # no IPv4 lease to wait for
            return any(has_ipv4(i, self.ns) for i in self.ifnames)
        return all(is_up(i, self.ns) for i in self.named_interfaces())


def is_up(ifname: str, ns: str) -> bool:
    proc = run(["ip", "-j", "link", "show", "dev", ifname], ns=ns, check=False)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return False
    return any("UP" in d.get("flags", []) for d in data)


def has_ipv4(ifname: str, ns: str) -> bool:
    proc = run(["ip", "-j", "-4", "addr", "show", "dev", ifname], ns=ns, check=False)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return False
    return any(a.get("scope") == "global" for d in data for a in d.get("addr_info", []))


DAEMONS = {"dhcpcd": Dhcpcd, "dhclient": Dhclient}


def kill_session(sid: int) -> None:
    """SIGKILL what is left of the session SID, which a daemon started by wgns leads (its
    start_new_session): dhcpcd's privilege-separated helpers outlive a manager that was
    killed (by the OOM killer, by hand), holding the physical namespace alive."""
    import signal

    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = proc_text(f"/proc/{entry.name}/stat")
        if ")" not in stat:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # the session id
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@dataclass(kw_only=True)
class StartNetDaemon(Op):
    """A network daemon on IFNAMES inside NS, supervised by wgns: wgns's own (DAEMON: a key of
    DAEMONS), or, with ARGV, a daemon of the main namespace started again inside with its own
    command line (in the foreground) and working directory CWD."""

    kind = "physical_daemon"
    daemon: str
    ns: str
    ifnames: list[str]
    timeout: float = DHCP_TIMEOUT
    argv: list[str] | None = None
    cwd: str = "/"
    _running: Supervised | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def _make(self) -> Supervised:
        if self.argv:
            return Relocated(self.daemon, self.argv, self.cwd, self.ns, self.ifnames, self.timeout)
        if self.daemon not in DAEMONS:
            raise WgnsError(f"unknown network daemon {self.daemon!r}")
        return DAEMONS[self.daemon](self.ifnames, self.ns, self.timeout)

    def describe(self) -> str:
        where = f"inside {self.ns}, supervised" + ("; as it ran here" if self.argv else "")
        return f"{' '.join(self._make().argv())} ({where})"

    def prepare(self, ctx: Context) -> None:
        d = self._make()
        if not d.is_supported():
            raise WgnsError(f"{self.daemon} is not installed", hint=d.install_hint)

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
            what = (
                f"no address from {self.daemon} on {', '.join(self.ifnames)}"
                if self.daemon in DHCP_NAMES
                else f"{self.daemon} did not start"
            )
            raise WgnsError(
                f"{what} inside {self.ns}: {e.message}",
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
