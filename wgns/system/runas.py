"""Becoming the user who asked: the second half of `wgns exec` (the first is execview).

1. **Who**: the target user (:func:`resolve_target`): ``--user``, else the invoker of sudo or
   pkexec, else the caller.
2. **Environment**: the caller's, minus what `sudo -E` removes, with HOME, USER, LOGNAME and SHELL
   of the target user (see :func:`child_environment` and docs/exec.md).
3. **Privileges**: supplementary groups, gid, uid of the target user (all of real, effective,
   saved), then no capability left in any set (except for root, who keeps root's, as with sudo).
4. execve(2) of the command searched in PATH; 127 when it is not found, 126 when it cannot be
   executed.

On `wgns exec`'s path: see wgns.system.startup for what that means for imports.
"""

from __future__ import annotations

import errno
import posix
import pwd
import sys

from wgns.errors import WgnsError
from wgns.system import libc
from wgns.system.startup import SIG_DFL, SIGPIPE, SIGXFSZ, fsdecode, join, set_signal, suppress

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wgns.system.startup)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import NoReturn

#: Variables `sudo -E` removes (Debian's sudo 1.9, `sudo -V` as root: "Environment variables to
#: remove"). A trailing '*' matches any suffix; "*=()*" is matched against NAME=VALUE and removes
#: exported bash functions.
SUDO_ENV_DELETE = (
    "IFS",
    "CDPATH",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "HOSTALIASES",
    "NLSPATH",
    "PATH_LOCALE",
    "LD_*",
    "_RLD*",
    "TERMINFO",
    "TERMINFO_DIRS",
    "TERMPATH",
    "TERMCAP",
    "ENV",
    "BASH_ENV",
    "PS4",
    "GLOBIGNORE",
    "BASHOPTS",
    "SHELLOPTS",
    "JAVA_TOOL_OPTIONS",
    "PERLIO_DEBUG",
    "PERLLIB",
    "PERL5LIB",
    "PERL5OPT",
    "PERL5DB",
    "FPATH",
    "NULLCMD",
    "READNULLCMD",
    "ZDOTDIR",
    "TMPPREFIX",
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "RUBYLIB",
    "RUBYOPT",
    "*=()*",
)
#: Variables `sudo -E` removes when their value is unsafe: contains '/' or '%' (TZ: see
#: :func:`_tz_is_safe`).
SUDO_ENV_CHECK = ("COLORTERM", "LANG", "LANGUAGE", "LC_*", "LINGUAS", "TERM", "TZ")
#: Describing the sudo/pkexec invocation of wgns: removed when the command does not run as root
#: (it was not started by sudo/pkexec; only wgns was).
INVOKER_VARS = ("SUDO_COMMAND", "SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_PS1", "PKEXEC_UID")
#: Set to the namespace name when the command runs inside one (removed otherwise).
NS_VAR = "WGNS_NS"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY_GID = 65534
_ZONEINFO = "/usr/share/zoneinfo"
_PATH_MAX = 4096


_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class ExecError(WgnsError):
    """The command could not be started: exit status 126 or 127 like a shell's."""

    def __init__(self, message: str, exit_code: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


# ------------------------------------------------------------------------------------ who runs


class Target:
    """The user a command runs as. (A plain class, not a dataclass: the dataclasses import
    costs `wgns exec` ~10 ms, see wgns.system.startup.)"""

    __slots__ = ("gid", "groups", "home", "name", "shell", "uid")

    def __init__(
        self, uid: int, gid: int, groups: tuple[int, ...], name: str, home: str, shell: str
    ) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.name = name
        self.home = home
        self.shell = shell

    def __repr__(self) -> str:
        return f"Target(uid={self.uid}, gid={self.gid}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__
        )

    def __hash__(self) -> int:
        return hash((self.uid, self.gid, self.groups))


def _pw_by_uid(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _parse_id(text: str, what: str) -> int:
    if not text.isdigit() or int(text) >= 2**32 - 1:
        raise WgnsError(f"invalid {what} {text!r}")
    return int(text)


def resolve_target(
    user: str | None, environ: Mapping[str, str], *, caller_uid: int | None = None
) -> Target:
    """Who the command runs as.

    USER (``--user``): a user name, ``#UID`` or a number. Otherwise the user who invoked wgns
    through sudo (SUDO_UID, SUDO_GID) or pkexec (PKEXEC_UID); otherwise the caller itself (root
    logged in as root). The environment is trusted only when the caller is root (sudo and
    pkexec set those variables; anyone else could merely forge them).
    """
    caller = posix.getuid() if caller_uid is None else caller_uid
    pw: pwd.struct_passwd | None
    gid: int | None = None
    if user is not None:
        if user.startswith("#"):
            uid = _parse_id(user[1:], "user id")
            pw = _pw_by_uid(uid)
        else:
            try:
                pw = pwd.getpwnam(user)
                uid = pw.pw_uid
            except KeyError:
                if not user.isdigit():
                    raise WgnsError(f"unknown user {user!r}") from None
                uid = _parse_id(user, "user id")
                pw = _pw_by_uid(uid)
    elif caller == 0 and environ.get("SUDO_UID"):
        uid = _parse_id(environ["SUDO_UID"], "SUDO_UID")
        pw = _pw_by_uid(uid)
        if environ.get("SUDO_GID"):
            gid = _parse_id(environ["SUDO_GID"], "SUDO_GID")
    elif caller == 0 and environ.get("PKEXEC_UID"):
        uid = _parse_id(environ["PKEXEC_UID"], "PKEXEC_UID")
        pw = _pw_by_uid(uid)
    else:
        uid = caller
        pw = _pw_by_uid(uid)
        gid = posix.getgid()
    if pw is not None:
        if gid is None:
            gid = pw.pw_gid
        try:
            groups = tuple(posix.getgrouplist(pw.pw_name, gid))
        except OSError:
            groups = (gid,)
        return Target(
            uid=uid,
            gid=gid,
            groups=groups,
            name=pw.pw_name,
            home=pw.pw_dir or "/",
            shell=pw.pw_shell or "/bin/sh",
        )
    # a uid without a passwd entry, like `sudo -u '#UID'`
    if gid is None:
        gid = 0 if uid == 0 else NOBODY_GID
    return Target(uid=uid, gid=gid, groups=(gid,), name=str(uid), home="/", shell="/bin/sh")


# ------------------------------------------------------------------------------- environment


class _Patterns:
    """sudo's name patterns, split once: exact names, and the prefixes of "NAME*" patterns (a
    wrapped command's start pays for every variable of the environment tested here)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and "*" not in p[:-1])

    def match(self, name: str) -> bool:
        return name in self.exact or name.startswith(self.prefixes)


_DELETE = _Patterns([p for p in SUDO_ENV_DELETE if "=" not in p])
_CHECK = _Patterns(SUDO_ENV_CHECK)


def _tz_is_safe(value: str) -> bool:
    """sudo's tz_is_safe(): a zone name or a path below the zoneinfo directory."""
    if value.startswith(":"):
        value = value[1:]
    if value.startswith("/") and not value.startswith(_ZONEINFO + "/"):
        return False
    last = "/"
    for i, ch in enumerate(value):
        if ch.isspace() or not ch.isprintable() or ord(ch) > 126:
            return False
        if last == "/" and value[i : i + 2] == ".." and value[i + 2 : i + 3] in ("/", ""):
            return False
        last = ch
    return len(value) < _PATH_MAX


def sudo_drops(name: str, value: str) -> bool:
    """True when `sudo -E` would not pass NAME=VALUE on (with sudo's default settings)."""
    if _DELETE.match(name):
        return True
    if "=()" in f"{name}={value}":  # sudo's "*=()*", matched against NAME=VALUE
        return True
    if _CHECK.match(name):
        if name == "TZ":
            return not _tz_is_safe(value)
        return "/" in value or "%" in value
    return False


def initial_environment() -> dict[str, str]:
    """The environment wgns was started with (/proc/self/environ), not os.environ: Python itself
    adds LC_CTYPE=C.UTF-8 to os.environ when the locale is C (PEP 538), which the command must
    not inherit."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {fsdecode(k): fsdecode(v) for k, v in posix.environ.items()}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env.setdefault(fsdecode(name), fsdecode(value))
    return env


def child_environment(environ: Mapping[str, str], target: Target, ns: str | None) -> dict[str, str]:
    """The command's environment: ENVIRON as `sudo -E` passes it on, then the target's identity.

    - removed: what sudo removes (:data:`SUDO_ENV_DELETE`, unsafe :data:`SUDO_ENV_CHECK`);
      :data:`INVOKER_VARS` unless the command runs as root;
    - set: HOME, USER, LOGNAME, SHELL from the target's passwd entry (USERNAME too when present);
      PATH when missing; WGNS_NS=NS inside a namespace (removed when running outside).
    """
    env = {k: v for k, v in environ.items() if not sudo_drops(k, v)}
    if target.uid != 0:
        for k in INVOKER_VARS:
            env.pop(k, None)
    env["HOME"] = target.home
    env["USER"] = target.name
    env["LOGNAME"] = target.name
    if "USERNAME" in env:
        env["USERNAME"] = target.name
    env["SHELL"] = target.shell
    env.setdefault("PATH", DEFAULT_PATH)
    if ns is None:
        env.pop(NS_VAR, None)
    else:
        env[NS_VAR] = ns
    return env


# ---------------------------------------------------------------------------- privileges


def clear_capabilities() -> None:
    """Empty the effective, permitted, inheritable and ambient sets of the calling thread."""
    try:
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel without ambient capabilities (< 4.3)
            raise
    libc.capset_empty()


def capability_sets(pid: str = "self") -> dict[str, int]:
    """{"CapInh": ..., "CapPrm": ..., "CapEff": ..., "CapBnd": ..., "CapAmb": ...}"""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, _, value = line.partition(":")
                out[key] = int(value.strip(), 16)
    return out


def drop_privileges(target: Target) -> None:
    """Become TARGET for good: groups, gid, uid; then no capabilities unless TARGET is root."""
    posix.setgroups(list(target.groups))
    posix.setresgid(target.gid, target.gid, target.gid)
    posix.setresuid(target.uid, target.uid, target.uid)
    if target.uid == 0:
        return  # root keeps root's capabilities, as under sudo
    clear_capabilities()
    caps = capability_sets()
    left = {k: v for k, v in caps.items() if k != "CapBnd" and v}
    if left:  # never run a user's command with privileges it did not ask for
        raise WgnsError(f"could not drop capabilities: {left}")


def _execve(path: str, argv: list[str], env: dict[str, str]) -> OSError:
    """execve(2), and for a file without #! line (ENOEXEC) /bin/sh FILE, as execvp(3) and sudo
    do. Returns the error when it does not work."""
    try:
        posix.execve(path, argv, env)
    except OSError as e:
        if e.errno != errno.ENOEXEC:
            return e
    try:
        posix.execve("/bin/sh", ["sh", path, *argv[1:]], env)
    except OSError as e:
        return e


def exec_command(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with ARGV, searched in env's PATH like a shell does.

    Raises ExecError 127 when no PATH entry has it (directories the user may not search count as
    not having it), 126 when one has it but it cannot be executed."""
    # Python ignores these; an exec'd program must get the default dispositions back
    for sig in (SIGPIPE, SIGXFSZ):
        set_signal(sig, SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with suppress(OSError, ValueError):
                stream.flush()
    args, environ, name = list(argv), dict(env), argv[0]
    if "/" in name:
        candidates = [name]
    else:
        path = environ.get("PATH", DEFAULT_PATH)
        candidates = [join(d or ".", name) for d in path.split(":")] if name else []
    failure: OSError | None = None
    for candidate in candidates:
        err = _execve(candidate, args, environ)
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            continue
        if err.errno == errno.EACCES and "/" not in name:
            try:
                posix.stat(candidate)
            except OSError:
                continue  # a PATH directory the user cannot search: not found there
        failure = failure or err
    if failure is None:
        why = "No such file or directory" if "/" in name else "command not found"
        raise ExecError(f"{name}: {why}", 127)
    raise ExecError(f"{name}: {failure.strerror}", 126)
