"""A private network + mount namespace standing in for the host (tests and `wgns demo`).

Inside a sandbox:

* the network namespace is new (only ``lo``, up): nothing can reach the real network;
* ``/run`` is a fresh tmpfs (so ``/run/netns``, ``/run/wgns``, ``/run/wireguard`` and
  ``/var/run`` -> ``/run`` are private), ``/etc`` is an overlay whose upper layer lives on that
  tmpfs (``/etc/netns/*`` and ``/etc/resolv.conf`` written inside never reach the host), and
  ``/sys`` is a sysfs of the sandbox's own network namespace.

Two ways to get one:

* :meth:`Sandbox.spawn` (tests): a *keeper* child process unshares and holds the namespaces;
  commands run through ``nsenter``. The keeper reads its stdin until EOF; when the parent goes
  away (even by SIGKILL) it kills every process left in the sandbox, so nothing outlives the
  test run.
* :meth:`Sandbox.enter_self` (``wgns demo``): the calling (single-threaded) process itself moves
  into new namespaces; commands then run directly.

Paths: every path given to the sandbox API is a path *inside* the sandbox. :meth:`Sandbox.path`
maps it to one the calling process can open (``/proc/KEEPER/root/...`` for a spawned sandbox),
resolving symlinks inside the sandbox so that e.g. ``/var/run`` -> ``/run`` never escapes to the
host's ``/run``.

Beside this module: :mod:`wgns.testing.isolation` builds the namespaces and mounts (and is the
keeper's code), :mod:`wgns.testing.occupants` finds and kills the processes inside, and
:mod:`wgns.testing.snapshot` takes and compares snapshots.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shlex
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

from wgns.system import netns
from wgns.testing import occupants, snapshot
from wgns.testing.isolation import SANDBOX_DIR, SANDBOX_TMP, unshare_and_setup
from wgns.testing.snapshot import snapshot_diff

__all__ = [
    "REPO_ROOT",
    "SANDBOX_DIR",
    "SANDBOX_TMP",
    "Sandbox",
    "SandboxCommandError",
    "SandboxError",
    "snapshot_diff",
]

#: The checkout this module was imported from (put on PYTHONPATH of Python run inside).
REPO_ROOT = str(Path(__file__).resolve().parents[2])

StrOrBytes = str | bytes


class SandboxError(Exception):
    """The sandbox itself could not be set up or used."""


class SandboxCommandError(subprocess.CalledProcessError):
    """A command run inside the sandbox failed (``check=True``)."""

    def __init__(
        self,
        returncode: int,
        cmd: Sequence[str],
        output: str | None,
        stderr: str | None,
        netns: str | None = None,
    ) -> None:
        super().__init__(returncode, list(cmd), output, stderr)
        self.netns = netns

    def __str__(self) -> str:
        where = f" (in netns {self.netns})" if self.netns else ""
        out = (self.output or "").rstrip()
        err = (self.stderr or "").rstrip()
        return (
            f"command {shlex.join(self.cmd)}{where} failed with exit code {self.returncode}\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
        )


class Sandbox:
    """A private net+mount namespace pair standing in for the host."""

    def __init__(self, *, pid: int, keeper: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid  # the process holding the namespaces (keeper, or ourselves)
        self._keeper = keeper
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._leftovers: list[int] = []
        self.spawn_seconds = 0.0  # how long spawn() took
        self.net_inode = occupants.ns_inode(pid, "net") or 0
        self.mnt_inode = occupants.ns_inode(pid, "mnt") or 0

    # ---------------------------------------------------------------- construction

    @classmethod
    def spawn(cls, *, timeout: float = 10) -> Sandbox:
        """A sandbox held by a keeper child process (for tests)."""
        t0 = time.monotonic()
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from wgns.testing.isolation import keeper_main; keeper_main()"
        )
        keeper = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, REPO_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a ^C in the terminal is for pytest, not the keeper
        )
        assert keeper.stdout is not None
        line = _readline_with_timeout(keeper.stdout, timeout)
        if not line.startswith(b"ready "):
            keeper.kill()
            _, err = keeper.communicate()
            raise SandboxError(
                f"sandbox keeper failed to start (rc={keeper.returncode}): "
                f"{(line + err).decode(errors='replace').strip()}"
            )
        sb = cls(pid=keeper.pid, keeper=keeper)
        sb.spawn_seconds = time.monotonic() - t0
        return sb

    @classmethod
    def enter_self(cls) -> Sandbox:
        """Move the calling process into a new sandbox (for `wgns demo`).

        The process must be single-threaded (Linux refuses a new mount namespace otherwise).
        """
        if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
            raise SandboxError("enter_self() needs a single-threaded process")
        try:
            unshare_and_setup()
        except OSError as e:
            raise SandboxError(f"cannot create the sandbox: {e}") from e
        return cls(pid=os.getpid(), keeper=None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_self(self) -> bool:
        """True when the calling process itself lives in the sandbox (enter_self)."""
        return self._keeper is None

    # ---------------------------------------------------------------- paths and files

    @property
    def _root(self) -> str:
        return "/" if self.is_self else f"/proc/{self.pid}/root"

    def path(self, inside: str | os.PathLike[str]) -> Path:
        """A path the calling process can open for the sandbox path INSIDE.

        Symlinks are resolved inside the sandbox (an absolute link is relative to the sandbox's
        root, not ours); missing trailing components are kept as they are."""
        p = PurePosixPath(os.fspath(inside))
        if not p.is_absolute():
            raise ValueError(f"sandbox paths must be absolute: {p}")
        if self.is_self:
            return Path(p)
        root = self._root
        todo: deque[str] = deque(p.parts[1:])
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            cand = os.path.join(root, *done, part)
            try:
                st = os.lstat(cand)
            except FileNotFoundError:
                done.append(part)
                done.extend(todo)
                break
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many symlinks", str(p))
                target = PurePosixPath(os.readlink(cand))
                if target.is_absolute():
                    done = []
                    todo.extendleft(reversed(target.parts[1:]))
                else:
                    todo.extendleft(reversed(target.parts))
                continue
            done.append(part)
        return Path(root, *done)

    def read_text(self, inside: str) -> str:
        return self.path(inside).read_text()

    def read_bytes(self, inside: str) -> bytes:
        return self.path(inside).read_bytes()

    def write_file(self, inside: str, data: StrOrBytes, *, mode: int = 0o644) -> None:
        """Create or replace the sandbox file INSIDE (parent directories are created)."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if target.is_symlink():
                target.unlink()
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, raw)
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- running commands

    def _netns_file(self, netns_name: str | None) -> str:
        if netns_name is None:
            return f"/proc/{self.pid}/ns/net"
        netns.validate_name(netns_name)
        return f"{self._root.rstrip('/')}/run/netns/{netns_name}"

    def command(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        cwd: str | None = None,
    ) -> list[str]:
        """The argv that runs ARGV inside the sandbox (in named namespace NETNS if given).

        CWD is a directory inside the sandbox (default: / for a spawned sandbox, the current
        directory for enter_self)."""
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        prefix: list[str] = []
        if self.is_self:
            if netns is not None:
                prefix = ["nsenter", f"--net={self._netns_file(netns)}", "--"]
        else:
            prefix = [
                "nsenter",
                f"--mount=/proc/{self.pid}/ns/mnt",
                f"--net={self._netns_file(netns)}",
                "--",
            ]
        if cwd is not None and not self.is_self:
            prefix += ["env", f"--chdir={cwd}", "--"]
        return prefix + argv

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        merged = dict(os.environ)
        merged.update(env)
        return merged

    def run(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        check: bool = True,
        input: StrOrBytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        capture: bool = True,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV inside the sandbox and wait for it.

        ENV adds to (overrides) the caller's environment. With ``capture`` stdout/stderr are
        returned as text, otherwise they are inherited. ``check`` raises
        :class:`SandboxCommandError` (argv, exit code, stdout and stderr in its message)."""
        self._check_open()
        full = self.command(argv, netns=netns, cwd=cwd)
        raw_input = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            full,
            input=raw_input,
            stdin=subprocess.DEVNULL if input is None else None,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=self._env(env),
            timeout=timeout,
            cwd=cwd if self.is_self else None,
            check=False,
        )
        out = proc.stdout.decode(errors="replace") if proc.stdout is not None else None
        err = proc.stderr.decode(errors="replace") if proc.stderr is not None else None
        if check and proc.returncode != 0:
            raise SandboxCommandError(proc.returncode, list(argv), out, err, netns)
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def popen(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start ARGV in the background inside the sandbox; close() kills it.

        Extra keyword arguments go to :class:`subprocess.Popen` (stdin defaults to /dev/null).
        The process is exec'd by nsenter, so ``Popen.pid`` is the command's own pid."""
        self._check_open()
        full = self.command(argv, netns=netns, cwd=cwd)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            full, env=self._env(env), cwd=cwd if self.is_self else None, **kw
        )
        with self._lock:
            self._procs.append(proc)
        return proc

    def python_argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, *args]

    def python_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for Python run inside: this checkout first on PYTHONPATH."""
        old = (env or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        merged = dict(env or {})
        merged["PYTHONPATH"] = REPO_ROOT + (os.pathsep + old if old else "")
        return merged

    def python(
        self, code_or_args: str | Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run Python inside: a code string (``-c``) or an argument list (e.g. ``["-m", X]``)."""
        args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
        kw["env"] = self.python_env(kw.get("env"))
        return self.run(self.python_argv(args), **kw)

    # ---------------------------------------------------------------- state

    def pids(self) -> list[int]:
        """Processes inside the sandbox, except its keeper and the calling process."""
        self._check_open()
        fds, inodes = occupants.pin_namespaces(self.pid)
        try:
            return sorted(occupants.pids_in(inodes, {self.pid, os.getpid()}))
        finally:
            occupants.unpin(fds)

    def netns_names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path("/run/netns")))
        except FileNotFoundError:
            return []

    def settled_snapshot(self, *, timeout: float = 5.0) -> dict[str, Any]:
        """A snapshot once two in a row agree: the sandbox's own links have settled (carrier,
        IPv6 link-local DAD), so that a later comparison shows only what a test changed."""
        prev = self.snapshot()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            cur = self.snapshot()
            if cur == prev:
                return cur
            prev = cur
        raise SandboxError("the sandbox's state never settled")

    def snapshot(self) -> dict[str, Any]:
        """Everything wgns could change (see :func:`wgns.testing.snapshot.take`)."""
        self._check_open()
        return snapshot.take(self)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def untrack(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def close(self) -> None:
        """Kill every process inside, then end the keeper. Idempotent."""
        if self._closed:
            return
        self._closed = True
        me = os.getpid()
        # pinned until the end: the namespaces (and their inode numbers) stay ours meanwhile
        fds, inodes = occupants.pin_namespaces(self.pid)
        try:
            with self._lock:
                procs, self._procs = self._procs, []
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            occupants.kill_processes(inodes, exclude={me, self.pid})
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
                for stream in (p.stdin, p.stdout, p.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            keeper = self._keeper
            if keeper is not None:
                assert keeper.stdin is not None
                with contextlib.suppress(OSError):
                    keeper.stdin.close()  # EOF: the keeper cleans up and exits
                try:
                    keeper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    keeper.kill()
                    keeper.wait(timeout=5)
                for stream in (keeper.stdout, keeper.stderr):
                    if stream is not None:
                        stream.close()
                # anything that slipped in meanwhile
                occupants.kill_processes(inodes, exclude={me})
            self._leftovers = sorted(occupants.pids_in(inodes, {me}))
        finally:
            occupants.unpin(fds)

    def leftover_pids(self) -> list[int]:
        """Processes that were still inside when close() finished (should be none).

        Before close(): the processes currently inside."""
        if not self._closed:
            return self.pids()
        return list(self._leftovers)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # a forgotten sandbox must not outlive its owner's interest: its keeper cleans up on EOF
        keeper = getattr(self, "_keeper", None)
        if keeper is not None and keeper.stdin is not None and not keeper.stdin.closed:
            with contextlib.suppress(Exception):
                keeper.stdin.close()


def _readline_with_timeout(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, or whatever arrived before EOF/timeout."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf
