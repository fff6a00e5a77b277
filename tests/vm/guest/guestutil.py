"""Helpers for the guest-side checks (files under tests/vm/guest/ only run inside the test VM).

Everything here acts on the *guest's* kernel: the tests create their own namespaces (names start
with ``wgvm-``) and only use addresses from 198.18.0.0/15 and 2001:db8::/32.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IN_VM = os.environ.get("WGNS_IN_VM") == "1"

# every guest test module starts with: pytestmark = guestutil.only_in_vm
only_in_vm = pytest.mark.skipif(
    not IN_VM, reason="runs only inside the wgns test VM (WGNS_IN_VM=1); see tests/vm/"
)


def sh(
    *argv: str,
    ns: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (in network namespace ``ns`` if given); fail the test with its output."""
    full = [*(["ip", "netns", "exec", ns] if ns else []), *argv]
    p = subprocess.run(
        full, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and p.returncode != 0:
        pytest.fail(
            f"{' '.join(full)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}",
            pytrace=False,
        )
    return p


def ip_json(*args: str, ns: str | None = None) -> list[dict[str, Any]]:
    out = sh("ip", *(["-n", ns] if ns else []), "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def link_names(ns: str | None = None) -> list[str]:
    return sorted(str(link["ifname"]) for link in ip_json("link", "show", ns=ns))


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def udp_listeners(ns: str | None = None) -> list[str]:
    """Local addresses of the UDP sockets in ``ns`` (``ss -uln``), e.g. ``0.0.0.0:51820``."""
    out = sh("ss", "-H", "-u", "-l", "-n", ns=ns).stdout
    return [line.split()[3] for line in out.splitlines() if len(line.split()) >= 5]


def has_port(listeners: Sequence[str], port: int) -> bool:
    return any(a.rsplit(":", 1)[-1] == str(port) for a in listeners)


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.2)


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[tuple[str, ...]]:
    """Create fresh network namespaces, delete them (and what is in them) afterwards."""
    for n in names:
        if os.path.exists(f"/run/netns/{n}"):
            sh("ip", "netns", "delete", n)
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    try:
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "delete", n], capture_output=True, check=False)


def veth(ns_a: str, name_a: str, addr_a: str, ns_b: str, name_b: str, addr_b: str) -> None:
    """A veth pair between two namespaces, addressed and up."""
    sh("ip", "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b,
       "netns", ns_b)  # fmt: skip
    sh("ip", "-n", ns_a, "addr", "add", addr_a, "dev", name_a)
    sh("ip", "-n", ns_b, "addr", "add", addr_b, "dev", name_b)
    sh("ip", "-n", ns_a, "link", "set", name_a, "up")
    sh("ip", "-n", ns_b, "link", "set", name_b, "up")


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    """A private key file (mode 0600) and the matching public key; keys never go in argv."""
    private = sh("wg", "genkey").stdout.strip()
    path = directory / f"{name}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private + "\n")
    public = sh("wg", "pubkey", input=private + "\n").stdout.strip()
    return path, public


@contextlib.contextmanager
def wireguard_go(ns: str, ifname: str) -> Iterator[subprocess.Popen[str]]:
    """A wireguard-go interface ``ifname`` in ``ns`` (foreground process, killed afterwards)."""
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1", LOG_LEVEL="error")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "wireguard-go", "-f", ifname],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sock = Path(f"/var/run/wireguard/{ifname}.sock")
        wait_for(f"wireguard-go's {sock}", lambda: sock.exists() or proc.poll() is not None)
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"wireguard-go exited {proc.returncode}: {out}", pytrace=False)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
