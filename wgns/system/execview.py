"""The view of a wgns namespace that `wgns exec` and wgns's own hooks get: the first half of
`wgns exec` (the second, becoming the user and exec'ing the command, is wgns.system.runas).

The calling (root, single-threaded) process transforms itself, so no wgns process is left
between the caller and the command: signals, the terminal, the exit status and a death by signal
are the command's own.

1. **Network**: setns(2) into /run/netns/NS.
2. **Mounts**: unshare(2) a mount namespace, make every mount a slave (nothing propagates back to
   the host; host mounts still propagate in), then

   * hide the host's name-service back doors (:data:`HIDDEN_PATHS`, shared with `wgns
     confine`): an empty read-only tmpfs over /run/nscd (nscd's socket), /run/systemd/resolve
     (systemd-resolved's varlink sockets and stub files), /run/avahi-daemon (nss-mdns's socket)
     and /run/dbus (the D-Bus system bus socket: resolved's D-Bus API), and their /var/run
     twins. A network namespace does not isolate filesystem unix sockets, so glibc (or a D-Bus
     client) would otherwise ask host daemons, which resolve over the host's network. The
     bus's *directory* is covered, not its socket: a mount on the socket itself would be
     detached by the kernel as soon as dbus-daemon, restarting, unlinks it and binds a new one;
   * show NS's files at /etc: NS's /etc view, a read-only overlay of /etc with the view's top
     layer (:func:`view_top_of`: NS's resolv.conf, hosts and nsswitch.conf, which `wgns up`
     writes and `up --reload` rewrites in place) on top, made on /etc itself; then any other
     entry of /etc/netns/NS over its /etc/<entry>. One mount on the directory: the host
     replacing /etc/resolv.conf later (by rename, as NetworkManager and resolvconf do) changes
     nothing inside, where a bind mount on /etc/resolv.conf itself would be detached by the
     kernel and the host's new file show through. (Made afresh rather than bound from the
     view `wgns up` mounts: see :func:`show_etc`.);
   * without a view (a namespace brought up by a wgns that did not mount one, or NS not brought
     up by wgns), show /etc/netns/NS/* at /etc/* file by file (like `ip netns exec`): a bind
     mount over a regular file; a mount *on the symlink itself* (open_tree + move_mount, which
     does not follow the last component) when /etc/FILE is a symlink, dangling or not, e.g. the
     systemd-resolved stub; and, when /etc/FILE does not exist (no mount point to use), a
     read-only overlay of /etc/netns/NS on top of /etc;
   * remount /sys so that /sys/class/net lists NS's interfaces.

The same view is how wgns itself works inside a named namespace, through :func:`call_in_view` in
a child process: PreUp/PostUp hooks, and endpoint lookups in a named birthplace.

On `wgns exec`'s path: see wgns.system.startup for what that means for imports.
"""

from __future__ import annotations

import posix

from wgns.errors import WgnsError
from wgns.system import libc, netns
from wgns.system.startup import S_ISDIR, S_ISLNK, isdir, isfile, join, record_phase, suppress

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wgns.system.startup)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: How a process in a namespace would reach a resolver over the host's network, whatever its
#: network namespace: unix sockets in the file system (a network namespace does not separate
#: those) of nscd, of systemd-resolved (nss-resolve's varlink socket, its stub files), of avahi
#: (nss-mdns), and the D-Bus system bus (resolved's D-Bus API). Whole directories, never a
#: socket file: a mount on a file is detached by the kernel in every other mount namespace when
#: the host unlinks it (dbus-daemon restarting makes its socket anew), and the new socket would
#: be reachable. `wgns exec` covers each with an empty tmpfs; `wgns confine` makes them
#: InaccessiblePaths= (wgns.integrations.systemd.confine).
HIDDEN_PATHS = ("/run/nscd", "/run/systemd/resolve", "/run/avahi-daemon", "/run/dbus")
HIDDEN_DIRS = HIDDEN_PATHS
#: The directories `wgns exec` covers: those above and their /var/run twins (/var/run is not a
#: link to /run everywhere).
BACKDOOR_DIRS = tuple(twin for d in HIDDEN_DIRS for twin in (d, "/var" + d))
#: Where `wgns up` mounts each namespace's /etc view (wgns.features.etcview mounts it).
VIEW_ROOT = "/run/wgns/view"
#: Files of /etc/netns/NS without which `wgns exec` refuses to run anything.
REQUIRED_ETC_FILES = ("resolv.conf", "nsswitch.conf")


_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_ST_RDONLY = 1


def view_etc_of(ns: str) -> str:
    """Where `wgns up` mounts NS's view of /etc (wgns.features.etcview)."""
    return f"{VIEW_ROOT}/{ns}/etc"


def view_top_of(ns: str) -> str:
    """The view's top layer: copies of NS's /etc/netns files."""
    return f"{VIEW_ROOT}/{ns}/netns"


def mount_on_link(source: str, link: str) -> None:
    """Mount a clone of SOURCE on the symlink LINK itself (the link is not followed)."""
    fd = libc.open_tree(source, _OPEN_TREE_CLONE | posix.O_CLOEXEC)
    try:
        libc.move_mount_fd(fd, link, _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        posix.close(fd)


def check_ready(ns: str) -> None:
    """Raise WgnsError unless NS is a wgns namespace that is up, with its /etc files."""
    netns.validate_name(ns)
    phase = record_phase(ns)
    if phase is None:
        if netns.exists(ns):
            raise WgnsError(
                f"namespace {ns} is not managed by wgns",
                hint="wgns exec runs commands only in namespaces that `wgns up` brought up",
            )
        raise WgnsError(
            f"no namespace {ns}", hint=f"bring it up with `wgns up PROFILE --name {ns}`"
        )
    if phase != "up" or not netns.exists(ns):
        raise WgnsError(f"namespace {ns} is not up", hint=f"see `wgns status {ns}`")
    etc_dir = netns.etc_dir_of(ns)
    for name in REQUIRED_ETC_FILES:
        if not isfile(f"{etc_dir}/{name}"):
            raise WgnsError(
                f"{etc_dir}/{name} is missing: refusing to run with the host's name service",
                hint=f"`wgns down {ns}` and `wgns up` again rewrite it",
            )


def hide_backdoors(dirs: Sequence[str] = BACKDOOR_DIRS) -> list[str]:
    """Cover each existing directory of DIRS with an empty read-only tmpfs; returns those covered.

    Call inside a private mount namespace. /var/run usually links to /run: each directory is
    covered once."""
    found: dict[tuple[int, int], str] = {}
    for d in dirs:
        try:
            st = posix.stat(d)
        except OSError:
            continue
        if S_ISDIR(st.st_mode):
            found.setdefault((st.st_dev, st.st_ino), d)
    covered = list(found.values())
    flags = netns.MS_RDONLY | netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC
    for d in covered[:1]:
        netns.mount("tmpfs", d, "tmpfs", flags, "mode=0755,size=4k,nr_inodes=8")
    for d in covered[1:]:
        # the same empty read-only tmpfs, with its mount flags, again: a bind mount costs about
        # half a new tmpfs (~30 against ~50 us here), and a desktop has three or four of these
        netns.mount(covered[0], d, None, netns.MS_BIND)
    return covered


def bind_etc(etc_dir: str, etc: str = "/etc") -> str:
    """Show every entry of ETC_DIR at ETC/<entry>; returns how: "bind" or "overlay".

    Call inside a private mount namespace."""
    names = sorted(posix.listdir(etc_dir))
    plan: list[tuple[str, str, bool]] = []  # (source, target, target is a symlink)
    for name in names:
        target = join(etc, name)
        try:
            st = posix.lstat(target)
        except FileNotFoundError:
            overlay_etc(etc_dir, etc)  # nothing to mount on: /etc itself gets a layer
            return "overlay"
        plan.append((join(etc_dir, name), target, S_ISLNK(st.st_mode)))
    for source, target, is_link in plan:
        if not is_link:
            netns.mount(source, target, None, netns.MS_BIND)
            continue
        try:
            mount_on_link(source, target)
        except OSError:
            # no open_tree/move_mount (Linux < 5.2) or a kernel refusing mounts on symlinks
            overlay_etc(etc_dir, etc)
            return "overlay"
    return "bind"


def overlay_etc(etc_dir: str, etc: str = "/etc") -> None:
    """A read-only overlay on ETC whose top layer is a copy of ETC_DIR.

    overlayfs refuses a layer inside another layer (ETC_DIR is inside ETC), so ETC_DIR is first
    copied onto a tmpfs mounted over ETC_DIR itself (in this mount namespace only)."""
    import shutil  # only here: it is slow to import and rarely needed

    src = posix.open(etc_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        netns.mount("tmpfs", etc_dir, "tmpfs", netns.MS_NOSUID | netns.MS_NODEV, "mode=0755")
        shutil.copytree(f"/proc/self/fd/{src}", etc_dir, symlinks=True, dirs_exist_ok=True)
    finally:
        posix.close(src)
    try:
        netns.mount("overlay", etc, "overlay", netns.MS_RDONLY, f"lowerdir={etc_dir}:{etc}")
    except OSError as e:
        raise WgnsError(
            f"cannot show {etc_dir} at {etc}: an entry is missing from {etc} and "
            f"overlayfs failed ({e.strerror})",
            hint="create the missing file in /etc (an empty one will do), or load overlayfs",
        ) from e


def remount_sys() -> None:
    """A sysfs of the current network namespace at /sys (like `ip netns exec`)."""
    flags = netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC
    try:
        netns.umount("/sys", netns.MNT_DETACH)
    except OSError:
        # nothing to unmount, or it is busy: a read-only /sys cannot be covered read-write
        with suppress(OSError):
            if posix.statvfs("/sys").f_flag & _ST_RDONLY:
                flags |= netns.MS_RDONLY
    netns.mount("sysfs", "/sys", "sysfs", flags)


def _view_files(top: str) -> list[str] | None:
    """The files of the view's top layer TOP, None when it has no resolv.conf (no view)."""
    try:
        names = posix.listdir(top)
    except OSError:
        return None
    return names if "resolv.conf" in names else None


def _extras(etc_dir: str, held: list[str], etc: str) -> list[str] | None:
    """The entries of ETC_DIR that the view does not hold (HELD: an administrator's additions),
    to be bound over the view; None when one has nothing to be bound on (missing from ETC, or a
    symlink there)."""
    try:
        extras = sorted(set(posix.listdir(etc_dir)).difference(held))
    except FileNotFoundError:
        return []
    for name in extras:
        try:
            if S_ISLNK(posix.lstat(join(etc, name)).st_mode):
                return None
        except FileNotFoundError:
            return None
    return extras


def show_etc(ns: str, etc: str = "/etc") -> tuple[str, str]:
    """Show NS's files at ETC; returns (how, why): how is "view" (NS's /etc view made on ETC),
    else bind_etc's "bind" or "overlay" (file by file, why says why), or "" (no /etc/netns/NS).

    The view is made afresh, not bound from :func:`view_etc_of`: overlayfs keeps the lower
    files it has looked up, so the mount `wgns up` made would go on showing every command the
    /etc/passwd (localtime, ssl/certs, ...) it first read, after the host replaced it by
    rename. A new overlay shows the host's /etc as it is when the command starts, costs less
    than the two bind mounts it saves, and is the same view: the same top layer, which
    `up --reload` rewrites in place. Call inside a private mount namespace."""
    etc_dir = netns.etc_dir_of(ns)
    top = view_top_of(ns)
    held = _view_files(top)
    if held is None:
        why = f"{ns} has no /etc view ({top} holds no resolv.conf: brought up by an older wgns?)"
    else:
        extras = _extras(etc_dir, held, etc)
        if extras is None:
            why = f"an entry of {etc_dir} has no regular file in {etc} to be mounted on"
        else:
            flags = netns.MS_RDONLY | netns.MS_NOSUID | netns.MS_NODEV
            try:
                netns.mount("overlay", etc, "overlay", flags, f"lowerdir={top}:{etc}")
            except OSError as e:
                why = f"overlayfs refused {ns}'s /etc view ({e.strerror})"
            else:
                for name in extras:
                    netns.mount(join(etc_dir, name), join(etc, name), None, netns.MS_BIND)
                then = f", then {', '.join(extras)} of {etc_dir} bound over it" if extras else ""
                return "view", f"/etc view: overlay of {top} on {etc}{then}"
    if not isdir(etc_dir):  # a namespace wgns did not bring up may have none (ip netns too)
        return "", why
    how = bind_etc(etc_dir, etc)
    return how, f"{why}: {etc_dir}/* shown at {etc} file by file ({how})"


def enter(ns: str, *, hide: bool = True) -> tuple[str, str]:
    """Move the calling process into NS's network namespace and a private view of the files;
    returns :func:`show_etc`'s (how, why). HIDE=False leaves the host's sockets in view (for
    physical mode's network daemons, which must reach the system bus as its units do).

    The process must be single-threaded and root. Irreversible: call only before exec."""
    fd = posix.open(netns.path_of(ns), posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        netns.setns(fd, netns.CLONE_NEWNET)
    finally:
        posix.close(fd)
    netns.unshare(netns.CLONE_NEWNS)
    netns.mount(None, "/", None, netns.MS_REC | netns.MS_SLAVE)
    if hide:
        hide_backdoors()
    shown = show_etc(ns)
    remount_sys()
    return shown


def call_in_view(ns: str, fn: Callable[[], str]) -> str:
    """FN's result, computed in a child process that has entered NS as `wgns exec` would
    (:func:`enter`): NS's network, its /etc view, no host name-service back doors.

    For what wgns itself runs in a named namespace, the PreUp/PostUp hooks and endpoint lookups:
    a setns(2) of the network alone would leave them the host's resolv.conf and nscd. A WgnsError
    raised by FN is raised here again; any other failure becomes one."""
    rfd, wfd = posix.pipe2(posix.O_CLOEXEC)
    pid = posix.fork()
    if pid == 0:  # the child: report through the pipe, never return into the caller's code
        status = 1
        try:
            posix.close(rfd)
            try:
                enter(ns)
                reply = "ok\0" + fn()
                status = 0
            except WgnsError as e:
                reply = f"error\0{e.message}\0{e.hint or ''}"
            except BaseException as e:
                reply = f"error\0cannot work inside {ns}: {e}\0"
            data = reply.encode()
            while data:
                data = data[posix.write(wfd, data) :]
        finally:
            posix._exit(status)
    posix.close(wfd)
    try:
        chunks = []
        while chunk := posix.read(rfd, 65536):
            chunks.append(chunk)
    finally:
        posix.close(rfd)
        posix.waitpid(pid, 0)
    kind, _, rest = b"".join(chunks).decode().partition("\0")
    if kind == "ok":
        return rest
    message, _, hint = rest.partition("\0")
    raise WgnsError(message or f"a child working inside {ns} died", hint=hint or None)
