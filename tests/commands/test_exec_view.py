"""`wgns exec` through the namespace's /etc view (wgns.features.etcview, mounted by `wgns up`):
what a program keeps seeing while the host changes under it, the D-Bus system bus out of
reach, and the file-by-file fallback for a namespace without a view.

Real commands in the sandbox, as in tests/commands/test_exec.py (whose helpers are used here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.commands.test_exec import (
    CHILD_PY,
    NS,
    SOCKET_PROBE,
    UID,
    WHOAMI,
    add_user,
    bring_up,
    run_exec,
    wgns_argv,
    wgns_env,
)
from tests.hostdns import LISTENER
from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.provider import Provider

VIEW = f"/run/wgns/view/{NS}/etc"  # where `wgns up` mounts NS's view (wgns.features.etcview)
TOP = f"/run/wgns/view/{NS}/netns"  # the view's top layer: NS's resolv.conf, hosts, nsswitch.conf
BUS = "/run/dbus/system_bus_socket"

#: A long-running program inside: for every line on stdin, one JSON line with what it sees now.
WATCHER = r"""
import json, socket, sys
for line in sys.stdin:
    seen = {"resolv": open("/etc/resolv.conf").read()}
    try:
        seen["addrs"] = sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80)})
    except OSError as e:
        seen["addrs"] = type(e).__name__
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[2])
        seen["bus"] = "reachable"
    except OSError as e:
        seen["bus"] = type(e).__name__
    s.close()
    print(json.dumps(seen), flush=True)
"""


@pytest.fixture
def up(sandbox: Sandbox, provider: Provider, wgns: Any) -> Iterator[Provider]:
    """NS up, the sandbox host's /etc/resolv.conf a regular file naming the ISP's resolver."""
    add_user(sandbox)
    sandbox.run(["rm", "-f", "/etc/resolv.conf"])
    sandbox.write_file("/etc/resolv.conf", f"nameserver {provider.isp_dns}\n")
    bring_up(sandbox, provider, wgns)
    yield provider
    wgns("down", NS, check=False)


def start_bus(sandbox: Sandbox) -> None:
    """A unix socket listening at the D-Bus system bus's path (tests.hostdns's listener)."""
    log = f"{SANDBOX_TMP}/bus.log"
    sandbox.write_file(log, "")
    sandbox.write_file(f"{SANDBOX_TMP}/listener.py", LISTENER)
    proc = sandbox.popen(
        [sys.executable, "-I", "-S", f"{SANDBOX_TMP}/listener.py", log, BUS],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"


def replace_by_rename(sandbox: Sandbox, path: str, content: str) -> None:
    """What NetworkManager and resolvconf do: write a new file, rename it over PATH."""
    code = (
        "import os, sys\n"
        "with open(sys.argv[1] + '.new', 'w') as f:\n"
        "    f.write(sys.argv[2])\n"
        "os.replace(sys.argv[1] + '.new', sys.argv[1])\n"
    )
    sandbox.run([sys.executable, "-I", "-S", "-c", code, path, content])


def test_a_running_program_keeps_the_tunnels_dns_when_the_host_renames_resolv_conf(
    sandbox: Sandbox, up: Provider
) -> None:
    """A browser started with `wgns exec` runs for hours; NetworkManager rewrites the host's
    /etc/resolv.conf by rename meanwhile. A bind mount on /etc/resolv.conf would be detached by
    the kernel (in every mount namespace) and the program would then ask the host's resolver."""
    tunnel_resolv = sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    sandbox.run(["mkdir", "-p", "/run/dbus"])  # the bus is not running yet
    watcher = sandbox.popen(
        wgns_argv("exec", NS, "--", CHILD_PY, "-I", "-S", "-c", WATCHER, WHOAMI, BUS),
        env=wgns_env(sandbox),
        cwd=SANDBOX_TMP,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdin is not None and watcher.stdout is not None

    def seen() -> dict[str, Any]:
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.write("look\n")
        watcher.stdin.flush()
        line = watcher.stdout.readline()
        assert line, "the program inside died"
        value: dict[str, Any] = json.loads(line)
        return value

    try:
        tunnel_addrs = sorted([up.web_v4, up.web_v6])
        before = seen()
        assert before == {"resolv": tunnel_resolv, "addrs": tunnel_addrs, "bus": before["bus"]}
        queries = len(up.dns_queries())

        # the host: a new resolv.conf by rename (short timeouts: a leak fails fast), and the
        # system bus starting after the program
        host_resolv = f"nameserver {up.isp_dns}\noptions timeout:1 attempts:1\n"
        replace_by_rename(sandbox, "/etc/resolv.conf", host_resolv)
        assert sandbox.read_text("/etc/resolv.conf") == host_resolv  # the host has it...
        start_bus(sandbox)
        r = sandbox.run(["ip", "netns", "exec", NS, CHILD_PY, "-I", "-S", "-c", SOCKET_PROBE, BUS])
        assert r.stdout.split() == [BUS, "reachable"]  # ...and `ip netns exec` gets the bus

        after = seen()  # ...but the program inside sees neither
        assert after["resolv"] == tunnel_resolv
        assert after["addrs"] == tunnel_addrs
        assert after["bus"] == "FileNotFoundError"
        assert len(up.dns_queries()) > queries  # answered by the tunnel's DNS server
        assert up.isp_dns_queries() == []
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=10)
    assert watcher.returncode == 0


def test_the_system_bus_is_out_of_reach(sandbox: Sandbox, up: Provider) -> None:
    """resolved's D-Bus API (`resolvectl query`) resolves over the host's network: the system
    bus socket is as unreachable inside as nscd's, for a user and for root."""
    start_bus(sandbox)
    r = sandbox.run(["ip", "netns", "exec", NS, CHILD_PY, "-I", "-S", "-c", SOCKET_PROBE, BUS])
    assert r.stdout.split() == [BUS, "reachable"]  # control: the socket is real
    for uid in (UID, None):  # alice, then root (--user root: root's capabilities)
        r = run_exec(sandbox, NS, "--", CHILD_PY, "-I", "-S", "-c", SOCKET_PROBE, BUS, uid=uid)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [BUS, "FileNotFoundError"]
        r = run_exec(sandbox, NS, "--", "ls", "-A", "/run/dbus", "/var/run/dbus", uid=uid)
        assert (r.returncode, r.stdout.split()) == (0, ["/run/dbus:", "/var/run/dbus:"])
    # every covered directory is the same empty tmpfs, read-only, nosuid, nodev, noexec
    sandbox.run(["mkdir", "-p", "/run/nscd", "/run/avahi-daemon"])
    flags = (
        "import os, sys\n"
        "for d in sys.argv[1:]:\n"
        "    f = os.statvfs(d).f_flag\n"
        "    print(d, len(os.listdir(d)), *(n for n in ('RDONLY', 'NOSUID', 'NODEV', 'NOEXEC')\n"
        "          if f & getattr(os, 'ST_' + n)))\n"
    )
    dirs = ["/run/nscd", "/run/avahi-daemon", "/run/dbus"]
    r = run_exec(sandbox, NS, "--", CHILD_PY, "-I", "-S", "-c", flags, *dirs, uid=None)
    assert r.stdout.splitlines() == [f"{d} 0 RDONLY NOSUID NODEV NOEXEC" for d in dirs], r.stderr
    r = sandbox.run([CHILD_PY, "-I", "-S", "-c", SOCKET_PROBE, BUS])
    assert r.stdout.split() == [BUS, "reachable"]  # the host's bus is left alone


def test_etc_is_the_view_read_only_with_the_hosts_other_files(
    sandbox: Sandbox, up: Provider
) -> None:
    script = (
        "cat /etc/resolv.conf /etc/hosts /etc/nsswitch.conf; grep -c ^alice: /etc/passwd; "
        "touch /etc/wgns-test 2>&1 || echo refused"
    )
    r = run_exec(sandbox, NS, "--debug", "--", "sh", "-c", script, uid=None)  # root, even
    assert r.returncode == 0, r.stderr
    netns_files = "".join(
        sandbox.read_text(f"/etc/netns/{NS}/{n}") for n in ("resolv.conf", "hosts", "nsswitch.conf")
    )
    assert r.stdout.startswith(netns_files)
    assert r.stdout[len(netns_files) :].splitlines()[0] == "1"  # the host's passwd
    assert "Read-only file system" in r.stdout and r.stdout.endswith("refused\n")
    assert f"[#] /etc view: overlay of {TOP} on /etc" in r.stderr


def test_an_administrators_extra_file_is_shown_over_the_view(
    sandbox: Sandbox, up: Provider
) -> None:
    """Every file of /etc/netns/NS is shown, not only those wgns wrote (docs/exec.md)."""
    sandbox.write_file("/etc/gai.conf", "# the host's\n")
    sandbox.write_file(f"/etc/netns/{NS}/gai.conf", "precedence ::ffff:0:0/96 100\n")
    r = run_exec(sandbox, NS, "--debug", "--", "cat", "/etc/gai.conf", "/etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    tunnel_resolv = sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    assert r.stdout == "precedence ::ffff:0:0/96 100\n" + tunnel_resolv
    assert f"on /etc, then gai.conf of /etc/netns/{NS} bound over it" in r.stderr
    # an extra file /etc lacks has nothing to be mounted on in the view: the file-by-file way
    sandbox.write_file(f"/etc/netns/{NS}/wgns-extra.conf", "extra\n")
    r = run_exec(sandbox, NS, "--debug", "--", "cat", "/etc/wgns-extra.conf", "/etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "extra\n" + tunnel_resolv
    assert "file by file (overlay)" in r.stderr


def test_without_a_view_exec_binds_file_by_file_and_says_so(
    sandbox: Sandbox, up: Provider, wgns: Any
) -> None:
    """A namespace brought up by a wgns that wrote no view (no top layer): /etc/netns/NS/*
    bound file by file, as before the view."""
    tunnel_resolv = sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    sandbox.run(["umount", VIEW])
    sandbox.run(["sh", "-c", f"rm {TOP}/*"])
    r = run_exec(sandbox, NS, "--debug", "--", "cat", "/etc/resolv.conf")
    assert (r.returncode, r.stdout) == (0, tunnel_resolv), r.stderr
    assert f"{NS} has no /etc view ({TOP} holds no resolv.conf" in r.stderr
    assert f"/etc/netns/{NS}/* shown at /etc file by file (bind)" in r.stderr
    r = run_exec(sandbox, NS, "--", "cat", "/etc/resolv.conf")
    assert (r.returncode, r.stdout, r.stderr) == (0, tunnel_resolv, "")  # said at --debug only
    r = run_exec(sandbox, NS, "--", "touch", "/etc/wgns-test", uid=None)
    assert r.returncode == 0  # file by file leaves /etc writable for root, as before
    wgns("down", NS)  # the view's undo copes with a view already gone
    assert not sandbox.path("/run/wgns/view").exists()


def test_each_command_sees_the_hosts_etc_as_it_is_when_it_starts(
    sandbox: Sandbox, up: Provider
) -> None:
    """useradd, timedatectl, update-ca-certificates replace files of /etc by rename. overlayfs
    keeps the lower files it has looked up: a view mounted once at `wgns up` and bound by every
    `wgns exec` would show the old /etc/passwd to every command from then on."""
    r = run_exec(sandbox, NS, "--", "grep", "-c", "^", "/etc/passwd", check=True)
    lines = int(r.stdout)
    passwd = sandbox.read_text("/etc/passwd")
    replace_by_rename(sandbox, "/etc/passwd", passwd + "zed:x:4100:4100::/tmp:/bin/sh\n")
    r = run_exec(sandbox, NS, "--", "grep", "-c", "^", "/etc/passwd", check=True)
    assert int(r.stdout) == lines + 1
    r = run_exec(sandbox, NS, "--", "id", "-un", "4100", check=True)
    assert r.stdout.strip() == "zed"
