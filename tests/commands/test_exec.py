"""`wgns exec` / `wgns shell` (issue 3): the real command, in a sandbox standing in for the host,
against a namespace brought up by the real `wgns up` through the simulated provider.

The first tests are pure (argument parsing, environment rules, choice of user); the rest run
commands inside the sandbox and look at what the child process really gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostdns import (
    HOST_NSSWITCH,
    NSCD_SOCKET,
    RESOLVED_SOCKET,
    STUB,
    connections,
    start_backdoors,
)
from wgns.commands import exec as exec_cmd
from wgns.errors import UsageError, WgnsError
from wgns.system import runas, startup
from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.launcher import interpreter as launcher_interpreter
from wgns.testing.launcher import render as render_launcher
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.provider import Provider

NS = "vpn"
USER, UID, GID = "alice", 4000, 4000
GROUPS = [4000, 4001, 4002]
WHOAMI = "whoami.test"  # answered by the provider's DNS server (and by the ISP's)
# Python for the child: the invoking user cannot read root's own interpreter (e.g. under /root)
CHILD_PY = "/usr/bin/python3"
#: Connects to each unix socket of argv and says whether it could.
SOCKET_PROBE = (
    "import socket, sys\n"
    "for p in sys.argv[1:]:\n"
    "    s = socket.socket(socket.AF_UNIX)\n"
    "    try:\n"
    "        s.connect(p); print(p, 'reachable')\n"
    "    except OSError as e:\n"
    "        print(p, type(e).__name__)\n"
)

# --------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("argv", "ns", "cmd", "user", "if_up"),
    [
        (["exec", "vpn", "--", "ls", "-l"], "vpn", ["ls", "-l"], None, False),
        (["exec", "vpn", "ls", "-l"], "vpn", ["ls", "-l"], None, False),
        (["exec", "vpn", "--user", "bob", "--if-up", "id"], "vpn", ["id"], "bob", True),
        (["exec", "--user=bob", "vpn", "-u", "#7", "id"], "vpn", ["id"], "#7", False),
        (["exec", "-ubob", "--if-up", "vpn", "--", "--if-up"], "vpn", ["--if-up"], "bob", True),
        (["exec", "vpn", "sh", "--user", "x"], "vpn", ["sh", "--user", "x"], None, False),
        (["shell", "vpn", "--user", "root"], "vpn", [], "root", False),
    ],
)
def test_command_line(
    argv: list[str], ns: str, cmd: list[str], user: str | None, if_up: bool
) -> None:
    req = exec_cmd.parse(argv)
    assert (req.ns, req.argv, req.user, req.if_up) == (ns, cmd, user, if_up)


@pytest.mark.parametrize(
    "argv",
    [["exec"], ["exec", "vpn"], ["exec", "vpn", "--"], ["exec", "vpn", "-x", "ls"], ["shell"]],
)
def test_command_line_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        exec_cmd.parse(argv)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["exec", "--help"], "usage: wgns exec NS [--user USER] [--if-up] [--] CMD [ARGS...]"),
        (["exec", "vpn", "-h", "ls"], "usage: wgns exec NS"),
        (["shell", "vpn", "--help"], "usage: wgns shell NS [--user USER] [--if-up]"),
    ],
)
def test_help_is_argparses_from_the_same_register(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launcher's own parser hands -h/--help to argparse, as `wgns --help exec` shows it."""
    with pytest.raises(SystemExit) as info:
        exec_cmd.main(argv)
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(usage)
    assert "--if-up" in out and "--debug" in out


def _target(uid: int = UID, shell: str = "/bin/sh") -> runas.Target:
    return runas.Target(uid, GID, tuple(GROUPS), USER, "/home/alice", shell)


def test_environment_is_kept_as_sudo_E_keeps_it() -> None:
    env = {
        "FOO": "bar",
        "PATH": "/opt/x/bin:/usr/bin",
        "DISPLAY": ":0",
        "XDG_RUNTIME_DIR": "/run/user/4000",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "../../tmp/x",  # unsafe value: dropped
        "TZ": "Europe/Paris",
        "LD_PRELOAD": "/tmp/evil.so",
        "LD_LIBRARY_PATH": "/tmp",
        "BASH_FUNC_f%%": "() {  echo hi\n}",
        "PYTHONPATH": "/tmp",
        "LOCALDOMAIN": "evil.example",
        "RES_OPTIONS": "ndots:9",
        "HOSTALIASES": "/tmp/aliases",
        "IFS": ":",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "SHELL": "/bin/bash",
        "SUDO_UID": "4000",
        "SUDO_USER": "alice",
        "SUDO_COMMAND": "/usr/bin/wgns exec vpn id",
        "WGNS_NS": "other",
    }
    out = runas.child_environment(env, _target(), NS)
    assert out == {
        "FOO": "bar",
        "PATH": "/opt/x/bin:/usr/bin",
        "DISPLAY": ":0",
        "XDG_RUNTIME_DIR": "/run/user/4000",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "TZ": "Europe/Paris",
        "HOME": "/home/alice",
        "USER": USER,
        "LOGNAME": USER,
        "SHELL": "/bin/sh",
        "WGNS_NS": NS,
    }
    # outside a namespace (--if-up, NS down) WGNS_NS is not inherited; root keeps SUDO_*
    root = runas.Target(0, 0, (0,), "root", "/root", "/bin/bash")
    out = runas.child_environment(env, root, None)
    assert "WGNS_NS" not in out and out["SUDO_USER"] == "alice" and out["HOME"] == "/root"
    assert runas.child_environment({}, root, None)["PATH"] == runas.DEFAULT_PATH


@pytest.mark.parametrize(
    ("name", "value", "dropped"),
    [
        ("TZ", "UTC", False),
        ("TZ", ":Europe/Paris", False),
        ("TZ", "/usr/share/zoneinfo/UTC", False),
        ("TZ", "/etc/localtime", True),
        ("TZ", "../../etc/shadow", True),
        ("TERM", "xterm%n", True),
        ("COLORTERM", "truecolor", False),
        ("X", "() { :; }", True),
        ("LD_AUDIT", "x", True),
        ("PERL5LIB", "x", True),
        ("EDITOR", "/usr/bin/vi", False),
    ],
)
def test_sudo_rules(name: str, value: str, dropped: bool) -> None:
    assert runas.sudo_drops(name, value) is dropped


def test_target_user() -> None:
    # sudo's variables name the invoking user (trusted only when wgns runs as root)
    t = runas.resolve_target(None, {"SUDO_UID": "65534", "SUDO_GID": "65534"}, caller_uid=0)
    assert (t.uid, t.gid, t.name) == (65534, 65534, "nobody")
    t = runas.resolve_target(None, {"PKEXEC_UID": "65534"}, caller_uid=0)
    assert (t.uid, t.name) == (65534, "nobody")
    # root logged in as root is the invoking user; --user picks anyone
    assert runas.resolve_target(None, {}, caller_uid=0).uid == 0
    assert runas.resolve_target("nobody", {"SUDO_UID": "0"}, caller_uid=0).uid == 65534
    t = runas.resolve_target("#4321", {}, caller_uid=0)  # no passwd entry, like sudo -u '#N'
    assert (t.uid, t.gid, t.groups, t.name, t.home) == (4321, 65534, (65534,), "4321", "/")
    with pytest.raises(WgnsError):
        runas.resolve_target("no-such-user-here", {}, caller_uid=0)
    with pytest.raises(WgnsError):
        runas.resolve_target(None, {"SUDO_UID": "x"}, caller_uid=0)


# ------------------------------------------------------------------------------ in the sandbox


def add_user(sandbox: Sandbox) -> None:
    """alice (4000) with supplementary groups wgx1 (4001) and wgx2 (4002), in the sandbox's
    /etc (an overlay: the host's /etc is never written)."""
    passwd = sandbox.read_text("/etc/passwd")
    sandbox.write_file("/etc/passwd", passwd + f"{USER}:x:{UID}:{GID}:Alice:/home/{USER}:/bin/sh\n")
    group = sandbox.read_text("/etc/group")
    sandbox.write_file(
        "/etc/group", group + f"{USER}:x:{GID}:\nwgx1:x:4001:{USER}\nwgx2:x:4002:{USER}\n"
    )


def wgns_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "wgns", *args]


def wgns_env(
    sandbox: Sandbox, env: dict[str, str] | None = None, *, uid: int | None = UID
) -> dict[str, str]:
    """The environment `sudo wgns ...` run by UID would have (UID None: plain root)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUDO_", "PKEXEC_"))}
    if uid is not None:
        base.update(SUDO_UID=str(uid), SUDO_GID=str(uid), SUDO_USER=USER)
    base.update(env or {})
    return sandbox.python_env(base)


def run_exec(
    sandbox: Sandbox,
    *args: str,
    uid: int | None = UID,
    env: dict[str, str] | None = None,
    check: bool = False,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """`wgns exec ARGS...` inside the sandbox, as if UID had typed `sudo wgns exec ...`."""
    kw.setdefault("cwd", SANDBOX_TMP)
    return sandbox.run(
        wgns_argv("exec", *args), env=wgns_env(sandbox, env, uid=uid), check=check, **kw
    )


def sh(sandbox: Sandbox, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_exec(sandbox, NS, "--", "sh", "-c", script, **kw)


def bring_up(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    client = provider.new_client()
    path = f"{SANDBOX_TMP}/{NS}.conf"
    sandbox.write_file(path, provider.client_conf(client), mode=0o600)
    wgns("up", path, "--name", NS)


@pytest.fixture
def up(sandbox: Sandbox, provider: Provider, wgns: Any) -> Iterator[Provider]:
    """NS brought up by the real `wgns up`; alice exists."""
    add_user(sandbox)
    bring_up(sandbox, provider, wgns)
    yield provider
    wgns("down", NS, check=False)


def ns_ifnames(sandbox: Sandbox) -> set[str]:
    out = sandbox.run(["ip", "-n", NS, "-j", "link", "show"]).stdout
    return {link["ifname"] for link in json.loads(out)}


# -------------------------------------------------------------------------- DNS and back doors


def netns_inode(sandbox: Sandbox, name: str) -> int:
    return int(sandbox.run(["stat", "-L", "-c", "%i", f"/run/netns/{name}"]).stdout)


@pytest.mark.parametrize("layout", ["stub-symlink", "dangling-symlink", "missing", "file"])
def test_names_resolve_through_the_tunnel_and_never_through_the_host(
    sandbox: Sandbox, provider: Provider, wgns: Any, layout: str
) -> None:
    # the sandbox host: resolved-style nsswitch.conf, nscd and resolved sockets, and an
    # /etc/resolv.conf (in LAYOUT) whose resolver is the ISP's
    add_user(sandbox)
    sandbox.write_file("/etc/nsswitch.conf", HOST_NSSWITCH)
    log = start_backdoors(sandbox)
    sandbox.write_file(STUB, f"nameserver {provider.isp_dns}\n")
    if layout != "file":
        sandbox.run(["rm", "-f", "/etc/resolv.conf"])
    if layout in ("stub-symlink", "dangling-symlink"):
        sandbox.run(["ln", "-s", STUB, "/etc/resolv.conf"])
    if layout == "dangling-symlink":
        sandbox.run(["rm", STUB])
    bring_up(sandbox, provider, wgns)
    vpn = netns_inode(sandbox, NS)

    # control: the back door is real here: `ip netns exec` lets glibc ask the host's "nscd"
    sandbox.run(["ip", "netns", "exec", NS, "getent", "hosts", WHOAMI], check=False)
    assert any(c["netns"] == vpn and c["path"] == NSCD_SOCKET for c in connections(sandbox, log))
    seen = len(connections(sandbox, log))
    queries = len(provider.dns_queries())

    # inside: glibc (getent, Python) and dig all ask the tunnel's DNS server
    r = sh(sandbox, f"getent hosts {WHOAMI}", check=True)
    assert set(r.stdout.split()) & {provider.web_v4, provider.web_v6}
    r = sh(sandbox, f"dig +short +time=2 +tries=1 {WHOAMI} A", check=True)
    assert r.stdout.split() == [provider.web_v4]
    code = f"import socket; print(sorted({{a[4][0] for a in socket.getaddrinfo({WHOAMI!r}, 80)}}))"
    r = run_exec(sandbox, NS, "--", CHILD_PY, "-I", "-S", "-c", code, check=True)
    assert r.stdout.strip() == repr(sorted([provider.web_v4, provider.web_v6]))
    assert len(provider.dns_queries()) >= queries + 4  # getent, dig, getaddrinfo A + AAAA
    assert provider.isp_dns_queries() == []

    # the host's name-service sockets are out of reach, and nsswitch has no bypass module
    argv = [
        CHILD_PY,
        "-I",
        "-S",
        "-c",
        SOCKET_PROBE,
        NSCD_SOCKET,
        "/var/run/nscd/socket",
        RESOLVED_SOCKET,
    ]
    r = run_exec(sandbox, NS, "--", *argv, check=True)
    assert "reachable" not in r.stdout, r.stdout
    r = sh(sandbox, "grep -E '^hosts:' /etc/nsswitch.conf; cat /etc/resolv.conf", check=True)
    assert r.stdout.splitlines()[0].split() == ["hosts:", "files", "dns"]
    assert sandbox.read_text(f"/etc/netns/{NS}/resolv.conf") in r.stdout
    assert not [c for c in connections(sandbox, log)[seen:] if c["netns"] == vpn]

    # ...while on the sandbox host itself they still answer (wgns changed nothing there)
    r = sandbox.run([sys.executable, "-I", "-S", "-c", SOCKET_PROBE, NSCD_SOCKET, RESOLVED_SOCKET])
    assert r.stdout.count("reachable") == 2


# ---------------------------------------------------------------------- who the child is


def status_of_child(sandbox: Sandbox, *args: str, **kw: Any) -> dict[str, str]:
    """KEY=VALUE facts about a child started by `wgns exec NS ARGS... -- sh -c ...`."""
    script = (
        'echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"; '
        "sed -n 's/^\\(Cap[A-Za-z]*\\):[[:space:]]*/\\1=/p' /proc/self/status; "
        'echo "HOME=$HOME"; echo "USER=$USER"; echo "LOGNAME=$LOGNAME"; echo "SHELL=$SHELL"; '
        'echo "PWD=$(pwd)"; echo "NS=$WGNS_NS"; echo "net=$(ls /sys/class/net | sort | xargs)"'
    )
    r = run_exec(sandbox, NS, *args, "--", "sh", "-c", script, check=True, **kw)
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_child_runs_as_the_invoking_user_without_capabilities(
    sandbox: Sandbox, up: Provider
) -> None:
    bounding = sandbox.run(["grep", "^CapBnd", "/proc/self/status"]).stdout.split()[1]
    wg = ns_ifnames(sandbox) - {"lo"}
    assert len(wg) == 1

    st = status_of_child(sandbox)  # as `sudo wgns exec` typed by alice
    assert (st["uid"], st["gid"]) == (str(UID), str(GID))
    assert sorted(map(int, st["groups"].split())) == GROUPS
    assert {k: st[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == {
        "CapInh": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapAmb": "0000000000000000",
    }
    assert st["CapBnd"] == bounding  # left as sudo leaves it
    assert (st["HOME"], st["USER"], st["LOGNAME"], st["SHELL"]) == (
        f"/home/{USER}",
        USER,
        USER,
        "/bin/sh",
    )
    assert st["PWD"] == SANDBOX_TMP and st["NS"] == NS
    assert st["net"].split() == sorted({"lo", *wg})

    # pkexec's variable, --user, and root only when asked (or when root itself is the invoker)
    assert status_of_child(sandbox, uid=None, env={"PKEXEC_UID": str(UID)})["uid"] == str(UID)
    st = status_of_child(sandbox, "--user", "root")
    assert (st["uid"], st["gid"], st["CapEff"], st["HOME"]) == ("0", "0", bounding, "/root")
    assert status_of_child(sandbox, uid=None)["uid"] == "0"
    st = status_of_child(sandbox, "--user", f"#{UID}", uid=None)
    assert (st["uid"], st["USER"]) == (str(UID), USER)


def test_child_sees_only_its_interfaces_and_cannot_get_back(sandbox: Sandbox, up: Provider) -> None:
    wg = ns_ifnames(sandbox) - {"lo"}
    r = sh(sandbox, "ip -o link show | cut -d: -f2 | cut -d@ -f1", check=True)
    assert sorted(r.stdout.split()) == sorted({"lo", *wg})
    # a process of the same user in the host's namespace: its ns file is openable by alice,
    # but joining it needs CAP_SYS_ADMIN over the host's namespace, even from a new user ns
    sleeper = sandbox.popen(
        ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", "sleep", "60"]
    )
    time.sleep(0.2)
    target = f"/proc/{sleeper.pid}/ns/net"
    for attempt in (
        f"nsenter --net={target} true",
        f"unshare --user --map-root-user nsenter --net={target} true",
    ):
        r = sh(sandbox, attempt)
        assert r.returncode != 0, attempt
    setns = (
        "import ctypes, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.setns(fd, 0x40000000), os.strerror(ctypes.get_errno()))\n"
    )
    r = run_exec(sandbox, NS, "--", CHILD_PY, "-I", "-S", "-c", setns, target, check=True)
    assert r.stdout.strip() == "-1 Operation not permitted"


# ------------------------------------------------------------------ exit status, stdio, signals


def test_exit_status_is_the_commands(sandbox: Sandbox, up: Provider) -> None:
    assert sh(sandbox, "exit 42").returncode == 42
    r = run_exec(sandbox, NS, "--", "no-such-command-anywhere")
    assert r.returncode == 127 and "command not found" in r.stderr
    sandbox.write_file(f"{SANDBOX_TMP}/not-executable", "#!/bin/sh\necho hi\n", mode=0o644)
    r = run_exec(sandbox, NS, "--", f"{SANDBOX_TMP}/not-executable")
    assert r.returncode == 126 and "Permission denied" in r.stderr
    # a script without #! runs with /bin/sh, as with execvp(3) and sudo
    sandbox.write_file(f"{SANDBOX_TMP}/no-shebang", "echo via-sh\n", mode=0o755)
    assert run_exec(sandbox, NS, "--", f"{SANDBOX_TMP}/no-shebang").stdout == "via-sh\n"
    # killed by signal N: the shell that started wgns sees 128+N (wgns *is* the command)
    inner = shlex.join(wgns_argv("exec", NS, "--", "sh", "-c", "kill -KILL $$"))
    r = sandbox.run(["sh", "-c", f"{inner}; echo rc=$?"], env=wgns_env(sandbox))
    assert r.stdout.strip() == "rc=137"
    assert sh(sandbox, "kill -TERM $$").returncode == -signal.SIGTERM


def test_stdin_stdout_stderr_pass_through(sandbox: Sandbox, up: Provider) -> None:
    data = "".join(f"line {i} {'x' * (i % 97)}\n" for i in range(20000))  # ~1.2 MB
    r = run_exec(sandbox, NS, "--", "cat", input=data, check=True)
    assert r.stdout == data
    r = sh(sandbox, "echo to-out; echo to-err >&2; read x; echo got=$x", input="hello\n")
    assert (r.stdout, r.stderr, r.returncode) == ("to-out\ngot=hello\n", "to-err\n", 0)
    # SIGPIPE is the default again (Python ignores it): `yes | head` ends
    r = sh(sandbox, "yes | head -n 3", timeout=10, check=True)
    assert r.stdout == "y\ny\ny\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_the_command(sandbox: Sandbox, up: Provider, sig: signal.Signals) -> None:
    name = sig.name[3:]
    script = f'trap "echo got-{name}; exit 42" {name}; echo ready; while :; do sleep 0.05; done'
    proc = sandbox.popen(
        wgns_argv("exec", NS, "--", "sh", "-c", script),
        env=wgns_env(sandbox),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    # no wgns process in between: the pid we started is the command's
    with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sh"
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=10) == 42
    assert proc.stdout.read() == f"got-{name}\n".encode()
    sandbox.untrack(proc)


# ------------------------------------------------------------------------------------ terminal


def _set_ctty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_until(fd: int, needle: bytes, buf: bytearray, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got {bytes(buf)!r}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: every slave end is closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {needle!r}; got {bytes(buf)!r}")
            buf += chunk


def test_interactive_shell_through_a_pty(sandbox: Sandbox, up: Provider) -> None:
    master, slave = os.openpty()
    proc = sandbox.popen(
        wgns_argv("shell", NS),
        env=wgns_env(sandbox, {"TERM": "dumb", "PS1": "$ "}),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_set_ctty,
    )
    os.close(slave)
    buf = bytearray()
    try:
        _read_until(master, b"$ ", buf, 20)
        os.write(master, b'echo "in=$WGNS_NS as=$(id -un)"; tty\n')
        _read_until(master, b"in=vpn as=alice", buf, 10)
        _read_until(master, b"/dev/pts/", buf, 10)
        # Ctrl-C stops the foreground job, not the shell
        os.write(master, b"sleep 30\n")
        time.sleep(0.5)
        started = time.monotonic()
        os.write(master, b"\x03")
        os.write(master, b"echo after-sleep-$?\n")
        _read_until(master, b"after-sleep-130", buf, 10)
        assert time.monotonic() - started < 5
        os.write(master, b"exit 7\n")
        assert proc.wait(timeout=10) == 7
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        sandbox.untrack(proc)
        os.close(master)


# --------------------------------------------------------------------- when NS is not there


def test_if_up_runs_outside_when_the_namespace_is_down(
    sandbox: Sandbox, up: Provider, wgns: Any
) -> None:
    script = 'echo "ns=$WGNS_NS net=$(ls /sys/class/net | tr "\\n" " ")"'
    r = run_exec(sandbox, NS, "--if-up", "--", "sh", "-c", script, check=True)
    assert r.stdout.startswith(f"ns={NS} ") and "wg" in r.stdout
    wgns("down", NS)
    r = run_exec(sandbox, NS, "--if-up", "--", "sh", "-c", script, check=True)
    assert r.stdout.startswith("ns= ") and up.host_uplink in r.stdout and "wg" not in r.stdout
    r = run_exec(sandbox, NS, "--if-up", "--", "id", "-u", check=True)
    assert r.stdout.strip() == str(UID)  # the user is dropped to outside too


def test_unknown_or_down_namespace_is_an_error_and_nothing_runs(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    marker = f"{SANDBOX_TMP}/ran"
    touch = ["--", "touch", marker]
    r = run_exec(sandbox, "nope", *touch)
    assert (r.returncode, r.stderr.strip()) == (
        1,
        "wgns: no namespace nope (bring it up with `wgns up PROFILE --name nope`)",
    )
    sandbox.run(["ip", "netns", "add", "plain"])
    r = run_exec(sandbox, "plain", *touch)
    assert r.returncode == 1 and "not managed by wgns" in r.stderr
    sandbox.run(["ip", "netns", "del", "plain"])
    r = run_exec(sandbox, "../etc", *touch)
    assert r.returncode == 2 and "invalid namespace name" in r.stderr
    add_user(sandbox)
    bring_up(sandbox, provider, wgns)
    wgns("down", NS)
    r = run_exec(sandbox, NS, *touch)
    assert r.returncode == 1 and "wgns: no namespace vpn" in r.stderr
    assert not sandbox.path(marker).exists()
    r = sandbox.run(wgns_argv("shell", "nope"), env=wgns_env(sandbox), check=False)
    assert r.returncode == 1


def test_environment_is_the_callers_exactly(sandbox: Sandbox, up: Provider) -> None:
    """From a minimal environment: nothing added but the documented variables (in particular
    not Python's own LC_CTYPE coercion), nothing of sudo's invocation kept."""
    argv = [
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        f"PYTHONPATH={wgns_env(sandbox)['PYTHONPATH']}",
        "FOO=bar",
        f"SUDO_UID={UID}",
        f"SUDO_GID={GID}",
        f"SUDO_USER={USER}",
        "SUDO_COMMAND=/usr/local/bin/wgns exec vpn -- env",
        *wgns_argv("exec", NS, "--", "env", "-0"),
    ]
    out = sandbox.run(argv, cwd=SANDBOX_TMP).stdout
    assert dict(item.split("=", 1) for item in out.split("\0") if item) == {
        "PATH": "/usr/bin:/bin",
        "FOO": "bar",
        "HOME": f"/home/{USER}",
        "USER": USER,
        "LOGNAME": USER,
        "SHELL": "/bin/sh",
        "WGNS_NS": NS,
    }


# -------------------------------------------------------------- compared with the old helper


@pytest.mark.skipif(shutil.which("sudo") is None, reason="needs sudo (scripts/packages/exec.txt)")
def test_environment_matches_the_double_sudo_helper(sandbox: Sandbox, up: Provider) -> None:
    """`sudo -E ip netns exec NS sudo -E -u '#UID' -g '#GID' env` versus `wgns exec NS env`:
    the same variables, except for the documented differences (docs/exec.md)."""
    extra = {
        "FOO": "bar baz",
        "DISPLAY": ":0",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "LC_ALL": "x/y",
        "TZ": "/etc/localtime",
        "LD_LIBRARY_PATH": "/nonexistent",
        "BASH_FUNC_f%%": "() {  echo hi\n}",
        "PYTHONINSPECT": "",
        "IFS": " ",
        "PATH": "/usr/bin:/bin",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUDO_", "PKEXEC_"))}
    base.update(extra)
    helper = ["sudo", "-E", "ip", "netns", "exec", NS]
    helper += ["sudo", "-E", "-u", f"#{UID}", "-g", f"#{GID}", "env", "-0"]
    theirs = sandbox.run(helper, env=base, cwd=SANDBOX_TMP).stdout
    ours = run_exec(sandbox, NS, "--", "env", "-0", env=extra, check=True).stdout

    def parse(out: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in out.split("\0") if item)

    t, o = parse(theirs), parse(ours)
    # sudo -E keeps the caller's HOME and SHELL and adds its own SUDO_*; wgns sets the user's
    # HOME and SHELL, names the namespace, and (not root) drops SUDO_*
    documented = {"HOME", "SHELL", "WGNS_NS", "PATH", "PYTHONPATH"}
    documented |= {k for k in {*t, *o} if k.startswith("SUDO_")}
    assert {k: v for k, v in t.items() if k not in documented} == {
        k: v for k, v in o.items() if k not in documented
    }
    assert o["HOME"] == f"/home/{USER}" and o["SHELL"] == "/bin/sh" and o["WGNS_NS"] == NS
    assert o["PATH"] == "/usr/bin:/bin"  # ours keeps PATH; sudo may apply secure_path
    assert "LD_LIBRARY_PATH" not in o and "BASH_FUNC_f%%" not in o and "LC_ALL" not in o
    assert "PYTHONPATH" not in o and "PYTHONPATH" not in t
    assert not any(k.startswith("SUDO_") for k in o)


def write_launcher(sandbox: Sandbox) -> str:
    """This checkout's launcher (wgns.testing.launcher), written inside SANDBOX."""
    path = f"{SANDBOX_TMP}/wgns"
    sandbox.write_file(path, render_launcher(), mode=0o755)
    return path


def imported_by(sandbox: Sandbox, argv: list[str], **kw: Any) -> tuple[set[str], Any]:
    """The modules ARGV (a launcher and its arguments) imports, by `python -X importtime`."""
    r = sandbox.run(
        [launcher_interpreter(), "-I", "-S", "-X", "importtime", *argv], check=False, **kw
    )
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    return imported, r


#: What `wgns exec` must never load: each costs it milliseconds (wgns.system.startup).
SLOW = {"wgns.cli", "argparse", "json", "ctypes", "re", "contextlib", "os", "stat", "typing"}
SLOW |= {"dataclasses", "subprocess", "signal", "pathlib", "shutil", "hashlib", "enum"}


def test_launcher_runs_exec_without_loading_the_cli(sandbox: Sandbox, up: Provider) -> None:
    """`wgns exec` is started for every wrapped command: the launcher goes straight to its own
    parser and the namespace's record (_json's scanner, no json), and runs the command."""
    launcher = write_launcher(sandbox)
    env = wgns_env(sandbox)
    imported, r = imported_by(sandbox, [launcher, "exec", NS, "--", "true"], env=env)
    assert r.returncode == 0, r.stderr
    assert {"wgns.commands.exec", "wgns.system.execview", "wgns.system.runas"} <= imported
    assert "_json" in imported  # the record was read...
    assert not imported & SLOW, sorted(imported & SLOW)  # ...by the shims of startup.py
    assert not any(m.startswith("wgns.engine") for m in imported)
    imported, r = imported_by(sandbox, [launcher, "exec", "nope", "--", "true"], env=env)
    assert r.returncode == 1
    assert "wgns: no namespace nope" in r.stderr and not imported & SLOW
    other = sandbox.run([launcher, "--version"], env=env)
    assert other.stdout.startswith("wgns ")


def test_damaged_record_is_one_line_naming_the_file(sandbox: Sandbox, up: Provider) -> None:
    """Issue 12, edge case 4: a truncated record made `wgns exec` print a SystemError traceback."""
    record = f"/run/wgns/{NS}.json"
    intact = sandbox.read_text(record)
    assert json.loads(intact)["phase"] == "up"
    assert startup.loads(intact) == json.loads(intact)  # the real record, as the engine wrote it
    launcher = write_launcher(sandbox)
    marker = f"{SANDBOX_TMP}/ran"
    try:
        for cut in (len(intact) // 2, intact.index('"phase"') + 3, 1, 0):
            sandbox.write_file(record, intact[:cut])
            for argv in (
                [launcher, "exec", NS, "--", "touch", marker],
                [launcher, "exec", NS, "--if-up", "--", "touch", marker],
                wgns_argv("exec", NS, "--", "touch", marker),
            ):
                r = sandbox.run(argv, env=wgns_env(sandbox), check=False)
                assert r.returncode == 1, (cut, r.stderr)
                assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
                assert r.stderr.startswith(f"wgns: state record {record} is damaged ("), r.stderr
                assert "delete the file" in r.stderr
                assert not sandbox.path(marker).exists()
        sandbox.write_file(record, json.dumps({"phase": "up"})[:-1] + ', "extra": [1, 2]}')
        r = run_exec(sandbox, NS, "--", "true")  # any valid layout is read
        assert r.returncode == 0, r.stderr
    finally:
        sandbox.write_file(record, intact)  # for the fixture's `wgns down`


# --------------------------------------------------------- what wgns itself runs inside a netns

CALL_IN_VIEW = r"""
import json, os, sys
from wgns.system import execview
from wgns.errors import WgnsError
ns = sys.argv[1]
out = {}
out["inside"] = json.loads(execview.call_in_view(ns, lambda: json.dumps({
    "net": os.stat("/proc/self/ns/net").st_ino,
    "resolv": open("/etc/resolv.conf").read(),
    "nscd": os.listdir("/run/nscd"),
    "pid": os.getpid(),
})))
out["caller"] = {"net": os.stat("/proc/self/ns/net").st_ino, "pid": os.getpid(),
                 "mnt": os.readlink("/proc/self/ns/mnt"), "nscd": os.listdir("/run/nscd")}
def fail():
    raise WgnsError("it went wrong", hint="do this")
try:
    execview.call_in_view(ns, fail)
except WgnsError as e:
    out["error"] = [e.message, e.hint]
try:
    execview.call_in_view(ns, lambda: str(1 // 0))
except WgnsError as e:
    out["crash"] = [e.message, e.hint]
try:
    execview.call_in_view("no-such-ns", lambda: "unreachable")
except WgnsError as e:
    out["missing"] = e.message
print(json.dumps(out))
"""


def test_call_in_view_works_in_the_namespace_view_and_reports_errors(
    sandbox: Sandbox, up: Provider
) -> None:
    start_backdoors(sandbox)  # /run/nscd exists on the host and must look empty inside
    mnt_before = sandbox.python("import os; print(os.readlink('/proc/self/ns/mnt'))").stdout
    out = json.loads(sandbox.python(["-c", CALL_IN_VIEW, NS]).stdout)
    inside, caller = out["inside"], out["caller"]
    assert inside["net"] == netns_inode(sandbox, NS) != caller["net"]
    assert inside["pid"] != caller["pid"]  # a child did the work...
    assert inside["resolv"] == sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    assert inside["nscd"] == [] and caller["nscd"] == ["socket"]
    assert caller["mnt"] == mnt_before.strip()  # ...and the caller's mounts are untouched
    assert out["error"] == ["it went wrong", "do this"]
    assert out["crash"][0] == f"cannot work inside {NS}: integer division or modulo by zero"
    assert "no-such-ns" in out["missing"]
