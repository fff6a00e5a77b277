"""Status documents (wgns.features.statusfile) as status bars and users read them: i3bar blocks,
a waybar custom module's JSON, and the text `wgns status` prints without root.

Pure functions of the documents and the time: each namespace is judged "up" (a fresh handshake,
or a physical link with an address), "stale" (no handshake for STALE_HANDSHAKE seconds or none
yet, or figures not refreshed for statusfile.STALE_AFTER) or "down" (anything broken, down or
missing). Ages are computed from the stored unix times, so they stay right between refreshes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wgns.errors import WgnsError
from wgns.features import linkinfo, statusfile

#: seconds: WireGuard renews a session after 120 s of use (REKEY_AFTER_TIME) and drops one
#: older than 180 s (REJECT_AFTER_TIME); a handshake older than that: the peer does not answer,
#: or nothing was sent
STALE_HANDSHAKE = 180
UP, STALE, DOWN = "up", "stale", "down"
ORDER = {UP: 0, STALE: 1, DOWN: 2}
#: i3status's default color_good, color_degraded, color_bad
COLORS = {UP: "#00FF00", STALE: "#FFFF00", DOWN: "#FF0000"}

Doc = Mapping[str, Any]


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def rate(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{size(value)}/s"


def _total(interfaces: Sequence[Doc], key: str) -> float | None:
    values = [i.get(key) for i in interfaces]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    if not values or len(numbers) != len(values):
        return None
    return sum(numbers)


# ------------------------------------------------------------------ judging


def judge(doc: Doc, now: float) -> tuple[str, str]:
    """(UP | STALE | DOWN, why in a few words) for the namespace DOC describes."""
    if statusfile.is_stale(doc, now):
        return STALE, f"figures {ago(statusfile.age(doc, now))} old"
    if doc.get("kind") == "physical":
        return _judge_physical(doc, now)
    if doc.get("phase") != "up":
        return DOWN, str(doc.get("phase") or "not up")
    broken = doc.get("broken") or []
    if broken:
        return DOWN, str(broken[0])
    interfaces = doc.get("interfaces") or []
    if not interfaces:
        return DOWN, "no interface"
    for i in interfaces:
        if not i.get("present"):
            return DOWN, f"{i.get('ifname')} missing"
        if not i.get("up"):
            return DOWN, f"{i.get('ifname')} down"
    return _handshake(min(int(i.get("latest_handshake") or 0) for i in interfaces), now)


def _handshake(latest: int, now: float) -> tuple[str, str]:
    if latest <= 0:
        return STALE, "no handshake yet"
    age = now - latest
    if age > STALE_HANDSHAKE:
        return STALE, f"handshake {ago(age)} ago"
    return UP, f"handshake {ago(age)} ago"


def _usable(i: Doc) -> bool:
    """A physical link packets can leave through: up, with its carrier and an address, and
    associated when it is wireless."""
    wifi = i.get("wifi")
    associated = not i.get("wireless") or bool(wifi and wifi.get("connected"))
    linked = i.get("present") and i.get("up") and i.get("carrier", True)
    return bool(linked and i.get("addresses")) and associated


def _judge_physical(doc: Doc, now: float) -> tuple[str, str]:
    """Its links; then, when physical mode published them, its phase and the latest handshake
    of the tunnel its ciphertext carries."""
    interfaces = doc.get("interfaces") or []
    if "phase" in doc and doc["phase"] != "up":
        return DOWN, str(doc["phase"])
    if not interfaces:
        return DOWN, "no interface"
    if not any(_usable(i) for i in interfaces):
        return DOWN, "no usable link"
    if "latest_handshake" not in doc:
        return UP, "link up"
    return _handshake(int(doc.get("latest_handshake") or 0), now)


def worst(states: Iterable[str]) -> str | None:
    return max(states, key=lambda s: ORDER[s], default=None)


# ------------------------------------------------------------------ one namespace, short


def _wifi_text(wifi: Doc | None) -> str:
    if not wifi:
        return ""
    if not wifi.get("connected"):
        return " not associated"
    parts = [str(wifi.get("ssid") or "?")]
    if wifi.get("signal_dbm") is not None:
        parts.append(f"{wifi['signal_dbm']}dBm")
    return " " + " ".join(parts)


def _physical_parts(doc: Doc) -> list[str]:
    """Each link in a few words; only the usable ones when there are (the unplugged ethernet
    of a laptop on wifi is no news)."""
    interfaces = doc.get("interfaces") or []
    usable = [i for i in interfaces if _usable(i)]
    parts = []
    for i in usable or interfaces:
        name = str(i.get("ifname"))
        if not i.get("present"):
            parts.append(f"{name} missing")
        elif not i.get("up") or not i.get("carrier", True):
            parts.append(f"{name} down")
        else:
            address = (i.get("addresses") or ["no address"])[0]
            parts.append(f"{name}{_wifi_text(i.get('wifi'))} {address}")
    return parts


def line(doc: Doc, now: float) -> tuple[str, str, str]:
    """(state, full text, short text) of one namespace for a bar."""
    name = str(doc.get("name"))
    st, why = judge(doc, now)
    if doc.get("kind") == "physical":
        parts = _physical_parts(doc) or ["no interface"]
        full = f"{name}: {', '.join(parts)}"
        if statusfile.is_stale(doc, now) or doc.get("phase", "up") != "up":
            full += f" ({why})"
        elif "latest_handshake" in doc:
            full += f", {why}"
        return st, full, f"{name}: {parts[0] if st == UP else st}"
    interfaces = doc.get("interfaces") or []
    if st == DOWN:
        return st, f"{name}: DOWN ({why})", f"{name}: DOWN"
    if statusfile.is_stale(doc, now):  # what it was then, marked as not known now
        then, _ = judge(doc, float(doc.get("published_at", 0.0)))
        return st, f"{name}: {then}? ({why})", f"{name}: {then}?"
    traffic = f" ↓{rate(_total(interfaces, 'rx_rate'))} ↑{rate(_total(interfaces, 'tx_rate'))}"
    word = "up" if st == UP else "stale"
    return st, f"{name}: {word}, {why}{traffic}", f"{name}: {word}"


def signal(docs: Iterable[Doc]) -> int | None:
    """The best wifi signal (0-100) of the physical namespaces, when one is associated."""
    best = None
    for doc in docs:
        if doc.get("kind") != "physical":
            continue
        for i in doc.get("interfaces") or []:
            wifi = i.get("wifi") or {}
            pct = linkinfo.signal_percent(wifi.get("signal_dbm")) if wifi.get("connected") else None
            if pct is not None and (best is None or pct > best):
                best = pct
    return best


# ------------------------------------------------------------------ formats


def i3bar_blocks(docs: Sequence[Doc], now: float) -> list[dict[str, Any]]:
    """One i3bar block per namespace (https://i3wm.org/docs/i3bar-protocol.html): name "wgns",
    instance the namespace; with none, one block saying so."""
    if not docs:
        return [
            {
                "name": "wgns",
                "instance": "none",
                "full_text": "wgns: no tunnel",
                "short_text": "wgns: -",
                "color": COLORS[DOWN],
                "markup": "none",
            }
        ]
    blocks = []
    for doc in docs:
        st, full, short = line(doc, now)
        block: dict[str, Any] = {
            "name": "wgns",
            "instance": str(doc.get("name")),
            "full_text": full,
            "short_text": short,
            "color": COLORS[st],
            "markup": "none",
        }
        if st == DOWN:
            block["urgent"] = True
        blocks.append(block)
    return blocks


def waybar(docs: Sequence[Doc], now: float) -> dict[str, Any]:
    """A waybar custom module's object (return-type json): text and tooltip (Pango-escaped),
    class and alt (the worst state of all namespaces, "none" without any), percentage (the wifi
    signal, only when physical mode has an associated wifi link)."""
    if not docs:
        return {
            "text": "wgns: no tunnel",
            "tooltip": "no wgns namespace",
            "class": "none",
            "alt": "none",
        }
    judged = [line(doc, now) for doc in docs]
    state = worst(st for st, _, _ in judged) or DOWN
    out: dict[str, Any] = {
        "text": markup_escape(" | ".join(full for _, full, _ in judged)),
        "tooltip": markup_escape("\n".join(tooltip(doc, now) for doc in docs)),
        "class": state,
        "alt": state,
    }
    pct = signal(docs)
    if pct is not None:
        out["percentage"] = pct
    return out


def markup_escape(text: str) -> str:
    """TEXT for Pango markup, which waybar parses a custom module's text and tooltip as (unless
    its "escape" is set): an SSID "Tom & Jerry" would otherwise blank the module."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tooltip(doc: Doc, now: float) -> str:
    """Several lines on one namespace: the bar's hover text, and `wgns status` without root."""
    name = str(doc.get("name"))
    st, why = judge(doc, now)
    published = f"figures {ago(statusfile.age(doc, now))} old"
    if doc.get("kind") == "physical":
        lines = [f"{name} (physical links): {st} ({why}), {published}"]
        for i in doc.get("interfaces") or []:
            lines.append(f"  {_physical_detail(i)}")
        return "\n".join(lines)
    lines = [f"{name}: {st} ({why}), {published}"]
    for i in doc.get("interfaces") or []:
        hs = int(i.get("latest_handshake") or 0)
        hs_text = f"handshake {ago(now - hs)} ago" if hs > 0 else "no handshake yet"
        state = "up" if i.get("up") else ("down" if i.get("present") else "MISSING")
        lines.append(
            f"  {i.get('ifname')} ({i.get('label')}): {state}, "
            f"{' '.join(i.get('addresses') or []) or 'no address'}, {hs_text}, "
            f"rx {size(i.get('rx_bytes') or 0)} ({rate(i.get('rx_rate'))}), "
            f"tx {size(i.get('tx_bytes') or 0)} ({rate(i.get('tx_rate'))})"
        )
    return "\n".join(lines)


def _physical_detail(i: Doc) -> str:
    name = str(i.get("ifname"))
    if not i.get("present"):
        return f"{name}: missing"
    text = f"{name}: {i.get('operstate', '?')}"
    text += f", {' '.join(i.get('addresses') or []) or 'no address'}"
    wifi = i.get("wifi")
    if wifi:
        if wifi.get("connected"):
            text += f", wifi {wifi.get('ssid') or '?'}"
            if wifi.get("signal_dbm") is not None:
                text += f" {wifi['signal_dbm']} dBm"
        else:
            text += ", wifi not associated"
    return text


# ------------------------------------------------------------------ the command's runners


def documents(ns: str | None) -> list[dict[str, Any]]:
    """The status documents to show (NS: that one; missing, it is shown as not up). As root,
    each is refreshed first: the records' namespaces, and the physical ones."""
    if os.geteuid() == 0:
        from wgns.engine import state

        managed = state.managed()
        for name in managed if ns is None else [ns]:
            statusfile.refresh(name)  # a physical namespace's file is refreshed as such
        for doc in statusfile.read_all().values():
            if doc.get("kind") == "physical" and doc["name"] not in managed and ns is None:
                statusfile.refresh_physical(doc)
    docs = statusfile.read_all()
    if ns is None:
        return list(docs.values())
    if ns in docs:
        return [docs[ns]]
    return [{"name": ns, "kind": "tunnel", "phase": "not up", "published_at": time.time()}]


POLL = 0.5  # --watch looks this often for a status file that changed


def _wait(interval: float, seen: tuple[tuple[str, int, int], ...]) -> None:
    """Until INTERVAL seconds have passed or a status file changed since SEEN (a publication,
    a withdrawal: the bar follows a `down` or the watcher's refresh at once)."""
    deadline = time.monotonic() + interval
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(POLL, left))
        if statusfile.signature() != seen:
            return


def run(fmt: str, ns: str | None, *, watch: bool, interval: float) -> int:
    """`wgns status --format i3bar|waybar [--watch]`: one line; or one every INTERVAL seconds,
    and whenever a status file changes, until the bar closes the pipe (or a signal ends it)."""
    out = sys.stdout
    try:
        if fmt == "i3bar" and watch:
            out.write('{"version":1}\n[\n')
        first = True
        while True:
            docs = documents(ns)
            seen = statusfile.signature()  # after our own refresh: only others' changes wake
            stamp = time.time()
            if fmt == "i3bar":
                text = json.dumps(i3bar_blocks(docs, stamp))
                if watch and not first:
                    text = "," + text
            else:
                text = json.dumps(waybar(docs, stamp))
            out.write(text + "\n")
            out.flush()
            if not watch:
                return 0
            first = False
            _wait(interval, seen)
    except BrokenPipeError:  # the bar went away: nothing left to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0


def print_published(ns: str | None, *, as_json: bool) -> int:
    """`wgns status [NS] [--json]` without root: the status files, and how old they are."""
    docs = statusfile.read_all()
    if ns is not None:
        if ns not in docs:
            raise WgnsError(
                f"{ns} has no status file in {statusfile.STATUS_DIR}: it is not up, or not "
                "managed by wgns",
                hint=f"`sudo wgns status {ns}` reads the namespace itself",
            )
        docs = {ns: docs[ns]}
    stamp = time.time()
    if as_json:
        rows = [dict(doc, age=round(statusfile.age(doc, stamp), 1)) for doc in docs.values()]
        doc = {"format": 1, "source": "status files", "namespaces": rows}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not docs:
        print("no namespaces published by wgns (status files are readable without root)")
    else:
        print("\n".join(tooltip(d, stamp) for d in docs.values()))
        print(f"(from {statusfile.STATUS_DIR}, readable without root; as root for everything)")
    return 0
