"""`wgns up --reload`: every change it can apply is applied (and checked on the system), the
rest is refused by name with nothing changed, and `down` afterwards is still exact."""

from __future__ import annotations

import json
from typing import Any

from tests.lifecycle.test_lifecycle import NS, assert_same, curl, ifname_of, status, write_profile
from wgns.system import names
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider


def routes(sandbox: Sandbox, family: str) -> list[str]:
    out = json.loads(sandbox.run(["ip", "-n", NS, "-j", family, "route"]).stdout)
    return sorted(r["dst"] for r in out if not r["dst"].startswith("fe80"))


def dig(sandbox: Sandbox, server: str) -> list[str]:
    argv = ["dig", "+short", "+time=2", "+tries=1", f"@{server}", "whoami.test", "A"]
    proc = sandbox.run(argv, netns=NS, check=False)
    return proc.stdout.split() if proc.returncode == 0 else []


def reload(sandbox: Sandbox, wgns: Any, conf: str, **kw: Any) -> Any:
    path = write_profile(sandbox, conf)
    return wgns("up", path, "--name", NS, "--reload", **kw)


def test_widening_allowed_ips_adds_routes_that_carry_traffic_and_narrowing_removes_them(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    before = sandbox.settled_snapshot()
    split = provider.client_conf(client, allowed_ips=("198.18.2.0/24",), dns=False, ipv6=False)
    wgns("up", write_profile(sandbox, split), "--name", NS)
    assert routes(sandbox, "-4") == ["198.18.2.0/24"]
    assert dig(sandbox, provider.dns_v4) == []  # not routed: no answer
    pid = status(wgns)["interfaces"][0]["daemon"]["pid"]

    wider = provider.client_conf(
        client, allowed_ips=("198.18.2.0/24", "198.19.0.0/24"), dns=False, ipv6=False
    )
    out = reload(sandbox, wgns, wider)
    assert "reloaded" in out.stderr and "+198.19.0.0/24" in out.stderr
    assert routes(sandbox, "-4") == ["198.18.2.0/24", "198.19.0.0/24"]
    assert dig(sandbox, provider.dns_v4) == [provider.web_v4]  # through the widened range
    assert status(wgns)["interfaces"][0]["daemon"]["pid"] == pid  # the same tunnel

    full = provider.client_conf(client, dns=False)
    out = reload(sandbox, wgns, full)
    assert "+0.0.0.0/0" in out.stderr
    assert "default" in routes(sandbox, "-4") and "default" in routes(sandbox, "-6")
    assert curl(sandbox, f"http://[{provider.web_v6}]/", ipv6=True) == "2001:db8:1::2"

    out = reload(sandbox, wgns, split)  # narrowed: the default routes go too
    assert "-0.0.0.0/0" in out.stderr
    assert routes(sandbox, "-4") == ["198.18.2.0/24"]
    assert "default" not in routes(sandbox, "-6")
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def test_dns_mtu_and_kill_switch_changes_apply_and_down_stays_exact(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    before = sandbox.settled_snapshot()
    wgns("up", write_profile(sandbox, provider.client_conf(client, mtu=1280)), "--name", NS)
    wg_if = ifname_of(wgns)
    table = names.nft_table(NS)
    resolv = f"/etc/netns/{NS}/resolv.conf"
    assert provider.dns_v4 in sandbox.read_text(resolv)

    def mtu() -> int:
        link = json.loads(sandbox.run(["ip", "-n", NS, "-j", "link", "show", wg_if]).stdout)
        return int(link[0]["mtu"])

    def tables() -> str:
        return sandbox.run(["nft", "list", "tables"], netns=NS).stdout

    assert mtu() == 1280 and table in tables()
    conf = provider.client_conf(client, mtu=1300).replace(
        f"DNS = {provider.dns_v4}, {provider.dns_v6}", f"DNS = {provider.dns_v4}"
    )
    out = reload(sandbox, wgns, conf)
    assert "mtu 1280 -> 1300" in out.stderr and "resolv.conf" in out.stderr
    assert mtu() == 1300
    assert provider.dns_v6 not in sandbox.read_text(resolv)

    no_ks = write_profile(
        sandbox,
        f'name = "{NS}"\nkill_switch = false\n[[interface]]\nname = "vpn"\nconfig = "vpn.conf"\n',
        "noks.toml",
    )
    out = wgns("up", no_ks, "--reload")
    assert "kill switch removed" in out.stderr
    assert table not in tables()
    assert status(wgns)["kill_switch"] is False
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"

    ks = write_profile(
        sandbox, f'name = "{NS}"\n[[interface]]\nname = "vpn"\nconfig = "vpn.conf"\n', "ks.toml"
    )
    out = wgns("up", ks, "--reload")
    assert "kill switch added" in out.stderr
    assert table in tables()
    assert status(wgns)["kill_switch"] is True
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    check = wgns("check", NS, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def test_what_reload_cannot_apply_is_refused_by_name_and_nothing_changes(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    client = provider.new_client()
    write_profile(sandbox, provider.client_conf(client), "vpn-wg.conf")
    write_profile(sandbox, provider.client_conf(provider.new_client()), "second.conf")
    one = write_profile(
        sandbox, f'name = "{NS}"\n[[interface]]\nconfig = "vpn-wg.conf"\n', "one.toml"
    )
    wgns("up", one)
    settled = sandbox.settled_snapshot()
    record = sandbox.read_text(f"/run/wgns/{NS}.json")
    sandbox.run(["ip", "netns", "add", "elsewhere"])
    try:
        cases = {
            "interfaces": f'name = "{NS}"\n[[interface]]\nconfig = "vpn-wg.conf"\n'
            '[[interface]]\nconfig = "second.conf"\n',
            "birthplace": f'name = "{NS}"\nbirthplace = "elsewhere"\n'
            '[[interface]]\nconfig = "vpn-wg.conf"\n',
        }
        for what, text in cases.items():
            proc = wgns("up", write_profile(sandbox, text, f"{what}.toml"), "--reload", check=False)
            assert proc.returncode == 1, proc.stderr
            assert what in proc.stderr and "nothing was changed" in proc.stderr
            assert "reloaded" not in proc.stderr
            assert sandbox.read_text(f"/run/wgns/{NS}.json") == record
    finally:
        sandbox.run(["ip", "netns", "del", "elsewhere"])
    assert_same(settled, sandbox.snapshot())
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
