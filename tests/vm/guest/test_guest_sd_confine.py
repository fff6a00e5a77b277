"""`wgns confine UNIT x` on real units, with nscd and systemd-resolved running in the guest.

Four units, unchanged but for the drop-in `wgns confine` writes: a plain one, one with
DynamicUser=yes, one with ProtectSystem=strict + PrivateTmp=yes, and an instance of a template.
Each runs the probe (sdutil.PROBE_TEXT): its curl must leave at the simulated provider (the web
server sees the provider's NAT address, not the guest's uplink), its `getent hosts` and Python
getaddrinfo of whoami.test must get the tunnel DNS's answer (198.18.2.2), not the guest's
/etc/hosts one (198.18.99.99) that nscd and resolved (nss-resolve first in nsswitch.conf) give
to everything else; `wgns check --unit` passes for them. The same probe in an unconfined unit
gets the wrong answer and fails `wgns check --unit`: the probe can tell.

`wgns confine` reloads systemd itself (the units start right after it), and tells about a running
unit that it stays where it is until restarted. Then: stopping wgns@x stops the confined units
(BindsTo=); a unit confined to a namespace that cannot come up does not start (its probe never
runs); `wgns confine --remove` leaves nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sdutil
from guestutil import sh
from sdutil import RIGHT_V4, RIGHT_V6, WRONG_V4, active, show, systemctl, wgns

pytestmark = sdutil.marks

NS = "x"
WGNS_UNIT = f"wgns@{NS}.service"
# unit -> the RuntimeDirectory its probe writes to
CONFINED = {
    "wgvm-plain.service": "wgvm-out-plain",
    "wgvm-dyn.service": "wgvm-out-dyn",
    "wgvm-strict.service": "wgvm-out-strict",
    "wgvm-tmpl@a.service": "wgvm-out-tmpl-a",
}
FREE = "wgvm-free.service"
FILES = {
    "wgvm-plain.service": sdutil.probe_unit("plain", "wgvm-out-plain"),
    "wgvm-dyn.service": sdutil.probe_unit("DynamicUser", "wgvm-out-dyn", "DynamicUser=yes\n"),
    "wgvm-strict.service": sdutil.probe_unit(
        "ProtectSystem=strict", "wgvm-out-strict", "ProtectSystem=strict\nPrivateTmp=yes\n"
    ),
    "wgvm-tmpl@.service": sdutil.probe_unit("template %i", "wgvm-out-tmpl-%i"),
    FREE: sdutil.probe_unit("not confined", "wgvm-out-free"),
}


def clear(out: str) -> None:
    shutil.rmtree(Path("/run") / out, ignore_errors=True)


def tunnel_dns_queries(client: str) -> list[str]:
    log = Path(sdutil.facts()["dns_log"])
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e["qname"] for e in entries if e["client"] == client]


def test_confined_units_use_the_tunnel_and_its_dns_not_nscd_or_resolved() -> None:
    facts = sdutil.facts()
    # the guest itself resolves through nscd and resolved, and gets the wrong answer
    assert active("nscd.service") == "active"
    assert active("systemd-resolved.service") == "active"
    hosts_line = [ln for ln in Path("/etc/nsswitch.conf").read_text().splitlines()
                  if ln.startswith("hosts:")]  # fmt: skip
    assert hosts_line and hosts_line[0].split()[1] == "resolve", hosts_line
    assert sh("getent", "hosts", sdutil.TEST_NAME).stdout.split()[0] == WRONG_V4
    assert WRONG_V4 in sh("resolvectl", "query", sdutil.TEST_NAME).stdout
    tunnel_client = facts["clients"][NS]["v4"].split("/")[0]

    sdutil.write_probe()
    with sdutil.unit_files(FILES):
        etc_units_before = sdutil.listing(sdutil.UNITS)
        for unit in CONFINED:
            r = wgns("confine", unit, NS)
            assert Path(f"/etc/systemd/system/{unit}.d/wgns-confine.conf").exists(), r.stderr
        for out in [*CONFINED.values(), "wgvm-out-free"]:
            clear(out)
        try:
            # starting them brings up wgns@x (BindsTo= pulls it in, After= waits for READY)
            systemctl("start", *CONFINED, FREE)
            assert active(WGNS_UNIT) == "active"
            inode = sdutil.netns_inode(NS)
            seen = {unit: sdutil.probe_results(out) for unit, out in CONFINED.items()}
            free = sdutil.probe_results("wgvm-out-free")

            # the unconfined probe shows what a leak looks like
            assert free["getent"].split()[0] == WRONG_V4, free
            assert WRONG_V4 in json.loads(free["gai"]), free
            assert free["curl"] == facts["host_v4"], free
            assert free["sockets"].split() == list(sdutil.BACKDOORS), free

            right = {RIGHT_V4, RIGHT_V6}
            for unit, res in seen.items():
                where = f"{unit}: {res}"
                assert res["netns"] == f"net:[{inode}]", where
                assert res["curl"] == facts["exit_v4"], where  # left at the provider
                # `getent hosts` asks for IPv6 first: the tunnel's DNS has both
                assert res["getent"].split()[0] in right, where
                assert WRONG_V4 not in res["getent"], where
                addresses = json.loads(res["gai"])
                assert RIGHT_V4 in addresses and WRONG_V4 not in addresses, where
                assert set(addresses) <= right, where
                # nscd's, resolved's and the system bus's sockets are hidden from it
                assert res["sockets"] == "", where
            assert seen["wgvm-dyn.service"]["user"] != "root"
            # the tunnel's DNS answered them, from the tunnel address of x
            assert sdutil.TEST_NAME in tunnel_dns_queries(tunnel_client)

            echo = f"http://{facts['web_v4']}/"
            for unit in CONFINED:
                r = wgns("check", "--unit", unit, "--echo-url", echo, check=False)
                assert r.returncode == 0, f"wgns check --unit {unit}:\n{r.stdout}{r.stderr}"
                assert "FAIL" not in r.stdout
            r = wgns("check", "--unit", FREE, "--echo-url", echo, check=False)
            assert r.returncode != 0, r.stdout + r.stderr
            assert "FAIL" in r.stdout

            # confining a running unit says it runs where it is until restarted (and it does)
            r = wgns("confine", FREE, NS)
            assert f"{FREE} is running outside {NS} until `systemctl restart {FREE}`" in r.stderr
            assert sdutil.pid_netns_inode(sdutil.main_pid(FREE)) == sdutil.pid_netns_inode(1)
            r = wgns("confine", "--remove", FREE)
            assert f"until `systemctl restart {FREE}`" in r.stderr, r.stderr

            # stopping the namespace stops what is confined to it (BindsTo=)
            pids = {unit: sdutil.main_pid(unit) for unit in CONFINED}
            systemctl("stop", WGNS_UNIT)
            for unit, pid in pids.items():
                assert active(unit) in ("inactive", "failed"), unit
                assert not Path(f"/proc/{pid}").exists(), unit
            assert active(FREE) == "active"
        finally:
            systemctl("stop", *CONFINED, FREE, WGNS_UNIT, check=False)

        # a unit confined to a namespace that does not come up never starts: wgns@broken's
        # `wgns up` fails (its endpoint resolves nowhere), and the unit's probe never runs
        plain, broken = "wgvm-plain.service", "wgns@broken.service"
        wgns("confine", plain, "broken")
        clear(CONFINED[plain])
        started = show(plain, "ExecMainStartTimestampMonotonic")
        try:
            systemctl("start", "--no-block", plain)
            sdutil.wait_for(
                "wgns@broken to fail",
                lambda: show(broken, "Result")["Result"] not in ("", "success"),
            )
            assert active(plain) != "active"
        finally:
            systemctl("stop", plain, broken, check=False)
        assert show(plain, "ExecMainStartTimestampMonotonic") == started, "its probe ran"
        assert not (Path("/run") / CONFINED[plain] / "netns").exists(), "its probe ran"
        assert "broken" not in sh("ip", "netns", "list").stdout

        # --remove leaves nothing behind
        for unit in CONFINED:
            wgns("confine", "--remove", unit)
        assert sdutil.listing(sdutil.UNITS) == etc_units_before
        for unit in CONFINED:
            props = show(unit, "NetworkNamespacePath", "DropInPaths", "BindsTo")
            assert props == {"NetworkNamespacePath": "", "DropInPaths": "", "BindsTo": ""}, unit
    for out in [*CONFINED.values(), "wgvm-out-free"]:
        clear(out)
