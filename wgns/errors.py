"""The one user-facing error type.

Everything that should reach the user as a clean message (and not a traceback) is raised as a
WgnsError. The CLI edge prints ``wgns: <message>`` and exits with ``exit_code``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wgns.system.startup)
if TYPE_CHECKING:
    from os import PathLike
    from typing import NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class WgnsError(Exception):
    """A failure the user can act on. Never carries secrets."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(WgnsError):
    """A profile or command line that cannot be used; nothing on the system was changed."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.key = key
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f":{line}"
            where += ": "
        if key is not None:
            message = f"{key}: {message}"
        super().__init__(where + message, hint=hint)


class UsageError(ConfigError):
    """A bad command line."""


class DamagedRecord(WgnsError):
    """A state record (/run/wgns/NS.json) that cannot be used: truncated, not JSON, edited.

    The same one line at every command: `wgns exec` (wgns.system.startup) and the engine."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(
            f"state record {path} is damaged ({why})",
            hint="wgns no longer knows what it set up: check `ip netns list` and `ip link`, "
            f"remove what is left by hand, delete the file (`rm {path}`), then `wgns up` again",
        )
        self.path = path


def report(e: WgnsError, *, debug: bool) -> int:
    """Show E at the edge as one line (with the traceback under --debug); its exit code."""
    import sys

    if debug:
        import traceback

        traceback.print_exc()
    print(f"wgns: {e}", file=sys.stderr)
    return e.exit_code


def interrupted() -> int:
    """Ctrl-C at the edge: one line, the shell's status for SIGINT."""
    import sys

    print("wgns: interrupted", file=sys.stderr)
    return 130


def leave(rc: int) -> NoReturn:
    """Exit with RC now, output flushed, without the interpreter's teardown (the entry points).

    wgns registers no atexit work and leaves no threads behind; finalising the ~70 modules a
    command imported costs ~9 ms, a sixth of a `wgns down`."""
    import posix
    import sys

    try:
        sys.stdout.flush()
    except OSError:  # e.g. a closed pipe: the output is lost, say so by the status
        rc = rc or EXIT_FAILURE
    try:
        sys.stderr.flush()
    finally:
        posix._exit(rc)
