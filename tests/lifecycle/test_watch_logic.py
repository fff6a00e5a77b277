"""The health loop's decisions (wgns.lifecycle.watchlogic) and the parsing of rtnetlink
notifications (wgns.lifecycle.watchnet.parse_events): pure, no system."""

from __future__ import annotations

import struct

from wgns.lifecycle import watchlogic as wl
from wgns.lifecycle.watchnet import parse_events


def test_status_line_per_interface() -> None:
    a = wl.PeerSample("wg1", "k1", "198.18.1.2:51820", 100, 10, 10)
    b = wl.PeerSample("wg1", "k2", None, 0, 0, 0)
    assert wl.status_line([a, b], ["wg1"], 112.5) == "handshake 12s ago via 198.18.1.2:51820"
    c = wl.PeerSample("wg2", "k3", "[2001:db8::1]:51820", 0, 0, 0)
    assert wl.status_line([a, c], ["wg1", "wg2"], 112) == (
        "wg1: handshake 12s ago via 198.18.1.2:51820; wg2: no handshake yet via [2001:db8::1]:51820"
    )
    assert wl.status_line([], ["wg1"], 0) == "device not readable"


def test_traffic_stalls_when_tx_grows_and_rx_does_not() -> None:
    t = wl.Traffic()
    t.update(rx=100, tx=100, now=0)
    assert not t.stalled(100)
    t.update(rx=100, tx=200, now=1)
    assert not t.stalled(1 + wl.STALL_SECONDS - 0.1)
    t.update(rx=100, tx=300, now=2)
    assert t.stalled(1 + wl.STALL_SECONDS)
    t.update(rx=150, tx=400, now=7)  # an answer
    assert not t.stalled(100)
    t.update(rx=150, tx=400, now=8)  # idle is not stalled
    assert not t.stalled(100)


def _reason(**kw: object) -> str | None:
    args: dict[str, object] = {
        "hostname": True,
        "latest_handshake": 1000,
        "wall_now": 1010.0,
        "traffic": wl.Traffic(),
        "now": 500.0,
        "last_resolved": None,
    }
    args.update(kw)
    return wl.resolve_reason(**args)  # type: ignore[arg-type]


def test_resolve_reasons() -> None:
    assert _reason() is None  # fresh handshake
    assert _reason(hostname=False, latest_handshake=0) is None  # an IP literal: never
    assert _reason(wall_now=1000 + wl.STALE_HANDSHAKE + 1) == "handshake stale"
    assert _reason(latest_handshake=0) == "no handshake yet"
    assert _reason(resumed=True) == "after a resume"
    stalled = wl.Traffic()
    stalled.update(1, 1, 0)
    stalled.update(1, 2, 100)
    assert _reason(traffic=stalled, now=110.0) == "no answer for 10s"
    # rate-limited
    assert _reason(latest_handshake=0, last_resolved=500.0 - wl.RESOLVE_INTERVAL + 1) is None
    assert _reason(latest_handshake=0, last_resolved=500.0 - wl.RESOLVE_INTERVAL) is not None


def test_kicker_debounces_caps_and_rate_limits() -> None:
    k = wl.Kicker()
    assert k.due_at() is None and not k.due(0)
    k.event(10.0, "link uplink0 up")
    k.event(10.1, "route via uplink0")
    k.event(10.1, "route via uplink0")
    assert not k.due(10.1 + wl.DEBOUNCE - 0.01)
    assert k.due(10.1 + wl.DEBOUNCE)
    assert k.done(10.3, kicked=True) == "link uplink0 up, route via uplink0"
    assert k.due_at() is None
    # a burst that never goes quiet is acted on MAX_DEBOUNCE after its first event
    k.event(20.0, "a")
    for i in range(1, 30):
        k.event(20.0 + i * 0.1, "a")
    assert k.due(20.0 + wl.MAX_DEBOUNCE)
    k.done(21.0, kicked=True)
    # and never within KICK_INTERVAL of the last kick
    k.event(21.05, "b")
    assert not k.due(21.05 + wl.DEBOUNCE)
    assert k.due(21.0 + wl.KICK_INTERVAL)
    # nothing forced (no route yet): the next event may act at once
    k.done(22.0, kicked=False)
    k.event(22.1, "c")
    assert k.due_at() == max(22.1 + wl.DEBOUNCE, 21.0 + wl.KICK_INTERVAL)


def test_resume_is_boottime_running_ahead() -> None:
    assert not wl.resumed(None, 50.0)
    assert not wl.resumed(50.0, 50.0 + wl.RESUME_GAP)
    assert wl.resumed(50.0, 50.0 + wl.RESUME_GAP + 0.5)


def test_relevant_events() -> None:
    ours = frozenset({"wg1234"})
    up = wl.IFF_UP | wl.IFF_LOWER_UP
    assert wl.relevant(wl.NetEvent(wl.NEWLINK, "uplink0", flags=up), ours) == "link uplink0 up"
    assert wl.relevant(wl.NetEvent(wl.NEWLINK, "uplink0", flags=wl.IFF_UP), ours) is None
    assert wl.relevant(wl.NetEvent(wl.NEWLINK + 1, "uplink0", flags=up), ours) is None  # DEL
    assert wl.relevant(wl.NetEvent(wl.NEWLINK, "wg1234", flags=up), ours) is None
    assert wl.relevant(wl.NetEvent(wl.NEWADDR, "lo"), ours) is None
    assert wl.relevant(wl.NetEvent(wl.NEWADDR, "uplink0"), ours) == "address on uplink0"
    assert wl.relevant(wl.NetEvent(wl.NEWROUTE, None), ours) == "route via ?"
    assert wl.relevant(wl.NetEvent(wl.NEWROUTE, "uplink0", cloned=True), ours) is None


def _nlmsg(kind: int, body: bytes) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return data + bytes(-len(data) % 4)


def _attr(kind: int, data: bytes) -> bytes:
    a = struct.pack("=HH", 4 + len(data), kind) + data
    return a + bytes(-len(a) % 4)


def test_parse_events_names_addresses_and_routes_from_links() -> None:
    link = _nlmsg(16, struct.pack("=BxHiII", 0, 1, 10, 0x10041, 0) + _attr(3, b"uplink0\0"))
    addr = _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 10))
    route = _nlmsg(
        24, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0) + _attr(4, struct.pack("=I", 10))
    )
    unknown = _nlmsg(
        25, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0) + _attr(4, struct.pack("=I", 99))
    )
    names: dict[int, str] = {}
    events = parse_events(link + addr + route + unknown, names)
    assert names == {10: "uplink0"}
    assert events == [
        wl.NetEvent(16, "uplink0", flags=0x10041),
        wl.NetEvent(20, "uplink0"),
        wl.NetEvent(24, "uplink0", table=254),
        wl.NetEvent(25, None, table=254),
    ]
    assert parse_events(b"\x05\x00", {}) == []  # a truncated datagram: nothing, no exception
