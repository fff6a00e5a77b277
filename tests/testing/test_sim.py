"""The simulated provider, end to end, with hand-made clients (no wgns involved)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wgns.testing.isolation import SANDBOX_TMP
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Capture, Client, Packet, Provider, build_provider, dnsserver
from wgns.testing.sim.capture import parse_pcap
from wgns.testing.snapshot import snapshot_diff

REPO_ROOT = Path(__file__).resolve().parents[2]
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
WG_QUICK_ONLY = {"address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown",
                 "saveconfig"}  # fmt: skip


def strip_conf(conf: str) -> str:
    """What `wg-quick strip` does: drop the keys `wg setconf` does not know."""
    keep = []
    for line in conf.splitlines():
        key = line.split("=", 1)[0].strip().lower()
        if "=" in line and key in WG_QUICK_ONLY:
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def hand_client(
    sandbox: Sandbox,
    provider: Provider,
    *,
    ns: str = "vpn",
    ifname: str = "wgc",
    client: Client | None = None,
    server: int = 0,
    endpoint: str | None = None,
    ipv6: bool = True,
) -> Client:
    """A confined client built by hand: wireguard-go born in the sandbox's root namespace (its
    UDP socket stays there), the interface moved into NS, configured with `wg setconf`."""
    client = client or provider.new_client()
    conf = provider.client_conf(client, server=server, endpoint=endpoint, ipv6=ipv6)
    v4, v6 = client.addresses_on(server)
    sandbox.run(["ip", "netns", "add", ns])
    sandbox.popen(["wireguard-go", "-f", ifname], env=WG_ENV)
    sock = sandbox.path(f"/run/wireguard/{ifname}.sock")
    deadline = time.monotonic() + 5
    while not sock.exists():
        assert time.monotonic() < deadline, "wireguard-go did not come up"
        time.sleep(0.005)
    conf_path = f"{SANDBOX_TMP}/{ifname}.conf"
    sandbox.write_file(conf_path, strip_conf(conf), mode=0o600)
    lines = ["link set lo up", f"addr add {v4} dev {ifname}", f"link set {ifname} up",
             f"route add default dev {ifname}"]  # fmt: skip
    if ipv6:
        lines += [f"addr add {v6} dev {ifname} nodad", f"route add ::/0 dev {ifname}"]
    sandbox.run(["ip", "link", "set", ifname, "netns", ns])
    sandbox.run(["wg", "setconf", ifname, conf_path])
    sandbox.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
    return client


def curl(sandbox: Sandbox, url: str, ns: str | None = None) -> str:
    return sandbox.run(["curl", "-sS", "--max-time", "10", url], netns=ns).stdout


def dig(sandbox: Sandbox, *args: str, ns: str | None = None) -> list[str]:
    out = sandbox.run(["dig", "+short", "+time=2", "+tries=2", *args], netns=ns).stdout
    return out.split()


def assert_only_wireguard(packets: list[Packet], host: str, server: str) -> None:
    traffic = [p for p in packets if not p.is_housekeeping]
    assert traffic, "the capture saw nothing"
    for p in traffic:
        outgoing = (p.src, p.dst, p.dport) == (host, server, 51820)
        incoming = (p.src, p.dst, p.sport) == (server, host, 51820)
        assert p.proto == "udp" and (outgoing or incoming), f"leak on the ISP link: {p}"


# ------------------------------------------------------------------------------ topology


def test_host_reaches_the_internet_directly(sandbox: Sandbox, provider: Provider) -> None:
    assert curl(sandbox, "http://198.18.2.2/") == "198.18.0.2\n"
    assert curl(sandbox, "http://[2001:db8:2::2]/") == "2001:db8::2\n"
    assert sandbox.read_text("/etc/resolv.conf") == "nameserver 198.18.0.1\n"
    routes = json.loads(sandbox.run(["ip", "-j", "route"]).stdout)
    assert {"dst": "default", "gateway": "198.18.0.1"}.items() <= routes[0].items()
    sandbox.run(["ping", "-c1", "-W2", provider.server.uplink_v4])
    sandbox.run(["ping", "-c1", "-W2", provider.server.uplink_v6])
    assert [r["path"] for r in provider.web_requests() if r["proto"] == "http"] == ["/", "/"]


def test_provider_build_is_fast_and_repeatable(sandbox: Sandbox) -> None:
    """Budget: sandbox + provider in < 1.5 s (best of three: the machine may be busy)."""
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        p = build_provider(sandbox)
        elapsed = time.monotonic() - t0
        assert p.build_time <= elapsed
        assert curl(sandbox, "http://198.18.2.2/") == "198.18.0.2\n"
        p.close()
        times.append(sandbox.spawn_seconds + elapsed)
        if len(times) >= 2 and min(times) < 1.5:
            break
    assert min(times) < 1.5, f"sandbox+provider took {times}"


def test_isp_dns(sandbox: Sandbox, provider: Provider) -> None:
    assert dig(sandbox, "vpn.provider.test") == ["198.18.1.2"]
    assert dig(sandbox, "@2001:db8::1", "AAAA", "vpn.provider.test") == ["2001:db8:1::2"]
    assert dig(sandbox, "+tcp", "whoami.test") == ["198.18.2.2"]
    assert dig(sandbox, "whoami.test", "MX") == []
    full = sandbox.run(["dig", "+time=2", "nowhere.test"]).stdout
    assert "status: NXDOMAIN" in full
    assert re.search(r"flags: qr aa rd ra;", full)
    # the glibc stub resolver (through the sandbox's /etc/resolv.conf) accepts the answers
    out = sandbox.run(["getent", "ahosts", "vpn.provider.test"]).stdout
    assert {line.split()[0] for line in out.splitlines()} == {"198.18.1.2", "2001:db8:1::2"}
    assert sandbox.run(["getent", "hosts", "nowhere.test"], check=False).returncode == 2
    queries = provider.isp_dns_queries()
    assert queries[:4] == [
        ("vpn.provider.test", "A"),
        ("vpn.provider.test", "AAAA"),
        ("whoami.test", "A"),
        ("whoami.test", "MX"),
    ]
    assert ("nowhere.test", "A") in queries
    assert {r["proto"] for r in provider.isp_dns_log_entries()} == {"udp", "tcp"}
    assert provider.dns_queries() == []


def test_udp_echo_and_bytes(sandbox: Sandbox, provider: Provider) -> None:
    out = sandbox.run(["socat", "-T2", "-", "UDP:198.18.2.2:7"], input="ping-over-udp\n").stdout
    assert out == "ping-over-udp\n"
    out = sandbox.run(["socat", "-T2", "-", "TCP:[2001:db8:2::2]:7"], input="tcp\n").stdout
    assert out == "tcp\n"
    size = sandbox.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://198.18.2.2/bytes/100000",
        ]
    ).stdout
    assert size == "100000"


# ------------------------------------------------------------------------------ the tunnel


def test_hand_made_client_ipv4_endpoint(sandbox: Sandbox, provider: Provider) -> None:
    client = hand_client(sandbox, provider)
    with provider.capture() as cap:
        assert curl(sandbox, "http://198.18.2.2/", ns="vpn") == "198.18.1.2\n"
        assert curl(sandbox, "http://[2001:db8:2::2]/", ns="vpn") == "2001:db8:1::2\n"
        assert dig(sandbox, "@198.19.0.1", "whoami.test", ns="vpn") == ["198.18.2.2"]
        assert dig(sandbox, "@2001:db8:ff::1", "AAAA", "whoami.test", ns="vpn") == ["2001:db8:2::2"]
    assert provider.server_handshakes()[client.public_key] > 0
    assert provider.dns_queries() == [("whoami.test", "A"), ("whoami.test", "AAAA")]
    clients = {r["client"] for r in provider.dns_log()}
    assert clients == {"198.19.0.2", "2001:db8:ff::2"}  # seen from inside the tunnel
    assert provider.isp_dns_queries() == []
    assert_only_wireguard(cap.packets(), "198.18.0.2", "198.18.1.2")
    # the web server saw the provider's address, never the client's
    assert {r["client"] for r in provider.web_requests()} == {"198.18.1.2", "2001:db8:1::2"}


def test_hand_made_client_ipv6_endpoint(sandbox: Sandbox, provider: Provider) -> None:
    client = hand_client(sandbox, provider, endpoint=provider.endpoint_v6)
    with provider.capture() as cap:
        assert curl(sandbox, "http://[2001:db8:2::2]/", ns="vpn") == "2001:db8:1::2\n"
        assert curl(sandbox, "http://198.18.2.2/", ns="vpn") == "198.18.1.2\n"
        assert dig(sandbox, "@2001:db8:ff::1", "whoami.test", ns="vpn") == ["198.18.2.2"]
    assert provider.server_handshakes()[client.public_key] > 0
    assert provider.dns_queries() == [("whoami.test", "A")]
    assert_only_wireguard(cap.packets(), "2001:db8::2", "2001:db8:1::2")
    dump = provider.server_dump()
    assert dump[0]["endpoint"].startswith("[2001:db8::2]:")


def test_endpoint_by_name_resolves_through_the_isp(sandbox: Sandbox, provider: Provider) -> None:
    client = provider.new_client()
    hand_client(sandbox, provider, client=client)
    sandbox.run(
        ["wg", "set", "wgc", "peer", provider.server_public_key, "endpoint",
         f"{provider.endpoint_host}:51820"]
    )  # fmt: skip
    assert ("vpn.provider.test", "A") in provider.isp_dns_queries()
    assert curl(sandbox, "http://198.18.2.2/", ns="vpn") == "198.18.1.2\n"
    provider.wait_handshake(client.public_key)


def test_ipv4_only_client(sandbox: Sandbox, provider: Provider) -> None:
    hand_client(sandbox, provider, ipv6=False)
    assert curl(sandbox, "http://198.18.2.2/", ns="vpn") == "198.18.1.2\n"
    r = sandbox.run(
        ["curl", "-sS", "--max-time", "2", "http://[2001:db8:2::2]/"], netns="vpn", check=False
    )
    assert r.returncode != 0


def test_second_server(sandbox: Sandbox) -> None:
    provider = build_provider(sandbox, second_server=True)
    assert len(provider.servers) == 2
    s2 = provider.servers[1]
    assert s2.endpoint_v4 == "198.18.3.2:51820" and s2.endpoint_v6 == "[2001:db8:3::2]:51820"
    assert s2.public_key and s2.public_key != provider.server_public_key
    client = provider.new_client()
    assert client.addresses == (
        ("198.19.0.2/32", "2001:db8:ff::2/128"),
        ("198.19.1.2/32", "2001:db8:fe::2/128"),
    )
    hand_client(sandbox, provider, client=client, ns="one", ifname="wgc1")
    hand_client(sandbox, provider, client=client, ns="two", ifname="wgc2", server=1)
    assert curl(sandbox, "http://198.18.2.2/", ns="one") == "198.18.1.2\n"
    assert curl(sandbox, "http://198.18.2.2/", ns="two") == "198.18.3.2\n"
    assert curl(sandbox, "http://[2001:db8:2::2]/", ns="two") == "2001:db8:3::2\n"
    assert dig(sandbox, "@198.19.1.1", "vpn2.provider.test", ns="two") == ["198.18.3.2"]
    assert provider.dns_queries(1) == [("vpn2.provider.test", "A")]
    assert provider.dns_queries(0) == []
    assert provider.server_handshakes(1)[client.public_key] > 0
    assert dig(sandbox, "vpn2.provider.test") == ["198.18.3.2"]


def test_snapshot_stable_across_traffic(sandbox: Sandbox, provider: Provider) -> None:
    hand_client(sandbox, provider)
    assert curl(sandbox, "http://198.18.2.2/", ns="vpn") == "198.18.1.2\n"
    before = sandbox.snapshot()
    assert {"isp", "provider", "web", "vpn"} <= set(before["net"])
    for ns in ("vpn", None):
        curl(sandbox, "http://198.18.2.2/bytes/200000", ns=ns)
        curl(sandbox, "http://[2001:db8:2::2]/bytes/200000", ns=ns)
        dig(sandbox, "@2001:db8::1", "whoami.test", ns=ns)
    sandbox.run(["ping", "-c3", "-i0.05", "-s1400", "2001:db8:2::2"], netns="vpn")
    after = sandbox.snapshot()
    assert snapshot_diff(before, after) == []


def test_provider_in_enter_self_mode() -> None:
    """`wgns demo` runs the sandbox and the provider in its own process."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from wgns.testing.sandbox import Sandbox
        from wgns.testing.sim import build_provider
        sb = Sandbox.enter_self()
        p = build_provider(sb)
        out = sb.run(["curl", "-sS", "--max-time", "5", "http://198.18.2.2/"]).stdout
        client = p.new_client()
        hs = p.server_handshakes()
        p.close()
        sb.close()
        print(out.strip(), client.public_key in hs, sb.leftover_pids())
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["198.18.0.2", "True", "[]"]
    assert not Path("/etc/netns/provider").exists() and not Path("/run/netns/isp").exists()


def test_provider_is_invisible_to_wg_in_the_sandbox(sandbox: Sandbox, provider: Provider) -> None:
    """The servers' UAPI sockets are private: `wg show` by wgns must not list them."""
    assert sandbox.run(["wg", "show", "interfaces"]).stdout.strip() == ""
    assert sandbox.run(["ls", "-A", "/run/wireguard"]).stdout == ""
    assert provider.wg(0, ["show", "interfaces"]).stdout.split() == ["wgsrv"]


def test_provider_close(sandbox: Sandbox, provider: Provider) -> None:
    assert set(sandbox.netns_names()) == {"isp", "provider", "web"}
    before = set(sandbox.pids())
    assert len(before) == 4  # two DNS servers, the web server, wireguard-go
    provider.close()
    provider.close()
    assert sandbox.netns_names() == []
    assert sandbox.pids() == []


# ------------------------------------------------------------------------------ client configs


def test_client_conf(provider: Provider) -> None:
    c = provider.new_client()
    assert c.address_v4 == "198.19.0.2/32" and c.address_v6 == "2001:db8:ff::2/128"
    assert c.private_key not in repr(c)
    full = provider.client_conf(c, mtu=1380, keepalive=25)
    assert full == (
        "[Interface]\n"
        f"PrivateKey = {c.private_key}\n"
        "Address = 198.19.0.2/32, 2001:db8:ff::2/128\n"
        "DNS = 198.19.0.1, 2001:db8:ff::1\n"
        "MTU = 1380\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {provider.server_public_key}\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        "Endpoint = 198.18.1.2:51820\n"
        "PersistentKeepalive = 25\n"
    )
    v4 = provider.client_conf(c, ipv6=False, dns=False, endpoint="vpn.provider.test:51820")
    assert "2001:db8" not in v4 and "::/0" not in v4 and "DNS" not in v4
    assert "Endpoint = vpn.provider.test:51820" in v4
    split = provider.client_conf(c, allowed_ips=("198.18.2.0/24",))
    assert "AllowedIPs = 198.18.2.0/24\n" in split
    fresh = provider.client_conf()
    assert "Address = 198.19.0.3/32" in fresh
    peers = {p["public_key"]: p["allowed_ips"] for p in provider.server_dump()}
    assert peers[c.public_key] == ["198.19.0.2/32", "2001:db8:ff::2/128"]
    assert len(peers) == 2


# ------------------------------------------------------------------------------ captures


def test_capture_sees_what_crosses_the_isp_link(sandbox: Sandbox, provider: Provider) -> None:
    with provider.capture() as cap:
        sandbox.run(["socat", "-T1", "-", "UDP:198.18.2.2:7"], input="x")
    udp = [p for p in cap.traffic() if p.proto == "udp"]
    assert ("198.18.0.2", "198.18.2.2", 7) in {(p.src, p.dst, p.dport) for p in udp}
    assert ("198.18.2.2", "198.18.0.2", 7) in {(p.src, p.dst, p.sport) for p in udp}
    other = provider.capture(None, "uplink0")
    assert isinstance(other, Capture)
    with other:
        sandbox.run(["ping", "-c1", "-W2", "2001:db8:2::2"])
    kinds = {(p.proto, p.icmp_type) for p in other.traffic()}
    assert ("icmp6", 128) in kinds and ("icmp6", 129) in kinds


def test_parse_pcap_ipv6_extension_headers() -> None:
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    src = bytes.fromhex("20010db8000000000000000000000002")
    dst = bytes.fromhex("ff020000000000000000000000000016")
    hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])  # hop-by-hop (router alert), then ICMPv6
    icmp = bytes([143, 0, 0, 0, 0, 0, 0, 0])
    ip6 = struct.pack("!IHBB", 0x60000000, len(hop) + len(icmp), 0, 1) + src + dst + hop + icmp
    frame = b"\x33\x33\x00\x00\x00\x16" + b"\x02" * 6 + b"\x86\xdd" + ip6
    rec = struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    (p,) = parse_pcap(hdr + rec)
    assert (p.proto, p.icmp_type, p.src, p.dst) == ("icmp6", 143, "2001:db8::2", "ff02::16")
    assert p.is_housekeeping


# ------------------------------------------------------------------------------ DNS server


def _query(
    name: str, qtype: int, *, qid: int = 0x1234, edns: bool = False, rd: bool = True
) -> bytes:
    flags = 0x0100 if rd else 0
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    msg += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    msg += struct.pack("!HH", qtype, 1)
    if edns:
        msg += b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)
    return msg


@pytest.fixture
def zone() -> dnsserver.Zone:
    z = dnsserver.Zone()
    z.add("vpn.provider.test", "198.18.1.2")
    z.add("vpn.provider.test", "2001:db8:1::2")
    return z


def test_dns_answers(zone: dnsserver.Zone) -> None:
    resp, q = dnsserver.answer(_query("VPN.Provider.test", dnsserver.TYPE_A), zone)
    assert resp is not None and q is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", resp[:12])
    assert (qid, qd, an, ns, ar) == (0x1234, 1, 1, 0, 0)
    assert flags == 0x8000 | 0x0400 | 0x0100 | 0x0080  # QR AA RD RA, NOERROR
    assert b"\x03VPN\x08Provider\x04test\x00" in resp  # the question, case preserved
    assert resp.endswith(bytes([198, 18, 1, 2]))

    resp, _ = dnsserver.answer(_query("vpn.provider.test", dnsserver.TYPE_AAAA, edns=True), zone)
    assert resp is not None
    assert struct.unpack("!HHHHHH", resp[:12])[3:] == (1, 0, 1)
    assert bytes.fromhex("20010db8000100000000000000000002") in resp

    resp, _ = dnsserver.answer(_query("vpn.provider.test", dnsserver.TYPE_ANY), zone)
    assert resp is not None and struct.unpack("!H", resp[6:8])[0] == 2


def test_dns_negative_answers(zone: dnsserver.Zone) -> None:
    resp, _ = dnsserver.answer(_query("nope.test", dnsserver.TYPE_A, rd=False), zone)
    assert resp is not None
    flags, an = struct.unpack("!H", resp[2:4])[0], struct.unpack("!H", resp[6:8])[0]
    assert flags & 0xF == dnsserver.RCODE_NXDOMAIN and not flags & 0x0100 and an == 0
    for name, qtype in (("vpn.provider.test", dnsserver.TYPE_MX), ("provider.test", 1)):
        resp, _ = dnsserver.answer(_query(name, qtype), zone)
        assert resp is not None
        assert struct.unpack("!H", resp[2:4])[0] & 0xF == dnsserver.RCODE_NOERROR
        assert struct.unpack("!H", resp[6:8])[0] == 0


def test_dns_malformed(zone: dnsserver.Zone) -> None:
    assert dnsserver.answer(b"\x00\x01", zone) == (None, None)
    resp, q = dnsserver.answer(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", zone)
    assert q is None and resp is not None
    assert resp[:2] == b"\xab\xcd" and struct.unpack("!H", resp[2:4])[0] & 0xF == 1  # FORMERR
    response = bytearray(_query("x.test", 1))
    response[2] |= 0x80
    assert dnsserver.answer(bytes(response), zone) == (None, None)  # never answer answers
    notify = bytearray(_query("x.test", 1))
    notify[2] |= 4 << 3
    resp, _ = dnsserver.answer(bytes(notify), zone)
    assert resp is not None and struct.unpack("!H", resp[2:4])[0] & 0xF == 4  # NOTIMP


def test_dns_listen_specs() -> None:
    assert dnsserver.parse_listen("198.18.0.1")[1:] == ("198.18.0.1", 53)
    assert dnsserver.parse_listen("198.18.0.1:5353")[1:] == ("198.18.0.1", 5353)
    assert dnsserver.parse_listen("2001:db8::1")[1:] == ("2001:db8::1", 53)
    assert dnsserver.parse_listen("[2001:db8::1]:54")[1:] == ("2001:db8::1", 54)
