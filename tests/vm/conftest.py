"""Fixtures for the VM tests (``pytest -m vm``): see tests/vm/harness.py and docs/vm-tests.md.

The guest-side checks in tests/vm/guest/ run *inside* the VM, all in one boot per init mode (see
tests/vm/guestrun.py); the session fixtures here do those boots once.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.vm import guestpkgs, guestsetup, harness  # noqa: E402
from tests.vm.guestrun import (  # noqa: E402
    PHYSICAL_FILES,
    PLAIN_FILES,
    SYSTEMD_FILES,
    GuestRun,
    run_guest_pytest,
)

# On the host, the guest-side files are not tests (they would only skip); in the VM they are.
collect_ignore_glob = [] if os.environ.get("WGNS_IN_VM") == "1" else ["guest/*"]


@pytest.fixture(scope="session")
def vm_kernel() -> harness.Kernel:
    """The cached Debian kernel and initramfs (downloaded on first use)."""
    if os.environ.get("WGNS_VM") == "skip":
        missing = [t for t in ("qemu-system-x86_64", "busybox") if shutil.which(t) is None]
        if missing:
            pytest.skip(f"WGNS_VM=skip and {', '.join(missing)} not installed "
                        "(apt-get install $(cat scripts/packages/vm.txt))")  # fmt: skip
    kernel = harness.fetch_kernel()
    harness.build_initramfs(kernel)
    return kernel


@pytest.fixture(scope="session")
def guest_plain(vm_kernel: harness.Kernel, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One plain boot that runs every plain-mode guest check."""
    return run_guest_pytest(PLAIN_FILES, "plain", tmp_path_factory.mktemp("vm-plain"), 600)


@pytest.fixture(scope="session")
def guest_systemd(vm_kernel: harness.Kernel, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot with systemd as PID 1 that runs every systemd guest check, with nscd,
    systemd-resolved and libnss-resolve unpacked into it and the set-up of
    tests/vm/guestsetup.py laid over its root."""
    trees = [*guestpkgs.fetch(), guestsetup.build(tmp_path_factory.mktemp("vm-sd-root"))]
    return run_guest_pytest(SYSTEMD_FILES, "systemd", tmp_path_factory.mktemp("vm-sd"), 900,
                            root_trees=trees)  # fmt: skip


@pytest.fixture(scope="session")
def guest_physical(vm_kernel: harness.Kernel, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """A second boot with systemd as PID 1 for physical mode on wifi (issue 14): hostapd,
    wpasupplicant and dhcpcd (Debian's units) unpacked into it, the set-up of
    tests/vm/guestsetup.build_physical laid over its root."""
    trees = [
        *guestpkgs.fetch(guestsetup.PHYSICAL_PACKAGES),
        guestsetup.build_physical(tmp_path_factory.mktemp("vm-phys-root")),
    ]
    return run_guest_pytest(PHYSICAL_FILES, "systemd", tmp_path_factory.mktemp("vm-phys"), 900,
                            root_trees=trees)  # fmt: skip
