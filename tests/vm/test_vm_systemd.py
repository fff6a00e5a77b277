"""The checks that need systemd as PID 1 (issue 13), run in the VM's one systemd boot.

Each test asserts on one guest file's results (tests/vm/guest/test_guest_sd_*.py); the boot is
shared (the ``guest_systemd`` fixture in tests/vm/conftest.py): nscd, systemd-resolved and
libnss-resolve unpacked into the guest (tests/vm/guestpkgs.py), its set-up laid over its root
before it boots (tests/vm/guestsetup.py). See docs/vm-tests.md.
"""

from __future__ import annotations

import pytest

from tests.vm.guestrun import GuestRun

pytestmark = pytest.mark.vm


def test_enabled_wgns_unit_and_confined_unit_start_at_boot_in_order(
    guest_systemd: GuestRun,
) -> None:
    guest_systemd.check("test_guest_sd_boot.py")


def test_wgns_unit_start_is_ready_and_stop_leaves_the_guest_as_it_was(
    guest_systemd: GuestRun,
) -> None:
    guest_systemd.check("test_guest_sd_unit.py")


def test_confined_units_leave_through_the_tunnel_and_resolve_with_its_dns(
    guest_systemd: GuestRun,
) -> None:
    guest_systemd.check("test_guest_sd_confine.py")


def test_health_repairs_without_restarting_what_runs_inside(guest_systemd: GuestRun) -> None:
    guest_systemd.check("test_guest_sd_health.py")
