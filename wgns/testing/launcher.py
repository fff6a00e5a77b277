"""This checkout's launcher, rendered from scripts/wgns-launcher.in as scripts/install.sh does.

For the tests and the benchmarks that run wgns the way an installed wgns runs (`python3 -I -S`
with the distribution's interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys

from wgns.testing.sandbox import REPO_ROOT

TEMPLATE = os.path.join(REPO_ROOT, "scripts", "wgns-launcher.in")


def interpreter() -> str:
    """The interpreter scripts/install.sh puts on the launcher's #! line: the distribution's
    python3 when it is 3.11 or newer, else this one."""
    r = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
        check=False,
        capture_output=True,
    )
    return os.path.realpath("/usr/bin/python3" if r.returncode == 0 else sys.executable)


def render() -> str:
    """The launcher's text for this checkout."""
    with open(TEMPLATE) as f:
        return f.read().replace("@INTERP@", interpreter()).replace("@ROOT@", REPO_ROOT)
