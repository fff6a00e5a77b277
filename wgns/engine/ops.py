"""Operations: the only things that change the system.

Each operation is plain data (JSON-serialisable, no secrets) with ``apply`` and ``undo``. The
executor journals an operation *before* applying it, so ``undo`` must tolerate an operation that
was never applied or was half applied, and anything that is already gone. Undo never raises for
"not there"; it raises only for real failures, which teardown collects and reports.
"""

from __future__ import annotations

import errno
import posix
import time

from wgns.errors import WgnsError, suppress
from wgns.system import netns, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, ClassVar

    from wgns.profile.model import Interface
    from wgns.system import rtnl
    from wgns.system.spawn import Completed, Running

# Tools run through wgns.system.spawn (posix_spawn), imported only where a tool is run: `wgns
# down` of a namespace wgns created runs none. Signal numbers are spelled out (Linux's)
# instead of importing signal, which builds its enums at import, for two constants.
SIGKILL = 9
SIGTERM = 15

# Op kinds defined outside this module, imported only when a journal names them
KIND_MODULES = {"forwards": "wgns.features.forward"}


WIREGUARD_RUN_DIR = "/run/wireguard"  # a string: pathlib costs ~4 ms of `wgns down`


def uapi_socket(ifname: str) -> str:
    """wireguard-go's UAPI socket for IFNAME, where `wg` and wgns find the daemon."""
    return f"{WIREGUARD_RUN_DIR}/{ifname}.sock"


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
) -> Completed:
    """Run a tool; with NS, inside that network namespace (the child inherits the thread's)."""
    proc = start(argv, input=input, ns=ns, env=env).wait()
    return checked(proc) if check else proc


def start(
    argv: Sequence[str],
    *,
    input: str | None = None,
    ns: str | None = None,
    env: dict[str, str] | None = None,
) -> Running:
    """Start a tool as :func:`run` does and return at once; collect it with ``.wait()``."""
    from wgns.system import spawn

    with netns.entered(ns):
        try:
            return spawn.start(argv, input=input, env=env)
        except FileNotFoundError as e:
            raise WgnsError(f"{argv[0]} is not installed", hint="run scripts/install.sh") from e


def checked(proc: Completed) -> Completed:
    """PROC, or a WgnsError with its message when it failed."""
    if proc.returncode != 0:
        why = proc.stderr.strip() or proc.stdout.strip()
        raise WgnsError(f"`{' '.join(proc.args)}` failed: {why}")
    return proc


def ip_batch(lines: Sequence[str], *, ns: str | None = None) -> None:
    """Many iproute2 commands in one process (`ip -b`): one fork instead of one per command."""
    if not lines:
        return
    argv = ["ip", "-n", ns, "-b", "-"] if ns else ["ip", "-b", "-"]
    proc = run(argv, input="\n".join(lines) + "\n", check=False)
    if proc.returncode != 0:
        raise WgnsError(f"ip failed{' in namespace ' + ns if ns else ''}: {proc.stderr.strip()}")


def _gone(stderr: str) -> bool:
    return any(m in stderr for m in _GONE_MARKERS)


def del_link(ifname: str, *, ns: str | None) -> bool:
    """Delete IFNAME in NS (None: the current namespace). False when it was not there."""
    if ns is not None and not netns.exists(ns):
        return False
    argv = ["ip", "-n", ns, "link", "del", ifname] if ns else ["ip", "link", "del", ifname]
    proc = run(argv, check=False)
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


def stop_process(pid: int, starttime: int | None, *, grace: float = 2.0, wait: bool = True) -> bool:
    """Stop PID if it is still the process we started (same start time). False if gone.
    With wait=False it gets SIGKILL and is not waited for: for a process whose remains the
    kernel can clear up on its own, after it can no longer run a single instruction."""
    current = proc_starttime(pid) if pid > 0 else None
    if current is None:
        return False
    if starttime is not None and current != starttime:
        return False  # the pid was reused by someone else's process
    if not wait:
        with suppress(ProcessLookupError):
            posix.kill(pid, SIGKILL)
        with suppress(ChildProcessError):  # our own child (a rolled-back `up`): reap if done
            posix.waitpid(pid, posix.WNOHANG)
        return True
    # A pidfd wakes us the moment the process exits; polling /proc would oversleep.
    try:
        pidfd = posix.pidfd_open(pid)
    except ProcessLookupError:
        return True  # it exited since the check
    except OSError:  # no pidfds (Linux < 5.3, or a seccomp filter): poll /proc instead
        pidfd = -1
    with suppress(ProcessLookupError):
        posix.kill(pid, SIGTERM)
    if pidfd >= 0:
        try:
            exited = _wait_exit(pidfd, grace)
        finally:
            posix.close(pidfd)
        with suppress(ChildProcessError):
            posix.waitpid(pid, posix.WNOHANG)  # our own child (a rolled-back `up`): reap it
        if exited:
            return True
    else:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with suppress(ChildProcessError):
                posix.waitpid(pid, posix.WNOHANG)
            if proc_starttime(pid) is None or _is_zombie(pid):
                return True
            time.sleep(0.005)
    with suppress(ProcessLookupError):
        posix.kill(pid, SIGKILL)
    return True


def _wait_exit(pidfd: int, timeout: float) -> bool:
    """A pidfd turns readable when its process has exited: wait up to TIMEOUT for that."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(max(1, int(left * 1000 + 0.999))):  # retried after EINTR by Python
            return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(")") + 2] == "Z"


class Teardown:
    """What an undo may rely on: DOOMED namespaces are deleted later in this same teardown and
    hold no processes, so whatever lives only inside them goes with them."""

    __slots__ = ("doomed",)

    def __init__(self, doomed: frozenset[str] = frozenset()) -> None:
        self.doomed = doomed


def link_exists(ifname: str, *, ns: str | None) -> bool:
    """Without a process: if_nametoindex answers for the calling thread's namespace."""
    import _socket  # the C module: socket.py adds enums and selectors (~3 ms) for nothing here

    if ns is not None and not netns.exists(ns):
        return False
    with netns.entered(ns):
        try:
            _socket.if_nametoindex(ifname)
        except OSError:
            return False
    return True


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what dataclasses.asdict did for the journal entry)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


class Op:
    """Base class: subclasses are registered by their ``kind``. Plain classes, not dataclasses:
    `wgns down` would pay ~9 ms to import dataclasses and create them. An op's journaled fields
    are its public attributes, which ``__init__`` takes as keyword arguments."""

    if TYPE_CHECKING:
        kind: ClassVar[str]
        registry: ClassVar[dict[str, type[Op]]]
    kind = ""
    registry = {}
    result: dict[str, Any]

    def __init__(self, *, result: dict[str, Any] | None = None) -> None:
        self.result = {} if result is None else result

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

    # An op may start work in apply() that finish() completes: the executor goes on with the
    # next ops meanwhile, as long as they are ones that cannot let a packet flow (this flag),
    # and calls finish() before any other op, and at the end.
    beside_background = False

    def finish(self) -> None:
        """Complete what apply() started in the background; raise as apply would."""

    def checkpoint(self) -> None:
        """Persist ``result`` now (set by the executor): for facts learnt mid-apply."""
        cb = getattr(self, "_checkpoint_cb", None)
        if cb is not None:
            cb()

    def undo(self, ctx: Teardown) -> None:
        """Reverse apply; tolerate "never applied" and "already gone"."""

    def to_json(self) -> dict[str, Any]:
        d = {k: _copy(v) for k, v in vars(self).items() if not k.startswith("_")}
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


class AddNetns(Op):
    beside_background = True  # an empty namespace: nothing in it can carry traffic
    kind = "netns_add"
    ns: str

    def __init__(
        self,
        *,
        ns: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns

    def describe(self) -> str:
        return f"ip netns add {self.ns}"

    def apply(self) -> None:
        netns.add(self.ns)

    def undo(self, ctx: Teardown) -> None:
        netns.delete(self.ns)


class WriteNetnsFiles(Op):
    """/etc/netns/NS/* (resolv.conf, hosts, nsswitch.conf): restores what was there before."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "netns_files"
    ns: str
    files: dict[str, str]

    def __init__(
        self,
        *,
        ns: str,
        files: dict[str, str],
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns
        self.files = files

    def describe(self) -> str:
        d = netns.etc_dir_of(self.ns)
        return f"write {', '.join(f'{d}/{n}' for n in self.files)}"

    def prepare(self) -> None:
        d = netns.etc_dir_of(self.ns)
        self.result["dir_created"] = not paths.exists(d)
        self.result["etc_netns_created"] = not paths.exists(netns.NETNS_ETC_DIR)
        prior: dict[str, str | None] = {}
        for name in self.files:
            try:
                with open(f"{d}/{name}") as f:
                    prior[name] = f.read()
            except FileNotFoundError:
                prior[name] = None
        self.result["prior"] = prior

    def apply(self) -> None:
        d = netns.etc_dir_of(self.ns)
        paths.makedirs(d, exist_ok=True)
        for name, content in self.files.items():
            tmp = f"{d}/.{name}.wgns-tmp"
            with open(tmp, "w") as f:
                f.write(content)
            posix.chmod(tmp, 0o644)
            posix.replace(tmp, f"{d}/{name}")

    def undo(self, ctx: Teardown) -> None:
        d = netns.etc_dir_of(self.ns)
        prior: dict[str, str | None] = self.result.get("prior", {})
        for name in self.files:
            old = prior.get(name)
            if old is None:
                with suppress(FileNotFoundError):
                    posix.unlink(f"{d}/{name}")
            else:
                with open(f"{d}/{name}", "w") as f:
                    f.write(old)
            with suppress(FileNotFoundError):
                posix.unlink(f"{d}/.{name}.wgns-tmp")
        if self.result.get("dir_created", True):
            with suppress(OSError):
                posix.rmdir(d)
        if self.result.get("etc_netns_created", False):
            with suppress(OSError):
                posix.rmdir(netns.NETNS_ETC_DIR)


class CreateWireguard(Op):
    """The wg interface, created in the birthplace so its UDP socket lives there."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_create"
    ifname: str
    backend: str  # "kernel" | "userspace"
    birthplace: str | None
    target: str

    def __init__(
        self,
        *,
        ifname: str,
        backend: str,
        birthplace: str | None,
        target: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ifname = ifname
        self.backend = backend
        self.birthplace = birthplace
        self.target = target

    def describe(self) -> str:
        where = f" in {self.birthplace}" if self.birthplace else ""
        if self.backend == "kernel":
            return f"ip link add {self.ifname} netns {self.target} type wireguard{where}"
        return f"wireguard-go -f {self.ifname}{where}"

    def prepare(self) -> None:
        # Remove /run/wireguard on undo only if this op made it: an rmdir also detaches a
        # mount on it in other mount namespaces (Linux >= 3.18), e.g. another daemon's private one
        self.result["run_dir_created"] = not paths.exists(WIREGUARD_RUN_DIR)

    def apply(self) -> None:
        from wgns.wireguard import backends

        if self.backend == "kernel":
            # Born in the target namespace, but asked for from the birthplace: WireGuard keeps
            # the namespace of the request (its creating_net) for its UDP socket. The same
            # birthplace semantics as add-then-move, without the move's RCU grace periods.
            with _open_netlink(self.birthplace) as nl:
                try:
                    nl.add_link(self.ifname, "wireguard", ns=self.target)
                except OSError as e:
                    raise WgnsError(str(e.strerror or e)) from None
        else:  # the executor goes on while the daemon starts; finish() waits for it
            self._starting: backends.Starting | None = backends.start_userspace(
                self.ifname, self.birthplace, on_spawn=self._note
            )

    def finish(self) -> None:
        starting, self._starting = getattr(self, "_starting", None), None
        if starting is not None:
            starting.wait()

    def _note(self, pid: int, starttime: int | None) -> None:
        self.result["pid"] = pid
        self.result["starttime"] = starttime
        self.checkpoint()

    def undo(self, ctx: Teardown) -> None:
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
            with suppress(FileNotFoundError):
                posix.unlink(uapi_socket(self.ifname))
            if self.result.get("run_dir_created", False):
                with suppress(OSError):
                    posix.rmdir(WIREGUARD_RUN_DIR)
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


class ConfigureWireguard(Op):
    """Keys and peers, never through argv: the UAPI socket for wireguard-go, `wg setconf` with
    the config on stdin for the kernel."""

    beside_background = True  # no address, route or link state that could carry traffic
    kind = "wg_config"
    ifname: str
    ns: str | None  # where the device is when configured
    backend: str
    peers: int

    def __init__(
        self,
        *,
        ifname: str,
        ns: str | None,
        backend: str = "kernel",
        peers: int = 0,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self._iface: Interface | None = None  # set by the planner; never journaled
        self.ifname = ifname
        self.ns = ns
        self.backend = backend
        self.peers = peers

    def describe(self) -> str:
        how = "uapi set" if self.backend == "userspace" else "wg setconf"
        return f"{how} {self.ifname} ({self.peers} peer(s), keys not shown)"

    def apply(self) -> None:
        assert self._iface is not None, "configure needs the interface (never journaled)"
        if self.backend == "userspace":
            from wgns.wireguard import wg

            wg.uapi_set(uapi_socket(self.ifname), self._iface)
            return
        from wgns.profile import wgconf

        run(
            ["wg", "setconf", self.ifname, "/dev/stdin"],
            input=wgconf.wg_setconf_text(self._iface),
            ns=self.ns,
        )


class MoveLink(Op):
    # not beside_background: the daemon must be up (see CreateWireguard.finish)
    kind = "link_move"
    ifname: str
    source: str | None
    target: str

    def __init__(
        self,
        *,
        ifname: str,
        source: str | None,
        target: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ifname = ifname
        self.source = source
        self.target = target

    def describe(self) -> str:
        return f"ip link set {self.ifname} netns {self.target}"

    def apply(self) -> None:
        # Moving a link costs the kernel an rcu_barrier() (~20 ms on the CI machine) during
        # which the caller only waits: a thread waits instead, while `up` goes on with what
        # cannot carry traffic (configuring the daemon, writing files). Op.finish joins it.
        import _thread

        nl = _open_netlink(self.source)
        done = _thread.allocate_lock()
        done.acquire()
        self._moving: tuple[Any, list[BaseException]] | None = (done, [])
        failed = self._moving[1]

        def move() -> None:
            try:
                nl.move_link(self.ifname, self.target)
            except BaseException as e:  # reported by finish(), in the thread that can act on it
                failed.append(e)
            finally:
                nl.close()
                done.release()

        try:
            _thread.start_new_thread(move, ())
        except BaseException:
            nl.close()
            self._moving = None
            raise

    def finish(self) -> None:
        moving, self._moving = getattr(self, "_moving", None), None
        if moving is None:
            return
        done, failed = moving
        done.acquire()
        if failed:
            e = failed[0]
            raise WgnsError(e.strerror if isinstance(e, OSError) and e.strerror else str(e))


def _open_netlink(ns: str | None) -> rtnl.Rtnl:
    from wgns.system import rtnl

    try:
        return rtnl.Rtnl(ns)
    except OSError as e:
        where = f"namespace {ns}" if ns else "this namespace"
        raise WgnsError(f"cannot open a netlink socket in {where}: {e.strerror or e}") from None


class ConfigureLink(Op):
    """Addresses, MTU, link state and routes of a wg interface inside the namespace: what
    wg-quick does with `ip`, over one netlink socket (wgns.system.rtnl) instead of a process."""

    kind = "link_config"
    ns: str
    ifname: str
    addresses: list[str]
    mtu: int
    routes: list[list[Any]]  # [prefix, table number or None (main)]
    lo_up: bool

    def __init__(
        self,
        *,
        ns: str,
        ifname: str,
        addresses: list[str],
        mtu: int,
        routes: list[list[Any]],
        lo_up: bool = False,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns
        self.ifname = ifname
        self.addresses = addresses
        self.mtu = mtu
        self.routes = routes
        self.lo_up = lo_up

    def lines(self) -> list[str]:
        """The same change as `ip` command lines (for --debug and the docs)."""
        out = ["link set lo up"] if self.lo_up else []
        out += [f"address add {a} dev {self.ifname}" for a in self.addresses]
        out.append(f"link set dev {self.ifname} mtu {self.mtu} up")
        for prefix, table in self.routes:
            out.append(
                f"route replace {prefix} dev {self.ifname}"
                + (f" table {table}" if table is not None else "")
            )
        return out

    def describe(self) -> str:
        return "; ".join(f"ip -n {self.ns} {line}" for line in self.lines())

    def apply(self) -> None:
        # rtnl's errors name the request ("RTNETLINK: add address A dev D: File exists"); the
        # namespace is what they lack
        try:
            with _open_netlink(self.ns) as nl:
                if self.lo_up:
                    nl.set_link("lo", up=True)
                for a in self.addresses:
                    nl.add_address(self.ifname, a)
                nl.set_link(self.ifname, mtu=self.mtu, up=True)
                for prefix, table in self.routes:
                    nl.replace_route(prefix, self.ifname, table=table)
        except OSError as e:
            raise WgnsError(f"{e.strerror or e} (in namespace {self.ns})") from None


class IpCommands(Op):
    """Addresses, MTU, link state and routes inside the namespace, in one `ip -b`. (Journals
    of wgns before ConfigureLink name it; kept so that their `down` still reads.)"""

    kind = "ip_batch"
    ns: str
    lines: list[str]

    def __init__(
        self,
        *,
        ns: str,
        lines: list[str],
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns
        self.lines = lines

    def describe(self) -> str:
        return "; ".join(f"ip -n {self.ns} {line}" for line in self.lines)

    def apply(self) -> None:
        ip_batch(self.lines, ns=self.ns)


class LinkUp(Op):
    """Bring a link up in a namespace wgns did not create, restoring its old state on undo."""

    kind = "link_up"
    ns: str
    ifname: str

    def __init__(
        self,
        *,
        ns: str,
        ifname: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns
        self.ifname = ifname

    def describe(self) -> str:
        return f"ip -n {self.ns} link set {self.ifname} up"

    def prepare(self) -> None:
        proc = run(["ip", "-n", self.ns, "-j", "link", "show", "dev", self.ifname], check=False)
        self.result["was_up"] = '"UP"' in proc.stdout

    def apply(self) -> None:
        ip_batch([f"link set {self.ifname} up"], ns=self.ns)

    def undo(self, ctx: Teardown) -> None:
        if self.result.get("was_up", True) or not netns.exists(self.ns):
            return
        # bringing lo up made the kernel add 127.0.0.1/8 and ::1: take them away again
        ip_batch([f"link set {self.ifname} down", f"address flush dev {self.ifname}"], ns=self.ns)


class NftTable(Op):
    """The namespace's own nft table, created or replaced atomically by one `nft -f`."""

    beside_background = True  # a table of rules: nothing a packet could use to leave
    kind = "nft_table"
    ns: str | None
    family: str
    table: str
    ruleset: str

    def __init__(
        self,
        *,
        ns: str | None,
        family: str,
        table: str,
        ruleset: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.ns = ns
        self.family = family
        self.table = table
        self.ruleset = ruleset

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"nft -f - (table {self.family} {self.table}){where}"

    def apply(self) -> None:
        # nft runs beside the next steps (in `up`: the TUN's move, the daemon's configuration);
        # the executor waits for it before anything that could let a packet flow.
        self._running: Running | None = start(["nft", "-f", "-"], input=self.ruleset, ns=self.ns)

    def finish(self) -> None:
        running, self._running = getattr(self, "_running", None), None
        if running is not None:
            checked(running.wait())

    def undo(self, ctx: Teardown) -> None:
        if self.ns is not None and (self.ns in ctx.doomed or not netns.exists(self.ns)):
            return  # a table dies with its namespace; deleting it first costs an RCU grace period
        proc = run(["nft", "delete", "table", self.family, self.table], ns=self.ns, check=False)
        if proc.returncode != 0 and not (
            _gone(proc.stderr) or "No such file" in proc.stderr or proc.stderr == ""
        ):
            raise WgnsError(f"cannot delete nft table {self.table}: {proc.stderr.strip()}")


class RunHook(Op):
    """A PreUp/PostUp command (`sh -c`), with %i replaced as wg-quick does."""

    kind = "hook"
    when: str
    command: str
    ns: str | None
    ifname: str

    def __init__(
        self,
        *,
        when: str,
        command: str,
        ns: str | None,
        ifname: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.when = when
        self.command = command
        self.ns = ns
        self.ifname = ifname

    def describe(self) -> str:
        where = f" in {self.ns}" if self.ns else ""
        return f"{self.when}{where}: {self.command.replace('%i', self.ifname)}"

    def apply(self) -> None:
        import subprocess

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


def errno_is_gone(e: OSError) -> bool:
    return e.errno in (errno.ENOENT, errno.ESRCH, errno.ENODEV)
