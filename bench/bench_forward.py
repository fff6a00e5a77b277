"""Throughput and connection rate through a forward, against today's recipe and the ceiling.

All in one private sandbox, in the same run, interleaved round by round so that machine noise
hits every path alike. The service runs inside a namespace brought up by `wgns up` (tunnel and
kill switch included) against the simulated provider:

    plain:  a plain veth pair into a namespace of its own, no nft, no NAT (the ceiling)
    nat:    wgns forward add NS 15201:5201            (veth + nft DNAT, the default)
    relay:  wgns forward add NS 25201:5201 --mode relay
    socat:  socat TCP-LISTEN:35201,fork,reuseaddr
                  EXEC:"ip netns exec NS socat STDIO TCP:127.0.0.1:5201"   (the usual recipe)

Throughput: iperf3, one TCP stream, from the host to 127.0.0.1:PORT (plain: to the veth
address). Connection rate: connect, one request byte, one reply byte, close, from 8 client
threads. Figures are the median over the rounds; ratios are to `plain`.

Usage (as root): python3 bench/bench_forward.py [--rounds N] [--seconds S] [--json FILE]
Targets: nat >= 0.9 x plain in throughput; relay >= socat in throughput, and far above it in
connections per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.provider import build_provider

NS = "svc"
PLAIN = "plain"
ENV = {"WGNS_FORWARD_POOL": "198.18.128.0/17"}
PLAIN_HOST, PLAIN_NS = "198.18.127.0", "198.18.127.1"
PORTS = {"plain": 5201, "nat": 15201, "relay": 25201, "socat": 35201}
CPS_PORTS = {"plain": 5300, "nat": 15300, "relay": 25300, "socat": 35300}

# One byte in, one byte out, close: the connection-rate server (inside the namespaces).
CPS_SERVER = r"""
import asyncio, sys
async def handle(r, w):
    try:
        await r.readexactly(1); w.write(b"y"); await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=4096)
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

CPS_CLIENT = r"""
import socket, struct, sys, threading, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count = [0] * 8
errors = [0] * 8
stop = time.monotonic() + seconds
def work(i):
    while time.monotonic() < stop:
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"x")
            if s.recv(1) == b"y":
                count[i] += 1
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            errors[i] += 1
t0 = time.monotonic()
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(sum(count) / (time.monotonic() - t0), sum(errors))
"""


def start(sb: Sandbox, argv: list[str], netns: str | None = None) -> subprocess.Popen[Any]:
    p = sb.popen(argv, netns=netns, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    if "ready" not in p.stdout.readline():
        raise SystemExit(f"{argv[:3]} did not start")
    return p


def wait_port(sb: Sandbox, host: str, port: int, netns: str | None = None) -> None:
    code = (
        "import socket,sys,time\n"
        "for _ in range(200):\n"
        "    try:\n"
        f"        socket.create_connection(({host!r}, {port}), timeout=1).close(); sys.exit(0)\n"
        "    except OSError: time.sleep(0.02)\n"
        "sys.exit(1)\n"
    )
    sb.run([sys.executable, "-c", code], netns=netns)


def setup(sb: Sandbox) -> list[subprocess.Popen[Any]]:
    provider = build_provider(sb)
    conf = f"{SANDBOX_TMP}/svc.conf"
    sb.write_file(conf, provider.client_conf(), mode=0o600)

    def wgns(*args: str) -> None:
        sb.run(sb.python_argv(["-m", "wgns", *args]), env=sb.python_env(ENV))

    wgns("up", conf, "--name", NS)
    # the ceiling: a plain veth into a namespace of its own
    sb.run(["ip", "netns", "add", PLAIN])
    sb.run(
        ["ip", "-b", "-"],
        input=f"link add vplain type veth peer name vplain netns {PLAIN}\n"
        f"addr add {PLAIN_HOST}/31 dev vplain\nlink set vplain up\n",
    )
    sb.run(
        ["ip", "-n", PLAIN, "-b", "-"],
        input=f"link set lo up\naddr add {PLAIN_NS}/31 dev vplain\nlink set vplain up\n",
    )
    procs = []
    for ns in (NS, PLAIN):
        procs.append(sb.popen(["iperf3", "-s", "-p", "5201"], netns=ns,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        procs.append(start(sb, [sys.executable, "-c", CPS_SERVER, "5300"], netns=ns))
    wgns("forward", "add", NS, "15201:5201")
    wgns("forward", "add", NS, "15300:5300")
    wgns("forward", "add", NS, "25201:5201", "--mode", "relay")
    wgns("forward", "add", NS, "25300:5300", "--mode", "relay")
    for port, inner in ((35201, 5201), (35300, 5300)):
        socat = [
            "socat",
            f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=4096",
            f"EXEC:ip netns exec {NS} socat STDIO TCP\\:127.0.0.1\\:{inner}",
        ]
        procs.append(sb.popen(socat, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # no TIME_WAIT pile-up in the sandbox's own namespace between the runs
    sb.run(["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
    wait_port(sb, PLAIN_NS, 5201)
    wait_port(sb, "127.0.0.1", 35300)
    return procs


def target(path: str, port: int) -> tuple[str, int]:
    return (PLAIN_NS if path == "plain" else "127.0.0.1", port)


def throughput(sb: Sandbox, path: str, seconds: float) -> float:
    host, port = target(path, PORTS[path])
    for _ in range(20):
        proc = sb.run(
            ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"],
            check=False,
            timeout=seconds + 30,
        )
        if proc.returncode == 0:
            doc = json.loads(proc.stdout)
            return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9
        time.sleep(0.2)  # the server is still finishing the previous test
    raise SystemExit(f"iperf3 through {path} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")


def conn_rate(sb: Sandbox, path: str, seconds: float) -> float:
    host, port = target(path, CPS_PORTS[path])
    out = sb.run([sys.executable, "-c", CPS_CLIENT, host, str(port), str(seconds)]).stdout.split()
    return float(out[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    paths = ["plain", "nat", "relay", "socat"]
    gbps: dict[str, list[float]] = {p: [] for p in paths}
    cps: dict[str, list[float]] = {p: [] for p in paths}
    with Sandbox.spawn() as sb:
        setup(sb)
        for r in range(args.rounds):
            order = paths[r % len(paths) :] + paths[: r % len(paths)]
            for p in order:
                gbps[p].append(throughput(sb, p, args.seconds))
                cps[p].append(conn_rate(sb, p, min(args.seconds, 2.0)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        sb.run(sb.python_argv(["-m", "wgns", "down", NS]), env=sb.python_env(ENV))
    med = {p: (statistics.median(gbps[p]), statistics.median(cps[p])) for p in paths}
    base_g, base_c = med["plain"]
    print(f"{'path':<6} {'Gbit/s':>8} {'x plain':>8} {'conn/s':>9} {'x plain':>8}")
    for p in paths:
        g, c = med[p]
        print(f"{p:<6} {g:8.2f} {g / base_g:8.2f} {c:9.0f} {c / base_c:8.2f}")
    checks = {
        "nat >= 0.9 x plain (throughput)": med["nat"][0] >= 0.9 * base_g,
        "relay >= socat (throughput)": med["relay"][0] >= med["socat"][0],
        "relay >= 3 x socat (conn/s)": med["relay"][1] >= 3 * med["socat"][1],
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "seconds": args.seconds,
                    "gbit_per_s": gbps,
                    "conn_per_s": cps,
                    "median": {p: {"gbit_per_s": g, "conn_per_s": c} for p, (g, c) in med.items()},
                    "checks": checks,
                },
                indent=2,
            )
        )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
