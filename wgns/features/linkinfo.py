"""A namespace's physical links as a status bar shows them: state, addresses, traffic counters
and, for a wireless interface, the network it is associated with.

Read from inside the namespace (physical mode's `physical`, where the machine's ethernet and
wifi live while the tunnel runs): `ip -j -s address` for the links, `iw dev` for which of them
are wireless and `iw dev IF link` for their SSID and signal (nl80211 answers for the namespace
it is asked in). Nothing here is secret, and two things are left out on purpose, since the
result is published world-readable (wgns.features.statusfile): MAC addresses, and the BSSID of
the access point (a BSSID locates a machine in public wifi maps).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from wgns.errors import WgnsError
from wgns.system.tools import run

_CONNECTED = re.compile(r"^Connected to [0-9a-fA-F:]{17}(?: \(on (?P<dev>\S+)\))?")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def physical_link(netns_name: str | None, ifnames: Iterable[str] | None = None) -> dict[str, Any]:
    """The links IFNAMES (None: every link but lo) of namespace NETNS_NAME (None: this one):

    ``{"interfaces": [{"ifname", "present", "operstate", "up", "carrier", "addresses",
    "rx_bytes", "tx_bytes", "wireless", "wifi"}, ...]}`` in the order asked for; a link that is
    not there has ``"present": false``. ``wifi`` is None for a wired link, else
    :func:`parse_iw_link`'s dict. ``addresses`` are ADDR/PREFIX, link-local ones left out.
    A WgnsError when the namespace cannot be read."""
    links = _links(netns_name)
    wanted = list(ifnames) if ifnames is not None else [n for n in links if n != "lo"]
    wireless = _wireless(netns_name)
    out = []
    for name in wanted:
        link = links.get(name)
        if link is None:
            out.append({"ifname": name, "present": False, "wireless": name in wireless})
            continue
        entry = dict(link)
        entry["wireless"] = name in wireless
        entry["wifi"] = _wifi(netns_name, name) if name in wireless else None
        out.append(entry)
    return {"interfaces": out}


def _links(ns: str | None) -> dict[str, dict[str, Any]]:
    proc = run(["ip", "-j", "-s", "address", "show"], ns=ns, check=False)
    if proc.returncode != 0:
        where = f" in {ns}" if ns else ""
        raise WgnsError(f"cannot read the links{where}: {proc.stderr.strip()}")
    return parse_ip_addresses(proc.stdout)


def parse_ip_addresses(text: str) -> dict[str, dict[str, Any]]:
    """`ip -j -s address show`'s TEXT -> ifname -> the fields :func:`physical_link` gives."""
    out: dict[str, dict[str, Any]] = {}
    for link in json.loads(text) if text.strip() else []:
        flags = link.get("flags", [])
        stats = link.get("stats64") or {}
        out[str(link["ifname"])] = {
            "ifname": str(link["ifname"]),
            "present": True,
            "operstate": str(link.get("operstate", "UNKNOWN")),
            "up": "UP" in flags,
            "carrier": "LOWER_UP" in flags,
            "addresses": [
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("scope") not in ("link", "host") and "local" in a
            ],
            "rx_bytes": int((stats.get("rx") or {}).get("bytes", 0)),
            "tx_bytes": int((stats.get("tx") or {}).get("bytes", 0)),
        }
    return out


def _wireless(ns: str | None) -> set[str]:
    """The wireless interfaces of NS, as `iw dev` lists them (none when iw is missing)."""
    try:
        proc = run(["iw", "dev"], ns=ns, check=False)
    except WgnsError:  # iw is not installed: no wifi details, the rest still shows
        return set()
    if proc.returncode != 0:
        return set()
    return parse_iw_dev(proc.stdout)


def parse_iw_dev(text: str) -> set[str]:
    """The interface names in `iw dev`'s TEXT ("phy#0" blocks of "Interface NAME" lines)."""
    found = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "Interface":
            found.add(words[1])
    return found


def _wifi(ns: str | None, ifname: str) -> dict[str, Any]:
    try:
        proc = run(["iw", "dev", ifname, "link"], ns=ns, check=False)
    except WgnsError:
        return {"connected": False, "ssid": None, "signal_dbm": None, "freq_mhz": None}
    if proc.returncode != 0:
        return {"connected": False, "ssid": None, "signal_dbm": None, "freq_mhz": None}
    return parse_iw_link(proc.stdout)


def parse_iw_link(text: str) -> dict[str, Any]:
    """`iw dev IF link`'s TEXT -> ``{"connected", "ssid", "signal_dbm", "freq_mhz",
    "tx_bitrate_mbit"}``.

    iw prints "Not connected." or "Connected to BSSID (on IF)" then tab-indented "key: value"
    lines (iw's link.c; the SSID through print_ssid_escaped: bytes that are not printable, a
    backslash, and a leading or trailing space as \\xNN, so a UTF-8 SSID arrives escaped)."""
    info: dict[str, Any] = {
        "connected": False,
        "ssid": None,
        "signal_dbm": None,
        "freq_mhz": None,
        "tx_bitrate_mbit": None,
    }
    for raw in text.splitlines():
        line = raw.strip()
        if _CONNECTED.match(line):
            info["connected"] = True
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "SSID":
            info["ssid"] = unescape_ssid(value)
        elif key == "signal":
            info["signal_dbm"] = _int(value)
        elif key == "freq":
            info["freq_mhz"] = _float(value)
        elif key == "tx bitrate":
            info["tx_bitrate_mbit"] = _float(value)
    return info


def unescape_ssid(text: str) -> str:
    """iw's escaped SSID TEXT back to the network's name (invalid UTF-8 replaced)."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "replace"))
    return raw.decode("utf-8", "replace")


def _int(text: str) -> int | None:
    m = _NUMBER.match(text)
    return int(float(m.group(0))) if m else None


def _float(text: str) -> float | None:
    m = _NUMBER.match(text)
    return float(m.group(0)) if m else None


def signal_percent(dbm: int | None) -> int | None:
    """A signal level as a 0-100 quality (linear: -100 dBm and worse 0, -50 dBm and better
    100), for a bar's icons."""
    if dbm is None:
        return None
    return max(0, min(100, 2 * (dbm + 100)))
