"""`wgns exec NS [--user USER] [--if-up] [--] CMD [ARGS...]` and `wgns shell NS`.

Besides :func:`register` (for wgns.cli's --help), :func:`main` parses these two commands by
hand, without importing argparse: `wgns exec` is a wrapper around other commands and its
start-up time is the price of every wrapped command (wgns.system.startup, docs/exec.md). The
launcher and wgns.cli both come here before building any parser.
"""

from __future__ import annotations

import posix
import sys

from wgns.errors import UsageError, WgnsError, interrupted, leave, report

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wgns.system.startup)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import NoReturn

_EXEC_USAGE = "wgns exec NS [--user USER] [--if-up] [--] CMD [ARGS...]"
_SHELL_USAGE = "wgns shell NS [--user USER] [--if-up]"

_EXEC_DESCRIPTION = """\
Run CMD inside namespace NS as the invoking user (SUDO_UID/SUDO_GID or PKEXEC_UID, else the
caller), with NS's /etc view (/etc with /etc/netns/NS/* on top, read-only) at /etc, NS's own
/sys, and the host's nscd, systemd-resolved, avahi and D-Bus system bus sockets out of reach.
wgns becomes CMD (exec): its exit status, signals and terminal are CMD's. Exit status 127: CMD
not found; 126: CMD not executable; 1: NS unknown or not up (nothing run). Options go between NS
and CMD; `--` ends them. The environment is kept as `sudo -E` keeps it, with HOME, USER,
LOGNAME, SHELL of the user: see docs/exec.md."""

_SHELL_DESCRIPTION = """\
Run the user's shell (from the passwd database) inside namespace NS: `wgns exec NS -- SHELL`."""


class HelpWanted(Exception):
    """-h/--help among the options: show argparse's help."""


class Request:
    """A parsed `wgns exec|shell` (plain class: see runas.Target for why)."""

    __slots__ = ("argv", "command", "debug", "if_up", "ns", "user")

    def __init__(
        self,
        command: str,  # "exec" or "shell"
        ns: str,
        argv: list[str],
        user: str | None = None,
        if_up: bool = False,
        debug: bool = False,
    ) -> None:
        self.command = command
        self.ns = ns
        self.argv = argv
        self.user = user
        self.if_up = if_up
        self.debug = debug

    def __repr__(self) -> str:
        return f"Request({self.command!r}, {self.ns!r}, {self.argv!r}, user={self.user!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__
        )

    __hash__ = None  # type: ignore[assignment]


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    import argparse

    p = sub.add_parser(
        "exec",
        help="run a command inside a namespace as the invoking user",
        description=_EXEC_DESCRIPTION,
        usage=_EXEC_USAGE,
    )
    common(p)
    _add_options(p)
    p.add_argument("ns", metavar="NS")
    p.add_argument("cmd", metavar="CMD [ARGS...]", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_exec)

    s = sub.add_parser(
        "shell",
        help="the user's shell inside a namespace",
        description=_SHELL_DESCRIPTION,
        usage=_SHELL_USAGE,
    )
    common(s)
    _add_options(s)
    s.add_argument("ns", metavar="NS")
    s.set_defaults(func=run_shell)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-u",
        "--user",
        metavar="USER",
        help="run as USER (a name, #UID or UID) instead of the invoking user; `root` for root",
    )
    p.add_argument(
        "--if-up",
        action="store_true",
        help="when NS is not up, run in the current namespace instead of failing",
    )


def _take_options(req: Request, words: Sequence[str], *, stop_at_word: bool) -> int:
    """Apply our options at the front of WORDS to REQ; returns how many words were used.

    Stops at `--` (used) or, with STOP_AT_WORD, at the first word that is not an option."""
    i = 0
    while i < len(words):
        w = words[i]
        if w == "--":
            return i + 1
        if w in ("-h", "--help"):
            raise HelpWanted
        if w == "--if-up":
            req.if_up = True
        elif w == "--debug":
            req.debug = True
        elif w in ("-u", "--user"):
            if i + 1 >= len(words):
                raise UsageError(f"{w} needs a USER")
            req.user = words[i + 1]
            i += 1
        elif w.startswith("--user="):
            req.user = w[len("--user=") :]
        elif w.startswith("-u") and len(w) > 2:
            req.user = w[2:]
        elif w.startswith("-") and w != "-":
            raise UsageError(
                f"unknown option {w}", hint="put `--` before a command that starts with '-'"
            )
        elif stop_at_word:
            return i
        else:
            raise UsageError(f"unexpected argument {w!r}")
        i += 1
    return i


def parse(argv: Sequence[str]) -> Request:
    """`exec|shell [OPTIONS] NS [OPTIONS] [--] [CMD ARGS...]` -> Request (no argparse)."""
    if not argv or argv[0] not in ("exec", "shell"):
        raise UsageError("expected `exec` or `shell`")
    req = Request(command=argv[0], ns="", argv=[])
    words = list(argv[1:])
    # options before NS
    if words and words[0].startswith("-"):
        words = words[_take_options(req, words, stop_at_word=True) :]
    if not words:
        raise UsageError("NS is missing", hint=_EXEC_USAGE if req.command == "exec" else None)
    req.ns, words = words[0], words[1:]
    if req.command == "exec":
        n = _take_options(req, words, stop_at_word=True)
        req.argv = words[n:]
        if not req.argv:
            raise UsageError("no command given", hint=f"for a shell: wgns shell {req.ns}")
    else:
        _take_options(req, words, stop_at_word=False)
    return req


def run(
    ns: str,
    argv: Sequence[str] | None,
    *,
    user: str | None = None,
    if_up: bool = False,
    environ: Mapping[str, str] | None = None,
    debug: bool = False,
) -> NoReturn:
    """`wgns exec`: run ARGV in NS as the invoking user (or USER). Never returns.

    ARGV None: the user's shell. With IF_UP, a namespace that is not up means: run ARGV right
    here instead (a damaged record is still an error: it is not known to be down). DEBUG: say
    how /etc was shown (NS's /etc view, or file by file and why)."""
    from wgns.system import execview, netns, runas, startup

    if argv is not None and not argv:
        raise WgnsError("no command to run")
    environ = runas.initial_environment() if environ is None else environ
    netns.validate_name(ns)
    if posix.geteuid() != 0:
        raise WgnsError("wgns exec needs root", hint="run it with sudo")
    inside = not if_up or (startup.record_phase(ns) == "up" and netns.exists(ns))
    if inside:
        execview.check_ready(ns)
    # looked up here, with the host's name service (nscd included), as sudo does
    target = runas.resolve_target(user, environ)
    if argv is None:
        argv = [target.shell]
    env = runas.child_environment(environ, target, ns if inside else None)
    try:
        cwd: str | None = posix.getcwd()
    except OSError:
        cwd = None
    if inside:
        try:
            _how, why = execview.enter(ns)
        except OSError as e:
            raise WgnsError(f"cannot enter namespace {ns}: {e}") from e
        if debug:
            print(f"[#] {why}", file=sys.stderr, flush=True)
        if cwd is not None:
            with startup.suppress(OSError):
                posix.chdir(cwd)  # the same path in the new view of the file system
    runas.drop_privileges(target)
    runas.exec_command(argv, env)


def _run(req: Request) -> int:
    run(req.ns, req.argv or None, user=req.user, if_up=req.if_up, debug=req.debug)


def _show_help(command: str) -> int:
    """argparse's help of COMMAND (wgns.cli's parser would show the same: the same register)."""
    import argparse

    from wgns import log

    parser = argparse.ArgumentParser(prog="wgns")
    register(parser.add_subparsers(), log.add_debug_option)
    parser.parse_args([command, "--help"])  # exits
    return 0


def run_exec(args: argparse.Namespace) -> int:
    debug = bool(getattr(args, "debug", False))
    req = Request("exec", args.ns, [], user=args.user, if_up=args.if_up, debug=debug)
    words = list(args.cmd)
    try:  # argparse hands everything after NS to CMD
        n = _take_options(req, words, stop_at_word=True)
    except HelpWanted:
        return _show_help("exec")
    req.argv = words[n:]
    if not req.argv:
        raise UsageError("no command given", hint=f"for a shell: wgns shell {args.ns}")
    return _run(req)


def run_shell(args: argparse.Namespace) -> int:
    debug = bool(getattr(args, "debug", False))
    return _run(Request("shell", args.ns, [], user=args.user, if_up=args.if_up, debug=debug))


def main(argv: Sequence[str]) -> int:
    """`wgns exec|shell ...` (ARGV from the command on) without argparse.

    Returns only on failure (on success the process has become the command)."""
    args = list(argv)
    debug = "--debug" in (args[: args.index("--")] if "--" in args else args)
    try:
        return _run(parse(args))
    except HelpWanted:
        return _show_help(args[0])
    except WgnsError as e:
        return report(e, debug=debug)
    except KeyboardInterrupt:
        return interrupted()


def entry() -> None:
    """The launcher's entry point for `wgns exec|shell` (scripts/wgns-launcher.in), which skips
    wgns.cli: on success this process has become CMD; on failure, errors.leave()."""
    leave(main(sys.argv[1:]))
