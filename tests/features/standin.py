"""A stand-in container for the container tests: a process in fresh network and mount
namespaces (`unshare -n -m`) inside the sandbox, with its own /etc/resolv.conf bind-mounted
over the sandbox's, as an engine does; and what is seen from inside it (`nsenter -t PID -n -m`)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from wgns.testing.sandbox import SANDBOX_TMP, Sandbox

RESOLV = "nameserver 192.0.2.53\nsearch corp.example\n"  # what the "engine" gave it


@dataclass
class StandIn:
    sandbox: Sandbox
    proc: subprocess.Popen[Any]
    resolv_source: str  # the engine's file, bind-mounted on the container's /etc/resolv.conf

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """ARGV inside the container: its network and its mount namespace."""
        inside = ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *argv]
        return self.sandbox.run(inside, check=check)

    def resolv(self) -> str:
        return self.run(["cat", "/etc/resolv.conf"]).stdout

    def links(self) -> list[str]:
        return sorted(x["ifname"] for x in json.loads(self.run(["ip", "-j", "link"]).stdout))

    def snapshot(self) -> dict[str, Any]:
        """Its network state (links, addresses, routes, nft) and resolv.conf."""
        out: dict[str, Any] = {"resolv": self.resolv()}
        for what in (["link"], ["addr"], ["-4", "route", "show", "table", "all"]):
            out[" ".join(what)] = json.loads(self.run(["ip", "-j", *what]).stdout or "[]")
        out["nft"] = self.run(["nft", "list", "ruleset"]).stdout
        return out

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.sandbox.untrack(self.proc)


def start(
    sandbox: Sandbox, *, tag: str = "c1", setup: str = "", resolv: str | None = RESOLV
) -> StandIn:
    """A new stand-in container, lo up as engines leave it; SETUP: shell commands run inside it
    first (as root). Its resolv.conf is the file TAG names, written with RESOLV (None: as it
    is, the engine's file kept across a restart, as Docker keeps it)."""
    source = f"{SANDBOX_TMP}/{tag}-resolv.conf"
    if resolv is not None:
        sandbox.write_file(source, resolv)
    script = (
        f"mount --bind {source} /etc/resolv.conf && ip link set lo up && {setup or 'true'} "
        "&& exec sleep 600"
    )
    proc = sandbox.popen(["unshare", "-n", "-m", "--", "sh", "-c", script])
    wait_started(proc)
    return StandIn(sandbox, proc, source)


def wait_started(proc: subprocess.Popen[Any]) -> None:
    """Until PROC runs sleep: its namespaces are made (and its file mounted)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with open(f"/proc/{proc.pid}/comm") as f:
                if f.read().strip() == "sleep":
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"the stand-in exited ({proc.returncode})"
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.02)
