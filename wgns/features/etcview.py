"""The /etc view of a namespace: /etc with the namespace's /etc/netns files on top, read-only.

Every `wgns up` mounts, at /run/wgns/view/NS/etc, a read-only overlay whose top layer holds
NS's resolv.conf, hosts and nsswitch.conf and whose bottom layer is the host's /etc. A unit
confined to NS (`wgns confine`, wgns.integrations.systemd.confine) binds it over its /etc
(``BindReadOnlyPaths=/run/wgns/view/NS/etc:/etc``): one mount on a directory, so that the host
replacing /etc/resolv.conf later (by rename, as NetworkManager and resolvconf do; or a
symlink, dangling or not, such as systemd-resolved's stub) changes nothing in the unit. A bind
mount on the file itself would be detached by such a rename, and systemd follows a symlink
destination.

Why a copy of the /etc/netns files (in /run/wgns/view/NS/netns) and not /etc/netns/NS itself:
overlayfs refuses a layer inside another layer ("overlapping lowerdir path", ELOOP), and
/etc/netns/NS is inside /etc. `up --reload` rewrites the copies *in place* (same inodes):
overlayfs keeps the lower dentries it has looked up, so a file replaced by rename would go on
showing its old content, while new content of the same inode shows at once, in units already
running too.

Two ops: :class:`MountEtcView` (up) and :class:`UpdateEtcView` (reload).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import execview, netns

VIEW_ROOT = execview.VIEW_ROOT  # shared with `wgns exec`, which binds the view over /etc
HOST_ETC = "/etc"
_FLAGS = netns.MS_RDONLY | netns.MS_NOSUID | netns.MS_NODEV


def dir_of(ns: str) -> str:
    return f"{VIEW_ROOT}/{ns}"


def etc_of(ns: str) -> str:
    """Where NS's view of /etc is mounted."""
    return execview.view_etc_of(ns)


def top_of(ns: str) -> str:
    """The overlay's top layer: copies of /etc/netns/NS/*."""
    return execview.view_top_of(ns)


def mounted(ns: str) -> bool:
    """NS's view is mounted (as overlay) in this mount namespace."""
    return _fstype_at(etc_of(ns)) == "overlay"


def _unescape(field: str) -> str:
    """A path from /proc/self/mounts (octal escapes for space, tab, newline, backslash)."""
    return field.encode("latin-1").decode("unicode_escape") if "\\" in field else field


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of this mount namespace, in mount order."""
    try:
        with open("/proc/self/mounts") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            out.append((_unescape(parts[1]), parts[2]))
    return out


def _fstype_at(path: str) -> str | None:
    """The type of the file system mounted exactly at PATH (the topmost), or None."""
    found = None
    for point, fstype in _mounts():
        if point == path:
            found = fstype
    return found


def _fstype_of(path: str) -> str | None:
    """The type of the file system PATH is on (its longest mount point prefix, topmost)."""
    best, found = -1, None
    for point, fstype in _mounts():
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, found = len(point), fstype
    return found


def _write_in_place(path: str, content: str) -> None:
    """Replace PATH's content keeping its inode (the overlay holds on to the inode; see the
    module's doc). Truncated first: a reader in between sees an empty file, which resolvers
    read as "127.0.0.1", the namespace's own loopback, never the host's resolver."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        data = content.encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def _mount_error(ns: str, e: OSError) -> WgnsError:
    target = etc_of(ns)
    why = os.strerror(e.errno) if e.errno else str(e)
    if e.errno == errno.ENODEV:
        return WgnsError(
            f"cannot mount the /etc view of {ns} at {target}: the kernel has no overlayfs",
            hint="`modprobe overlay`, then `wgns up` again",
        )
    if e.errno == errno.EINVAL and _fstype_of(HOST_ETC) == "overlay":
        return WgnsError(
            f"cannot mount the /etc view of {ns} at {target}: /etc is itself on an overlayfs "
            "stacked on another one, and overlayfs stacks at most 2 deep (the kernel log says "
            "'maximum fs stacking depth exceeded')",
            hint="run wgns where /etc is at most one overlay deep (a container's root is "
            "fine, a container inside a container is not)",
        )
    return WgnsError(
        f"cannot mount the /etc view of {ns} at {target}: overlayfs refused ({why})",
        hint="the kernel log (`dmesg | tail`) says why",
    )


@dataclass(kw_only=True)
class MountEtcView(Op):
    """The read-only overlay lowerdir=/run/wgns/view/NS/netns:/etc at /run/wgns/view/NS/etc,
    the top layer holding FILES (those of /etc/netns/NS)."""

    beside_background = True  # a mount: nothing that could carry a packet
    kind = "etc_view"
    ns: str
    files: dict[str, str]

    def describe(self) -> str:
        return (
            f"mount -t overlay -o ro,lowerdir={top_of(self.ns)}:{HOST_ETC} overlay "
            f"{etc_of(self.ns)}  (/etc with {netns.etc_dir_of(self.ns)}/* on top)"
        )

    def prepare(self, ctx: Context) -> None:
        if mounted(self.ns):
            raise WgnsError(
                f"something is mounted at {etc_of(self.ns)} already (a view left by a wgns "
                "whose record was removed?)",
                hint=f"`umount {etc_of(self.ns)}`, then `wgns up` again",
            )
        wanted = (dir_of(self.ns), top_of(self.ns), etc_of(self.ns))
        self.result["made"] = [d for d in wanted if not os.path.lexists(d)]

    def apply(self, ctx: Context) -> None:
        os.makedirs(VIEW_ROOT, 0o755, exist_ok=True)  # shared: removed by the last view's undo
        for d in self.result.get("made", []):
            os.mkdir(d, 0o755)
        top = top_of(self.ns)
        for name, content in self.files.items():
            _write_in_place(f"{top}/{name}", content)
        try:
            netns.mount("overlay", etc_of(self.ns), "overlay", _FLAGS, self._options())
        except OSError as e:
            raise _mount_error(self.ns, e) from None

    def _options(self) -> str:
        return f"lowerdir={top_of(self.ns)}:{HOST_ETC}"

    def undo(self, ctx: Context) -> None:
        target = etc_of(self.ns)
        if mounted(self.ns):
            try:
                netns.umount(target, 0)
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise WgnsError(f"cannot unmount {target}: {e.strerror}") from None
                netns.umount(target, netns.MNT_DETACH)  # in use here: gone from the tree now
        top = top_of(self.ns)
        for name in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{top}/{name}")
        for d in [*reversed(self.result.get("made", [])), VIEW_ROOT]:
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only when empty: another namespace's view stays


@dataclass(kw_only=True)
class UpdateEtcView(Op):
    """`up --reload` of new /etc/netns files: the view's copies rewritten in place (what was
    there before is restored by undo)."""

    beside_background = True
    kind = "etc_view_update"
    ns: str
    files: dict[str, str]

    def describe(self) -> str:
        top = top_of(self.ns)
        return f"rewrite {', '.join(f'{top}/{n}' for n in self.files)} in place"

    def prepare(self, ctx: Context) -> None:
        prior: dict[str, str | None] = {}
        for name in self.files:
            try:
                with open(f"{top_of(self.ns)}/{name}") as f:
                    prior[name] = f.read()
            except FileNotFoundError:
                prior[name] = None
        self.result["prior"] = prior

    def apply(self, ctx: Context) -> None:
        top = top_of(self.ns)
        if not os.path.isdir(top):
            raise WgnsError(
                f"the /etc view of {self.ns} is missing ({top})",
                hint=f"`wgns down {self.ns}` and `wgns up` again",
            )
        for name, content in self.files.items():
            _write_in_place(f"{top}/{name}", content)

    def undo(self, ctx: Context) -> None:
        top = top_of(self.ns)
        if not os.path.isdir(top):
            return  # the view is gone (its MountEtcView was undone): nothing to restore
        prior: dict[str, str | None] = self.result.get("prior", {})
        for name in self.files:
            old = prior.get(name)
            if old is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{top}/{name}")
            else:
                _write_in_place(f"{top}/{name}", old)
