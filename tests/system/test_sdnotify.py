"""wgns.system.sdnotify against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgns.system import sdnotify

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_fields_arrive_as_one_datagram_of_lines(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path}
    assert sdnotify.notify(env, ready=1, status="handshake 3s ago via 198.18.1.2:51820")
    assert sock.recv(4096) == b"READY=1\nSTATUS=handshake 3s ago via 198.18.1.2:51820\n"
    assert sdnotify.notify(env, WATCHDOG=True)
    assert sock.recv(4096) == b"WATCHDOG=1\n"


def test_a_newline_in_a_value_cannot_forge_a_field(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sdnotify.notify({"NOTIFY_SOCKET": path}, status="bad\nREADY=1")
    assert sock.recv(4096) == b"STATUS=bad\n"


def test_an_abstract_address_is_reached() -> None:
    name = f"wgns-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.address({"NOTIFY_SOCKET": "@" + name}) == "\0" + name
        assert sdnotify.notify({"NOTIFY_SOCKET": "@" + name}, stopping=1)
        assert sock.recv(4096) == b"STOPPING=1\n"


def test_the_environment_of_a_real_process_is_used(listener: tuple[socket.socket, str]) -> None:
    """The default env is os.environ: a child started with NOTIFY_SOCKET (as systemd starts a
    service) reaches the socket, and the kernel says which process sent it."""
    sock, path = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = (
        "from wgns.system import sdnotify; raise SystemExit(0 if sdnotify.notify(ready=1) else 3)"
    )
    env = {**os.environ, "NOTIFY_SOCKET": path, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    assert child.wait(timeout=30) == 0
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1\n"
    ((level, kind, creds),) = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    assert int.from_bytes(creds[:4], sys.byteorder) == child.pid


def test_without_a_socket_nothing_is_sent_and_false_is_returned(tmp_path: Path) -> None:
    assert sdnotify.notify({}, ready=1) is False
    assert sdnotify.notify({"NOTIFY_SOCKET": "relative/path"}, ready=1) is False
    assert sdnotify.notify({"NOTIFY_SOCKET": "@"}, ready=1) is False
    # a path nobody listens on (systemd went away): False, no exception
    assert sdnotify.notify({"NOTIFY_SOCKET": str(tmp_path / "gone")}, ready=1) is False


def test_watchdog_interval_from_the_environment() -> None:
    me = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}) == 0.5
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({}) is None
