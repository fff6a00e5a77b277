"""Time from the network coming back to the first packet through the tunnel (issue 13: <= 2 s).

In a private sandbox with the simulated provider, a confined namespace pings the provider's
"internet" (198.18.2.2) every 50 ms through the tunnel. Each round takes the birthplace's
uplink down for OUTAGE seconds, then brings it up and puts its default route back (as DHCP
would), and measures from that moment to the first ping answered. During the outage the
provider forgets the client's session (its peer removed and added back), which is what a
session that expired while the network was away (WireGuard rejects keys after 180 s), or a
provider's server restarting, leaves: traffic can only come back after a fresh handshake.
The outage is longer than WireGuard's 15 s (KEEPALIVE + REKEY_TIMEOUT) so that handshake
retries are under way when the network returns, each rate-limited to one per 5 s.

Two ways, interleaved round by round in the same sandbox, same provider, same backend:

    baseline: `wgns up` alone: WireGuard's own timers bring the tunnel back;
    wgns:     `wgns up --foreground`: its health loop sees the link/route events in the
              birthplace and forces a fresh handshake.

Usage (as root):  .venv/bin/python bench/bench_recovery.py [--rounds N] [--outage S] [--json F]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgns.testing.sandbox import REPO_ROOT, SANDBOX_TMP, Sandbox
from wgns.testing.sim.provider import Provider, build_provider

NS = "bench"
GOAL = 2.0


def _first_answer_after(path: Path, since: float, timeout: float) -> float | None:
    """Seconds from SINCE (unix time) to the first answered ping in `ping -D` output PATH."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if "bytes from" in line and line.startswith("["):
                t = float(line[1 : line.index("]")])
                if t >= since:
                    return t - since
        time.sleep(0.05)
    return None


def one_round(
    sb: Provider, sandbox: Sandbox, client_key: str, addrs: list[str], outage: float, out: Path
) -> float | None:
    out.write_text("")
    with out.open("w") as f:
        pinger = sandbox.popen(
            ["ping", "-D", "-i", "0.05", "-W", "1", "198.18.2.2"], netns=NS, stdout=f
        )
    try:
        time.sleep(1.0)
        sandbox.run(["ip", "link", "set", "uplink0", "down"])
        time.sleep(1.0)
        # the provider forgets the session: only a fresh handshake brings traffic back
        sb.wg(0, ["set", sb.server.ifname, "peer", client_key, "remove"])
        sb.wg(0, ["set", sb.server.ifname, "peer", client_key, "allowed-ips", ",".join(addrs)])
        time.sleep(max(0.0, outage - 1.0))
        sandbox.run(["ip", "link", "set", "uplink0", "up"])
        sandbox.run(["ip", "route", "replace", "default", "via", "198.18.0.1", "dev", "uplink0"])
        back = time.time()
        return _first_answer_after(out, back, timeout=30.0)
    finally:
        pinger.send_signal(signal.SIGINT)
        pinger.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outage", type=float, default=17.0, help="seconds the uplink is down")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results: dict[str, list[float]] = {"baseline": [], "wgns": []}
    lost: dict[str, int] = {"baseline": 0, "wgns": 0}
    with Sandbox.spawn() as sb:
        p = build_provider(sb)
        try:
            client = p.new_client()
            profile = f"{SANDBOX_TMP}/bench.conf"
            sb.write_file(profile, p.client_conf(client), mode=0o600)
            addrs = [client.address_v4, client.address_v6]
            env = sb.python_env()
            wgns = [sys.executable, "-m", "wgns"]
            out = sb.path(f"{SANDBOX_TMP}/ping.out")
            for r in range(args.rounds):
                order = ["baseline", "wgns"] if r % 2 == 0 else ["wgns", "baseline"]
                for mode in order:
                    fg = None
                    if mode == "baseline":
                        sb.run([*wgns, "up", profile, "--name", NS], env=env, cwd=REPO_ROOT)
                    else:
                        fg = sb.popen(
                            [*wgns, "up", "--foreground", profile, "--name", NS],
                            env=env,
                            cwd=REPO_ROOT,
                            stderr=subprocess.DEVNULL,
                        )
                        deadline = time.monotonic() + 30
                        while not sb.path(f"/run/wgns/{NS}.json").exists():
                            assert time.monotonic() < deadline and fg.poll() is None
                            time.sleep(0.05)
                    time.sleep(1.0)
                    took = one_round(p, sb, client.public_key, addrs, args.outage, out)
                    if took is None:
                        lost[mode] += 1
                    else:
                        results[mode].append(took)
                    if fg is not None:
                        fg.send_signal(signal.SIGTERM)
                        fg.wait(30)
                    else:
                        sb.run([*wgns, "down", NS], env=env, cwd=REPO_ROOT)
                print(
                    f"round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{m} {results[m][-1]:.2f}s" if results[m] else m for m in order),
                    file=sys.stderr,
                )
        finally:
            sb.run(
                [sys.executable, "-m", "wgns", "down", NS],
                env=sb.python_env(),
                cwd=REPO_ROOT,
                check=False,
            )
            p.close()
    print(
        f"recovery after an outage of {args.outage:.0f}s with the session lost, "
        f"{args.rounds} rounds (time from link up + route back to the first ping answered):"
    )
    summary = {}
    for mode, ts in results.items():
        if ts:
            med, worst = statistics.median(ts), max(ts)
            print(
                f"  {mode:9s} median {med:6.2f} s   max {worst:6.2f} s   "
                f"(no answer within 30 s: {lost[mode]})"
            )
            summary[mode] = {"median": med, "max": worst, "all": ts, "lost": lost[mode]}
    if results["wgns"] and results["baseline"]:
        ratio = statistics.median(results["baseline"]) / max(
            statistics.median(results["wgns"]), 1e-3
        )
        print(f"  the health loop brings traffic back {ratio:.1f}x sooner (median)")
        ok = max(results["wgns"]) <= GOAL and not lost["wgns"]
        print(f"  goal <= {GOAL:.0f} s: {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
