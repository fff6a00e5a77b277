"""`wgns check`: PASS with evidence on a healthy namespace, and FAIL, on the right line, for each
deliberately broken setup (a check that cannot fail is not a check). Real wireguard-go, nft and
DNS in the sandbox (tests/conftest.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from wgns.features import check
from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider

NS = "vpn"
WG = names.wg_ifname(NS, "vpn")
TABLE = names.nft_table(NS)
ALL = set(check.ORDER)


def up(sandbox: Sandbox, provider: Provider, wgns: Any, text: str | None = None, **kw: Any) -> str:
    path = f"{SANDBOX_TMP}/vpn.conf"
    sandbox.write_file(path, text or provider.client_conf(**kw), mode=0o600)
    wgns("up", path, "--name", NS)
    return path


def run_check(wgns: Any, *extra: str, timeout: str = "2") -> tuple[int, dict[str, Any]]:
    proc = wgns("check", NS, "--json", "--timeout", timeout, *extra, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == 1 and doc["ns"] == NS
    assert [c["name"] for c in doc["checks"]] == list(check.ORDER)
    assert doc["ok"] is (proc.returncode == 0)
    return proc.returncode, doc


def failing(doc: dict[str, Any]) -> set[str]:
    return {c["name"] for c in doc["checks"] if c["status"] == "fail"}


def evidence(doc: dict[str, Any], name: str) -> str:
    return next(str(c["evidence"]) for c in doc["checks"] if c["name"] == name)


# ------------------------------------------------------------------------------ pure parts

W, V = ["wg0123456789"], ["vn0123456789"]


@pytest.mark.parametrize(
    ("route", "verdict"),
    [
        ({"dst": "default", "dev": W[0]}, None),
        ({"type": "local", "dst": "198.19.0.2", "dev": W[0], "table": "local"}, None),
        ({"type": "local", "dst": "127.0.0.1", "dev": "lo", "table": "local"}, None),
        ({"dst": "::1", "dev": "lo"}, None),  # IPv6's loopback route lives in main
        ({"type": "unreachable", "dst": "198.18.0.0/15", "dev": "lo"}, None),
        ({"type": "blackhole", "dst": "default"}, None),
        ({"type": "multicast", "dst": "ff00::/8", "dev": W[0], "table": "local"}, None),
        ({"dst": "default", "gateway": "198.18.64.110", "dev": V[0], "table": "30574"}, None),
        ({"dst": "198.18.0.0/24", "dev": "lo"}, "leaves through lo"),
        ({"dst": "default", "dev": "eth0"}, "leaves through eth0"),
        ({"dst": "default", "nexthops": [{"dev": W[0]}, {"dev": "eth0"}]}, "leaves through eth0"),
        ({"dst": "default", "nhid": 7}, "leaves through an unknown device"),
    ],
)
def test_route_verdicts(route: dict[str, Any], verdict: str | None) -> None:
    assert check.route_verdict(route, W, V) == verdict


def test_nameservers_and_query() -> None:
    text = "# x\nnameserver 198.19.0.1\nsearch a\nnameserver  2001:db8:ff::1 \noptions x\n"
    assert check.nameservers(text) == ["198.19.0.1", "2001:db8:ff::1"]
    qid, q = check.dns_query(".")
    assert q[:2] == qid.to_bytes(2, "big")
    assert q[2:12] == bytes.fromhex("01000001000000000000")
    assert q[12:] == b"\0\x00\x02\x00\x01"  # root, type NS, class IN


def test_result_lines_and_report() -> None:
    results = [
        check.Result("interfaces", "pass", "lo, wg0 (tun); nothing else"),
        check.Result("exit", "skip", "no --echo-url given"),
        check.Result("dns", "fail", "no answer"),
    ]
    assert [r.line() for r in results] == [
        "PASS interfaces: lo, wg0 (tun); nothing else",
        "SKIP exit: no --echo-url given",
        "FAIL dns: no answer",
    ]
    rep = check.report("vpn", results)
    assert rep["ok"] is False
    assert rep["checks"][1] == {
        "name": "exit", "status": "skip", "ok": True, "evidence": "no --echo-url given"
    }  # fmt: skip


# ------------------------------------------------------------------------------ real


def test_healthy_namespace_passes_every_check_with_evidence(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    up(sandbox, provider, wgns, ipv6=False)
    proc = wgns("check", NS, "--echo-url", f"http://{provider.web_v4}/")
    lines = proc.stdout.splitlines()
    assert [ln.split(":", 1)[0] for ln in lines[:-1]] == [f"PASS {n}" for n in check.ORDER]
    assert lines[-1] == f"{NS}: no way out but the tunnel (7 passed, 0 failed)"
    text = proc.stdout
    assert f"lo, {WG} (tun); nothing else" in text
    assert f"default dev {WG}" in text
    assert f"table inet {TABLE} matches the state record" in text
    assert "sha256:" in text
    assert f"{provider.dns_v4} via {WG} answered" in text
    assert "blocked (profile has no IPv6)" in text and "EPERM" in text
    assert f"sees 198.18.1.2 through the tunnel, {provider.host_v4} without" in text

    # the DNS check really went to the tunnel's resolver, through the tunnel
    assert any(q[1] == "NS" for q in provider.dns_queries())

    # without an echo URL the exit check is skipped, not failed
    rc, doc = run_check(wgns)
    assert rc == 0
    assert [c["status"] for c in doc["checks"]] == ["pass"] * 6 + ["skip"]


def test_ipv6_profile_is_tunnelled(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    up(sandbox, provider, wgns, ipv6=True)
    rc, doc = run_check(wgns, "--echo-url", f"http://[{provider.web_v6}]/")
    assert rc == 0, doc
    assert evidence(doc, "ipv6").startswith("tunnelled: ")
    assert "2001:db8:ff::" in evidence(doc, "ipv6")
    assert f"{provider.dns_v6} via {WG} answered" in evidence(doc, "dns")
    assert "2001:db8:1::2 through the tunnel, 2001:db8::2 without" in evidence(doc, "exit")
    status = json.loads(wgns("status", NS, "--json").stdout)["namespaces"][0]
    assert status["ipv6"] == "tunnelled"


def _delete_rule(sandbox: Sandbox, comment: str) -> None:
    listing = sandbox.run(["nft", "-a", "list", "chain", "inet", TABLE, "output"], netns=NS)
    line = next(ln for ln in listing.stdout.splitlines() if comment in ln)
    handle = line.rsplit("# handle ", 1)[1].strip()
    sandbox.run(["nft", "delete", "rule", "inet", TABLE, "output", "handle", handle], netns=NS)


def _resolv(sandbox: Sandbox, text: str) -> None:
    sandbox.write_file(f"/etc/netns/{NS}/resolv.conf", text)


def _daemon_pid(wgns: Any) -> int:
    doc = json.loads(wgns("status", NS, "--json").stdout)
    return int(doc["namespaces"][0]["interfaces"][0]["daemon"]["pid"])


PERMISSIVE = f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
    chain output {{ type filter hook output priority filter; policy accept; }}
}}
"""

# name -> (how to break it, the checks that must FAIL, words the evidence must show)
BREAKAGES: dict[str, tuple[Any, set[str], str]] = {
    "table deleted": (
        lambda sb, wgns: sb.run(["nft", "delete", "table", "inet", TABLE], netns=NS),
        {"killswitch", "ipv6"},
        f"table inet {TABLE} is missing",
    ),
    "table replaced by a permissive one": (
        lambda sb, wgns: sb.run(["nft", "-f", "-"], netns=NS, input=PERMISSIVE),
        {"killswitch", "ipv6"},
        "-type filter hook output priority filter; policy drop;",
    ),
    "catch-all rule deleted": (
        lambda sb, wgns: _delete_rule(sb, "not through the tunnel"),
        {"killswitch"},
        '-counter goto refuse comment "wgns kill switch: not through the tunnel"',
    ),
    "rule added": (
        lambda sb, wgns: sb.run(
            ["nft", "insert", "rule", "inet", TABLE, "output", "accept"], netns=NS
        ),
        {"killswitch", "ipv6"},
        "+accept",
    ),
    "netdev table added": (
        lambda sb, wgns: sb.run(["nft", "add", "table", "netdev", "sneaky"], netns=NS),
        {"killswitch"},
        "foreign tables can redirect packets: netdev sneaky",
    ),
    "extra interface added": (
        lambda sb, wgns: sb.run(
            ["ip", "link", "add", "extra0", "type", "veth", "peer", "extra1"], netns=NS
        ),
        {"interfaces"},
        "unexpected: extra0 (veth), extra1 (veth)",
    ),
    "interface moved in from the host": (
        lambda sb, wgns: sb.run(
            ["ip", "link", "add", "hostside", "type", "veth", "peer", "intruder", "netns", NS]
        ),
        {"interfaces"},
        "unexpected: intruder (veth)",
    ),
    "route added": (
        lambda sb, wgns: sb.run(["ip", "route", "add", "198.18.0.0/24", "dev", "lo"], netns=NS),
        {"routes"},
        "198.18.0.0/24 dev lo (leaves through lo)",
    ),
    "route added in another table": (
        lambda sb, wgns: sb.run(
            ["ip", "route", "add", "default", "dev", "lo", "table", "7"], netns=NS
        ),
        {"routes"},
        "default dev lo table 7 (leaves through lo)",
    ),
    "resolv.conf edited": (
        lambda sb, wgns: _resolv(sb, "nameserver 198.18.0.1\n"),
        {"dns"},
        "was edited: nameservers 198.18.0.1, expected 198.19.0.1",
    ),
    "resolv.conf gained the host's resolver": (
        lambda sb, wgns: _resolv(sb, "nameserver 198.19.0.1\nnameserver 198.18.0.1\n"),
        {"dns"},
        "nameservers 198.19.0.1, 198.18.0.1, expected 198.19.0.1",
    ),
    "resolv.conf removed": (
        lambda sb, wgns: sb.path(f"/etc/netns/{NS}/resolv.conf").unlink(),
        {"dns"},
        "No such file or directory",
    ),
    "wg interface deleted": (
        lambda sb, wgns: sb.run(["ip", "link", "del", WG], netns=NS),
        {"interfaces", "routes", "handshake", "dns"},
        f"missing: {WG}",
    ),
    "daemon killed": (
        lambda sb, wgns: sb.run(["kill", "-9", str(_daemon_pid(wgns))]),
        {"interfaces", "routes", "handshake", "dns"},
        f"missing: {WG}",
    ),
    "wg interface down": (
        lambda sb, wgns: sb.run(["ip", "link", "set", WG, "down"], netns=NS),
        {"interfaces", "routes", "dns"},
        f"{WG} is down",
    ),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_each_broken_setup_fails_the_right_line(
    case: str, sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    breaker, must_fail, words = BREAKAGES[case]
    up(sandbox, provider, wgns, ipv6=False)
    rc, doc = run_check(wgns)
    assert rc == 0, doc
    breaker(sandbox, wgns)
    rc, doc = run_check(wgns, timeout="1")
    assert rc == 1
    assert failing(doc) == must_fail, doc
    shown = " | ".join(evidence(doc, n) for n in must_fail)
    assert words in shown, shown
    # the text form says FAIL on the same lines
    text = wgns("check", NS, "--timeout", "1", check=False).stdout.splitlines()
    assert {ln.split(":", 1)[0].split()[1] for ln in text if ln.startswith("FAIL ")} == must_fail
    assert text[-1].startswith(f"{NS}: NOT SAFE")
    # and `down` still removes everything
    wgns("down", NS)
    assert NS not in sandbox.netns_names()
    # A veth end moved into NS takes its peer along when the kernel destroys NS, which it does
    # after `down` returns (as after `ip netns del`): the peer may be gone already, or soon.
    sandbox.run(["ip", "link", "del", "hostside"], check=False)
    deadline = time.monotonic() + 5
    while "hostside" in sandbox.run(["ip", "-br", "link"]).stdout:
        assert time.monotonic() < deadline, "hostside outlived its namespace"
        time.sleep(0.02)


def test_unreachable_peer_fails_handshake_and_dns(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    # the ISP drops everything to the endpoint before the first handshake
    provider.cut_endpoint()
    up(sandbox, provider, wgns, ipv6=False)
    rc, doc = run_check(wgns, timeout="1")
    assert rc == 1
    assert failing(doc) == {"handshake", "dns"}
    assert "last handshake never" in evidence(doc, "handshake")
    assert "198.19.0.1 via " + WG + ": no answer in 1s" in evidence(doc, "dns")


def test_kill_switch_off_fails_loudly(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    conf = f"{SANDBOX_TMP}/inner.conf"
    sandbox.write_file(conf, provider.client_conf(ipv6=False), mode=0o600)
    toml = f"{SANDBOX_TMP}/open.toml"
    sandbox.write_file(
        toml,
        f'name = "{NS}"\nkill_switch = false\n\n[[interface]]\nname = "vpn"\nconfig = "{conf}"\n',
    )
    out = wgns("up", toml)
    assert "WARNING: kill switch disabled" in out.stderr
    assert "kill switch OFF, IPv6 open" in wgns("status", NS).stdout
    rc, doc = run_check(wgns)
    assert rc == 1
    assert failing(doc) == {"killswitch", "ipv6"}
    assert "disabled in the profile" in evidence(doc, "killswitch")
    assert "neither tunnelled nor blocked" in evidence(doc, "ipv6")


def test_exit_check_fails_when_the_address_is_the_same(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """A split tunnel that does not cover the echo server: the exit address is the host's."""
    up(sandbox, provider, wgns, ipv6=False, allowed_ips=("198.19.0.0/24",))
    rc, doc = run_check(wgns, "--echo-url", f"http://{provider.web_v4}/", timeout="1")
    assert rc == 1
    assert "exit" in failing(doc)
    # from inside the echo server is unreachable: the kill switch refuses the direct path
    assert "from inside" in evidence(doc, "exit")


def test_forward_veth_is_declared_not_a_failure(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    up(sandbox, provider, wgns, ipv6=False)
    env = {"WGNS_FORWARD_POOL": "198.18.64.0/24"}
    wgns("forward", "add", NS, "8080", env=env)
    _, vn = names.veth_ifnames(NS)
    rc, doc = run_check(wgns)
    assert rc == 0, doc
    assert f"{vn} (veth)" in evidence(doc, "interfaces")
    assert f"dev {vn}" in evidence(doc, "routes")
    # the table now has the forward's opening, and check expects exactly that
    live = sandbox.run(["nft", "list", "table", "inet", TABLE], netns=NS).stdout
    assert f'iifname "{vn}"' in live
    # an opening widened by hand is seen
    sandbox.run(
        ["nft", "insert", "rule", "inet", TABLE, "output", "oifname", vn, "accept"], netns=NS
    )
    rc, doc = run_check(wgns)
    assert failing(doc) == {"killswitch"}
    assert f'+oifname "{vn}" accept' in evidence(doc, "killswitch")


def test_unmanaged_namespace_is_an_error(sandbox: Sandbox, wgns: Any) -> None:
    proc = wgns("check", "nothere", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "wgns: nothere is not managed by wgns (see `wgns status` for the list)"
    )
    proc = wgns("check", "../etc", check=False)
    assert proc.returncode == 2
    proc = wgns("check", "nothere", "--timeout", "0", check=False)
    assert proc.returncode == 2
    assert "--timeout must be a positive number" in proc.stderr
