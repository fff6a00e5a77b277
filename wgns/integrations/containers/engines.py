"""`wgns up --container NAME`: the PID of a running container, from whichever engine knows it.

Each engine (``docker``, then ``podman``; or the one --engine names) is asked one question,
`ENGINE inspect --type container -f '{{.State.Pid}}' NAME`: the pid of the container's first
process in the host's pid namespace, 0 when it is not running. Nothing else of the engine is
used: the namespace is then that process's (wgns.features.container).
"""

from __future__ import annotations

import shutil
import subprocess

from wgns.errors import WgnsError
from wgns.features.container import Target

ENGINES = ("docker", "podman")
TIMEOUT = 20.0


def _ask(engine: str, name: str) -> tuple[int | None, str]:
    """(the pid ENGINE gives for NAME, None when it cannot; why not)."""
    exe = shutil.which(engine)
    if exe is None:
        return None, "not installed"
    argv = [exe, "inspect", "--type", "container", "-f", "{{.State.Pid}}", name]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {TIMEOUT:.0f} s"
    except OSError as e:
        return None, e.strerror or str(e)
    if proc.returncode != 0:
        said = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
        return None, said.splitlines()[0]
    out = proc.stdout.strip()
    if not out.isdigit():
        return None, f"unexpected answer {out[:60]!r}"
    return int(out), ""


def find(name: str, *, engine: str | None = None) -> Target:
    """The running container NAME as a Target; a WgnsError saying what each engine answered."""
    tried = []
    for e in (engine,) if engine else ENGINES:
        pid, why = _ask(e, name)
        if pid is None:
            tried.append(f"{e}: {why}")
            continue
        if pid == 0:
            raise WgnsError(
                f"{e} container {name} is not running", hint=f"start it first: `{e} start {name}`"
            )
        return Target(pid=pid, engine=e, container=name)
    raise WgnsError(
        f"no container {name!r} found ({'; '.join(tried)})",
        hint="give the name `docker ps` or `podman ps` shows, or its process with --pid",
    )
