"""Waiting for the simulated provider to be ready: its servers listening, its links settled."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Sequence

from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.topology import SIM_DIR, ProviderError


def wait_ready(
    sandbox: Sandbox,
    pythons: dict[str, subprocess.Popen[bytes]],
    sockets: dict[str, tuple[subprocess.Popen[bytes], str]],
    timeout: float,
) -> None:
    """Wait for each Python server to print 'ready' and each UAPI socket to appear."""
    deadline = time.monotonic() + timeout
    pending = dict(pythons)
    buffers: dict[str, bytes] = {name: b"" for name in pythons}
    with selectors.DefaultSelector() as sel:
        for name, p in pythons.items():
            assert p.stdout is not None
            sel.register(p.stdout.fileno(), selectors.EVENT_READ, name)
        waiting_sockets = dict(sockets)
        while pending or waiting_sockets:
            for name, (p, sock) in list(waiting_sockets.items()):
                if sandbox.path(sock).exists():
                    del waiting_sockets[name]
                elif p.poll() is not None:
                    raise ProviderError(
                        f"{name} exited with {p.returncode}: {errlog(sandbox, name)}"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProviderError(
                    f"not ready after {timeout}s: {sorted([*pending, *waiting_sockets])}"
                )
            if not pending:
                time.sleep(0.002)
                continue
            for key, _ in sel.select(min(left, 0.002 if waiting_sockets else left)):
                name = key.data
                chunk = os.read(key.fd, 4096)
                buffers[name] += chunk
                if b"ready" in buffers[name]:
                    sel.unregister(key.fd)
                    del pending[name]
                elif not chunk:
                    sel.unregister(key.fd)
                    p = pending.pop(name)
                    p.wait(timeout=5)
                    raise ProviderError(
                        f"{name} exited with {p.returncode}: {errlog(sandbox, name)}"
                    )


def wait_settled(sandbox: Sandbox, namespaces: Sequence[str | None], timeout: float) -> None:
    """Wait until the kernel has finished bringing the veth links up.

    Carrier changes are processed asynchronously (linkwatch): operstate, and with it the IPv6
    link-local address and multicast route of one end of each veth pair, appear a moment after
    `ip link set up` (up to a second on a busy machine). A snapshot taken before that would
    differ from one taken after, so the provider only returns once everything is settled."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [
            subprocess.Popen(
                sandbox.command(["ip", "-j", "link", "show", "type", "veth"], netns=ns),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for ns in namespaces
        ]
        pending = []
        for ns, p in zip(namespaces, procs, strict=True):
            out, _ = p.communicate(timeout=30)
            links = json.loads(out or b"[]")
            pending += [(ns, x["ifname"]) for x in links if x.get("operstate") != "UP"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ProviderError(f"links not up after {timeout}s: {pending}")
        time.sleep(0.01)


def errlog(sandbox: Sandbox, name: str) -> str:
    try:
        return sandbox.read_text(f"{SIM_DIR}/{name}.err").strip()[-2000:]
    except OSError:
        return "(no output)"
