"""The systemd files that ship with wgns, rendered for one launcher and installed.

scripts/systemd/wgns@.service.in (the namespace as a service, docs/systemd.md), beside it
scripts/systemd/wgns-physical@.service.in (physical mode as a service, docs/physical.md) and,
when it is there, scripts/systemd/wgns-generator.in (the generator applying profiles'
``units = [...]``): @WGNS@ becomes the path of the wgns launcher (scripts/install.sh writes
/usr/local/bin/wgns).
Each file is written to a temporary name beside its target and renamed over it, so that a
daemon-reload running meanwhile never reads half a unit.

    python -m wgns.integrations.systemd.units --wgns /usr/local/bin/wgns \\
        [--unit-dir /usr/local/lib/systemd/system] \\
        [--generator-dir /usr/local/lib/systemd/system-generators]

prints each path it wrote. The defaults are the directories systemd reads for units and
generators installed by the local administrator (systemd.unit(5), systemd.generator(7)).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from wgns.system import fsutil

TEMPLATES = Path(__file__).resolve().parents[3] / "scripts" / "systemd"
UNIT_TEMPLATE = "wgns@.service.in"
PHYSICAL_TEMPLATE = "wgns-physical@.service.in"
GENERATOR_TEMPLATE = "wgns-generator.in"
UNIT_DIR = Path("/usr/local/lib/systemd/system")
GENERATOR_DIR = Path("/usr/local/lib/systemd/system-generators")
PLACEHOLDER = "@WGNS@"


def render(template: Path, wgns: str) -> str:
    """TEMPLATE's text with the launcher path WGNS in place of @WGNS@."""
    if not os.path.isabs(wgns) or any(c.isspace() for c in wgns) or "%" in wgns:
        # systemd would split the command line at a blank, and read % as a specifier
        raise ValueError(f"the wgns launcher must be an absolute path without blanks or %: {wgns}")
    text = template.read_text()
    if PLACEHOLDER not in text:
        raise ValueError(f"{template} has no {PLACEHOLDER}")
    return text.replace(PLACEHOLDER, wgns)


def _write(path: Path, text: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.write_atomically(path, text, mode, fsync=False)
    return path


def install(
    wgns: str,
    unit_dir: Path = UNIT_DIR,
    generator_dir: Path = GENERATOR_DIR,
    *,
    templates: Path = TEMPLATES,
) -> list[Path]:
    """Render the unit templates (wgns-physical@ and the generator when their templates exist)
    for the launcher WGNS into UNIT_DIR/wgns@.service, UNIT_DIR/wgns-physical@.service (0644)
    and GENERATOR_DIR/wgns-generator (0755); the paths written, in that order."""
    written = [
        _write(
            unit_dir / name.removesuffix(".in"),
            render(templates / name, wgns),
            0o644,
        )
        for name in (UNIT_TEMPLATE, PHYSICAL_TEMPLATE)
        if name == UNIT_TEMPLATE or (templates / name).exists()
    ]
    generator = templates / GENERATOR_TEMPLATE
    if generator.exists():
        written.append(
            _write(
                generator_dir / GENERATOR_TEMPLATE.removesuffix(".in"),
                render(generator, wgns),
                0o755,
            )
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m wgns.integrations.systemd.units",
        description="Install wgns@.service, wgns-physical@.service (and the wgns generator) for "
        "a wgns launcher.",
    )
    p.add_argument("--wgns", required=True, help="absolute path of the wgns launcher")
    p.add_argument("--unit-dir", type=Path, default=UNIT_DIR)
    p.add_argument("--generator-dir", type=Path, default=GENERATOR_DIR)
    args = p.parse_args(argv)
    try:
        paths = install(args.wgns, args.unit_dir, args.generator_dir)
    except (OSError, ValueError) as e:
        print(f"wgns: cannot install the systemd units: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
