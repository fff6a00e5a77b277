"""sd_notify(3) without libsystemd: one datagram of NAME=VALUE lines to $NOTIFY_SOCKET.

systemd passes a Type=notify service the path of its notification socket in $NOTIFY_SOCKET: a
filesystem path (/run/systemd/notify), or an abstract one written with a leading '@' (the '@'
stands for the address's leading NUL byte, as sd_notify does). The message is sent as one
AF_UNIX datagram; systemd reads READY=1, STATUS=..., WATCHDOG=1, STOPPING=1, RELOADING=1,
MAINPID=... from it. With NotifyAccess=main, only the main process's datagrams count (the
kernel attaches the sender's credentials), so the caller must be that process.

$WATCHDOG_USEC (and $WATCHDOG_PID, when set: the pid it is meant for) say that WatchdogSec= is
on: WATCHDOG=1 must arrive more often than that, or systemd treats the service as hung.

Without $NOTIFY_SOCKET (not started by systemd, or by a Type= that does not listen) every call
is a no-op that returns False: the caller never needs to know whether it runs under systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def address(env: Mapping[str, str] | None = None) -> str | None:
    """The notification socket's address as socket.sendto() takes it ('\\0...' for an abstract
    one); None when there is none, or it is neither a path nor '@name'."""
    value = (os.environ if env is None else env).get(NOTIFY_SOCKET, "")
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def message(fields: Mapping[str, object]) -> bytes:
    """FIELDS as the datagram: NAME=VALUE lines, names upper-cased (ready=1 -> READY=1).
    A value holding a newline would start a line of its own: it is cut there."""
    lines = []
    for name, value in fields.items():
        text = str(int(value) if isinstance(value, bool) else value)
        lines.append(f"{name.upper()}={text.splitlines()[0] if text else ''}")
    return ("\n".join(lines) + "\n").encode()


def notify(env: Mapping[str, str] | None = None, **fields: object) -> bool:
    """Send FIELDS (``notify(ready=1, status="up")``) to the service manager. True when it was
    sent; False without a notification socket, or when sending failed (systemd gone): a
    notification is never worth failing over."""
    where = address(env)
    if where is None or not fields:
        return False
    data = message(fields)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(data, where)
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds within which WATCHDOG=1 must be sent (None: no watchdog for this process).

    $WATCHDOG_PID, when set, names the process the watchdog is for: another process (a child
    that inherited the environment) has none."""
    environ = os.environ if env is None else env
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000
