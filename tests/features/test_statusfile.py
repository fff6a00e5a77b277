"""The status files (wgns.features.statusfile) for real: `wgns up` publishes one a user can read
and that holds no secret, `wgns down` withdraws it; publish() refuses secrets whoever calls it.
In the sandbox against the simulated provider (tests/conftest.py). Rates are a pure function
of two publications and the time, tested as such."""

from __future__ import annotations

import json
import stat
from typing import Any

from tests.lifecycle.test_lifecycle import NS, write_profile
from wgns.features import statusfile
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider
from wgns.testing.sim.provider import SIM_DIR

STATUS = f"/run/wgns/status/{NS}.json"


def psk_profile(sandbox: Sandbox, provider: Provider) -> tuple[str, dict[str, str]]:
    """A profile with a preshared key the server knows too (so that it handshakes), and the
    secrets and identities a status file must not show."""
    client = provider.new_client()
    psk = sandbox.run(["wg", "genpsk"]).stdout.strip()
    server = provider.server
    v4, v6 = client.addresses[0]
    conf = f"[Peer]\nPublicKey = {client.public_key}\nPresharedKey = {psk}\n"
    conf += f"AllowedIPs = {v4}, {v6}\n"  # addconf would leave the peer without them
    sandbox.write_file(f"{SIM_DIR}/psk-{client.index}.conf", conf, mode=0o600)
    provider.wg(0, ["addconf", server.ifname, f"{SIM_DIR}/psk-{client.index}.conf"])
    text = provider.client_conf(client).replace("[Peer]\n", f"[Peer]\nPresharedKey = {psk}\n", 1)
    secrets = {
        "private key": client.private_key,
        "preshared key": psk,
        "client public key": client.public_key,
        "server public key": provider.server_public_key,
        "endpoint": provider.endpoint_v4.rpartition(":")[0],
    }
    return write_profile(sandbox, text), secrets


def ping(sandbox: Sandbox, address: str, ns: str = NS) -> None:
    sandbox.run(["ping", "-c", "1", "-W", "5", address], netns=ns)


def test_up_publishes_a_readable_file_without_secrets_and_down_withdraws_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    profile, secrets = psk_profile(sandbox, provider)
    wgns("up", profile, "--name", NS)
    ping(sandbox, provider.web_v4)  # a handshake, with the preshared key
    wgns("status", NS)  # root's status refreshes the file
    for path, mode in (("/run/wgns/status", 0o755), (STATUS, 0o644)):
        assert stat.S_IMODE(sandbox.path(path).stat().st_mode) == mode, path
    text = sandbox.read_text(STATUS)
    for what, secret in secrets.items():
        assert secret not in text, f"the status file shows the {what}"
    doc = json.loads(text)
    assert doc["name"] == NS and doc["kind"] == "tunnel" and doc["phase"] == "up"
    assert doc["broken"] == [] and doc["format"] == 1
    (iface,) = doc["interfaces"]
    assert iface["up"] and iface["latest_handshake"] > 0 and iface["rx_bytes"] > 0
    assert iface["peers"][0]["preshared_key"] is True
    # the record it summarises is root's only
    assert stat.S_IMODE(sandbox.path(f"/run/wgns/{NS}.json").stat().st_mode) == 0o600

    wgns("down", NS)
    assert not sandbox.path(STATUS).exists()
    assert not sandbox.path("/run/wgns").exists()  # nothing of wgns left behind


PUBLISH = """
import json, sys
from wgns.features import statusfile
doc = json.loads(sys.argv[1])
try:
    statusfile.publish("x", doc)
except ValueError as e:
    print("refused:", e)
else:
    print("published")
"""


def test_publish_refuses_keys_endpoints_and_bssids_at_any_depth(sandbox: Sandbox) -> None:
    def publish(doc: dict[str, Any]) -> str:
        argv = ["-c", PUBLISH, json.dumps(doc)]
        return str(sandbox.python(argv).stdout.strip())

    assert publish({"kind": "physical", "interfaces": []}) == "published"
    assert publish({"interfaces": [{"peers": [{"preshared_key": True}]}]}) == "published"
    for bad in (
        {"private_key": "k"},
        {"interfaces": [{"peers": [{"endpoint": "198.18.1.2:51820"}]}]},
        {"interfaces": [{"peers": [{"preshared_key": "secret"}]}]},
        {"interfaces": [{"wifi": {"bssid": "04:21:b0:e8:c8:8b"}}]},
        {"public_key": "p"},
    ):
        assert publish(bad).startswith("refused: a status file never holds"), bad
    doc = json.loads(sandbox.read_text("/run/wgns/status/x.json"))
    assert doc["interfaces"] == [{"peers": [{"preshared_key": True}]}]  # the last one published
    sandbox.run(["rm", "-r", "/run/wgns"])


def _iface(rx: int, tx: int) -> dict[str, Any]:
    return {"ifname": "wg0", "rx_bytes": rx, "tx_bytes": tx}


def test_rates_are_measured_between_publications_at_least_a_window_apart() -> None:
    first = statusfile.with_rates([_iface(1000, 500)], None, 100.0)
    assert first[0]["rx_rate"] is None and first[0]["rate_since"]["at"] == 100.0
    prev = {"interfaces": first}
    second = statusfile.with_rates([_iface(3000, 1500)], prev, 102.0)
    assert (second[0]["rx_rate"], second[0]["tx_rate"]) == (1000.0, 500.0)
    # too soon after: the rates and their baseline stay
    third = statusfile.with_rates([_iface(3100, 1500)], {"interfaces": second}, 102.5)
    assert third[0]["rx_rate"] == 1000.0 and third[0]["rate_since"]["at"] == 102.0
    # counters that went back (a device made again): no rate, a new baseline
    fourth = statusfile.with_rates([_iface(10, 10)], {"interfaces": third}, 110.0)
    assert fourth[0]["rx_rate"] is None and fourth[0]["rate_since"]["rx_bytes"] == 10
    # entries without counters pass through untouched
    assert statusfile.with_rates([{"ifname": "eth0"}], None, 1.0) == [{"ifname": "eth0"}]


def test_read_all_skips_a_tunnel_whose_record_is_gone_and_foreign_files(
    sandbox: Sandbox,
) -> None:
    sandbox.write_file("/run/wgns/status/gone.json", json.dumps(_doc("gone", "tunnel")))
    sandbox.write_file("/run/wgns/status/physical.json", json.dumps(_doc("physical", "physical")))
    sandbox.write_file("/run/wgns/status/junk.json", "{not json")
    code = "from wgns.features import statusfile; print(sorted(statusfile.read_all()))"
    assert sandbox.python(code).stdout.strip() == "['physical']"
    sandbox.run(["rm", "-r", "/run/wgns"])


def _doc(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "format": 1, "published_at": 1.5, "interfaces": []}
