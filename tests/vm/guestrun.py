"""Running the guest-side checks (tests/vm/guest/) in the VM and reading their results.

One boot per init mode runs pytest on the guest files inside the VM, with a JUnit report written
to a shared directory; each host-side test then asserts on its part of that report.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.vm import harness

GUEST_DIR = "tests/vm/guest"
PLAIN_FILES = ("test_guest_hwsim.py", "test_guest_wireguard.py", "test_guest_wgns.py")
# one boot runs them all, in this order: the boot check first (what the boot started), the
# health check last (it moves the provider's server and takes the guest's uplink down and up)
SYSTEMD_FILES = (
    "test_guest_sd_boot.py",
    "test_guest_systemd.py",
    "test_guest_sd_unit.py",
    "test_guest_sd_confine.py",
    "test_guest_sd_health.py",
)
# a second systemd boot of its own: physical mode takes the main namespace's network (issue 14)
PHYSICAL_FILES = ("test_guest_sd_physical.py",)


def timeout_factor() -> float:
    """``WGNS_VM_TIMEOUT_FACTOR`` scales every VM timeout (slow or busy CI machines)."""
    try:
        return max(0.1, float(os.environ.get("WGNS_VM_TIMEOUT_FACTOR", "1")))
    except ValueError:
        return 1.0


@dataclasses.dataclass
class GuestCase:
    file: str
    name: str
    outcome: str  # passed | failed | error | skipped
    message: str


@dataclasses.dataclass
class GuestRun:
    result: harness.VMResult
    cases: list[GuestCase]

    def check(self, file: str) -> None:
        """Pass if every guest test in ``file`` passed; skip if they skipped; else fail."""
        mine = [c for c in self.cases if c.file == file]
        if not mine:
            tail = "\n".join(self.result.output.splitlines()[-40:])
            pytest.fail(
                f"no results for {GUEST_DIR}/{file} from the VM (guest pytest exit status "
                f"{self.result.returncode}); its output ended with:\n{tail}",
                pytrace=False,
            )
        bad = [c for c in mine if c.outcome in ("failed", "error")]
        if bad:
            pytest.fail(
                "\n\n".join(f"in the VM: {c.file}::{c.name} {c.outcome}:\n{c.message}"
                            for c in bad),
                pytrace=False,
            )  # fmt: skip
        skipped = [c for c in mine if c.outcome == "skipped"]
        if skipped and len(skipped) == len(mine):
            pytest.skip("in the VM: " + "; ".join(f"{c.name}: {c.message}" for c in skipped))


def _parse_junit(path: Path) -> list[GuestCase]:
    if not path.exists():
        return []
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        classname = tc.get("classname", "")
        module = classname.split(".")[-1] if classname else ""
        file = f"{module}.py"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = tc.find(kind)
            if el is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (el.get("message") or "") + (
                    "\n" + el.text if el.text and kind != "skipped" else ""
                )
                break
        cases.append(GuestCase(file, tc.get("name", "?"), outcome, message.strip()))
    return cases


def run_guest_pytest(
    files: tuple[str, ...],
    init: harness.InitMode,
    outdir: Path,
    timeout: float,
    root_trees: Sequence[Path] = (),
) -> GuestRun:
    report = f"{harness.GUEST_OUT}/junit-{init}.xml"
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--noconftest",
        "-o", "addopts=", "-rA", "-v", "--durations=0", f"--junitxml={report}",
        *(f"{GUEST_DIR}/{f}" for f in files),
    ]  # fmt: skip
    print(f"\n--- VM ({init}): {' '.join(cmd[1:])}", flush=True)
    # no third-party pytest plugins in the guest: importing them costs seconds under emulation
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    res = harness.run(cmd, init=init, timeout=timeout * timeout_factor(), outdir=outdir, env=env,
                      root_trees=root_trees)  # fmt: skip
    print(
        f"--- VM ({init}): exit {res.returncode}, boot {res.boot_seconds:.1f} s, "
        f"total {res.total_seconds:.1f} s ({res.accel})",
        flush=True,
    )
    return GuestRun(res, _parse_junit(outdir / f"junit-{init}.xml"))
