"""The "internet" of the simulation: HTTP what-is-my-address, UDP and TCP echo (stdlib only).

    python -m wgns.testing.sim.echo [--http 80] [--echo 7] [--listen 0.0.0.0 --listen ::]
        [--log FILE]

HTTP (any method but only GET/HEAD get a body):

* ``/`` (any other path too): the client's IP address as text, newline-terminated;
* ``/bytes/N``: N bytes of ``x`` (for MTU and throughput checks; at most 100 MB).

Port ``--echo`` echoes UDP datagrams and TCP streams back. With ``--log``, every HTTP request and
UDP datagram is appended as one JSON line (``{"proto": "http", "client": ..., "path": ...}``).
Prints ``ready`` once every socket is bound.

This file must stay stdlib-only and importable on its own: the provider runs it as a script
(``python -I -S echo.py``) for a fast start.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Sequence

if __package__:
    from wgns.testing.sim.servutil import bind_socket, json_line, parse_args
else:  # run as a script (`python -E -s -S .../echo.py`): its directory is on sys.path
    from servutil import bind_socket, json_line, parse_args  # type: ignore[import-not-found,no-redef]

MAX_BYTES = 100 * 1024 * 1024


def client_ip(peer: tuple[str, int] | tuple[str, int, int, int]) -> str:
    ip = peer[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip.split("%", 1)[0]


class Echo:
    def __init__(self, log: io.TextIOWrapper | None) -> None:
        self.log = log
        self.lock = threading.Lock()

    def record(self, **fields: str | int) -> None:
        if self.log is None:
            return
        with self.lock:
            self.log.write(json_line(**fields) + "\n")
            self.log.flush()

    def http_conn(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(10)
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data and b"\n\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > 65536:
                        break
                line = data.split(b"\n", 1)[0].decode("latin-1").strip()
                parts = line.split()
                method = parts[0] if parts else "GET"
                path = parts[1] if len(parts) > 1 else "/"
                self.record(proto="http", client=client, method=method, path=path)
                status = "200 OK"
                if path.startswith("/bytes/"):
                    try:
                        n = min(int(path[len("/bytes/") :]), MAX_BYTES)
                    except ValueError:
                        n = 0
                        status = "400 Bad Request"
                    body_len = n
                    body: bytes | None = None
                else:
                    body = f"{client}\n".encode()
                    body_len = len(body)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
                ).encode()
                conn.sendall(head)
                if method == "HEAD":
                    return
                if body is not None:
                    conn.sendall(body)
                else:
                    block = b"x" * 65536
                    left = body_len
                    while left > 0:
                        k = min(left, len(block))
                        conn.sendall(block[:k])
                        left -= k
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                return

    def tcp_echo_conn(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(60)
        with conn:
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    conn.sendall(chunk)
            except OSError:
                return

    def serve(self, socks: Sequence[tuple[str, socket.socket]]) -> None:
        sel = selectors.DefaultSelector()
        for role, s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, role)
        while True:
            for key, _ in sel.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                role = key.data
                try:
                    if role == "udp":
                        msg, peer = sock.recvfrom(65535)
                        self.record(proto="udp", client=client_ip(peer), size=len(msg))
                        with contextlib.suppress(OSError):
                            sock.sendto(msg, peer)
                        continue
                    conn, peer = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue
                conn.setblocking(True)
                target = self.http_conn if role == "http" else self.tcp_echo_conn
                threading.Thread(target=target, args=(conn, client_ip(peer)), daemon=True).start()


USAGE = """usage: echo [--listen ADDR ...] [--http PORT] [--echo PORT] [--log FILE]
  defaults: --listen 0.0.0.0 --listen :: --http 80 --echo 7 (0: none)"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        sys.argv[1:] if argv is None else argv,
        USAGE,
        multi=("--listen",),
        single=("--http", "--echo", "--log"),
    )
    http_port = int(args.value("--http") or 80)
    echo_port = int(args.value("--echo") or 7)
    log_path = args.value("--log")
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    socks: list[tuple[str, socket.socket]] = []
    for addr in args.list("--listen") or ["0.0.0.0", "::"]:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if http_port:
            socks.append(("http", bind_socket(family, socket.SOCK_STREAM, addr, http_port)))
        if echo_port:
            socks.append(("udp", bind_socket(family, socket.SOCK_DGRAM, addr, echo_port)))
            socks.append(("tcp", bind_socket(family, socket.SOCK_STREAM, addr, echo_port)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        Echo(log).serve(socks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
