"""wgns.wireguard.dump (`wg show dump`, the private key dropped) and the text wgns sends to a
device: the UAPI `set` request and `wg setconf`'s input."""

from __future__ import annotations

import base64
from ipaddress import ip_network

from wgns.profile.model import Endpoint, Interface, Peer, Secret
from wgns.wireguard import dump, uapi
from wgns.wireguard.setconf import setconf_text

PRIV = "YDw4916Jl80PEEcRL378XR/Ze6WtldDnATf7kaBvQGE="
PUB = "qMYq+I30blCSB24UgVepCoTiu2ChJNyPkTxk6YKCcRE="
PSK = "GJu0OkTpCJtXSOV1wSSi45Hgdev/7lSP9Vcgp9nvW3I="


def hexkey(b64: str) -> str:
    return base64.b64decode(b64).hex()


IFACE = Interface(
    name="x",
    private_key=Secret(PRIV),
    listen_port=7,
    fwmark=0x1234,
    peers=(
        Peer(
            public_key=PUB,
            preshared_key=Secret(PSK),
            allowed_ips=(ip_network("10.0.0.0/8"), ip_network("::/0")),
            endpoint=Endpoint("fd00::1", 5),
            persistent_keepalive=25,
        ),
    ),
)


def test_parse_dump_keeps_everything_but_the_private_key() -> None:
    text = (
        f"{PRIV}\t{PUB}\t51820\toff\n"
        f"{PUB}\t(none)\t198.18.1.1:51820\t0.0.0.0/0,::/0\t1700000000\t10\t20\t25\n"
        f"{PSK}\t{PRIV}\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    dev = dump.parse_dump(text)
    assert (dev.public_key, dev.listen_port, dev.fwmark) == (PUB, 51820, None)
    first, second = dev.peers
    assert first == dump.PeerState(
        public_key=PUB,
        endpoint="198.18.1.1:51820",
        allowed_ips=("0.0.0.0/0", "::/0"),
        latest_handshake=1700000000,
        rx_bytes=10,
        tx_bytes=20,
        persistent_keepalive=25,
        has_preshared_key=False,
    )
    assert second.has_preshared_key and second.endpoint is None and second.allowed_ips == ()
    assert second.persistent_keepalive is None
    assert PRIV not in repr(dev)  # neither the device's key nor the second peer's PSK field
    assert dump.parse_dump(f"{PRIV}\t{PUB}\t1\t0x1234\n").fwmark == 0x1234


def test_uapi_set_request() -> None:
    assert uapi.set_text(IFACE) == (
        f"set=1\nprivate_key={hexkey(PRIV)}\nlisten_port=7\nfwmark={0x1234}\n"
        f"replace_peers=true\npublic_key={hexkey(PUB)}\npreshared_key={hexkey(PSK)}\n"
        "endpoint=[fd00::1]:5\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
        "allowed_ip=10.0.0.0/8\nallowed_ip=::/0\n\n"
    )


def test_setconf_text() -> None:
    assert setconf_text(IFACE) == (
        f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 7\nFwMark = 0x1234\n\n"
        f"[Peer]\nPublicKey = {PUB}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.0.0/8, ::/0\n"
        "Endpoint = [fd00::1]:5\nPersistentKeepalive = 25\n"
    )
