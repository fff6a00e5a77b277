"""wgns.profile.load: checks across keys. A DNS server no peer's AllowedIPs covers is refused
with the kill switch on (its queries could go nowhere) and warned about with it off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wgns.errors import EXIT_USAGE, ConfigError
from wgns.profile.load import load_profile
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox

PRIV = "YDw4916Jl80PEEcRL378XR/Ze6WtldDnATf7kaBvQGE="
PUB = "qMYq+I30blCSB24UgVepCoTiu2ChJNyPkTxk6YKCcRE="
PUB2 = "9ZjiN54xhFy0899RmHwnyvP5w8a+sISQlRlkmCV/4HM="
FIX = "add it to AllowedIPs or use a server inside the tunnel"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def conf(dns: str, allowed: str, address: str = "198.18.0.2/32, 2001:db8::2/128") -> str:
    return (
        "[Interface]\n"
        f"PrivateKey = {PRIV}\n"
        f"Address = {address}\n"
        f"DNS = {dns}\n"  # line 4
        "\n"
        "[Peer]\n"
        f"PublicKey = {PUB}\n"
        f"AllowedIPs = {allowed}\n"
        "Endpoint = 198.18.5.1:51820\n"
    )


def toml(dns: str, allowed: str, kill_switch: str = "") -> str:
    return (
        f"{kill_switch}\n"
        f"dns = {dns}\n"  # line 2
        "\n"
        "[[interface]]\n"
        f'private_key = "{PRIV}"\n'
        'address = ["198.18.0.2/32", "2001:db8::2/128"]\n'
        "[[interface.peer]]\n"
        f'public_key = "{PUB}"\n'
        f"allowed_ips = {allowed}\n"
    )


def refused(path: Path, line: int, key: str, server: str, where: Path | None = None) -> ConfigError:
    """Loading PATH fails naming WHERE (default PATH), LINE and KEY, and the server."""
    where = path if where is None else where
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    err = info.value
    text = str(err)
    assert err.exit_code == EXIT_USAGE
    assert (err.path, err.line, err.key) == (str(where), line, key)
    assert text.startswith(f"{where}:{line}: {key}: {server} is not inside any peer's AllowedIPs")
    assert "kill switch" in text and FIX in text and "\n" not in text
    assert PRIV not in text
    return err


@pytest.mark.parametrize(
    ("dns", "allowed", "server"),
    [
        ("192.0.2.53", "198.18.0.0/16, 2001:db8::/32", "192.0.2.53"),
        ("2001:db9::53", "198.18.0.0/16, 2001:db8::/32", "2001:db9::53"),
        # covered in one family only: the other server is still refused
        ("198.18.0.53, 2001:db9::53", "198.18.0.0/16, 2001:db8::/32", "2001:db9::53"),
        ("2001:db8::53, 192.0.2.53", "198.18.0.0/16, ::/0", "192.0.2.53"),
        # an IPv4 range never covers an IPv6 server, nor the other way round
        ("2001:db8::53", "0.0.0.0/0", "2001:db8::53"),
        ("198.18.0.53", "::/0", "198.18.0.53"),
    ],
)
def test_conf_dns_outside_allowed_ips_is_refused(
    tmp_path: Path, dns: str, allowed: str, server: str
) -> None:
    refused(write(tmp_path / "vpn.conf", conf(dns, allowed)), 4, "DNS", server)


def test_conf_dns_names_the_line_it_is_on(tmp_path: Path) -> None:
    text = conf("198.18.0.53", "198.18.0.0/16, 2001:db8::/32").replace(
        "[Peer]\n", "DNS = example.test, 2001:db9::53\n[Peer]\n"
    )
    refused(write(tmp_path / "vpn.conf", text), 6, "DNS", "2001:db9::53")


@pytest.mark.parametrize(
    ("dns", "allowed", "server"),
    [
        ('["192.0.2.53"]', '["198.18.0.0/16", "::/0"]', "192.0.2.53"),
        ('"2001:db9::53"', '["0.0.0.0/0", "2001:db8::/32"]', "2001:db9::53"),
    ],
)
def test_toml_dns_outside_allowed_ips_is_refused(
    tmp_path: Path, dns: str, allowed: str, server: str
) -> None:
    refused(write(tmp_path / "vpn.toml", toml(dns, allowed)), 2, "dns", server)


def test_toml_dns_of_a_named_conf_points_into_that_conf(tmp_path: Path) -> None:
    named = write(tmp_path / "a.conf", conf("2001:db9::53", "0.0.0.0/0, 2001:db8::/32"))
    profile = write(tmp_path / "vpn.toml", '[[interface]]\nconfig = "a.conf"\n')
    refused(profile, 4, "DNS", "2001:db9::53", where=named)


def test_any_interfaces_peer_may_cover_the_server(tmp_path: Path) -> None:
    """The kill switch lets queries out through every wg interface: one that routes it is enough."""
    write(tmp_path / "a.conf", conf("192.0.2.53, 2001:db9::53", "198.18.0.0/16"))
    second = conf("198.18.0.1", "192.0.2.0/24, 2001:db9::/32", "198.18.9.2/32")
    write(tmp_path / "b.conf", second.replace(PUB, PUB2))
    text = '[[interface]]\nconfig = "a.conf"\n[[interface]]\nname = "b"\nconfig = "b.conf"\n'
    profile = load_profile(str(write(tmp_path / "vpn.toml", text)))
    assert [str(d) for d in profile.dns] == ["192.0.2.53", "2001:db9::53", "198.18.0.1"]


@pytest.mark.parametrize(
    ("dns", "allowed"),
    [
        ("198.18.0.53, 2001:db8::53", "198.18.0.0/24, 2001:db8::/64"),  # inside AllowedIPs
        ("127.0.0.1, ::1", "198.18.5.0/24"),  # a resolver on the namespace's loopback
        ("198.18.0.2, 2001:db8::2", "198.18.5.0/24"),  # on the namespace's own tunnel address
    ],
)
def test_servers_the_tunnel_reaches_are_accepted(
    tmp_path: Path, dns: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = conf(dns, allowed)
    profile = load_profile(str(write(tmp_path / "vpn.conf", text)))
    assert [str(d) for d in profile.dns] == dns.split(", ")
    assert capsys.readouterr().err == ""


def test_kill_switch_off_warns_and_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "vpn.toml",
        toml('["192.0.2.53", "2001:db9::53"]', '["198.18.0.0/16"]', "kill_switch = false"),
    )
    profile = load_profile(str(path))
    assert not profile.kill_switch
    assert [str(d) for d in profile.dns] == ["192.0.2.53", "2001:db9::53"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    for warning, server in zip(warnings, ["192.0.2.53", "2001:db9::53"], strict=True):
        assert warning.startswith(
            f"wgns: {path}:2: dns: {server} is not inside any peer's AllowedIPs"
        )
        assert "kill_switch = false" in warning


def test_up_refuses_it_with_exit_2_and_changes_nothing(sandbox: Sandbox, wgns: Any) -> None:
    path = f"{SANDBOX_TMP}/vpn.conf"
    sandbox.write_file(path, conf("192.0.2.53", "198.18.0.0/16, 2001:db8::/32"), mode=0o600)
    before = sandbox.settled_snapshot()
    proc = wgns("up", path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"wgns: {path}:4: DNS: 192.0.2.53 is not inside any peer's AllowedIPs: with the kill "
        f"switch on, queries to it go nowhere ({FIX})"
    ]
    assert before == sandbox.snapshot()
