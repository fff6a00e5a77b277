"""The command line a daemon run by hand gets inside `physical`: its own, kept in the
foreground (wgns holds the pid of what it starts; a daemon that forks into the background would
be lost). The daemons themselves run in tests/lifecycle/test_physical*.py and the VM."""

from __future__ import annotations

from wgns.features.physical_daemons import Relocated, foreground, wpa_options


def test_wpa_supplicant_loses_its_daemonize_option_only() -> None:
    argv = ["wpa_supplicant", "-B", "-i", "wlan0", "-c", "/etc/wpa.conf"]
    assert foreground("wpa_supplicant", argv) == argv[:1] + argv[2:]
    # grouped letters; a B inside an argument (attached or the next word) stays
    argv = ["/sbin/wpa_supplicant", "-sBu", "-Bc", "B.conf", "-iwlanB", "-P", "/run/B.pid"]
    assert foreground("wpa_supplicant", argv) == [
        "/sbin/wpa_supplicant", "-su", "-c", "B.conf", "-iwlanB", "-P", "/run/B.pid",
    ]  # fmt: skip
    assert foreground("wpa_supplicant", ["wpa_supplicant", "-u"]) == ["wpa_supplicant", "-u"]


def test_wpa_supplicant_options_as_getopt_reads_them() -> None:
    argv = ["wpa_supplicant", "-Bc", "/etc/B.conf", "-iwlan0", "-N", "-i", "wlan1", "-Dnl80211"]
    assert wpa_options(argv) == [
        ("B", None), ("c", "/etc/B.conf"), ("i", "wlan0"), ("N", None), ("i", "wlan1"),
        ("D", "nl80211"),
    ]  # fmt: skip
    wpa = Relocated("wpa_supplicant", argv, "/", "physical", ["wlan0", "wlan1"], 30.0)
    assert wpa.named_interfaces() == ["wlan0", "wlan1"]


def test_dhcp_clients_are_kept_in_the_foreground() -> None:
    background = ["dhcpcd", "-b", "eth0"]
    assert foreground("dhcpcd", background) == [*background, "--nobackground"]
    assert foreground("dhcpcd", ["dhcpcd", "-B", "eth0"]) == ["dhcpcd", "-B", "eth0"]
    assert foreground("dhclient", ["dhclient", "-nw", "eth0"]) == ["dhclient", "-d", "-nw", "eth0"]
    assert foreground("dhclient", ["dhclient", "-d", "eth0"]) == ["dhclient", "-d", "eth0"]
    assert foreground("iwd", ["/usr/libexec/iwd"]) == ["/usr/libexec/iwd"]
