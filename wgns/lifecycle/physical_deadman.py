"""Physical mode's dead-man switch: a watcher process, started last by physical `up`, that
gives everything back (physical `down`: interfaces moved home with their state, daemons
restarted there) when no handshake arrives within its timeout. After the first handshake it
stays only to keep the namespace's status file current (status bars read it without root).

Run as `python -m wgns.lifecycle.physical_deadman NS TIMEOUT IFNAME...` by the op
:class:`DeadManSwitch`, in its own session so that it outlives the `wgns` that started it; its
log is /run/wgns/log/NS/deadman.log. Its undo (at `down`) stops it, except when the watcher
itself is the one taking everything down.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from wgns.engine import state
from wgns.engine.ops.base import Context, Op
from wgns.errors import WgnsError
from wgns.features import statusfile
from wgns.system.processes import (
    Supervised,
    log_path,
    process_alive,
    remove_log,
    stop_process,
)

POLL = 0.5


latest_handshake = statusfile.latest_handshake  # also what `physical status` shows


class Watcher(Supervised):
    name = "dead-man switch"

    def __init__(self, ns: str, timeout: float, ifnames: list[str]) -> None:
        super().__init__()
        self.ns, self.timeout, self.ifnames = ns, timeout, ifnames

    def is_supported(self) -> bool:
        return True

    def argv(self) -> list[str]:
        args = [self.ns, str(self.timeout), *self.ifnames]
        return [sys.executable, "-m", "wgns.lifecycle.physical_deadman", *args]

    def env(self) -> dict[str, str]:
        # the checkout or site-packages this wgns comes from: the watcher runs the same code
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, "PYTHONPATH": root + (":" + path if path else "")}

    def ready(self) -> bool:
        return True


@dataclass(kw_only=True)
class DeadManSwitch(Op):
    kind = "physical_deadman"
    ns: str
    ifnames: list[str]
    timeout: float
    backend: str = ""
    _watcher: Watcher | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        return (
            f"dead-man switch: everything given back unless a handshake comes in {self.timeout:g}s"
        )

    def apply(self, ctx: Context) -> None:
        w = Watcher(self.ns, self.timeout, self.ifnames)
        pid, starttime = w.start(None, log_path(self.ns, "deadman"))
        self.result.update(pid=pid, starttime=starttime, started=time.time())
        ctx.checkpoint()

    def state(self) -> str:
        """ "watching", "disarmed" (a handshake came: the watcher then only keeps the status
        file current) or "gone"."""
        if latest_handshake(self.ifnames):
            return "disarmed"
        alive = process_alive(int(self.result.get("pid", 0)), self.result.get("starttime"))
        return "watching" if alive else "gone"

    def undo(self, ctx: Context) -> None:
        pid = int(self.result.get("pid", 0))
        if pid and pid != os.getpid():
            stop_process(pid, self.result.get("starttime"))
        if pid != os.getpid():
            remove_log(log_path(self.ns, "deadman"))


def watch(ns: str, timeout: float, ifnames: list[str]) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if latest_handshake(ifnames):
            print(f"wgns: {ns}: handshake: dead-man switch disarmed", file=sys.stderr)
            keep_status(ns)
            return 0
        time.sleep(POLL)
    from wgns.features.physical_units import release_unit
    from wgns.lifecycle import down

    print(f"wgns: {ns}: no handshake in {timeout:g}s: giving the network back", file=sys.stderr)
    try:
        rec = state.load(ns)
    except WgnsError:  # a damaged record: `down` still gives back what it can, and says why
        rec = None
    errors = down.down(ns).errors
    if rec is not None:  # the wgns-physical@ unit that brought NS up, if one did: stopped too
        release_unit(ns, rec.extra.get("unit"))
    for e in errors:
        print(f"wgns: {ns}: {e}", file=sys.stderr)
    return 1 if errors else 0


def keep_status(ns: str) -> None:
    """Disarmed, the watcher stays to keep NS's status file current for status bars (which run
    without root and only read it) until NS's record is gone; `down` stops it."""
    while os.path.exists(state.path_of(ns)):
        statusfile.refresh(ns)
        time.sleep(statusfile.REFRESH)


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
