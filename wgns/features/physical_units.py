"""Network daemons run by systemd units (dhcpcd.service, wpa_supplicant@wlan0.service,
iwd.service...) follow the interfaces into the physical namespace: the same mechanism as
`wgns confine` (a drop-in, then a restart), with the physical namespace's resolv.conf bound
*writable* over /etc/resolv.conf, since a DHCP client writes it.

The drop-in lives under /run/systemd/system (gone at reboot, as physical mode is: after a
reboot the interfaces are in the main namespace again). The unit is stopped before its
interfaces move and started inside once they are there; at `down`, stopped there, freed of
the drop-in, and started again in the main namespace once its interfaces are back.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from wgns import log
from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.system import fsutil, netns
from wgns.system.processes import proc_text
from wgns.system.tools import run

RUNTIME_UNIT_DIR = "/run/systemd/system"
DROPIN_NAME = "wgns-physical.conf"
# searched before /etc/systemd/system and the vendor directories (systemd.unit(5)): a copy of a
# unit's file here replaces its fragment (its drop-ins still apply), until removed
CONTROL_UNIT_DIR = "/run/systemd/system.control"
NETDEV_UNIT = re.compile(r"^sys-subsystem-net-devices-\S+\.device$")
DEPENDENCIES = ("Requires", "Requisite", "BindsTo", "PartOf", "Wants", "Upholds", "After", "Before")


def without_netdev_dependencies(fragment: str) -> str | None:
    """FRAGMENT (a unit file's text) without its dependencies on network devices' units
    (None: it has none). Debian's wpa_supplicant@.service (Requires=, After=) and
    dhcpcd@.service (BindsTo=, After=) depend on sys-subsystem-net-devices-%i.device, which
    systemd knows only while the device is in the main namespace: started inside `physical`
    the unit would wait for it (and a BindsTo= one be stopped at once). A drop-in cannot remove
    a dependency, so physical mode runs such a unit from a copy of its file without them."""
    out, changed, section = [], False, ""
    for line in fragment.splitlines():
        text = line.strip()
        if text.startswith("["):
            section = text
        key, eq, value = text.partition("=")
        if section == "[Unit]" and eq and key.strip() in DEPENDENCIES:
            words = value.split()
            kept = [w for w in words if not NETDEV_UNIT.match(w)]
            if len(kept) != len(words):
                changed = True
                if not kept:
                    continue
                line = f"{key.strip()}={' '.join(kept)}"
        out.append(line)
    return "\n".join(out) + "\n" if changed else None


def fragment_of(unit: str) -> str:
    """The path of UNIT's unit file (systemctl show -p FragmentPath), "" if none."""
    proc = run(["systemctl", "show", "--property=FragmentPath", "--value", unit], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def control_path(unit: str) -> str:
    return f"{CONTROL_UNIT_DIR}/{unit}"


def dropin_text(unit: str, ns: str) -> str:
    """The drop-in running UNIT inside NS, its resolv.conf writes landing in /etc/netns/NS."""
    netns.validate_name(ns)
    return (
        f"# Written by `wgns physical up` (namespace {ns}); removed by `wgns physical down`.\n"
        f"# Runs {unit} inside {ns}, where the machine's interfaces are, with\n"
        f"# /etc/netns/{ns}/resolv.conf as its /etc/resolv.conf (docs/physical.md).\n"
        "[Unit]\n"
        f"AssertPathIsMountPoint={netns.path_of(ns)}\n"
        "\n"
        "[Service]\n"
        f"NetworkNamespacePath={netns.path_of(ns)}\n"
        f"BindPaths={netns.etc_dir_of(ns)}/resolv.conf:/etc/resolv.conf\n"
    )


def dropin_path(unit: str, unit_dir: str = RUNTIME_UNIT_DIR) -> str:
    return f"{unit_dir}/{unit}.d/{DROPIN_NAME}"


def _systemctl(*args: str) -> None:
    proc = run(["systemctl", *args], check=False)
    if proc.returncode != 0:
        raise WgnsError(f"systemctl {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass(kw_only=True)
class StopUnit(Op):
    """UNIT stopped before its interfaces leave the main namespace; started again on undo,
    once they are back (the undo runs after the links' own)."""

    kind = "physical_unit_stop"
    unit: str

    def describe(self) -> str:
        return f"systemctl stop {self.unit} (started again at down)"

    def apply(self, ctx: Context) -> None:
        _systemctl("stop", self.unit)
        self.result["stopped"] = True

    def undo(self, ctx: Context) -> None:
        if self.result.get("stopped", True):
            # --no-block: a unit like Debian's wpa_supplicant@wlan0 waits for its device's
            # unit, which systemd sees only once udev has seen the interface come back, and
            # dhcpcd@wlan0 (`dhcpcd -w`) for its lease; down does not wait for either
            _systemctl("start", "--no-block", self.unit)


@dataclass(kw_only=True)
class ConfineUnit(Op):
    """UNIT started inside NS (a runtime drop-in) once its interfaces are there; stopped and
    freed of the drop-in on undo, before they move back."""

    kind = "physical_unit"
    unit: str
    ns: str

    def describe(self) -> str:
        return f"write {dropin_path(self.unit)}; systemctl start {self.unit} (inside {self.ns})"

    def prepare(self, ctx: Context) -> None:
        for path in (dropin_path(self.unit), control_path(self.unit)):
            if os.path.exists(path):
                raise WgnsError(
                    f"{path} exists already and this run did not write it",
                    hint="a physical mode left over? `wgns recover`; else remove the file",
                )
        self.result["dir_created"] = not os.path.isdir(os.path.dirname(dropin_path(self.unit)))
        fragment = fragment_of(self.unit)
        copy = None
        if fragment and not fragment.startswith(CONTROL_UNIT_DIR + "/"):
            try:
                with open(fragment) as f:
                    copy = without_netdev_dependencies(f.read())
            except OSError:
                copy = None
        if copy is not None:  # journaled with the op: undo removes exactly this file
            self.result["copy"] = control_path(self.unit)
            self.result["copy_text"] = (
                f"# Written by `wgns physical up` (namespace {self.ns}): {fragment} without its\n"
                "# dependencies on network devices' units (docs/physical.md); removed by down.\n"
                + copy
            )

    def apply(self, ctx: Context) -> None:
        path = dropin_path(self.unit)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fsutil.write_atomically(path, dropin_text(self.unit, self.ns))
        if self.result.get("copy"):
            os.makedirs(CONTROL_UNIT_DIR, exist_ok=True)
            fsutil.write_atomically(str(self.result["copy"]), str(self.result["copy_text"]))
        _systemctl("daemon-reload")
        _systemctl("start", self.unit)

    def undo(self, ctx: Context) -> None:
        path = dropin_path(self.unit)
        copy = str(self.result.get("copy") or "")
        if not os.path.exists(path) and not (copy and os.path.exists(copy)):
            return  # never written
        _systemctl("stop", self.unit)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if copy:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)
        if self.result.get("dir_created", False):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))
        _systemctl("daemon-reload")


# ---------------------------------------------------------------- wgns-physical@ itself

UNIT_PREFIX = "wgns-physical@"
SYSTEMD_RUNNING = RUNTIME_UNIT_DIR  # sd_booted(3): it exists while systemd runs as PID 1


def unit_of(pid: int) -> str | None:
    """The systemd service PID belongs to (its cgroup), when systemd runs."""
    if not os.path.isdir(SYSTEMD_RUNNING):
        return None
    return service_in(proc_text(f"/proc/{pid}/cgroup"))


def service_in(cgroup: str) -> str | None:
    """The service named by a /proc/PID/cgroup text ("0::/system.slice/dhcpcd.service")."""
    for line in cgroup.splitlines():
        path = line.rpartition(":")[2]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def own_unit() -> str | None:
    """The wgns-physical@ unit this process runs in (its cgroup), if any."""
    unit = unit_of(os.getpid())
    return unit if unit is not None and unit.startswith(UNIT_PREFIX) else None


def release_unit(ns: str, unit: str | None) -> None:
    """After a `down` that its own unit did not ask for (the dead-man switch firing, `wgns
    physical down` or `recover` typed by hand), the wgns-physical@ UNIT that brought NS up is
    stopped too: it would stay `active (exited)` with the network already given back, and a
    `systemctl start` of it would do nothing. Its ExecStop then finds nothing to give back.
    (Not when that unit is stopping: this is its ExecStop.)"""
    if not unit:
        return
    if run(["systemctl", "is-active", unit], check=False).stdout.strip() != "active":
        return
    proc = run(["systemctl", "stop", "--no-block", unit], check=False)
    if proc.returncode != 0:
        log.info("wgns: %s: cannot stop %s: %s", ns, unit, proc.stderr.strip())
