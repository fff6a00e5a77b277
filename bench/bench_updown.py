"""`wgns up` + `wgns down` against the hand-written sequence of the WireGuard netns page.

All run in the same private sandbox, in the same run, with the same backend, against the same
simulated provider, interleaved round by round so that machine noise hits them alike:

    hand:  ip netns add NS; ip link add IF type wireguard (userspace: wireguard-go IF);
           wg setconf IF CONF; ip link set IF netns NS; ip -n NS addr add ADDR dev IF;
           ip -n NS link set IF up; ip -n NS route add default dev IF
           ...and back: ip -n NS link del IF; ip netns del NS
    wgns:  wgns up PROFILE --name NS; wgns down NS
           (which also validates the profile, computes the MTU, installs the kill switch,
           writes resolv.conf/hosts/nsswitch.conf, and journals every step)

wgns is started two ways, both running this checkout: the launcher scripts/install.sh installs
(`python3 -I -S`, no site-packages), and the console script of a plain `pip install`
(the venv's `bin/wgns`, with site-packages; PYTHONPATH points it at this checkout). The budget
(issue 12) is the launcher's up+down at most 1.2x the hand sequence.

Then brings 50 namespaces up one after another (launcher) and reports whether the time per
namespace stays flat. Usage (as root, with the venv's python so that its bin/wgns is found):
    .venv/bin/python bench/bench_updown.py [--rounds N] [--many N] [--json FILE]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgns.profile.model import Backend
from wgns.testing import launcher
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.provider import build_provider
from wgns.wireguard import backends

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/run/wgns-bench")  # inside the sandbox's private /run
BUDGET = 1.2

HAND_UP = """set -e
ip netns add "$NS"
{create}
wg setconf "$IF" "$WGCONF"
ip link set "$IF" netns "$NS"
ip -n "$NS" addr add "$ADDR" dev "$IF"
ip -n "$NS" link set "$IF" up
ip -n "$NS" route add default dev "$IF"
"""
HAND_DOWN = """set -e
ip -n "$NS" link del "$IF"
ip netns del "$NS"
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {proc.stderr.strip()}")
    return dt


def _ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--many", type=int, default=50)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    # an installed wgns has its bytecode compiled; this checkout may not (PYTHONDONTWRITEBYTECODE)
    compileall.compile_dir(str(REPO / "wgns"), quiet=1)
    sb = Sandbox.enter_self()
    provider = build_provider(sb)
    try:
        chosen = backends.select(Backend.AUTO)
        kind = chosen.name
        WORK.mkdir(mode=0o700, exist_ok=True)
        script = WORK / "wgns"  # what scripts/install.sh writes to /usr/local/bin/wgns
        script.write_text(launcher.render())
        script.chmod(0o755)
        sides: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "launcher": ([str(script)], None)
        }
        console = Path(sys.executable).parent / "wgns"  # the venv's `pip install` script
        if console.exists():
            sides["pip install"] = ([str(console)], dict(os.environ, PYTHONPATH=str(REPO)))
        wgns = sides["launcher"][0]

        hand_client = provider.new_client()
        conf = provider.client_conf(hand_client, ipv6=False, dns=False)
        wgconf = WORK / "hand-wg.conf"
        wgconf.write_text(
            subprocess.run(
                [*wgns, "strip", "/dev/stdin"],
                input=conf,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        os.chmod(wgconf, 0o600)
        create = 'wireguard-go "$IF"' if chosen.moves_device else 'ip link add "$IF" type wireguard'
        (WORK / "hand-up.sh").write_text(HAND_UP.format(create=create))
        (WORK / "hand-down.sh").write_text(HAND_DOWN)
        hand_env = dict(
            os.environ,
            NS="hand",
            IF="wg0",
            WGCONF=str(wgconf),
            ADDR=hand_client.address_v4,
            WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1",
        )

        profile = WORK / "bench.conf"
        profile.write_text(provider.client_conf(provider.new_client()))
        os.chmod(profile, 0o600)

        order = ["hand", *sides]
        ups: dict[str, list[float]] = {s: [] for s in order}
        downs: dict[str, list[float]] = {s: [] for s in order}
        for i in range(args.rounds):
            # rotate who goes first: each side's leftovers (a namespace the kernel is still
            # cleaning up, a daemon still exiting) then slow the others as often as itself
            for side in order[i % len(order) :] + order[: i % len(order)]:
                if side == "hand":
                    u = timed(["bash", str(WORK / "hand-up.sh")], hand_env)
                    d = timed(["bash", str(WORK / "hand-down.sh")], hand_env)
                else:
                    argv, env = sides[side]
                    u = timed([*argv, "up", str(profile), "--name", "bench"], env)
                    d = timed([*argv, "down", "bench"], env)
                ups[side].append(u)
                downs[side].append(d)
                time.sleep(0.05)  # let the kernel finish what the last teardown left it

        many_conf = []
        for i in range(args.many):
            p = WORK / f"many{i}.conf"
            p.write_text(provider.client_conf(provider.new_client(), ipv6=False))
            os.chmod(p, 0o600)
            many_conf.append(p)
        many_ups = [
            timed([*wgns, "up", str(p), "--name", f"many{i}"]) for i, p in enumerate(many_conf)
        ]
        many_downs = [timed([*wgns, "down", f"many{i}"]) for i in range(args.many)]
    finally:
        provider.close()
        sb.close()

    totals = {s: [u + d for u, d in zip(ups[s], downs[s], strict=True)] for s in order}
    hand_med = statistics.median(totals["hand"])
    k = max(1, min(10, args.many // 5))
    first, last = statistics.median(many_ups[:k]), statistics.median(many_ups[-k:])
    result: dict[str, object] = {
        "backend": kind,
        "rounds": args.rounds,
        "hand_up_down_ms": round(hand_med * 1000, 1),
        "sides": {
            s: {
                "up_down_ms": _ms(totals[s]),
                "up_ms": _ms(ups[s]),
                "down_ms": _ms(downs[s]),
                "ratio_over_hand": round(statistics.median(totals[s]) / hand_med, 3),
            }
            for s in order
        },
        "many": args.many,
        f"many_up_first{k}_ms": round(first * 1000, 1),
        f"many_up_last{k}_ms": round(last * 1000, 1),
        "many_up_last_over_first": round(last / first, 3),
        "many_down_median_ms": _ms(many_downs),
    }
    print(f"backend: {kind}, {args.rounds} interleaved rounds (medians)")
    for s in order:
        r = result["sides"][s]  # type: ignore[index]
        label = "hand sequence" if s == "hand" else f"wgns ({s})"
        ratio = "" if s == "hand" else f"  ratio {r['ratio_over_hand']:.3f}"
        if s == "launcher":
            verdict = "met" if r["ratio_over_hand"] <= BUDGET else "MISSED"
            ratio += f" (budget <= {BUDGET}: {verdict})"
        print(
            f"  {label:22} up+down {r['up_down_ms']:7.1f} ms (up {r['up_ms']}, "
            f"down {r['down_ms']}){ratio}"
        )
    print(
        f"{args.many} namespaces up one after another: first {k} {first * 1000:.1f} ms, "
        f"last {k} {last * 1000:.1f} ms per namespace, ratio {last / first:.3f} (flat = 1.0)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
