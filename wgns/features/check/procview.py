"""Looking at the world as a running process does: from inside its network and mount namespaces.

`wgns check --pid`/`--unit` must not trust how a process was confined (`wgns exec`'s bind mounts,
a systemd unit's overlay on /etc, or nothing at all): it looks from where the process is.
:func:`call_in_process` runs a function in a forked child that has entered the process's network
namespace, its mount namespace and its root directory (as ``nsenter -t PID -n -m -r`` does), so
that every path, symlink and socket lookup is resolved exactly as the process's own would be.

Why a child and not ``/proc/PID/root/...`` paths: the magic link only changes where a lookup
*starts*; an absolute symlink met on the way (/etc/resolv.conf -> /run/systemd/resolve/...)
restarts at the caller's root, and a unix socket's address is limited to 108 bytes. setns(2) into a
mount namespace needs a single-threaded caller, which a freshly forked child is.

The child takes the process's credentials (user, group, supplementary groups, and so no
capabilities) unless the process runs as root: what it can open and connect to is what the
process can, and the code glibc loads for a lookup (the NSS modules nsswitch.conf names, from the
process's root) runs with no more power than the process's own; a non-root user can build a mount
namespace of its own, a root child must never run what it put there. A root process's view was
made by root. For reachability, a root child errs on the side of FAIL: root ignores the modes of
directories and sockets (an empty mode-000 directory that systemd's InaccessiblePaths= mounts is
empty for root too, and its mode-000 socket inode has no listener). Modules the child needs are
imported before the fork, and once inside it imports nothing: the interpreter's files under the
process's root are not necessarily the interpreter's.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  # str host names are encoded with it: load before the fork
import errno
import json
import os
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wgns.errors import WgnsError
from wgns.system import libc, netns

#: The files of /etc that decide where a lookup goes.
RESOLVER_FILES = ("resolv.conf", "nsswitch.conf", "hosts")

#: Unix sockets through which a host daemon would resolve names for the process (over the host's
#: network): (what, path). The directories are those `wgns exec` hides (wgns.system.execview).
SOCKETS = (
    ("nscd", "/run/nscd/socket"),
    ("systemd-resolved", "/run/systemd/resolve/io.systemd.Resolve"),
    ("D-Bus system bus", "/run/dbus/system_bus_socket"),
    ("avahi", "/run/avahi-daemon/socket"),
)
SOCKET_DIRS = ("/run/nscd", "/run/systemd/resolve", "/run/avahi-daemon")
#: systemd-resolved's stub listeners (in the process's network namespace they should be nobody's).
STUBS = (("127.0.0.53", 53), ("127.0.0.54", 53))
_MAX_FILE = 1 << 20  # characters of a resolver file read at most


def proc_ns(pid: int, kind: str = "net") -> tuple[int, int]:
    """(device, inode) of process PID's namespace KIND: what identifies the namespace."""
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except FileNotFoundError:
        raise WgnsError(f"no process {pid}") from None
    except OSError as e:
        raise WgnsError(f"cannot read the namespaces of process {pid}: {e.strerror}") from None
    return st.st_dev, st.st_ino


def netns_named(ident: tuple[int, int]) -> str | None:
    """The name under /run/netns of the network namespace IDENT (device, inode), if it has one."""
    try:
        names = sorted(os.listdir(netns.NETNS_RUN_DIR))
    except FileNotFoundError:
        return None
    for name in names:
        try:
            st = os.stat(netns.path_of(name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            return name
    return None


def describe(pid: int) -> str:
    """The process as a user recognises it: "pid 1234 (sleep)"."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"pid {pid} ({f.read().strip()})"
    except OSError:
        return f"pid {pid}"


class TimedOut(WgnsError):
    """The child inside the process's namespaces gave no result in time (it was killed)."""


@dataclass(frozen=True)
class Creds:
    """A process's real/effective/saved user and group ids and supplementary groups."""

    uids: tuple[int, int, int]
    gids: tuple[int, int, int]
    groups: tuple[int, ...]

    @property
    def root(self) -> bool:
        return self.uids[1] == 0


def creds_of(pid: int) -> Creds:
    """PID's credentials from /proc/PID/status (as this, the initial, user namespace sees them)."""
    fields: dict[str, list[int]] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Uid", "Gid", "Groups"):
                    fields[key] = [int(w) for w in rest.split()]
    except FileNotFoundError:
        raise WgnsError(f"no process {pid}") from None
    except (OSError, ValueError) as e:
        raise WgnsError(f"cannot read the credentials of process {pid}: {e}") from None
    uid, gid = fields.get("Uid", []), fields.get("Gid", [])
    if len(uid) < 3 or len(gid) < 3:
        raise WgnsError(f"cannot read the credentials of process {pid}")
    return Creds(
        (uid[0], uid[1], uid[2]), (gid[0], gid[1], gid[2]), tuple(fields.get("Groups", []))
    )


def _enter(fds: tuple[int, int, int], creds: Creds) -> None:
    net, mnt, root = fds
    libc.setns(net, netns.CLONE_NEWNET)
    libc.setns(mnt, netns.CLONE_NEWNS)
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")
    if not creds.root:
        os.setgroups(list(creds.groups))
        os.setresgid(*creds.gids)
        os.setresuid(*creds.uids)  # leaves no capability
    sys.meta_path.clear()  # no import from here on (see the module's docstring)


def call_in_process(pid: int, fn: Callable[[], Any], timeout: float) -> Any:
    """FN's result (anything JSON can carry), computed in a child inside PID's network and mount
    namespaces and under its root. A WgnsError after TIMEOUT seconds (the child is killed), or
    when the child fails."""
    fds: list[int] = []
    try:
        for p in (f"/proc/{pid}/ns/net", f"/proc/{pid}/ns/mnt", f"/proc/{pid}/root"):
            fds.append(os.open(p, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        if e.errno == errno.ENOENT:
            raise WgnsError(f"no process {pid} (it exited?)") from None
        raise WgnsError(f"cannot enter the namespaces of process {pid}: {e.strerror}") from None
    try:
        creds = creds_of(pid)
    except WgnsError:
        for fd in fds:
            os.close(fd)
        raise
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # never return into the caller's code
        status = 1
        try:
            os.close(rfd)
            try:
                _enter((fds[0], fds[1], fds[2]), creds)
                reply = json.dumps({"ok": fn()})
                status = 0
            except BaseException as e:
                reply = json.dumps({"error": f"{type(e).__name__}: {e}"})
            data = reply.encode()
            while data:
                data = data[os.write(wfd, data) :]
        finally:
            os._exit(status)
    for fd in (wfd, *fds):
        os.close(fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        if timed_out:
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    if timed_out:
        raise TimedOut(f"no result within {timeout:g}s")
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise WgnsError(f"a child inside the namespaces of process {pid} died") from None
    if "error" in doc:
        raise WgnsError(f"inside the namespaces of process {pid}: {doc['error']}")
    return doc["ok"]


# ---------------------------------------------------------------- what the child does


def read_resolver_files(names: Sequence[str] = RESOLVER_FILES) -> dict[str, Any]:
    """name -> {"text": ...} or {"error": "ENOENT"}, of /etc/NAME as the caller sees it."""
    out: dict[str, Any] = {}
    for name in names:
        try:
            with open(f"/etc/{name}", encoding="utf-8", errors="replace") as f:
                out[name] = {"text": f.read(_MAX_FILE)}
        except OSError as e:
            out[name] = {"error": errno.errorcode.get(e.errno or 0, str(e))}
    return out


def _connect_unix(path: str, timeout: float) -> str:
    """Whether a client can connect to the unix socket PATH: "connected", or an errno name."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except TimeoutError:
            return "connected"  # bound and listening, its backlog full: a daemon is there
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e))
    return "connected"


def _connect_tcp(addr: tuple[str, int], timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except TimeoutError:
            return "ETIMEDOUT"
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e))
    return "connected"


def probe_sockets(timeout: float = 1.0) -> list[dict[str, str]]:
    """Try every name-service back door as the caller would reach it: [{what, where, got}]."""
    paths: dict[str, str] = {p: what for what, p in SOCKETS}
    for d in SOCKET_DIRS:  # any other socket a daemon put beside the known ones
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode):
                    paths.setdefault(e.path, d.rsplit("/", 1)[1])
            except OSError:
                continue
    if os.path.realpath("/var/run") != "/run":  # /var/run is normally a link to /run
        for p, what in list(paths.items()):
            paths.setdefault("/var" + p, what)
    found = [{"what": w, "where": p, "got": _connect_unix(p, timeout)} for p, w in paths.items()]
    for addr in STUBS:
        got = _connect_tcp(addr, timeout)
        found.append({"what": "resolved stub", "where": f"{addr[0]}:{addr[1]}", "got": got})
    return found


_EAI = {
    socket.EAI_NONAME: "no such name",
    getattr(socket, "EAI_NODATA", -5): "no address of that name",
}


def lookup(name: str) -> dict[str, Any]:
    """getaddrinfo(NAME) as a program would call it: {"answered", "result", "seconds"}."""
    start = time.monotonic()
    try:
        infos = socket.getaddrinfo(name.encode(), None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        took = time.monotonic() - start
        if e.errno in _EAI:
            return {"answered": True, "result": _EAI[e.errno], "seconds": took}
        return {"answered": False, "result": str(e.strerror or e), "seconds": took}
    took = time.monotonic() - start
    addrs = sorted({str(i[4][0]) for i in infos})
    return {"answered": True, "result": "addresses " + ", ".join(addrs), "seconds": took}


def fetch(url: str, timeout: float) -> dict[str, str]:
    """GET URL (at most 200 bytes of the body): {"body"} or {"error"}."""
    import urllib.request  # imported by the caller before the fork (see prepare_fetch)

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return {"body": r.read(200).decode(errors="replace").strip()}
    except (OSError, ValueError) as e:
        return {"error": str(e)}


def prepare_fetch() -> None:
    """Import what :func:`fetch` needs while the interpreter's files are still at hand."""
    import http.client  # noqa: F401
    import urllib.request

    urllib.request.build_opener()
