"""`wgns systemd-generator NORMAL [EARLY LATE]`: the drop-ins for every profile's ``units``.

systemd runs /usr/local/lib/systemd/system-generators/wgns-generator (scripts/systemd/
wgns-generator.in, which execs this) at boot and at every daemon-reload, before it loads any
unit. For each profile in /etc/wgns (``WGNS_PROFILE_DIR`` overrides that, for tests) that lists
``units = [...]``, it writes NORMAL/UNIT.d/wgns-confine.conf with the text `wgns confine` writes
(wgns.integrations.systemd.confine.dropin_text). A generator must never fail the boot: a
profile that cannot be read is skipped with one line on stderr (which systemd logs), and the
others are written. No profile has ``units`` (most systems): it is done after reading a
directory listing and the profiles' first bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wgns.errors import WgnsError
from wgns.integrations.systemd.confine import (
    DROPIN_NAME,
    candidates,
    check_profile,
    dropin_text,
    profile_dir,
    write_atomically,
)
from wgns.profile import load as profile_load


def confinements(directory: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """UNIT -> (namespace, profile path) for every profile of DIRECTORY with ``units``, and the
    problems (one line each) of the profiles skipped. A unit claimed by two profiles goes to
    neither: it must not run in a namespace chosen by the order of file names."""
    found: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    claimed_twice: set[str] = set()
    for path in candidates(directory):
        try:
            profile = profile_load.load_profile(str(path))
            if profile.units:
                check_profile(path.stem, str(path))  # wgns@STEM brings up namespace STEM
        except WgnsError as e:
            problems.append(f"skipped {path}: {e}")
            continue
        for unit in profile.units:
            if unit in found:
                other = found[unit][1]
                problems.append(f"{unit} is listed by both {other} and {path}: confined by neither")
                claimed_twice.add(unit)
                continue
            found[unit] = (profile.name, str(path))
    for unit in claimed_twice:
        found.pop(unit, None)
    return found, problems


def generate(normal: str, directory: str | None = None) -> tuple[list[Path], list[str]]:
    """Write the drop-ins under NORMAL; (the files written, the problems)."""
    units, problems = confinements(profile_dir(directory))
    written = []
    for unit, (ns, source) in sorted(units.items()):
        try:
            text = dropin_text(
                unit,
                ns,
                origin=f"wgns-generator, from the `units` key of {source}; remove it there",
            )
            target = Path(normal, f"{unit}.d", DROPIN_NAME)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, text)
        except (WgnsError, OSError) as e:
            problems.append(f"{unit} (from {source}) not confined: {e}")
            continue
        written.append(target)
    return written, problems


def main(argv: list[str]) -> int:
    """The generator's entry: ARGV is NORMAL [EARLY LATE]. Always 0 once NORMAL is given."""
    if not argv or len(argv) > 3:
        print("usage: wgns systemd-generator NORMAL [EARLY LATE]", file=sys.stderr)
        return 2
    try:
        _, problems = generate(argv[0])
    except Exception as e:  # never fail the boot
        problems = [f"internal error: {type(e).__name__}: {e}"]
    for line in problems:
        print(f"wgns-generator: {line}", file=sys.stderr)
    return 0
