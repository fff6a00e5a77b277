"""`wgns confine UNIT NS`: a drop-in that puts an existing service, unchanged and not copied,
into namespace NS (docs/systemd.md says why each line is there).

The drop-in is /etc/systemd/system/UNIT.d/wgns-confine.conf (:func:`dropin_text`); the
generator (wgns.integrations.systemd.generator) writes the same text for the units a profile
lists in its ``units`` key. Everything is checked before anything is written: the unit's name,
that systemd runs, that the unit exists, that NS has a profile.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from wgns.errors import ConfigError, WgnsError
from wgns.features import etcview
from wgns.profile import load as profile_load
from wgns.profile.values import Invalid, parse_unit_name, show
from wgns.system import execview, fsutil, netns, tools

UNIT_DIR = "/etc/systemd/system"
DROPIN_NAME = "wgns-confine.conf"
SYSTEMD_RUNNING = "/run/systemd/system"  # sd_booted(3)
# How a unit would reach a resolver over the host's network (nscd, systemd-resolved, avahi, the
# D-Bus system bus): wgns.system.execview's list, which `wgns exec` hides too. /var/run is /run
# on every systemd system and systemd resolves symlinks in these paths, so the /var/run twins
# are the same paths.
HIDDEN_PATHS = execview.HIDDEN_PATHS
_ACTIVE = ("active", "activating", "reloading", "deactivating", "refreshing")


def wgns_unit(ns: str) -> str:
    return f"wgns@{ns}.service"


def check_instance_name(ns: str) -> str:
    """NS as the instance of wgns@.service: systemd refuses '+' and '=' in unit names (and an
    escaped name would not be the profile's name any more)."""
    netns.validate_name(ns)
    if "+" in ns or "=" in ns:
        raise WgnsError(
            f"namespace {show(ns)} cannot be confined to: '+' and '=' are not allowed in a "
            f"systemd unit name ({wgns_unit(ns)})",
            hint="rename the profile without them",
        )
    return ns


def dropin_text(unit: str, ns: str, *, origin: str | None = None) -> str:
    """The drop-in confining UNIT to NS; ORIGIN: what wrote it (said in its first lines)."""
    check_instance_name(ns)
    view = etcview.etc_of(ns)
    how = origin or f"`wgns confine {unit} {ns}`; undo with `wgns confine --remove {unit}`"
    return (
        f"# Written by wgns ({how}).\n"
        f"# Runs {unit} in network namespace {ns}, whose only way out is its WireGuard\n"
        f"# tunnel, with the tunnel's resolv.conf, hosts and nsswitch.conf and no host resolver.\n"
        "# See docs/systemd.md for each line.\n"
        "[Unit]\n"
        f"BindsTo={wgns_unit(ns)}\n"
        f"After={wgns_unit(ns)}\n"
        f"AssertPathIsMountPoint={view}\n"
        "\n"
        "[Service]\n"
        f"NetworkNamespacePath={netns.path_of(ns)}\n"
        f"BindReadOnlyPaths={view}:/etc\n"
        f"InaccessiblePaths={' '.join('-' + p for p in HIDDEN_PATHS)}\n"
    )


def dropin_path(unit: str, unit_dir: str = UNIT_DIR) -> Path:
    return Path(unit_dir, f"{unit}.d", DROPIN_NAME)


def confined_to(text: str) -> str | None:
    """The namespace a wgns drop-in's text confines to (None: not one of ours)."""
    if not text.startswith("# Written by wgns"):
        return None
    for line in text.splitlines():
        if line.startswith("NetworkNamespacePath="):
            return line.rpartition("/")[2]
    return None


def unit_name(text: str) -> str:
    try:
        return parse_unit_name(text)
    except Invalid as e:
        raise ConfigError(e.message, hint=e.hint) from None


def check_profile(ns: str, path: str | None = None) -> None:
    """NS has a profile, found and read as `wgns up NS` (that is, wgns@NS.service) does, and
    it brings up namespace NS (not one its ``name`` key names)."""
    profile = profile_load.load_profile(path or ns)
    if profile.name != ns:
        raise ConfigError(
            f"brings up namespace {show(profile.name)}, not {show(ns)}: {wgns_unit(ns)} would "
            f"not start the namespace the unit is confined to",
            path=profile.source,
            key="name",
            hint=f"remove its name key, or confine to {profile.name} with a profile of that name",
        )


def require_systemd() -> None:
    if not os.path.isdir(SYSTEMD_RUNNING):
        raise WgnsError(
            f"systemd is not running here ({SYSTEMD_RUNNING} does not exist): there is no "
            "service manager to confine units of",
            hint="`wgns exec NS -- CMD` runs a program in a namespace without systemd",
        )


@dataclass(frozen=True)
class UnitState:
    id: str  # the unit's own name (an alias resolved)
    load: str  # LoadState: loaded, not-found, masked, bad-setting, error
    active: str  # ActiveState


def show_unit(unit: str) -> UnitState:
    """What systemd knows of UNIT (`systemctl show`)."""
    argv = ["systemctl", "show", "-p", "Id", "-p", "LoadState", "-p", "ActiveState", "--", unit]
    out = tools.run(argv).stdout
    props = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return UnitState(
        props.get("Id") or unit, props.get("LoadState", ""), props.get("ActiveState", "")
    )


def daemon_reload() -> None:
    tools.run(["systemctl", "daemon-reload"])


def write_atomically(path: Path, text: str) -> None:
    fsutil.write_atomically(path, text, 0o644)


def confine(unit_arg: str, ns: str, *, unit_dir: str = UNIT_DIR) -> list[str]:
    """Confine UNIT to NS; the lines to tell the user."""
    unit = unit_name(unit_arg)
    check_instance_name(ns)
    check_profile(ns)
    require_systemd()
    state = show_unit(unit)
    if state.load in ("", "not-found"):
        raise WgnsError(
            f"unit {unit} does not exist (systemd has no unit file for it)",
            hint="`systemctl list-unit-files` lists the units there are",
        )
    if state.load == "masked":
        raise WgnsError(f"unit {unit} is masked", hint=f"`systemctl unmask {unit}` first")
    unit = state.id  # an alias: the drop-in goes with the unit itself
    if unit.startswith("wgns@"):
        raise ConfigError(f"{unit} is the unit of a wgns namespace itself: it cannot be confined")
    if unit.startswith("wgns-physical@"):
        raise ConfigError(f"{unit} is physical mode's own unit: it cannot be confined")
    path = dropin_path(unit, unit_dir)
    text = dropin_text(unit, ns)
    old = _read(path)
    before = confined_to(old) if old is not None else None
    if old == text:
        notes = [f"{unit} is confined to {ns} already ({path})"]
    else:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        write_atomically(path, text)
        daemon_reload()
        if before is not None and before != ns:
            notes = [f"{unit} was confined to {before}: now to {ns} ({path})"]
        else:
            notes = [f"{unit} confined to {ns} ({path}); it starts {wgns_unit(ns)} with it"]
    if state.active in _ACTIVE and old != text:
        where = f"in {before}" if before and before != ns else f"outside {ns}"
        notes.append(f"{unit} is running {where} until `systemctl restart {unit}`")
    return notes


def remove(unit_arg: str, *, unit_dir: str = UNIT_DIR, profile_dir: str | None = None) -> list[str]:
    """Undo `wgns confine UNIT`; the lines to tell the user."""
    unit = unit_name(unit_arg)
    require_systemd()
    state = show_unit(unit)
    if state.load not in ("", "not-found"):
        unit = state.id
    path = dropin_path(unit, unit_dir)
    text = _read(path)
    if text is None or confined_to(text) is None:
        listed = profiles_confining(unit, profile_dir)
        if listed:
            return [
                f"{unit} is confined by the `units` key of {', '.join(listed)}: remove it there "
                "(then `systemctl daemon-reload`)"
            ]
        if text is not None:
            return [f"{path} was not written by wgns: left alone"]
        return [f"{unit} is not confined by wgns: nothing to remove"]
    ns = confined_to(text)
    path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty: the admin's own drop-ins stay
    daemon_reload()
    notes = [f"{unit} is not confined to {ns} any more (removed {path})"]
    if state.active in _ACTIVE:
        notes.append(f"{unit} is running in {ns} until `systemctl restart {unit}`")
    return notes


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


ENV_PROFILE_DIR = "WGNS_PROFILE_DIR"


def profile_dir(override: str | None = None) -> str:
    return override or os.environ.get(ENV_PROFILE_DIR) or profile_load.ETC_DIR


def candidates(directory: str) -> list[Path]:
    """The TOML profiles of DIRECTORY that may have a ``units`` key (a cheap text check first:
    the generator runs at every boot and daemon-reload)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".toml") or name.startswith("."):
            continue
        path = Path(directory, name)
        try:
            data = path.read_bytes()
        except OSError:
            data = b"units"  # let the loader say why, as a skipped profile
        if b"units" in data:
            out.append(path)
    return out


def profiles_confining(unit: str, directory: str | None = None) -> list[str]:
    """The profiles whose ``units`` list UNIT (for `wgns confine --remove`)."""
    out = []
    for path in candidates(profile_dir(directory)):
        try:
            profile = profile_load.load_profile(str(path))
        except WgnsError:
            continue
        if unit in profile.units:
            out.append(str(path))
    return out
