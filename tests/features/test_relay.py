"""The built-in relay (wgns/features/forward/relay.py, relayd.py, supervise.py) on its own:
half-close, thousands of concurrent connections in one process and one thread, UDP sessions
with idle timeout, --from, stopping, and supervision (restart after a SIGKILL).

The relay runs in the sandbox's main namespace and connects into a test namespace, as it does
for `wgns forward`; the servers behind it are small Python programs inside that namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from wgns.testing.sandbox import Sandbox

INNER = "inner"

# Inside INNER on 127.0.0.1: TCP 7000 reads to EOF then answers "got N" and closes (the client
# half-closed); TCP 7001 sends "early" then half-closes, and echoes what it receives to stdout
# (a log) until EOF; TCP 7002 echoes; UDP 7003 echoes datagrams.
SERVERS = r"""
import socket, sys, threading
def tcp(port, handler):
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(4096)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
def count(c):
    n = 0
    while (b := c.recv(65536)):
        n += len(b)
    c.sendall(f"got {n}".encode()); c.close()
def early(c):
    c.sendall(b"early"); c.shutdown(socket.SHUT_WR)
    data = b""
    while (b := c.recv(65536)):
        data += b
    c.close()
    print("late", data.decode(), flush=True)
def echo(c):
    while (b := c.recv(65536)):
        c.sendall(b)
    c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 7003))
    while True:
        m, a = s.recvfrom(65535); s.sendto(m, a)
for port, h in ((7000, count), (7001, early), (7002, echo)):
    threading.Thread(target=tcp, args=(port, h), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
import time; time.sleep(0.2)
print("ready", flush=True)
threading.Event().wait()
"""

HALF_CLOSE = r"""
import socket
# client half-closes: the server still answers after our EOF
s = socket.create_connection(("127.0.0.1", 17000), timeout=5)
s.sendall(b"x" * 1_000_000); s.shutdown(socket.SHUT_WR)
data = b""
while (b := s.recv(65536)):
    data += b
print(data.decode())
# server half-closes first: we still send after its EOF, and it gets it
s = socket.create_connection(("127.0.0.1", 17001), timeout=5)
data = b""
while (b := s.recv(65536)):
    data += b
s.sendall(b"after-eof"); s.shutdown(socket.SHUT_WR)
assert s.recv(10) == b""
print(data.decode())
"""

MANY = r"""
import resource, selectors, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 17002), timeout=10)
    socks.append(s)
print("open", flush=True)
sys.stdin.readline()  # all connections are open at the same time now
for i, s in enumerate(socks):
    s.sendall(b"%d\n" % i)
ok = 0
for i, s in enumerate(socks):
    if s.recv(100) == b"%d\n" % i:
        ok += 1
print(ok, flush=True)
"""

UDP = r"""
import socket
got = 0
for i in range(50):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"ping %d" % i, ("127.0.0.1", 17003))
    got += s.recvfrom(100)[0] == b"ping %d" % i
print(got)
"""

FROM = r"""
import socket, sys
for src in ("127.0.0.2", "127.0.0.3"):
    s = socket.socket(); s.settimeout(3); s.bind((src, 0))
    try:
        s.connect(("127.0.0.1", 17002)); s.sendall(b"hi\n"); r = s.recv(10)
        print(src, r.decode().strip() or "eof")
    except OSError as e:
        print(src, "error", e.errno)
"""


def relay(sandbox: Sandbox, *args: str) -> subprocess.Popen[Any]:
    argv = sandbox.python_argv(["-m", "wgns.features.forward.relayd", "--ns", INNER, *args])
    p = sandbox.popen(
        argv, env=sandbox.python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read() if p.stderr else line
    return p


def setup(sandbox: Sandbox) -> subprocess.Popen[Any]:
    sandbox.run(["ip", "netns", "add", INNER])
    sandbox.run(["ip", "-n", INNER, "link", "set", "lo", "up"])
    p = sandbox.popen(["python3", "-c", SERVERS], netns=INNER, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def stop(p: subprocess.Popen[Any]) -> int:
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=5)


def test_tcp_half_close_both_ways_and_many_connections_in_one_thread(sandbox: Sandbox) -> None:
    servers = setup(sandbox)
    r1 = relay(sandbox, "--port", "17000", "--target-port", "7000")
    r2 = relay(sandbox, "--port", "17001", "--target-port", "7001")
    r3 = relay(sandbox, "--port", "17002", "--target-port", "7002", "--listen", "127.0.0.1")
    out = sandbox.run(["python3", "-c", HALF_CLOSE]).stdout.split()
    assert out == ["got", "1000000", "early"]
    assert servers.stdout is not None
    assert servers.stdout.readline().strip() == "late after-eof"

    n = 3000
    many = sandbox.popen(
        ["python3", "-c", MANY, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert many.stdout is not None and many.stdin is not None
    assert many.stdout.readline().strip() == "open"
    # one process, one thread, no children, for all of them
    pid = r3.pid
    assert len(os.listdir(sandbox.path(f"/proc/{pid}/task"))) == 1
    children = sandbox.run(["pgrep", "-P", str(pid)], check=False).stdout.split()
    assert children == []
    deadline = time.monotonic() + 10
    while (fds := len(os.listdir(sandbox.path(f"/proc/{pid}/fd")))) < 2 * n:
        assert time.monotonic() < deadline, f"{fds} fds"  # accepting is still going on
        time.sleep(0.05)
    # all accepted: each connection holds the client's socket and the one into INNER
    many.stdin.write("go\n")
    many.stdin.flush()
    assert many.stdout.readline().strip() == str(n)
    many.wait(timeout=30)
    for p in (r1, r2, r3):
        assert stop(p) == 0


def test_udp_sessions_idle_timeout_from_filter_and_errors(sandbox: Sandbox) -> None:
    setup(sandbox)
    ru = relay(
        sandbox, "--proto", "udp", "--port", "17003", "--target-port", "7003", "--idle", "0.5"
    )
    assert sandbox.run(["python3", "-c", UDP]).stdout.strip() == "50"
    fds = lambda: len(os.listdir(sandbox.path(f"/proc/{ru.pid}/fd")))  # noqa: E731
    assert fds() >= 50  # one upstream socket per client
    deadline = time.monotonic() + 5
    while fds() >= 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() < 20  # idle sessions closed

    rf = relay(
        sandbox, "--port", "17002", "--target-port", "7002", "--listen", "127.0.0.1",
        "--from", "127.0.0.2/32",
    )  # fmt: skip
    out = sandbox.run(["python3", "-c", FROM]).stdout.splitlines()
    assert out[0] == "127.0.0.2 hi"
    assert out[1].startswith("127.0.0.3 ")
    assert out[1] != "127.0.0.3 hi"

    # the port is taken: a clear message, exit status 1
    argv = sandbox.python_argv(["-m", "wgns.features.forward.relayd", "--ns", INNER,
                                "--port", "17002", "--target-port", "7002"])  # fmt: skip
    proc = sandbox.run(argv, env=sandbox.python_env(), check=False)
    assert proc.returncode == 1
    assert "tcp port 17002 is in use on the host (127.0.0.1:17002)" in proc.stderr
    # a namespace that does not exist
    argv = sandbox.python_argv(["-m", "wgns.features.forward.relayd", "--ns", "nosuch",
                                "--port", "17009", "--target-port", "7002"])  # fmt: skip
    proc = sandbox.run(argv, env=sandbox.python_env(), check=False)
    assert proc.returncode == 1 and "cannot open namespace nosuch" in proc.stderr
    assert stop(ru) == 0 and stop(rf) == 0


ECHO_ONCE = r"""
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    s.sendall(b"ping\n"); print(s.recv(10).decode().strip() or "eof")
except OSError as e:
    print("error", e.errno)
"""


def _children(sandbox: Sandbox, pid: int) -> list[int]:
    out = sandbox.run(["pgrep", "-P", str(pid)], check=False).stdout.split()
    return [int(p) for p in out]


def _wait_for(what: str, cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_supervised_relay_restarts_its_worker_after_sigkill(sandbox: Sandbox) -> None:
    setup(sandbox)
    sup = relay(sandbox, "--supervise", "--port", "17020", "--target-port", "7002")
    assert sandbox.run(["python3", "-c", ECHO_ONCE, "17020"]).stdout.strip() == "ping"
    (worker,) = _children(sandbox, sup.pid)
    # the worker is the relay: one thread, no children of its own
    assert len(os.listdir(sandbox.path(f"/proc/{worker}/task"))) == 1
    assert _children(sandbox, worker) == []

    sandbox.run(["kill", "-KILL", str(worker)])
    _wait_for("a new worker", lambda: [w for w in _children(sandbox, sup.pid) if w != worker])
    (again,) = _children(sandbox, sup.pid)
    assert again != worker
    assert sandbox.run(["python3", "-c", ECHO_ONCE, "17020"]).stdout.strip() == "ping"
    assert sup.poll() is None

    # the supervisor stops its worker with it
    assert stop(sup) == 0
    _wait_for("the worker to exit", lambda: not os.path.exists(sandbox.path(f"/proc/{again}")))
    assert sandbox.run(["python3", "-c", ECHO_ONCE, "17020"]).stdout.strip().startswith("error")
    assert sup.stderr is not None
    log = sup.stderr.read()
    assert f"worker {worker} relays" in log and f"worker {again} relays" in log
    assert "worker killed by SIGKILL" in log and "restarting in 0.1 s" in log
    assert "Traceback" not in log, log


def test_a_worker_outlives_no_supervisor_killed_with_sigkill(sandbox: Sandbox) -> None:
    setup(sandbox)
    sup = relay(sandbox, "--supervise", "--port", "17021", "--target-port", "7002")
    (worker,) = _children(sandbox, sup.pid)
    sup.kill()
    sup.wait(timeout=5)
    _wait_for(
        "the orphaned worker to exit", lambda: not os.path.exists(sandbox.path(f"/proc/{worker}"))
    )
    assert sandbox.run(["python3", "-c", ECHO_ONCE, "17021"]).stdout.strip().startswith("error")


def test_supervisor_gives_up_when_its_namespace_is_gone(sandbox: Sandbox) -> None:
    setup(sandbox)
    sup = relay(sandbox, "--supervise", "--port", "17022", "--target-port", "7002")
    (worker,) = _children(sandbox, sup.pid)
    sandbox.run(["ip", "netns", "del", INNER])
    sandbox.run(["kill", "-KILL", str(worker)])
    assert sup.wait(timeout=10) == 1
    assert sup.stderr is not None
    assert "is gone: giving up" in sup.stderr.read()


def test_backoff_is_bounded() -> None:
    from wgns.features.forward import supervise

    delays = [supervise.backoff(n) for n in range(1, 12)]
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == supervise.MAX_DELAY and delays == sorted(delays)


AS_SUPERVISED = r"""
import ipaddress, json, socket
from wgns.errors import WgnsError
from wgns.features.forward.ops import Relay
from wgns.profile.model import Forward, ForwardMode, Proto
from wgns.system import processes

def forward(port):
    return Forward(host_port=port, ns_port=7002, proto=Proto.TCP, mode=ForwardMode.RELAY,
                   sources=(ipaddress.ip_network("127.0.0.0/8"),))

out = {}
relay = Relay("inner", forward(17040))
pid, starttime = relay.start(None, "/run/rs/relay-17040.log")
relay.wait_ready()
out["alive"] = processes.process_alive(pid, starttime)
c = socket.create_connection(("127.0.0.1", 17040), timeout=3)
c.sendall(b"ping"); out["echo"] = c.recv(10).decode(); c.close()
out["stopped"] = processes.stop_process(pid, starttime)
out["alive_after"] = processes.process_alive(pid, starttime)

taken = socket.socket(); taken.bind(("127.0.0.1", 17041)); taken.listen()
refused = Relay("inner", forward(17041))
pid, starttime = refused.start(None, "/run/rs/relay-17041.log")
try:
    refused.wait_ready()
except WgnsError as e:
    out["refused"] = str(e)
processes.stop_process(pid, starttime)
out["refused_alive"] = processes.process_alive(pid, starttime)
print(json.dumps(out))
"""


def test_the_relay_runs_as_a_supervised_daemon_and_says_why_it_cannot(sandbox: Sandbox) -> None:
    """wgns starts a forward's relay through wgns.system.processes.Supervised: ready once it
    listens; a port it cannot bind is a WgnsError in the relay's own words, not an exit status."""
    servers = setup(sandbox)
    out = json.loads(sandbox.python(AS_SUPERVISED).stdout)
    assert out["alive"] and out["echo"] == "ping"
    assert out["stopped"] and not out["alive_after"]
    assert "tcp port 17041 is in use on the host (127.0.0.1:17041)" in out["refused"]
    assert "exited with status" not in out["refused"]
    assert not out["refused_alive"]
    stop(servers)
