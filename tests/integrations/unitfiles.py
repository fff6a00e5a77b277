"""What the tests of wgns.integrations.systemd share: `systemd-analyze verify` on a unit
directory, a unit file read by section, and a profile to confine units to."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)

#: A TOML profile whose namespace is named after its file (PROFILE.format(head="") for none).
PROFILE = """\
{head}
[[interface]]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
address = "198.19.0.2/32"
[[interface.peer]]
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
allowed_ips = "0.0.0.0/0"
endpoint = "198.18.0.1:51820"
"""


def verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify UNIT` with UNIT_DIR (then the built-in paths) as the unit path:
    works without systemd running (the machine has systemd installed, not as PID 1). Messages
    of level notice and above, no colour, no man page lookups."""
    env = {
        **os.environ,
        "SYSTEMD_UNIT_PATH": f"{unit_dir}:",
        "SYSTEMD_LOG_LEVEL": "notice",
        "SYSTEMD_LOG_COLOR": "0",
    }
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", unit],
        env=env,
        cwd=unit_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sections(text: str) -> dict[str, list[str]]:
    """SECTION ("[Service]") -> its directive lines in order (comments and blank lines, and
    sections without directives, dropped)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
            out.setdefault(section, [])
        elif line and not line.startswith("#"):
            out.setdefault(section, []).append(line)
    return {k: v for k, v in out.items() if v}
