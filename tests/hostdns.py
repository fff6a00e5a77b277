"""The sandbox host's name-service back doors, for tests that prove wgns closes them.

Unix sockets standing in for nscd and systemd-resolved, and the nsswitch.conf of a host that uses
them: a network namespace does not isolate filesystem sockets, so a process in a wgns namespace
that reached one would have its names resolved over the host's network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.sandbox import Sandbox

# Unix sockets standing in for nscd and systemd-resolved: every connection is logged with the
# network namespace of the connecting process and the nscd request type it sent.
LISTENER = r"""
import json, os, socket, struct, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def serve(path, srv):
    while True:
        conn, _ = srv.accept()
        pid, uid, gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            netns = None
        conn.settimeout(1)
        try:
            head = conn.recv(12)
        except OSError:
            head = b""
        kind = struct.unpack("iii", head)[1] if len(head) == 12 else None
        log.write(json.dumps({"path": path, "pid": pid, "netns": netns, "type": kind}) + "\n")
        conn.close()
for path in sys.argv[2:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(64)
    threading.Thread(target=serve, args=(path, srv), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
NSCD_SOCKET = "/run/nscd/socket"
RESOLVED_SOCKET = "/run/systemd/resolve/io.systemd.Resolve"
STUB = "/run/systemd/resolve/stub-resolv.conf"
HOST_NSSWITCH = """\
passwd:         files
group:          files
shadow:         files
hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] myhostname dns
networks:       files
"""


def start_backdoors(sandbox: Sandbox) -> str:
    """Fake nscd and resolved sockets on the sandbox host; returns the connection log path."""
    log = f"{SANDBOX_TMP}/backdoor.log"
    sandbox.write_file(log, "")
    sandbox.write_file(f"{SANDBOX_TMP}/listener.py", LISTENER)
    proc = sandbox.popen(
        [
            sys.executable,
            "-I",
            "-S",
            f"{SANDBOX_TMP}/listener.py",
            log,
            NSCD_SOCKET,
            RESOLVED_SOCKET,
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return log


def connections(sandbox: Sandbox, log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sandbox.read_text(log).splitlines()]
