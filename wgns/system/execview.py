"""Running a command inside a wgns namespace: the mechanism of `wgns exec` and `wgns shell`.

The calling (root, single-threaded) process transforms itself and then *execs* the command, so no
wgns process is left between the caller and the command: signals, the terminal, the exit status
and a death by signal are the command's own.

1. **Network**: setns(2) into /run/netns/NS.
2. **Mounts**: unshare(2) a mount namespace, make every mount a slave (nothing propagates back to
   the host; host mounts still propagate in), then

   * hide the host's name-service back doors: an empty read-only tmpfs over /run/nscd (nscd's
     socket), /run/systemd/resolve (systemd-resolved's varlink sockets and stub files) and
     /run/avahi-daemon (nss-mdns's socket), and their /var/run twins. A network namespace does
     not isolate filesystem unix sockets, so glibc would otherwise ask host daemons, which resolve
     over the host's network;
   * show /etc/netns/NS/* at /etc/* (like `ip netns exec`): a bind mount over a regular file; a
     mount *on the symlink itself* (open_tree + move_mount, which does not follow the last
     component) when /etc/FILE is a symlink, dangling or not, e.g. the systemd-resolved stub;
     and, when /etc/FILE does not exist (no mount point to use), a read-only overlay of
     /etc/netns/NS on top of /etc;
   * remount /sys so that /sys/class/net lists NS's interfaces.
3. **User**: supplementary groups, gid, uid of the target user (all of real, effective, saved),
   then no capability left in any set (except for root, who keeps root's, as with sudo).
4. **Environment**: the caller's, minus what `sudo -E` removes, with HOME, USER, LOGNAME and SHELL
   of the target user (see :func:`child_environment` and docs/exec.md).
5. execvp(2); 127 when the command is not found, 126 when it cannot be executed.

Steps 1 and 2 are also how wgns itself works inside a named namespace, through
:func:`call_in_view` in a child process: PreUp/PostUp hooks, and endpoint lookups in a named
birthplace.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub; signal's C half)
import errno
import posix
import pwd
import sys
from _stat import S_ISDIR, S_ISLNK  # stat.py is a wrapper of this C module

from wgns.engine import state
from wgns.errors import WgnsError, suppress
from wgns.system import libc, netns, paths

# Every import here is paid by every wrapped command: no contextlib, ctypes (wgns.system.libc
# instead), signal (its enum wrappers; _signal is the same functions), re, json or typing.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import NoReturn

#: Directories holding unix sockets through which host daemons resolve names for a client.
BACKDOOR_DIRS = (
    "/run/nscd",
    "/var/run/nscd",
    "/run/systemd/resolve",
    "/var/run/systemd/resolve",
    "/run/avahi-daemon",
    "/var/run/avahi-daemon",
)
#: Files of /etc/netns/NS without which `wgns exec` refuses to run anything.
REQUIRED_ETC_FILES = ("resolv.conf", "nsswitch.conf")

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


class ExecError(WgnsError):
    """The command could not be started: exit status 126 or 127 like a shell's."""

    def __init__(self, message: str, exit_code: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


# ------------------------------------------------------------------------------------ who runs


class Target:
    """The user a command runs as. (A plain class, not a dataclass: `wgns exec` is a wrapper
    started for every program, and the dataclasses import alone costs it ~12 ms.)"""

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
        return {paths.fsdecode(k): paths.fsdecode(v) for k, v in posix.environ.items()}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env.setdefault(paths.fsdecode(name), paths.fsdecode(value))
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


# ---------------------------------------------------------------------------- kernel helpers

_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_MS_RDONLY = 1
_ST_RDONLY = 1


def mount_on_link(source: str, link: str) -> None:
    """Mount a clone of SOURCE on the symlink LINK itself (the link is not followed)."""
    fd = libc.open_tree(source, _OPEN_TREE_CLONE | posix.O_CLOEXEC)
    try:
        libc.move_mount_fd(fd, link, _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        posix.close(fd)


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


# ------------------------------------------------------------------------ entering NS's world


def check_ready(ns: str) -> None:
    """Raise WgnsError unless NS is a wgns namespace that is up, with its /etc files."""
    netns.validate_name(ns)
    phase = state.phase_of(ns)
    if phase is None:
        if netns.exists(ns):
            raise WgnsError(
                f"namespace {ns} is not managed by wgns",
                hint="wgns exec runs commands only in namespaces that `wgns up` brought up",
            )
        raise WgnsError(
            f"no namespace {ns}", hint=f"bring it up with `wgns up PROFILE --name {ns}`"
        )
    if phase != "up" or not netns.exists(ns):
        raise WgnsError(f"namespace {ns} is not up", hint=f"see `wgns status {ns}`")
    etc_dir = netns.etc_dir_of(ns)
    for name in REQUIRED_ETC_FILES:
        if not paths.isfile(f"{etc_dir}/{name}"):
            raise WgnsError(
                f"{etc_dir}/{name} is missing: refusing to run with the host's name service",
                hint=f"`wgns down {ns}` and `wgns up` again rewrite it",
            )


def hide_backdoors(dirs: Sequence[str] = BACKDOOR_DIRS) -> list[str]:
    """Cover each existing directory of DIRS with an empty read-only tmpfs; returns those covered.

    Call inside a private mount namespace. /var/run usually links to /run: each directory is
    covered once."""
    found: dict[tuple[int, int], str] = {}
    for d in dirs:
        try:
            st = posix.stat(d)
        except OSError:
            continue
        if S_ISDIR(st.st_mode):
            found.setdefault((st.st_dev, st.st_ino), d)
    flags = _MS_RDONLY | netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC
    for d in found.values():
        netns.mount("tmpfs", d, "tmpfs", flags, "mode=0755,size=4k,nr_inodes=8")
    return list(found.values())


def bind_etc(etc_dir: str, etc: str = "/etc") -> str:
    """Show every entry of ETC_DIR at ETC/<entry>; returns how: "bind" or "overlay".

    Call inside a private mount namespace."""
    names = sorted(posix.listdir(etc_dir))
    plan: list[tuple[str, str, bool]] = []  # (source, target, target is a symlink)
    for name in names:
        target = paths.join(etc, name)
        try:
            st = posix.lstat(target)
        except FileNotFoundError:
            overlay_etc(etc_dir, etc)  # nothing to mount on: /etc itself gets a layer
            return "overlay"
        plan.append((paths.join(etc_dir, name), target, S_ISLNK(st.st_mode)))
    for source, target, is_link in plan:
        if not is_link:
            netns.mount(source, target, None, netns.MS_BIND)
            continue
        try:
            mount_on_link(source, target)
        except OSError:
            # no open_tree/move_mount (Linux < 5.2) or a kernel refusing mounts on symlinks
            overlay_etc(etc_dir, etc)
            return "overlay"
    return "bind"


def overlay_etc(etc_dir: str, etc: str = "/etc") -> None:
    """A read-only overlay on ETC whose top layer is a copy of ETC_DIR.

    overlayfs refuses a layer inside another layer (ETC_DIR is inside ETC), so ETC_DIR is first
    copied onto a tmpfs mounted over ETC_DIR itself (in this mount namespace only)."""
    import shutil  # only here: it is slow to import and rarely needed

    src = posix.open(etc_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        netns.mount("tmpfs", etc_dir, "tmpfs", netns.MS_NOSUID | netns.MS_NODEV, "mode=0755")
        shutil.copytree(f"/proc/self/fd/{src}", etc_dir, symlinks=True, dirs_exist_ok=True)
    finally:
        posix.close(src)
    try:
        netns.mount("overlay", etc, "overlay", _MS_RDONLY, f"lowerdir={etc_dir}:{etc}")
    except OSError as e:
        raise WgnsError(
            f"cannot show {etc_dir} at {etc}: an entry is missing from {etc} and "
            f"overlayfs failed ({e.strerror})",
            hint="create the missing file in /etc (an empty one will do), or load overlayfs",
        ) from e


def remount_sys() -> None:
    """A sysfs of the current network namespace at /sys (like `ip netns exec`)."""
    flags = netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC
    try:
        netns.umount("/sys", netns.MNT_DETACH)
    except OSError:
        # nothing to unmount, or it is busy: a read-only /sys cannot be covered read-write
        with suppress(OSError):
            if posix.statvfs("/sys").f_flag & _ST_RDONLY:
                flags |= _MS_RDONLY
    netns.mount("sysfs", "/sys", "sysfs", flags)


def enter(ns: str) -> None:
    """Move the calling process into NS's network namespace and a private view of the files.

    The process must be single-threaded and root. Irreversible: call only before exec."""
    fd = posix.open(netns.path_of(ns), posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        netns.setns(fd, netns.CLONE_NEWNET)
    finally:
        posix.close(fd)
    netns.unshare(netns.CLONE_NEWNS)
    netns.mount(None, "/", None, netns.MS_REC | netns.MS_SLAVE)
    hide_backdoors()
    etc_dir = str(netns.etc_dir_of(ns))
    if paths.isdir(etc_dir):  # a namespace wgns did not bring up may have none (ip netns too)
        bind_etc(etc_dir)
    remount_sys()


def call_in_view(ns: str, fn: Callable[[], str]) -> str:
    """FN's result, computed in a child process that has entered NS as `wgns exec` would
    (:func:`enter`): NS's network, its /etc/netns files, no host name-service back doors.

    For what wgns itself runs in a named namespace, the PreUp/PostUp hooks and endpoint lookups:
    a setns(2) of the network alone would leave them the host's resolv.conf and nscd. A WgnsError
    raised by FN is raised here again; any other failure becomes one."""
    rfd, wfd = posix.pipe2(posix.O_CLOEXEC)
    pid = posix.fork()
    if pid == 0:  # the child: report through the pipe, never return into the caller's code
        status = 1
        try:
            posix.close(rfd)
            try:
                enter(ns)
                reply = "ok\0" + fn()
                status = 0
            except WgnsError as e:
                reply = f"error\0{e.message}\0{e.hint or ''}"
            except BaseException as e:
                reply = f"error\0cannot work inside {ns}: {e}\0"
            data = reply.encode()
            while data:
                data = data[posix.write(wfd, data) :]
        finally:
            posix._exit(status)
    posix.close(wfd)
    try:
        chunks = []
        while chunk := posix.read(rfd, 65536):
            chunks.append(chunk)
    finally:
        posix.close(rfd)
        posix.waitpid(pid, 0)
    kind, _, rest = b"".join(chunks).decode().partition("\0")
    if kind == "ok":
        return rest
    message, _, hint = rest.partition("\0")
    raise WgnsError(message or f"a child working inside {ns} died", hint=hint or None)


# --------------------------------------------------------------------------- becoming the user


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
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with suppress(OSError, ValueError):
                stream.flush()
    args, environ, name = list(argv), dict(env), argv[0]
    if "/" in name:
        candidates = [name]
    else:
        path = environ.get("PATH", DEFAULT_PATH)
        candidates = [paths.join(d or ".", name) for d in path.split(":")] if name else []
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


def run(
    ns: str,
    argv: Sequence[str] | None,
    *,
    user: str | None = None,
    if_up: bool = False,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """`wgns exec`: run ARGV in NS as the invoking user (or USER). Never returns.

    ARGV None: the user's shell. With IF_UP, a namespace that is not up means: run ARGV right
    here instead."""
    if argv is not None and not argv:
        raise WgnsError("no command to run")
    environ = initial_environment() if environ is None else environ
    netns.validate_name(ns)
    if posix.geteuid() != 0:
        raise WgnsError("wgns exec needs root", hint="run it with sudo")
    inside = True
    if if_up:
        inside = state.is_up(ns) and netns.exists(ns)
        if inside:
            check_ready(ns)
    else:
        check_ready(ns)
    # looked up here, with the host's name service (nscd included), as sudo does
    target = resolve_target(user, environ)
    if argv is None:
        argv = [target.shell]
    env = child_environment(environ, target, ns if inside else None)
    try:
        cwd: str | None = posix.getcwd()
    except OSError:
        cwd = None
    if inside:
        try:
            enter(ns)
        except OSError as e:
            raise WgnsError(f"cannot enter namespace {ns}: {e}") from e
        if cwd is not None:
            with suppress(OSError):
                posix.chdir(cwd)  # the same path in the new view of the file system
    drop_privileges(target)
    exec_command(argv, env)
