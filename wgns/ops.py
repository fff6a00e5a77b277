"""Operations: the only things that change the system.

Each operation is plain data (JSON-serialisable, no secrets) with ``apply`` and ``undo``. The
executor journals an operation *before* applying it, so ``undo`` must tolerate an operation that
was never applied or was half applied, and anything that is already gone. Undo never raises for
"not there"; it raises only for real failures, which teardown collects and reports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wgns import netns
from wgns.errors import WgnsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from wgns.model import Interface

# Op kinds defined outside this module, imported only when a journal names them
KIND_MODULES = {"forwards": "wgns.forward"}


WIREGUARD_RUN_DIR = Path("/run/wireguard")
_GONE_MARKERS = (
    "Cannot find device",
    "does not exist",
    "No such file or directory",
    "No such process",
    "Cannot open network namespace",
    "Invalid argument",
)


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    ns: str | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool; with NS, inside that network namespace (the child inherits the thread's)."""
    with netns.entered(ns):
        try:
            proc = subprocess.run(
                list(argv), input=input, capture_output=True, text=True, env=env, check=False
            )
        except FileNotFoundError as e:
            raise WgnsError(f"{argv[0]} is not installed", hint="run scripts/install.sh") from e
    if check and proc.returncode != 0:
        raise WgnsError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip_batch(lines: Sequence[str], *, ns: str | None = None) -> None:
    """Many iproute2 commands in one process (`ip -b`): one fork instead of one per command."""
    if not lines:
        return
    argv = ["ip", "-n", ns, "-b", "-"] if ns else ["ip", "-b", "-"]
    proc = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise WgnsError(f"ip failed{' in namespace ' + ns if ns else ''}: {proc.stderr.strip()}")


def _gone(stderr: str) -> bool:
    return any(m in stderr for m in _GONE_MARKERS)


def del_link(ifname: str, *, ns: str | None) -> bool:
    """Delete IFNAME in NS (None: the current namespace). False when it was not there."""
    if ns is not None and not netns.exists(ns):
        return False
    argv = ["ip", "-n", ns, "link", "del", ifname] if ns else ["ip", "link", "del", ifname]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode == 0:
        return True
    if _gone(proc.stderr):
        return False
    raise WgnsError(f"cannot delete {ifname}: {proc.stderr.strip()}")


def proc_starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the comm field may contain spaces and parentheses: split after the last ')'
    return int(data[data.rindex(")") + 2 :].split()[19])


def process_alive(pid: int, starttime: int | None) -> bool:
    """PID is still the process we started (same start time) and not a zombie."""
    return pid > 0 and proc_starttime(pid) == starttime and not _is_zombie(pid)


def stop_process(pid: int, starttime: int | None, *, grace: float = 2.0) -> bool:
    """Stop PID if it is still the process we started (same start time). False if gone."""
    if pid <= 0 or proc_starttime(pid) is None:
        return False
    if starttime is not None and proc_starttime(pid) != starttime:
        return False  # the pid was reused by someone else's process
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if proc_starttime(pid) is None or _is_zombie(pid):
            return True
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(")") + 2] == "Z"


@dataclass(frozen=True)
class Teardown:
    """What an undo may rely on: DOOMED namespaces are deleted later in this same teardown and
    hold no processes, so whatever lives only inside them goes with them."""

    doomed: frozenset[str] = frozenset()


def link_exists(ifname: str, *, ns: str | None) -> bool:
    """Without a process: if_nametoindex answers for the calling thread's namespace."""
    if ns is not None and not netns.exists(ns):
        return False
    with netns.entered(ns):
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return False
    return True


# repr=False, eq=False: each generated method is an exec() at import time
@dataclass(repr=False, eq=False)
class Op:
    """Base class: subclasses are dataclasses registered by their ``kind``."""

    if TYPE_CHECKING:
        kind: ClassVar[str]
        registry: ClassVar[dict[str, type[Op]]]
    kind = ""
    registry = {}
    result: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            Op.registry[cls.kind] = cls

    def describe(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        """Record, in ``result``, what undo needs to know of the system before apply."""

    def apply(self) -> None:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Persist ``result`` now (set by the executor): for facts learnt mid-apply."""
        cb = getattr(self, "_checkpoint_cb", None)
        if cb is not None:
            cb()

    def undo(self, ctx: Teardown) -> None:
        """Reverse apply; tolerate "never applied" and "already gone"."""

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["kind"] = self.kind
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Op:
        d = dict(d)
        kind = d.pop("kind")
        if kind not in Op.registry and kind in KIND_MODULES:
            import importlib

            importlib.import_module(KIND_MODULES[kind])
        cls = Op.registry[kind]
        return cls(**d)


@dataclass(repr=False, eq=False)
class AddNetns(Op):
    kind = "netns_add"
    ns: str

    def describe(self) -> str:
        return f"ip netns add {self.ns}"

    def apply(self) -> None:
        netns.add(self.ns)

    def undo(self, ctx: Teardown) -> None:
        netns.delete(self.ns)


@dataclass(repr=False, eq=False)
class WriteNetnsFiles(Op):
    """/etc/netns/NS/* (resolv.conf, hosts, nsswitch.conf): restores what was there before."""

    kind = "netns_files"
    ns: str
    files: dict[str, str]

    def describe(self) -> str:
        return f"write {', '.join(str(Path(netns.etc_dir_of(self.ns)) / n) for n in self.files)}"

    def prepare(self) -> None:
        d = Path(netns.etc_dir_of(self.ns))
        self.result["dir_created"] = not d.exists()
        self.result["etc_netns_created"] = not os.path.exists(netns.NETNS_ETC_DIR)
        prior: dict[str, str | None] = {}
        for name in self.files:
            try:
                prior[name] = (d / name).read_text()
            except FileNotFoundError:
                prior[name] = None
        self.result["prior"] = prior

    def apply(self) -> None:
        d = Path(netns.etc_dir_of(self.ns))
        d.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            tmp = d / f".{name}.wgns-tmp"
            tmp.write_text(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, d / name)

    def undo(self, ctx: Teardown) -> None:
        d = Path(netns.etc_dir_of(self.ns))
        prior: dict[str, str | None] = self.result.get("prior", {})
        for name in self.files:
            old = prior.get(name)
            if old is None:
                with contextlib.suppress(FileNotFoundError):
                    (d / name).unlink()
            else:
                (d / name).write_text(old)
            with contextlib.suppress(FileNotFoundError):
                (d / f".{name}.wgns-tmp").unlink()
        if self.result.get("dir_created", True):
            with contextlib.suppress(OSError):
                d.rmdir()
        if self.result.get("etc_netns_created", False):
            with contextlib.suppress(OSError):
                os.rmdir(netns.NETNS_ETC_DIR)


@dataclass(repr=False, eq=False)
class CreateWireguard(Op):
    """The wg interface, created in the birthplace so its UDP socket lives there."""

    kind = "wg_create"
    ifname: str
    backend: str  # "kernel" | "userspace"
    birthplace: str | None
    target: str

    def describe(self) -> str:
        where = f" in {self.birthplace}" if self.birthplace else ""
        if self.backend == "kernel":
            return f"ip link add {self.ifname} netns {self.target} type wireguard{where}"
        return f"wireguard-go -f {self.ifname}{where}"

    def prepare(self) -> None:
        # Remove /run/wireguard on undo only if this op made it: an rmdir also detaches a
        # mount on it in other mount namespaces (Linux >= 3.18), e.g. another daemon's private one
        self.result["run_dir_created"] = not WIREGUARD_RUN_DIR.exists()

    def apply(self) -> None:
        from wgns import backend

        if self.backend == "kernel":
            # Born in the target namespace, but asked for from the birthplace: WireGuard keeps
            # the namespace of the request (its creating_net) for its UDP socket. The same
            # birthplace semantics as add-then-move, without the move's RCU grace periods.
            ip_batch(
                [f"link add {self.ifname} netns {self.target} type wireguard"], ns=self.birthplace
            )
        else:
            backend.start_userspace(self.ifname, self.birthplace, on_spawn=self._note)

    def _note(self, pid: int, starttime: int | None) -> None:
        self.result["pid"] = pid
        self.result["starttime"] = starttime
        self.checkpoint()

    def undo(self, ctx: Teardown) -> None:
        if self.backend == "userspace":
            pid = int(self.result.get("pid", 0))
            if pid:
                # the daemon closes its TUN on the way out, which removes the interface
                stop_process(pid, self.result.get("starttime"))
            with contextlib.suppress(FileNotFoundError):
                (WIREGUARD_RUN_DIR / f"{self.ifname}.sock").unlink()
            if self.result.get("run_dir_created", False):
                with contextlib.suppress(OSError):
                    WIREGUARD_RUN_DIR.rmdir()
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


@dataclass(repr=False, eq=False)
class ConfigureWireguard(Op):
    """Keys and peers, never through argv: the UAPI socket for wireguard-go, `wg setconf` with
    the config on stdin for the kernel."""

    kind = "wg_config"
    ifname: str
    ns: str | None  # where the device is when configured
    backend: str = "kernel"
    peers: int = 0
    _iface: Interface | None = field(default=None, repr=False, kw_only=True)

    def describe(self) -> str:
        how = "uapi set" if self.backend == "userspace" else "wg setconf"
        return f"{how} {self.ifname} ({self.peers} peer(s), keys not shown)"

    def apply(self) -> None:
        assert self._iface is not None, "configure needs the interface (never journaled)"
        if self.backend == "userspace":
            from wgns import backend, wg

            wg.uapi_set(str(backend.socket_path(self.ifname)), self._iface)
            return
        from wgns import config

        run(
            ["wg", "setconf", self.ifname, "/dev/stdin"],
            input=config.wg_setconf_text(self._iface),
            ns=self.ns,
        )


@dataclass(repr=False, eq=False)
class MoveLink(Op):
    kind = "link_move"
    ifname: str
    source: str | None
    target: str

    def describe(self) -> str:
        return f"ip link set {self.ifname} netns {self.target}"

    def apply(self) -> None:
        ip_batch([f"link set {self.ifname} netns {self.target}"], ns=self.source)


@dataclass(repr=False, eq=False)
class IpCommands(Op):
    """Addresses, MTU, link state and routes inside the namespace, in one `ip -b`."""

    kind = "ip_batch"
    ns: str
    lines: list[str]

    def describe(self) -> str:
        return "; ".join(f"ip -n {self.ns} {line}" for line in self.lines)

    def apply(self) -> None:
        ip_batch(self.lines, ns=self.ns)


@dataclass(repr=False, eq=False)
class LinkUp(Op):
    """Bring a link up in a namespace wgns did not create, restoring its old state on undo."""

    kind = "link_up"
    ns: str
    ifname: str

    def describe(self) -> str:
        return f"ip -n {self.ns} link set {self.ifname} up"

    def prepare(self) -> None:
        proc = subprocess.run(
            ["ip", "-n", self.ns, "-j", "link", "show", "dev", self.ifname],
            capture_output=True,
            text=True,
        )
        self.result["was_up"] = '"UP"' in proc.stdout

    def apply(self) -> None:
        ip_batch([f"link set {self.ifname} up"], ns=self.ns)

    def undo(self, ctx: Teardown) -> None:
        if self.result.get("was_up", True) or not netns.exists(self.ns):
            return
        # bringing lo up made the kernel add 127.0.0.1/8 and ::1: take them away again
        ip_batch([f"link set {self.ifname} down", f"address flush dev {self.ifname}"], ns=self.ns)


@dataclass(repr=False, eq=False)
class NftTable(Op):
    """The namespace's own nft table, created or replaced atomically by one `nft -f`."""

    kind = "nft_table"
    ns: str | None
    family: str
    table: str
    ruleset: str

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"nft -f - (table {self.family} {self.table}){where}"

    def apply(self) -> None:
        run(["nft", "-f", "-"], input=self.ruleset, ns=self.ns)

    def undo(self, ctx: Teardown) -> None:
        if self.ns is not None and (self.ns in ctx.doomed or not netns.exists(self.ns)):
            return  # a table dies with its namespace; deleting it first costs an RCU grace period
        proc = run(["nft", "delete", "table", self.family, self.table], ns=self.ns, check=False)
        if proc.returncode != 0 and not (
            _gone(proc.stderr) or "No such file" in proc.stderr or proc.stderr == ""
        ):
            raise WgnsError(f"cannot delete nft table {self.table}: {proc.stderr.strip()}")


@dataclass(repr=False, eq=False)
class RunHook(Op):
    """A PreUp/PostUp command (`sh -c`), with %i replaced as wg-quick does."""

    kind = "hook"
    when: str
    command: str
    ns: str | None
    ifname: str

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"{self.when}{where}: {self.command.replace('%i', self.ifname)}"

    def apply(self) -> None:
        cmd = self.command.replace("%i", self.ifname)
        with netns.entered(self.ns):
            proc = subprocess.run(["sh", "-c", cmd])
        if proc.returncode != 0:
            raise WgnsError(f"{self.when} hook failed with status {proc.returncode}: {cmd}")


def errno_is_gone(e: OSError) -> bool:
    return e.errno in (errno.ENOENT, errno.ESRCH, errno.ENODEV)
