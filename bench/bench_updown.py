"""`wgns up` + `wgns down` against the hand-written sequence of the WireGuard netns page.

Both run in the same private sandbox, in the same run, with the same backend, against the same
simulated provider, interleaved round by round so that machine noise hits both alike:

    hand:  ip netns add NS; ip link add IF type wireguard (userspace: wireguard-go IF);
           wg setconf IF CONF; ip link set IF netns NS; ip -n NS addr add ADDR dev IF;
           ip -n NS link set IF up; ip -n NS route add default dev IF
           ...and back: ip -n NS link del IF; ip netns del NS
    wgns:  wgns up PROFILE --name NS; wgns down NS
           (which also validates the profile, computes the MTU, installs the kill switch,
           writes resolv.conf/hosts/nsswitch.conf, and journals every step)

Then brings 50 namespaces up one after another and reports whether the time per namespace stays
flat. Usage (as root): python3 bench/bench_updown.py [--rounds N] [--many N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgns.profile.model import Backend
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.provider import build_provider
from wgns.wireguard import backends

WORK = Path("/run/wgns-bench")  # inside the sandbox's private /run

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


def wgns_argv() -> list[str]:
    exe = shutil.which("wgns")
    return [exe] if exe else [sys.executable, "-m", "wgns"]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {proc.stderr.strip()}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--many", type=int, default=50)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    sb = Sandbox.enter_self()
    provider = build_provider(sb)
    try:
        chosen = backends.select(Backend.AUTO)
        WORK.mkdir(mode=0o700, exist_ok=True)
        wgns = wgns_argv()

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

        hand_t: list[float] = []
        wgns_t: list[float] = []
        parts: dict[str, list[float]] = {"hand up": [], "hand down": [], "up": [], "down": []}
        for i in range(args.rounds):
            # alternate who goes first: each side's leftovers (a namespace the kernel is still
            # cleaning up, a daemon still exiting) then slow the other side as often as itself
            for side in ("hand", "wgns") if i % 2 == 0 else ("wgns", "hand"):
                if side == "hand":
                    u = timed(["bash", str(WORK / "hand-up.sh")], hand_env)
                    d = timed(["bash", str(WORK / "hand-down.sh")], hand_env)
                    parts["hand up"].append(u)
                    parts["hand down"].append(d)
                    hand_t.append(u + d)
                else:
                    u = timed([*wgns, "up", str(profile), "--name", "bench"])
                    d = timed([*wgns, "down", "bench"])
                    parts["up"].append(u)
                    parts["down"].append(d)
                    wgns_t.append(u + d)
                time.sleep(0.05)  # let the kernel finish what the last teardown left it

        many_conf = []
        for i in range(args.many):
            p = WORK / f"many{i}.conf"
            p.write_text(provider.client_conf(provider.new_client(), ipv6=False))
            os.chmod(p, 0o600)
            many_conf.append(p)
        ups = [timed([*wgns, "up", str(p), "--name", f"many{i}"]) for i, p in enumerate(many_conf)]
        downs = [timed([*wgns, "down", f"many{i}"]) for i in range(args.many)]

        hand_med = statistics.median(hand_t)
        wgns_med = statistics.median(wgns_t)
        k = max(1, min(10, args.many // 5))
        first, last = statistics.median(ups[:k]), statistics.median(ups[-k:])
        result = {
            "backend": chosen.name,
            "rounds": args.rounds,
            "hand_up_down_ms": round(hand_med * 1000, 1),
            "wgns_up_down_ms": round(wgns_med * 1000, 1),
            "ratio_wgns_over_hand": round(wgns_med / hand_med, 3),
            "many": args.many,
            f"many_up_first{k}_ms": round(first * 1000, 1),
            f"many_up_last{k}_ms": round(last * 1000, 1),
            "many_up_last_over_first": round(last / first, 3),
            "many_down_median_ms": round(statistics.median(downs) * 1000, 1),
            "wgns": " ".join(wgns),
            **{
                f"{k.replace(' ', '_')}_median_ms": round(statistics.median(v) * 1000, 1)
                for k, v in parts.items()
            },
        }
    finally:
        provider.close()
        sb.close()
    print(f"backend: {result['backend']}, {args.rounds} interleaved rounds (medians)")
    print(f"  hand sequence up+down : {result['hand_up_down_ms']:7.1f} ms")
    print(f"  wgns up + wgns down   : {result['wgns_up_down_ms']:7.1f} ms")
    print(f"  ratio wgns / hand     : {result['ratio_wgns_over_hand']:7.3f}  (target <= 1.0)")
    print(
        f"  (up / down medians: hand {result['hand_up_median_ms']} / "
        f"{result['hand_down_median_ms']} ms, wgns {result['up_median_ms']} / "
        f"{result['down_median_ms']} ms)"
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
