"""Physical mode on wifi with systemd as PID 1 (issue 14, item 5), in the VM's physical boot.

The checks run in the guest (tests/vm/guest/test_guest_sd_physical.py), in a systemd boot of
their own (the ``guest_physical`` fixture in tests/vm/conftest.py): mac80211_hwsim, hostapd and
dnsmasq in an access point's namespace, Debian's wpa_supplicant@wlan0 and dhcpcd@wlan0 units
for the station. See docs/vm-tests.md.
"""

from __future__ import annotations

import pytest

from tests.vm.guestrun import GuestRun

pytestmark = pytest.mark.vm


def test_physical_mode_on_wifi_relocates_the_units_and_gives_the_wifi_back(
    guest_physical: GuestRun,
) -> None:
    guest_physical.check("test_guest_sd_physical.py")
