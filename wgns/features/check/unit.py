"""The process of a running systemd unit, for `wgns check --unit UNIT`: its MainPID (or, for a unit
without one, the first process of its control group), with one clear error when there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

from wgns.errors import WgnsError

#: What sd_booted(3) looks at: systemd, running as PID 1, creates this directory early.
SYSTEMD_RUNTIME = "/run/systemd/system"
PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "MainPID", "ControlGroup")
CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (KEY=VALUE lines) as a dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def cgroup_pids(group: str) -> list[int]:
    """The processes of control group GROUP (as systemd names it: /system.slice/x.service) and
    of the groups below it, in the order the kernel lists them."""
    for root in CGROUP_ROOTS:
        top = root + group
        if not os.path.isfile(f"{top}/cgroup.procs"):
            continue
        pids = []
        for here, _, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(f"{here}/cgroup.procs") as f:
                        pids += [int(w) for w in f.read().split()]
                except OSError:
                    continue
        return pids
    return []


def pick_pid(
    unit: str,
    props: Mapping[str, str],
    pids_of: Callable[[str], list[int]] = cgroup_pids,
) -> int:
    """The process to check for UNIT from its `systemctl show` PROPS, or a WgnsError saying why
    there is none and what to do."""
    shown = props.get("Id") or unit
    load = props.get("LoadState", "")
    if load == "not-found":
        raise WgnsError(
            f"unit {unit} does not exist",
            hint="`systemctl list-units --all` lists the units systemd knows",
        )
    if load not in ("loaded", ""):
        raise WgnsError(
            f"unit {shown} is {load}, not loaded",
            hint=f"`systemctl status {shown}` says why",
        )
    try:
        main = int(props.get("MainPID", "0") or 0)
    except ValueError:
        main = 0
    if main > 0:
        return main
    active = props.get("ActiveState", "unknown")
    group = props.get("ControlGroup", "")
    if active in ("active", "reloading") and group:
        pids = pids_of(group)
        if pids:
            return pids[0]
    sub = props.get("SubState", "")
    raise WgnsError(
        f"unit {shown} is not running ({active}{'/' + sub if sub else ''}): no process to check",
        hint=f"start it (`systemctl start {shown}`) and check again",
    )


def unit_pid(unit: str, *, runtime_dir: str = SYSTEMD_RUNTIME) -> int:
    """The process to check for UNIT, asked of the running systemd."""
    if not unit or unit.startswith("-"):
        raise WgnsError(f"invalid unit name {unit!r}")
    if not os.path.isdir(runtime_dir):
        raise WgnsError(
            f"systemd is not running here ({runtime_dir} is missing): "
            f"cannot find the process of unit {unit}",
            hint="for a process started another way, `wgns check --pid PID`",
        )
    if shutil.which("systemctl") is None:
        raise WgnsError("systemctl is not installed: cannot ask systemd about units")
    proc = subprocess.run(
        ["systemctl", "show", f"--property={','.join(PROPERTIES)}", "--", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise WgnsError(f"`systemctl show {unit}` failed: {why}")
    return pick_pid(unit, parse_show(proc.stdout))
