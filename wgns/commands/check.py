"""`wgns check NS [--json] [--echo-url URL]`: show, with evidence, that NS cannot leak."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from wgns.errors import UsageError, WgnsError
from wgns.features import check

_DESCRIPTION = """\
Self-test of a confined namespace. One line per check, PASS or FAIL with the evidence: only lo
and the expected wg interface(s) exist (plus declared forward veths); every route leaves
through wg; the wgns nft table is present and exactly as wgns wrote it; the latest handshake is
fresh; resolv.conf names only the tunnel's DNS, which answers through the tunnel; IPv6 is either
tunnelled or blocked; and, with --echo-url, the exit address differs from the one seen without
the tunnel. Exit status 0 only when every check passes."""


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "check",
        help="self-test: prove a namespace has no way out but the tunnel",
        description=_DESCRIPTION,
    )
    common(p)
    p.add_argument("ns", metavar="NS")
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


def cmd_check(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if not check.is_root():
        raise WgnsError("wgns check needs root (it reads another network namespace)")
    results = check.run_checks(args.ns, echo_url=args.echo_url, timeout=args.timeout)
    rep = check.report(args.ns, results)
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(r.line())
        passed = sum(r.status == "pass" for r in results)
        failed = sum(r.status == "fail" for r in results)
        print(
            f"{args.ns}: {'no way out but the tunnel' if rep['ok'] else 'NOT SAFE'} "
            f"({passed} passed, {failed} failed)"
        )
    return 0 if rep["ok"] else 1
