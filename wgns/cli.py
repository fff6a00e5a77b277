"""The command line: the one place errors become messages and exit codes.

Each command lives in its own module which exposes ``register(subparsers)``; the parser it adds
sets ``func`` (``Callable[[argparse.Namespace], int]``). Modules are imported lazily by name so
that `wgns status` does not pay for the demo's imports.
"""

from __future__ import annotations

import sys

from wgns import __version__
from wgns.errors import EXIT_FAILURE, EXIT_USAGE, WgnsError, interrupted, leave, report

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


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
    "demo": "wgns.commands.demo",
}


def _common(p: argparse.ArgumentParser) -> None:
    import argparse

    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show every operation as it is applied, and tracebacks",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    import argparse
    import importlib

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            self.print_usage(sys.stderr)
            sys.stderr.write(f"wgns: {message}\n")
            raise SystemExit(EXIT_USAGE)

    parser = _Parser(prog="wgns", description="WireGuard VPNs confined to network namespaces.")
    parser.add_argument("--version", action="version", version=f"wgns {__version__}")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    seen: set[str] = set()
    for name, modname in COMMANDS.items():
        if only is not None and name != only:
            continue
        if modname in seen:
            continue
        seen.add(modname)
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # a command not built yet
            raise
        mod.register(sub, _common)
    return parser


def _pick_command(argv: list[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def setup_logging(debug: bool) -> None:
    from wgns import log

    log.set_debug(debug)


def entry() -> None:
    """The console entry point: main(), then errors.leave()."""
    leave(main())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("exec", "shell"):
        # a wrapper started for every program: its own parser, no argparse import
        from wgns.commands.exec import main as exec_main

        return exec_main(argv)
    return _main(argv)


_BACKENDS = ("auto", "kernel", "userspace")


def _fast_path(argv: list[str]) -> Callable[[], int] | None:
    """`up` and `down` in their plain, well-formed shapes, without building the argparse parser
    (~10 ms of each start). Anything else (--help, abbreviations, `--opt=value`, a value that
    looks like an option, a wrong count of arguments) returns None and goes through argparse,
    so usage errors and their exit codes stay argparse's own."""
    i = 0
    while i < len(argv) and argv[i] == "--debug":
        i += 1
    if i == len(argv) or argv[i] not in ("up", "down"):
        return None
    command = argv[i]
    positional: list[str] = []
    name: str | None = None
    backend: str | None = None
    reload = False
    rest = iter(argv[i + 1 :])
    for a in rest:
        if not a.startswith("-"):
            positional.append(a)
        elif a == "--debug":
            pass
        elif command == "up" and a in ("--name", "--backend"):
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            if a == "--name":
                name = value
            elif value in _BACKENDS:
                backend = value
            else:
                return None
        elif command == "up" and a == "--reload":
            reload = True
        else:
            return None
    if len(positional) != 1:
        return None
    from wgns.commands import lifecycle

    if command == "down":
        return lambda: lifecycle.down(positional[0])
    return lambda: lifecycle.up(positional[0], name=name, backend=backend, reload=reload)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    setup_logging(debug)
    fast = _fast_path(argv)
    if fast is None:
        parser = build_parser(only=_pick_command(argv))
    try:
        if fast is not None:
            return fast()
        args = parser.parse_args(argv)
        args.debug = debug
        rc: int = args.func(args)
        return rc
    except WgnsError as e:
        return report(e, debug=debug)
    except KeyboardInterrupt:
        return interrupted()
    except Exception as e:  # the edge: anything unexpected is still one clear line
        if debug:
            import traceback  # ~10 ms of imports, for --debug only

            traceback.print_exc()
        else:
            print(
                f"wgns: internal error: {type(e).__name__}: {e} (run with --debug for details)",
                file=sys.stderr,
            )
        return EXIT_FAILURE
