"""Running every check in order, and the JSON report of `wgns check --json`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from wgns.errors import WgnsError
from wgns.features.check.confinement import check_interfaces, check_killswitch, check_routes
from wgns.features.check.facts import gather
from wgns.features.check.probes import check_dns, check_exit, check_handshake, check_ipv6
from wgns.features.check.result import Result, verdict

DEFAULT_TIMEOUT = 5.0
ORDER = ("interfaces", "routes", "killswitch", "handshake", "dns", "ipv6", "exit")


def run_checks(
    ns: str, *, echo_url: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[Result]:
    """Every check, in ORDER. DNS runs before the handshake check: its query starts one."""
    f = gather(ns)
    results: dict[str, Result] = {}
    steps: list[tuple[str, Callable[[], Result]]] = [
        ("interfaces", lambda: check_interfaces(f)),
        ("routes", lambda: check_routes(f)),
        ("killswitch", lambda: check_killswitch(f)),
        ("dns", lambda: check_dns(f, timeout)),
        ("handshake", lambda: check_handshake(f, timeout)),
        ("ipv6", lambda: check_ipv6(f)),
        ("exit", lambda: check_exit(f, echo_url, timeout)),
    ]
    for key, step in steps:
        try:
            results[key] = step()
        except (WgnsError, OSError, ValueError) as e:
            results[key] = verdict(key, False, f"could not check: {e}")
    return [results[k] for k in ORDER]


def report(ns: str, results: Sequence[Result]) -> dict[str, Any]:
    return {
        "format": 1,
        "ns": ns,
        "ok": all(r.ok for r in results),
        "checks": [r.to_json() for r in results],
    }


def is_root() -> bool:
    return os.geteuid() == 0
