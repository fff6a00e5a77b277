"""The sandbox: a private net+mount namespace standing in for the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.sandbox import Sandbox, SandboxCommandError, SandboxError
from wgns.testing.snapshot import snapshot_diff

REPO_ROOT = Path(__file__).resolve().parents[2]


def _host(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_gone(pids: list[int], timeout: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


def test_fresh_sandbox_has_only_loopback_up(sandbox: Sandbox) -> None:
    links = json.loads(sandbox.run(["ip", "-j", "link"]).stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert "UP" in links[0]["flags"]
    assert sandbox.run(["ls", "/sys/class/net"]).stdout.split() == ["lo"]
    assert sandbox.netns_names() == []
    for d in ("/run/netns", "/run/wgns", "/run/wireguard", SANDBOX_TMP):
        assert sandbox.run(["test", "-d", d]).returncode == 0


def test_link_created_inside_is_not_on_host(sandbox: Sandbox) -> None:
    sandbox.run(["ip", "link", "add", "sbx-a", "type", "veth", "peer", "name", "sbx-b"])
    inside = {link["ifname"] for link in json.loads(sandbox.run(["ip", "-j", "link"]).stdout)}
    assert {"sbx-a", "sbx-b"} <= inside
    assert _host(["ip", "link", "show", "sbx-a"]).returncode != 0
    assert not Path("/sys/class/net/sbx-a").exists()


def test_netns_and_etc_netns_written_inside_stay_inside(sandbox: Sandbox) -> None:
    host_netns = _host(["ip", "netns", "list"]).stdout
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    sandbox.run(["ip", "netns", "add", "sbx-ns"])
    sandbox.run(
        ["sh", "-c", "mkdir -p /etc/netns/sbx-ns && echo 'nameserver 198.18.9.9' > "
         "/etc/netns/sbx-ns/resolv.conf && echo 'nameserver 198.18.9.8' > /etc/resolv.conf"]
    )  # fmt: skip
    sandbox.run(["sh", "-c", "mkdir -p /run/wgns && echo x > /run/wgns/sbx-ns.json"])
    assert sandbox.netns_names() == ["sbx-ns"]
    assert "sbx-ns" in sandbox.run(["ip", "netns", "list"]).stdout
    # `ip netns exec` inside sees the per-namespace resolv.conf
    out = sandbox.run(["ip", "netns", "exec", "sbx-ns", "cat", "/etc/resolv.conf"]).stdout
    assert out == "nameserver 198.18.9.9\n"
    assert sandbox.read_text("/etc/resolv.conf") == "nameserver 198.18.9.8\n"
    # ... and the host saw none of it
    assert _host(["ip", "netns", "list"]).stdout == host_netns
    assert not Path("/run/netns/sbx-ns").exists()
    assert not Path("/etc/netns/sbx-ns").exists()
    assert not Path("/run/wgns/sbx-ns.json").exists()
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv


def test_run_reports_failures_with_everything(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxCommandError) as info:
        sandbox.run(["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"])
    msg = str(info.value)
    assert "exit code 3" in msg
    assert "echo to-stdout" in msg  # argv
    assert "to-stdout" in info.value.output
    assert "to-stderr" in msg
    assert isinstance(info.value, subprocess.CalledProcessError)
    r = sandbox.run(["sh", "-c", "exit 4"], check=False)
    assert r.returncode == 4
    with pytest.raises(SandboxCommandError, match="in netns nope"):
        sandbox.run(["true"], netns="nope")


def test_run_input_env_cwd_netns(sandbox: Sandbox) -> None:
    assert sandbox.run(["cat"], input="hello").stdout == "hello"
    assert sandbox.run(["cat"], input=b"\x00\x01").stdout == "\x00\x01"
    assert sandbox.run(["sh", "-c", "echo $SBX_VAR"], env={"SBX_VAR": "v"}).stdout == "v\n"
    assert sandbox.run(["pwd"], cwd="/run/wgns").stdout == "/run/wgns\n"
    assert sandbox.run(["pwd"], cwd=str(REPO_ROOT)).stdout == f"{REPO_ROOT}\n"
    sandbox.run(["ip", "netns", "add", "sbx-ns"])
    links = json.loads(sandbox.run(["ip", "-j", "link"], netns="sbx-ns").stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert "UP" not in links[0]["flags"]  # a different namespace from the sandbox's root
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run(["sleep", "5"], timeout=0.2)


def test_python_runs_this_checkout(sandbox: Sandbox) -> None:
    out = sandbox.python("import wgns; print(wgns.__file__)").stdout.strip()
    assert out == str(REPO_ROOT / "wgns" / "__init__.py")
    out = sandbox.python(["-m", "wgns.testing.sim.dnsserver", "--help"]).stdout
    assert "--listen" in out


def test_paths_resolve_inside_the_sandbox(sandbox: Sandbox) -> None:
    sandbox.write_file("/run/wgns/probe", "x\n")
    via_symlink = sandbox.path("/var/run/wgns/probe")  # /var/run -> /run, inside
    assert via_symlink == sandbox.path("/run/wgns/probe")
    assert via_symlink.read_text() == "x\n"
    assert not Path("/run/wgns/probe").exists()
    sandbox.write_file("/etc/netns/sbx/hosts", "198.18.9.1 a\n", mode=0o600)
    assert sandbox.run(["cat", "/etc/netns/sbx/hosts"]).stdout == "198.18.9.1 a\n"
    assert sandbox.run(["stat", "-c", "%a", "/etc/netns/sbx/hosts"]).stdout.strip() == "600"
    assert not Path("/etc/netns/sbx").exists()
    with pytest.raises(ValueError):
        sandbox.path("relative/path")


def test_snapshot_is_stable_and_sees_changes(sandbox: Sandbox) -> None:
    s0 = sandbox.snapshot()
    assert snapshot_diff(s0, sandbox.snapshot()) == []
    sandbox.run(["ip", "netns", "add", "sbx-ns"])
    s1 = sandbox.snapshot()
    assert s1 != s0
    assert "sbx-ns" in s1["net"] and "sbx-ns" in s1["files"]["/run/netns"]
    assert snapshot_diff(s1, sandbox.snapshot()) == []

    changes = [
        ["ip", "link", "add", "sbx-d", "type", "veth", "peer", "name", "sbx-e"],
        ["ip", "-n", "sbx-ns", "link", "set", "lo", "up"],
        ["ip", "rule", "add", "fwmark", "0x77", "table", "77"],
        ["ip", "-6", "route", "add", "unreachable", "2001:db8:77::/48", "table", "77"],
        ["nft", "add", "table", "inet", "sbx"],
        ["sh", "-c", "mkdir -p /etc/netns/sbx-ns && echo x > /etc/netns/sbx-ns/resolv.conf"],
        ["sh", "-c", "echo y > /etc/netns/sbx-ns/resolv.conf"],
        ["sh", "-c", "echo '{}' > /run/wgns/sbx-ns.json"],
        ["sh", "-c", "mkdir -p /run/wireguard && : > /run/wireguard/sbx.sock"],
    ]
    prev = s1
    for argv in changes:
        sandbox.run(argv)
        cur = sandbox.snapshot()
        assert cur != prev, f"snapshot did not see {argv}"
        assert snapshot_diff(cur, sandbox.snapshot()) == [], f"snapshot unstable after {argv}"
        prev = cur

    p = sandbox.popen(["sleep", "300"], netns="sbx-ns")
    with_sleep = sandbox.snapshot()
    assert "sleep 300" in with_sleep["processes"]
    p.kill()
    p.wait()
    assert snapshot_diff(prev, sandbox.snapshot()) == []


def test_snapshot_ignores_traffic_counters(sandbox: Sandbox) -> None:
    sandbox.run(
        ["nft", "-f", "-"],
        input="table inet sbx { chain out { type filter hook output priority 0; counter; }; }\n",
    )
    s0 = sandbox.snapshot()
    sandbox.run(["ping", "-c", "2", "-i", "0.05", "127.0.0.1"])
    assert snapshot_diff(s0, sandbox.snapshot()) == []


def test_close_kills_everything_inside(sandbox: Sandbox) -> None:
    sandbox.run(["ip", "netns", "add", "sbx-ns"])
    tracked = sandbox.popen(["sleep", "300"])
    in_ns = sandbox.popen(["sleep", "301"], netns="sbx-ns")
    # a daemon that left its parent behind, started by a process that already exited
    out = sandbox.run(
        ["sh", "-c", "setsid sleep 302 </dev/null >/dev/null 2>&1 & echo $!"], netns="sbx-ns"
    ).stdout
    daemon = int(out)
    wg = sandbox.popen(
        ["wireguard-go", "-f", "sbxwg0"],
        env={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not sandbox.path("/run/wireguard/sbxwg0.sock").exists():
        assert time.monotonic() < deadline, "wireguard-go did not start"
        time.sleep(0.01)
    pids = sandbox.pids()
    assert {tracked.pid, in_ns.pid, daemon, wg.pid} <= set(pids)
    keeper = sandbox.pid

    sandbox.close()
    assert sandbox.closed
    assert tracked.returncode is not None and in_ns.returncode is not None
    assert wg.returncode is not None
    assert _wait_gone([daemon, keeper]) == []
    assert sandbox.leftover_pids() == []
    assert not Path("/run/wireguard/sbxwg0.sock").exists()
    assert _host(["ip", "link", "show", "sbxwg0"]).returncode != 0
    sandbox.close()  # idempotent
    with pytest.raises(SandboxError):
        sandbox.run(["true"])


def test_keeper_cleans_up_when_its_owner_is_killed() -> None:
    """A test run that dies (even by SIGKILL) takes its sandbox's processes with it."""
    code = textwrap.dedent(
        """
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from wgns.testing.sandbox import Sandbox
        sb = Sandbox.spawn()
        sb.run(["ip", "netns", "add", "orphan"])
        pid = int(sb.run(["sh", "-c", "setsid sleep 303 </dev/null >/dev/null 2>&1 & echo $!"],
                         netns="orphan").stdout)
        print(sb.pid, pid, flush=True)
        time.sleep(300)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(REPO_ROOT)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    keeper, daemon = map(int, owner.stdout.readline().split())
    assert _alive(keeper) and _alive(daemon)
    owner.kill()
    owner.wait()
    assert _wait_gone([keeper, daemon]) == []
    assert not Path("/run/netns/orphan").exists()


def test_enter_self_moves_the_calling_process() -> None:
    """`wgns demo` mode: the process itself becomes the sandbox; the host is untouched."""
    code = textwrap.dedent(
        """
        import json, os, sys
        sys.path.insert(0, sys.argv[1])
        from wgns.testing.sandbox import Sandbox
        sb = Sandbox.enter_self()
        assert sb.is_self and sb.path("/run/netns") == __import__("pathlib").Path("/run/netns")
        sb.run(["ip", "netns", "add", "self-ns"])
        sb.run(["ip", "link", "add", "self-a", "type", "veth", "peer", "name", "self-b"])
        os.makedirs("/etc/netns/self-ns")
        with open("/etc/netns/self-ns/resolv.conf", "w") as f:
            f.write("nameserver 198.18.9.7\\n")
        daemon = int(sb.run(["sh", "-c", "setsid sleep 304 </dev/null >/dev/null 2>&1 & "
                             "echo $!"], netns="self-ns").stdout)
        links = json.loads(sb.run(["ip", "-j", "link"]).stdout)
        snap = sb.snapshot()
        assert sb.snapshot() == snap
        inside = sb.run(["cat", "/etc/resolv.conf"], netns="self-ns").stdout
        sb.close()
        print(json.dumps({"links": [l["ifname"] for l in links], "daemon": daemon,
                          "netns": os.listdir("/run/netns"),
                          "procs": snap["processes"], "leftover": sb.leftover_pids()}))
        """
    )
    host_netns = _host(["ip", "netns", "list"]).stdout
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert sorted(out["links"]) == ["lo", "self-a", "self-b"]
    assert out["netns"] == ["self-ns"]
    assert "sleep 304" in out["procs"]
    assert out["leftover"] == []
    assert _wait_gone([out["daemon"]]) == []
    assert _host(["ip", "link", "show", "self-a"]).returncode != 0
    assert _host(["ip", "netns", "list"]).stdout == host_netns
    assert not Path("/etc/netns/self-ns").exists()


def test_enter_self_refuses_threads() -> None:
    code = textwrap.dedent(
        """
        import sys, threading, time
        sys.path.insert(0, sys.argv[1])
        from wgns.testing.sandbox import Sandbox, SandboxError
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        try:
            Sandbox.enter_self()
        except SandboxError as e:
            print("refused:", e)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)], capture_output=True, text=True, timeout=30
    )
    assert "refused:" in r.stdout, r.stderr


def test_context_manager_closes() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with Sandbox.spawn() as sb:
        p = sb.popen(["sleep", "305"])
        keeper = sb.pid
    assert sb.closed and p.returncode == -signal.SIGKILL
    assert _wait_gone([keeper]) == []
