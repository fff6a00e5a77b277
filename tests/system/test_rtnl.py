"""wgns.system.rtnl: the in-process rtnetlink client against the real kernel, beside iproute2.

Every kernel-facing test runs inside the test's private sandbox. The changes are made twice, in
twin namespaces: with `ip` in one and with wgns.system.rtnl in the other, on links of the same name
made the same way; then `ip -d -j` must report the same links, addresses and routes in both
(interface indexes and MAC-derived values aside). That is the claim of the module: the same
kernel state as the `ip` commands it replaces."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from wgns.system.rtnl import Rtnl
from wgns.testing.sandbox import Sandbox

LINK = "wg0"
PREFIXES = ["198.18.4.0/24", "0.0.0.0/0", "2001:db8:4::/48", "::/0"]
TABLES = [None, 100, 51820]  # main, a table that fits rtm_table, one that needs RTA_TABLE

PRELUDE = """
import errno, json, os, sys
from wgns.system import netns
from wgns.system.rtnl import Rtnl
out = {}
"""


def rtnl_script(sb: Sandbox, code: str) -> Any:
    """Run CODE (which fills the dict `out`) in Python inside the sandbox; `out` back."""
    proc = sb.python(PRELUDE + code + "\nprint(json.dumps(out))\n")
    return json.loads(proc.stdout)


def add_namespaces(sb: Sandbox, *names: str) -> None:
    rtnl_script(sb, f"for n in {list(names)!r}:\n    netns.add(n)\n")


def add_link(sb: Sandbox, name: str, ns: str) -> None:
    """A dummy link where the module loads, else a TUN device (no carrier: routes `linkdown`)."""
    if sb.run(["ip", "link", "add", name, "type", "dummy"], netns=ns, check=False).returncode:
        sb.run(["ip", "tuntap", "add", name, "mode", "tun"], netns=ns)


def ip_json(sb: Sandbox, ns: str, *args: str) -> Any:
    return json.loads(sb.run(["ip", "-d", "-j", *args], netns=ns).stdout or "[]")


def _link_local(text: object) -> bool:
    return isinstance(text, str) and text.startswith("fe80:") and text != "fe80::/64"


def normalized(obj: Any) -> Any:
    """ip -j output without what differs between twins for reasons other than the change:
    interface indexes, MAC addresses (random for dummies) and the link-local addresses and
    routes derived from them, and operstate (set asynchronously by the kernel's linkwatch)."""
    if isinstance(obj, list):
        return [normalized(x) for x in obj if not (isinstance(x, dict) and _is_link_local(x))]
    if isinstance(obj, dict):
        volatile = {"ifindex", "link_index", "address", "broadcast", "perm_address", "operstate"}
        return {k: normalized(v) for k, v in obj.items() if k not in volatile}
    return obj


def _is_link_local(entry: dict[str, Any]) -> bool:
    return _link_local(entry.get("local")) or _link_local(entry.get("dst"))


def kernel_state(sb: Sandbox, ns: str) -> dict[str, Any]:
    return {
        "link": normalized(ip_json(sb, ns, "link", "show")),
        "addr": normalized(ip_json(sb, ns, "address", "show")),
        "route4": normalized(ip_json(sb, ns, "-4", "route", "show", "table", "all")),
        "route6": normalized(ip_json(sb, ns, "-6", "route", "show", "table", "all")),
    }


# -------------------------------------------------------------------------------- changes


def test_move_link_is_ip_link_set_netns(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "src-ip", "dst-ip", "src-rt", "dst-rt")
    for ns in ("src-ip", "src-rt"):
        add_link(sandbox, LINK, ns)
    sandbox.run(["ip", "link", "set", LINK, "netns", "dst-ip"], netns="src-ip")
    # the script's own thread stays in the sandbox's namespace: the socket carries src-rt
    out = rtnl_script(
        sandbox,
        f"""
home = os.stat("/proc/thread-self/ns/net").st_ino
with Rtnl("src-rt") as r:
    r.move_link({LINK!r}, "dst-rt")
    try:
        r.move_link({LINK!r}, "dst-rt")
    except OSError as e:
        out["again"] = [e.errno, str(e)]
out["home_kept"] = os.stat("/proc/thread-self/ns/net").st_ino == home
""",
    )
    assert out["home_kept"]
    assert out["again"][0] == 19  # ENODEV: it is not in src-rt any more
    assert f"RTNETLINK: set dev {LINK} netns dst-rt: No such device" in out["again"][1]
    for ns in ("src-ip", "src-rt"):
        assert sandbox.run(["ip", "link", "show", LINK], netns=ns, check=False).returncode != 0
    moved = normalized(ip_json(sandbox, "dst-rt", "link", "show", LINK))
    assert moved and moved[0]["ifname"] == LINK
    assert moved == normalized(ip_json(sandbox, "dst-ip", "link", "show", LINK))


def test_addresses_link_and_routes_are_what_ip_makes(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "by-ip", "by-rt")
    for ns in ("by-ip", "by-rt"):
        add_link(sandbox, LINK, ns)
    lines = [
        f"address add 198.18.0.2/32 dev {LINK}",
        f"address add 2001:db8::2/128 dev {LINK}",
        f"link set dev {LINK} mtu 1420 up",
        "link set lo up",
        "address add 127.0.0.2/8 dev lo",  # iproute2 gives 127/8 host scope unasked
    ]
    for table in TABLES:
        for prefix in PREFIXES:
            where = f" table {table}" if table is not None else ""
            lines.append(f"route replace {prefix} dev {LINK}{where}")
    sandbox.run(["ip", "-b", "-"], netns="by-ip", input="\n".join(lines) + "\n")
    rtnl_script(
        sandbox,
        f"""
with Rtnl("by-rt") as r:
    r.add_address({LINK!r}, "198.18.0.2/32")
    r.add_address({LINK!r}, "2001:db8::2/128")
    r.set_link({LINK!r}, mtu=1420, up=True)
    r.set_link("lo", up=True)
    r.add_address("lo", "127.0.0.2/8")
    for _ in range(2):  # replacing what is there already is no error
        for table in {TABLES!r}:
            for prefix in {PREFIXES!r}:
                r.replace_route(prefix, {LINK!r}, table=table)
""",
    )
    by_ip = kernel_state(sandbox, "by-ip")
    by_rt = kernel_state(sandbox, "by-rt")
    for key in ("link", "addr", "route4", "route6"):
        assert by_rt[key] == by_ip[key], key

    # and that state is the one intended (not just two equally wrong ones)
    wg = next(link for link in by_rt["addr"] if link["ifname"] == LINK)
    assert wg["mtu"] == 1420 and "UP" in wg["flags"]
    assert {(a["local"], a["prefixlen"], a["scope"]) for a in wg["addr_info"]} == {
        ("198.18.0.2", 32, "global"),
        ("2001:db8::2", 128, "global"),
    }
    lo = next(link for link in by_rt["addr"] if link["ifname"] == "lo")
    assert "UP" in lo["flags"]
    assert ("127.0.0.2", "host") in {(a["local"], a["scope"]) for a in lo["addr_info"]}
    ours = [r for r in by_rt["route4"] + by_rt["route6"] if r.get("protocol") == "boot"]
    seen = {(r["dst"], r.get("table", "main")) for r in ours}
    for table in ("main", "100", "51820"):
        for dst in ("198.18.4.0/24", "2001:db8:4::/48", "default"):
            assert (dst, table) in seen, (dst, table)
    assert len(ours) == len(PREFIXES) * len(TABLES), "a replace added a second route"
    for r in ours:
        assert r["dev"] == LINK and r["type"] == "unicast"
    # iproute_modify()'s choice without a gateway: link scope for IPv4; IPv6 routes have none
    assert {r.get("scope") for r in by_rt["route4"] if r in ours} == {"link"}
    assert {r.get("scope", "global") for r in by_rt["route6"] if r in ours} == {"global"}


def test_add_link_into_another_namespace_is_ip_link_add_netns(sandbox: Sandbox) -> None:
    """The kernel backend's `ip link add IF netns NS type wireguard`, asked from the birthplace
    (here a bridge: this kernel has no WireGuard; the VM tests create the real thing)."""
    add_namespaces(sandbox, "bp", "by-ip", "by-rt")
    sandbox.run(["ip", "link", "add", "br0", "netns", "by-ip", "type", "bridge"], netns="bp")
    out = rtnl_script(
        sandbox,
        """
with Rtnl("bp") as r:
    r.add_link("br0", "bridge", ns="by-rt")
    for key, fn in [("again", lambda: r.add_link("br0", "bridge", ns="by-rt")),
                    ("unknown", lambda: r.add_link("x0", "no-such-kind")),
                    ("bad", lambda: r.add_link("x0", ""))]:
        try:
            fn()
            out[key] = None
        except (OSError, ValueError) as e:
            out[key] = [type(e).__name__, getattr(e, "errno", None), str(e)]
""",
    )
    assert ip_json(sandbox, "bp", "link", "show") == ip_json(sandbox, "bp", "link", "show", "lo")
    (made,) = [x for x in ip_json(sandbox, "by-rt", "link", "show") if x["ifname"] == "br0"]
    assert made["linkinfo"]["info_kind"] == "bridge"
    assert kernel_state(sandbox, "by-rt")["link"] == kernel_state(sandbox, "by-ip")["link"]
    assert out["again"][:2] == ["FileExistsError", 17]
    assert "add dev br0 netns by-rt type bridge" in out["again"][2]
    assert out["unknown"][0] != "ValueError" and out["unknown"][1] is not None
    assert out["bad"][0] == "ValueError"


def test_del_link_true_then_false(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "d")
    add_link(sandbox, LINK, "d")
    out = rtnl_script(
        sandbox,
        f"""
with Rtnl("d") as r:
    out["first"] = r.del_link({LINK!r})
    out["second"] = r.del_link({LINK!r})
""",
    )
    assert out == {"first": True, "second": False}
    assert sandbox.run(["ip", "link", "show", LINK], netns="d", check=False).returncode != 0


# -------------------------------------------------------------------------------- errors


def test_kernel_errors_name_the_operation(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "e")
    add_link(sandbox, LINK, "e")
    out = rtnl_script(
        sandbox,
        f"""
def attempt(key, fn):
    try:
        fn()
        out[key] = None
    except OSError as e:
        out[key] = [e.errno, type(e).__name__, str(e)]
with Rtnl("e") as r:
    r.add_address({LINK!r}, "198.18.0.2/32")
    attempt("dup4", lambda: r.add_address({LINK!r}, "198.18.0.2/32"))
    r.add_address({LINK!r}, "2001:db8::2/128")
    attempt("dup6", lambda: r.add_address({LINK!r}, "2001:db8::2/128"))
    attempt("addr_nodev", lambda: r.add_address("nope0", "198.18.0.3/32"))
    attempt("set_nodev", lambda: r.set_link("nope0", up=True))
    attempt("route_nodev", lambda: r.replace_route("198.18.9.0/24", "nope0"))
    attempt("move_nodev", lambda: r.move_link("nope0", "e"))
    attempt("index_nodev", lambda: r.index("nope0"))
    attempt("host_bits", lambda: r.replace_route("198.18.9.1/24", {LINK!r}))
    out["index"] = r.index({LINK!r})
""",
    )
    for key, addr in (("dup4", "198.18.0.2/32"), ("dup6", "2001:db8::2/128")):
        err, kind, text = out[key]
        assert (err, kind) == (17, "FileExistsError"), key
        assert f"RTNETLINK: add address {addr} dev {LINK}: File exists" in text
    for key in ("addr_nodev", "set_nodev", "route_nodev", "move_nodev", "index_nodev"):
        err, _kind, text = out[key]
        assert err == 19, key  # ENODEV
        assert "nope0" in text and "No such device" in text, text
    assert "replace route 198.18.9.0/24 dev nope0" in out["route_nodev"][2]
    assert out["host_bits"][0] == 22  # EINVAL, as `ip route replace` gets for it
    assert out["index"] == ip_json(sandbox, "e", "link", "show", LINK)[0]["ifindex"]
    # nothing half-done: the address was not added twice, no route appeared
    addrs = ip_json(sandbox, "e", "address", "show", "dev", LINK)[0]["addr_info"]
    assert sorted(a["local"] for a in addrs if a["scope"] == "global") == [
        "198.18.0.2",
        "2001:db8::2",
    ]
    assert not [
        r
        for r in ip_json(sandbox, "e", "route", "show", "table", "all")
        if r.get("dst") == "198.18.9.0/24"
    ]


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        ("add_address", "198.18.0.300/32"),
        ("add_address", "198.18.0.2/33"),
        ("add_address", "2001:db8::2/129"),
        ("add_address", "198.18.0.2/"),
        ("add_address", "198.18.0.2/+3"),
        ("add_address", "198.18.0.2/ 3"),
        ("add_address", "2001:db8::zz/64"),
        ("add_address", "fe80::1%wg0/64"),
        ("add_address", "198.18.0.2\0/32"),
        ("add_address", "default"),
        ("replace_route", "198.18/16"),
        ("replace_route", ""),
        ("route_get", "198.18.0.x"),
    ],
)
def test_malformed_input_is_a_value_error_before_anything_is_sent(call: str, arg: str) -> None:
    with Rtnl() as r:  # a socket in the test's own namespace: nothing is ever sent on it
        r._send = None  # type: ignore[assignment,method-assign]  # sending would be a TypeError
        fn = getattr(r, call)
        with pytest.raises(ValueError, match="invalid"):
            fn(arg) if call == "route_get" else fn(arg, LINK) if call == "replace_route" else fn(
                LINK, arg
            )


@pytest.mark.parametrize("name", ["", "x" * 16, "a\0b"])
def test_bad_interface_names_are_value_errors(name: str) -> None:
    with Rtnl() as r:
        r._send = None  # type: ignore[assignment,method-assign]
        with pytest.raises(ValueError, match="invalid interface name"):
            r.set_link(name, up=True)
        with pytest.raises(ValueError, match="invalid interface name"):
            r.del_link(name)


def test_out_of_range_numbers_are_value_errors() -> None:
    with Rtnl() as r:
        r._send = None  # type: ignore[assignment,method-assign]
        with pytest.raises(ValueError, match="mtu"):
            r.set_link(LINK, mtu=-1)
        with pytest.raises(ValueError, match="table"):
            r.replace_route("198.18.0.0/24", LINK, table=1 << 32)


# -------------------------------------------------------------------------------- lookups


def test_lookups_agree_with_ip(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "q")
    add_link(sandbox, LINK, "q")
    add_link(sandbox, "w1", "q")
    # enough links that a dump of them takes several datagrams (each ~1 KiB, 32 KiB at most)
    many = [f"link set dev m{i} mtu {1300 + i}" for i in range(48)]
    for i in range(48):
        add_link(sandbox, f"m{i}", "q")
    setup = [
        "link set lo up",
        f"link set dev {LINK} mtu 1420 up",
        "link set dev w1 mtu 1400 up",
        f"route add 198.18.8.0/24 dev {LINK} mtu 1300",
        "route add 198.18.9.0/24 dev w1",
        f"route add 2001:db8:8::/48 dev {LINK} mtu 1280",
        "route add 2001:db8:9::/48 dev w1",
        f"route add default dev {LINK} mtu 1350",
        "route add default dev w1 metric 100",
        f"route add default metric 200 nexthop dev w1 nexthop dev {LINK}",
        f"route add default dev {LINK} table 51820",  # not the main table: not a default here
        f"route add ::/0 dev {LINK}",  # `ip route show default` is IPv4's
        "route add unreachable 198.18.200.0/24",
        *many,
    ]
    sandbox.run(["ip", "-b", "-"], netns="q", input="\n".join(setup) + "\n")
    addresses = ["198.18.8.8", "198.18.9.9", "2001:db8:8::8", "2001:db8:9::9", "198.19.1.1"]
    out = rtnl_script(
        sandbox,
        f"""
with Rtnl("q") as r:
    receive, datagrams = r._receive, []
    r._receive = lambda *flags: datagrams.append(1) or receive(*flags)
    out["mtus"] = r.link_mtus()
    out["datagrams"] = len(datagrams)
    del r._receive
    r._buf = bytearray(16)  # every datagram is bigger: measured (MSG_PEEK) and the buffer grown
    out["mtus_small_buffer"] = r.link_mtus()
    # a dump abandoned before its first part is read (^C, say) must not break the next
    # requests: the kernel refuses another dump (EBUSY) until that one is read to its end
    def interrupted(*flags):
        raise KeyboardInterrupt
    r._receive = interrupted
    try:
        r.link_mtus()
    except KeyboardInterrupt:
        out["abandoned"] = True
    del r._receive
    out["mtus_after_abandoned_dump"] = r.link_mtus()
    # and the answer to an abandoned request is not taken for the next one's
    r._receive = interrupted
    try:
        r.index({LINK!r})
    except KeyboardInterrupt:
        pass
    del r._receive
    out["index_after_abandoned_dump"] = r.index("m47")
    out["get"] = {{a: r.route_get(a) for a in {addresses!r}}}
    out["default"] = r.default_routes()
    try:
        r.route_get("198.18.200.1")
    except OSError as e:
        out["unreachable"] = [e.errno, str(e)]
""",
    )
    expected_mtus = {link["ifname"]: link["mtu"] for link in ip_json(sandbox, "q", "link")}
    assert len(expected_mtus) == 51 and expected_mtus["m47"] == 1347
    assert out["mtus"] == expected_mtus
    assert out["datagrams"] > 1  # a multi-part reply
    assert out["mtus_small_buffer"] == expected_mtus
    assert out["abandoned"]
    assert (
        out["index_after_abandoned_dump"]
        == ip_json(sandbox, "q", "link", "show", "m47")[0]["ifindex"]
    )
    assert out["mtus_after_abandoned_dump"] == expected_mtus

    def dev_and_mtu(route: dict[str, Any]) -> list[Any]:
        dev = route.get("dev") or route["nexthops"][0]["dev"]
        mtus = [m["mtu"] for m in route.get("metrics", []) if isinstance(m, dict) and "mtu" in m]
        return [dev, mtus[0] if mtus else None]

    for a in addresses:
        assert out["get"][a] == dev_and_mtu(ip_json(sandbox, "q", "route", "get", a)[0]), a
    assert out["get"]["198.18.8.8"] == [LINK, 1300]
    assert out["get"]["2001:db8:9::9"] == ["w1", None]
    shown = ip_json(sandbox, "q", "route", "show", "default")
    assert out["default"] == [dev_and_mtu(r) for r in shown]
    assert out["default"] == [[LINK, 1350], ["w1", None], ["w1", None]]
    # refused as `ip route get` is refused for it, with the same errno
    failed = sandbox.run(["ip", "route", "get", "198.18.200.1"], netns="q", check=False)
    assert failed.returncode != 0
    err, text = out["unreachable"]
    assert err == 113  # EHOSTUNREACH
    assert os.strerror(err) in failed.stderr
    assert f"RTNETLINK: route get 198.18.200.1: {os.strerror(err)}" in text


# -------------------------------------------------------------------------------- descriptors


def test_no_descriptor_is_left_open(sandbox: Sandbox) -> None:
    add_namespaces(sandbox, "f1", "f2")
    add_link(sandbox, LINK, "f1")
    out = rtnl_script(
        sandbox,
        f"""
def fds():
    return sorted(os.listdir("/proc/self/fd"))
home = os.stat("/proc/thread-self/ns/net").st_ino
before = fds()
with Rtnl("f1") as r:
    out["inside"] = len(fds()) - len(before)  # the socket, and only it
    r.link_mtus()
    try:
        r.move_link("nope0", "f2")  # opens f2 for the request, which fails
    except OSError:
        pass
    try:
        r.move_link({LINK!r}, "missing")
    except FileNotFoundError:
        pass
    r.move_link({LINK!r}, "f2")
try:
    with Rtnl("f2") as r:
        r.add_address({LINK!r}, "198.18.0.2/32")
        r.add_address({LINK!r}, "198.18.0.2/32")
except FileExistsError:
    pass
try:
    Rtnl("missing")
except FileNotFoundError:
    pass
r = Rtnl()
r.close()
r.close()  # twice is fine
out["leaked"] = [f for f in fds() if f not in before]
out["home_kept"] = os.stat("/proc/thread-self/ns/net").st_ino == home
""",
    )
    assert out["inside"] == 1
    assert out["leaked"] == []
    assert out["home_kept"]
    assert ip_json(sandbox, "f2", "link", "show", LINK)[0]["ifname"] == LINK


def test_import_is_lean() -> None:
    """The point of the module is start-up time: no socket, struct, enum, re or typing."""
    import subprocess
    import sys

    code = (
        "import sys; before = set(sys.modules); import wgns.system.rtnl; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {root!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(proc.stdout.split())
    assert "wgns.system.rtnl" in loaded
    forbidden = {"socket", "struct", "enum", "re", "typing", "dataclasses", "subprocess", "json"}
    assert not loaded & forbidden, loaded & forbidden
    assert "wgns.system.netns" not in loaded  # only when a namespace is named
