"""wgns.integrations.systemd.units: the rendered wgns@.service passes `systemd-analyze verify`,
says what docs/systemd.md promises, and the installer writes the files with their modes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.unitfiles import needs_analyze, verify
from wgns.integrations.systemd import units

REPO = Path(__file__).resolve().parents[2]

# directives that give a service a mount namespace (or a network) of its own
PRIVATE = {
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "MountFlags",
    "PrivateNetwork",
    "NetworkNamespacePath",
    "PrivateUsers",
    "DynamicUser",
    "ProtectHostname",
    "RestrictNamespaces",
}


def _launcher(tmp_path: Path) -> str:
    """An executable standing in for /usr/local/bin/wgns (verify checks ExecStart= exists)."""
    path = tmp_path / "bin" / "wgns"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@needs_analyze
def test_the_rendered_instance_verifies_clean(tmp_path: Path) -> None:
    wgns = _launcher(tmp_path)
    units.install(wgns, tmp_path / "units", tmp_path / "gen")
    r = verify(tmp_path / "units", "wgns@media.service")
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@needs_analyze
def test_verify_does_complain_about_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: an unknown key, a missing launcher are reported."""
    units.install(_launcher(tmp_path), tmp_path / "units", tmp_path / "gen")
    unit = tmp_path / "units" / "wgns@.service"
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=mixed\nKilMode=all"))
    r = verify(tmp_path / "units", "wgns@media.service")
    assert "KilMode" in r.stdout + r.stderr
    units.install(str(tmp_path / "nowhere" / "wgns"), tmp_path / "units", tmp_path / "gen")
    r = verify(tmp_path / "units", "wgns@media.service")
    assert r.returncode != 0 and "not executable" in r.stdout + r.stderr


def test_the_unit_says_what_the_contract_says(tmp_path: Path) -> None:
    (unit, *_) = units.install("/usr/local/bin/wgns", tmp_path / "u", tmp_path / "g")
    d = _directives(unit.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == ["/usr/local/bin/wgns up --foreground %i"]
    assert d["ExecReload"] == ["/usr/local/bin/wgns up --reload %i"]
    assert d["KillMode"] == ["mixed"]
    assert d["Wants"] == ["network-online.target"]
    assert "network-online.target" in d["After"][0].split()
    assert d["WantedBy"] == ["multi-user.target"]
    assert d["Restart"] == ["on-failure"] and "WatchdogSec" in d
    # nothing that gives the service a mount namespace of its own: the /run/netns/NS and
    # /run/wgns/view/NS/etc mounts wgns makes must be seen by the whole system
    assert not PRIVATE & set(d)


def test_install_writes_the_unit_and_the_generator_with_their_modes(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(units.TEMPLATES / units.UNIT_TEMPLATE, templates)
    (templates / units.GENERATOR_TEMPLATE).write_text(
        '#!/bin/sh\nexec @WGNS@ systemd-generator "$@"\n'
    )
    unit_dir, gen_dir = tmp_path / "a" / "system", tmp_path / "b" / "system-generators"
    old = os.umask(0o077)  # modes are the files' own, not the installer's umask
    try:
        written = units.install("/opt/wgns/bin/wgns", unit_dir, gen_dir, templates=templates)
    finally:
        os.umask(old)
    assert written == [unit_dir / "wgns@.service", gen_dir / "wgns-generator"]
    assert stat.S_IMODE(written[0].stat().st_mode) == 0o644
    assert stat.S_IMODE(written[1].stat().st_mode) == 0o755
    assert "/opt/wgns/bin/wgns up --foreground %i" in written[0].read_text()
    assert written[1].read_text() == '#!/bin/sh\nexec /opt/wgns/bin/wgns systemd-generator "$@"\n'
    assert sorted(p.name for p in unit_dir.iterdir()) == ["wgns@.service"]  # no temporary left
    # without the generator's template, only the unit
    (templates / units.GENERATOR_TEMPLATE).unlink()
    assert units.install("/w", tmp_path / "c", tmp_path / "d", templates=templates) == [
        tmp_path / "c" / "wgns@.service"
    ]
    assert not (tmp_path / "d").exists()


def test_a_launcher_path_systemd_would_misread_is_refused(tmp_path: Path) -> None:
    for bad in ("wgns", "/opt/my wgns/wgns", "/opt/100%/wgns"):
        with pytest.raises(ValueError):
            units.install(bad, tmp_path / "u", tmp_path / "g")
    assert not (tmp_path / "u").exists()


def test_the_command_line_installs_and_prints_the_paths(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "wgns.integrations.systemd.units",
            "--wgns",
            "/usr/local/bin/wgns",
            "--unit-dir",
            str(tmp_path / "u"),
            "--generator-dir",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=True,
    )
    lines = r.stdout.splitlines()
    assert lines[0] == str(tmp_path / "u" / "wgns@.service")
    assert all(Path(line).exists() for line in lines)
    bad = subprocess.run(
        [sys.executable, "-m", "wgns.integrations.systemd.units", "--wgns", "relative"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "absolute path" in bad.stderr


# ------------------------------------------------------------------ wgns-physical@.service


@needs_analyze
def test_the_rendered_physical_instance_verifies_clean(tmp_path: Path) -> None:
    units.install(_launcher(tmp_path), tmp_path / "units", tmp_path / "gen")
    r = verify(tmp_path / "units", "wgns-physical@home.service")
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def _physical(tmp_path: Path) -> dict[str, list[str]]:
    written = units.install("/usr/local/bin/wgns", tmp_path / "u", tmp_path / "g")
    assert written[:2] == [
        tmp_path / "u" / "wgns@.service",
        tmp_path / "u" / "wgns-physical@.service",
    ]
    return _directives(written[1].read_text())


def test_the_physical_unit_says_what_docs_physical_md_says(tmp_path: Path) -> None:
    d = _physical(tmp_path)
    # `physical up` returns once everything is up; what it leaves running (wireguard-go, the
    # dead-man switch, a dhcpcd of its own) stays in the unit's cgroup
    assert d["Type"] == ["oneshot"] and d["RemainAfterExit"] == ["yes"]
    assert d["ExecStart"] == ["/usr/local/bin/wgns physical up $WGNS_PHYSICAL_ARGS %i"]
    assert d["Environment"] == ["WGNS_PHYSICAL_ARGS="]
    # down at stop; after a start killed half way, see the test below
    assert d["ExecStop"] == ["/usr/local/bin/wgns physical down"]
    assert "/usr/local/bin/wgns physical down" in d["ExecStopPost"][0]
    assert "Restart" not in d  # a failed up has given the network back: no loop of moves
    assert d["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in d["After"][0].split()
    assert d["Wants"] == ["network-online.target"]
    # not stopped by the shutdown transaction (no Conflicts=/Before=shutdown.target): its stop
    # would wait on the network daemons' stop jobs, which wait on it
    assert d["DefaultDependencies"] == ["no"]
    # nor by its template's slice (system-wgns\x2dphysical.slice, which shutdown stops)
    assert d["Slice"] == ["system.slice"]
    assert "Conflicts" not in d and "Before" not in d
    # ordered against targets only, never against the daemons' units it stops and starts from
    # ExecStart=/ExecStop= (an ordering with them would make those jobs wait on its own)
    ordered = [
        u
        for key in ("After", "Before", "Wants", "Requires")
        for v in d.get(key, [])
        for u in v.split()
    ]
    assert ordered and all(u.endswith(".target") for u in ordered), ordered
    assert not PRIVATE & set(d)
    assert d["SyslogIdentifier"] == ["wgns-physical"]  # not wgns@'s


def test_the_physical_unit_runs_wgns_physical_up_with_the_instance_as_profile(
    tmp_path: Path,
) -> None:
    """ExecStart='s words, $WGNS_PHYSICAL_ARGS split at blanks as systemd splits an unbraced
    variable (empty: no word), %i the instance, are `wgns physical up` with those options;
    ExecStop='s are `physical down` of the namespace up made."""
    from wgns.cli import build_parser
    from wgns.lifecycle.physical import DEFAULT_DEADMAN, DEFAULT_NAME

    d = _physical(tmp_path)

    def argv(exec_line: str, extra: str) -> list[str]:
        out = []
        for word in exec_line.split()[1:]:
            if word == "$WGNS_PHYSICAL_ARGS":
                out += extra.split()
            else:
                out.append(word.replace("%i", "home"))
        return out

    parser = build_parser()
    plain = parser.parse_args(argv(d["ExecStart"][0], ""))
    assert (plain.physical_command, plain.profile) == ("up", "home")
    assert (plain.name, plain.deadman, plain.iface) == (DEFAULT_NAME, DEFAULT_DEADMAN, [])
    given = parser.parse_args(argv(d["ExecStart"][0], "--deadman 60 --iface eth0 --iface wlan0"))
    assert (given.profile, given.deadman, given.iface) == ("home", 60, ["eth0", "wlan0"])
    down = parser.parse_args(argv(d["ExecStop"][0], ""))
    assert (down.physical_command, down.name) == ("down", DEFAULT_NAME)


@pytest.mark.parametrize(
    ("result", "runs_down"),
    [
        # a clean stop: ExecStop= gave everything back
        ("success", False),
        # `up` refused (physical mode up already, by hand or by another instance: it is not
        # this unit's to take down) or failed and rolled back by itself
        ("exit-code", False),
        # `up` killed half way (the start timeout, SIGKILL, the OOM killer): its journal
        # says what to give back
        ("timeout", True),
        ("signal", True),
        ("core-dump", True),
        ("oom-kill", True),
    ],
)
def test_after_a_start_killed_half_way_the_unit_gives_everything_back(
    tmp_path: Path, result: str, runs_down: bool
) -> None:
    """ExecStopPost= run as systemd runs it ($$ is a $ to the shell, SERVICE_RESULT set in
    its environment, systemd.exec(5)): `wgns physical down` for a killed start only."""
    launcher = tmp_path / "wgns"
    calls = tmp_path / "calls"
    launcher.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    launcher.chmod(0o755)
    (unit,) = [
        p
        for p in units.install(str(launcher), tmp_path / "u", tmp_path / "g")
        if p.name == "wgns-physical@.service"
    ]
    (line,) = _directives(unit.read_text())["ExecStopPost"]
    argv = shlex.split(line.replace("$$", "$"))
    env = {"PATH": os.environ["PATH"], "SERVICE_RESULT": result}
    subprocess.run(argv, env=env, check=True, timeout=30)
    assert (calls.read_text() if calls.exists() else "") == ("physical down\n" if runs_down else "")


@needs_analyze
def test_the_drop_in_of_docs_physical_md_verifies_and_gives_the_options(tmp_path: Path) -> None:
    """docs/physical.md's `systemctl edit` example: systemd takes it without a word (unquoted,
    Environment= would drop "60" and the rest as assignments of their own), and its value,
    unquoted as systemd unquotes it, is the options `wgns physical up` gets."""
    from wgns.cli import build_parser

    text = (REPO / "docs" / "physical.md").read_text()
    (dropin,) = re.findall(r"```ini\n(# systemctl edit wgns-physical@home\n.*?)```", text, re.S)
    units.install(_launcher(tmp_path), tmp_path / "units", tmp_path / "gen")
    where = tmp_path / "units" / "wgns-physical@home.service.d"
    where.mkdir()
    (where / "override.conf").write_text(dropin)
    r = verify(tmp_path / "units", "wgns-physical@home.service")
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    (env,) = _directives(dropin)["Environment"]
    (assignment,) = shlex.split(env)
    name, _, value = assignment.partition("=")
    assert name == "WGNS_PHYSICAL_ARGS"
    args = build_parser().parse_args(["physical", "up", *value.split(), "home"])
    assert (args.deadman, args.iface) == (60, ["enp4s0", "wlp6s0"])
