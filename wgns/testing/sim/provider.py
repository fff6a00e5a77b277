"""The simulated VPN provider, running inside a sandbox: build it, add clients, observe it.

The topology (namespaces, links, addresses, the servers' keys) is in
:mod:`wgns.testing.sim.topology`, packet capture in :mod:`wgns.testing.sim.capture`, waiting for
its servers and links in :mod:`wgns.testing.sim.readiness`. Key material never appears on a
command line: private keys go through stdin/stdout of ``wg`` and files under the sandbox's
private /run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from wgns.testing.sandbox import Sandbox
from wgns.testing.sim.capture import Capture
from wgns.testing.sim.readiness import wait_ready, wait_settled
from wgns.testing.sim.topology import (
    HOST_UPLINK,
    HOST_V4,
    HOST_V6,
    ISP_HOST_IF,
    ISP_NS,
    ISP_V4,
    ISP_V6,
    SIM_DIR,
    WEB_NS,
    WEB_V4,
    WEB_V6,
    WG_ENV,
    WG_PORT,
    Client,
    ProviderError,
    Server,
    make_server,
    network_script,
    wg_script,
)

__all__ = [
    "HOST_UPLINK",
    "HOST_V4",
    "HOST_V6",
    "ISP_V4",
    "ISP_V6",
    "WEB_V4",
    "WEB_V6",
    "Provider",
    "build_provider",
]

_HERE = Path(__file__).resolve().parent
_DNS_SCRIPT = str(_HERE / "dnsserver.py")
_ECHO_SCRIPT = str(_HERE / "echo.py")

READY_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------


class Provider:
    """A running simulated provider inside a sandbox (see the module docstring)."""

    isp_dns = ISP_V4
    isp_dns_v6 = ISP_V6
    web_v4 = WEB_V4
    web_v6 = WEB_V6
    host_v4 = HOST_V4
    host_v6 = HOST_V6
    host_uplink = HOST_UPLINK
    isp_link = (ISP_NS, ISP_HOST_IF)  # (namespace, ifname) for captures
    isp_dns_log = f"{SIM_DIR}/dns-isp.log"
    web_log = f"{SIM_DIR}/web.log"

    def __init__(self, sandbox: Sandbox, servers: Sequence[Server]) -> None:
        self.sandbox = sandbox
        self.servers: list[Server] = list(servers)
        self._procs: list[subprocess.Popen[Any]] = []
        self._wg_procs: dict[int, subprocess.Popen[Any]] = {}
        self._next_client = 2
        self._closed = False
        self.build_time = 0.0

    # server 0 shortcuts -----------------------------------------------------------------
    @property
    def server(self) -> Server:
        return self.servers[0]

    @property
    def server_public_key(self) -> str:
        return self.servers[0].public_key

    @property
    def endpoint_v4(self) -> str:
        return self.servers[0].endpoint_v4

    @property
    def endpoint_v6(self) -> str:
        return self.servers[0].endpoint_v6

    @property
    def endpoint_host(self) -> str:
        return self.servers[0].hostname

    @property
    def endpoint_name(self) -> str:
        return self.servers[0].endpoint_name

    @property
    def dns_v4(self) -> str:
        return self.servers[0].dns_v4

    @property
    def dns_v6(self) -> str:
        return self.servers[0].dns_v6

    @property
    def namespaces(self) -> list[str]:
        return [ISP_NS, WEB_NS, *(s.netns for s in self.servers)]

    # clients --------------------------------------------------------------------------------
    def genkey(self) -> tuple[str, str]:
        """A fresh (private, public) key pair; the private key only travels through pipes."""
        priv = self.sandbox.run(["wg", "genkey"]).stdout.strip()
        pub = self.sandbox.run(["wg", "pubkey"], input=priv + "\n").stdout.strip()
        return priv, pub

    def wg(
        self, server: int, args: Sequence[str], *, raw: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `wg ARGS` for server #SERVER (in its namespaces, where its UAPI socket is).

        With ``raw`` ARGS is a whole command instead of arguments to `wg`."""
        s = self.servers[server]
        p = self._wg_procs[server]
        argv = [*args] if raw else ["wg", *args]
        return self.sandbox.run(
            ["nsenter", f"--mount=/proc/{p.pid}/ns/mnt", "--", *argv], netns=s.netns, check=check
        )

    def new_client(self) -> Client:
        """Generate a key pair and register it as a peer on every server."""
        n = self._next_client
        if n > 254:
            raise ProviderError("out of client addresses")
        self._next_client += 1
        priv, pub = self.genkey()
        addresses = tuple(s.client_addresses(n) for s in self.servers)
        for s, (v4, v6) in zip(self.servers, addresses, strict=True):
            conf = f"[Peer]\nPublicKey = {pub}\nAllowedIPs = {v4}, {v6}\n"
            path = f"{SIM_DIR}/peer-{s.ifname}-{n}.conf"
            self.sandbox.write_file(path, conf, mode=0o600)
            self.wg(s.index, ["addconf", s.ifname, path])
        return Client(
            private_key=priv,
            public_key=pub,
            address_v4=addresses[0][0],
            address_v6=addresses[0][1],
            index=n,
            addresses=addresses,
        )

    def client_conf(
        self,
        client: Client | None = None,
        *,
        ipv6: bool = True,
        allowed_ips: Sequence[str] = ("0.0.0.0/0", "::/0"),
        dns: bool = True,
        endpoint: str | None = None,
        mtu: int | None = None,
        keepalive: int | None = None,
        server: int = 0,
    ) -> str:
        """wg-quick .conf text for CLIENT (a new one if None) talking to server #SERVER.

        ``ipv6=False`` leaves out the IPv6 address, DNS server and allowed IPs."""
        if client is None:
            client = self.new_client()
        s = self.servers[server]
        v4, v6 = client.addresses[server]
        addrs = [v4, v6] if ipv6 else [v4]
        allowed = [a for a in allowed_ips if ipv6 or ":" not in a]
        lines = ["[Interface]", f"PrivateKey = {client.private_key}"]
        lines.append(f"Address = {', '.join(addrs)}")
        if dns:
            lines.append(f"DNS = {', '.join([s.dns_v4, s.dns_v6] if ipv6 else [s.dns_v4])}")
        if mtu is not None:
            lines.append(f"MTU = {mtu}")
        lines += ["", "[Peer]", f"PublicKey = {s.public_key}"]
        lines.append(f"AllowedIPs = {', '.join(allowed)}")
        lines.append(f"Endpoint = {endpoint or s.endpoint_v4}")
        if keepalive is not None:
            lines.append(f"PersistentKeepalive = {keepalive}")
        return "\n".join(lines) + "\n"

    # observations ----------------------------------------------------------------------------
    def _read_log(self, path: str) -> list[dict[str, Any]]:
        try:
            text = self.sandbox.read_text(path)
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def dns_log(self, server: int = 0) -> list[dict[str, Any]]:
        """Full query records of a server's DNS (qname, qtype, client, proto)."""
        return self._read_log(self.servers[server].dns_log)

    def dns_queries(self, server: int = 0) -> list[tuple[str, str]]:
        """(qname, qtype) seen by the provider's DNS (of server #SERVER), in order."""
        return [(r["qname"], r["qtype"]) for r in self.dns_log(server)]

    def isp_dns_log_entries(self) -> list[dict[str, Any]]:
        return self._read_log(self.isp_dns_log)

    def isp_dns_queries(self) -> list[tuple[str, str]]:
        """(qname, qtype) seen by the ISP resolver, in order."""
        return [(r["qname"], r["qtype"]) for r in self.isp_dns_log_entries()]

    def web_requests(self) -> list[dict[str, Any]]:
        """HTTP requests and UDP echo datagrams seen by the web server."""
        return self._read_log(self.web_log)

    def server_dump(self, server: int = 0) -> list[dict[str, Any]]:
        """The peers of a server from `wg show IF dump`."""
        s = self.servers[server]
        out = self.wg(server, ["show", s.ifname, "dump"]).stdout
        peers = []
        for line in out.splitlines()[1:]:
            f = line.split("\t")
            if len(f) < 8:
                continue
            peers.append(
                {
                    "public_key": f[0],
                    "endpoint": None if f[2] == "(none)" else f[2],
                    "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
                    "latest_handshake": int(f[4]),
                    "rx": int(f[5]),
                    "tx": int(f[6]),
                }
            )
        return peers

    def server_handshakes(self, server: int = 0) -> dict[str, int]:
        """peer public key -> latest handshake (unix time, 0 = never)."""
        return {p["public_key"]: p["latest_handshake"] for p in self.server_dump(server)}

    def wait_handshake(self, public_key: str, *, server: int = 0, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while True:
            hs = self.server_handshakes(server).get(public_key, 0)
            if hs:
                return hs
            if time.monotonic() > deadline:
                raise ProviderError(f"no handshake from {public_key} within {timeout}s")
            time.sleep(0.05)

    def capture(self, netns: str | None = None, ifname: str | None = None) -> Capture:
        """A capture on the ISP link (default) or any interface of the sandbox; use ``with``."""
        if netns is None and ifname is None:
            netns, ifname = self.isp_link
        return Capture(self.sandbox, netns, ifname or self.isp_link[1])

    def cut_endpoint(self) -> None:
        """The ISP drops every packet to the servers' WireGuard port from now on: the tunnel
        is cut, everything else still flows (the outage tests and checks need)."""
        self.sandbox.run(
            ["nft", "-f", "-"],
            netns=ISP_NS,
            input="table inet outage {\n chain forward_block {\n"
            f"  type filter hook forward priority 0; udp dport {WG_PORT} drop\n }}\n}}\n",
        )

    # lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the provider's processes and remove its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
            self.sandbox.untrack(p)
        self._procs.clear()
        if self.sandbox.closed:
            return
        # the host's uplink first (synchronously, with its peer): namespaces die asynchronously
        batch = f"link delete {HOST_UPLINK}\n"
        batch += "".join(f"netns delete {ns}\n" for ns in self.namespaces)
        self.sandbox.run(["ip", "-force", "-batch", "-"], input=batch, check=False)

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Building


def build_provider(sandbox: Sandbox, *, second_server: bool = False) -> Provider:
    """Build the simulated provider inside SANDBOX (see the module docstring)."""
    t0 = time.monotonic()
    servers = [make_server(0), *([make_server(1)] if second_server else [])]
    provider = Provider(sandbox, servers)
    sandbox.path(SIM_DIR).mkdir(mode=0o755, parents=True, exist_ok=True)
    namespaces = [ISP_NS, WEB_NS, *(s.netns for s in servers)]
    sandbox.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in namespaces))

    try:
        # start every daemon now, they come up while the network is being built
        def start(
            name: str, argv: list[str], ns: str, env: dict[str, str] | None = None
        ) -> subprocess.Popen[bytes]:
            with open(sandbox.path(f"{SIM_DIR}/{name}.err"), "wb") as err:
                # Python servers say "ready" on stdout; wireguard-go's output goes to the log
                out: Any = err if env is not None else subprocess.PIPE
                p: subprocess.Popen[bytes] = sandbox.popen(
                    argv, netns=ns, stdout=out, stderr=err, env=env
                )
            provider._procs.append(p)
            return p

        py = [sys.executable, "-E", "-s", "-S"]  # fast start; servutil.py is a sibling
        zones = [
            "--zone", f"{servers[0].hostname}={servers[0].uplink_v4}",
            "--zone", f"{servers[0].hostname}={servers[0].uplink_v6}",
            "--zone", f"whoami.test={WEB_V4}",
            "--zone", f"whoami.test={WEB_V6}",
        ]  # fmt: skip
        for s in servers[1:]:
            zones += [
                "--zone",
                f"{s.hostname}={s.uplink_v4}",
                "--zone",
                f"{s.hostname}={s.uplink_v6}",
            ]
        pythons: dict[str, subprocess.Popen[bytes]] = {}
        sockets: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        for s in servers:
            # a private /run/wireguard: the server is a remote machine, and `wg show` run by
            # wgns anywhere in the sandbox must not list it
            sandbox.path(s.uapi_dir).mkdir(mode=0o700, exist_ok=True)
            wg = start(
                f"wireguard-go-{s.ifname}",
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1" /run/wireguard && exec wireguard-go -f "$2"',
                 "sh", s.uapi_dir, s.ifname],
                s.netns,
                WG_ENV,
            )  # fmt: skip
            provider._wg_procs[s.index] = wg
            sockets[f"wireguard-go-{s.ifname}"] = (wg, f"{s.uapi_dir}/{s.ifname}.sock")
        pythons["dns-isp"] = start(
            "dns-isp",
            [*py, _DNS_SCRIPT, "--listen", ISP_V4, "--listen", ISP_V6, *zones,
             "--log", provider.isp_dns_log],
            ISP_NS,
        )  # fmt: skip
        for s in servers:
            pythons[f"dns-{s.netns}"] = start(
                f"dns-{s.netns}",
                [*py, _DNS_SCRIPT, "--listen", s.tunnel_v4, "--listen", s.tunnel_v6, *zones,
                 "--log", s.dns_log],
                s.netns,
            )  # fmt: skip
        pythons["web"] = start(
            "web", [*py, _ECHO_SCRIPT, "--http", "80", "--echo", "7", "--log", provider.web_log],
            WEB_NS,
        )  # fmt: skip

        out = sandbox.run(["sh", "-c", network_script(servers)]).stdout
        keys = {}
        for line in out.splitlines():
            if line.startswith("pubkey "):
                _, idx, key = line.split()
                keys[int(idx)] = key
        provider.servers = [make_server(s.index, keys[s.index]) for s in servers]

        wait_ready(sandbox, {}, sockets, READY_TIMEOUT)
        for s in provider.servers:
            provider.wg(s.index, ["sh", "-c", wg_script(s)], raw=True)
        sandbox.write_file("/etc/resolv.conf", f"nameserver {ISP_V4}\n")
        wait_ready(sandbox, pythons, {}, READY_TIMEOUT)
        for p in pythons.values():
            assert p.stdout is not None
            p.stdout.close()
        wait_settled(sandbox, [None, *namespaces], READY_TIMEOUT)
    except BaseException:
        provider.close()
        raise
    provider.build_time = time.monotonic() - t0
    return provider
