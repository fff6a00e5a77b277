"""The kill switch table (wgns/killswitch.py): rendering, and real nft behaviour in a sandbox.

The real tests load the table into a namespace of the sandbox with stand-in links (veths
named like a wg interface and like an uplink, and one for a forward) and send from
inside: what may not leave fails at once with EPERM; what may, goes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgns.engine.ops import NftTable
from wgns.errors import WgnsError
from wgns.features import killswitch
from wgns.features.killswitch import Opening, Spec
from wgns.lifecycle.plan import Facts, plan_up
from wgns.profile.model import Interface, Peer, Profile, Secret
from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox

# The probes also run as nobody: an interpreter every user may execute (pyenv lives in
# /root, which is mode 700), the system one when there is one.
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


KS = "ks"
TABLE = "wgns_ks"
WG = "wgks0"  # stands in for the WireGuard interface
LEAK = "leak0"  # stands in for any other way out (an uplink)

# ------------------------------------------------------------------------------ pure rendering


def test_ruleset_drops_by_default_and_allows_only_lo_and_wg() -> None:
    text = killswitch.ruleset(TABLE, ["wga", "wgb"], ipv6=True)
    assert text.startswith(f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
    assert text.count("policy drop;") == 3
    assert "\tchain refuse {\n\t\tmeta l4proto tcp reject with tcp reset\n\t\tdrop\n\t}\n" in text
    for hook in ("output", "input", "forward"):
        assert f"type filter hook {hook} priority filter; policy drop;" in text
    assert 'oifname { "wga", "wgb" } accept' in text
    assert 'iifname { "wga", "wgb" } accept' in text
    assert "nfproto ipv6" not in text
    assert "accept" not in text.split("chain forward", 1)[1]
    assert text.count("goto refuse") == 1  # what is not through wg or lo


def test_ruleset_without_ipv6_drops_ipv6_everywhere_but_lo() -> None:
    text = killswitch.ruleset(TABLE, ["wga"], ipv6=False)
    out, inp = text.split("chain input")
    lines = [ln.strip() for ln in out.splitlines()]
    lo = lines.index('oifname "lo" accept')
    v6 = lines.index('meta nfproto ipv6 counter goto refuse comment "no IPv6 in profile"')
    assert lo < v6 < lines.index('oifname { "wga" } accept'), "IPv6 is refused before wg"
    assert "meta nfproto ipv6 counter drop" in inp.split("chain forward")[0]


def test_openings_are_pinned_to_their_interface() -> None:
    o = Opening(
        "vnx",
        rules_in=("tcp dport 8080 accept", 'iifname "vnx" udp dport 53 accept'),
        rules_out=("tcp sport 8080 accept",),
    )
    text = killswitch.ruleset(TABLE, ["wga"], ipv6=False, openings=[o])
    assert '\t\tiifname "vnx" tcp dport 8080 accept\n' in text
    assert '\t\tiifname "vnx" udp dport 53 accept\n' in text  # not pinned twice
    assert '\t\toifname "vnx" tcp sport 8080 accept\n' in text
    # openings come after the IPv6 drop and before the final counter
    out = text.split("chain input")[0]
    assert out.index("nfproto ipv6") < out.index('oifname "vnx"') < out.index("not through")


@pytest.mark.parametrize("bad", ["", "a" * 16, 'wg"; accept', "wg 0", "wg\n0", "wg{0}"])
def test_interface_names_are_validated(bad: str) -> None:
    with pytest.raises(WgnsError):
        killswitch.ruleset(TABLE, [bad], ipv6=False)
    with pytest.raises(WgnsError):
        killswitch.ruleset(TABLE, ["wga"], ipv6=False, openings=[Opening(bad)])


def test_seal_hashes_the_body() -> None:
    a = killswitch.ruleset(TABLE, ["wga"], ipv6=False)
    b = killswitch.ruleset(TABLE, ["wga"], ipv6=True)
    seal_a = a.split('comment "', 1)[1].split('"', 1)[0]
    seal_b = b.split('comment "', 1)[1].split('"', 1)[0]
    assert seal_a.startswith("wgns kill switch sha256:")
    assert seal_a != seal_b
    assert killswitch.ruleset(TABLE, ["wga"], ipv6=False) == a  # deterministic
    assert len(seal_a) < 256  # the kernel's limit for a comment


_ifname = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=15)
_rule = st.sampled_from(
    ["tcp sport 8080 accept", "udp dport 53 accept", "ip daddr 198.18.9.1 accept", "counter"]
)


@settings(max_examples=100, deadline=None)
@given(
    wg=st.lists(_ifname, max_size=4, unique=True),
    ipv6=st.booleans(),
    openings=st.lists(
        st.builds(
            Opening,
            ifname=_ifname,
            rules_in=st.lists(_rule, max_size=3).map(tuple),
            rules_out=st.lists(_rule, max_size=3).map(tuple),
        ),
        max_size=3,
    ),
)
def test_every_rendering_is_closed_and_round_trips(
    wg: list[str], ipv6: bool, openings: list[Opening]
) -> None:
    spec = Spec(TABLE, tuple(wg), ipv6, tuple(openings))
    assert Spec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    text = spec.render()
    chains = text.split("\tchain ")[1:]
    assert [c.split(" ", 1)[0] for c in chains] == ["output", "input", "forward", "refuse"]
    for c in chains[:3]:
        body = c.split("\n\t}", 1)[0].splitlines()
        rules = [ln.strip() for ln in body[2:]]
        assert "policy drop;" in body[1]
        # every accept names lo, the wg interfaces, or one opening's interface, first
        for r in rules:
            if "accept" in r:
                key = r.split(" ", 1)[0]
                assert key in ("oifname", "iifname"), r
                target = r.split(" ", 2)[1]
                allowed = {f'"{n}"' for n in ["lo", *(o.ifname for o in openings)]}
                assert target in allowed or target == "{", r
        assert rules[-1].startswith("counter")
        if not ipv6 and not c.startswith("forward"):
            assert "meta nfproto ipv6" in rules[1]
    assert ("nfproto ipv6" in text) is (not ipv6)


def _profile(ipv6: bool, kill_switch: bool = True) -> Profile:
    addrs: tuple[Any, ...] = (ipaddress.ip_interface("198.19.0.2/32"),)
    if ipv6:
        addrs += (ipaddress.ip_interface("2001:db8:ff::2/128"),)
    peer = Peer(public_key="x" * 43 + "=", allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),))
    ifaces = tuple(
        Interface(name=n, private_key=Secret("y" * 43 + "="), addresses=addrs, peers=(peer,))
        for n in ("vpn", "second")
    )
    return Profile(
        name="some-ns", source=Path("/x.toml"), interfaces=ifaces, kill_switch=kill_switch
    )


@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("ns_exists", [False, True])
def test_plan_renders_what_the_recorded_spec_renders(ipv6: bool, ns_exists: bool) -> None:
    """`wgns check` re-renders the table from the state record: it must be the planned one."""
    profile = _profile(ipv6)
    opening = Opening("vnabc", rules_out=("tcp sport 80 accept",))
    facts = Facts(
        ns_exists=ns_exists,
        backend="userspace",
        mtus={"vpn": 1420, "second": 1420},
        resolved={i.name: i for i in profile.interfaces},
        openings=(opening,),
    )
    (op,) = [o for o in plan_up(profile, facts) if isinstance(o, NftTable)]
    spec = killswitch.spec_for(profile, facts.openings)
    assert spec.table == op.table == names.nft_table("some-ns")
    assert spec.wg_ifnames == tuple(names.wg_ifname("some-ns", n) for n in ("vpn", "second"))
    assert spec.ipv6 is ipv6
    body = spec.render().split(f"table inet {spec.table} {{\n", 1)[1]
    assert op.ruleset.endswith(f"table inet {spec.table} {{\n" + body)


def test_no_table_when_the_kill_switch_is_off() -> None:
    profile = _profile(False, kill_switch=False)
    facts = Facts(
        ns_exists=False,
        backend="userspace",
        mtus={"vpn": 1420, "second": 1420},
        resolved={i.name: i for i in profile.interfaces},
    )
    assert not [o for o in plan_up(profile, facts) if isinstance(o, NftTable)]


def test_normalize_ignores_counters_only() -> None:
    a = "table inet t {\n\tchain c {\n\t\tcounter packets 5 bytes 300 drop\n\t}\n}\n"
    b = "table inet t {\n  chain c {\n    counter packets 0 bytes 0 drop\n  }\n}\n"
    assert killswitch.normalize(a) == killswitch.normalize(b)
    c = b.replace("drop", "accept")
    assert killswitch.normalize(a) != killswitch.normalize(c)
    assert killswitch.diff(killswitch.normalize(a), killswitch.normalize(c)) == [
        "-counter drop",
        "+counter accept",
    ]


# ------------------------------------------------------------------------------ real nft

_PROBE = r"""
import errno, json, socket, sys
out = {}
for spec in json.loads(sys.argv[1]):
    kind, addr, port = spec
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        if kind == "udp":
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (addr, port))
        else:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(0.3)
                s.connect((addr, port))
        out[f"{kind} {addr} {port}"] = "ok"
    except TimeoutError:
        out[f"{kind} {addr} {port}"] = "timeout"
    except OSError as e:
        out[f"{kind} {addr} {port}"] = errno.errorcode.get(e.errno, str(e))
print(json.dumps(out))
"""


def _setup_ns(sandbox: Sandbox, *, veth: bool = False) -> None:
    lines = [
        f"netns add {KS}",
        f"-n {KS} link set lo up",
        # veths (this kernel may have no dummy module); their other ends stay outside, up
        f"link add {WG}o type veth peer name {WG} netns {KS}",
        f"link add {LEAK}o type veth peer name {LEAK} netns {KS}",
        f"link set {WG}o up",
        f"link set {LEAK}o up",
        f"-n {KS} addr add 198.18.100.1/24 dev {WG}",
        f"-n {KS} addr add 2001:db8:100::1/64 dev {WG} nodad",
        f"-n {KS} addr add 198.18.101.1/24 dev {LEAK}",
        f"-n {KS} addr add 2001:db8:101::1/64 dev {LEAK} nodad",
        f"-n {KS} link set {WG} up",
        f"-n {KS} link set {LEAK} up",
    ]
    if veth:
        lines += [
            f"link add vhks type veth peer name vnks netns {KS}",
            "addr add 198.18.102.1/24 dev vhks",
            "link set vhks up",
            f"-n {KS} addr add 198.18.102.2/24 dev vnks",
            f"-n {KS} link set vnks up",
        ]
    sandbox.run(["sh", "-c", "\n".join(f"ip {ln}" for ln in lines)])


def _load(sandbox: Sandbox, script: str) -> None:
    sandbox.run(["nft", "-f", "-"], netns=KS, input=script)


def _probe(
    sandbox: Sandbox, targets: list[tuple[str, str, int]], user: bool = False
) -> dict[str, str]:
    argv = [PYTHON, "-I", "-S", "-c", _PROBE, json.dumps(targets)]
    if user:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    out = sandbox.run(argv, netns=KS).stdout
    result: dict[str, str] = json.loads(out)
    return result


TARGETS = [
    ("udp", "198.18.100.2", 9),  # through "wg"
    ("udp", "198.18.101.2", 9),  # through the uplink
    ("tcp", "198.18.101.2", 80),
    ("udp", "2001:db8:100::2", 9),  # IPv6 through "wg"
    ("udp", "2001:db8:101::2", 9),  # IPv6 through the uplink
    ("udp", "127.0.0.1", 9),
    ("udp", "::1", 9),
]


def test_real_table_lets_out_only_wg_and_lo(sandbox: Sandbox) -> None:
    _setup_ns(sandbox)
    before = _probe(sandbox, TARGETS)
    assert set(before.values()) <= {"ok", "ECONNREFUSED", "timeout"}  # no table: all goes

    _load(sandbox, killswitch.ruleset(TABLE, [WG], ipv6=True))
    got = _probe(sandbox, TARGETS)
    assert got == {
        "udp 198.18.100.2 9": "ok",
        "udp 198.18.101.2 9": "EPERM",
        "tcp 198.18.101.2 80": "ECONNREFUSED",  # a reset from the table, at once
        "udp 2001:db8:100::2 9": "ok",
        "udp 2001:db8:101::2 9": "EPERM",
        "udp 127.0.0.1 9": "ok",
        "udp ::1 9": "ok",
    }
    # unprivileged: the same
    assert _probe(sandbox, TARGETS, user=True) == got

    # without IPv6 in the profile, IPv6 is dropped through wg too (lo still works)
    _load(sandbox, killswitch.ruleset(TABLE, [WG], ipv6=False))
    got6 = _probe(sandbox, TARGETS)
    assert got6["udp 2001:db8:100::2 9"] == "EPERM"
    assert got6["udp ::1 9"] == "ok"
    assert got6["udp 198.18.100.2 9"] == "ok"
    ping = sandbox.run(["ping", "-6", "-c1", "-W1", f"ff02::1%{WG}"], netns=KS, check=False)
    assert ping.returncode != 0
    listing = sandbox.run(["nft", "list", "chain", "inet", TABLE, "output"], netns=KS).stdout
    v6_rule = next(ln for ln in listing.splitlines() if "no IPv6 in profile" in ln)
    assert "counter packets 0 " not in v6_rule  # dropped here, by the table


def test_real_table_equals_its_canonical_rendering_and_edits_show(sandbox: Sandbox) -> None:
    _setup_ns(sandbox)
    script = killswitch.ruleset(TABLE, [WG], ipv6=False)
    _load(sandbox, script)
    _probe(sandbox, TARGETS)  # move some counters
    live = sandbox.run(["nft", "list", "table", "inet", TABLE], netns=KS).stdout
    expected = killswitch.canonical(script, TABLE)
    assert killswitch.normalize(live) == killswitch.normalize(expected)
    assert "sha256:" in live  # the seal is in the kernel

    handles = sandbox.run(["nft", "-a", "list", "chain", "inet", TABLE, "output"], netns=KS).stdout
    handle = next(ln for ln in handles.splitlines() if "not through the tunnel" in ln).split()[-1]
    sandbox.run(["nft", "delete", "rule", "inet", TABLE, "output", "handle", handle], netns=KS)
    live = sandbox.run(["nft", "list", "table", "inet", TABLE], netns=KS).stdout
    d = killswitch.diff(killswitch.normalize(expected), killswitch.normalize(live))
    assert d == ['-counter goto refuse comment "wgns kill switch: not through the tunnel"']


def test_replacement_is_atomic(sandbox: Sandbox) -> None:
    """Replacing the table (as `up` into an existing namespace does) never opens a gap."""
    _setup_ns(sandbox)
    script = killswitch.ruleset(TABLE, [WG], ipv6=False)
    _load(sandbox, script)
    sender = sandbox.popen(
        [PYTHON, "-I", "-S", "-c", _SENDER, f"{SANDBOX_TMP}/stop"],
        netns=KS,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.1)
    for i in range(30):
        _load(sandbox, killswitch.ruleset(TABLE, [WG], ipv6=bool(i % 2)))
    sandbox.write_file(f"{SANDBOX_TMP}/stop", "")
    out, _ = sender.communicate(timeout=10)
    counts = json.loads(out)
    assert counts["sent"] == 0, counts
    assert counts["EPERM"] > 100, counts


_SENDER = r"""
import errno, json, os, socket, sys
counts = {"sent": 0, "EPERM": 0, "other": 0}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while not os.path.exists(sys.argv[1]):
    try:
        s.sendto(b"x", ("198.18.101.2", 9))
        counts["sent"] += 1
    except PermissionError:
        counts["EPERM"] += 1
    except OSError:
        counts["other"] += 1
print(json.dumps(counts))
"""


def test_opening_opens_only_its_narrow_hole(sandbox: Sandbox) -> None:
    """A forward's veth (issue 5): the namespace may answer on its forwarded port, nothing else."""
    _setup_ns(sandbox, veth=True)
    opening = Opening(
        "vnks", rules_in=("tcp dport 8080 accept",), rules_out=("tcp sport 8080 accept",)
    )
    _load(sandbox, killswitch.ruleset(TABLE, [WG], ipv6=False, openings=[opening]))
    # from inside towards the host end of the veth: nothing
    got = _probe(sandbox, [("udp", "198.18.102.1", 53), ("tcp", "198.18.102.1", 80),
                           ("tcp", "198.18.102.1", 8080)])  # fmt: skip
    assert got == {
        "udp 198.18.102.1 53": "EPERM",
        "tcp 198.18.102.1 80": "ECONNREFUSED",
        "tcp 198.18.102.1 8080": "ECONNREFUSED",
    }
    # the forwarded port answers from outside
    server = sandbox.popen(
        [PYTHON, "-I", "-S", "-c", _SERVER], netns=KS, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    out = sandbox.run(["curl", "-sS", "-m", "3", "http://198.18.102.2:8080/"]).stdout
    assert out == "hello"
    # a port that is not opened does not (input dropped: no RST, a timeout)
    other = sandbox.run(["curl", "-sS", "-m", "0.5", "http://198.18.102.2:8081/"], check=False)
    assert other.returncode == 28  # timed out
    server.kill()
    server.wait(timeout=5)


_SERVER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(1000)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"); c.close()
"""


def test_down_removes_the_table_from_a_namespace_it_did_not_create(
    sandbox: Sandbox, provider: Any, wgns: Any
) -> None:
    sandbox.run(["ip", "netns", "add", "mine"])
    sandbox.run(["nft", "add", "table", "inet", "users_own"], netns="mine")
    path = f"{SANDBOX_TMP}/mine.conf"
    sandbox.write_file(path, provider.client_conf(ipv6=False), mode=0o600)
    wgns("up", path, "--name", "mine")
    tables = sandbox.run(["nft", "list", "tables"], netns="mine").stdout.split("\n")
    assert f"table inet {names.nft_table('mine')}" in tables
    wgns("down", "mine")
    assert sandbox.run(["nft", "list", "tables"], netns="mine").stdout == "table inet users_own\n"
    sandbox.run(["ip", "netns", "del", "mine"])
