"""`wgns forward` and `[[forward]]` end to end (issue 5), in the sandbox with the simulated
provider: real curl, dig and sockets through real veths, nft and relays."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import wgns.testing.sim
from wgns.system import names
from wgns.testing.sandbox import SANDBOX_TMP, Sandbox, snapshot_diff
from wgns.testing.sim import Provider

NS = "vpn"
# tests only use 198.18.0.0/15: the sim topology leaves 198.18.128.0/17 free
ENV = {"WGNS_FORWARD_POOL": "198.18.128.0/17"}
LAN_OK, LAN_NO = "lan-ok", "lan-no"
HOST_LAN_OK, HOST_LAN_NO = "198.18.64.1", "198.18.64.5"  # the host's end of each test LAN
CLIENT_OK = "198.18.64.2"
DNS_SERVER = str(Path(wgns.testing.sim.__file__).resolve().parent / "dnsserver.py")

# A server for inside NS: "/" says hello, "/peer" shows the client address, "/fetch" makes an
# outbound request of its own to the simulated internet and returns what it said.
SERVER = r"""
import http.server, socketserver, sys, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/fetch":
            body = urllib.request.urlopen("http://198.18.2.2/", timeout=5).read()
        elif self.path == "/peer":
            body = self.client_address[0].encode()
        else:
            body = b"hello from ns"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
s = S(("0.0.0.0", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"""

# Listeners of the host (main namespace) for the allow_host check: each says "hi" and closes.
HOST_LISTENERS = r"""
import socket, sys, threading
def serve(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port)); ls.listen(16)
    started.release()
    while True:
        c, _ = ls.accept(); c.sendall(b"hi"); c.close()
started = threading.Semaphore(0)
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
for p in sys.argv[1:]:
    started.acquire()
print("ready", flush=True)
threading.Event().wait()
"""

CONNECT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print(s.recv(10).decode() or "eof")
except OSError as e:
    print("error", e.errno)
"""


def write_profile(sandbox: Sandbox, text: str, name: str) -> str:
    path = f"{SANDBOX_TMP}/{name}"
    sandbox.write_file(path, text, mode=0o600)
    return path


def start(sandbox: Sandbox, argv: list[str], netns: str | None = None) -> subprocess.Popen[Any]:
    """Start ARGV inside the sandbox and wait for its "ready" line."""
    p = sandbox.popen(
        argv, netns=netns, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert "ready" in line, f"{argv[:3]} did not start"
    return p


def stop(sandbox: Sandbox, *procs: subprocess.Popen[Any]) -> None:
    for p in procs:
        p.kill()
        p.wait(timeout=5)
        if p.stdout is not None:
            p.stdout.close()
        sandbox.untrack(p)


def http_server(sandbox: Sandbox, port: int, ns: str = NS) -> subprocess.Popen[Any]:
    return start(sandbox, ["python3", "-c", SERVER, str(port)], netns=ns)


def dns_server(sandbox: Sandbox, listen: str, answer: str) -> subprocess.Popen[Any]:
    """The simulated resolver inside NS, listening on LISTEN: svc.test is ANSWER."""
    argv = ["python3", DNS_SERVER, "--listen", listen, "--zone", f"svc.test={answer}"]
    return start(sandbox, argv, netns=NS)


def curl(sandbox: Sandbox, url: str, *, ns: str | None = None) -> tuple[int, str]:
    """(curl's exit status, body): 0 = OK, 7 = refused, 28 = timeout."""
    proc = sandbox.run(
        ["curl", "-sS", "--max-time", "3", "--noproxy", "*", url], netns=ns, check=False
    )
    return proc.returncode, proc.stdout.strip()


def connect(sandbox: Sandbox, host: str, port: int, ns: str | None) -> str:
    return sandbox.run(["python3", "-c", CONNECT, host, str(port)], netns=ns).stdout.strip()


def make_lans(sandbox: Sandbox) -> None:
    """Two test namespaces attached to the host by their own links: lan-ok (allowed by
    --from), lan-no (not)."""
    script = [f"netns add {LAN_OK}", f"netns add {LAN_NO}"]
    for ns, hif, host in ((LAN_OK, "lanA", HOST_LAN_OK), (LAN_NO, "lanB", HOST_LAN_NO)):
        script += [
            f"link add {hif} type veth peer name eth0 netns {ns}",
            f"addr add {host}/30 dev {hif}",
            f"link set {hif} up",
        ]
    sandbox.run(["ip", "-b", "-"], input="\n".join(script) + "\n")
    # no IPv6 on the test LANs: their link-local DAD would make the snapshots differ
    sandbox.run(["sysctl", "-qw", *(f"net.ipv6.conf.{i}.disable_ipv6=1" for i in ("lanA", "lanB"))])
    for ns in (LAN_OK, LAN_NO):
        sandbox.run(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"], netns=ns)
    for ns, host, client in (
        (LAN_OK, HOST_LAN_OK, CLIENT_OK),
        (LAN_NO, HOST_LAN_NO, "198.18.64.6"),
    ):
        lines = [
            "link set lo up",
            f"addr add {client}/30 dev eth0",
            "link set eth0 up",
            f"route add default via {host}",
        ]
        sandbox.run(["ip", "-n", ns, "-b", "-"], input="\n".join(lines) + "\n")


def forwards(wgns: Any, ns: str | None = NS) -> list[dict[str, Any]]:
    argv = ["forward", "list", "--json"] + ([ns] if ns else [])
    doc = json.loads(wgns(*argv, env=ENV).stdout)
    assert doc["format"] == 1
    return doc["forwards"]  # type: ignore[no-any-return]


def forwards_by_key(wgns: Any, ns: str | None = NS) -> dict[tuple[str, int], dict[str, Any]]:
    return {(f["proto"], f["host_port"]): f for f in forwards(wgns, ns)}


def relay_alive(wgns: Any, key: tuple[str, int]) -> bool:
    return bool(forwards_by_key(wgns)[key]["relay"]["alive"])


def children(sandbox: Sandbox, pid: int) -> list[int]:
    out = sandbox.run(["pgrep", "-P", str(pid)], check=False).stdout.split()
    return [int(p) for p in out]


def wait_for(what: str, cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def dig(sandbox: Sandbox, server: str, port: int, name: str = "svc.test") -> str:
    argv = ["dig", "+short", "+time=2", "+tries=1", f"@{server}", "-p", str(port), name]
    return sandbox.run(argv).stdout.strip()


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    diffs = snapshot_diff(before, after)
    assert not diffs, "system state changed:\n" + "\n".join(diffs[:20])


def sysctl(sandbox: Sandbox, key: str) -> str:
    return sandbox.run(["sysctl", "-n", key]).stdout.strip()


# --------------------------------------------------------------------------------------------


def test_profile_forwards_nat_localhost_lan_udp_tunnel_only_and_down(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    make_lans(sandbox)
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    profile = write_profile(
        sandbox,
        f"""name = "{NS}"
allow_host = [3128]

[[interface]]
config = "{conf}"

[[forward]]
host_port = 9091
ns_port = 8080
from = ["127.0.0.0/8", "::1/128", "{provider.host_v4}/32", "{CLIENT_OK}/32"]

[[forward]]
host_port = 5353
proto = "udp"
""",
        "vpn.toml",
    )
    host_ls = start(sandbox, ["python3", "-c", HOST_LISTENERS, "3128", "3129"])
    before = sandbox.settled_snapshot()
    forwarding_before = sysctl(sandbox, "net.ipv4.conf.lanA.forwarding")
    wgns("up", profile, env=ENV)
    srv = http_server(sandbox, 8080)
    dns = dns_server(sandbox, "0.0.0.0:5353", "198.18.99.1")
    try:
        # from the host itself: loopback v4 and v6, and one of its own addresses
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert curl(sandbox, "http://[::1]:9091/") == (0, "hello from ns")
        assert curl(sandbox, f"http://{provider.host_v4}:9091/") == (0, "hello from ns")
        # from another machine: allowed (its address reaches the service as is) or refused
        assert curl(sandbox, f"http://{HOST_LAN_OK}:9091/peer", ns=LAN_OK) == (0, CLIENT_OK)
        assert curl(sandbox, f"http://{HOST_LAN_NO}:9091/", ns=LAN_NO)[0] == 7
        # UDP: a DNS query to the resolver inside NS
        assert dig(sandbox, "127.0.0.1", 5353) == "198.18.99.1"

        (tcp,) = [f for f in forwards(wgns) if f["proto"] == "tcp"]
        host_end, ns_end = tcp["veth"]["host"], tcp["veth"]["ns"]
        assert tcp["nat_target"] == f"{ns_end}:8080"
        assert tcp["relay"]["alive"]  # [::1] is served by the relay (no route_localnet in v6)

        # the service's own requests go through the tunnel only
        with provider.capture() as cap:
            code, body = curl(sandbox, "http://127.0.0.1:9091/fetch")
        assert (code, body) == (0, provider.server.uplink_v4)  # the provider's NAT address
        leaked = [p for p in cap.traffic() if p.proto == "tcp"]
        assert not leaked, f"traffic of NS on the ISP link: {leaked}"
        # ... even when it picks the veth's address as its source
        proc = sandbox.run(
            ["curl", "-sS", "--max-time", "3", "--interface", ns_end, "http://198.18.2.2/"],
            netns=NS,
            check=False,
        )
        assert proc.returncode != 0
        # NS reaches the host over the veth on allow_host ports only
        assert connect(sandbox, host_end, 3128, NS) == "hi"
        assert connect(sandbox, host_end, 3129, NS).startswith("error")
        # and cannot use the host as a router
        assert connect(sandbox, CLIENT_OK, 22, NS).startswith("error")

        # the openings are part of the recorded kill switch: `wgns check` still agrees
        check = wgns("check", NS, check=False, env=ENV).stdout
        assert "PASS killswitch" in check and "PASS routes" in check, check
    finally:
        stop(sandbox, srv, dns)
    wgns("down", NS, env=ENV)
    stop(sandbox, host_ls)
    host_ls = start(sandbox, ["python3", "-c", HOST_LISTENERS, "3128", "3129"])
    try:
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == forwarding_before
        assert_same(before, sandbox.settled_snapshot())
    finally:
        stop(sandbox, host_ls)


def test_runtime_add_remove_both_modes_errors_and_down(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    before = sandbox.settled_snapshot()
    wgns("up", conf, "--name", NS, env=ENV)
    srv = http_server(sandbox, 8080)
    dns = dns_server(sandbox, "127.0.0.1:53", "198.18.99.2")
    try:
        wgns("forward", "add", NS, "9091:8080", env=ENV)
        wgns("forward", "add", NS, "9092:8080", "--mode", "relay", env=ENV)
        wgns("forward", "add", NS, "5300:53", "--proto", "udp", "--mode", "relay", env=ENV)
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert curl(sandbox, "http://127.0.0.1:9092/") == (0, "hello from ns")
        assert curl(sandbox, "http://[::1]:9092/") == (0, "hello from ns")
        assert dig(sandbox, "::1", 5300) == "198.18.99.2"
        listed = {(f["proto"], f["host_port"]): f for f in forwards(wgns, None)}
        assert set(listed) == {("tcp", 9091), ("tcp", 9092), ("udp", 5300)}
        assert listed[("tcp", 9092)]["mode"] == "relay" and listed[("tcp", 9092)]["relay"]["alive"]
        text = wgns("forward", "list", env=ENV).stdout
        assert "tcp 9092 -> vpn:8080" in text
        # `wgns status` shows the same forwards
        (st,) = json.loads(wgns("status", NS, "--json", env=ENV).stdout)["namespaces"]
        assert {(f["proto"], f["host_port"]) for f in st["forwards"]} == set(listed)
        assert "forward tcp 9092 -> vpn:8080 (relay" in wgns("status", NS, env=ENV).stdout
        # a relay is supervised: its worker killed with SIGKILL is restarted, on the same port
        udp_relay = listed[("udp", 5300)]["relay"]
        supervisor = udp_relay["pid"]
        log_file = udp_relay["log"]
        assert log_file == "/run/wgns/log/vpn/relay-5300-udp.log"
        (worker,) = children(sandbox, supervisor)
        sandbox.run(["kill", "-KILL", str(worker)])
        wait_for("a new worker", lambda: children(sandbox, supervisor) not in ([], [worker]))
        assert dig(sandbox, "::1", 5300) == "198.18.99.2"
        log = sandbox.read_text(log_file)
        assert "worker killed by SIGKILL" in log and log.count(" relays") == 2, log
        assert "Traceback" not in log, log
        # the supervisor killed with SIGKILL: the relay is dead, and `list` says so
        tcp_relay = listed[("tcp", 9092)]["relay"]
        sandbox.run(["kill", "-KILL", str(supervisor)])
        wait_for("the relay to die", lambda: not relay_alive(wgns, ("udp", 5300)))
        text = wgns("forward", "list", NS, env=ENV).stdout
        assert f"relay pid {supervisor} DEAD (log: {log_file}" in text
        # changes to other forwards touch no other relay, dead or alive
        wgns("forward", "add", NS, "9096:8080", "--mode", "relay", env=ENV)
        wgns("forward", "remove", NS, "9096", env=ENV)
        now = forwards_by_key(wgns)
        assert now[("udp", 5300)]["relay"] == {**udp_relay, "alive": False}
        assert now[("tcp", 9092)]["relay"] == tcp_relay
        # adding the forward again repairs it, and says so
        proc = wgns("forward", "add", NS, "5300:53", "--proto", "udp", "--mode", "relay", env=ENV)
        assert "relay restarted (it was dead" in proc.stderr, proc.stderr
        udp = forwards_by_key(wgns)[("udp", 5300)]
        assert udp["relay"]["alive"] and udp["relay"]["pid"] != supervisor
        assert forwards_by_key(wgns)[("tcp", 9092)]["relay"] == tcp_relay
        assert dig(sandbox, "::1", 5300) == "198.18.99.2"
        # what a watchdog calls: every dead relay of NS restarted, the live ones left alone
        sandbox.run(["kill", "-KILL", str(tcp_relay["pid"])])
        wait_for("the relay to die", lambda: not relay_alive(wgns, ("tcp", 9092)))
        udp_now = forwards_by_key(wgns)[("udp", 5300)]["relay"]
        repaired = sandbox.python(
            f"from wgns.features.forward import runtime; print(runtime.repair({NS!r}))", env=ENV
        ).stdout
        assert repaired.count("relay restarted") == 1, repaired
        now = forwards_by_key(wgns)
        assert now[("tcp", 9092)]["relay"]["alive"] and now[("udp", 5300)]["relay"] == udp_now
        assert curl(sandbox, "http://127.0.0.1:9092/") == (0, "hello from ns")

        # a connection in progress through 9091 is not disturbed by changes to the others
        keep = sandbox.popen(
            ["python3", "-c",
             "import socket,sys\n"
             "s=socket.create_connection(('127.0.0.1',9091))\n"
             "print('ready',flush=True)\n"
             "sys.stdin.readline()\n"
             "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
             "print(s.recv(4096).split(b'\\r\\n')[0].decode(),flush=True)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert keep.stdout is not None and keep.stdin is not None
        assert keep.stdout.readline().strip() == "ready"
        wgns("forward", "remove", NS, "9092", env=ENV)
        wgns("forward", "add", NS, "9093:8080", env=ENV)
        keep.stdin.write("go\n")
        keep.stdin.flush()
        assert keep.stdout.readline().strip() == "HTTP/1.0 200 OK"
        keep.wait(timeout=5)
        sandbox.untrack(keep)
        assert curl(sandbox, "http://127.0.0.1:9092/")[0] == 7  # removed: refused
        assert curl(sandbox, "http://127.0.0.1:9093/") == (0, "hello from ns")
        # the tunnel was not disturbed either
        assert curl(sandbox, "http://198.18.2.2/", ns=NS) == (0, provider.server.uplink_v4)

        # bad input: a clear error, nothing changed
        snap = sandbox.settled_snapshot()
        for args, code, words in (
            (("forward", "add", NS, "70000"), 2, "ports 1..65535"),
            (("forward", "add", NS, "0:80"), 2, "ports 1..65535"),
            (("forward", "add", NS, "9091"), 1, "already published"),
            (("forward", "add", NS, "9093:81", "--mode", "relay"), 1, "already published"),
            (("forward", "add", NS, "9094", "--from", "10.0.0.300/8"), 2, "not an IP network"),
            (("forward", "add", NS, "9094", "--from", "10.0.0.1/8"), 2, "host bits"),
            (("forward", "add", "nosuch", "9094"), 1, "nosuch is not up"),
            (("forward", "remove", NS, "9999"), 1, "publishes no tcp port 9999"),
            (("forward", "add", NS, "9094", "--proto", "sctp"), 2, "invalid choice"),
        ):
            proc = wgns(*args, check=False, env=ENV)
            assert proc.returncode == code, (args, proc.stderr)
            assert words in proc.stderr, (args, proc.stderr)
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        # a port the host itself already uses
        busy = start(
            sandbox,
            ["python3", "-c",
             "import socket;s=socket.socket();s.bind(('127.0.0.1',9095));s.listen();"
             "print('ready',flush=True);import time;time.sleep(600)"],
        )  # fmt: skip
        try:
            after_busy = sandbox.settled_snapshot()
            for mode in ("nat", "relay"):
                proc = wgns("forward", "add", NS, "9095", "--mode", mode, check=False, env=ENV)
                assert proc.returncode == 1, proc.stderr
                assert "in use on the host (127.0.0.1:9095)" in proc.stderr, proc.stderr
            assert_same(after_busy, sandbox.settled_snapshot())
        finally:
            stop(sandbox, busy)
        assert_same(snap, sandbox.settled_snapshot())

        # removing the last nat forward removes the veth; the relay ones stay
        wgns("forward", "remove", NS, "9091", env=ENV)
        wgns("forward", "remove", NS, "9093", env=ENV)
        vh, _ = names.veth_ifnames(NS)
        links = sandbox.run(["ip", "-br", "link"]).stdout
        assert vh not in links
        assert dig(sandbox, "127.0.0.1", 5300) == "198.18.99.2"
        wgns("forward", "add", NS, "9091:8080", env=ENV)  # and back again
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
    finally:
        stop(sandbox, srv, dns)
    wgns("down", NS, env=ENV)
    assert wgns("forward", "list", env=ENV).stdout.strip() == "no forwards"
    assert_same(before, sandbox.settled_snapshot())


def test_crash_mid_add_then_down_is_exact(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    """SIGKILL of `wgns forward add` at several points: `down` still removes everything."""
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    before = sandbox.settled_snapshot()
    argv = sandbox.python_argv(["-m", "wgns", "forward", "add", NS, "9091"])
    wgns("up", conf, "--name", NS, env=ENV)
    t0 = time.monotonic()
    sandbox.run(argv, env=sandbox.python_env(ENV))
    full = time.monotonic() - t0
    wgns("down", NS, env=ENV)
    assert_same(before, sandbox.settled_snapshot())
    killed = 0
    for fraction in (0.5, 0.7, 0.85, 0.95):
        wgns("up", conf, "--name", NS, env=ENV)
        p = sandbox.popen(argv, env=sandbox.python_env(ENV))
        time.sleep(full * fraction)
        if p.poll() is None:
            p.kill()
            killed += 1
        p.wait(timeout=10)
        sandbox.untrack(p)
        wgns("down", NS, env=ENV)
        assert_same(before, sandbox.settled_snapshot())
    assert killed, "`forward add` always finished before the kill"


def make_lan(sandbox: Sandbox, ns: str, host_if: str, host_addr: str, client_addr: str) -> None:
    """A client namespace NS on a LAN of its own with the host (HOST_ADDR on HOST_IF)."""
    gateway = host_addr.split("/")[0]
    sandbox.run(["ip", "netns", "add", ns])
    script = [
        f"link add {host_if} type veth peer name eth0 netns {ns}",
        f"addr add {host_addr} dev {host_if}",
        f"link set {host_if} up",
    ]
    sandbox.run(["ip", "-b", "-"], input="\n".join(script) + "\n")
    sandbox.run(["sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1"])
    sandbox.run(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"], netns=ns)
    lines = ["link set lo up", f"addr add {client_addr} dev eth0", "link set eth0 up",
             f"route add default via {gateway}"]  # fmt: skip
    sandbox.run(["ip", "-n", ns, "-b", "-"], input="\n".join(lines) + "\n")


def test_lan_sources_reach_the_service_on_every_interface_while_any_forward_needs_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """Issue 12, edge 1: a --from LAN that holds the host's own address, a --from network over
    two interfaces, and forwarding kept on while a remaining forward needs it."""
    make_lan(sandbox, "lan1", "lanA", "198.18.2.1/24", "198.18.2.10/24")
    make_lan(sandbox, "lan2", "lanB", "198.18.3.1/24", "198.18.3.10/24")
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    # something of lan2 that lan1 must not reach through the host (the host routes only DNAT)
    lan2_ls = start(sandbox, ["python3", "-c", HOST_LISTENERS, "7777"], netns="lan2")
    before = sandbox.settled_snapshot()
    assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "0"
    assert sysctl(sandbox, "net.ipv4.conf.lanB.forwarding") == "0"
    wgns("up", conf, "--name", NS, env=ENV)
    srv = http_server(sandbox, 8000)
    try:
        wgns("forward", "add", NS, "9003:8000", "--from", "198.18.2.0/24", env=ENV)
        assert curl(sandbox, "http://198.18.2.1:9003/peer", ns="lan1") == (0, "198.18.2.10")
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "1"
        assert sysctl(sandbox, "net.ipv4.conf.lanB.forwarding") == "0"

        wgns("forward", "add", NS, "9004:8000", "--from", "198.18.2.0/23", env=ENV)
        assert curl(sandbox, "http://198.18.2.1:9004/peer", ns="lan1") == (0, "198.18.2.10")
        assert curl(sandbox, "http://198.18.3.1:9004/peer", ns="lan2") == (0, "198.18.3.10")
        assert sysctl(sandbox, "net.ipv4.conf.lanB.forwarding") == "1"
        assert curl(sandbox, "http://198.18.3.1:9003/", ns="lan2")[0] != 0  # not from lan2
        # forwarding is on for DNAT only: lan1 cannot use the host as a router to lan2
        assert connect(sandbox, "198.18.3.10", 7777, "lan1").startswith("error")
        check = wgns("check", NS, check=False, env=ENV).stdout
        assert "PASS killswitch" in check, check

        # removing one forward leaves what the other needs
        wgns("forward", "remove", NS, "9003", env=ENV)
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "1"
        assert curl(sandbox, "http://198.18.2.1:9004/peer", ns="lan1") == (0, "198.18.2.10")
        assert curl(sandbox, "http://198.18.3.1:9004/peer", ns="lan2") == (0, "198.18.3.10")
        assert curl(sandbox, "http://198.18.2.1:9003/", ns="lan1")[0] != 0
        assert "PASS killswitch" in wgns("check", NS, check=False, env=ENV).stdout

        wgns("forward", "remove", NS, "9004", env=ENV)
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "0"
        assert sysctl(sandbox, "net.ipv4.conf.lanB.forwarding") == "0"
        assert curl(sandbox, "http://198.18.2.1:9004/", ns="lan1")[0] != 0
        assert forwards(wgns) == []
    finally:
        stop(sandbox, srv)
    wgns("down", NS, env=ENV)
    assert_same(before, sandbox.settled_snapshot())
    stop(sandbox, lan2_ls)


def test_forwarding_on_an_interface_is_held_while_any_namespace_needs_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    make_lan(sandbox, "lan1", "lanA", "198.18.2.1/24", "198.18.2.10/24")
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    before = sandbox.settled_snapshot()
    wgns("up", conf, "--name", NS, env=ENV)
    wgns("up", conf, "--name", "vpn2", env=ENV)
    srv = http_server(sandbox, 8000, ns="vpn2")
    try:
        wgns("forward", "add", NS, "9003:8000", "--from", "198.18.2.0/24", env=ENV)
        wgns("forward", "add", "vpn2", "9005:8000", "--from", "198.18.2.0/24", env=ENV)
        wgns("forward", "remove", NS, "9003", env=ENV)
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "1"
        assert curl(sandbox, "http://198.18.2.1:9005/peer", ns="lan1") == (0, "198.18.2.10")
        wgns("down", NS, env=ENV)
        assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "1"
        assert curl(sandbox, "http://198.18.2.1:9005/peer", ns="lan1") == (0, "198.18.2.10")
    finally:
        stop(sandbox, srv)
    wgns("down", "vpn2", env=ENV)
    assert sysctl(sandbox, "net.ipv4.conf.lanA.forwarding") == "0"
    assert_same(before, sandbox.settled_snapshot())


def test_a_failing_add_rolls_back_exactly_its_own_ops(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    before = sandbox.settled_snapshot()
    wgns("up", conf, "--name", NS, env=ENV)
    srv = http_server(sandbox, 8080)
    try:
        wgns("forward", "add", NS, "9092:8080", "--mode", "relay", env=ENV)
        # the name of NS's end of the veth is taken inside NS: the veth op fails after the
        # port claim was taken
        _, vn = names.veth_ifnames(NS)
        sandbox.run(["ip", "-n", NS, "link", "add", vn, "type", "veth", "peer", "name", "tmp0"])
        snap = sandbox.settled_snapshot()
        proc = wgns("forward", "add", NS, "9091:8080", check=False, env=ENV)
        assert proc.returncode == 1 and "ip link add" in proc.stderr, proc.stderr
        assert "rollback also failed" not in proc.stderr, proc.stderr
        assert_same(snap, sandbox.settled_snapshot())
        assert set(forwards_by_key(wgns)) == {("tcp", 9092)}
        assert curl(sandbox, "http://127.0.0.1:9092/") == (0, "hello from ns")
        sandbox.run(["ip", "-n", NS, "link", "del", vn])
        wgns("forward", "add", NS, "9091:8080", env=ENV)
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
    finally:
        stop(sandbox, srv)
    wgns("down", NS, env=ENV)
    assert_same(before, sandbox.settled_snapshot())


def test_a_stale_port_claim_is_taken_over(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    """Issue 12, edge 6: a claim whose owner has no record (or whose record does not list it)
    does not block the port; one whose owner lists it does."""
    conf = write_profile(sandbox, provider.client_conf(), "vpn.conf")
    wgns("up", conf, "--name", NS, env=ENV)
    srv = http_server(sandbox, 8080)
    try:
        sandbox.write_file("/run/wgns/claims/port-tcp_9091", "ghost")
        proc = wgns("forward", "add", NS, "9091:8080", env=ENV)
        assert "claim of tcp port 9091 by ghost is stale" in proc.stderr, proc.stderr
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert sandbox.read_text("/run/wgns/claims/port-tcp_9091") == NS
        # a live claim of another namespace still blocks
        sandbox.write_file("/run/wgns/claims/port-tcp_9092", "vpn2")
        wgns("up", conf, "--name", "vpn2", env=ENV)
        proc = wgns("forward", "add", NS, "9092:8080", env=ENV)  # vpn2's record does not list it
        assert "claim of tcp port 9092 by vpn2 is stale" in proc.stderr, proc.stderr
        wgns("forward", "add", "vpn2", "9093:8080", env=ENV)
        proc = wgns("forward", "add", NS, "9093:8080", check=False, env=ENV)
        assert proc.returncode == 1 and "already published by vpn2" in proc.stderr, proc.stderr
    finally:
        stop(sandbox, srv)
    wgns("down", "vpn2", env=ENV)
    wgns("down", NS, env=ENV)
    assert not sandbox.path("/run/wgns/claims").exists()


# --------------------------------------------------------------------------------------------
# The pure parts, without a sandbox


def test_parsing_and_what_each_mode_needs() -> None:
    from wgns.errors import UsageError
    from wgns.features.forward import spec

    assert spec.parse_ports("9091") == (9091, 9091)
    assert spec.parse_ports("8080:80") == (8080, 80)
    for bad in ("0", "65536", "80:", ":80", "x", "-1", "80:0", "1:2:3", "99999999"):
        with pytest.raises(UsageError):
            spec.parse_ports(bad)
    with pytest.raises(UsageError, match="host bits"):
        spec.parse_sources(["10.0.0.1/8"])
    with pytest.raises(UsageError, match="not an IP network"):
        spec.parse_sources(["10.0.0.0/33"])
    f = spec.make_forward("9091", sources=["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
    assert [str(n) for n in spec.nat_sources(f)] == ["10.0.0.0/8", "127.0.0.0/8"]
    assert [str(n) for n in spec.remote_sources(f)] == ["10.0.0.0/8"]
    assert [str(n) for n in spec.relay_sources(f)] == ["::1/128"]
    assert spec.relay_listen(spec.relay_sources(f)) == ["::1"]
    r = spec.make_forward("9091", mode="relay")
    assert spec.nat_sources(r) == [] and spec.relay_listen(r.sources) == ["127.0.0.1", "::1"]
    assert spec.from_json(spec.to_json(f)) == f

    vh, vn = names.veth_ifnames(NS)
    (op,) = spec.openings(NS, [f], [3128])
    assert op.ifname == vn
    assert all(rule.startswith(f'iifname "{vn}"') for rule in op.rules_in)
    assert all(rule.startswith(f'oifname "{vn}"') for rule in op.rules_out)
    assert any("tcp dport { 9091 }" in rule for rule in op.rules_in)
    assert any("th dport { 3128 }" in rule for rule in op.rules_out)
    assert spec.openings(NS, [r], []) == ()  # relay only: no veth, no hole

    dnat = spec.dnat_ruleset(NS, f, "198.18.128.1")
    assert "dnat ip to 198.18.128.1:9091" in dnat
    assert 'iifname != "' + vh + '" fib daddr type local ip saddr { 10.0.0.0/8 }' in dnat
    table = spec.dnat_table_name(NS, f)
    assert dnat.startswith(f"table inet {table} {{}}\ndelete table inet {table}\n")
    veth = spec.veth_ruleset(NS, [3128], "198.18.128.0")
    assert f'oifname "{vh}" ip saddr 127.0.0.0/8 snat ip to 198.18.128.0' in veth
    assert "th dport { 3128 } accept" in veth
    assert 'iifname "eth0" counter drop' in spec.guard_ruleset(NS, "eth0")
    # each op owns its table: no two share a name (a tcp and a udp forward of one port neither)
    udp = spec.make_forward("9091", proto="udp")
    names_used = {spec.veth_table_name(NS), table, spec.guard_table_name(NS, "eth0"),
                  spec.dnat_table_name(NS, udp)}  # fmt: skip
    assert len(names_used) == 4


def test_the_ops_of_each_forward_and_of_a_profile() -> None:
    from wgns.features import killswitch
    from wgns.features.forward import plan, spec
    from wgns.features.forward.ops import serves

    ks = killswitch.Spec(table="wgns_vpn", wg_ifnames=("wg0",), ipv6=False)
    local = spec.make_forward("9091:8080")
    lan = spec.make_forward("9092", sources=["198.18.2.0/24"])
    relay = spec.make_forward("9093", mode="relay")
    kinds = lambda ops: [op.kind for op in ops]  # noqa: E731
    base = plan.base_killswitch(ks)
    assert kinds(plan.ops_for_forward(NS, local, allow_host=[], kill_switch=base)) == [
        "forward_port", "forward_veth", "forward_opening", "forward_dnat", "forward_relay",
    ]  # fmt: skip
    assert kinds(plan.ops_for_forward(NS, lan, allow_host=[], kill_switch=None)) == [
        "forward_port", "forward_veth", "forward_ingress", "forward_dnat",
    ]  # fmt: skip
    assert kinds(plan.ops_for_forward(NS, relay, allow_host=[], kill_switch=base)) == [
        "forward_port", "forward_relay",
    ]  # fmt: skip
    ops = plan.ops_for_profile(NS, [local, relay], [3128], ks)
    assert kinds(ops[:2]) == ["forward_veth", "forward_opening"]  # allow_host's own
    assert all(op.to_json()["kind"] == op.kind for op in ops)
    # a forward's ops are exactly those that serve it (what `forward remove` undoes)
    assert [op for op in ops if serves(op, NS, "tcp/9093")] == ops[-2:]
    assert not any(serves(op, NS, "tcp/9091") for op in ops[:2])
    assert not any(serves(op, "other", "tcp/9091") for op in ops)
    # the journal round trip
    from wgns.engine.ops import Op

    for op in ops:
        assert Op.from_json(op.to_json()) == op
    opened = killswitch.Spec(
        table="t", wg_ifnames=(), ipv6=True, openings=spec.openings(NS, [local], [])
    )
    stripped = plan.base_killswitch(opened)
    assert stripped is not None and stripped["openings"] == []


def test_ingress_probes_every_piece_of_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    from wgns.features.forward import ingress

    net = ipaddress.IPv4Network
    routes = [net(r) for r in ("198.18.2.0/24", "198.18.3.0/24", "198.18.2.1/32",
                               "198.18.2.255/32", "198.18.3.1/32", "0.0.0.0/0")]  # fmt: skip
    # the host's own address is not the only probe of its LAN (issue 12, edge 1)
    probes = ingress.probe_addresses(net("198.18.2.0/24"), routes)
    assert "198.18.2.1" in probes and any(p not in ("198.18.2.1", "198.18.2.255") for p in probes)
    # a /23 over two LANs: one probe on each
    probes = ingress.probe_addresses(net("198.18.2.0/23"), routes)
    assert any(ipaddress.ip_address(p) in net("198.18.2.0/24") and p not in ("198.18.2.1",
               "198.18.2.255") for p in probes)  # fmt: skip
    assert any(ipaddress.ip_address(p) in net("198.18.3.0/24") and p != "198.18.3.1"
               for p in probes)  # fmt: skip
    assert ingress.probe_addresses(net("10.0.0.0/8"), routes) == ["10.0.0.1"]
    assert ingress.probe_addresses(net("198.18.2.7/32"), routes) == ["198.18.2.7"]

    answers = {
        "198.18.2.1": {"type": "local", "dst": "198.18.2.1", "dev": "lo"},
        "198.18.2.255": {"type": "broadcast", "dst": "198.18.2.255", "dev": "lanA"},
    }

    def batch(lines: list[str], options: list[str] = []) -> list[dict[str, Any]]:  # noqa: B006
        if lines == ["route show table all"]:
            return [{"dst": str(r)} for r in routes]
        out = []
        for line in lines:
            addr = line.split()[-1]
            dev = "lanA" if ipaddress.ip_address(addr) in net("198.18.2.0/24") else "lanB"
            out.append(answers.get(addr, {"dst": addr, "dev": dev}))
        return out

    monkeypatch.setattr(ingress.claims, "ip_json_batch", batch)
    assert ingress.ingress_interfaces([net("198.18.2.0/24")]) == ["lanA"]
    assert sorted(ingress.ingress_interfaces([net("198.18.2.0/23")])) == ["lanA", "lanB"]


def test_pool_allocation_probes_past_claims_and_host_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wgns.features.forward import claims

    monkeypatch.setattr(claims, "CLAIMS_DIR", tmp_path / "claims")
    monkeypatch.setenv(claims.POOL_ENV, "198.18.128.0/29")  # 4 slots
    used_by_host = {"198.18.128.2", "198.18.128.3"}
    calls: list[list[str]] = []

    def fibmatch(addrs: list[str]) -> list[dict[str, Any] | None]:
        calls.append(list(addrs))
        return [
            {"dst": "198.18.128.2/31", "dev": "eth9"} if a in used_by_host else {"dst": "default"}
            for a in addrs
        ]

    monkeypatch.setattr(claims, "fibmatch", fibmatch)
    got = {claims.allocate(f"ns{i}")[1] for i in range(3)}
    assert got == {"198.18.128.0", "198.18.128.4", "198.18.128.6"}  # .2 is the host's
    assert len(calls) == 3  # one `ip` per allocation, however many namespaces exist
    with pytest.raises(Exception, match="exhausted"):
        claims.allocate("ns3")
    claims.release("pool", "198.18.128.4", "someone")  # only its owner can release it
    assert claims.claim_owner("pool", "198.18.128.4") is not None
    for addr in sorted(got):
        owner = claims.claim_owner("pool", addr)
        assert owner is not None
        claims.release("pool", addr, owner)
    assert not (tmp_path / "claims").exists()  # the last release removes the directory
    assert claims.route_free([{"dst": "169.254.0.0/16", "dev": "eth0"}, None])
    assert not claims.route_free([{"type": "local", "dst": "10.0.0.1"}])
    # a stale claim is taken over by a rename, never left half-written
    assert claims.claim("port", "tcp/9091", "ghost")
    assert claims.take_over("port", "tcp/9091", "ghost", "vpn")
    assert claims.claim_owner("port", "tcp/9091") == "vpn"
    assert not claims.take_over("port", "tcp/9091", "ghost", "other")
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["port-tcp_9091"]
