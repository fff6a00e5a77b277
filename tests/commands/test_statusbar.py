"""`wgns status --format i3bar|waybar [--watch]`, and `wgns status` without root, for real: a
namespace up against the simulated provider in the sandbox, read by the user `nobody` through
the installed launcher (a status bar runs as the user), from the status files.

Staleness is shown by editing a status file's times, as a file nobody refreshed would have
them (waiting minutes for it is not a test). The judgments themselves are pure functions of a
document and the time, tested last."""

from __future__ import annotations

import json
import select
import subprocess
import time
from typing import Any

import pytest

from tests.commands.test_exec import write_launcher
from tests.features.test_statusfile import STATUS, ping
from tests.lifecycle.test_lifecycle import NS, write_profile
from wgns.commands import statusbar
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
GOOD, DEGRADED, BAD = statusbar.COLORS["up"], statusbar.COLORS["stale"], statusbar.COLORS["down"]


@pytest.fixture
def user(sandbox: Sandbox) -> Any:
    """Run the installed wgns (the launcher) as nobody: ``user("status", "--format", "i3bar")``."""
    launcher = write_launcher(sandbox)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sandbox.run([*AS_NOBODY, launcher, *args], check=check)

    run.argv = [*AS_NOBODY, launcher]  # type: ignore[attr-defined]
    return run


def up_with_handshake(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    ping(sandbox, provider.web_v4)
    wgns("status", NS)  # root's status refreshes the status file


def test_a_user_gets_i3bar_and_waybar_output_with_the_handshake(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    up_with_handshake(sandbox, provider, wgns)
    blocks = json.loads(user("status", "--format", "i3bar").stdout)
    (block,) = blocks
    assert block["name"] == "wgns" and block["instance"] == NS
    assert block["color"] == GOOD, block
    assert block["full_text"].startswith(f"{NS}: up, handshake ") and "↓" in block["full_text"]
    assert block["short_text"] == f"{NS}: up"

    bar = json.loads(user("status", "--format", "waybar").stdout)
    assert bar["class"] == "up" and bar["alt"] == "up"
    assert bar["text"].startswith(f"{NS}: up, handshake ")
    assert "handshake" in bar["tooltip"] and "figures" in bar["tooltip"]
    assert "percentage" not in bar  # no wifi: nothing to measure

    text = user("status").stdout
    assert text.startswith(f"{NS}: up (handshake ") and " old" in text.splitlines()[0]
    doc = json.loads(user("status", NS, "--json").stdout)
    assert doc["source"] == "status files" and doc["namespaces"][0]["name"] == NS
    assert doc["namespaces"][0]["age"] >= 0
    wgns("down", NS)


def test_a_user_cannot_read_the_record_and_the_status_file_says_enough(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    cat = sandbox.run([*AS_NOBODY, "cat", f"/run/wgns/{NS}.json"], check=False)
    assert cat.returncode != 0 and "Permission denied" in cat.stderr
    # what `up` published, with no root `wgns status` since
    (published,) = json.loads(user("status", "--json").stdout)["namespaces"]
    assert published["name"] == NS and published["phase"] == "up"
    missing = user("status", "other", check=False)
    assert missing.returncode == 1 and "other has no status file" in missing.stderr
    wgns("down", NS)


def _read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no line from wgns status --watch"
    return proc.stdout.readline()


def test_watch_streams_the_i3bar_protocol_and_waybar_lines(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    up_with_handshake(sandbox, provider, wgns)
    for fmt in ("i3bar", "waybar"):
        argv = [*user.argv, "status", "--format", fmt, "--watch", "--interval", "0.2"]
        proc = sandbox.popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            if fmt == "i3bar":
                assert json.loads(_read_line(proc)) == {"version": 1}
                assert _read_line(proc).strip() == "["
                first = json.loads(_read_line(proc))
                second = _read_line(proc)
                assert second.startswith(",")  # the endless array's next element
                for blocks in (first, json.loads(second[1:])):
                    assert blocks[0]["instance"] == NS and blocks[0]["color"] == GOOD
            else:
                for _ in range(2):
                    assert json.loads(_read_line(proc))["class"] == "up"
            assert proc.poll() is None  # still streaming
        finally:
            proc.terminate()
            proc.wait(10)
    wgns("down", NS)


def test_watch_follows_a_down_at_once_not_at_the_next_interval(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    """An interval of 10 minutes: the line after `down` comes because the file went (the
    30 s below is only a safety timeout)."""
    up_with_handshake(sandbox, provider, wgns)
    argv = [*user.argv, "status", "--format", "waybar", "--watch", "--interval", "600"]
    proc = sandbox.popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(_read_line(proc))["class"] == "up"
        wgns("down", NS)
        assert json.loads(_read_line(proc))["class"] == "none"
    finally:
        proc.terminate()
        proc.wait(10)


def _edit(sandbox: Sandbox, **changes: Any) -> None:
    doc = json.loads(sandbox.read_text(STATUS))
    for key, value in changes.items():
        if key == "latest_handshake":
            for i in doc["interfaces"]:
                i[key] = value
        else:
            doc[key] = value
    sandbox.write_file(STATUS, json.dumps(doc), mode=0o644)


def test_a_file_nobody_refreshes_and_an_old_handshake_are_shown_stale(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    up_with_handshake(sandbox, provider, wgns)
    _edit(sandbox, published_at=time.time() - 150)  # no watcher, no root status since
    (block,) = json.loads(user("status", "--format", "i3bar").stdout)
    assert block["color"] == DEGRADED and block["full_text"] == f"{NS}: up? (figures 2m old)"
    assert "figures 2m old" in user("status").stdout

    now = time.time()
    _edit(sandbox, published_at=now, latest_handshake=int(now) - 300)
    (block,) = json.loads(user("status", "--format", "i3bar").stdout)
    assert block["color"] == DEGRADED
    assert block["full_text"].startswith(f"{NS}: stale, handshake 5m ago")
    # what `up` published, with no root `wgns status` since
    (published,) = json.loads(user("status", "--json").stdout)["namespaces"]
    assert published["name"] == NS and published["phase"] == "up"

    # root's status reads the device again: the real handshake, fresh
    ping(sandbox, provider.web_v4)
    (block,) = json.loads(wgns("status", "--format", "i3bar").stdout)
    assert block["color"] == GOOD
    wgns("down", NS)


def test_down_withdraws_it_and_the_bar_says_so(
    sandbox: Sandbox, provider: Provider, wgns: Any, user: Any
) -> None:
    up_with_handshake(sandbox, provider, wgns)
    wgns("down", NS)
    assert not sandbox.path(STATUS).exists()
    (block,) = json.loads(user("status", "--format", "i3bar").stdout)
    assert block["full_text"] == "wgns: no tunnel" and block["color"] == BAD
    (block,) = json.loads(user("status", NS, "--format", "i3bar").stdout)
    assert block["full_text"] == f"{NS}: DOWN (not up)" and block["urgent"] is True
    assert json.loads(user("status", "--format", "waybar").stdout)["class"] == "none"
    assert "no namespaces published" in user("status").stdout


PUBLISH_PHYSICAL = """
from wgns.features import linkinfo, statusfile
statusfile.publish("phys", {"kind": "physical", **linkinfo.physical_link("phys", ["eth9"])})
"""


def test_a_physical_namespace_is_shown_with_its_link_and_refreshed_by_root(
    sandbox: Sandbox, wgns: Any, user: Any
) -> None:
    """What physical mode publishes (kind "physical", wgns.features.linkinfo's links), shown
    next to the tunnels; root's status reads its links again."""
    sandbox.run(["ip", "netns", "add", "phys"])
    try:
        sandbox.run(["ip", "link", "add", "eth9", "type", "veth", "peer", "name", "isp9"])
        sandbox.run(["ip", "link", "set", "eth9", "netns", "phys"])
        sandbox.run(["ip", "link", "set", "isp9", "up"])
        sandbox.run(["ip", "-n", "phys", "link", "set", "eth9", "up"])
        sandbox.python(PUBLISH_PHYSICAL)
        (block,) = json.loads(user("status", "--format", "i3bar").stdout)
        assert block["instance"] == "phys" and block["color"] == BAD  # no address yet
        assert block["full_text"] == "phys: eth9 no address"

        sandbox.run(["ip", "-n", "phys", "address", "add", "192.0.2.10/24", "dev", "eth9"])
        (block,) = json.loads(user("status", "--format", "i3bar").stdout)
        assert block["color"] == BAD  # nobody refreshed it yet
        (block,) = json.loads(wgns("status", "--format", "i3bar").stdout)
        assert block["color"] == GOOD and block["full_text"] == "phys: eth9 192.0.2.10/24"
        doc = json.loads(sandbox.read_text("/run/wgns/status/phys.json"))
        assert doc["kind"] == "physical" and doc["interfaces"][0]["addresses"] == ["192.0.2.10/24"]
        assert "192.0.2.10/24" in user("status", "phys").stdout
        # physical mode's record (extra.kind "physical"): root's status of it, in any format,
        # leaves the file physical (its wg devices live elsewhere: not a tunnel namespace)
        record = {"ns": "phys", "phase": "up", "extra": {"kind": "physical"}}
        sandbox.write_file("/run/wgns/phys.json", json.dumps(record), mode=0o600)
        assert wgns("status", "phys").stdout.startswith("namespace phys: physical mode, up")
        assert json.loads(sandbox.read_text("/run/wgns/status/phys.json"))["kind"] == "physical"
        sandbox.run(["rm", "/run/wgns/status/phys.json"])  # not published (yet) by its mode
        wgns("status", "phys")
        wgns("status", "--format", "i3bar")
        assert not sandbox.path("/run/wgns/status/phys.json").exists()  # no tunnel's made up
        sandbox.python(PUBLISH_PHYSICAL)
        sandbox.run(["ip", "-n", "phys", "link", "set", "eth9", "down"])
        bar = json.loads(wgns("status", "phys", "--format", "waybar").stdout)
        assert bar["text"] == "phys: eth9 down" and bar["class"] == "down"  # read again
        assert json.loads(sandbox.read_text("/run/wgns/status/phys.json"))["kind"] == "physical"
    finally:
        sandbox.run(["ip", "link", "del", "isp9"], check=False)
        sandbox.run(["ip", "netns", "del", "phys"], check=False)
        sandbox.run(["rm", "-r", "/run/wgns"], check=False)


# ------------------------------------------------------------------ judgments, pure


def _tunnel(now: float, **over: Any) -> dict[str, Any]:
    iface = {"ifname": "wg0", "label": "vpn", "present": True, "up": True, "addresses": []}
    iface |= {"latest_handshake": int(now) - 10, "rx_rate": 2048.0, "tx_rate": 10.0}
    doc = {"name": "vpn", "kind": "tunnel", "phase": "up", "broken": [], "published_at": now}
    doc["interfaces"] = [iface]
    doc |= over
    return doc


def test_judgments_of_a_tunnel() -> None:
    now = 1_800_000_000.0
    assert statusbar.judge(_tunnel(now), now) == ("up", "handshake 10s ago")
    _, full, _ = statusbar.line(_tunnel(now), now)
    assert full == "vpn: up, handshake 10s ago ↓2.0K/s ↑10B/s"
    old = _tunnel(now)
    old["interfaces"][0]["latest_handshake"] = int(now) - 181
    assert statusbar.judge(old, now) == ("stale", "handshake 3m ago")
    never = _tunnel(now)
    never["interfaces"][0]["latest_handshake"] = 0
    assert statusbar.judge(never, now) == ("stale", "no handshake yet")
    broken = _tunnel(now, broken=["wireguard-go of wg0 (pid 7) is not running"])
    assert statusbar.judge(broken, now)[0] == "down"
    assert statusbar.judge(_tunnel(now, phase="stopping"), now) == ("down", "stopping")
    assert statusbar.judge(_tunnel(now, published_at=now - 31), now) == ("stale", "figures 31s old")
    # the worst state wins the waybar module's class
    bar = statusbar.waybar([_tunnel(now), broken], now)
    assert bar["class"] == "down" and bar["text"].count(" | ") == 1


def test_judgments_of_a_physical_link() -> None:
    now = 1_800_000_000.0
    wifi = {"connected": True, "ssid": "Café", "signal_dbm": -60}
    wlan = {"ifname": "wlan0", "present": True, "up": True, "carrier": True, "wireless": True}
    wlan |= {"addresses": ["192.168.1.23/24"], "wifi": wifi, "operstate": "UP"}
    doc = {"name": "physical", "kind": "physical", "published_at": now, "interfaces": [wlan]}
    assert statusbar.judge(doc, now) == ("up", "link up")
    assert statusbar.line(doc, now)[1] == "physical: wlan0 Café -60dBm 192.168.1.23/24"
    assert statusbar.waybar([doc], now)["percentage"] == 80
    eth = {"ifname": "eth0", "present": True, "up": True, "carrier": False, "addresses": []}
    doc["interfaces"] = [eth, wlan]  # unplugged: not news while the wifi carries
    assert statusbar.line(doc, now)[1:] == (
        "physical: wlan0 Café -60dBm 192.168.1.23/24",
        "physical: wlan0 Café -60dBm 192.168.1.23/24",
    )
    # as physical mode publishes it: its phase and its tunnel's latest handshake too
    with_tunnel = {**doc, "phase": "up", "latest_handshake": int(now) - 10}
    assert statusbar.judge(with_tunnel, now) == ("up", "handshake 10s ago")
    assert statusbar.line(with_tunnel, now)[1].endswith("192.168.1.23/24, handshake 10s ago")
    assert statusbar.judge({**with_tunnel, "latest_handshake": 0}, now)[0] == "stale"
    assert statusbar.judge({**with_tunnel, "phase": "stopping"}, now) == ("down", "stopping")
    wifi["ssid"] = "Tom & Jerry <5G>"
    assert statusbar.waybar([doc], now)["text"] == (
        "physical: wlan0 Tom &amp; Jerry &lt;5G&gt; -60dBm 192.168.1.23/24"
    )
    wlan["wifi"] = {"connected": False}
    assert statusbar.judge(doc, now) == ("down", "no usable link")
    assert (
        statusbar.line(doc, now)[1] == "physical: eth0 down, wlan0 not associated 192.168.1.23/24"
    )


def test_the_command_line_refuses_watch_without_a_bar_format(wgns: Any) -> None:
    for args, words in (
        (["--watch"], "--watch goes with --format i3bar"),
        (["--format", "json", "--watch"], "--watch goes with"),
        (["--format", "waybar", "--watch", "--interval", "0"], "--interval must be positive"),
        (["--json", "--format", "i3bar"], "--json and --format i3bar"),
    ):
        r = wgns("status", *args, check=False)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
