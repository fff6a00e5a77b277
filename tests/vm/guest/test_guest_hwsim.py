"""mac80211_hwsim in the guest kernel: a wireless phy moves between network namespaces."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import guestutil
import pytest
from guestutil import link_names, namespaces, sh

pytestmark = guestutil.only_in_vm

NS = "wgvm-hwsim"


def phys(ns: str | None = None) -> list[str]:
    """The wiphys nl80211 shows in ``ns`` (nl80211 dumps are per network namespace)."""
    return sorted(re.findall(r"^Wiphy (\S+)", sh("iw", "phy", ns=ns).stdout, re.M))


def wlan_of(phy: str, ns: str | None = None) -> list[str]:
    """The interfaces of ``phy`` (``iw dev`` groups them under ``phy#N``)."""
    out = sh("iw", "dev", ns=ns).stdout
    idx = phy.removeprefix("phy")
    names: list[str] = []
    current = None
    for line in out.splitlines():
        if line.startswith("phy#"):
            current = line[4:].strip()
        elif current == idx and line.strip().startswith("Interface "):
            names.append(line.split()[1])
    return names


@pytest.fixture
def hwsim() -> Iterator[list[str]]:
    before = set(phys())
    sh("modprobe", "mac80211_hwsim", "radios=2")
    try:
        guestutil.wait_for("two hwsim phys", lambda: len(set(phys()) - before) >= 2)
        yield sorted(set(phys()) - before)
    finally:
        subprocess.run(["rmmod", "mac80211_hwsim"], capture_output=True, check=False)


def test_phy_moves_into_a_namespace_and_back(hwsim: list[str]) -> None:
    phy, other = hwsim[0], hwsim[1]
    guestutil.wait_for(f"{phy}'s interface", lambda: bool(wlan_of(phy)))
    (wlan,) = wlan_of(phy)
    assert wlan in link_names()

    with namespaces(NS):
        # by name
        sh("iw", "phy", phy, "set", "netns", "name", NS)
        assert phy in phys(NS)
        assert phy not in phys()
        assert wlan in link_names(NS)
        assert wlan not in link_names()
        assert other in phys() and other not in phys(NS)  # only the one phy moved

        # and back, by pid (PID 1 is in the guest's root namespace)
        sh("iw", "phy", phy, "set", "netns", "1", ns=NS)
        assert phy in phys()
        assert phy not in phys(NS)
        assert wlan in link_names()
        assert wlan not in link_names(NS)
        assert link_names(NS) == ["lo"]

    # and it works: the phy's interface comes up in the root namespace again
    sh("ip", "link", "set", wlan, "up")
    sh("ip", "link", "set", wlan, "down")
