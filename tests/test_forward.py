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
    dns = start(
        sandbox,
        ["python3", DNS_SERVER, "--listen", "0.0.0.0:5353",
         "--zone", "svc.test=198.18.99.1"],
        netns=NS,
    )  # fmt: skip
    try:
        # from the host itself: loopback v4 and v6, and one of its own addresses
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert curl(sandbox, "http://[::1]:9091/") == (0, "hello from ns")
        assert curl(sandbox, f"http://{provider.host_v4}:9091/") == (0, "hello from ns")
        # from another machine: allowed (its address reaches the service as is) or refused
        assert curl(sandbox, f"http://{HOST_LAN_OK}:9091/peer", ns=LAN_OK) == (0, CLIENT_OK)
        assert curl(sandbox, f"http://{HOST_LAN_NO}:9091/", ns=LAN_NO)[0] == 7
        # UDP: a DNS query to the resolver inside NS
        answer = sandbox.run(
            ["dig", "+short", "+time=2", "+tries=1", "@127.0.0.1", "-p", "5353", "svc.test"]
        ).stdout.strip()
        assert answer == "198.18.99.1"

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
    dns = start(
        sandbox,
        ["python3", DNS_SERVER, "--listen", "127.0.0.1:53",
         "--zone", "svc.test=198.18.99.2"],
        netns=NS,
    )  # fmt: skip
    try:
        wgns("forward", "add", NS, "9091:8080", env=ENV)
        wgns("forward", "add", NS, "9092:8080", "--mode", "relay", env=ENV)
        wgns("forward", "add", NS, "5300:53", "--proto", "udp", "--mode", "relay", env=ENV)
        assert curl(sandbox, "http://127.0.0.1:9091/") == (0, "hello from ns")
        assert curl(sandbox, "http://127.0.0.1:9092/") == (0, "hello from ns")
        assert curl(sandbox, "http://[::1]:9092/") == (0, "hello from ns")
        answer = sandbox.run(
            ["dig", "+short", "+time=2", "+tries=1", "@::1", "-p", "5300", "svc.test"]
        ).stdout.strip()
        assert answer == "198.18.99.2"
        listed = {(f["proto"], f["host_port"]): f for f in forwards(wgns, None)}
        assert set(listed) == {("tcp", 9091), ("tcp", 9092), ("udp", 5300)}
        assert listed[("tcp", 9092)]["mode"] == "relay" and listed[("tcp", 9092)]["relay"]["alive"]
        text = wgns("forward", "list", env=ENV).stdout
        assert "tcp 9092 -> vpn:8080" in text
        # `wgns status` shows the same forwards
        (st,) = json.loads(wgns("status", NS, "--json", env=ENV).stdout)["namespaces"]
        assert {(f["proto"], f["host_port"]) for f in st["forwards"]} == set(listed)
        assert "forward tcp 9092 -> vpn:8080 (relay" in wgns("status", NS, env=ENV).stdout
        # a relay that died is seen, and the next change of the namespace's forwards restarts it
        dead = listed[("udp", 5300)]["relay"]["pid"]
        sandbox.run(["kill", "-9", str(dead)])
        time.sleep(0.1)
        assert "DEAD" in wgns("forward", "list", NS, env=ENV).stdout
        wgns("forward", "add", NS, "9096:8080", "--mode", "relay", env=ENV)
        wgns("forward", "remove", NS, "9096", env=ENV)
        (udp,) = [f for f in forwards(wgns) if f["proto"] == "udp"]
        assert udp["relay"]["alive"] and udp["relay"]["pid"] != dead

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
                assert proc.returncode == 1 and "in use on the host" in proc.stderr, proc.stderr
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
        answer = sandbox.run(
            ["dig", "+short", "+time=2", "+tries=1", "@127.0.0.1", "-p", "5300", "svc.test"]
        ).stdout.strip()
        assert answer == "198.18.99.2"
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


# --------------------------------------------------------------------------------------------
# The pure parts, without a sandbox


def test_parsing_and_what_each_mode_needs() -> None:
    from wgns.errors import UsageError
    from wgns.features import forward

    assert forward.parse_ports("9091") == (9091, 9091)
    assert forward.parse_ports("8080:80") == (8080, 80)
    for bad in ("0", "65536", "80:", ":80", "x", "-1", "80:0", "1:2:3", "99999999"):
        with pytest.raises(UsageError):
            forward.parse_ports(bad)
    with pytest.raises(UsageError, match="host bits"):
        forward.parse_sources(["10.0.0.1/8"])
    with pytest.raises(UsageError, match="not an IP network"):
        forward.parse_sources(["10.0.0.0/33"])
    f = forward.make_forward("9091", sources=["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
    assert [str(n) for n in forward.nat_sources(f)] == ["10.0.0.0/8", "127.0.0.0/8"]
    assert [str(n) for n in forward.relay_sources(f)] == ["::1/128"]
    assert forward.relay_listen(forward.relay_sources(f)) == ["::1"]
    r = forward.make_forward("9091", mode="relay")
    assert forward.nat_sources(r) == [] and forward.relay_listen(r.sources) == ["127.0.0.1", "::1"]
    assert forward.from_json(forward.to_json(f)) == f

    vh, vn = names.veth_ifnames(NS)
    (op,) = forward.openings(NS, [f], [3128])
    assert op.ifname == vn
    assert all(rule.startswith(f'iifname "{vn}"') for rule in op.rules_in)
    assert all(rule.startswith(f'oifname "{vn}"') for rule in op.rules_out)
    assert any("tcp dport { 9091 }" in rule for rule in op.rules_in)
    assert any("th dport { 3128 }" in rule for rule in op.rules_out)
    assert forward.openings(NS, [r], []) == ()  # relay only: no veth, no hole

    rules = forward.main_ruleset(NS, [f], [], "198.18.128.0", "198.18.128.1", ["eth0"])
    assert "dnat ip to 198.18.128.1:9091" in rules
    assert f'oifname "{vh}" ip saddr 127.0.0.0/8 snat ip to 198.18.128.0' in rules
    assert 'iifname { "eth0" } counter drop' in rules
    assert rules.startswith(f"table inet {names.nft_table(NS)} {{}}\ndelete table")


def test_pool_allocation_probes_past_claims_and_host_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wgns.features import forward

    monkeypatch.setattr(forward, "CLAIMS_DIR", tmp_path / "claims")
    monkeypatch.setenv(forward.POOL_ENV, "198.18.128.0/29")  # 4 slots
    used_by_host = {"198.18.128.2", "198.18.128.3"}
    calls: list[list[str]] = []

    def fibmatch(addrs: list[str]) -> list[dict[str, Any] | None]:
        calls.append(list(addrs))
        return [
            {"dst": "198.18.128.2/31", "dev": "eth9"} if a in used_by_host else {"dst": "default"}
            for a in addrs
        ]

    monkeypatch.setattr(forward, "_fibmatch", fibmatch)
    got = {forward.allocate(f"ns{i}")[1] for i in range(3)}
    assert got == {"198.18.128.0", "198.18.128.4", "198.18.128.6"}  # .2 is the host's
    assert len(calls) == 3  # one `ip` per allocation, however many namespaces exist
    with pytest.raises(Exception, match="exhausted"):
        forward.allocate("ns3")
    forward.release("pool", "198.18.128.4", "someone")  # only its owner can release it
    assert forward.claim_owner("pool", "198.18.128.4") is not None
    for addr in sorted(got):
        owner = forward.claim_owner("pool", addr)
        assert owner is not None
        forward.release("pool", addr, owner)
    assert not (tmp_path / "claims").exists()  # the last release removes the directory
    assert forward._route_free([{"dst": "169.254.0.0/16", "dev": "eth0"}, None])
    assert not forward._route_free([{"type": "local", "dst": "10.0.0.1"}])
