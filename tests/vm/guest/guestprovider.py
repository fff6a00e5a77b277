"""wgvm-provider.service in the systemd guest: the simulated VPN provider (wgns.testing.sim).

The guest's root namespace plays "the machine" (in the tests' sandbox it is the sandbox's): the
provider's ISP, web and server namespaces hang off its uplink ``uplink0`` (198.18.0.2, default
route via the ISP, /etc/resolv.conf naming the ISP's DNS). Once built it writes the profiles the
guest checks use and /run/wgvm/provider.json, says READY=1 and stays until stopped (systemd then
kills its servers, which live in its control group).

Profiles (/etc/wgns/, mode 0600; one client of the provider each):

* ``x``, ``boot``: wg-quick .conf files, IPv4 + IPv6, the tunnel's DNS, backend auto (kernel);
* ``heal``: TOML, ``backend = "userspace"`` (a wireguard-go daemon to kill), endpoint
  ``vpn.provider.test:51820`` (answered by the guest's /etc/hosts, so it can move);
* ``broken``: endpoint ``nowhere.invalid:51820``, which no resolver answers: `wgns up` fails.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from wgns.system import sdnotify
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import provider as sim

FACTS = Path("/run/wgvm/provider.json")
PROFILES = Path("/etc/wgns")
KEEPALIVE = 5  # the server keeps seeing the client: a fresh handshake shows in its dump


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def heal_profile(p: sim.Provider, private_key: str, address: str) -> str:
    return (
        'name = "heal"\n'
        'backend = "userspace"\n'
        f'dns = ["{p.dns_v4}"]\n'
        "\n[[interface]]\n"
        f'private_key = "{private_key}"\n'
        f'address = ["{address}"]\n'
        "\n[[interface.peer]]\n"
        f'public_key = "{p.server_public_key}"\n'
        'allowed_ips = ["0.0.0.0/0"]\n'
        f'endpoint = "{p.endpoint_name}"\n'
        f"persistent_keepalive = {KEEPALIVE}\n"
    )


def main() -> int:
    sim.READY_TIMEOUT = 180.0  # the guest is emulated and busy booting: servers start slowly
    # the guest's root namespaces are "the machine": a Sandbox of the calling process, as
    # `wgns demo` makes, but without unsharing anything
    sandbox = Sandbox(pid=os.getpid(), keeper=None)
    Path("/run/wireguard").mkdir(mode=0o700, exist_ok=True)  # the servers bind theirs over it
    p = sim.build_provider(sandbox)
    clients = {}
    for ns in ("x", "boot", "heal", "broken"):
        c = p.new_client()
        clients[ns] = {"public_key": c.public_key, "v4": c.address_v4, "v6": c.address_v6}
        if ns == "heal":
            text = heal_profile(p, c.private_key, c.address_v4)
            _write(PROFILES / f"{ns}.toml", text)
            continue
        endpoint = "nowhere.invalid:51820" if ns == "broken" else None
        _write(
            PROFILES / f"{ns}.conf",
            p.client_conf(c, endpoint=endpoint, keepalive=KEEPALIVE),
        )
    facts = {
        "web_v4": p.web_v4,
        "web_v6": p.web_v6,
        "exit_v4": p.server.uplink_v4,  # the provider's NAT: what the web sees through it
        "host_v4": p.host_v4,  # what the web sees from the machine itself (no tunnel)
        "isp_v4": p.isp_dns,
        "uplink": p.host_uplink,
        "web_log": p.web_log,
        "dns_log": p.server.dns_log,
        "isp_dns_log": p.isp_dns_log,
        "server": {
            "netns": p.server.netns,
            "ifname": p.server.ifname,
            "hostname": p.server.hostname,
            "port": p.server.port,
            "uplink_v4": p.server.uplink_v4,
            "isp_v4": p.server.isp_v4,
            "wg_pid": p._wg_procs[0].pid,  # its mount namespace has its UAPI socket
        },
        "clients": clients,
        "build_seconds": round(p.build_time, 1),
    }
    FACTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = FACTS.with_name(FACTS.name + ".tmp")
    tmp.write_text(json.dumps(facts, indent=1) + "\n")
    tmp.replace(FACTS)
    sdnotify.notify(READY=1, STATUS=f"provider built in {p.build_time:.1f} s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
