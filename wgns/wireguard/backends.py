"""WireGuard backends: the kernel module, or wireguard-go owned by wgns.

The userspace daemon is started in the birthplace namespace (so its UDP socket lives there), in the
foreground (``-f``) and in its own session, so that it outlives the `wgns up` that started it and
its pid and start time identify it exactly for `down`. Its UAPI socket is
/run/wireguard/IFNAME.sock; IFNAME is derived from (namespace, label), so sockets never clash.
wgns configures the daemon through that socket itself (:func:`wgns.wireguard.wg.uapi_set`), as
`wg setconf` would.
"""

from __future__ import annotations

import _socket  # the C module: socket.py adds enums and selectors (~3 ms) unused here
import os
import time

from wgns.errors import WgnsError
from wgns.profile.model import Backend
from wgns.system import netns
from wgns.system.processes import proc_starttime
from wgns.wireguard.uapi import uapi_socket

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO

USERSPACE_BINARY = os.environ.get("WGNS_USERSPACE_IMPLEMENTATION", "wireguard-go")
START_TIMEOUT = 10.0


def kernel_available() -> bool:
    """Loaded, built in, or loadable (the kernel autoloads it on `ip link add ... wireguard`).
    Read from /sys and modules.dep rather than by running `modprobe -n`: one process less."""
    if os.path.exists("/sys/module/wireguard"):
        return True
    moddir = f"/lib/modules/{os.uname().release}"
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(f"{moddir}/{index}") as f:
                for line in f:
                    path = line.split(":", 1)[0]
                    if path.endswith(("/wireguard.ko", "/wireguard.ko.xz", "/wireguard.ko.zst")):
                        return True
        except OSError:
            continue
    return False


def _which(name: str) -> str | None:
    """shutil.which without importing shutil (start-up time)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def userspace_available() -> bool:
    return _which(USERSPACE_BINARY) is not None


def resolve(requested: Backend) -> str:
    """The backend to use: "kernel" or "userspace". Raises when the requested one is missing."""
    if requested is Backend.KERNEL:
        if not kernel_available():
            raise WgnsError(
                "the kernel has no WireGuard module",
                hint="use --backend userspace (wireguard-go) or load the wireguard module",
            )
        return "kernel"
    if requested is Backend.USERSPACE:
        if not userspace_available():
            raise WgnsError(f"{USERSPACE_BINARY} is not installed", hint="apt install wireguard-go")
        return "userspace"
    if kernel_available():
        return "kernel"
    if userspace_available():
        return "userspace"
    raise WgnsError(
        "no WireGuard backend: no kernel module and no wireguard-go",
        hint="apt install wireguard-go, or a kernel with CONFIG_WIREGUARD",
    )


def _listening(sock: str) -> bool:
    """The UAPI socket accepts connections. Existing is not enough: between bind() and listen()
    a connect fails, and `wg` then *unlinks* the socket as stale and falls back to the kernel."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(sock)
    except OSError:
        return False
    finally:
        s.close()
    return True


def start_userspace(
    ifname: str, birthplace: str | None, *, on_spawn: Callable[[int, int | None], None]
) -> Starting:
    """Start wireguard-go for IFNAME in BIRTHPLACE; :meth:`Starting.wait` waits until its UAPI
    socket answers (~4 ms), which the caller may spend on other work."""
    env = dict(os.environ)
    env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
    env.setdefault("LOG_LEVEL", "error")
    env.pop("WG_TUN_FD", None)
    env.pop("WG_UAPI_FD", None)
    # An unlinked file, not a pipe: Go dies of SIGPIPE writing to a closed stderr pipe.
    try:
        errlog = os.fdopen(os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600), "w+b")
    except OSError:  # a /tmp without O_TMPFILE support
        import tempfile

        errlog = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Starting.wait
    from wgns.system import spawn

    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        with netns.entered(birthplace):
            pid = spawn.spawn(
                [USERSPACE_BINARY, "-f", ifname],
                stdin=devnull,
                stdout=devnull,
                stderr=errlog.fileno(),
                env=env,
                new_session=True,
            )
    except BaseException as e:
        errlog.close()
        if isinstance(e, FileNotFoundError):
            raise WgnsError(f"{USERSPACE_BINARY} is not installed") from e
        raise
    finally:
        os.close(devnull)
    on_spawn(pid, proc_starttime(pid))
    # The daemon outlives us by design, in its own session; whoever inherits it reaps it.
    return Starting(ifname, pid, errlog)


class Starting:
    """A wireguard-go just started: its pid, and its stderr for the message if it fails."""

    def __init__(self, ifname: str, pid: int, errlog: IO[bytes]) -> None:
        self.ifname = ifname
        self.pid = pid
        self.errlog = errlog
        self.started = time.monotonic()

    def wait(self) -> None:
        """Until the UAPI socket answers; a WgnsError with its last words if it exits first."""
        from wgns.system import spawn

        sock = uapi_socket(self.ifname)
        deadline = self.started + START_TIMEOUT
        with self.errlog:
            while not _listening(sock):
                rc = spawn.exit_status(self.pid, block=False)
                if rc is not None:
                    self.errlog.seek(0)
                    err = self.errlog.read().decode(errors="replace").strip().splitlines()
                    last = err[-1] if err else ""
                    raise WgnsError(
                        f"{USERSPACE_BINARY} for {self.ifname} exited with status {rc}: {last}"
                    )
                if time.monotonic() > deadline:
                    raise WgnsError(
                        f"{USERSPACE_BINARY} for {self.ifname} did not start in {START_TIMEOUT}s"
                    )
                # wireguard-go usually answers within ~5 ms: a doubling backoff overshot that,
                # while a connect() attempt costs microseconds. Back off only when slow.
                slow = time.monotonic() - self.started > 0.25
                time.sleep(0.02 if slow else 0.0005)
