"""Setting up a sandbox: new network + mount namespaces with private /run, /etc and /sys.

Shared by the keeper process of :meth:`wgns.testing.sandbox.Sandbox.spawn` and by
:meth:`~wgns.testing.sandbox.Sandbox.enter_self`. The keeper is started as
``python -I -S -c "...keeper_main()"``: this module imports only the standard library and
:mod:`wgns.system.netns`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import sys

from wgns.system import netns
from wgns.testing import occupants

#: Scratch directory inside every sandbox (on its private /run tmpfs).
SANDBOX_DIR = "/run/.sandbox"
#: Private temporary directory inside the sandbox (for files tests hand to commands).
SANDBOX_TMP = f"{SANDBOX_DIR}/tmp"
_ETC_UPPER = f"{SANDBOX_DIR}/etc-up"
_ETC_WORK = f"{SANDBOX_DIR}/etc-work"
_PRIVATE_DIRS = ("/run/netns", "/run/wgns", "/run/wireguard", SANDBOX_DIR, SANDBOX_TMP)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _set_link_up(ifname: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", ifname.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        req = struct.pack("16sH14x", ifname.encode(), flags | _IFF_UP)
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, req)


def unshare_and_setup() -> None:
    """Move the calling process into new net+mount namespaces and build the private mounts."""
    netns.unshare(netns.CLONE_NEWNET | netns.CLONE_NEWNS)
    # nothing mounted from here on may propagate back to the host
    netns.mount(None, "/", None, netns.MS_REC | netns.MS_PRIVATE)
    netns.mount("tmpfs", "/run", "tmpfs", netns.MS_NOSUID | netns.MS_NODEV, "mode=0755")
    for d in (*_PRIVATE_DIRS, _ETC_UPPER, _ETC_WORK):
        os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(SANDBOX_TMP, 0o1777)
    netns.mount(
        "overlay",
        "/etc",
        "overlay",
        0,
        f"lowerdir=/etc,upperdir={_ETC_UPPER},workdir={_ETC_WORK}",
    )
    # sysfs shows the network devices of the namespace that mounted it
    with contextlib.suppress(OSError):
        netns.mount("sysfs", "/sys", "sysfs", netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC)
    _set_link_up("lo")


def keeper_main() -> None:
    """Entry point of the keeper process of :meth:`Sandbox.spawn`."""

    def _on_signal(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        unshare_and_setup()
    except Exception as e:
        sys.stderr.write(f"sandbox keeper: {type(e).__name__}: {e}\n")
        raise SystemExit(1) from e
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(4096):
            pass  # the parent never writes; EOF means it closed us or died
    finally:
        me = os.getpid()
        fds, inodes = occupants.pin_namespaces(me)
        try:
            occupants.kill_processes(inodes, exclude={me})
        finally:
            occupants.unpin(fds)
