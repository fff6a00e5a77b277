"""The drop-in that moves a network daemon's unit into the physical namespace: systemd 252
parses it (`systemd-analyze verify`, systemd not running here: applying it, the restart, is
work for the VM tests)."""

from __future__ import annotations

from pathlib import Path

from tests.integrations.unitfiles import needs_analyze, verify
from wgns.features.physical_units import DROPIN_NAME, dropin_path, dropin_text

DHCPCD_UNIT = """\
[Unit]
Description=DHCP Client Daemon (as Debian's dhcpcd package ships it)
Wants=network.target
Before=network.target

[Service]
Type=forking
ExecStart=/usr/sbin/dhcpcd -b -q
PIDFile=/run/dhcpcd/pid
Restart=always

[Install]
WantedBy=multi-user.target
"""


def test_dropin_names_the_namespace_and_binds_its_resolv_conf_writable() -> None:
    text = dropin_text("dhcpcd.service", "physical")
    assert "NetworkNamespacePath=/run/netns/physical\n" in text
    assert "BindPaths=/etc/netns/physical/resolv.conf:/etc/resolv.conf\n" in text
    assert "ReadOnly" not in text  # the daemon writes its resolv.conf there
    assert dropin_path("dhcpcd.service") == f"/run/systemd/system/dhcpcd.service.d/{DROPIN_NAME}"


@needs_analyze
def test_systemd_parses_the_unit_with_its_dropin(tmp_path: Path) -> None:
    (tmp_path / "dhcpcd.service").write_text(DHCPCD_UNIT)
    d = tmp_path / "dhcpcd.service.d"
    d.mkdir()
    (d / DROPIN_NAME).write_text(dropin_text("dhcpcd.service", "physical"))
    proc = verify(tmp_path, "dhcpcd.service")
    assert proc.returncode == 0, proc.stderr
    assert "wgns-physical" not in proc.stderr and "Unknown" not in proc.stderr, proc.stderr
    # a broken drop-in is reported by the same check (the test can fail)
    (d / DROPIN_NAME).write_text("[Service]\nNetworkNamespacePath=\nBindPaths=relative:/etc\n")
    bad = verify(tmp_path, "dhcpcd.service")
    assert "BindPaths" in bad.stderr or bad.returncode != 0, bad.stderr


def test_a_unit_bound_to_its_network_device_is_copied_without_that_dependency() -> None:
    """A unit like Debian's dhcpcd@.service (BindsTo=/After= its device) or
    wpa_supplicant@.service (Requires=/After=): systemd knows the device's unit only while the
    device is in the main namespace, so inside `physical` such a unit would wait for it (and a
    BindsTo= one be stopped at once); its copy keeps everything but those dependencies."""
    from wgns.features.physical_units import without_netdev_dependencies

    unit = (
        "[Unit]\n"
        "Description=a DHCP client on %I\n"
        "Wants=network.target\n"
        "BindsTo=sys-subsystem-net-devices-%i.device\n"
        "After=sys-subsystem-net-devices-%i.device network-pre.target\n"
        "\n"
        "[Service]\n"
        "ExecStart=/usr/sbin/dhcpcd -q -w %I\n"
        "After=sys-subsystem-net-devices-%i.device\n"  # not a [Unit] line: left alone
    )
    copy = without_netdev_dependencies(unit)
    assert copy is not None
    assert "BindsTo" not in copy
    assert "After=network-pre.target\n" in copy
    assert "Wants=network.target\n" in copy and "ExecStart=/usr/sbin/dhcpcd -q -w %I\n" in copy
    assert copy.count("sys-subsystem-net-devices") == 1  # the [Service] line
    assert without_netdev_dependencies("[Unit]\nAfter=network.target\n") is None
