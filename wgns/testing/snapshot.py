"""Snapshots of everything wgns could change inside a sandbox, and their differences.

A snapshot compares equal to another one taken when nothing changed: counters, lifetimes and
other values that move by themselves are dropped (see :data:`_VOLATILE_KEYS`).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgns.testing import occupants

if TYPE_CHECKING:
    from wgns.testing.sandbox import Sandbox

# keys of `ip -j` output that change without anyone changing anything
_VOLATILE_KEYS = frozenset(
    {"stats", "stats64", "valid_life_time", "preferred_life_time", "expires", "used", "age"}
)


def _strip_volatile(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _VOLATILE_KEYS:
                continue
            if k == "counter" and isinstance(v, dict):
                v = {kk: (0 if kk in ("packets", "bytes") else vv) for kk, vv in v.items()}
            out[k] = _strip_volatile(v)
        return out
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def snapshot_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Human-readable differences between two snapshots (empty: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in b:
                out.append(f"{path}/{k}: removed: {a[k]!r:.300}")
            elif k not in a:
                out.append(f"{path}/{k}: added: {b[k]!r:.300}")
            else:
                out.extend(snapshot_diff(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in snapshot_diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r:.300} -> {b!r:.300}"]


def _parse_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return []
    return json.loads(text)


def tree(base: Path, *, contents: bool) -> dict[str, Any]:
    """Every entry under BASE (relative path -> mode, type, link target, file contents)."""
    out: dict[str, Any] = {}
    if not base.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        # a file system mounted below BASE (a namespace's /etc view) is an entry, not a tree
        listed = sorted(dirnames + filenames)
        dirnames[:] = sorted(d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d)))
        rel_dir = os.path.relpath(dirpath, base)
        for name in listed:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode))}
            if stat.S_ISLNK(st.st_mode):
                entry["type"] = "link"
                entry["target"] = os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                entry["type"] = "mount" if os.path.ismount(full) else "dir"
            elif stat.S_ISREG(st.st_mode):
                entry["type"] = "file"
                if contents and st.st_size <= 1 << 20 and not os.path.ismount(full):
                    try:
                        with open(full, "rb") as f:
                            entry["content"] = f.read().decode(errors="replace")
                    except OSError as e:
                        entry["content"] = f"<unreadable: {e.strerror}>"
            elif stat.S_ISSOCK(st.st_mode):
                entry["type"] = "socket"
            else:
                entry["type"] = "other"
            out[rel] = entry
    return out


def take(sandbox: Sandbox) -> dict[str, Any]:
    """Everything wgns could change, in a form that compares equal when nothing changed.

    Network state (addresses, links, v4/v6 routes of all tables, v4/v6 rules, nft ruleset) of
    the sandbox's root namespace and of every named namespace; the files under /run/netns,
    /etc/netns (with contents), /run/wgns (with contents) and /run/wireguard; and the
    command lines of the processes running inside."""
    queries: dict[tuple[str, str], tuple[list[str], str | None]] = {}
    spaces: list[str | None] = [None, *sandbox.netns_names()]
    for ns in spaces:
        key = ns or ""
        n = ["-n", ns] if ns else []
        queries[(key, "addr")] = (["ip", *n, "-j", "addr", "show"], None)
        queries[(key, "link")] = (["ip", *n, "-j", "-d", "link", "show"], None)
        queries[(key, "route4")] = (
            ["ip", *n, "-j", "-4", "route", "show", "table", "all"],
            None,
        )
        queries[(key, "route6")] = (
            ["ip", *n, "-j", "-6", "route", "show", "table", "all"],
            None,
        )
        queries[(key, "rule4")] = (["ip", *n, "-j", "-4", "rule", "show"], None)
        queries[(key, "rule6")] = (["ip", *n, "-j", "-6", "rule", "show"], None)
        queries[(key, "nft")] = (["nft", "-j", "list", "ruleset"], ns)
    procs = {
        k: subprocess.Popen(
            sandbox.command(argv, netns=ns),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k, (argv, ns) in queries.items()
    }
    net: dict[str, dict[str, Any]] = {}
    for (key, what), p in procs.items():
        out, err = p.communicate(timeout=30)
        if p.returncode != 0:
            # a namespace deleted meanwhile shows up as such, not as a crash
            net.setdefault(key, {})[what] = {"error": err.decode(errors="replace").strip()}
            continue
        data = _strip_volatile(_parse_json(out.decode(errors="replace")))
        net.setdefault(key, {})[what] = data
    commands = (occupants.cmdline(pid) for pid in sandbox.pids())
    processes = sorted(" ".join(c) for c in commands if c is not None)
    return {
        "net": net,
        "files": {
            "/run/netns": tree(sandbox.path("/run/netns"), contents=False),
            "/etc/netns": tree(sandbox.path("/etc/netns"), contents=True),
            "/run/wgns": tree(sandbox.path("/run/wgns"), contents=True),
            "/run/wireguard": tree(sandbox.path("/run/wireguard"), contents=False),
        },
        "processes": processes,
    }
