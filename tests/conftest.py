"""Shared fixtures: a private sandbox standing in for the host, the simulated provider, and a
runner for the real `wgns` command inside the sandbox.

Every test that touches the network gets a fresh :class:`wgns.testing.sandbox.Sandbox`; nothing it
does reaches the real machine, and after the test the fixture checks that nothing leaked out of it
(namespaces, /etc/netns entries, UAPI sockets, processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # test this checkout, installed or not

from wgns.testing.sandbox import Sandbox  # noqa: E402
from wgns.testing.sim import Provider, build_provider  # noqa: E402

_TOOLS = ("ip", "nft", "wg", "wireguard-go", "nsenter", "unshare", "tcpdump", "dig", "curl")
_build_times: list[float] = []


def _missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def _host_view() -> dict[str, set[str]]:
    return {
        "/run/netns": _listdir("/run/netns"),
        "/etc/netns": _listdir("/etc/netns"),
        "/run/wireguard": _listdir("/run/wireguard"),
        "/run/wgns": _listdir("/run/wgns"),
    }


def _wireguard_go_pids() -> dict[int, str]:
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd.startswith("wireguard-go") or "/wireguard-go " in cmd:
            found[int(entry.name)] = cmd
    return found


def _net_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _names_inside(sb: Sandbox) -> set[str]:
    """Names the sandbox used that could leak: namespaces, interfaces, /etc/netns entries,
    UAPI sockets, state files."""
    names = set(sb.netns_names())
    for ns in [None, *names]:
        r = sb.run(["ip", "-j", "link"], netns=ns, check=False)
        with contextlib.suppress(ValueError):
            names |= {link["ifname"] for link in json.loads(r.stdout or "[]")}
    for d in ("/etc/netns", "/run/wireguard", "/run/wgns"):
        with contextlib.suppress(FileNotFoundError):
            names |= set(os.listdir(sb.path(d)))
    return names


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh private net+mount namespace standing in for the host (closed after the test)."""
    why = _missing_prerequisites()
    if why:
        pytest.skip(why)
    before = _host_view()
    wg_before = _wireguard_go_pids()
    sb = Sandbox.spawn()
    names: set[str] = set()
    try:
        yield sb
    finally:
        if not sb.closed:
            names = _names_inside(sb)
        sb.close()
    leftovers = sb.leftover_pids()
    assert not leftovers, f"processes left in the sandbox after close(): {leftovers}"
    after = _host_view()
    for where, entries in after.items():
        leaked = (entries - before[where]) & names
        assert not leaked, f"sandbox leaked into the host's {where}: {sorted(leaked)}"
    # a daemon that escaped into the real host's namespace under a name used inside (other
    # sessions may run sandboxes concurrently: their processes are none of our business)
    host_net = os.stat("/proc/self/ns/net").st_ino
    escaped = {
        pid: cmd
        for pid, cmd in _wireguard_go_pids().items()
        if pid not in wg_before
        and _net_inode(pid) == host_net
        and any(n in cmd.split() for n in names)
    }
    assert not escaped, f"wireguard-go left running on the host: {escaped}"


@pytest.fixture
def provider(sandbox: Sandbox) -> Iterator[Provider]:
    """The simulated VPN provider inside the test's sandbox."""
    p = build_provider(sandbox)
    _build_times.append(sandbox.spawn_seconds + p.build_time)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def provider2(sandbox: Sandbox) -> Iterator[Provider]:
    """The simulated provider with a second WireGuard server (``provider2.servers[1]``)."""
    p = build_provider(sandbox, second_server=True)
    try:
        yield p
    finally:
        p.close()


class WgnsRunner(Protocol):
    def __call__(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        netns: str | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def wgns(sandbox: Sandbox) -> WgnsRunner:
    """Run the real `wgns` command (this checkout) inside the sandbox: ``wgns("up", path)``."""

    def run(
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        netns: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv: Sequence[str] = [sys.executable, "-m", "wgns", *(os.fspath(a) for a in args)]
        return sandbox.run(
            argv,
            check=check,
            input=input,
            env=sandbox.python_env(env),
            timeout=timeout,
            cwd=str(REPO_ROOT),
            netns=netns,
        )

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _build_times:
        ts = sorted(_build_times)
        terminalreporter.write_line(
            f"sandbox+provider build time over {len(ts)} builds: "
            f"min {ts[0] * 1000:.0f} ms, median {ts[len(ts) // 2] * 1000:.0f} ms, "
            f"max {ts[-1] * 1000:.0f} ms"
        )
