"""Helpers for the checks that need systemd as PID 1 (the VM's init="systemd" boot).

The guest was set up before it booted by tests/vm/guestsetup.py: nscd and systemd-resolved run
with nss-resolve first in nsswitch.conf, /etc/hosts gives ``whoami.test`` the wrong address
``198.18.99.99``, the simulated provider runs as ``wgvm-provider.service`` and has written the
profiles /etc/wgns/{x,boot,heal,broken} and /run/wgvm/provider.json (:func:`facts`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import guestutil
import pytest
from guestutil import ip_json, sh

WGNS = "/usr/local/bin/wgns"  # the launcher wgns@.service runs (tests/vm/guestsetup.py)
UNITS = Path("/etc/systemd/system")
FACTS = Path("/run/wgvm/provider.json")
PROVIDER_UNIT = "wgvm-provider.service"
WRONG_V4 = "198.18.99.99"  # what the guest's /etc/hosts (and so nscd, resolved) say
TEST_NAME = "whoami.test"
RIGHT_V4, RIGHT_V6 = "198.18.2.2", "2001:db8:2::2"  # what the tunnel's DNS says
SAFETY = 180.0  # a safety timeout only: the guest is emulated and ~17x slower

pid1_is_systemd = pytest.mark.skipif(
    not Path("/proc/1/comm").exists() or Path("/proc/1/comm").read_text().strip() != "systemd",
    reason="needs systemd as PID 1 (the VM's init='systemd' boot)",
)
# every systemd guest module starts with: pytestmark = sdutil.marks
marks = [guestutil.only_in_vm, pid1_is_systemd]


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("systemctl", *args, check=check, timeout=SAFETY)


def show(unit: str, *props: str) -> dict[str, str]:
    out = systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


def active(unit: str) -> str:
    return systemctl("is-active", unit, check=False).stdout.strip()


def wgns(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The wgns command as the units run it (the launcher for this checkout)."""
    p = subprocess.run([WGNS, *args], capture_output=True, text=True, timeout=SAFETY, check=False)
    if check and p.returncode != 0:
        pytest.fail(f"wgns {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}",
                    pytrace=False)  # fmt: skip
    return p


def wait_for(what: str, cond: Callable[[], bool], timeout: float = SAFETY) -> None:
    guestutil.wait_for(what, cond, timeout)


def journal(unit: str) -> str:
    return sh("journalctl", "-b", "-q", "-o", "cat", "--no-pager", "-u", unit).stdout


_facts: dict[str, Any] | None = None


def facts() -> dict[str, Any]:
    """The provider's facts (started and waited for first: it is built during the boot)."""
    global _facts
    if _facts is None:
        if systemctl("start", PROVIDER_UNIT, check=False).returncode != 0:
            pytest.fail(f"{PROVIDER_UNIT} did not start:\n{journal(PROVIDER_UNIT)[-3000:]}",
                        pytrace=False)  # fmt: skip
        _facts = json.loads(FACTS.read_text())
    return _facts


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def pid_netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def main_pid(unit: str) -> int:
    return int(show(unit, "MainPID")["MainPID"])


def curl_in(ns: str, url: str) -> str:
    return sh("curl", "-sS", "--max-time", "30", url, ns=ns).stdout.strip()


def write_unit(name: str, text: str) -> None:
    (UNITS / name).write_text(text)


@contextmanager
def unit_files(files: dict[str, str]) -> Iterator[None]:
    """Unit files in /etc/systemd/system for the test; stopped and removed afterwards."""
    for name, text in files.items():
        write_unit(name, text)
    systemctl("daemon-reload")
    try:
        yield
    finally:
        stop = [n.replace("@.service", "@*.service") for n in files]
        subprocess.run(["systemctl", "stop", *stop], capture_output=True, check=False)
        for name in files:
            (UNITS / name).unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
        subprocess.run(["systemctl", "reset-failed"], capture_output=True, check=False)


def listing(path: str | Path) -> list[str]:
    """Every name under PATH (directories with a trailing /), sorted."""
    out = []
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        out += [os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs]
        out += [os.path.normpath(os.path.join(rel, f)) for f in files]
    return sorted(out)


def mount_points() -> list[str]:
    """(mount point, file system type) of every mount of the root mount namespace."""
    out = []
    for line in Path("/proc/1/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out.append(f"{fields[4]} {fields[sep + 1]}")
    return sorted(out)


def snapshot() -> dict[str, Any]:
    """What `wgns up`/`down` may touch in the guest: the root namespace's links, addresses,
    routes, rules and nft ruleset, the named namespaces, the mounts, wgns's records and
    /etc/netns, /run/wireguard."""
    snap: dict[str, Any] = {
        "link": [{k: v for k, v in link.items() if k != "stats64"}
                 for link in ip_json("-d", "link", "show")],
        "addr": ip_json("addr", "show"),
        "route4": ip_json("-4", "route", "show", "table", "all"),
        "route6": ip_json("-6", "route", "show", "table", "all"),
        "rule4": ip_json("-4", "rule", "show"),
        "rule6": ip_json("-6", "rule", "show"),
        "nft": sh("nft", "list", "ruleset").stdout,
        "netns": sorted(os.listdir("/run/netns")),
        "mounts": mount_points(),
    }  # fmt: skip
    for d in ("/run/wgns", "/etc/netns", "/run/wireguard"):
        snap[d] = listing(d) if os.path.isdir(d) else None
    return snap


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a.get(k)!r:.600} -> {b.get(k)!r:.600}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]  # fmt: skip


# --------------------------------------------------------------------------------------------
# the probe a test unit runs: where its traffic leaves, how its names resolve, where it is

PROBE = Path("/run/wgvm/probe.sh")
# the distribution's Python, which any user may run (this one may live under /root)
PROBE_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
PROBE_PY = Path("/run/wgvm/probe.py")
BACKDOORS = (
    "/run/nscd/socket",
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/dbus/system_bus_socket",
)
PROBE_PY_TEXT = f"""import json, socket, sys
out = sys.argv[1]
# how Python resolves: getaddrinfo, as any program would
with open(out + "/gai", "w") as f:
    gai = socket.getaddrinfo("{TEST_NAME}", 80, type=socket.SOCK_STREAM)
    print(json.dumps(sorted({{a[4][0] for a in gai}})), file=f)
# the name-service daemons' sockets it can connect to (a hidden one may exist, but no one
# listens behind what systemd mounts over it)
with open(out + "/sockets", "w") as f:
    for path in {BACKDOORS!r}:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            print(path, file=f)
        except OSError:
            pass
        finally:
            s.close()
"""
PROBE_TEXT = f"""#!/bin/sh
# what a test unit sees, written to its RuntimeDirectory; then it stays (for wgns check --unit)
out="$RUNTIME_DIRECTORY"
readlink /proc/self/ns/net > "$out/netns"
curl -sS --max-time 60 http://{RIGHT_V4}/ > "$out/curl" 2>&1
getent hosts {TEST_NAME} > "$out/getent" 2>&1
{PROBE_PYTHON} -I -S {PROBE_PY} "$out" > "$out/python" 2>&1
id -un > "$out/user"
echo done > "$out/done"
exec sleep infinity
"""


def probe_unit(description: str, out: str, extra: str = "") -> str:
    """A service running the probe, its results in /run/OUT (RuntimeDirectory, kept)."""
    return f"""[Unit]
Description=wgns VM test: {description}

[Service]
Type=exec
ExecStart=/bin/sh {PROBE}
RuntimeDirectory={out}
RuntimeDirectoryPreserve=yes
{extra}"""


def write_probe() -> None:
    PROBE.parent.mkdir(parents=True, exist_ok=True)
    PROBE.write_text(PROBE_TEXT)
    PROBE.chmod(0o755)
    PROBE_PY.write_text(PROBE_PY_TEXT)
    PROBE_PY.chmod(0o644)


def probe_results(out: str, timeout: float = SAFETY) -> dict[str, str]:
    d = Path("/run") / out
    wait_for(f"{d}/done", lambda: (d / "done").exists(), timeout)
    return {f.name: f.read_text().strip() for f in d.iterdir() if f.is_file()}
