"""The command line: the one place errors become messages and exit codes.

Each command lives in its own module which exposes ``register(subparsers, common)``; the parser
it adds sets ``func`` (``Callable[[argparse.Namespace], int]``). Modules are imported lazily by
name so that `wgns status` does not pay for the demo's imports. Exit codes: 0 success, 1 failure
(WgnsError), 2 a bad command line or profile (argparse, ConfigError), 130 interrupted.

`wgns exec` and `wgns shell` go to wgns.commands.exec before any parser is built: they wrap every
program a user runs (the installed launcher even skips this module, scripts/wgns-launcher.in).
"""

from __future__ import annotations

import sys

from wgns import __version__, log
from wgns.errors import EXIT_FAILURE, EXIT_USAGE, WgnsError, interrupted, leave, report

# `wgns exec` through this module (pip's console script, `python -m wgns`) is on exec's path
# (wgns.system.startup): argparse and typing are imported only once a parser is built.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

# command name -> module that registers it (order is the order in --help)
COMMANDS: dict[str, str] = {
    "up": "wgns.commands.lifecycle",
    "down": "wgns.commands.lifecycle",
    "status": "wgns.commands.status",
    "strip": "wgns.commands.strip",
    "exec": "wgns.commands.exec",
    "shell": "wgns.commands.exec",
    "check": "wgns.commands.check",
    "forward": "wgns.commands.forward",
    "confine": "wgns.commands.confine",
    "systemd-generator": "wgns.commands.confine",
    "demo": "wgns.commands.demo",
    "physical": "wgns.commands.physical",
    "recover": "wgns.commands.physical",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (ONLY) the top level with that one command's module registered."""
    import argparse
    import importlib

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            self.print_usage(sys.stderr)
            sys.stderr.write(f"wgns: {message}\n")
            raise SystemExit(EXIT_USAGE)

    parser = _Parser(prog="wgns", description="WireGuard VPNs confined to network namespaces.")
    parser.add_argument("--version", action="version", version=f"wgns {__version__}")
    log.add_debug_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for modname in dict.fromkeys(m for name, m in COMMANDS.items() if only in (None, name)):
        importlib.import_module(modname).register(sub, log.add_debug_option)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ARGV (its first word that is not an option), when there is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def entry() -> None:
    """The console entry point: main(), then errors.leave()."""
    leave(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["exec"], ["shell"]):
        from wgns.commands.exec import main as exec_main

        return exec_main(args)
    debug = "--debug" in args  # anywhere: before or after the command, and in a failing line
    log.set_debug(debug)
    parser = build_parser(only=_command_of(args))
    try:
        ns = parser.parse_args(args)
        ns.debug = debug
        rc: int = ns.func(ns)
        return rc
    except WgnsError as e:
        return report(e, debug=debug)
    except KeyboardInterrupt:
        return interrupted()
    except Exception as e:  # the edge: anything unexpected is still one clear line
        if debug:
            import traceback

            traceback.print_exc()
        else:
            print(
                f"wgns: internal error: {type(e).__name__}: {e} (run with --debug for details)",
                file=sys.stderr,
            )
        return EXIT_FAILURE
