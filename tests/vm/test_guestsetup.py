"""The systemd guest's set-up, on the host (no VM): the package trees made merged-/usr and the
set-up tree tests/vm/guestsetup.py lays over the guest's root. The VM tests use both for real."""

from __future__ import annotations

import os
from pathlib import Path

from tests.vm import guestpkgs, guestsetup
from wgns.integrations.systemd import confine


def test_a_package_tree_becomes_merged_usr(tmp_path: Path) -> None:
    for rel in ("lib/systemd/systemd-resolved", "lib/x86_64-linux-gnu/libnss_resolve.so.2",
                "usr/lib/x86_64-linux-gnu/other.so", "sbin/nscd", "usr/share/doc/nscd/README",
                "etc/nscd.conf", "var/run/nscd/x"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    guestpkgs.merge_usr(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "etc/nscd.conf",
        "usr/lib/systemd/systemd-resolved",
        "usr/lib/x86_64-linux-gnu/libnss_resolve.so.2",
        "usr/lib/x86_64-linux-gnu/other.so",
        "usr/sbin/nscd",
    ]
    assert (tmp_path / "usr/sbin/nscd").read_text() == "sbin/nscd"


def test_the_set_up_tree(tmp_path: Path) -> None:
    root = guestsetup.build(tmp_path)
    nss = (root / "etc/nsswitch.conf").read_text().splitlines()
    hosts = [ln for ln in nss if ln.startswith("hosts:")]
    assert hosts == [guestsetup.NSSWITCH_HOSTS]
    assert hosts[0].split()[1] == "resolve"
    assert f"{guestsetup.WRONG_V4}\t{guestsetup.TEST_NAME}" in (root / "etc/hosts").read_text()
    unit = (root / "usr/local/lib/systemd/system/wgns@.service").read_text()
    assert f"ExecStart={guestsetup.LAUNCHER} up --foreground %i" in unit
    assert os.access(root / guestsetup.LAUNCHER.lstrip("/"), os.X_OK)
    dropin = root / f"etc/systemd/system/{guestsetup.BOOT_APP}.d/{confine.DROPIN_NAME}"
    assert dropin.read_text() == confine.dropin_text(guestsetup.BOOT_APP, guestsetup.BOOT_NS)
    wants = root / guestsetup.TARGET_WANTS
    assert sorted(p.name for p in wants.iterdir()) == sorted(
        ["nscd.service", guestsetup.PROVIDER_UNIT, "wgns@boot.service", guestsetup.BOOT_APP]
    )
    assert os.readlink(wants / "wgns@boot.service") == f"{guestsetup.UNIT_DIR}/wgns@.service"


def test_the_physical_set_up_tree(tmp_path: Path) -> None:
    """The physical boot's tree: wgns's two units for the launcher, only the provider enabled
    (no wgns@boot: physical mode takes the main namespace's network), the station's
    configuration where Debian's wpa_supplicant@wlan0.service reads it."""
    root = guestsetup.build_physical(tmp_path)
    unit = (root / "usr/local/lib/systemd/system/wgns-physical@.service").read_text()
    assert f"ExecStart={guestsetup.LAUNCHER} physical up $WGNS_PHYSICAL_ARGS %i" in unit
    assert (root / "usr/local/lib/systemd/system/wgns@.service").exists()
    wants = root / guestsetup.TARGET_WANTS
    assert [p.name for p in wants.iterdir()] == [guestsetup.PROVIDER_UNIT]
    conf = root / f"etc/wpa_supplicant/wpa_supplicant-{guestsetup.STATION}.conf"
    assert f'ssid="{guestsetup.WIFI_SSID}"' in conf.read_text()
    assert conf.stat().st_mode & 0o077 == 0  # a passphrase
    assert "etc/network" in guestpkgs.DROPPED  # ifupdown hooks the guest's root may have
