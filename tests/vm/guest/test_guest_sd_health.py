"""Health that repairs, not restarts: wgns@heal (`wgns up --foreground`, userspace backend,
endpoint vpn.provider.test from the guest's /etc/hosts, looked up through nscd and resolved).

With a confined unit and a pinger inside the namespace: the wireguard-go daemon SIGKILLed, the
server moved to a new address (the name with it), the guest's uplink taken down and up. Each
time traffic comes back; through all of it the processes inside keep their PIDs, the namespace
its inode, and systemd never restarts wgns@heal (NRestarts=0, the same MainPID).

The one timing assertion is the behaviour the issue states as its goal: traffic is back within
2 s of the network coming back (link up and its route restored -> the first ping answered
through the tunnel). The other recoveries are timed and printed, not asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sdutil
from guestutil import sh
from sdutil import SAFETY, active, show, systemctl, wgns

pytestmark = sdutil.marks

NS = "heal"
WGNS_UNIT = f"wgns@{NS}.service"
APP = "wgvm-healapp.service"
APP_TEXT = """[Unit]
Description=wgns VM test: a service inside heal that must survive every repair

[Service]
Type=exec
ExecStart=/bin/sleep infinity
"""
GOAL = 2.0  # seconds: the recovery goal, network back -> first packet through
MOVED = "198.18.1.3"


class Pinger:
    """`ping -D` inside NS; the (unix) times of its answers."""

    def __init__(self, ns: str, address: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.2", "-W", "1", address],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.replies: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line)
            if m:
                self.replies.append(float(m.group(1)))

    def first_after(self, t: float, what: str, timeout: float = SAFETY) -> float:
        deadline = time.monotonic() + timeout
        while True:
            later = [r for r in self.replies if r > t]
            if later:
                return later[0]
            if time.monotonic() > deadline:
                pytest.fail(f"no answer through the tunnel within {timeout:.0f} s {what}",
                            pytrace=False)  # fmt: skip
            time.sleep(0.05)

    def silent_for(self, seconds: float) -> bool:
        last = self.replies[-1] if self.replies else 0.0
        return time.time() - last >= seconds

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def status() -> dict[str, Any]:
    (entry,) = json.loads(wgns("status", NS, "--json").stdout)["namespaces"]
    return entry  # type: ignore[no-any-return]


def server_handshake(facts: dict[str, Any]) -> int:
    s = facts["server"]
    out = sh("nsenter", f"--mount=/proc/{s['wg_pid']}/ns/mnt", f"--net=/run/netns/{s['netns']}",
             "wg", "show", s["ifname"], "latest-handshakes").stdout  # fmt: skip
    key = facts["clients"][NS]["public_key"]
    return next((int(f[1]) for f in (ln.split() for ln in out.splitlines()) if f[0] == key), 0)


def write_hosts(address: str, hostname: str) -> None:
    hosts = Path("/etc/hosts")
    text = re.sub(rf"^\S+\t{re.escape(hostname)}$", f"{address}\t{hostname}", hosts.read_text(),
                  flags=re.M)  # fmt: skip
    with open(hosts, "w") as f:  # in place: what nscd and resolved watch
        f.write(text)


def said(text: str) -> int:
    """How many times wgns@heal has logged TEXT in this boot."""
    return sdutil.journal(WGNS_UNIT).count(text)


@pytest.fixture
def running() -> Iterator[dict[str, Any]]:
    facts = sdutil.facts()
    with sdutil.unit_files({APP: APP_TEXT}):
        try:
            systemctl("start", WGNS_UNIT)
            wgns("confine", APP, NS)
            systemctl("start", APP)
            yield facts
        finally:
            systemctl("stop", APP, WGNS_UNIT, check=False)
            wgns("confine", "--remove", APP, check=False)
            s = facts["server"]
            write_hosts(s["uplink_v4"], s["hostname"])
            sh("ip", "-n", s["netns"], "addr", "add", f"{s['uplink_v4']}/24", "dev", "eth0",
               check=False)  # fmt: skip
            sh("ip", "link", "set", facts["uplink"], "up", check=False)
            sh("ip", "route", "replace", "default", "via", facts["isp_v4"], "dev", facts["uplink"],
               check=False)  # fmt: skip


def test_repairs_keep_the_processes_inside_and_traffic_comes_back(
    running: dict[str, Any],
) -> None:
    facts = running
    server = facts["server"]
    main_pid = sdutil.main_pid(WGNS_UNIT)
    app_pid = sdutil.main_pid(APP)
    inode = sdutil.netns_inode(NS)
    assert sdutil.pid_netns_inode(app_pid) == inode
    pinger = Pinger(NS, facts["web_v4"])
    timings: dict[str, float] = {}
    try:
        pinger.first_after(0, "at the start")
        iface = status()["interfaces"][0]
        assert iface["peers"][0]["endpoint"] == f"{server['uplink_v4']}:{server['port']}"

        # 1. the wireguard-go daemon killed: repaired in place
        daemon = int(iface["daemon"]["pid"])
        repaired = said("repaired in place")
        t = time.time()
        os.kill(daemon, signal.SIGKILL)
        sdutil.wait_for("the daemon to be repaired", lambda: said("repaired in place") > repaired)
        seen = time.time()
        assert int(status()["interfaces"][0]["daemon"]["pid"]) != daemon
        # (an upper bound: the time to notice the journal line is in it)
        timings["daemon killed"] = pinger.first_after(seen, "after the daemon was repaired") - t

        # 2. the server moves to a new address, and the host name with it (nscd's and
        # resolved's /etc/hosts); the old address goes: the loop looks the name up again
        sh("ip", "netns", "exec", server["netns"], "sysctl", "-q", "-w",
           "net.ipv4.conf.eth0.promote_secondaries=1")  # fmt: skip
        sh("ip", "-n", server["netns"], "addr", "add", f"{MOVED}/24", "dev", "eth0")
        write_hosts(MOVED, server["hostname"])
        t = time.time()
        sh("ip", "-n", server["netns"], "addr", "del", f"{server['uplink_v4']}/24", "dev", "eth0")
        sh("ip", "-n", server["netns"], "route", "replace", "default", "via", server["isp_v4"])
        sdutil.wait_for("the moved name to be followed",
                        lambda: said(f"now resolves to {MOVED}") > 0)  # fmt: skip
        seen = time.time()
        timings["endpoint moved"] = pinger.first_after(seen, "after the endpoint moved") - t
        peer = status()["interfaces"][0]["peers"][0]
        assert peer["endpoint"] == f"{MOVED}:{server['port']}"

        # 3. the uplink down and up again, its default route back (as DHCP would)
        before = server_handshake(facts)
        changed = said("network changed in the birthplace")
        time.sleep(1.1)  # a handshake after this one has a later (whole-second) timestamp
        sh("ip", "link", "set", facts["uplink"], "down")
        sdutil.wait_for("the pings to stop", lambda: pinger.silent_for(1.5), timeout=30)
        sh("ip", "link", "set", facts["uplink"], "up")
        sh("ip", "route", "replace", "default", "via", facts["isp_v4"], "dev", facts["uplink"])
        back = time.time()
        recovery = pinger.first_after(back, "after the uplink came back") - back
        timings["link down/up"] = recovery
        sdutil.wait_for("the loop to see the network change",
                        lambda: said("network changed in the birthplace") > changed)  # fmt: skip
        sdutil.wait_for("a fresh handshake", lambda: server_handshake(facts) > before)
        print("recovery times (s):", {k: round(v, 2) for k, v in timings.items()})
        # the goal, a behaviour: traffic back within 2 s of the network coming back
        assert recovery <= GOAL, f"traffic came back {recovery:.2f} s after the link"

        # nothing inside was touched, systemd restarted nothing
        assert pinger.proc.poll() is None
        inside = [int(p) for p in sh("ip", "netns", "pids", NS).stdout.split()]
        assert pinger.proc.pid in inside and app_pid in inside
        assert sdutil.main_pid(APP) == app_pid and active(APP) == "active"
        assert sdutil.netns_inode(NS) == inode
        props = show(WGNS_UNIT, "NRestarts", "MainPID")
        assert props == {"NRestarts": "0", "MainPID": str(main_pid)}
        assert active(WGNS_UNIT) == "active"
    finally:
        pinger.stop()
