"""wgns.engine.ops: how the netlink operations report failures (the happy paths run in every
test_lifecycle test). Kernel-facing code runs inside the test's private sandbox."""

from __future__ import annotations

import json

from wgns.testing.sandbox import Sandbox

FAILURES = r"""
import json
from wgns.system import netns
from wgns.errors import WgnsError
from wgns.engine.ops import ConfigureLink, Context, MoveLink
ctx = Context(ns="a")
out = {}
netns.add("a")
def attempt(key, fn):
    try:
        fn()
        out[key] = None
    except WgnsError as e:
        out[key] = str(e)
move = MoveLink(ifname="nosuch0", source=None, target="a")
move.apply(ctx)  # the move runs in a thread: its error comes from finish()
attempt("move", lambda: move.finish(ctx))
attempt("open", lambda: MoveLink(ifname="x", source="missing", target="a").apply(ctx))
link = ConfigureLink(ns="a", ifname="nosuch0", addresses=["198.18.9.2/32"], mtu=1420, routes=[])
attempt("configure", lambda: link.apply(ctx))
print(json.dumps(out))
"""


def test_netlink_failures_are_wgns_errors_that_say_what_failed(sandbox: Sandbox) -> None:
    out = json.loads(sandbox.python(FAILURES).stdout)
    assert out["move"] == "RTNETLINK: set dev nosuch0 netns a: No such device"
    assert out["open"] is not None
    assert out["open"].startswith("cannot open a netlink socket in namespace missing")
    assert out["configure"] is not None
    assert out["configure"].startswith("RTNETLINK: add address 198.18.9.2/32 dev nosuch0: ")
    assert out["configure"].endswith(" (in namespace a)")
