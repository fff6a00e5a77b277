"""The edges users hit (issue 12): dry runs, failing down hooks, a birthplace taken down under
another namespace, a record deleted by hand, a broken namespace, processes left inside."""

from __future__ import annotations

import time
from typing import Any

from tests.lifecycle.test_lifecycle import NS, assert_same, curl, ifname_of, status, write_profile
from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider


def test_dry_run_prints_the_plan_without_secrets_and_touches_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    psk = sandbox.run(["wg", "genpsk"]).stdout.strip()
    conf = provider.client_conf(client).replace("[Peer]\n", f"[Peer]\nPresharedKey = {psk}\n", 1)
    conf = conf.replace("[Interface]\n", "[Interface]\nPostUp = echo up %i\n", 1)
    path = write_profile(sandbox, conf)
    wg_if = names.wg_ifname(NS, "vpn")
    before = sandbox.settled_snapshot()
    pids = set(sandbox.pids())
    proc = wgns("up", "--dry-run", path, "--name", NS, "--debug")
    lines = proc.stdout.splitlines()
    assert any(line.startswith("ip netns add vpn") for line in lines)
    assert any("wireguard-go" in line or "type wireguard" in line for line in lines)
    assert any("nft -f -" in line for line in lines)
    assert any("route replace 0.0.0.0/0" in line for line in lines)
    assert any(line.startswith("post-up: echo up wg") for line in lines)
    assert "nothing was changed" in proc.stderr
    for text in (proc.stdout, proc.stderr):
        assert client.private_key not in text and psk not in text
    assert_same(before, sandbox.snapshot())
    for leftover in (
        f"/run/wgns/{NS}.json",
        f"/run/wgns/{NS}.lock",
        f"/run/wireguard/{wg_if}.sock",
    ):
        assert not sandbox.path(leftover).exists(), leftover
    assert NS not in sandbox.netns_names()
    assert not sandbox.path(f"/etc/netns/{NS}").exists()
    assert set(sandbox.pids()) - pids == set()  # no daemon started
    # once up, a dry run of the reload lists the changes, and changes nothing either
    wgns("up", path, "--name", NS)
    record = sandbox.read_text(f"/run/wgns/{NS}.json")
    wider = write_profile(sandbox, conf.replace("[Peer]", "MTU = 1300\n[Peer]", 1))
    dry = wgns("up", "--dry-run", "--reload", wider, "--name", NS)
    assert "mtu 1300" in dry.stdout and "wg syncconf" in dry.stdout
    assert psk not in dry.stdout and client.private_key not in dry.stdout
    assert sandbox.read_text(f"/run/wgns/{NS}.json") == record
    wgns("down", NS)


def test_a_failing_down_hook_is_reported_once_and_the_teardown_completes(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    mark = f"{SANDBOX_TMP}/post-down-ran"
    conf = provider.client_conf().replace(
        "[Interface]\n", f"[Interface]\nPreDown = false\nPostDown = touch {mark}\n", 1
    )
    wgns("up", write_profile(sandbox, conf), "--name", NS)
    proc = wgns("down", NS, check=False)
    assert proc.returncode == 1
    assert "pre-down hook failed with status 1: false" in proc.stderr
    assert "will not be run again" in proc.stderr
    assert sandbox.path(mark).exists()  # the teardown and the PostDown hook went on
    sandbox.run(["rm", mark])
    assert_same(before, sandbox.snapshot())  # everything removed, the record included
    again = wgns("down", NS)
    assert again.returncode == 0 and "not up" in again.stderr


def test_reload_replaces_the_recorded_down_hooks(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    mark = f"{SANDBOX_TMP}/fixed"
    bad = provider.client_conf(client).replace("[Interface]\n", "[Interface]\nPreDown = false\n", 1)
    wgns("up", write_profile(sandbox, bad), "--name", NS)
    good = provider.client_conf(client).replace(
        "[Interface]\n", f"[Interface]\nPreDown = touch {mark}\n", 1
    )
    wgns("up", write_profile(sandbox, good), "--name", NS, "--reload")
    wgns("down", NS)  # the fixed hook, not the recorded one
    assert sandbox.path(mark).exists()


def test_down_of_a_birthplace_is_refused_naming_the_namespace_born_in_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    wgns("up", write_profile(sandbox, provider.client_conf(), "outer.conf"), "--name", "outer")
    write_profile(sandbox, provider.client_conf(), "inner-wg.conf")
    inner = 'name = "inner"\nbirthplace = "outer"\n[[interface]]\nconfig = "inner-wg.conf"\n'
    wgns("up", write_profile(sandbox, inner, "inner.toml"))
    proc = wgns("down", "outer", check=False)
    assert proc.returncode == 1
    assert "inner" in proc.stderr and "wgns down inner" in proc.stderr
    assert status(wgns, "outer")["phase"] == "up"
    assert status(wgns, "inner")["interfaces"][0]["present"]
    assert curl(sandbox, f"http://{provider.web_v4}/", ns="outer") == "198.18.1.2"
    wgns("down", "inner")
    wgns("down", "outer")
    assert_same(before, sandbox.snapshot())


def test_up_of_a_namespace_whose_birthplace_was_deleted_says_so_and_repairs_once_it_is_back(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """Edge 5, by hand: the birthplace deleted outside wgns (`ip netns del`) leaves the tunnel
    of the namespace born in it without its UDP socket: `up` must not say "already up"; once the
    birthplace is back (a new namespace of that name), `up` remakes the tunnel there."""
    before = sandbox.settled_snapshot()
    outer = write_profile(sandbox, provider.client_conf(), "outer.conf")
    wgns("up", outer, "--name", "outer")
    write_profile(sandbox, provider.client_conf(), "inner-wg.conf")
    inner = 'name = "inner"\nbirthplace = "outer"\n[[interface]]\nconfig = "inner-wg.conf"\n'
    inner_path = write_profile(sandbox, inner, "inner.toml")
    wgns("up", inner_path)
    assert curl(sandbox, f"http://{provider.web_v4}/", ns="inner") == "198.18.1.2"
    sandbox.run(["ip", "netns", "del", "outer"])
    proc = wgns("up", inner_path, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "birthplace outer is gone" in proc.stderr and "already up" not in proc.stderr
    assert "Traceback" not in proc.stderr
    # outer is brought back (repaired: its namespace was deleted), then inner is repaired in it
    wgns("up", outer, "--name", "outer")
    proc = wgns("up", inner_path)
    assert "repaired" in proc.stderr, proc.stderr
    assert curl(sandbox, f"http://{provider.web_v4}/", ns="inner") == "198.18.1.2"
    assert status(wgns, "inner")["broken"] == []
    assert wgns("up", inner_path).stderr.count("already up") == 1
    wgns("down", "inner")
    wgns("down", "outer")
    assert_same(before, sandbox.snapshot())


def test_up_after_the_record_was_deleted_refuses_and_the_old_tunnel_survives(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    path = write_profile(sandbox, provider.client_conf())
    wgns("up", path, "--name", NS)
    wg_if = ifname_of(wgns)
    pid = status(wgns)["interfaces"][0]["daemon"]["pid"]
    record = sandbox.read_text(f"/run/wgns/{NS}.json")
    sandbox.run(["rm", f"/run/wgns/{NS}.json"])
    proc = wgns("up", path, "--name", NS, check=False)
    assert proc.returncode == 1
    assert f"interface {wg_if} already exists" in proc.stderr
    assert f"link del {wg_if}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing of the working tunnel was touched
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert sandbox.run(["kill", "-0", str(pid)], check=False).returncode == 0
    sandbox.write_file(f"/run/wgns/{NS}.json", record, mode=0o600)
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def _wait_gone(sandbox: Sandbox, wgns: Any) -> None:
    deadline = time.monotonic() + 5
    while status(wgns)["interfaces"][0]["present"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel removes the TUN once the daemon's fd is closed


def test_up_repairs_a_killed_daemon_in_place_and_reload_repairs_too(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    client = provider.new_client()
    path = write_profile(sandbox, provider.client_conf(client))
    wgns("up", path, "--name", NS)
    inside = sandbox.popen(["sleep", "60"], netns=NS)  # a program using the namespace
    for reload in ((), ("--reload",)):
        pid = status(wgns)["interfaces"][0]["daemon"]["pid"]
        sandbox.run(["kill", "-9", str(pid)])
        _wait_gone(sandbox, wgns)
        proc = wgns("up", path, "--name", NS, *reload)
        assert "already up" not in proc.stderr and "syncconf" not in proc.stderr
        assert "was broken" in proc.stderr and f"pid {pid}" in proc.stderr
        assert "repaired" in proc.stderr
        st = status(wgns)
        assert (
            st["interfaces"][0]["daemon"]["alive"] and st["interfaces"][0]["daemon"]["pid"] != pid
        )
        assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
        assert inside.poll() is None  # still in the same namespace, now with its tunnel back
    inside.kill()
    inside.wait()
    sandbox.untrack(inside)
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def test_up_repairs_a_namespace_deleted_by_hand(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    path = write_profile(sandbox, provider.client_conf())
    wgns("up", path, "--name", NS)
    sandbox.run(["ip", "netns", "del", NS])
    proc = wgns("up", path, "--name", NS)
    assert "was broken" in proc.stderr and f"namespace {NS} does not exist" in proc.stderr
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    assert status(wgns)["interfaces"][0]["daemon"]["alive"]
    wgns("down", NS)
    assert_same(before, sandbox.settled_snapshot())


def test_down_counts_the_processes_left_inside(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    inside = sandbox.popen(["sleep", "60"], netns=NS)
    time.sleep(0)  # nsenter has exec'd sleep once popen returns
    proc = wgns("down", NS)
    assert f"1 process(es) still in {NS} have lost their network (pids {inside.pid})" in proc.stderr
    inside.kill()
    inside.wait()
    sandbox.untrack(inside)


def test_up_on_a_read_only_etc_netns_says_so_in_one_line_and_changes_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """An /etc that cannot be written (a read-only root, an image): the failing op is named
    with the system's reason, not an internal error, and everything before it is rolled back."""
    path = write_profile(sandbox, provider.client_conf(provider.new_client()))
    sandbox.run(["mkdir", "-p", "/etc/netns"])
    sandbox.run(["mount", "-t", "tmpfs", "-o", "ro", "wgns-test-ro", "/etc/netns"])
    try:
        before = sandbox.settled_snapshot()
        proc = wgns("up", path, "--name", NS, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
        assert f"/etc/netns/{NS}" in lines[0] and "Read-only file system" in lines[0]
        assert_same(before, sandbox.settled_snapshot())
        assert NS not in sandbox.netns_names()
        assert not sandbox.path(f"/run/wgns/{NS}.json").exists()
    finally:
        sandbox.run(["umount", "/etc/netns"])
