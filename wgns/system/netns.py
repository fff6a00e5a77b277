"""Network namespaces: names, paths, and the one way to enter one.

Namespaces are `ip netns`-compatible: a bind mount of the namespace at /run/netns/NAME, and
per-namespace files under /etc/netns/NAME. Python 3.11 has no os.setns, so setns/unshare come from
libc (wgns.system.libc).

On `wgns exec`'s path (it checks and enters a namespace on every start): posix and
wgns.system.startup instead of os and contextlib, see there.

Entering a network namespace is per *thread* on Linux. :func:`entered` switches the calling thread
and always switches back, so it is safe to use from the main thread of a short-lived command.
"""

from __future__ import annotations

import errno
import posix

from wgns.errors import ConfigError, WgnsError
from wgns.system import libc
from wgns.system.startup import ismount, suppress

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_BIND = 4096
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MNT_DETACH = 2

# plain strings, not pathlib (~4 ms of `wgns exec`'s start)
NETNS_RUN_DIR = "/run/netns"
NETNS_ETC_DIR = "/etc/netns"

# Longer than IFNAMSIZ on purpose: namespace names are files, not interface names. (Checked with
# str methods, not re: `wgns exec` validates a name on every start and re costs it ~4 ms.)
_NAME_MAX = 128
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NAME_CHARS = _NAME_FIRST | frozenset(".+=@-")

setns = libc.setns
unshare = libc.unshare
mount = libc.mount


def umount(target: str, flags: int = MNT_DETACH) -> None:
    libc.umount2(target, flags)


def _valid_name(name: str) -> bool:
    return (
        0 < len(name) <= _NAME_MAX
        and name[0] in _NAME_FIRST
        and all(c in _NAME_CHARS for c in name)
        and name not in (".", "..")
    )


def validate_name(name: str, *, path: str | None = None, line: int | None = None) -> str:
    """Namespace names become file names: refuse anything that could escape /run/netns."""
    if not _valid_name(name):
        raise ConfigError(
            f"invalid namespace name {name!r}",
            path=path,
            line=line,
            hint="use letters, digits and _ . + = @ - (no '/', not '..', at most 128 characters)",
        )
    return name


def path_of(name: str) -> str:
    return f"{NETNS_RUN_DIR}/{name}"


def etc_dir_of(name: str) -> str:
    return f"{NETNS_ETC_DIR}/{name}"


def exists(name: str) -> bool:
    p = path_of(name)
    try:
        return ismount(p)
    except OSError:
        return False


def inode_of(name: str | None) -> int:
    """The inode that identifies a network namespace (None: the caller's own)."""
    p = "/proc/thread-self/ns/net" if name is None else path_of(name)
    return posix.stat(p).st_ino


def _share_run_dir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so that namespace bind mounts made
    here propagate to every mount namespace (and `ip netns exec` from elsewhere sees them)."""
    with suppress(FileExistsError):  # /run is always there
        posix.mkdir(NETNS_RUN_DIR, 0o755)
    try:
        mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        # not a mount point yet: bind it onto itself first
        mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC)
        mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC)


def _mount_point(name: str, verb: str) -> None:
    """/run/netns/NAME, a new empty file (a namespace is bind-mounted on it), in a /run/netns
    shared as `ip netns` shares it; VERB says what could not be done in the error."""
    try:
        _share_run_dir()
        fd = posix.open(
            path_of(name), posix.O_RDONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0
        )
    except FileExistsError:
        raise WgnsError(f"cannot {verb} namespace {name}: /run/netns/{name} exists") from None
    except OSError as e:
        raise WgnsError(f"cannot {verb} namespace {name}: {e.strerror}") from e
    posix.close(fd)


def add(name: str) -> None:
    """Create /run/netns/NAME exactly as `ip netns add` does, without a process: a fresh network
    namespace (made by this thread, which then returns home) bind-mounted on the file."""
    _mount_point(name, "create")
    home = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            mount("/proc/thread-self/ns/net", path_of(name), "none", MS_BIND)
        finally:
            setns(home, CLONE_NEWNET)
    except OSError as e:
        with suppress(OSError):
            posix.unlink(path_of(name))
        raise WgnsError(f"cannot create namespace {name}: {e.strerror}") from e
    finally:
        posix.close(home)


def attach(name: str, nsfd: int) -> None:
    """Name the network namespace open as NSFD (a process's /proc/PID/ns/net) NAME, as `ip netns
    attach NAME PID` does: a bind mount of it on /run/netns/NAME. :func:`delete` removes the
    name only; the namespace lives on while its processes do."""
    _mount_point(name, "name")
    try:
        mount(f"/proc/self/fd/{nsfd}", path_of(name), "none", MS_BIND)
    except OSError as e:
        with suppress(OSError):
            posix.unlink(path_of(name))
        raise WgnsError(f"cannot name namespace {name}: {e.strerror}") from e


def delete(name: str) -> bool:
    """Remove /run/netns/NAME. Returns False when it was already gone."""
    p = path_of(name)
    try:
        posix.lstat(p)
    except FileNotFoundError:
        return False
    try:
        umount(p)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    with suppress(FileNotFoundError):
        posix.unlink(p)
    return True


class entered:  # lower case: used like the function it replaced, `with netns.entered(ns):`
    """Run the block with the calling thread in network namespace NAME (None: stay put).

    A class rather than a @contextmanager generator: see startup.suppress for contextlib."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._home = -1

    def __enter__(self) -> None:
        if self.name is None:
            return
        target = posix.open(path_of(self.name), posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            self._home = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
            try:
                setns(target, CLONE_NEWNET)
            except BaseException:
                posix.close(self._home)
                self._home = -1
                raise
        finally:
            posix.close(target)

    def __exit__(self, *exc_info: object) -> None:
        if self._home < 0:
            return
        try:
            setns(self._home, CLONE_NEWNET)
        finally:
            posix.close(self._home)
            self._home = -1


def pids_inside(name: str) -> list[int]:
    """Processes whose network namespace is NAME (best effort: needs root for other users)."""
    try:
        ino = inode_of(name)
    except OSError:
        return []
    found = []
    for entry in posix.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if posix.stat(f"/proc/{entry.name}/ns/net").st_ino == ino:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
