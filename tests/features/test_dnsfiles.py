"""wgns.features.dns: what /etc/netns/NS/{resolv.conf,hosts,nsswitch.conf} say (pure functions)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from wgns.features.dns import HOSTS_LINE, dns_files, hosts_file, nsswitch_conf, resolv_conf

DEBIAN_NSSWITCH = """\
# /etc/nsswitch.conf
passwd:         files systemd
group:          files systemd
shadow:         files
gshadow:        files

hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] myhostname dns
networks:       files

protocols:      db files
services:       db files
netgroup:       nis
"""


def _directives(text: str) -> list[list[str]]:
    return [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_resolv_conf_has_the_tunnel_servers_and_search_domains_only() -> None:
    text = resolv_conf(
        [ip_address("198.19.0.1"), ip_address("2001:db8:ff::1")], ["corp.example", "lan."], "vpn"
    )
    assert _directives(text) == [
        ["nameserver", "198.19.0.1"],
        ["nameserver", "2001:db8:ff::1"],
        ["search", "corp.example", "lan."],
    ]


def test_resolv_conf_without_dns_points_at_the_namespaces_own_loopback() -> None:
    # glibc would also fall back to 127.0.0.1 for a file without nameserver lines; saying it
    # makes the behaviour explicit and the same for every resolver (musl, Go, c-ares, dig)
    text = resolv_conf([], [], "vpn")
    assert _directives(text) == [["nameserver", "127.0.0.1"]]
    assert "no DNS server" in text


def test_resolv_conf_notes_servers_beyond_the_third() -> None:
    servers = [ip_address(f"198.19.0.{i}") for i in range(1, 5)]
    text = resolv_conf(servers, [], "vpn")
    assert [d for d in _directives(text) if d[0] == "nameserver"] == [
        ["nameserver", str(s)] for s in servers
    ]
    assert "first 3" in text


@pytest.mark.parametrize("bad", ["", "a b", "evil\nnameserver 198.18.0.1", "x#y", "a..b", "-x"])
def test_resolv_conf_refuses_search_domains_that_could_inject_lines(bad: str) -> None:
    with pytest.raises(ValueError):
        resolv_conf([ip_address("198.19.0.1")], [bad], "vpn")


def test_hosts_has_localhost_and_the_host_name() -> None:
    text = hosts_file("vpn", "box.example.org")
    d = _directives(text)
    assert ["127.0.0.1", "localhost"] in d
    assert ["127.0.1.1", "box.example.org", "box"] in d
    assert ["::1", "localhost", "ip6-localhost", "ip6-loopback"] in d


@pytest.mark.parametrize("name", ["", "localhost", "bad name", "-x"])
def test_hosts_skips_unusable_host_names(name: str) -> None:
    assert not any(d[0] == "127.0.1.1" for d in _directives(hosts_file("vpn", name)))


def test_nsswitch_keeps_the_host_file_but_limits_hosts_to_files_and_dns() -> None:
    text = nsswitch_conf(DEBIAN_NSSWITCH, "vpn")
    d = _directives(text)
    assert ["hosts:", "files", "dns"] in d
    assert [x for x in d if x[0] == "hosts:"] == [["hosts:", "files", "dns"]]
    # everything else is the host's, in the host's order
    others = [x for x in d if x[0] != "hosts:"]
    assert others == [x for x in _directives(DEBIAN_NSSWITCH) if x[0] != "hosts:"]
    words = {w for x in d for w in x}
    for bypass in ("resolve", "mdns4_minimal", "myhostname", "[NOTFOUND=return]"):
        assert bypass not in words


def test_nsswitch_replaces_every_hosts_line_whatever_its_spelling() -> None:
    host = "HOSTS: files nis\n  hosts :mdns\nhosts:files wins\npasswd: files\n"
    d = _directives(nsswitch_conf(host, "vpn"))
    assert d == [["hosts:", "files", "dns"], ["passwd:", "files"]]


def test_nsswitch_without_a_hosts_line_gets_one() -> None:
    d = _directives(nsswitch_conf("passwd: files\n", "vpn"))
    assert d == [["passwd:", "files"], HOSTS_LINE.split()]


def test_nsswitch_for_a_host_without_the_file_uses_files_and_dns() -> None:
    d = _directives(nsswitch_conf(None, "vpn"))
    assert ["hosts:", "files", "dns"] in d
    assert ["passwd:", "files"] in d


def test_dns_files_returns_the_three_files() -> None:
    files = dns_files(
        [ip_address("198.19.0.1")], [], "vpn", host_nsswitch=DEBIAN_NSSWITCH, hostname="box"
    )
    assert sorted(files) == ["hosts", "nsswitch.conf", "resolv.conf"]
    assert "nameserver 198.19.0.1" in files["resolv.conf"]
    assert "127.0.1.1\tbox" in files["hosts"]
    assert ["hosts:", "files", "dns"] in _directives(files["nsswitch.conf"])
    assert all(v.endswith("\n") for v in files.values())


def test_dns_files_reads_the_host_nsswitch_and_name_by_default() -> None:
    # the lead's `wgns up` calls dns_files(profile.dns, profile.dns_search, ns)
    files = dns_files([], [], "vpn")
    assert HOSTS_LINE in files["nsswitch.conf"]
    assert "localhost" in files["hosts"]
