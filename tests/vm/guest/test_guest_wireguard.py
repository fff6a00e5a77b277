"""Kernel WireGuard in the guest: born in one namespace, moved to another, talking to wireguard-go.

wgvm-birth ──veth 198.18.0.1/30 ─── 198.18.0.2/30── wgvm-peer
    (the kernel device's UDP socket)                 wireguard-go "wgvmgo" 198.19.0.2,
                                                     2001:db8:19::2, port 51821
wgvm-tun: the kernel device "wgvmk" (198.19.0.1, 2001:db8:19::1, port 51820) after the move;
          no other link, so the handshake can only go through the birthplace's veth.
"""

from __future__ import annotations

import time
from pathlib import Path

import guestutil
from guestutil import has_port, link_names, namespaces, sh, udp_listeners, veth

pytestmark = guestutil.only_in_vm

BIRTH, TUN, PEER = "wgvm-birth", "wgvm-tun", "wgvm-peer"
KPORT, GOPORT = 51820, 51821


def handshake_age(ns: str, ifname: str) -> int:
    """Latest handshake (unix time) of the only peer of ``ifname``, 0 = never."""
    out = sh("wg", "show", ifname, "latest-handshakes", ns=ns).stdout.split()
    return int(out[1]) if len(out) == 2 else 0


def test_kernel_wireguard_moved_to_another_namespace_talks_to_wireguard_go(
    tmp_path: Path,
) -> None:
    sh("modprobe", "wireguard")
    with namespaces(BIRTH, TUN, PEER):
        veth(BIRTH, "wgvm-b", "198.18.0.1/30", PEER, "wgvm-p", "198.18.0.2/30")
        kkey, kpub = guestutil.keypair(tmp_path, "kernel")
        gkey, gpub = guestutil.keypair(tmp_path, "go")

        # born in BIRTH, moved to TUN, configured there (key from a file, never argv)
        sh("ip", "-n", BIRTH, "link", "add", "wgvmk", "type", "wireguard")
        sh("ip", "-n", BIRTH, "link", "set", "wgvmk", "netns", TUN)
        assert "wgvmk" not in link_names(BIRTH)
        assert link_names(TUN) == ["lo", "wgvmk"]
        kind = guestutil.ip_json("-d", "link", "show", "wgvmk", ns=TUN)[0]["linkinfo"]["info_kind"]
        assert kind == "wireguard"  # the kernel's, not a tun device
        sh("wg", "set", "wgvmk", "private-key", str(kkey), "listen-port", str(KPORT),
           "peer", gpub, "allowed-ips", "198.19.0.2/32,2001:db8:19::2/128",
           "endpoint", f"198.18.0.2:{GOPORT}", ns=TUN)  # fmt: skip
        sh("ip", "-n", TUN, "addr", "add", "198.19.0.1/24", "dev", "wgvmk")
        sh("ip", "-n", TUN, "addr", "add", "2001:db8:19::1/64", "dev", "wgvmk", "nodad")
        sh("ip", "-n", TUN, "link", "set", "wgvmk", "mtu", "1420", "up")

        with guestutil.wireguard_go(PEER, "wgvmgo"):
            sh("wg", "set", "wgvmgo", "private-key", str(gkey), "listen-port", str(GOPORT),
               "peer", kpub, "allowed-ips", "198.19.0.1/32,2001:db8:19::1/128",
               ns=PEER)  # fmt: skip
            sh("ip", "-n", PEER, "addr", "add", "198.19.0.2/24", "dev", "wgvmgo")
            sh("ip", "-n", PEER, "addr", "add", "2001:db8:19::2/64", "dev", "wgvmgo", "nodad")
            sh("ip", "-n", PEER, "link", "set", "wgvmgo", "up")

            # the kernel device's socket stayed in its birthplace
            assert has_port(udp_listeners(BIRTH), KPORT)
            assert not has_port(udp_listeners(TUN), KPORT)
            assert not has_port(udp_listeners(PEER), KPORT)
            assert has_port(udp_listeners(PEER), GOPORT)  # wireguard-go's is where it runs

            before = int(time.time())
            sh("ping", "-c", "3", "-i", "0.3", "-W", "5", "198.19.0.2", ns=TUN, timeout=90)
            sh("ping", "-6", "-c", "3", "-i", "0.3", "-W", "5", "2001:db8:19::2", ns=TUN,
               timeout=90)  # fmt: skip
            # ...and back the other way, initiated by the userspace side
            sh("ping", "-c", "2", "-i", "0.3", "-W", "5", "198.19.0.1", ns=PEER, timeout=90)

            assert handshake_age(TUN, "wgvmk") >= before - 5
            assert handshake_age(PEER, "wgvmgo") >= before - 5
            endpoint = sh("wg", "show", "wgvmgo", "endpoints", ns=PEER).stdout.split()[1]
            assert endpoint == f"198.18.0.1:{KPORT}"  # packets came from the birthplace's veth
            transfer = sh("wg", "show", "wgvmk", "transfer", ns=TUN).stdout.split()
            assert int(transfer[1]) > 0 and int(transfer[2]) > 0

            # cut the birthplace's link: the tunnel in TUN goes silent
            sh("ip", "-n", BIRTH, "link", "set", "wgvm-b", "down")
            p = sh("ping", "-c", "2", "-W", "1", "198.19.0.2", ns=TUN, check=False, timeout=30)
            assert p.returncode != 0
