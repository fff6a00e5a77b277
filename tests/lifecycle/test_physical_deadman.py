"""The dead-man switch of physical mode: with the provider unreachable no handshake comes, and
everything is given back by the watcher on its own (see tests/lifecycle/test_physical.py for
the sandbox's eth0, its DHCP server and the simulated provider)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.commands import test_statusbar as bars
from tests.lifecycle import test_physical as base
from tests.lifecycle.test_physical import ETH, PHYS, curl, links, write_profile
from wgns.testing.sandbox import Sandbox, snapshot_diff
from wgns.testing.sim import Provider

host = base.host  # the fixture: eth0, its DHCP server, the provider
user = bars.user  # the fixture: the installed wgns run as nobody
LOG = f"log/{PHYS}/deadman.log"


def _without_deadman_log(snap: dict[str, Any]) -> dict[str, Any]:
    files = dict(snap["files"]["/run/wgns"])
    for key in (LOG, f"log/{PHYS}", "log"):
        files.pop(key, None)
    return {**snap, "files": {**snap["files"], "/run/wgns": files}}


def test_no_handshake_in_time_gives_everything_back(
    sandbox: Sandbox,
    host: Provider,
    wgns: Any,
) -> None:
    profile = write_profile(sandbox, host)
    host.cut_endpoint()  # the ISP drops WireGuard's packets: everything else flows
    before = sandbox.settled_snapshot()
    wgns("physical", "up", profile, "--deadman", "3")
    assert ETH in links(sandbox, PHYS)
    assert "watching" in wgns("physical", "status").stdout
    deadline = time.monotonic() + 30
    while PHYS in sandbox.netns_names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert PHYS not in sandbox.netns_names(), "the dead-man switch did not fire"
    assert "no handshake in 3s" in sandbox.read_text(f"/run/wgns/{LOG}")
    after = sandbox.settled_snapshot()
    diffs = snapshot_diff(before, _without_deadman_log(after))
    assert not diffs, diffs[:10]
    assert wgns("physical", "status").stdout.strip() == "physical mode is off"


def test_a_handshake_disarms_it(sandbox: Sandbox, host: Provider, wgns: Any, user: Any) -> None:
    profile = write_profile(sandbox, host, keepalive=1)
    wgns("physical", "up", profile, "--deadman", "3")
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"
    deadline = time.monotonic() + 10
    while "disarmed" not in wgns("physical", "status").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "disarmed" in wgns("physical", "status").stdout
    time.sleep(4)  # past the timeout: still up
    assert PHYS in sandbox.netns_names()
    # disarmed, the watcher keeps the status file current for status bars (no root needed)
    path = f"/run/wgns/status/{PHYS}.json"
    first = json.loads(sandbox.read_text(path))
    assert first["kind"] == "physical" and first["latest_handshake"] > 0
    assert [i["ifname"] for i in first["interfaces"]] == first["links"]
    deadline = time.monotonic() + 15
    while json.loads(sandbox.read_text(path))["published_at"] == first["published_at"]:
        assert time.monotonic() < deadline, "the physical status file is not refreshed"
        time.sleep(0.5)
    bar = user("status", "--format", "waybar")
    assert PHYS in json.loads(bar.stdout)["tooltip"]
    text = wgns("status").stdout
    assert f"namespace {PHYS}: physical mode, up" in text and "BROKEN" not in text
    assert curl(sandbox, f"http://{host.web_v4}/") == "198.18.1.2"
    wgns("physical", "down")
    assert PHYS not in sandbox.netns_names()
