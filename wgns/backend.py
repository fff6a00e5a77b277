"""WireGuard backends: the kernel module, or wireguard-go owned by wgns.

The userspace daemon is started in the birthplace namespace (so its UDP socket lives there), in the
foreground (``-f``) and in its own session, so that it outlives the `wgns up` that started it and
its pid and start time identify it exactly for `down`. Its UAPI socket is
/run/wireguard/IFNAME.sock; IFNAME is derived from (namespace, label), so sockets never clash.
wgns configures the daemon through that socket itself (:func:`wgns.wg.uapi_set`), as `wg setconf`
would.
"""

from __future__ import annotations

import _socket  # the C module: socket.py adds enums and selectors (~3 ms) unused here
import os
import subprocess
import time
from pathlib import Path

from wgns import netns
from wgns.errors import WgnsError
from wgns.model import Backend
from wgns.ops import proc_starttime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable

WIREGUARD_RUN_DIR = Path("/run/wireguard")
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


def socket_path(ifname: str) -> Path:
    return WIREGUARD_RUN_DIR / f"{ifname}.sock"


def _listening(sock: Path) -> bool:
    """The UAPI socket accepts connections. Existing is not enough: between bind() and listen()
    a connect fails, and `wg` then *unlinks* the socket as stale and falls back to the kernel."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(str(sock))
    except OSError:
        return False
    finally:
        s.close()
    return True


def start_userspace(
    ifname: str, birthplace: str | None, *, on_spawn: Callable[[int, int | None], None]
) -> None:
    """Start wireguard-go for IFNAME in BIRTHPLACE and wait until its UAPI socket answers."""
    env = dict(os.environ)
    env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
    env.setdefault("LOG_LEVEL", "error")
    env.pop("WG_TUN_FD", None)
    env.pop("WG_UAPI_FD", None)
    sock = socket_path(ifname)
    # An unlinked file, not a pipe: Go dies of SIGPIPE writing to a closed stderr pipe.
    try:
        errlog = os.fdopen(os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600), "w+b")
    except OSError:  # a /tmp without O_TMPFILE support
        import tempfile

        errlog = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
    with netns.entered(birthplace), errlog:
        try:
            proc = subprocess.Popen(
                [USERSPACE_BINARY, "-f", ifname],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errlog,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as e:
            raise WgnsError(f"{USERSPACE_BINARY} is not installed") from e
        on_spawn(proc.pid, proc_starttime(proc.pid))
        started = time.monotonic()
        deadline = started + START_TIMEOUT
        while not _listening(sock):
            rc = proc.poll()
            if rc is not None:
                errlog.seek(0)
                err = errlog.read().decode(errors="replace").strip().splitlines()
                last = err[-1] if err else ""
                raise WgnsError(f"{USERSPACE_BINARY} for {ifname} exited with status {rc}: {last}")
            if time.monotonic() > deadline:
                raise WgnsError(
                    f"{USERSPACE_BINARY} for {ifname} did not start in {START_TIMEOUT}s"
                )
            # wireguard-go usually answers within ~20 ms: a doubling backoff overshot that by up
            # to 15 ms, while a connect() attempt costs microseconds. Back off only when slow.
            time.sleep(0.001 if time.monotonic() - started < 0.25 else 0.02)
    # The daemon outlives us by design; stop Popen's destructor from warning about it.
    proc.returncode = 0
