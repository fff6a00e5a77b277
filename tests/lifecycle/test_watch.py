"""`wgns up --foreground` for real, in the sandbox against the simulated provider: READY=1 once
up, STATUS=/WATCHDOG=1, SIGTERM takes it down; a dead wireguard-go repaired in place; traffic
back after the birthplace's uplink goes down and up; a moved host name followed.

Run with the capability bounding set and NoNewPrivileges of wgns@.service (read from its
template), so that the unit's CapabilityBoundingSet= is tested too. Only safety timeouts here:
how fast is bench/bench_recovery.py's business."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle.test_lifecycle import NS, curl, status, write_profile
from wgns.system import names
from wgns.testing.sandbox import REPO_ROOT, SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider

UNIT = Path(REPO_ROOT) / "scripts" / "systemd" / "wgns@.service.in"
NOTIFY = f"{SANDBOX_TMP}/notify"
SAFETY = 30.0


def unit_caps() -> str:
    """CapabilityBoundingSet= of the unit as setpriv's --bounding-set list."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            caps = line.partition("=")[2].split()
            return ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in caps)
    raise AssertionError("the unit has no CapabilityBoundingSet=")


class Foreground:
    """`wgns up --foreground PROFILE --name NS` in the sandbox, its notifications collected
    from a real AF_UNIX datagram socket (NOTIFY_SOCKET) and its stderr from a pipe."""

    def __init__(self, sandbox: Sandbox, profile: str, ns: str = NS) -> None:
        self.sandbox = sandbox
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        host_path = str(sandbox.path(NOTIFY))
        if os.path.exists(host_path):
            os.unlink(host_path)
        self.sock.bind(host_path)
        self.messages: queue.Queue[tuple[float, dict[str, str]]] = queue.Queue()
        self.stderr: list[str] = []
        env = sandbox.python_env({"NOTIFY_SOCKET": NOTIFY, "WATCHDOG_USEC": "10000000"})
        argv = ["setpriv", "--no-new-privs", f"--bounding-set=-all,{unit_caps()}", "--"]
        argv += [sys.executable, "-m", "wgns", "up", "--foreground", profile, "--name", ns]
        self.proc = sandbox.popen(argv, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._notifications, daemon=True).start()
        threading.Thread(target=self._errors, daemon=True).start()

    def _notifications(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.put((time.monotonic(), fields))

    def _errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def next(self, key: str, timeout: float = SAFETY) -> dict[str, str]:
        """The next notification holding KEY (those before it are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}= within {timeout}s; stderr: {self.stderr}")
            try:
                _, fields = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if key in fields:
                return fields

    def wait_log(self, text: str, timeout: float = SAFETY) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stderr:
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} within {timeout}s: {self.stderr}")

    def stop(self, timeout: float = SAFETY) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.sock.close()


@pytest.fixture
def foreground(sandbox: Sandbox) -> Iterator[list[Foreground]]:
    started: list[Foreground] = []
    try:
        yield started
    finally:
        for fg in started:
            fg.stop()


def start(sandbox: Sandbox, started: list[Foreground], profile: str) -> Foreground:
    fg = Foreground(sandbox, profile)
    started.append(fg)
    return fg


def pings(sandbox: Sandbox, address: str, ns: str = NS) -> bool:
    return (
        sandbox.run(["ping", "-c", "1", "-W", "1", address], netns=ns, check=False).returncode == 0
    )


def wait_ping(sandbox: Sandbox, address: str, timeout: float = SAFETY) -> None:
    deadline = time.monotonic() + timeout
    while not pings(sandbox, address):
        assert time.monotonic() < deadline, f"no ping through the tunnel within {timeout}s"


def daemon_pid(wgns: Any) -> int:
    return int(status(wgns)["interfaces"][0]["daemon"]["pid"])


def net_inode(sandbox: Sandbox, ns: str = NS) -> int:
    return sandbox.path(f"/run/netns/{ns}").stat().st_ino


def test_ready_once_up_status_and_watchdog_then_sigterm_takes_it_down(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    fg = start(sandbox, foreground, write_profile(sandbox, provider.client_conf()))
    ready = fg.next("READY")
    assert ready["READY"] == "1"
    # READY=1 only once the namespace is up: record at "up", kill switch loaded, tunnel works
    rec = json.loads(sandbox.read_text(f"/run/wgns/{NS}.json"))
    assert rec["phase"] == "up"
    table = names.nft_table(NS)
    sandbox.run(["nft", "list", "table", "inet", table], netns=NS)
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    beat = fg.next("WATCHDOG")
    assert beat["WATCHDOG"] == "1"
    deadline = time.monotonic() + SAFETY
    while "handshake" not in (line := fg.next("STATUS")["STATUS"]) or "ago" not in line:
        assert time.monotonic() < deadline
    assert line.endswith(f"via {provider.endpoint_v4}")
    assert fg.stop() == 0
    assert NS not in sandbox.netns_names()
    assert not sandbox.path(f"/run/wgns/{NS}.json").exists()
    assert fg.next("STOPPING", timeout=5)["STOPPING"] == "1"


def test_the_command_line_refuses_foreground_with_dry_run_or_reload(wgns: Any) -> None:
    for other in ("--dry-run", "--reload"):
        r = wgns("up", "--foreground", other, "nowhere", check=False)
        assert r.returncode == 2 and f"--foreground and {other}" in r.stderr


ECHO_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=60)
print("connected", flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(100)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
    print(buf.decode().strip(), flush=True)
"""


def _readline(proc: subprocess.Popen[str], timeout: float = SAFETY) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no answer from the echo client"
    return proc.stdout.readline().strip()


def test_a_killed_wireguard_go_is_repaired_in_place(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """Adopted (brought up by a plain `up` first), then its daemon SIGKILLed: the loop remakes
    it; the namespace is the same, the process inside keeps its pid and its TCP connection."""
    profile = write_profile(sandbox, provider.client_conf())
    wgns("up", profile, "--name", NS)
    inode = net_inode(sandbox)
    fg = start(sandbox, foreground, profile)
    fg.next("READY")
    assert net_inode(sandbox) == inode  # adopted, not made again
    client = sandbox.popen(
        [sys.executable, "-c", ECHO_CLIENT, provider_web(provider)],
        netns=NS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _readline(client) == "connected"
        assert client.stdin is not None
        client.stdin.write("before\n")
        client.stdin.flush()
        assert _readline(client) == "before"
        old = daemon_pid(wgns)
        os.kill(old, signal.SIGKILL)
        fg.wait_log("repaired in place")
        assert daemon_pid(wgns) != old
        assert net_inode(sandbox) == inode
        assert client.poll() is None
        client.stdin.write("after\n")
        client.stdin.flush()
        assert _readline(client) == "after"  # the same connection, through the new daemon
        assert client.pid in [int(p) for p in pids_in(sandbox)]
    finally:
        client.kill()
        client.wait()
    assert fg.stop() == 0


def provider_web(provider: Provider) -> str:
    return str(provider.web_v4)


def pids_in(sandbox: Sandbox, ns: str = NS) -> list[str]:
    return sandbox.run(["ip", "netns", "pids", ns]).stdout.split()


def test_traffic_comes_back_after_the_uplink_goes_down_and_up(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """The birthplace's uplink down, then up and its default route back (as DHCP would):
    the loop sees the events, forces a fresh handshake (the server sees a new one), and pings
    through the tunnel work again."""
    client = provider.new_client()
    fg = start(sandbox, foreground, write_profile(sandbox, provider.client_conf(client)))
    fg.next("READY")
    wait_ping(sandbox, provider.web_v4)
    before = provider.wait_handshake(client.public_key)
    time.sleep(1.1)  # a handshake after this one has a later (whole-second) timestamp
    sandbox.run(["ip", "link", "set", "uplink0", "down"])
    assert not pings(sandbox, provider.web_v4)
    sandbox.run(["ip", "link", "set", "uplink0", "up"])
    sandbox.run(["ip", "route", "replace", "default", "via", "198.18.0.1", "dev", "uplink0"])
    wait_ping(sandbox, provider.web_v4)
    fg.wait_log("network changed in the birthplace")
    deadline = time.monotonic() + SAFETY
    while provider.server_handshakes().get(client.public_key, 0) <= before:
        assert time.monotonic() < deadline, "no fresh handshake after the network came back"
        time.sleep(0.1)
    assert fg.stop() == 0


def test_a_host_name_endpoint_that_moves_is_followed(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """Endpoint = vpn.provider.test, answered by the sandbox's /etc/hosts (its /etc is an
    overlay). The server moves to a second address and the name with it; the old address goes
    away. The loop sees traffic stall, looks the name up again in the birthplace, moves the
    peer, and pings work again."""
    server = provider.server
    sandbox.write_file("/etc/hosts", f"127.0.0.1 localhost\n{server.uplink_v4} {server.hostname}\n")
    conf = provider.client_conf(ipv6=False, endpoint=server.endpoint_name)
    fg = start(sandbox, foreground, write_profile(sandbox, conf))
    fg.next("READY")
    wait_ping(sandbox, provider.web_v4)
    peer = status(wgns)["interfaces"][0]["peers"][0]
    assert peer["endpoint"] == server.endpoint_v4
    moved = "198.18.1.3"
    # the old address goes, the new one (in the same subnet) stays: promoted, not deleted with it
    sandbox.run(
        ["sysctl", "-q", "-w", "net.ipv4.conf.eth0.promote_secondaries=1"], netns=server.netns
    )
    sandbox.run(["ip", "-n", server.netns, "addr", "add", f"{moved}/24", "dev", "eth0"])
    sandbox.write_file("/etc/hosts", f"127.0.0.1 localhost\n{moved} {server.hostname}\n")
    sandbox.run(["ip", "-n", server.netns, "addr", "del", f"{server.uplink_v4}/24", "dev", "eth0"])
    sandbox.run(["ip", "-n", server.netns, "route", "replace", "default", "via", server.isp_v4])
    pinger = sandbox.popen(
        ["ping", "-i", "0.2", "-W", "1", provider.web_v4], netns=NS, stdout=subprocess.DEVNULL
    )
    try:
        line = fg.wait_log(f"now resolves to {moved}", timeout=60)
        assert server.hostname in line
        wait_ping(sandbox, provider.web_v4)
    finally:
        pinger.kill()
        pinger.wait()
    peer = status(wgns)["interfaces"][0]["peers"][0]
    assert peer["endpoint"] == f"{moved}:{server.port}"
    assert fg.stop() == 0


def test_taken_down_by_someone_else_ends_the_loop_with_its_own_status(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """A reload next to the loop works; a `wgns down` ends it: exit 3 (wgns@.service does not
    restart on it) with a line saying so."""
    client = provider.new_client()
    path = write_profile(sandbox, provider.client_conf(client))
    fg = start(sandbox, foreground, path)
    fg.next("READY")
    sandbox.write_file(path, provider.client_conf(client, mtu=1300), mode=0o600)
    r = wgns("up", "--reload", path, "--name", NS)
    assert "reloaded" in r.stderr
    fg.next("WATCHDOG")
    assert fg.proc.poll() is None
    wgns("down", NS)
    assert fg.proc.wait(SAFETY) == 3
    fg.wait_log("taken down by someone else")


def test_the_status_file_is_kept_current_for_status_bars(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """The loop publishes the namespace's status file again every few seconds (a user's status
    bar reads it, wgns.features.statusfile): after traffic, a newer file shows the handshake
    with no root `wgns status` in between; SIGTERM's `down` withdraws it."""
    path = f"/run/wgns/status/{NS}.json"
    fg = start(sandbox, foreground, write_profile(sandbox, provider.client_conf()))
    fg.next("READY")
    assert json.loads(sandbox.read_text(path))["phase"] == "up"  # published by the `up`
    wait_ping(sandbox, provider.web_v4)
    since = time.time()
    deadline = time.monotonic() + SAFETY
    while True:
        doc = json.loads(sandbox.read_text(path))
        if doc["published_at"] > since and doc["interfaces"][0]["latest_handshake"] > 0:
            break
        assert time.monotonic() < deadline, f"the status file was not refreshed: {doc}"
        time.sleep(0.2)
    assert doc["interfaces"][0]["rx_bytes"] > 0
    assert fg.stop() == 0
    assert not sandbox.path(path).exists()


def test_a_second_foreground_for_the_same_namespace_is_refused_and_the_first_goes_on(
    sandbox: Sandbox, provider: Provider, wgns: Any, foreground: list[Foreground]
) -> None:
    """Two loops would repair and re-resolve against each other: the second one exits 2 (which
    wgns@.service does not restart on), naming the first; a new loop may start once it ended."""
    client = provider.new_client()
    path = write_profile(sandbox, provider.client_conf(client))
    first = start(sandbox, foreground, path)
    first.next("READY")
    record = sandbox.read_text(f"/run/wgns/{NS}.json")
    second = wgns("up", "--foreground", path, "--name", NS, check=False, timeout=SAFETY)
    assert second.returncode == 2, second.stderr
    # setpriv execs wgns: the loop's pid is the one started
    assert f"already watched by another `wgns up --foreground` (pid {first.proc.pid})" in (
        second.stderr
    )
    assert first.proc.poll() is None
    assert sandbox.read_text(f"/run/wgns/{NS}.json") == record  # the second changed nothing
    assert pings(sandbox, provider.web_v4)
    assert first.stop() == 0
    third = start(sandbox, foreground, path)
    third.next("READY")
    assert third.stop() == 0
