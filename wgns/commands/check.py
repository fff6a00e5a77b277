"""`wgns check NS | --pid PID | --unit UNIT [--json] [--echo-url URL]`: show, with evidence, that
NS cannot leak, or that a running process (a service) has no way out but its namespace's tunnel."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from wgns.errors import UsageError, WgnsError
from wgns.features import check
from wgns.features.check import process, unit

_DESCRIPTION = """\
Self-test of a confined namespace. One line per check, PASS or FAIL with the evidence: only lo
and the expected wg interface(s) exist (plus declared forward veths); every route leaves
through wg; the wgns nft table is present and exactly as wgns wrote it; the latest handshake is
fresh; resolv.conf names only the tunnel's DNS, which answers through the tunnel; IPv6 is either
tunnelled or blocked; and, with --echo-url, the exit address differs from the one seen without
the tunnel.

With --pid PID or --unit UNIT (a running systemd unit's main process), the self-test of a
process, from inside its own network and mount namespaces: its network namespace is a wgns
namespace NS; the resolv.conf, hosts and nsswitch.conf "hosts:" line it sees are NS's; nscd,
systemd-resolved (sockets and stub), the D-Bus system bus and avahi are unreachable from it; a
getaddrinfo made as it would make one is answered by NS's DNS through the tunnel; and, with
--echo-url, its exit address is the tunnel's. Exit status 0 only when every check passes."""


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "check",
        help="self-test: prove a namespace (or a process, a unit) has no way out but the tunnel",
        description=_DESCRIPTION,
    )
    common(p)
    p.add_argument("ns", metavar="NS", nargs="?")
    p.add_argument("--pid", metavar="PID", type=int, help="check a running process instead")
    p.add_argument("--unit", metavar="UNIT", help="check a running systemd unit's main process")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--echo-url",
        metavar="URL",
        help="an HTTP what-is-my-address URL: compare the exit address inside and outside",
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=check.DEFAULT_TIMEOUT,
        help=f"for each network probe (default {check.DEFAULT_TIMEOUT:g})",
    )
    p.set_defaults(func=cmd_check)


def _print(
    args: argparse.Namespace, who: str, rep: dict[str, object], results: Sequence[check.Result]
) -> None:
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for r in results:
        print(r.line())
    passed = sum(r.status == "pass" for r in results)
    failed = sum(r.status == "fail" for r in results)
    print(
        f"{who}: {'no way out but the tunnel' if rep['ok'] else 'NOT SAFE'} "
        f"({passed} passed, {failed} failed)"
    )


def cmd_check(args: argparse.Namespace) -> int:
    given = [x for x in (args.ns, args.pid, args.unit) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of NS, --pid PID and --unit UNIT")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.pid is not None and args.pid <= 0:
        raise UsageError("--pid must be a process id (a positive number)")
    if not check.is_root():
        raise WgnsError("wgns check needs root (it reads another network namespace)")
    if args.ns is not None:
        results = check.run_checks(args.ns, echo_url=args.echo_url, timeout=args.timeout)
        rep = check.report(args.ns, results)
        _print(args, args.ns, rep, results)
        return 0 if rep["ok"] else 1
    pid = args.pid if args.pid is not None else unit.unit_pid(args.unit)
    target = process.Target(pid, args.unit)
    who = target.label
    ns, results = process.run_process_checks(target, echo_url=args.echo_url, timeout=args.timeout)
    rep = process.process_report(target, ns, results)
    _print(args, f"{who} in {ns}" if ns else who, rep, results)
    return 0 if rep["ok"] else 1
