"""nix/module.nix evaluated for real: Debian's nix-instantiate and nixpkgs lib's evalModules,
with tests/integrations/nix/nixos.nix standing in for the NixOS options the module sets.

The example configurations (nix/examples) become the units and profiles asserted here; a
confined service gets exactly the directives `wgns confine` writes (compared with
wgns.integrations.systemd.confine.dropin_text); the units pass `systemd-analyze verify` with the
wgns@.service template wgns renders (the one the package ships); the profiles written are read
back by wgns's own TOML parser; wrong options are refused with NixOS's messages.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.nixeval import (
    HARNESS,
    REPO,
    doc_blocks,
    evaluate,
    evaluate_configs,
    instantiate,
    needs_nix,
    refusal,
    require_lib,
)
from tests.integrations.unitfiles import needs_analyze, sections, verify
from wgns.integrations.systemd import confine, units
from wgns.profile import toml
from wgns.profile.toml import parse_toml
from wgns.profile.values import Invalid, parse_unit_name
from wgns.system import netns

EXAMPLES = REPO / "nix" / "examples"
# 128 characters, the most wgns accepts, with every character it allows
LONG = "vpn.provider_eu-west@" + "x" * 100 + "-012345"
assert len(LONG) == 128
KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="

PLAIN = f"""
{{
  services.wgns.enable = true;
  services.wgns.namespaces."{LONG}" = {{
    profile = "/var/lib/wgns/long.conf";
    confine = [ "plain.service" ];
  }};
  # a unit from a package, not from a NixOS module: NixOS writes a drop-in for it
  systemd.services.plain.overrideStrategy = "asDropin";
}}
"""


def _nix_files() -> list[Path]:
    skip = {".git", ".venv", "node_modules"}
    return sorted(
        p for p in REPO.rglob("*.nix") if not skip.intersection(p.relative_to(REPO).parts)
    )


@needs_nix
def test_every_nix_file_parses() -> None:
    files = _nix_files()
    assert {"default.nix", "flake.nix", "package.nix", "module.nix"} <= {p.name for p in files}
    for path in files:
        r = instantiate("--parse", str(path))
        assert r.returncode == 0, f"{path}: {r.stderr}"


@needs_nix
def test_the_nix_in_docs_parses(tmp_path: Path) -> None:
    """docs/nixos.md's ```nix blocks: each an expression, or bindings of a NixOS module."""
    blocks = doc_blocks()
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"block{i}.nix"
        path.write_text(block)
        if instantiate("--parse", str(path)).returncode != 0:
            path.write_text("{\n" + block + "}\n")
            r = instantiate("--parse", str(path))
            assert r.returncode == 0, f"docs/nixos.md block {i + 1}: {r.stderr}\n{block}"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The examples, PLAIN and docs/nixos.md's setups (docs0.nix, ...), in one evaluation."""
    require_lib()
    tmp = tmp_path_factory.mktemp("nix")
    plain = tmp / "plain.nix"
    plain.write_text(PLAIN)
    docs = []
    for block in doc_blocks():
        if block.startswith("services.wgns.enable = true;"):
            docs.append(tmp / f"docs{len(docs)}.nix")
            docs[-1].write_text("{\n" + block + "}\n")
    return evaluate_configs(EXAMPLES / "media.nix", EXAMPLES / "mullvad.nix", plain, *docs)


def test_the_setups_in_the_docs_are_the_examples(rendered: dict[str, Any]) -> None:
    """docs/nixos.md's setups evaluate, to the namespaces and confinements of nix/examples."""
    for doc, example in (("docs0.nix", "media.nix"), ("docs1.nix", "mullvad.nix")):
        got, want = rendered[doc], rendered[example]
        assert set(got["etc"]) == set(want["etc"])
        assert {u for u in got["units"] if "@" in u} == {u for u in want["units"] if "@" in u}
        for unit, text in want["units"].items():
            if "NetworkNamespacePath=" in text:
                ns = text.partition("NetworkNamespacePath=/run/netns/")[2].split()[0]
                # the docs leave the services' own settings out: only the confinement is there
                assert _sections(got["units"][unit]) == _sections(confine.dropin_text(unit, ns))


def _sections(text: str) -> dict[str, list[str]]:
    """unitfiles.sections, each section's lines sorted (the module orders them its own way)."""
    return {k: sorted(v) for k, v in sections(text).items()}


def test_each_namespace_is_an_enabled_instance_of_the_packaged_template(
    rendered: dict[str, Any],
) -> None:
    for config, ns in (("media.nix", "media"), ("mullvad.nix", "mullvad"), ("plain.nix", LONG)):
        result = rendered[config]
        assert result["packages"] == ["wgns-0.1.0"]  # the template comes from the package
        assert result["wantedBy"][f"wgns@{ns}"] == ["multi-user.target"]
        assert f"wgns@{ns}.service.d/overrides.conf" in result["units"]
        assert not any(name.startswith("wgns@") for name in result["units"] if "/" not in name)


def test_a_confined_service_gets_the_directives_wgns_confine_writes(
    rendered: dict[str, Any],
) -> None:
    """The one source of truth for the drop-in: the module's directives are dropin_text's."""
    unit = rendered["plain.nix"]["units"]["plain.service.d/overrides.conf"]
    assert _sections(unit) == _sections(confine.dropin_text("plain.service", LONG))
    media = rendered["media.nix"]["units"]
    expected = _sections(confine.dropin_text("transmission.service", "media"))
    got = _sections(media["transmission.service"])
    for section, lines in expected.items():
        assert set(lines) <= set(got[section]), section


def test_a_confined_service_keeps_its_own_settings(rendered: dict[str, Any]) -> None:
    sonarr = _sections(rendered["media.nix"]["units"]["sonarr.service"])
    assert "After=wgns@media.service network.target" in sonarr["[Unit]"]
    assert "ExecStart=/bin/sleep infinity" in sonarr["[Service]"]
    assert "InaccessiblePaths=-/srv/private" in sonarr["[Service]"]
    assert "NetworkNamespacePath=/run/netns/media" in sonarr["[Service]"]
    qbit = _sections(rendered["mullvad.nix"]["units"]["qbittorrent.service"])
    assert "NetworkNamespacePath=/run/netns/mullvad" in qbit["[Service]"]
    assert "BindReadOnlyPaths=/run/wgns/view/mullvad/etc:/etc" in qbit["[Service]"]
    assert rendered["mullvad.nix"]["wantedBy"]["qbittorrent"] == ["multi-user.target"]


def test_a_profile_file_is_linked_where_it_is(rendered: dict[str, Any]) -> None:
    etc = rendered["plain.nix"]["etc"]
    assert etc == {f"wgns/{LONG}.conf": {"source": "/var/lib/wgns/long.conf", "text": None}}


def _profile(rendered: dict[str, Any], config: str, ns: str, tmp_path: Path) -> str:
    """The TOML profile the module writes for NS, with /var/lib/wgns/ moved to TMP_PATH."""
    entry = rendered[config]["etc"][f"wgns/{ns}.toml"]
    assert entry["source"] is None
    text: str = entry["text"]
    assert "private_key =" not in text and "preshared_key =" not in text  # no secret in the store
    return text.replace("/var/lib/wgns/", f"{tmp_path}/")


def _secret(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_the_media_profile_is_read_by_wgns(rendered: dict[str, Any], tmp_path: Path) -> None:
    _secret(tmp_path / "media.key", KEY + "\n")
    profile = parse_toml(
        _profile(rendered, "media.nix", "media", tmp_path), path=tmp_path / "media.toml"
    )
    assert profile.name == "media"
    (wg0,) = profile.interfaces
    assert (wg0.name, wg0.mtu) == ("wg0", 1380)
    assert [str(a) for a in wg0.addresses] == ["10.100.0.2/32", "fd00:100::2/128"]
    (peer,) = wg0.peers
    assert peer.persistent_keepalive == 25
    assert [str(d) for d in profile.dns] == ["10.100.0.1"]
    assert profile.kill_switch is True


def test_the_mullvad_profile_is_read_by_wgns(rendered: dict[str, Any], tmp_path: Path) -> None:
    _secret(
        tmp_path / "mullvad-se.conf",
        f"[Interface]\nPrivateKey = {KEY}\nAddress = 10.64.0.2/32\nDNS = 10.64.0.1\n\n"
        "[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 198.18.0.1:51820\n",
    )
    profile = parse_toml(
        _profile(rendered, "mullvad.nix", "mullvad", tmp_path), path=tmp_path / "mullvad.toml"
    )
    assert [str(d) for d in profile.dns] == ["10.64.0.1"]  # the resolv.conf the service sees
    (fwd,) = profile.forwards
    assert (fwd.host_port, fwd.ns_port, fwd.proto.value) == (9000, 9000, "tcp")
    assert {str(n) for n in fwd.sources} == {
        "127.0.0.0/8",
        "::1/128",
        "100.64.0.0/10",
        "fd7a:115c:a1e0::/48",
    }


@needs_analyze
def test_the_units_pass_systemd_analyze_verify(rendered: dict[str, Any], tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    launcher = tmp_path / "bin" / "wgns"
    launcher.parent.mkdir()
    launcher.write_text("#!/bin/sh\nexit 0\n")
    launcher.chmod(0o755)
    unit_dir.mkdir()
    # what the package ships: the template as wgns renders it (nix/package.nix postInstall)
    template = units.render(units.TEMPLATES / units.UNIT_TEMPLATE, str(launcher))
    (unit_dir / "wgns@.service").write_text(template)
    # the packaged unit that plain.nix confines with a drop-in
    (unit_dir / "plain.service").write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    checked = []
    for result in (rendered[c] for c in ("media.nix", "mullvad.nix", "plain.nix")):
        for name, text in result["units"].items():
            path = unit_dir / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            checked.append(name.partition(".service")[0] + ".service")
    assert len(checked) == 7
    for unit in checked:
        r = verify(unit_dir, unit)
        assert (r.returncode, r.stdout + r.stderr) == (0, ""), unit


NAMES = [
    "media",
    "a",
    LONG,
    LONG + "x",
    "_x",
    "0",
    "a.b+c=d@e-f",
    "",
    ".",
    "..",
    ".hidden",
    "-x",
    "@x",
    "a/b",
    "a b",
    "a\nb",
    "é",
    "a:b",
]


@needs_nix
def test_names_are_what_wgns_accepts() -> None:
    """The module's name check mirrors wgns.system.netns.validate_name, and refuses what
    cannot be a systemd instance name ('+', '=') as `wgns confine` does."""
    out = evaluate(HARNESS / "names.nix", kind="namespace", names=json.dumps(NAMES))
    for item in out:
        name, failed = item["name"], item["failed"]
        invalid = any("invalid namespace name" in m for m in failed)
        assert invalid == (not netns._valid_name(name)), (name, failed)
        unit_refused = any("not allowed in a systemd unit name" in m for m in failed)
        assert unit_refused == ("+" in name or "=" in name), (name, failed)


SERVICES = [
    "web",
    "foo@bar",
    "foo@bar@baz",
    "a:b_c.d-e",
    "a\\x2db",
    "x" * 247,
    "x" * 248,
    "foo@",
    "wgns@media",
    "wgns-physical@home",
    "a b",
    "a/b",
    "é",
    "@x",
    "a@b c",
]


@needs_nix
def test_service_names_are_what_wgns_confine_accepts() -> None:
    """A confined service's name is checked as `wgns confine` checks it (parse_unit_name)."""
    out = evaluate(HARNESS / "names.nix", kind="service", names=json.dumps(SERVICES))
    for item in out:
        name, failed = item["name"], item["failed"]
        try:
            parse_unit_name(f"{name}.service")
            accepted = True
        except Invalid:
            accepted = False
        assert (failed == []) == accepted, (name, failed)


NS = "services.wgns.namespaces"
PROFILE = 'profile = "/var/lib/wgns/m.conf";'
GOOD_IFACE = (
    'interfaces.wg0 = { privateKeyFile = "/var/lib/wgns/k"; address = [ "10.0.0.2/32" ]; };'
)
STORE = "is a Nix path or in the Nix store, which every user can read"
REFUSED = [
    pytest.param(
        f"{NS}.media = {{ killswitch = false; {PROFILE} }};",
        f"The option `{NS}.media.killswitch' does not exist.",
        id="unknown-option",
    ),
    pytest.param(
        f'{NS}.media = {{ killSwitch = "yes"; {PROFILE} }};',
        f"A definition for option `{NS}.media.killSwitch' is not of type `boolean'",
        id="wrong-type",
    ),
    pytest.param(
        f"{NS}.media.profile = ./media.conf;",
        f"Failed assertions: - {NS}.media.profile: ",
        id="path-literal-profile",
    ),
    pytest.param(
        f'{NS}.media.profile = "/nix/store/00000000000000000000000000000000-m.conf";',
        STORE,
        id="store-profile",
    ),
    pytest.param(
        f'{NS}.media.interfaces.wg0 = {{ privateKeyFile = "/nix/store/x-k"; }};',
        f"{NS}.media.interfaces.wg0: /nix/store/x-k {STORE}",
        id="store-key",
    ),
    pytest.param(
        f'{NS}."../etc".{PROFILE}',
        f'{NS}."../etc": invalid namespace name',
        id="invalid-name",
    ),
    pytest.param(
        f'{NS}."a+b".{PROFILE}',
        "'+' and '=' are not allowed in a systemd unit name",
        id="not-a-unit-name",
    ),
    pytest.param(
        f'{NS}."work.conf".{PROFILE}',
        "a name ending in .conf or .toml is read by `wgns up` (wgns@NAME.service) as a file path",
        id="name-like-a-file",
    ),
    pytest.param(
        f'{NS}.media = {{ {PROFILE} confine = [ "cups.socket" ]; }};',
        f'{NS}.media.confine: "cups.socket" is a socket unit: only services can be confined',
        id="confine-a-socket",
    ),
    pytest.param(
        f"{NS}.media = {{ {GOOD_IFACE} {PROFILE} }};",
        "set either profile (a .conf or .toml file) or interfaces, not both nor neither",
        id="profile-and-interfaces",
    ),
    pytest.param(
        f'{NS}.media.interfaces.wg0 = {{ privateKeyFile = "/k"; address = [ "fd00::2/128" ];'
        " mtu = 1000; };",
        f"{NS}.media.interfaces.wg0.mtu: 1000 is below 1280",
        id="ipv6-mtu",
    ),
    pytest.param(
        f'{NS}.media.interfaces.wg0 = {{ privateKeyFile = "/k"; mtu = 70000; }};',
        "is not of type `null or integer between 576 and 65535 (both inclusive)'",
        id="mtu-range",
    ),
    pytest.param(
        f"{NS}.media = {{ {GOOD_IFACE} forwards = [ {{ hostPort = 9000; }}"
        " { hostPort = 9000; } ]; };",
        "two forwards of the same hostPort and proto",
        id="duplicate-forward",
    ),
    pytest.param(
        f'{NS}.media.{GOOD_IFACE} systemd.services.web.wgns.namespace = "meda";',
        f'systemd.services.web.wgns.namespace: "meda" is not a namespace of {NS}',
        id="unknown-namespace",
    ),
    pytest.param(
        f'{NS}.a.{GOOD_IFACE} {NS}.b.{GOOD_IFACE} {NS}.a.confine = [ "web" ];'
        ' systemd.services.web.wgns.namespace = "b";',
        "The option `systemd.services.web.wgns.namespace' has conflicting definition values",
        id="confined-twice",
    ),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_a_wrong_configuration_is_refused(tmp_path: Path, body: str, message: str) -> None:
    require_lib()
    assert message in refusal(tmp_path, f"services.wgns.enable = true; {body}")


def test_a_right_configuration_is_not_refused(tmp_path: Path) -> None:
    """The refusals above are for what they say: the same lines, corrected, evaluate."""
    require_lib()
    config = tmp_path / "good.nix"
    config.write_text(
        f"{{ services.wgns.enable = true; services.wgns.namespaces.media.{GOOD_IFACE}"
        ' systemd.services.web.wgns.namespace = "media"; }'
    )
    result = evaluate_configs(config)["good.nix"]
    assert "web.service" in result["units"]


def test_a_firewall_that_flushes_every_table_is_warned_of(tmp_path: Path) -> None:
    """NixOS's nftables.service flushes the whole ruleset by default: the forwards' tables in
    the host's namespace would go with it."""
    require_lib()
    forward = f"{NS}.media = {{ {GOOD_IFACE} forwards = [ {{ hostPort = 9000; }} ]; }};"
    results = {}
    for name, firewall in (
        ("flush", "networking.nftables.enable = true;"),
        ("noflush", "networking.nftables = { enable = true; flushRuleset = false; };"),
        ("iptables", ""),
    ):
        path = tmp_path / f"{name}.nix"
        path.write_text(f"{{ services.wgns.enable = true; {forward} {firewall} }}")
        results[name] = path
    out = evaluate_configs(*results.values())
    (warning,) = out["flush.nix"]["warnings"]
    assert "networking.nftables.flushRuleset is true" in warning
    assert "wgns@media.service" in warning
    assert out["noflush.nix"]["warnings"] == out["iptables.nix"]["warnings"] == []


FULL = """
{
  services.wgns.enable = true;
  services.wgns.namespaces.full = {
    backend = "userspace";
    birthplace = "outside";
    killSwitch = false;
    dns = [ "10.0.0.1" ];
    dnsSearch = [ "example.test" ];
    allowHost = [ 3128 ];
    interfaces.a = {
      privateKeyFile = "/var/lib/wgns/a.key";
      address = [ "10.0.0.2/32" ];
      listenPort = 51820;
      fwmark = "0x1234";
      mtu = 1420;
      table = "off";
      peers = [ {
        publicKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        presharedKeyFile = "/var/lib/wgns/a.psk";
        allowedIPs = [ "0.0.0.0/0" ];
        endpoint = "198.18.0.1:51820";
        persistentKeepalive = "off";
      } ];
    };
    interfaces.b.config = "/var/lib/wgns/b.conf";
    hooks = [ { when = "post-up"; run = "logger up"; netns = "inside"; } ];
    forwards = [ { hostPort = 8080; nsPort = 80; proto = "udp"; from = [ "10.0.0.0/8" ]; } ];
  };
}
"""


def test_every_profile_key_has_an_option_and_wgns_reads_them_all(tmp_path: Path) -> None:
    """FULL sets every option: the TOML written uses every key of wgns's TOML schema (but the
    inline secrets, `name` and `units`, which the module does otherwise), and wgns's parser
    reads each value back."""
    require_lib()
    config = tmp_path / "full.nix"
    config.write_text(FULL)
    text = _profile(evaluate_configs(config), "full.nix", "full", tmp_path)
    data = tomllib.loads(text)
    ifaces, peers = data["interface"], data["interface"][0]["peer"]
    assert set(data) == set(toml.ROOT_KEYS) - {"name", "units"}
    assert set().union(*ifaces) == set(toml.INTERFACE_KEYS) - {"private_key"}
    assert set().union(*peers) == set(toml.PEER_KEYS) - {"preshared_key"}
    assert set(data["hook"][0]) == set(toml.HOOK_KEYS)
    assert set(data["forward"][0]) == set(toml.FORWARD_KEYS)

    _secret(tmp_path / "a.key", KEY + "\n")
    _secret(tmp_path / "a.psk", KEY + "\n")
    _secret(tmp_path / "b.conf", f"[Interface]\nPrivateKey = {KEY}\nAddress = 10.1.0.2/32\n")
    profile = parse_toml(text, path=tmp_path / "full.toml")
    assert (profile.backend.value, profile.birthplace, profile.kill_switch) == (
        "userspace",
        "outside",
        False,
    )
    assert ([str(d) for d in profile.dns], profile.dns_search) == (["10.0.0.1"], ("example.test",))
    assert profile.allow_host == (3128,)
    a, b = profile.interfaces
    assert (a.name, a.listen_port, a.fwmark, a.mtu, a.table) == ("a", 51820, 0x1234, 1420, "off")
    (peer,) = a.peers
    assert peer.preshared_key is not None and peer.persistent_keepalive == 0
    assert [str(n) for n in b.addresses] == ["10.1.0.2/32"]
    (hook,) = profile.hooks
    assert (hook.when.value, hook.command, hook.where.value) == ("post-up", "logger up", "inside")
    (fwd,) = profile.forwards
    assert (fwd.host_port, fwd.ns_port, fwd.proto.value, fwd.mode.value) == (8080, 80, "udp", "nat")
