"""wgns.features.linkinfo: a namespace's physical links as physical mode publishes them.

The links are read for real: a veth moved into a namespace of the sandbox, with an address,
its peer up then down. No wireless device exists on this machine (no mac80211_hwsim outside the
VM tests), so `iw dev IF link` is parsed from text written in the output format of iw itself:
the printf formats of iw's link.c ("Connected to %s (on %s)", "\\tfreq: %d",
"\\tsignal: %d dBm", "\\ttx bitrate: %d.%d MBit/s", ...), the "\\tSSID: " line its print_ies
writes and the escaping of its print_ssid_escaped (util.c): bytes that are not printable, a
backslash, and a leading or trailing space as \\xNN. That `iw dev` lists no wireless interface
in the veth's namespace is real."""

from __future__ import annotations

import json
from typing import Any

from wgns.features import linkinfo
from wgns.testing.sandbox import Sandbox

# iw 5.x/6.x, associated (link.c: link_bss_handler, then print_link_sta)
IW_CONNECTED = """Connected to 02:00:00:00:01:00 (on wlan0)
\tSSID: Caf\\xc3\\xa9 Libre
\tfreq: 2437
\tRX: 83412 bytes (611 packets)
\tTX: 12043 bytes (97 packets)
\tsignal: -61 dBm
\trx bitrate: 65.0 MBit/s MCS 7
\ttx bitrate: 52.0 MBit/s MCS 5

\tbss flags:\tshort-slot-time
\tdtim period:\t2
\tbeacon int:\t100
"""
# newer iw prints the frequency with its kHz offset
IW_CONNECTED_5GHZ = """Connected to 02:00:00:00:02:00 (on wlp2s0)
\tSSID: \\x20home\\x5cnet
\tfreq: 5180.0
\tsignal: -48 dBm
\ttx bitrate: 866.7 MBit/s VHT-MCS 9 80MHz short GI VHT-NSS 2
"""
IW_NOT_CONNECTED = "Not connected.\n"
IW_DEV = """phy#0
\tInterface wlan0
\t\tifindex 3
\t\twdev 0x1
\t\taddr 02:00:00:00:00:00
\t\ttype managed
\t\ttxpower 20.00 dBm
phy#1
\tInterface wlan1
\t\tifindex 4
\t\ttype managed
"""


def test_iw_link_gives_the_ssid_signal_and_frequency_never_the_bssid() -> None:
    info = linkinfo.parse_iw_link(IW_CONNECTED)
    assert info == {
        "connected": True,
        "ssid": "Café Libre",
        "signal_dbm": -61,
        "freq_mhz": 2437.0,
        "tx_bitrate_mbit": 52.0,
    }
    other = linkinfo.parse_iw_link(IW_CONNECTED_5GHZ)
    assert other["ssid"] == " home\\net"  # the escaped leading space and backslash
    assert (other["signal_dbm"], other["freq_mhz"]) == (-48, 5180.0)
    assert other["tx_bitrate_mbit"] == 866.7
    assert linkinfo.parse_iw_link(IW_NOT_CONNECTED) == {
        "connected": False,
        "ssid": None,
        "signal_dbm": None,
        "freq_mhz": None,
        "tx_bitrate_mbit": None,
    }
    assert "02:00:00:00:01:00" not in json.dumps(info)


def test_iw_dev_names_the_wireless_interfaces() -> None:
    assert linkinfo.parse_iw_dev(IW_DEV) == {"wlan0", "wlan1"}
    assert linkinfo.parse_iw_dev("") == set()


def test_signal_percent_is_clamped() -> None:
    assert [linkinfo.signal_percent(d) for d in (-110, -100, -75, -50, -30)] == [0, 0, 50, 100, 100]
    assert linkinfo.signal_percent(None) is None


READ = """
import json, sys
from wgns.features import linkinfo
print(json.dumps(linkinfo.physical_link(sys.argv[1], sys.argv[2:] or None)))
"""


def _read(sandbox: Sandbox, ns: str, *ifnames: str) -> dict[str, Any]:
    out = sandbox.python(["-c", READ, ns, *ifnames]).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_veth_in_a_namespace_is_read_from_inside_it(sandbox: Sandbox) -> None:
    sandbox.run(["ip", "netns", "add", "phys"])
    try:
        sandbox.run(["ip", "link", "add", "eth9", "type", "veth", "peer", "name", "isp9"])
        sandbox.run(["ip", "link", "set", "eth9", "netns", "phys"])
        sandbox.run(["ip", "address", "add", "192.0.2.1/24", "dev", "isp9"])
        sandbox.run(["ip", "link", "set", "isp9", "up"])
        layout = "address add 192.0.2.10/24 dev eth9\nlink set eth9 up\nlink set lo up\n"
        sandbox.run(["ip", "-n", "phys", "-b", "-"], input=layout)
        sandbox.run(["ping", "-c", "1", "-W", "5", "192.0.2.1"], netns="phys")

        doc = _read(sandbox, "phys", "eth9", "wlan0")
        eth, missing = doc["interfaces"]
        assert eth["ifname"] == "eth9" and eth["present"] and eth["up"] and eth["carrier"]
        assert eth["operstate"] == "UP"
        assert eth["addresses"] == ["192.0.2.10/24"]  # no link-local fe80::
        assert eth["tx_bytes"] > 0 and eth["rx_bytes"] > 0
        assert eth["wireless"] is False and eth["wifi"] is None
        assert missing == {"ifname": "wlan0", "present": False, "wireless": False}
        # every link but lo when none is named
        assert [i["ifname"] for i in _read(sandbox, "phys")["interfaces"]] == ["eth9"]

        sandbox.run(["ip", "link", "set", "isp9", "down"])  # the cable pulled at the far end
        (eth,) = _read(sandbox, "phys", "eth9")["interfaces"]
        assert eth["up"] and not eth["carrier"] and eth["operstate"] == "DOWN"  # as veth says
    finally:
        sandbox.run(["ip", "link", "del", "isp9"], check=False)
        sandbox.run(["ip", "netns", "del", "phys"], check=False)
