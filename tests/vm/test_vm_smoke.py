"""The test VM itself, and the real-kernel checks that run inside it (tests/vm/guest/).

Run alone: ``python3 -m pytest -m vm tests/vm`` (see docs/vm-tests.md).
"""

from __future__ import annotations

import io
import shlex
import time
from pathlib import Path

import pytest

from tests.vm import harness
from tests.vm.guestrun import GuestRun, timeout_factor

pytestmark = pytest.mark.vm


@pytest.mark.parametrize(
    ("script", "status", "output"),
    [
        # a line that looks like a marker is just output (the real ones carry a nonce)
        ("echo hello from $(uname -r); echo to-stderr >&2; echo WGNS-VM-EXIT=5", 0, None),
        ("echo line1; printf 'no newline at the end'; exit 7", 7, "line1\nno newline at the end"),
    ],
    ids=["exit-0", "exit-7"],
)
def test_plain_boot_returns_exit_status_and_output(
    vm_kernel: harness.Kernel, script: str, status: int, output: str | None
) -> None:
    sink = io.StringIO()
    cwd = shlex.quote(str(harness.PROJECT_ROOT))
    res = harness.run(["sh", "-c", f'[ "$PWD" = {cwd} ] || exit 99; {script}'],
                      timeout=240 * timeout_factor(), output=sink)  # fmt: skip
    assert res.returncode == status, res.output
    # streamed as whole lines (a last line without a newline gets one in the stream only)
    assert sink.getvalue() == res.output + ("" if res.output.endswith("\n") else "\n")
    if output is None:
        assert res.output == f"hello from {vm_kernel.release}\nto-stderr\nWGNS-VM-EXIT=5\n"
    else:
        assert res.output == output
    assert 0 < res.boot_seconds <= res.total_seconds


def test_boot_failure_is_an_error_with_the_console(vm_kernel: harness.Kernel) -> None:
    # no such init in the initramfs: the kernel panics, qemu exits (-no-reboot)
    t0 = time.monotonic()
    with pytest.raises(harness.VMBootError) as e:
        harness.run(["true"], timeout=240 * timeout_factor(), output=io.StringIO(),
                    kernel_args=["rdinit=/nonexistent", "init=/nonexistent"])  # fmt: skip
    assert e.value.qemu_pid is not None and not Path(f"/proc/{e.value.qemu_pid}").exists()
    assert "did not boot" in str(e.value)
    assert "Kernel panic" in str(e.value)  # the console's last lines are in the message
    assert time.monotonic() - t0 < 240 * timeout_factor()


def test_timeout_kills_qemu(vm_kernel: harness.Kernel) -> None:
    t0 = time.monotonic()
    with pytest.raises(harness.VMTimeout, match="did not finish within 3 s") as e:
        harness.run(["sleep", "1000"], timeout=3, output=io.StringIO())
    assert time.monotonic() - t0 < 20
    assert e.value.qemu_pid is not None
    assert not Path(f"/proc/{e.value.qemu_pid}").exists()  # killed and reaped


def test_hwsim_phy_moves_between_namespaces(guest_plain: GuestRun) -> None:
    guest_plain.check("test_guest_hwsim.py")


def test_kernel_wireguard_interop_with_wireguard_go(guest_plain: GuestRun) -> None:
    guest_plain.check("test_guest_wireguard.py")


def test_wgns_up_kernel_backend_in_vm(guest_plain: GuestRun) -> None:
    guest_plain.check("test_guest_wgns.py")


def test_systemd_unit_in_network_namespace(guest_systemd: GuestRun) -> None:
    guest_systemd.check("test_guest_systemd.py")
