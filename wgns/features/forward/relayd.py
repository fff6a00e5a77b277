"""The relay process: ``python -m wgns.features.forward.relayd`` (internal).

One process per forward, started by `wgns forward add`/`wgns up` in its own session (so it
outlives the command), stopped by `wgns forward remove`/`wgns down` through its recorded pid and
start time. It binds its listeners first (so that a port in use is reported before "ready"),
then relays (:mod:`wgns.features.forward.relay`). With ``--supervise`` (how wgns starts it) the
process is a small supervisor that forks the relaying worker and starts a new one when it
dies, on the same listening sockets (:mod:`wgns.features.forward.supervise`).

Usage: ``python -m wgns.features.forward.relayd --ns NS --proto tcp --port P --target-port Q
--listen 127.0.0.1 [--listen ::1] [--from CIDR]... [--ready-fd FD] [--supervise]``
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket
import sys
from collections.abc import Sequence

from wgns.features.forward import supervise
from wgns.features.forward.relay import (
    IPNet,
    NsSockets,
    TcpRelay,
    UdpRelay,
    allowed_from,
    listen,
    raise_nofile,
)
from wgns.features.forward.supervise import say
from wgns.system import netns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wgns.features.forward.relayd", description=__doc__.split("\n")[0]
    )
    p.add_argument("--ns", help="the namespace to connect into (default: stay here)")
    p.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    p.add_argument("--port", type=int, required=True, help="the port to listen on")
    p.add_argument("--listen", action="append", default=[], help="address to listen on")
    p.add_argument("--target", default="127.0.0.1", help="address of the service inside NS")
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="CIDR")
    p.add_argument("--idle", type=float, default=60.0, help="UDP session idle timeout (s)")
    p.add_argument("--max-sessions", type=int, default=4096)
    p.add_argument("--ready-fd", type=int, default=-1)
    p.add_argument(
        "--supervise", action="store_true", help="restart the relay when it dies (see supervise)"
    )
    return p


def _targets(primary: str, port: int, tcp: bool) -> list[tuple[int, tuple[str, int]]]:
    fam = int(socket.AF_INET6 if ":" in primary else socket.AF_INET)
    out: list[tuple[int, tuple[str, int]]] = [(fam, (primary, port))]
    if tcp and primary == "127.0.0.1":
        out.append((int(socket.AF_INET6), ("::1", port)))  # a service listening on [::1] only
    return out


def open_listeners(args: argparse.Namespace) -> list[socket.socket]:
    """The listening sockets, or OSError with the message to show."""
    listeners: list[socket.socket] = []
    for addr in args.listen or ["127.0.0.1"]:
        try:
            listeners.append(listen(args.proto, addr, args.port))
        except OSError as e:
            for ls in listeners:
                ls.close()
            shown = f"[{addr}]" if ":" in addr else addr
            why = "in use on the host" if e.errno == 98 else e.strerror
            raise OSError(f"{args.proto} port {args.port} is {why} ({shown}:{args.port})") from e
    return listeners


def serve(
    args: argparse.Namespace,
    listeners: list[socket.socket],
    sources: Sequence[IPNet],
    ready: int,
    lifeline: int = -1,
) -> int:
    """Relay until SIGTERM/SIGINT, or until LIFELINE (the read end of a pipe whose write end
    the supervisor holds) says the supervisor is gone."""
    try:
        sockets = NsSockets(args.ns)
    except OSError as e:
        say(ready, f"relay: cannot open namespace {args.ns}: {e.strerror}")
        return 1
    loop = asyncio.new_event_loop()
    allowed = allowed_from(sources)
    relay: TcpRelay | UdpRelay
    if args.proto == "tcp":
        relay = TcpRelay(
            loop, listeners, sockets, _targets(args.target, args.target_port, True), allowed
        )
    else:
        relay = UdpRelay(
            loop,
            listeners,
            sockets,
            _targets(args.target, args.target_port, False)[0],
            allowed,
            args.idle,
            args.max_sessions,
        )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    if lifeline >= 0:
        loop.add_reader(lifeline, loop.stop)  # EOF: the supervisor died, do not outlive it
    if not say(ready, "ready"):
        relay.close()
        loop.close()
        return 1  # the starter is gone: it may not have recorded us
    try:
        loop.run_forever()
    finally:
        relay.close()
        loop.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ready = args.ready_fd
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise_nofile()
    try:
        sources = [ipaddress.ip_network(s) for s in args.sources]
    except ValueError as e:
        say(ready, f"relay: {e}")
        return 2
    try:
        listeners = open_listeners(args)
    except OSError as e:
        say(ready, str(e))
        return 1
    if not args.supervise:
        return serve(args, listeners, sources, ready)
    return supervise.run(
        f"{args.proto}/{args.port}",
        lambda ready_fd, lifeline: serve(args, listeners, sources, ready_fd, lifeline),
        ready,
        netns_path=netns.path_of(args.ns) if args.ns else None,
    )


if __name__ == "__main__":
    sys.exit(main())
