"""Profile parsing: wg-quick .conf and TOML profiles, errors with file:line key, permissions."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from wgns.errors import EXIT_USAGE, ConfigError
from wgns.profile import load as profile_load
from wgns.profile.conf import parse_conf
from wgns.profile.files import MAX_PROFILE_BYTES
from wgns.profile.load import load_profile, resolve_profile_path
from wgns.profile.model import (
    Backend,
    Endpoint,
    ForwardMode,
    HookWhen,
    HookWhere,
    Interface,
    Proto,
    Secret,
)
from wgns.profile.toml import parse_toml
from wgns.profile.values import is_ip
from wgns.profile.wgconf import strip_conf
from wgns.wireguard.setconf import setconf_text as wg_setconf_text

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("*.conf"))

PRIV = "YDw4916Jl80PEEcRL378XR/Ze6WtldDnATf7kaBvQGE="
PRIV2 = "GJu0OkTpCJtXSOV1wSSi45Hgdev/7lSP9Vcgp9nvW3I="
PUB = "qMYq+I30blCSB24UgVepCoTiu2ChJNyPkTxk6YKCcRE="
PUB2 = "9ZjiN54xhFy0899RmHwnyvP5w8a+sISQlRlkmCV/4HM="
PSK = "adNVphO14lPahQMMzq5n2iImqjt2k+wdxSh2qsDF3/I="
# 44 characters, but the last one carries bits a 32-byte key cannot have: wg rejects it.
NONCANONICAL = PRIV[:42] + "F="
KEY_MSG = "not a valid WireGuard key (must be 44 base64 characters)"

CONF = Path("/cfg/test.conf")


def conf(interface: str = "", peers: str = "") -> str:
    """A valid .conf with extra [Interface] lines (from line 3 on) and extra [Peer] text."""
    return f"[Interface]\nPrivateKey = {PRIV}\n{interface}" + peers


def peer(extra: str = "", key: str = PUB) -> str:
    return f"[Peer]\nPublicKey = {key}\n{extra}"


def parse(text: str) -> Interface:
    return parse_conf(text, path=CONF, label="t")


def assert_error(
    err: ConfigError, *, path: Path | str, line: int | None, key: str | None, fragment: str
) -> None:
    text = str(err)
    assert err.exit_code == EXIT_USAGE
    assert err.path == str(path)
    assert err.line == line, text
    assert err.key == key, text
    assert fragment in text, text
    assert "\n" not in text
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert text.startswith(where + (f"{key}: " if key else "")), text


# --------------------------------------------------------------------------------------------
# .conf: the sample files


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses(sample: Path) -> None:
    iface = parse_conf(sample.read_text(), path=sample, label=sample.stem)
    assert iface.name == sample.stem
    assert iface.source == str(sample)
    assert len(iface.private_key.reveal()) == 44


def test_full_sample() -> None:
    path = DATA / "full.conf"
    i = parse_conf(path.read_text(), path=path, label="full")
    assert i.private_key == Secret("GJu0OkTpCJtXSOV1wSSi45Hgdev/7lSP9Vcgp9nvW3I=")
    assert i.listen_port == 51820
    assert i.fwmark == 0x1234
    assert i.addresses == (
        ip_interface("10.0.0.2/24"),
        ip_interface("10.0.1.2/32"),
        ip_interface("fd00::2/64"),
    )
    assert i.mtu == 1420
    assert i.table == "1234"
    assert i.dns == (ip_address("10.0.0.1"), ip_address("fd00::1"), ip_address("10.0.0.53"))
    assert i.dns_search == ("corp.example.test", "lan.example.test")
    assert [(h.when, h.command, h.where, h.line) for h in i.hooks] == [
        (HookWhen.PRE_UP, "echo pre-up %i", HookWhere.BIRTHPLACE, 12),
        (
            HookWhen.POST_UP,
            'iptables -A FORWARD -i %i -j ACCEPT; echo "done"',
            HookWhere.BIRTHPLACE,
            13,
        ),
        (HookWhen.POST_UP, "logger up", HookWhere.BIRTHPLACE, 14),
        (HookWhen.PRE_DOWN, "echo pre-down", HookWhere.BIRTHPLACE, 15),
        (HookWhen.POST_DOWN, "echo post-down", HookWhere.BIRTHPLACE, 16),
    ]
    assert i.save_config is False
    p1, p2 = i.peers
    assert p1.public_key == "9ZjiN54xhFy0899RmHwnyvP5w8a+sISQlRlkmCV/4HM="
    assert p1.preshared_key == Secret("adNVphO14lPahQMMzq5n2iImqjt2k+wdxSh2qsDF3/I=")
    assert p1.allowed_ips == (ip_network("10.0.0.0/24"), ip_network("fd00::/64"))
    assert p1.endpoint == Endpoint("vpn.example.test", 51820)
    assert p1.persistent_keepalive == 25
    assert p1.line == 19
    assert p2.endpoint == Endpoint("2001:db8::1", 4500)
    assert str(p2.endpoint) == "[2001:db8::1]:4500"
    assert p2.persistent_keepalive == 0
    assert p2.preshared_key is None
    assert p2.line == 28


def test_odd_case_and_whitespace_sample() -> None:
    path = DATA / "oddcase.conf"
    i = parse_conf(path.read_text(), path=path, label="odd")
    assert i.addresses == (ip_interface("10.9.0.2/32"),)
    assert i.mtu == 1380
    assert i.table == "off"
    assert i.listen_port == 0  # "Listen Port": wg deletes all whitespace before matching
    assert i.fwmark == 0
    assert i.dns == (ip_address("9.9.9.9"), ip_address("149.112.112.112"))
    (p,) = i.peers
    assert p.endpoint == Endpoint("203.0.113.9", 443)
    assert p.persistent_keepalive == 15


def test_crlf_sample() -> None:
    path = DATA / "crlf.conf"
    i = parse_conf(path.read_text(), path=path, label="crlf")
    assert i.addresses == (ip_interface("10.7.0.2/32"),)
    assert i.dns == (ip_address("10.7.0.1"),)
    assert i.peers[0].endpoint == Endpoint("192.0.2.10", 51820)


def test_comments_sample() -> None:
    path = DATA / "comments.conf"
    i = parse_conf(path.read_text(), path=path, label="c")
    assert i.addresses == (ip_interface("10.3.0.2/32"),)
    # wg-quick cuts every line at the first '#', hook commands included.
    assert [h.command for h in i.hooks] == ['echo "a']
    assert i.save_config is True
    assert i.table is None
    assert i.peers[0].allowed_ips == (ip_network("10.3.0.0/16"),)


def test_empty_values_sample() -> None:
    path = DATA / "empty-values.conf"
    i = parse_conf(path.read_text(), path=path, label="e")
    assert (i.addresses, i.dns, i.mtu, i.table, i.hooks) == ((), (), None, None, ())
    assert i.peers[0].allowed_ips == ()


# --------------------------------------------------------------------------------------------
# .conf: accepted values

GOOD_CONF: list[tuple[str, str, Callable[[Interface], Any], Any]] = [
    ("fwmark off", conf("FwMark = off\n"), lambda i: i.fwmark, 0),
    ("fwmark OFF", conf("FwMark = OFF\n"), lambda i: i.fwmark, 0),
    ("fwmark hex", conf("FwMark = 0x10\n"), lambda i: i.fwmark, 16),
    ("fwmark max", conf("FwMark = 0xffffffff\n"), lambda i: i.fwmark, 0xFFFFFFFF),
    ("fwmark dec", conf("FwMark = 4660\n"), lambda i: i.fwmark, 4660),
    ("fwmark zero", conf("FwMark = 0\n"), lambda i: i.fwmark, 0),
    ("port leading zeros", conf("ListenPort = 0051820\n"), lambda i: i.listen_port, 51820),
    ("port zero", conf("ListenPort = 0\n"), lambda i: i.listen_port, 0),
    ("port max", conf("ListenPort = 65535\n"), lambda i: i.listen_port, 65535),
    (
        "key with spaces",
        f"[Interface]\nPrivate Key = {PRIV}\n",
        lambda i: i.private_key,
        Secret(PRIV),
    ),
    ("lowercase all", f"[interface]\nprivatekey={PRIV}\n", lambda i: i.private_key, Secret(PRIV)),
    ("last key wins", conf(f"PrivateKey = {PRIV2}\n"), lambda i: i.private_key, Secret(PRIV2)),
    (
        "address v4 no prefix",
        conf("Address = 10.0.0.1\n"),
        lambda i: i.addresses,
        (ip_interface("10.0.0.1/32"),),
    ),
    (
        "address v6 no prefix",
        conf("Address = fd00::1\n"),
        lambda i: i.addresses,
        (ip_interface("fd00::1/128"),),
    ),
    (
        "address lists",
        conf("Address = 10.0.0.1/24,10.0.1.1/24  fd00::1/64\nAddress=10.0.2.1\n"),
        lambda i: [str(a) for a in i.addresses],
        ["10.0.0.1/24", "10.0.1.1/24", "fd00::1/64", "10.0.2.1/32"],
    ),
    (
        "dns servers and search domains",
        conf("DNS = 1.1.1.1 example.test,corp.test., 2606:4700::1111\n"),
        lambda i: (i.dns, i.dns_search),
        ((ip_address("1.1.1.1"), ip_address("2606:4700::1111")), ("example.test", "corp.test.")),
    ),
    (
        "dns de-duplicated",
        conf("DNS = 1.1.1.1\nDNS = 1.1.1.1\n"),
        lambda i: i.dns,
        (ip_address("1.1.1.1"),),
    ),
    ("mtu min", conf("MTU = 576\n"), lambda i: i.mtu, 576),
    ("mtu v6 min", conf("Address = fd00::1/64\nMTU = 1280\n"), lambda i: i.mtu, 1280),
    ("mtu max", conf("MTU = 65535\n"), lambda i: i.mtu, 65535),
    ("table main", conf("Table = main\n"), lambda i: i.table, "254"),
    ("table auto", conf("Table = auto\n"), lambda i: i.table, None),
    ("table number", conf("Table = 0051\n"), lambda i: i.table, "51"),
    ("table off", conf("Table = off\n"), lambda i: i.table, "off"),
    ("saveconfig TRUE", conf("SaveConfig = TRUE\n"), lambda i: i.save_config, True),
    (
        "saveconfig last wins",
        conf("SaveConfig = true\nSaveConfig = false\n"),
        lambda i: i.save_config,
        False,
    ),
    ("no peers", conf(), lambda i: i.peers, ()),
    ("two interface headers", conf("[Interface]\nListenPort = 7\n"), lambda i: i.listen_port, 7),
    ("nul bytes are dropped", conf("Listen\0Port = 1\0\n"), lambda i: i.listen_port, 1),
    ("bare CR lines", conf("\r\nMTU = 1400\r\n"), lambda i: i.mtu, 1400),
    (
        "hooks keep inner whitespace",
        conf("PostUp =   ip  route add  x  \n"),
        lambda i: [h.command for h in i.hooks],
        ["ip  route add  x"],
    ),
    ("empty hook is a no-op", conf("PreUp =\n"), lambda i: i.hooks, ()),
    (
        "endpoint unbracketed v6",
        conf(peers=peer("Endpoint = fd00::1:51820\n")),
        lambda i: i.peers[0].endpoint,
        Endpoint("fd00::1", 51820),
    ),
    (
        "endpoint bracketed v6",
        conf(peers=peer("Endpoint = [fd00::1]:1\n")),
        lambda i: i.peers[0].endpoint,
        Endpoint("fd00::1", 1),
    ),
    (
        "endpoint hostname",
        conf(peers=peer("Endpoint = vpn-1.example.test:65535\n")),
        lambda i: i.peers[0].endpoint,
        Endpoint("vpn-1.example.test", 65535),
    ),
    (
        "endpoint with spaces",
        conf(peers=peer("Endpoint = 192.0.2.1 : 5\n")),
        lambda i: i.peers[0].endpoint,
        Endpoint("192.0.2.1", 5),
    ),
    (
        "allowed ips host bits are masked",
        conf(peers=peer("AllowedIPs = 10.1.2.3/8\n")),
        lambda i: i.peers[0].allowed_ips,
        (ip_network("10.0.0.0/8"),),
    ),
    (
        "allowed ips without prefix",
        conf(peers=peer("AllowedIPs = 10.1.2.3, fd00::1\n")),
        lambda i: i.peers[0].allowed_ips,
        (ip_network("10.1.2.3/32"), ip_network("fd00::1/128")),
    ),
    (
        "allowed ips repeated",
        conf(peers=peer("AllowedIPs = 10.0.0.0/8\nallowedips = ::/0\n")),
        lambda i: i.peers[0].allowed_ips,
        (ip_network("10.0.0.0/8"), ip_network("::/0")),
    ),
    (
        "keepalive off",
        conf(peers=peer("PersistentKeepalive = Off\n")),
        lambda i: i.peers[0].persistent_keepalive,
        0,
    ),
    (
        "preshared key",
        conf(peers=peer(f"PresharedKey = {PSK}\n")),
        lambda i: i.peers[0].preshared_key,
        Secret(PSK),
    ),
    (
        "several peers",
        conf(peers=peer(key=PUB) + peer(key=PUB2)),
        lambda i: [p.public_key for p in i.peers],
        [PUB, PUB2],
    ),
    (
        "peer before interface",
        peer("AllowedIPs = 10.0.0.0/8\n") + f"[Interface]\nPrivateKey = {PRIV}\n",
        lambda i: len(i.peers),
        1,
    ),
]


@pytest.mark.parametrize(
    ("text", "get", "want"), [c[1:] for c in GOOD_CONF], ids=[c[0] for c in GOOD_CONF]
)
def test_good_conf(text: str, get: Callable[[Interface], Any], want: Any) -> None:
    assert get(parse(text)) == want


# --------------------------------------------------------------------------------------------
# .conf: rejected values, each with its exact line and key

BAD_CONF: list[tuple[str, str, int | None, str | None, str]] = [
    ("private key short", "[Interface]\nPrivateKey = abc\n", 2, "PrivateKey", KEY_MSG),
    (
        "private key bad char",
        f"[Interface]\nPrivateKey = {PRIV[:10]}!{PRIV[11:]}\n",
        2,
        "PrivateKey",
        KEY_MSG,
    ),
    (
        "private key non-canonical",
        f"[Interface]\nPrivateKey = {NONCANONICAL}\n",
        2,
        "PrivateKey",
        KEY_MSG,
    ),
    ("private key too long", f"[Interface]\nPrivateKey = A{PRIV}\n", 2, "PrivateKey", KEY_MSG),
    ("private key empty", "[Interface]\nPrivateKey =\n", 2, "PrivateKey", "has no value"),
    (
        "missing private key",
        "# x\n[Interface]\nListenPort = 1\n",
        2,
        "PrivateKey",
        "missing in [Interface]",
    ),
    ("no interface", peer(), None, None, "no [Interface] section"),
    ("public key invalid", conf(peers="[Peer]\nPublicKey = x\n"), 4, "PublicKey", KEY_MSG),
    (
        "preshared key invalid",
        conf(peers=peer(f"PresharedKey = {NONCANONICAL}\n")),
        5,
        "PresharedKey",
        KEY_MSG,
    ),
    (
        "missing public key",
        conf(peers="\n[Peer]\nAllowedIPs = 10.0.0.0/8\n"),
        4,
        "PublicKey",
        "missing in [Peer]",
    ),
    (
        "duplicate peer",
        conf(peers=peer() + "\n" + peer()),
        6,
        "PublicKey",
        "same public key as the peer at line 3",
    ),
    ("unknown interface key", conf("Foo = bar\n"), 3, "Foo", "unknown key in [Interface]"),
    (
        "kelvin sign is not k",
        conf(f"Private\u212aey = {PRIV2}\n"),
        3,
        "Private\u212aey",
        "unknown key in [Interface]",
    ),
    ("unknown key suggests", conf("ListenPrt = 1\n"), 3, "ListenPrt", "did you mean ListenPort?"),
    ("unknown peer key", conf(peers=peer("Bar = 1\n")), 5, "Bar", "unknown key in [Peer]"),
    (
        "interface key in peer",
        conf(peers=peer("ListenPort = 1\n")),
        5,
        "ListenPort",
        "unknown key in [Peer]",
    ),
    (
        "wg-quick key in peer",
        conf(peers=peer("DNS = 1.1.1.1\n")),
        5,
        "DNS",
        "belongs in [Interface]",
    ),
    ("unknown section", conf("[Foo]\n"), 3, None, "unknown section '[Foo]'"),
    ("header with junk", conf("[Peer] x\n"), 3, None, "unknown section '[Peer]x'"),
    (
        "key before any section",
        f"ListenPort = 1\n[Interface]\nPrivateKey = {PRIV}\n",
        1,
        "ListenPort",
        "outside of any section",
    ),
    ("not key = value", conf("garbage\n"), 3, None, "not a section header or KEY = VALUE line"),
    ("wg-quick key without =", conf("Address\n"), 3, "Address", "expected Address = VALUE"),
    (
        "spaced header hides wg-quick keys",
        f"[ Interface ]\nPrivateKey = {PRIV}\nAddress = 10.0.0.1/32\n",
        3,
        "Address",
        "write the section header exactly as [Interface]",
    ),
    ("spaced wg-quick key", conf("Post Up = true\n"), 3, "PostUp", "write the key without spaces"),
    (
        "address invalid",
        conf("Address = 10.0.0.300/24\n"),
        3,
        "Address",
        "'10.0.0.300/24' is not an IP address",
    ),
    ("address prefix", conf("Address = 10.0.0.1/33\n"), 3, "Address", "is not an IP address"),
    ("address scoped", conf("Address = fe80::1%eth0/64\n"), 3, "Address", "scoped"),
    (
        "address duplicate",
        conf("Address = 10.0.0.1\nAddress = 10.0.0.1/32\n"),
        4,
        "Address",
        "duplicate address 10.0.0.1/32",
    ),
    (
        "dns invalid",
        conf("DNS = 1.2.3.999\n"),
        3,
        "DNS",
        "'1.2.3.999' is not a DNS server IP address",
    ),
    ("dns v6 invalid", conf("DNS = fd00:::1\n"), 3, "DNS", "is not a DNS server IP address"),
    (
        "search domain invalid",
        conf("DNS = exa!mple.test\n"),
        3,
        "DNS",
        "is not a DNS search domain",
    ),
    ("mtu small", conf("MTU = 100\n"), 3, "MTU", "'100' is not an MTU (576..65535)"),
    ("mtu big", conf("MTU = 70000\n"), 3, "MTU", "is not an MTU"),
    ("mtu text", conf("MTU = auto\n"), 3, "MTU", "is not an MTU"),
    (
        "mtu v6",
        conf("Address = fd00::1\nMTU = 1000\n"),
        4,
        "MTU",
        "below 1280, the minimum for IPv6",
    ),
    ("table case", conf("Table = Off\n"), 3, "Table", "'Off' is not a routing table"),
    ("table zero", conf("Table = 0\n"), 3, "Table", "is not a routing table"),
    ("saveconfig", conf("SaveConfig = yes\n"), 3, "SaveConfig", "'yes' is neither true nor false"),
    ("saveconfig empty", conf("SaveConfig =\n"), 3, "SaveConfig", "neither true nor false"),
    (
        "listen port big",
        conf("ListenPort = 65536\n"),
        3,
        "ListenPort",
        "'65536' is not a port number (0..65535)",
    ),
    ("listen port sign", conf("ListenPort = +5\n"), 3, "ListenPort", "is not a port number"),
    ("listen port name", conf("ListenPort = ssh\n"), 3, "ListenPort", "is not a port number"),
    (
        "fwmark big",
        conf("FwMark = 0x100000000\n"),
        3,
        "FwMark",
        "neither off nor a number 0..0xffffffff",
    ),
    ("fwmark upper X", conf("FwMark = 0X10\n"), 3, "FwMark", "neither off nor a number"),
    ("fwmark dec big", conf("FwMark = 4294967296\n"), 3, "FwMark", "neither off nor a number"),
    (
        "allowed prefix",
        conf(peers=peer("AllowedIPs = 10.0.0.0/33\n")),
        5,
        "AllowedIPs",
        "invalid prefix length (0..32)",
    ),
    (
        "allowed empty prefix",
        conf(peers=peer("AllowedIPs = 10.0.0.0/\n")),
        5,
        "AllowedIPs",
        "invalid prefix length",
    ),
    (
        "allowed trailing comma",
        conf(peers=peer("AllowedIPs = 10.0.0.0/8,\n")),
        5,
        "AllowedIPs",
        "'' is not an IP address",
    ),
    (
        "allowed netmask",
        conf(peers=peer("AllowedIPs = 10.0.0.0/255.0.0.0\n")),
        5,
        "AllowedIPs",
        "invalid prefix length",
    ),
    ("allowed empty", conf(peers=peer("AllowedIPs =\n")), 5, "AllowedIPs", "has no value"),
    ("endpoint no port", conf(peers=peer("Endpoint = 192.0.2.1\n")), 5, "Endpoint", "has no port"),
    (
        "endpoint port 0",
        conf(peers=peer("Endpoint = 192.0.2.1:0\n")),
        5,
        "Endpoint",
        "'0' is not a port number (1..65535)",
    ),
    (
        "endpoint port big",
        conf(peers=peer("Endpoint = 192.0.2.1:65536\n")),
        5,
        "Endpoint",
        "is not a port number",
    ),
    ("endpoint no brace", conf(peers=peer("Endpoint = [::1:5\n")), 5, "Endpoint", "no closing ']'"),
    (
        "endpoint brace no port",
        conf(peers=peer("Endpoint = [::1]\n")),
        5,
        "Endpoint",
        "has no port",
    ),
    (
        "endpoint brace junk",
        conf(peers=peer("Endpoint = [::1]x:5\n")),
        5,
        "Endpoint",
        "has no port",
    ),
    ("endpoint empty port", conf(peers=peer("Endpoint = host:\n")), 5, "Endpoint", "has no port"),
    (
        "endpoint empty host",
        conf(peers=peer("Endpoint = :51820\n")),
        5,
        "Endpoint",
        "is neither an IP address nor a host name",
    ),
    (
        "endpoint bad host",
        conf(peers=peer("Endpoint = bad_host!:1\n")),
        5,
        "Endpoint",
        "neither an IP address nor a host name",
    ),
    (
        "keepalive big",
        conf(peers=peer("PersistentKeepalive = 65536\n")),
        5,
        "PersistentKeepalive",
        "neither off nor",
    ),
    (
        "keepalive on",
        conf(peers=peer("PersistentKeepalive = on\n")),
        5,
        "PersistentKeepalive",
        "neither off nor",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [c[1:] for c in BAD_CONF], ids=[c[0] for c in BAD_CONF]
)
def test_bad_conf(text: str, line: int | None, key: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert_error(info.value, path=CONF, line=line, key=key, fragment=fragment)
    for secret in (PRIV[:43], PRIV[10:43], PSK[:43], NONCANONICAL[:43]):
        assert secret not in str(info.value)


def test_unknown_key_that_looks_like_a_key_is_not_echoed() -> None:
    # A pasted key on its own line parses as KEY "<43 chars>" with an empty value.
    with pytest.raises(ConfigError) as info:
        parse(conf(f"{PRIV2}\n"))
    assert PRIV2[:20] not in str(info.value)
    assert info.value.line == 3


def test_secret_repr_hides_the_key() -> None:
    i = parse(conf(peers=peer(f"PresharedKey = {PSK}\n")))
    assert PRIV not in repr(i)
    assert PSK not in repr(i)


# --------------------------------------------------------------------------------------------
# wg setconf text


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_setconf_text_roundtrips(sample: Path) -> None:
    i = parse_conf(sample.read_text(), path=sample, label="x")
    text = wg_setconf_text(i)
    back = parse_conf(text, path=Path("setconf"), label="x")
    assert back.private_key == i.private_key
    assert (back.listen_port, back.fwmark) == (i.listen_port, i.fwmark)
    assert [replace(p, line=None) for p in back.peers] == [replace(p, line=None) for p in i.peers]
    # nothing in it is for wg-quick: stripping changes nothing
    assert strip_conf(text) == text + "\n"


def test_setconf_text_shape() -> None:
    i = parse(
        conf(
            "FwMark = 0x1234\nListenPort = 7\n",
            peer("AllowedIPs = 10.0.0.0/8, ::/0\nEndpoint = [fd00::1]:5\n"),
        )
    )
    assert wg_setconf_text(i) == (
        f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 7\nFwMark = 0x1234\n\n"
        f"[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.0/8, ::/0\nEndpoint = [fd00::1]:5\n"
    )


def _wireguard_go_usable() -> bool:
    return (
        os.geteuid() == 0
        and all(shutil.which(t) for t in ("wireguard-go", "wg", "unshare"))
        and os.path.exists("/dev/net/tun")
    )


@pytest.mark.skipif(not _wireguard_go_usable(), reason="needs root, wireguard-go, wg, unshare")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_setconf_text_accepted_by_wg(sample: Path) -> None:
    """Feed the text to a real (userspace) device in a throwaway netns and read it back."""
    i = parse_conf(sample.read_text(), path=sample, label="x")
    # wg resolves host names while setting the config; keep this test off the network.
    peers = tuple(
        replace(p, endpoint=Endpoint("192.0.2.99", p.endpoint.port))
        if p.endpoint and not is_ip(p.endpoint.host)
        else p
        for p in i.peers
    )
    i = replace(i, peers=peers, listen_port=0 if i.listen_port else i.listen_port)
    dev = "wgnst" + uuid.uuid4().hex[:8]
    script = f"""
        set -e
        wireguard-go -f {dev} >/dev/null 2>&1 &
        trap 'kill $! 2>/dev/null' EXIT
        for _ in $(seq 100); do [ -S /var/run/wireguard/{dev}.sock ] && break; sleep 0.05; done
        wg setconf {dev} /dev/stdin
        wg showconf {dev}
    """
    # its own network and mount namespaces, with a tmpfs over /run: the daemon's UAPI socket
    # (and /run/wireguard itself) must not appear on the host
    script = "mount -t tmpfs none /run\n" + script
    proc = subprocess.run(
        ["unshare", "-n", "-m", "--propagation", "private", "bash", "-c", script],
        input=wg_setconf_text(i),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    shown = parse_conf(proc.stdout, path=Path("showconf"), label="x")
    assert shown.private_key == i.private_key
    assert (shown.fwmark or 0) == (i.fwmark or 0)
    by_key = {p.public_key: p for p in shown.peers}
    assert set(by_key) == {p.public_key for p in i.peers}
    for p in i.peers:
        got = by_key[p.public_key]
        assert set(got.allowed_ips) == set(p.allowed_ips)
        assert got.preshared_key == p.preshared_key
        assert (got.persistent_keepalive or 0) == (p.persistent_keepalive or 0)
        if p.endpoint:
            assert got.endpoint == p.endpoint


# --------------------------------------------------------------------------------------------
# Files: resolve_profile_path and load_profile


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "etc-wgns"
    d.mkdir()
    monkeypatch.setattr(profile_load, "ETC_DIR", str(d))
    return d


def test_resolve_by_name(etc: Path) -> None:
    write(etc / "media.conf", conf())
    assert resolve_profile_path("media") == str(etc / "media.conf")
    write(etc / "other.toml", "")
    assert resolve_profile_path("other") == str(etc / "other.toml")


def test_resolve_both_is_an_error(etc: Path) -> None:
    write(etc / "media.conf", conf())
    write(etc / "media.toml", "")
    with pytest.raises(ConfigError) as info:
        resolve_profile_path("media")
    assert str(etc / "media.toml") in str(info.value)
    assert str(etc / "media.conf") in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_resolve_missing_name(etc: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"no profile 'nope': neither .*nope\.toml nor .*nope\.conf"
    ):
        resolve_profile_path("nope")


def test_resolve_paths(etc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "x.conf", conf())
    assert resolve_profile_path(str(f)) == str(f)
    monkeypatch.chdir(tmp_path)
    assert resolve_profile_path("x.conf") == "x.conf"  # a suffix makes it a path
    with pytest.raises(ConfigError) as info:
        resolve_profile_path("./missing")
    assert_error(info.value, path="./missing", line=None, key=None, fragment="no such file")
    with pytest.raises(ConfigError):
        resolve_profile_path("")


def test_load_conf(tmp_path: Path) -> None:
    f = write(tmp_path / "media.conf", (DATA / "full.conf").read_text())
    p = load_profile(str(f))
    assert p.name == "media"
    assert p.source == str(f)
    assert p.interfaces[0].name == "media"
    assert p.dns == p.interfaces[0].dns
    assert p.dns_search == ("corp.example.test", "lan.example.test")
    assert p.backend is Backend.AUTO and p.kill_switch is True
    assert p.has_ipv4 and p.has_ipv6


def test_load_overrides(tmp_path: Path) -> None:
    f = write(tmp_path / "media.conf", conf())
    p = load_profile(str(f), name="other", backend="userspace")
    assert (p.name, p.backend) == ("other", Backend.USERSPACE)
    with pytest.raises(ConfigError, match="invalid namespace name"):
        load_profile(str(f), name="../x")
    with pytest.raises(ConfigError) as info:
        load_profile(str(f), backend="fast")
    assert info.value.key == "backend" and "unknown backend 'fast'" in str(info.value)


def test_load_stem_not_a_namespace_name(tmp_path: Path) -> None:
    f = write(tmp_path / "my vpn.conf", conf())
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=f, line=None, key=None, fragment="not a valid namespace name")
    assert "--name" in str(info.value)
    assert load_profile(str(f), name="vpn").name == "vpn"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
def test_world_readable_conf_is_refused(tmp_path: Path, mode: int) -> None:
    f = write(tmp_path / "media.conf", conf(), mode)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=f, line=None, key=None, fragment="every user can read it")
    assert info.value.hint == f"chmod 600 {f}"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_private_conf_is_fine(tmp_path: Path, mode: int) -> None:
    f = write(tmp_path / "media.conf", conf(), mode)
    assert load_profile(str(f)).name == "media"


def test_unreadable(tmp_path: Path) -> None:
    d = tmp_path / "dir.conf"
    d.mkdir()
    with pytest.raises(ConfigError) as info:
        load_profile(str(d))
    assert_error(
        info.value, path=d, line=None, key=None, fragment="cannot read: not a regular file"
    )


def test_not_utf8(tmp_path: Path) -> None:
    f = write(tmp_path / "bin.conf", conf().encode() + b"# \xff\n")
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=f, line=3, key=None, fragment="not UTF-8 text")


# --------------------------------------------------------------------------------------------
# TOML profiles

FULL_TOML = f"""\
name = "media"
backend = "kernel"
birthplace = "physical"
kill_switch = false
dns = ["198.19.0.1", "10.0.0.1"]
dns_search = ["example.test"]
allow_host = [3128]

[[interface]]
config = "full.conf"

[[interface]]
name = "inline"
private_key_file = "keys/media.key"
address = ["198.19.0.2/32", "2001:db8:ff::2/128"]
listen_port = 51821
fwmark = 0x1234
mtu = 1420
table = "auto"
  [[interface.peer]]
  public_key = "{PUB}"
  preshared_key_file = "/KEYDIR/psk.key"
  allowed_ips = ["0.0.0.0/0", "::/0"]
  endpoint = "vpn.example.test:51820"
  persistent_keepalive = 25

  [[interface.peer]]
  public_key = "{PUB2}"
  persistent_keepalive = "off"

[[hook]]
when = "post-up"
run = "logger wgns up"
netns = "inside"

[[hook]]
when = "pre-down"
run = "logger bye"

[[forward]]
host_port = 9091
proto = "tcp"
from = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
mode = "relay"

[[forward]]
host_port = 9091
ns_port = 19091
proto = "udp"
"""


def toml_dir(tmp_path: Path, text: str) -> Path:
    """Write TEXT as profile.toml with the files it may name, all private."""
    write(tmp_path / "full.conf", (DATA / "full.conf").read_text())
    write(tmp_path / "keys" / "media.key", PRIV2 + "\n")
    write(tmp_path / "psk.key", PSK)
    return write(tmp_path / "profile.toml", text.replace("/KEYDIR", str(tmp_path)))


def test_full_toml(tmp_path: Path) -> None:
    f = toml_dir(tmp_path, FULL_TOML)
    p = load_profile(str(f))
    assert p.name == "media"
    assert p.source == str(f)
    assert p.backend is Backend.KERNEL
    assert p.birthplace == "physical"
    assert p.kill_switch is False
    assert p.allow_host == (3128,)
    # the interfaces' DNS first, then the profile's own; duplicates dropped
    assert [str(a) for a in p.dns] == ["10.0.0.1", "fd00::1", "10.0.0.53", "198.19.0.1"]
    assert p.dns_search == ("corp.example.test", "lan.example.test", "example.test")

    conf_iface, inline = p.interfaces
    assert conf_iface.name == "wg0"
    assert conf_iface.source == str(tmp_path / "full.conf")
    assert len(conf_iface.hooks) == 5
    assert inline.name == "inline"
    assert inline.source == str(f)
    assert inline.private_key == Secret(PRIV2)
    assert inline.addresses == (ip_interface("198.19.0.2/32"), ip_interface("2001:db8:ff::2/128"))
    assert (inline.listen_port, inline.fwmark, inline.mtu, inline.table) == (
        51821,
        0x1234,
        1420,
        None,
    )
    p1, p2 = inline.peers
    assert p1.preshared_key == Secret(PSK)
    assert p1.allowed_ips == (ip_network("0.0.0.0/0"), ip_network("::/0"))
    assert p1.endpoint == Endpoint("vpn.example.test", 51820)
    assert p1.persistent_keepalive == 25
    assert p1.line == 20
    assert p2.persistent_keepalive == 0
    assert p2.line == 27

    h1, h2 = p.hooks
    assert (h1.when, h1.command, h1.where, h1.line) == (
        HookWhen.POST_UP,
        "logger wgns up",
        HookWhere.INSIDE,
        31,
    )
    assert (h2.when, h2.where, h2.line) == (HookWhen.PRE_DOWN, HookWhere.BIRTHPLACE, 36)

    f1, f2 = p.forwards
    assert (f1.host_port, f1.ns_port, f1.proto, f1.mode, f1.line) == (
        9091,
        9091,
        Proto.TCP,
        ForwardMode.RELAY,
        40,
    )
    assert f1.sources == (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
        ip_network("10.0.0.0/8"),
    )
    assert (f2.ns_port, f2.proto, f2.mode) == (19091, Proto.UDP, ForwardMode.NAT)
    assert f2.sources == (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def test_toml_defaults(tmp_path: Path) -> None:
    f = write(
        tmp_path / "vpn.toml",
        '[[interface]]\nconfig = "a.conf"\n[[interface]]\nconfig = "b.conf"\n',
        0o644,
    )
    write(tmp_path / "a.conf", conf())
    write(tmp_path / "b.conf", f"[Interface]\nPrivateKey = {PRIV2}\n")
    # No secret in the TOML itself, so it may be world-readable.
    p = load_profile(str(f))
    assert p.name == "vpn"
    assert [i.name for i in p.interfaces] == ["wg0", "wg1"]
    assert (p.backend, p.kill_switch, p.birthplace, p.hooks, p.forwards) == (
        Backend.AUTO,
        True,
        None,
        (),
        (),
    )


def test_toml_inline_keys_and_values(tmp_path: Path) -> None:
    text = f"""
[[interface]]
private_key = "{PRIV}"
address = "10.0.0.2/32, fd00::2"
fwmark = "off"
table = 1234
peer = [{{ public_key = "{PUB}", preshared_key = "{PSK}", allowed_ips = "0.0.0.0/0" }}]
"""
    p = parse_toml(text, path=tmp_path / "x.toml")
    (i,) = p.interfaces
    assert i.private_key == Secret(PRIV)
    assert i.addresses == (ip_interface("10.0.0.2/32"), ip_interface("fd00::2/128"))
    assert (i.fwmark, i.table) == (0, "1234")
    assert i.peers[0].preshared_key == Secret(PSK)


def test_toml_inline_secret_needs_private_file(tmp_path: Path) -> None:
    f = write(tmp_path / "x.toml", f'[[interface]]\nprivate_key = "{PRIV}"\n', 0o644)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=f, line=None, key=None, fragment="every user can read it")
    assert info.value.hint == f"chmod 600 {f}"
    f.chmod(0o600)
    assert load_profile(str(f)).interfaces[0].private_key == Secret(PRIV)


def test_toml_key_file_must_be_private(tmp_path: Path) -> None:
    f = toml_dir(tmp_path, FULL_TOML)
    (tmp_path / "psk.key").chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(
        info.value,
        path=tmp_path / "psk.key",
        line=None,
        key=None,
        fragment="every user can read it",
    )
    assert info.value.hint == f"chmod 600 {tmp_path / 'psk.key'}"


def test_toml_referenced_conf_must_be_private(tmp_path: Path) -> None:
    f = toml_dir(tmp_path, FULL_TOML)
    (tmp_path / "full.conf").chmod(0o604)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert info.value.path == str(tmp_path / "full.conf")
    assert info.value.hint == f"chmod 600 {tmp_path / 'full.conf'}"


def test_toml_error_inside_referenced_conf(tmp_path: Path) -> None:
    f = toml_dir(tmp_path, FULL_TOML)
    write(tmp_path / "full.conf", conf("MTU = 1\n"))
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=tmp_path / "full.conf", line=3, key="MTU", fragment="not an MTU")


def test_toml_name_override_skips_stem(tmp_path: Path) -> None:
    f = write(tmp_path / "bad name.toml", f'[[interface]]\nprivate_key = "{PRIV}"\n')
    with pytest.raises(ConfigError, match="not a valid namespace name"):
        load_profile(str(f))
    assert load_profile(str(f), name="good").name == "good"


IFACE = f'[[interface]]\nprivate_key = "{PRIV}"\n'  # lines 1-2

BAD_TOML: list[tuple[str, str, int | None, str | None, str]] = [
    ("syntax", "name = \n", 1, None, "not valid TOML: Invalid value"),
    ("syntax later line", IFACE + "x = [1,\n", 3, None, "not valid TOML"),
    ("unknown root key", 'name = "a"\ncolour = 1\n' + IFACE, 2, "colour", "unknown key"),
    (
        "unknown iface key",
        IFACE + "listen_prot = 1\n",
        3,
        "listen_prot",
        "did you mean listen_port?",
    ),
    (
        "unknown peer key",
        IFACE + f'[[interface.peer]]\npublic_key = "{PUB}"\nfoo = 1\n',
        5,
        "foo",
        "unknown key in [interface.peer]",
    ),
    (
        "unknown hook key",
        IFACE + '[[hook]]\nwhen = "post-up"\nrun = "x"\nwhere = "inside"\n',
        6,
        "where",
        "unknown key in [hook]",
    ),
    (
        "unknown forward key",
        IFACE + "[[forward]]\nhost_port = 1\nport = 2\n",
        5,
        "port",
        "unknown key in [forward]",
    ),
    ("unknown table", IFACE + "[extra]\na = 1\n", 3, "extra", "unknown key"),
    ("no interface", 'name = "x"\n', None, None, "no [[interface]] table"),
    (
        "interface not array",
        f'[interface]\nprivate_key = "{PRIV}"\n',
        1,
        "interface",
        "write [[interface]]",
    ),
    (
        "peer not array",
        IFACE + f'[interface.peer]\npublic_key = "{PUB}"\n',
        3,
        "peer",
        "must be an array of tables",
    ),
    ("name invalid", 'name = "a/b"\n' + IFACE, 1, "name", "'a/b' is not a valid namespace name"),
    ("name type", "name = 5\n" + IFACE, 1, "name", "must be a string"),
    (
        "backend",
        'backend = "fast"\n' + IFACE,
        1,
        "backend",
        "'fast' is not one of auto | kernel | userspace",
    ),
    ("birthplace invalid", 'birthplace = ".."\n' + IFACE, 1, "birthplace", "'..' is not a valid"),
    ("birthplace self", 'name = "a"\nbirthplace = "a"\n' + IFACE, 2, "birthplace", "must differ"),
    ("kill switch type", 'kill_switch = "no"\n' + IFACE, 1, "kill_switch", "must be true or false"),
    (
        "dns invalid",
        'dns = ["1.1.1"]\n' + IFACE,
        1,
        "dns",
        "'1.1.1' is not a DNS server IP address",
    ),
    ("dns type", "dns = [1]\n" + IFACE, 1, "dns", "must be a list of strings"),
    (
        "dns search invalid",
        'dns_search = ["a b"]\n' + IFACE,
        1,
        "dns_search",
        "is not a DNS search domain",
    ),
    (
        "allow_host range",
        "allow_host = [0]\n" + IFACE,
        1,
        "allow_host",
        "0 is not a port number (1..65535)",
    ),
    ("allow_host dup", "allow_host = [1, 1]\n" + IFACE, 1, "allow_host", "lists a port twice"),
    (
        "allow_host type",
        'allow_host = ["1"]\n' + IFACE,
        1,
        "allow_host",
        "must be a list of port numbers",
    ),
    (
        "config and keys",
        '[[interface]]\nconfig = "a.conf"\naddress = "10.0.0.1"\n',
        3,
        "address",
        "cannot be combined with config",
    ),
    (
        "no key",
        "[[interface]]\nmtu = 1400\n",
        1,
        None,
        "needs config, private_key or private_key_file",
    ),
    (
        "both keys",
        IFACE + 'private_key_file = "k"\n',
        3,
        "private_key_file",
        "either private_key or private_key_file",
    ),
    (
        "private key invalid",
        '[[interface]]\nmtu = 1400\nprivate_key = "x"\n',
        3,
        "private_key",
        KEY_MSG,
    ),
    (
        "private key noncanonical",
        f'[[interface]]\nprivate_key = "{NONCANONICAL}"\n',
        2,
        "private_key",
        KEY_MSG,
    ),
    (
        "config missing",
        '[[interface]]\nname = "a"\nconfig = "nope.conf"\n',
        3,
        "config",
        "nope.conf: No such file or directory",
    ),
    (
        "key file missing",
        '[[interface]]\nprivate_key_file = "nope.key"\n',
        2,
        "private_key_file",
        "nope.key: No such file or directory",
    ),
    ("label invalid", IFACE + 'name = "a b"\n', 3, "name", "'a b' is not a valid interface label"),
    (
        "label duplicate",
        IFACE + f'name = "x"\n[[interface]]\nname = "x"\nprivate_key = "{PRIV2}"\n',
        5,
        "name",
        "'x' is used by another interface",
    ),
    (
        "default label duplicate",
        IFACE + f'name = "wg1"\n[[interface]]\nprivate_key = "{PRIV2}"\n',
        4,
        "name",
        "'wg1' is used by another interface",
    ),
    (
        "listen port twice",
        IFACE + f'listen_port = 5\n[[interface]]\nprivate_key = "{PRIV2}"\nlisten_port = 5\n',
        6,
        "listen_port",
        "port 5 is also used by interface 'wg0'",
    ),
    ("listen port type", IFACE + 'listen_port = "5"\n', 3, "listen_port", "must be an integer"),
    ("listen port bool", IFACE + "listen_port = true\n", 3, "listen_port", "must be an integer"),
    (
        "listen port range",
        IFACE + "listen_port = 65536\n",
        3,
        "listen_port",
        "65536 is not a port number (0..65535)",
    ),
    (
        "address invalid",
        IFACE + 'address = ["10.0.0.1/40"]\n',
        3,
        "address",
        "is not an IP address",
    ),
    ("address type", IFACE + "address = 5\n", 3, "address", "must be a list of strings"),
    ("fwmark negative", IFACE + "fwmark = -1\n", 3, "fwmark", "neither off nor a number"),
    ("fwmark float", IFACE + "fwmark = 1.5\n", 3, "fwmark", "must be a string or an integer"),
    ("mtu range", IFACE + "mtu = 500\n", 3, "mtu", "500 is not an MTU (576..65535)"),
    ("mtu v6", IFACE + 'address = "fd00::1"\nmtu = 1279\n', 4, "mtu", "(the minimum for IPv6)"),
    ("table", IFACE + 'table = "x"\n', 3, "table", "'x' is not a routing table"),
    (
        "peer no key",
        IFACE + '[[interface.peer]]\nendpoint = "h:1"\n',
        3,
        None,
        "missing public_key",
    ),
    (
        "peer key invalid",
        IFACE + '[[interface.peer]]\npublic_key = "nope"\n',
        4,
        "public_key",
        KEY_MSG,
    ),
    (
        "peer duplicate",
        IFACE
        + f'[[interface.peer]]\npublic_key = "{PUB}"\n[[interface.peer]]\npublic_key = "{PUB}"\n',
        6,
        "public_key",
        "same public key as the peer at line 3",
    ),
    (
        "peer endpoint",
        IFACE + f'[[interface.peer]]\npublic_key = "{PUB}"\nendpoint = "h"\n',
        5,
        "endpoint",
        "has no port",
    ),
    (
        "peer allowed",
        IFACE + f'[[interface.peer]]\npublic_key = "{PUB}"\nallowed_ips = ["x"]\n',
        5,
        "allowed_ips",
        "is not an IP address",
    ),
    (
        "peer keepalive",
        IFACE + f'[[interface.peer]]\npublic_key = "{PUB}"\npersistent_keepalive = 99999\n',
        5,
        "persistent_keepalive",
        "neither off nor",
    ),
    (
        "peer psk both",
        IFACE
        + f'[[interface.peer]]\npublic_key = "{PUB}"\npreshared_key = "{PSK}"\n'
        + 'preshared_key_file = "x"\n',
        6,
        "preshared_key_file",
        "not both",
    ),
    (
        "psk invalid",
        IFACE + f'[[interface.peer]]\npublic_key = "{PUB}"\npreshared_key = "{PSK[:-2]}"\n',
        5,
        "preshared_key",
        KEY_MSG,
    ),
    (
        "hook when missing",
        IFACE + '[[hook]]\nrun = "x"\n',
        3,
        "when",
        "missing (pre-up | post-up | pre-down | post-down)",
    ),
    (
        "hook when bad",
        IFACE + '[[hook]]\nwhen = "up"\nrun = "x"\n',
        4,
        "when",
        "'up' is not one of pre-up | post-up | pre-down | post-down",
    ),
    (
        "hook run empty",
        IFACE + '[[hook]]\nwhen = "pre-up"\nrun = " "\n',
        5,
        "run",
        "missing or empty",
    ),
    (
        "hook netns",
        IFACE + '[[hook]]\nwhen = "pre-up"\nrun = "x"\nnetns = "host"\n',
        6,
        "netns",
        "not one of inside | birthplace",
    ),
    ("forward no port", IFACE + '[[forward]]\nproto = "tcp"\n', 3, "host_port", "missing"),
    (
        "forward port 0",
        IFACE + "[[forward]]\nhost_port = 0\n",
        4,
        "host_port",
        "0 is not a port number (1..65535)",
    ),
    (
        "forward ns port",
        IFACE + "[[forward]]\nhost_port = 1\nns_port = 70000\n",
        5,
        "ns_port",
        "not a port number",
    ),
    (
        "forward proto",
        IFACE + '[[forward]]\nhost_port = 1\nproto = "sctp"\n',
        5,
        "proto",
        "'sctp' is not one of tcp | udp",
    ),
    (
        "forward mode",
        IFACE + '[[forward]]\nhost_port = 1\nmode = "dnat"\n',
        5,
        "mode",
        "not one of nat | relay",
    ),
    (
        "forward host bits",
        IFACE + '[[forward]]\nhost_port = 1\nfrom = ["127.0.0.1/8"]\n',
        5,
        "from",
        "did you mean 127.0.0.0/8?",
    ),
    (
        "forward from bad",
        IFACE + '[[forward]]\nhost_port = 1\nfrom = ["lan"]\n',
        5,
        "from",
        "'lan' is not an IP network",
    ),
    (
        "forward from empty",
        IFACE + "[[forward]]\nhost_port = 1\nfrom = []\n",
        5,
        "from",
        "nobody could use this forward",
    ),
    (
        "forward duplicate",
        IFACE + "[[forward]]\nhost_port = 80\n\n[[forward]]\nhost_port = 80\nns_port = 8080\n",
        7,
        "host_port",
        "duplicate forward of tcp port 80 (also at line 3)",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [c[1:] for c in BAD_TOML], ids=[c[0] for c in BAD_TOML]
)
def test_bad_toml(
    tmp_path: Path, text: str, line: int | None, key: str | None, fragment: str
) -> None:
    path = tmp_path / "profile.toml"
    with pytest.raises(ConfigError) as info:
        parse_toml(text, path=path)
    assert_error(info.value, path=path, line=line, key=key, fragment=fragment)
    for secret in (PRIV[:43], PRIV2[:43], PSK[:42], NONCANONICAL[:43]):
        assert secret[10:40] not in str(info.value)


def test_toml_key_file_content(tmp_path: Path) -> None:
    write(tmp_path / "k", "not a key\n")
    with pytest.raises(ConfigError) as info:
        parse_toml('[[interface]]\nprivate_key_file = "k"\n', path=tmp_path / "p.toml")
    assert_error(info.value, path=tmp_path / "k", line=None, key="private_key", fragment=KEY_MSG)


def test_toml_key_file_not_regular(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml('[[interface]]\nprivate_key_file = "/dev/zero"\n', path=tmp_path / "p.toml")
    assert_error(
        info.value,
        path=tmp_path / "p.toml",
        line=2,
        key="private_key_file",
        fragment="not a regular file",
    )


def test_toml_inline_table_lines(tmp_path: Path) -> None:
    """Inline tables have no header: errors point at the key that holds them."""
    text = IFACE + 'peer = [{ public_key = "x" }]\n'
    with pytest.raises(ConfigError) as info:
        parse_toml(text, path=tmp_path / "p.toml")
    assert (info.value.line, info.value.key) == (3, "public_key")


# --------------------------------------------------------------------------------------------
# Differential: wgns accepts a wg-level line exactly when the real `wg setconf` does

WG_INTERFACE_LINES = [
    "ListenPort = 0",
    "ListenPort = 65535",
    "ListenPort = 0051820",
    "ListenPort =",
    "listenport=1",
    "Listen Port = 1",
    "FwMark = off",
    "FwMark = OFF",
    "FwMark = 0",
    "FwMark = 0x10",
    "FwMark = 0X10",
    "FwMark = 0xffffffff",
    "FwMark = 0x100000000",
    "FwMark = 4294967295",
    "FwMark = 4294967296",
    "FwMark = -1",
    "FwMark = 1x",
    "FwMark = 0x",
    f"PrivateKey = {NONCANONICAL}",
    f"PrivateKey = {PRIV[:-1]}",
    f"PrivateKey = {PRIV2}",
    f"Private Key = {PRIV2}",
    "Foo = 1",
    "[Foo]",
    "garbage",
]
WG_PEER_LINES = [
    "AllowedIPs = 10.0.0.0/33",
    "AllowedIPs = 10.0.0.0/",
    "AllowedIPs = 10.0.0.0/8,",
    "AllowedIPs = 10.0.0.1/8",
    "AllowedIPs = 10.0.0.0/08",
    "AllowedIPs = 010.0.0.0/8",
    "AllowedIPs = ::/0",
    "AllowedIPs = ::ffff:1.2.3.4/128",
    "AllowedIPs = 10.0.0.0/255.0.0.0",
    "AllowedIPs = 10.0.0.0/-1",
    "AllowedIPs = 1.2.3",
    "AllowedIPs = 10.0.0.0/8 , fd00::/8",
    "AllowedIPs =",
    "Endpoint = 192.0.2.1",
    "Endpoint = 192.0.2.1:65535",
    "Endpoint = 192.0.2.1:",
    "Endpoint = [::1]:5",
    "Endpoint = ::1:5",
    "Endpoint = [::1]",
    "Endpoint = [::1]x:5",
    "Endpoint = [::1:5",
    "PersistentKeepalive = off",
    "PersistentKeepalive = 0",
    "PersistentKeepalive = 65535",
    "PersistentKeepalive = 65536",
    "PersistentKeepalive = on",
    "PersistentKeepalive = 0x5",
    f"PresharedKey = {PSK}",
    f"PresharedKey = {NONCANONICAL}",
    "ListenPort = 1",
]


@pytest.mark.skipif(not _wireguard_go_usable(), reason="needs root, wireguard-go, wg, unshare")
def test_accepts_exactly_what_wg_accepts(tmp_path: Path) -> None:
    texts = [conf(line + "\n") for line in WG_INTERFACE_LINES]
    texts += [conf(peers=peer(line + "\n")) for line in WG_PEER_LINES]
    for n, text in enumerate(texts):
        write(tmp_path / f"{n}.conf", text)
    dev = "wgnst" + uuid.uuid4().hex[:8]
    script = f"""
        wireguard-go -f {dev} >/dev/null 2>&1 &
        trap 'kill $! 2>/dev/null' EXIT
        for _ in $(seq 100); do [ -S /var/run/wireguard/{dev}.sock ] && break; sleep 0.05; done
        for n in $(seq 0 {len(texts) - 1}); do
            wg setconf {dev} {tmp_path}/$n.conf 2>/dev/null && echo ok || echo bad
        done
    """
    # its own network and mount namespaces, with a tmpfs over /run: the daemon's UAPI socket
    # (and /run/wireguard itself) must not appear on the host
    script = "mount -t tmpfs none /run\n" + script
    proc = subprocess.run(
        ["unshare", "-n", "-m", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    verdicts = proc.stdout.split()
    assert len(verdicts) == len(texts), proc.stderr
    ours = []
    for text in texts:
        try:
            parse(text)
            ours.append("ok")
        except ConfigError:
            ours.append("bad")
    lines = WG_INTERFACE_LINES + WG_PEER_LINES
    assert {ln: v for ln, v in zip(lines, ours, strict=True)} == {
        ln: v for ln, v in zip(lines, verdicts, strict=True)
    }


# Where wgns is deliberately stricter than wg (documented in docs/profile.md).
@pytest.mark.parametrize(
    "text",
    [
        conf("ListenPort = domain\n"),  # wg looks service names up in /etc/services
        conf("ListenPort = 65536\n"),  # glibc's getaddrinfo() wraps it to 0
        conf(peers=peer("Endpoint = 192.0.2.1:0\n")),  # no peer listens on port 0
        conf(peers=peer("Endpoint = 192.0.2.1:https\n")),
    ],
)
def test_stricter_than_wg(text: str) -> None:
    with pytest.raises(ConfigError):
        parse(text)


def test_toml_odd_but_valid(tmp_path: Path) -> None:
    p = parse_toml("allow_host = 3128\n" + IFACE, path=tmp_path / "p.toml")
    assert p.allow_host == (3128,)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "1" * 5000 + "\n",  # beyond Python's int_max_str_digits
        "x = " + "[" * 5000 + "]" * 5000 + "\n",  # deeper than the recursion limit
    ],
    ids=["huge integer", "deep nesting"],
)
def test_toml_that_tomllib_chokes_on(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_toml(text, path=tmp_path / "p.toml")


def test_too_large(tmp_path: Path) -> None:
    f = write(tmp_path / "big.conf", conf() + "#" * MAX_PROFILE_BYTES)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    assert_error(info.value, path=f, line=None, key=None, fragment="cannot read: larger than")


def test_key_file_not_ascii(tmp_path: Path) -> None:
    write(tmp_path / "k", "é" * 44)
    with pytest.raises(ConfigError) as info:
        parse_toml('[[interface]]\nprivate_key_file = "k"\n', path=tmp_path / "p.toml")
    assert_error(info.value, path=tmp_path / "k", line=None, key="private_key", fragment=KEY_MSG)
