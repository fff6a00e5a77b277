"""Which network daemons of the main namespace physical mode relocates, and how they are
started again (the end-to-end cases are in tests/lifecycle/test_physical*.py)."""

from __future__ import annotations

from wgns.features.physical_hostdaemons import command_line, is_helper
from wgns.features.physical_units import service_in


def test_dhcpcd_title_gives_back_its_command_line() -> None:
    assert command_line(("dhcpcd: eth0 [ip4]",)) == ("dhcpcd", "--ipv4only", "eth0")
    assert command_line(("dhcpcd: [manager] [ip4] [ip6]",)) == ("dhcpcd",)
    assert command_line(("dhcpcd: wlan0 [ip6]",)) == ("dhcpcd", "--ipv6only", "wlan0")
    argv = ("/sbin/dhclient", "-4", "-v", "eth0")
    assert command_line(argv) == argv


def test_the_unit_of_a_process_comes_from_its_cgroup() -> None:
    assert service_in("0::/system.slice/dhcpcd.service\n") == "dhcpcd.service"
    unit = "0::/system.slice/system-wpa_supplicant.slice/wpa_supplicant@wlan0.service"
    assert service_in(unit) == "wpa_supplicant@wlan0.service"
    assert service_in("0::/user.slice/user-1000.slice/session-2.scope\n") is None


def test_dhcpcd_helpers_are_not_the_daemon() -> None:
    for title in ("dhcpcd: [launcher]", "dhcpcd: [privileged proxy] eth0 [ip4]"):
        assert is_helper((title,))
    assert not is_helper(("dhcpcd: eth0 [ip4]",))
    assert not is_helper(("dhcpcd: [manager] [ip4] [ip6]",))
