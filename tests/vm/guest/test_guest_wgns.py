"""`wgns up --backend kernel` on the guest's real kernel WireGuard, against a wireguard-go peer.

wgvm-upbirth ──veth 198.18.10.1/30 ─── 198.18.10.2/30── wgvm-uppeer
 (birthplace: the kernel device's         wireguard-go "wgvmsrv" 198.19.10.1,
  UDP socket, port 51830)                 2001:db8:10::1, port 51831
wgvm-vpn: created by wgns; the kernel device (198.19.10.2, 2001:db8:10::2, MTU 1380)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guestutil
import pytest
from guestutil import has_port, ip_json, namespaces, sh, udp_listeners, veth

pytestmark = guestutil.only_in_vm

PROJECT = Path(__file__).resolve().parents[3]
NS, BIRTH, PEER = "wgvm-vpn", "wgvm-upbirth", "wgvm-uppeer"
CPORT, SPORT, MTU = 51830, 51831, 1380


def wgns(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "wgns", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check and p.returncode != 0:
        pytest.fail(
            f"wgns {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}", pytrace=False
        )
    return p


def have_wgns_up() -> bool:
    return wgns("up", "--help", check=False).returncode == 0


def listing(path: str) -> dict[str, str]:
    """Names (and for files, contents) under ``path``."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path) + "/"] = ""
        for f in files:
            p = os.path.join(root, f)
            try:
                out[os.path.relpath(p, path)] = Path(p).read_text(errors="replace")
            except OSError as e:
                out[os.path.relpath(p, path)] = f"<{e}>"
    return out


def snapshot() -> dict[str, Any]:
    """What wgns may touch: links/addresses/routes of the root and birthplace namespaces, the
    named namespaces, its state and per-namespace files, UAPI sockets, nft tables."""
    snap: dict[str, Any] = {}
    for ns in (None, BIRTH):
        key = ns or "root"
        snap[f"{key}/link"] = ip_json("-d", "link", "show", ns=ns)
        snap[f"{key}/addr"] = ip_json("addr", "show", ns=ns)
        snap[f"{key}/route4"] = ip_json("-4", "route", "show", "table", "all", ns=ns)
        snap[f"{key}/route6"] = ip_json("-6", "route", "show", "table", "all", ns=ns)
        snap[f"{key}/rule4"] = ip_json("-4", "rule", "show", ns=ns)
        snap[f"{key}/nft"] = sh("nft", "list", "ruleset", ns=ns).stdout
    snap["netns"] = sorted(os.listdir("/run/netns"))
    for d in ("/run/wgns", "/etc/netns", "/run/wireguard"):
        snap[d] = listing(d)
    return snap


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a.get(k)!r:.400} -> {b.get(k)!r:.400}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]  # fmt: skip


def test_wgns_up_kernel_backend_against_wireguard_go_and_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    if not have_wgns_up():
        pytest.skip("`python3 -m wgns up` is not available in this checkout yet")
    sh("modprobe", "wireguard")
    with namespaces(BIRTH, PEER):
        veth(BIRTH, "wgvm-ub", "198.18.10.1/30", PEER, "wgvm-up", "198.18.10.2/30")
        ckey, cpub = guestutil.keypair(tmp_path, "client")
        skey, spub = guestutil.keypair(tmp_path, "server")
        profile = tmp_path / f"{NS}.toml"
        profile.write_text(
            f'name = "{NS}"\n'
            f'birthplace = "{BIRTH}"\n'
            "\n[[interface]]\n"
            f'private_key_file = "{ckey}"\n'
            'address = ["198.19.10.2/32", "2001:db8:10::2/128"]\n'
            f"listen_port = {CPORT}\n"
            f"mtu = {MTU}\n"
            "\n[[interface.peer]]\n"
            f'public_key = "{spub}"\n'
            'allowed_ips = ["0.0.0.0/0", "::/0"]\n'
            f'endpoint = "198.18.10.2:{SPORT}"\n'
            "persistent_keepalive = 25\n"
        )
        profile.chmod(0o600)

        with guestutil.wireguard_go(PEER, "wgvmsrv"):
            sh("wg", "set", "wgvmsrv", "private-key", str(skey), "listen-port", str(SPORT),
               "peer", cpub, "allowed-ips", "198.19.10.2/32,2001:db8:10::2/128",
               ns=PEER)  # fmt: skip
            sh("ip", "-n", PEER, "addr", "add", "198.19.10.1/24", "dev", "wgvmsrv")
            sh("ip", "-n", PEER, "addr", "add", "2001:db8:10::1/64", "dev", "wgvmsrv", "nodad")
            sh("ip", "-n", PEER, "link", "set", "wgvmsrv", "up")
            time.sleep(1)  # let the veth's IPv6 link-local settle before the snapshot
            before = snapshot()

            wgns("up", str(profile), "--backend", "kernel")
            try:
                st = json.loads(wgns("status", NS, "--json").stdout)["namespaces"][0]
                assert st["backend"] == "kernel"
                (iface,) = st["interfaces"]
                ifname = iface["ifname"]

                # the kernel's WireGuard, in the namespace, with the profile's MTU
                (link,) = ip_json("-d", "link", "show", ifname, ns=NS)
                assert link["linkinfo"]["info_kind"] == "wireguard"
                assert link["mtu"] == MTU
                assert iface["daemon"] is None

                # `wg show` agrees with the profile
                dump = sh("wg", "show", ifname, "dump", ns=NS).stdout.splitlines()
                me = dump[0].split("\t")
                assert me[1] == cpub and me[2] == str(CPORT)
                (peer,) = (line.split("\t") for line in dump[1:])
                assert peer[0] == spub
                assert peer[2] == f"198.18.10.2:{SPORT}"
                assert sorted(peer[3].split(",")) == ["0.0.0.0/0", "::/0"]
                assert peer[7] == "25"

                # the UDP socket lives in the birthplace, not in the namespace
                assert has_port(udp_listeners(BIRTH), CPORT)
                assert not has_port(udp_listeners(NS), CPORT)

                # kernel <-> userspace interop through the tunnel, both address families
                sh("ping", "-c", "3", "-i", "0.3", "-W", "5", "198.19.10.1", ns=NS, timeout=90)
                sh("ping", "-6", "-c", "3", "-i", "0.3", "-W", "5", "2001:db8:10::1", ns=NS,
                   timeout=90)  # fmt: skip
                latest = sh("wg", "show", "wgvmsrv", "latest-handshakes", ns=PEER).stdout.split()
                assert int(latest[1]) > 0

                # --reload on the kernel's device: a new MTU, and IPv4 only through the tunnel
                profile.write_text(
                    profile.read_text()
                    .replace(f"mtu = {MTU}", f"mtu = {MTU - 20}")
                    .replace('allowed_ips = ["0.0.0.0/0", "::/0"]', 'allowed_ips = ["0.0.0.0/0"]')
                )
                reloaded = wgns("up", str(profile), "--backend", "kernel", "--reload")
                assert "reloaded" in reloaded.stderr, reloaded.stderr
                (link,) = ip_json("-d", "link", "show", ifname, ns=NS)
                assert link["mtu"] == MTU - 20
                routes6 = ip_json("-6", "route", "show", "table", "all", ns=NS)
                assert not [r for r in routes6 if r.get("dst") == "default"], routes6
                (peer,) = (
                    line.split("\t")
                    for line in sh("wg", "show", ifname, "dump", ns=NS).stdout.splitlines()[1:]
                )
                assert peer[3] == "0.0.0.0/0"
                sh("ping", "-c", "2", "-i", "0.3", "-W", "5", "198.19.10.1", ns=NS, timeout=90)

                # the kernel device deleted by hand: `up` repairs it in place, born again
                # from the birthplace (its UDP socket there), and traffic flows again
                sh("ip", "-n", NS, "link", "del", ifname)
                st = json.loads(wgns("status", NS, "--json").stdout)["namespaces"][0]
                assert st["broken"], st
                repaired = wgns("up", str(profile), "--backend", "kernel")
                assert "repaired" in repaired.stderr, repaired.stderr
                (link,) = ip_json("-d", "link", "show", ifname, ns=NS)
                assert link["linkinfo"]["info_kind"] == "wireguard" and link["mtu"] == MTU - 20
                assert has_port(udp_listeners(BIRTH), CPORT)
                assert not has_port(udp_listeners(NS), CPORT)
                sh("ping", "-c", "3", "-i", "0.3", "-W", "5", "198.19.10.1", ns=NS, timeout=90)
                st = json.loads(wgns("status", NS, "--json").stdout)["namespaces"][0]
                assert st["broken"] == [], st
            finally:
                down = wgns("down", NS, check=False)
            assert down.returncode == 0, down.stdout + down.stderr
            after = snapshot()
            assert not diff(before, after), "wgns down left changes:\n" + "\n".join(
                diff(before, after)
            )
            assert NS not in os.listdir("/run/netns")
