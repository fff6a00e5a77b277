"""services.wgns.physical (nix/module.nix) evaluated for real, as tests/integrations/
test_nix_module.py evaluates the namespaces: the laptop of nix/examples/laptop.nix (ethernet and
wifi, the setup with a physical-netns service, a wg0 oneshot and copied wpa_supplicant/dhcpcd
modules) becomes an enabled instance of the wgns-physical@.service wgns renders, whose options
are what `wgns physical up` parses; NixOS's network daemons are left to wgns, whose runtime
drop-in composes with units shaped like NixOS's; the units pass `systemd-analyze verify`;
wrong configurations are refused with NixOS's messages.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.nixeval import REPO, doc_blocks, evaluate_configs, refusal, require_lib
from tests.integrations.unitfiles import needs_analyze, sections, verify
from wgns.cli import build_parser
from wgns.features import physical_units
from wgns.integrations.systemd import units
from wgns.lifecycle.physical import DEFAULT_DEADMAN, DEFAULT_NAME
from wgns.profile.toml import parse_toml

LAPTOP = REPO / "nix" / "examples" / "laptop.nix"
KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PHYS = "services.wgns.physical"

# the profile written from options, physical mode's defaults otherwise
INLINE = f"""
{{
  services.wgns.enable = true;
  {PHYS} = {{
    enable = true;
    interfaces.wg0 = {{
      privateKeyFile = "/var/lib/wgns/phys.key";
      address = [ "10.70.0.2/32" ];
      mtu = 1400;
      peers = [ {{ publicKey = "{PEER}"; allowedIPs = [ "0.0.0.0/0" ];
                   endpoint = "198.18.0.1:51820"; }} ];
    }};
    dns = [ "10.70.0.1" ];
  }};
}}
"""


def _doc_block() -> str:
    """docs/nixos.md's physical-mode setup (the block that enables services.wgns.physical)."""
    (block,) = [b for b in doc_blocks() if PHYS in b]
    return block


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_lib()
    tmp = tmp_path_factory.mktemp("nixphys")
    (tmp / "inline.nix").write_text(INLINE)
    (tmp / "docs.nix").write_text("{\n" + _doc_block() + "}\n")
    return evaluate_configs(LAPTOP, tmp / "inline.nix", tmp / "docs.nix")


def _environment(dropin: str) -> dict[str, str]:
    """The Environment= lines of a drop-in, unquoted as systemd unquotes them."""
    env = {}
    for line in sections(dropin)["[Service]"]:
        key, _, value = line.partition("=")
        if key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
    return env


def _up_args(dropin: str, instance: str, launcher: str = "/usr/local/bin/wgns") -> Any:
    """The arguments wgns parses when the package's unit, with this drop-in, starts INSTANCE:
    its ExecStart= with $WGNS_PHYSICAL_ARGS split at blanks (as systemd splits it) and %i."""
    template = units.render(units.TEMPLATES / units.PHYSICAL_TEMPLATE, launcher)
    (exec_start,) = [line for line in template.splitlines() if line.startswith("ExecStart=")]
    extra = _environment(dropin).get("WGNS_PHYSICAL_ARGS", "").split()
    argv: list[str] = []
    for word in exec_start.removeprefix("ExecStart=").split()[1:]:
        argv += extra if word == "$WGNS_PHYSICAL_ARGS" else [word.replace("%i", instance)]
    return build_parser().parse_args(argv)


def test_the_laptop_is_an_enabled_instance_of_the_packaged_unit(rendered: dict[str, Any]) -> None:
    laptop = rendered["laptop.nix"]
    assert laptop["packages"] == ["wgns-0.1.0"]  # the template comes from the package
    assert laptop["wantedBy"]["wgns-physical@home"] == ["multi-user.target"]
    assert "wgns-physical@home.service.d/overrides.conf" in laptop["units"]
    assert not any(u.startswith("wgns-physical@") and "/" not in u for u in laptop["units"])
    # the profile linked where it is, never copied
    assert laptop["etc"]["wgns/home.conf"] == {"source": "/var/lib/wgns/home.conf", "text": None}
    inline = rendered["inline.nix"]
    assert set(inline["units"]) == {"wgns-physical@physical.service.d/overrides.conf"}


def test_the_options_are_what_wgns_physical_up_parses(rendered: dict[str, Any]) -> None:
    """One source of truth: the drop-in only fills in the template's WGNS_PHYSICAL_ARGS; with
    it the package's ExecStart= is `wgns physical up` of the options given."""
    dropin = rendered["laptop.nix"]["units"]["wgns-physical@home.service.d/overrides.conf"]
    args = _up_args(dropin, "home")
    assert (args.command, args.physical_command, args.profile) == ("physical", "up", "home")
    assert (args.deadman, args.iface, args.name) == (60, ["enp4s0", "wlp6s0"], DEFAULT_NAME)
    by_section = sections(dropin)
    # nothing of the template's is replaced: no ExecStart=, no ordering, no type
    assert by_section["[Unit]"] == ["X-RestartIfChanged=false"]  # a switch does not bounce it
    assert {line.partition("=")[0] for line in by_section["[Service]"]} == {"Environment"}
    assert set(_environment(dropin)) == {"WGNS_PHYSICAL_ARGS", "PATH"}
    assert "-iw-" in _environment(dropin)["PATH"]  # moves a wireless phy
    defaults = _up_args(
        rendered["inline.nix"]["units"]["wgns-physical@physical.service.d/overrides.conf"],
        "physical",
    )
    assert (defaults.deadman, defaults.iface) == (DEFAULT_DEADMAN, [])


def test_a_namespace_born_in_physical_mode_follows_it(rendered: dict[str, Any]) -> None:
    media = sections(rendered["laptop.nix"]["units"]["wgns@media.service.d/overrides.conf"])
    assert "After=wgns-physical@home.service" in media["[Unit]"]
    assert "BindsTo=wgns-physical@home.service" in media["[Unit]"]


def test_the_network_daemons_are_left_to_wgns(rendered: dict[str, Any]) -> None:
    """The module writes nothing into NixOS's dhcpcd.service or wpa_supplicant.service: wgns
    moves them at run time (wgns.features.physical_units), so that they run in the main
    namespace whenever physical mode is down, as they do without it."""
    for result in rendered.values():
        for unit, text in result["units"].items():
            assert unit.startswith(("wgns-physical@", "wgns@")), unit
            assert "NetworkNamespacePath" not in text


# NixOS's own units, as nixpkgs writes them (nixos/modules/services/networking/dhcpcd.nix and
# wpa_supplicant.nix: their sandboxing, which the runtime drop-in must compose with)
NIXOS_DHCPCD = """\
[Unit]
Description=DHCP Client
Before=network-online.target
Wants=network.target
ConditionCapability=CAP_NET_ADMIN
[Service]
Type=forking
PIDFile=/run/dhcpcd/pid
RuntimeDirectory=dhcpcd
ExecStart=@/bin/sleep dhcpcd infinity
Restart=always
[Install]
WantedBy=multi-user.target network-online.target
"""
NIXOS_WPA = """\
[Unit]
Description=WPA Supplicant instance
Before=network.target
Wants=network.target
[Service]
ExecStart=/bin/sleep infinity
User=root
RuntimeDirectory=wpa_supplicant
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
RootDirectory=/run/wpa_supplicant
RootDirectoryStartOnly=true
BindPaths=/etc/wpa_supplicant /run/wpa_supplicant /proc/sys/net /dev/rfkill
BindReadOnlyPaths=/nix/store /etc/
PrivateMounts=true
PrivateTmp=true
ProtectSystem=strict
ProtectHome=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
RestrictNamespaces=true
[Install]
WantedBy=multi-user.target
"""


def _launcher(tmp_path: Path) -> Path:
    launcher = tmp_path / "bin" / "wgns"
    launcher.parent.mkdir()
    launcher.write_text("#!/bin/sh\nexit 0\n")
    launcher.chmod(0o755)
    return launcher


@needs_analyze
def test_the_units_pass_systemd_analyze_verify(rendered: dict[str, Any], tmp_path: Path) -> None:
    """The module's drop-ins over the templates wgns renders (the package's), and NixOS-shaped
    dhcpcd.service and wpa_supplicant.service with the drop-in wgns writes at run time."""
    launcher = _launcher(tmp_path)
    unit_dir = tmp_path / "units"
    units.install(str(launcher), unit_dir, tmp_path / "gen")
    (unit_dir / "dhcpcd.service").write_text(NIXOS_DHCPCD)
    (unit_dir / "wpa_supplicant.service").write_text(NIXOS_WPA)
    checked = ["dhcpcd.service", "wpa_supplicant.service"]
    for unit in checked:
        path = Path(physical_units.dropin_path(unit, str(unit_dir)))
        path.parent.mkdir()
        path.write_text(physical_units.dropin_text(unit, DEFAULT_NAME))
    for name, text in rendered["laptop.nix"]["units"].items():
        path = unit_dir / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        checked.append(name.partition(".service")[0] + ".service")
    assert len(checked) == 4
    for unit in checked:
        r = verify(unit_dir, unit)
        assert (r.returncode, r.stdout + r.stderr) == (0, ""), unit


def test_the_profile_written_from_options_is_read_by_wgns(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    entry = rendered["inline.nix"]["etc"]["wgns/physical.toml"]
    text = entry["text"].replace("/var/lib/wgns/", f"{tmp_path}/")
    assert "private_key =" not in text  # no secret in the store
    assert "birthplace" not in text and "forward" not in text
    key = tmp_path / "phys.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    profile = parse_toml(text, path=tmp_path / "physical.toml")
    (wg0,) = profile.interfaces
    assert (wg0.name, wg0.mtu, [str(a) for a in wg0.addresses]) == ("wg0", 1400, ["10.70.0.2/32"])
    assert [str(d) for d in profile.dns] == ["10.70.0.1"]
    assert profile.birthplace is None and profile.kill_switch is True


def test_the_setup_in_the_docs_is_the_example(rendered: dict[str, Any]) -> None:
    got, want = rendered["docs.nix"], rendered["laptop.nix"]
    assert got["etc"] == want["etc"] and got["wantedBy"] == want["wantedBy"]
    assert got["units"] == want["units"]


ON = "services.wgns.enable = true;"
GOOD = f'{PHYS} = {{ enable = true; profile = "/var/lib/wgns/home.conf"; }};'
REFUSED = [
    pytest.param(
        f'{ON} {PHYS} = {{ enable = true; profile = "/var/lib/wgns/h.conf"; forwards = [ ]; }};',
        f"The option `{PHYS}.forwards' does not exist.",
        id="no-forwards",
    ),
    pytest.param(
        f'{ON} {PHYS} = {{ enable = true; profile = "/var/lib/wgns/h.conf"; birthplace = "x"; }};',
        f"The option `{PHYS}.birthplace' does not exist.",
        id="no-birthplace",
    ),
    pytest.param(
        f'{ON} {PHYS} = {{ enable = true; profile = "/var/lib/wgns/h.conf"; deadman = -1; }};',
        f"A definition for option `{PHYS}.deadman' is not of type `unsigned integer",
        id="deadman-type",
    ),
    pytest.param(
        GOOD,
        f"{PHYS}.enable: set services.wgns.enable = true as well",
        id="wgns-disabled",
    ),
    pytest.param(
        f"{ON} {GOOD} networking.networkmanager.enable = true;",
        f"{PHYS}: networking.networkmanager.enable is true: NetworkManager would fight wgns",
        id="networkmanager",
    ),
    pytest.param(
        f"{ON} {GOOD} networking.useNetworkd = true;",
        f"{PHYS}: systemd-networkd (networking.useNetworkd, systemd.network.enable) would not",
        id="networkd",
    ),
    pytest.param(
        f"{ON} {GOOD} systemd.network.enable = true;",
        "would not follow the interfaces into namespace physical",
        id="systemd-network",
    ),
    pytest.param(
        f'{ON} {GOOD} networking.wireless = {{ enable = true; interfaces = [ "wlan0" ]; }};',
        f"{PHYS}: networking.wireless.interfaces is set: each wpa_supplicant-IF.service",
        id="wpa-per-interface",
    ),
    pytest.param(
        f'{ON} {PHYS} = {{ enable = true; profile = "/nix/store/0000-h.conf"; }};',
        f"{PHYS}.profile: /nix/store/0000-h.conf is a Nix path or in the Nix store",
        id="store-profile",
    ),
    pytest.param(
        f"{ON} {PHYS} = {{ enable = true; }};",
        f"{PHYS}: set either profile (a .conf or .toml file) or interfaces",
        id="no-profile",
    ),
    pytest.param(
        f'{ON} {GOOD} {PHYS}.moveInterfaces = [ "eth 0" "wlan0" ];',
        f'{PHYS}.moveInterfaces: "eth 0" is not an interface name',
        id="bad-ifname",
    ),
    pytest.param(
        f'{ON} {GOOD} {PHYS}.profileName = "a+b";',
        f'{PHYS}.profileName: "a+b" cannot name /etc/wgns/NAME.conf and wgns-physical@NAME',
        id="bad-profile-name",
    ),
    pytest.param(
        f'{ON} {GOOD} {PHYS}.profileName = "home";'
        ' services.wgns.namespaces.home.profile = "/var/lib/wgns/home.toml";',
        f"{PHYS}.profileName: home is a namespace of services.wgns.namespaces too",
        id="profile-name-is-a-namespace",
    ),
    pytest.param(
        f'{ON} {GOOD} services.wgns.namespaces.{DEFAULT_NAME}.profile = "/var/lib/wgns/p.conf";',
        f"services.wgns.namespaces.{DEFAULT_NAME}: {DEFAULT_NAME} is the namespace of physical",
        id="namespace-named-physical",
    ),
    pytest.param(
        f'{ON} {GOOD} systemd.services."wgns-physical@home".wgns.namespace = "x";',
        "wgns-physical@home is physical mode's own unit: it cannot be confined",
        id="confine-the-unit",
    ),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_a_wrong_configuration_is_refused(tmp_path: Path, body: str, message: str) -> None:
    require_lib()
    assert message in refusal(tmp_path, body)


def test_a_right_configuration_is_not_refused(tmp_path: Path) -> None:
    """The refusals above are for what they say: with the offending line corrected (wireless
    without interfaces, names that are names), it evaluates."""
    require_lib()
    config = tmp_path / "good.nix"
    config.write_text(
        f"{{ {ON} {GOOD} networking.wireless.enable = true;"
        f' {PHYS}.moveInterfaces = [ "eth0" "wlan0" ]; {PHYS}.profileName = "a@b"; }}'
    )
    assert (
        "wgns-physical@a@b.service.d/overrides.conf"
        in evaluate_configs(config)["good.nix"]["units"]
    )


def test_a_firewall_that_flushes_every_table_is_warned_of(tmp_path: Path) -> None:
    require_lib()
    config = tmp_path / "flush.nix"
    config.write_text(f"{{ {ON} {GOOD} networking.nftables.enable = true; }}")
    (warning,) = evaluate_configs(config)["flush.nix"]["warnings"]
    assert "physical mode's kill switch (wgns-physical@physical.service)" in warning
