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


TAKEN = r"""
import json
from wgns.engine import state
from wgns.engine.executor import Executor
from wgns.engine.ops import CreateWireguard
from wgns.errors import WgnsError
from wgns.system import links, netns
from wgns.system.tools import run
netns.add("a")
# what holds the name: a link this run did not make (a record deleted by hand, say)
run(["ip", "-n", "a", "link", "add", "wgtaken0", "type", "veth", "peer", "name", "p0"])
out = {}
for backend in ("kernel", "userspace"):
    rec = state.Record(ns="a")
    try:
        Executor(rec).apply_all(
            [CreateWireguard(ifname="wgtaken0", backend=backend, birthplace=None, target="a")]
        )
        out[backend] = None
    except WgnsError as e:
        out[backend] = e.message
    out[backend + " journal"] = rec.journal
out["still there"] = links.link_exists("wgtaken0", ns="a")
print(json.dumps(out))
"""


def test_creating_a_device_whose_name_is_taken_is_refused_and_leaves_it_alone(
    sandbox: Sandbox,
) -> None:
    out = json.loads(sandbox.python(TAKEN).stdout)
    for backend in ("kernel", "userspace"):
        assert out[backend] == (
            "cannot create wgtaken0: a link wgtaken0 exists in a, and this run did not make it"
        )
        assert out[backend + " journal"] == []  # never journaled, so never undone
    assert out["still there"]
