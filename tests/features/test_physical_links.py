"""Which interfaces physical mode moves and the state it gives back. Wireless phys cannot exist
here (no mac80211_hwsim outside the VM): their detection is tested on a fake sysfs tree laid
out as the kernel lays out /sys/class/ieee80211 and /sys/class/net/IF/phy80211."""

from __future__ import annotations

import os
from pathlib import Path

from wgns.features import physical_links as pl


def _fake_sys(root: Path, phys: dict[str, list[str]], wired: list[str]) -> str:
    for phy, devs in phys.items():
        (root / "class/ieee80211" / phy).mkdir(parents=True)
        for dev in devs:
            d = root / "class/net" / dev
            d.mkdir(parents=True)
            os.symlink(f"../../ieee80211/{phy}", d / "phy80211")
    for dev in wired:
        (root / "class/net" / dev).mkdir(parents=True)
    return str(root)


def test_wireless_phys_and_their_netdevs(tmp_path: Path) -> None:
    sys_root = _fake_sys(tmp_path, {"phy0": ["wlan0", "wlan0mon"], "phy1": []}, ["eth0"])
    assert pl.wireless_phys(sys_root) == {"phy0": ("wlan0", "wlan0mon"), "phy1": ()}
    assert pl.phy_of("wlan0", sys_root) == "phy0" and pl.phy_of("eth0", sys_root) is None
    # listed: wlan0 goes by its phy (with its other netdev), eth0 by name
    chosen = pl.choose(("eth0", "wlan0"), sys_root)
    assert chosen.links == ("eth0",) and chosen.phys == {"phy0": ("wlan0", "wlan0mon")}
    assert chosen.ifnames == ("eth0", "wlan0", "wlan0mon")
    assert pl.wireless_phys(str(tmp_path / "nothing")) == {}


def test_iw_phy_names_the_phys_of_this_namespace() -> None:
    """/sys/class/ieee80211 shows the phys of the namespace that mounted /sys; `iw phy`
    (nl80211, per namespace) says which are here: only those move."""
    text = "Wiphy phy0\n\twiphy index: 0\n\tmax # scan SSIDs: 255\nWiphy phy7\n\tBand 1:\n"
    assert pl.parse_iw_phys(text) == {"phy0", "phy7"}
    assert pl.parse_iw_phys("") == set()


def test_restore_lines_give_back_mtu_state_addresses_then_routes() -> None:
    snap = {
        "up": True,
        "mtu": 1400,
        "addresses": [
            {"local": "198.18.0.2", "prefixlen": 24, "broadcast": "198.18.0.255", "flags": []},
            {"local": "2001:db8::2", "prefixlen": 64, "flags": ["nodad"]},
        ],
        "routes": [
            {"family": "-4", "dst": "default", "gateway": "198.18.0.1", "metric": 1010},
            {"family": "-4", "dst": "198.18.0.0/24", "protocol": "dhcp", "scope": "link"},
            {"family": "-6", "dst": "default", "gateway": "2001:db8::1", "metric": 1024},
        ],
    }
    assert pl.restore_lines("eth0", snap) == [
        "link set dev eth0 mtu 1400",
        "link set dev eth0 up",
        "address add 198.18.0.2/24 dev eth0 broadcast 198.18.0.255",
        "address add 2001:db8::2/64 dev eth0 nodad",
        "route replace 198.18.0.0/24 dev eth0 proto dhcp scope link",
        "route replace 0.0.0.0/0 via 198.18.0.1 dev eth0 metric 1010",
        "route replace ::/0 via 2001:db8::1 dev eth0 metric 1024",
    ]
    # a link that was down comes back down, with its addresses and without routes
    down = pl.restore_lines("eth0", {**snap, "up": False})
    assert "link set dev eth0 up" not in down and not any("route" in x for x in down)


def test_networkmanager_state_file(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    index = pl.socket_index("lo")
    assert not pl.managed_by_networkmanager("lo", str(tmp_path))
    (devices / str(index)).write_text("[device]\nmanaged=false\n")
    assert not pl.managed_by_networkmanager("lo", str(tmp_path))
    (devices / str(index)).write_text("[device]\nmanaged=true\nperm-hw-addr-fake=\n")
    assert pl.managed_by_networkmanager("lo", str(tmp_path))


def test_a_phy_goes_home_by_its_index(tmp_path: Path) -> None:
    """Inside `physical`, iw cannot find a phy by name (it looks in /sys/class/ieee80211, the
    main namespace's /sys for wgns): the way back names it `phy#INDEX`, read before the move."""
    from wgns.features.physical_ops import MovePhy

    sys_root = _fake_sys(tmp_path, {"phy3": ["wlan0"]}, [])
    (tmp_path / "class/ieee80211/phy3/index").write_text("3\n")
    assert pl.phy_index("phy3", sys_root) == 3 and pl.phy_index("phy9", sys_root) is None
    op = MovePhy(phy="phy3", ns="physical", netdevs=["wlan0"])
    assert op.back_argv()[:2] == ["iw", "phy", "phy3"][:2] and "phy3" in op.back_argv()
    op.result["index"] = 3
    assert op.back_argv()[:4] == ["iw", "phy#3", "set", "netns"]
