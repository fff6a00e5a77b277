"""Physical mode on wifi under systemd (issue 14, item 5), in the VM's physical boot.

The world (module fixture ``wifi``): mac80211_hwsim with two radios; one phy moved into the
access point's namespace ``wgvm-ap``, where hostapd serves a WPA2 network and dnsmasq its DHCP;
the simulated provider (wgvm-provider.service, tests/vm/guest/guestprovider.py) built with the
guest's main namespace as "the machine", its uplink ``uplink0`` then moved into ``wgvm-ap``
(which routes and masquerades the station's subnet to it): the provider is reachable only
through the access point. The other phy's netdev, wlan0, is the machine's: Debian's own
``wpa_supplicant@wlan0.service`` and ``dhcpcd@wlan0.service`` (unpacked from the packages,
tests/vm/guestsetup.py) associate it and get its lease in the main namespace.

Then `wgns physical up x` (and ``wgns-physical@x.service``) relocates both units into
``physical``, where the station associates again and gets its lease; the main namespace has lo
and the tunnel only, and its traffic leaves at the provider; `down` (unit stop) gives wlan0
back associated, with a lease, its units running in the main namespace. The dead-man switch
of ``wgns-physical@x`` gives it back, and stops the unit, when the access point drops the
tunnel's packets. A wpa_supplicant started by hand (no unit) is run inside by wgns and started
here again, outliving the unit's stop. `wgns recover` after a SIGKILL of `physical up`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import guestutil
import pytest
import sdutil
from guestutil import ip_json, link_names, sh
from sdutil import active, show, systemctl, wgns

pytestmark = sdutil.marks

AP = "wgvm-ap"
PHYS = "physical"
STATION = "wlan0"
SSID = "wgvm-wifi"  # tests/vm/guestsetup.py: WIFI_SSID, WIFI_PSK, the station's wpa conf
PSK = "wgvm-passphrase-0123"
AP_V4, AP_PREFIX = "198.18.60.1", 24
WPA = f"wpa_supplicant@{STATION}.service"
DHCP = f"dhcpcd@{STATION}.service"
RUN = Path("/run/wgvm/ap")
WGNS_LOG = Path("/run/wgvm/wgns-last.log")  # the last wgns command's --debug output
PROFILE = "x"


WAIT = 90.0  # association and a lease take seconds; the guest is emulated


def diag() -> str:
    """What the units, the access point and the namespaces say (for a failure's message)."""
    out = []
    for unit in (WPA, DHCP, "wgns-physical@x.service"):
        out.append(f"--- journal {unit}:\n{sdutil.journal(unit)[-1500:]}")
    for f in ("hostapd.log", "dnsmasq.log"):
        p = RUN / f
        out.append(f"--- {f}:\n{p.read_text()[-1500:] if p.exists() else '(none)'}")
    for ns in (None, PHYS):
        where = ns or "main"
        for argv in (("ip", "-br", "addr"), ("iw", "dev")):
            p = subprocess.run([*(["ip", "netns", "exec", ns] if ns else []), *argv],
                               capture_output=True, text=True, check=False)  # fmt: skip
            out.append(f"--- {where}: {' '.join(argv)}:\n{p.stdout}{p.stderr}")
    if WGNS_LOG.exists():
        out.append(f"--- the last wgns command (--debug):\n{WGNS_LOG.read_text()[-3000:]}")
    p = subprocess.run(["ip", "netns", "exec", PHYS, "iw", "phy"], capture_output=True,
                       text=True, check=False)  # fmt: skip
    out.append(f"--- {PHYS}: iw phy: {p.stdout[:200]}{p.stderr}")
    dm = Path(f"/run/wgns/log/{PHYS}/deadman.log")
    if dm.exists():
        out.append(f"--- deadman.log:\n{dm.read_text()[-1000:]}")
    return "\n".join(out)


def wait_for(what: str, cond: Callable[[], bool], timeout: float = WAIT) -> None:
    t0 = time.monotonic()
    deadline = t0 + timeout
    print(f"[physical] waiting for {what}", flush=True)
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diag()}",
                        pytrace=False)  # fmt: skip
        time.sleep(0.3)
    print(f"[physical] {what}: {time.monotonic() - t0:.1f} s", flush=True)


def iw_phys(ns: str | None = None) -> list[str]:
    return sorted(re.findall(r"^Wiphy (\S+)", sh("iw", "phy", ns=ns).stdout, re.M))


def phy_of(ifname: str) -> str:
    return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/phy80211"))


def link_text(ns: str | None) -> str:
    return sh("iw", "dev", STATION, "link", ns=ns, check=False).stdout


def associated(ns: str | None) -> bool:
    return f"SSID: {SSID}" in link_text(ns)


def lease_v4(ns: str | None) -> str | None:
    argv = [*(["ip", "netns", "exec", ns] if ns else []), "ip", "-j", "-4", "addr", "show",
            "dev", STATION]  # fmt: skip
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return None
    for d in json.loads(p.stdout or "[]"):
        for a in d.get("addr_info", []):
            if a.get("scope") == "global" and a["local"].startswith("198.18.60."):
                return str(a["local"])
    return None


def unit_netns(unit: str) -> int:
    pid = sdutil.main_pid(unit)
    assert pid > 0, f"{unit} has no main process: {show(unit, 'ActiveState', 'Result')}"
    return sdutil.pid_netns_inode(pid)


def main_netns() -> int:
    return os.stat("/proc/1/ns/net").st_ino


def connected_here(units: tuple[str, ...] = (WPA, DHCP)) -> None:
    """wlan0 in the main namespace, associated, with a lease, its UNITS running here."""
    wait_for(f"{STATION} associated in the main namespace", lambda: associated(None))
    wait_for(f"a lease on {STATION} in the main namespace", lambda: lease_v4(None) is not None)
    for unit in units:
        wait_for(f"{unit} active", lambda u=unit: active(u) == "active")  # type: ignore[misc]
        assert unit_netns(unit) == main_netns(), f"{unit} is not in the main namespace"
    assert not os.path.exists(f"/run/netns/{PHYS}")
    assert not any(Path("/run/systemd/system").glob("*.d/wgns-physical.conf"))


def connected_inside(facts: dict[str, Any], units: tuple[str, ...] = (WPA, DHCP)) -> None:
    """Physical mode up: wlan0 associated with its lease inside `physical`, its UNITS there,
    the main namespace with lo and the tunnel only, its traffic leaving at the provider."""
    wait_for(f"{STATION} associated inside {PHYS}", lambda: associated(PHYS))
    wait_for(f"a lease on {STATION} inside {PHYS}", lambda: lease_v4(PHYS) is not None)
    assert "Connected to" in link_text(PHYS)
    inside = sdutil.netns_inode(PHYS)
    for unit in units:
        assert active(unit) == "active", f"{unit}: {show(unit, 'ActiveState', 'Result')}"
        assert unit_netns(unit) == inside, f"{unit} is not inside {PHYS}"
    here = link_names()
    assert here[0] == "lo" and len(here) == 2 and here[1].startswith("wg"), here
    assert STATION not in here
    # dhcpcd's resolv.conf hook wrote the namespace's file, not the main one
    assert facts["isp_v4"] in Path(f"/etc/netns/{PHYS}/resolv.conf").read_text()
    assert facts["isp_v4"] not in Path("/etc/resolv.conf").read_text()

    def leaves_at_provider() -> bool:
        p = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://{facts['web_v4']}/"],
                           capture_output=True, text=True, check=False)  # fmt: skip
        return p.stdout.strip() == facts["exit_v4"]

    wait_for("curl from the main namespace leaving at the provider", leaves_at_provider)


def run_wgns(*args: str, timeout: float = 150) -> None:
    """`wgns ARGS`, which must succeed (the failure's message says what the guest saw)."""
    print(f"[physical] wgns {' '.join(args)}", flush=True)
    t0 = time.monotonic()
    try:
        with open(WGNS_LOG, "w") as err:
            p = subprocess.run([sdutil.WGNS, *args, "--debug"], stdout=subprocess.PIPE,
                               stderr=err, text=True, timeout=timeout, check=False)  # fmt: skip
        p.stderr = WGNS_LOG.read_text()
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"wgns {' '.join(args)}: no answer in {timeout:.0f} s: {e.stderr!r}\n{diag()}",
                    pytrace=False)  # fmt: skip
    if p.returncode != 0:
        pytest.fail(f"wgns {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}\n{diag()}",
                    pytrace=False)  # fmt: skip
    print(f"[physical] wgns {' '.join(args)}: {time.monotonic() - t0:.1f} s", flush=True)


def physical_down() -> None:
    run_wgns("physical", "down")


@pytest.fixture(scope="module")
def wifi() -> Iterator[dict[str, Any]]:
    facts = sdutil.facts()  # the provider, built with the main namespace as the machine
    RUN.mkdir(parents=True, exist_ok=True)
    sh("modprobe", "mac80211_hwsim", "radios=2")
    wait_for("two hwsim phys", lambda: len(iw_phys()) >= 2 and os.path.exists(
        f"/sys/class/net/{STATION}"))  # fmt: skip
    ap_if = next(d for d in sorted(os.listdir("/sys/class/net"))
                 if d != STATION and os.path.exists(f"/sys/class/net/{d}/phy80211"))  # fmt: skip
    sh("ip", "netns", "add", AP)
    sh("iw", "phy", phy_of(ap_if), "set", "netns", "name", AP)
    # the provider's uplink goes behind the access point
    uplink = facts["uplink"]
    addrs = [f"{a['local']}/{a['prefixlen']}" for d in ip_json("-4", "addr", "show", "dev", uplink)
             for a in d["addr_info"] if a.get("scope") == "global"]  # fmt: skip
    gw = next(r["gateway"] for r in ip_json("-4", "route", "show", "default") if "gateway" in r)
    sh("ip", "link", "set", uplink, "netns", AP)
    if os.path.exists("/sys/class/net/hwsim0"):  # the simulator's own monitor: the rig's
        sh("ip", "link", "set", "hwsim0", "netns", AP)
    batch = [f"addr add {a} dev {uplink}" for a in addrs]
    batch += [f"link set {uplink} up", f"addr add {AP_V4}/{AP_PREFIX} dev {ap_if}",
              f"link set {ap_if} up", f"route add default via {gw}"]  # fmt: skip
    sh("ip", "-b", "-", ns=AP, input="\n".join(batch) + "\n")
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=AP)
    sh("nft", "-f", "-", ns=AP, input=(
        "table ip wgvm_ap {\n chain ap_nat { type nat hook postrouting priority 100;"
        f' oifname "{uplink}" masquerade; }}\n'
        " chain ap_forward { type filter hook forward priority 0; }\n}\n"))  # fmt: skip
    (RUN / "hostapd.conf").write_text(
        f"interface={ap_if}\ndriver=nl80211\nssid={SSID}\nhw_mode=g\nchannel=6\n"
        f"wpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\nwpa_passphrase={PSK}\n"
    )
    procs = []
    with open(RUN / "hostapd.log", "w") as log:
        argv = ["ip", "netns", "exec", AP, "hostapd", str(RUN / "hostapd.conf")]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log))
    with open(RUN / "dnsmasq.log", "w") as log:
        procs.append(subprocess.Popen([
            "ip", "netns", "exec", AP, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
            "--port=0", f"--interface={ap_if}", "--bind-interfaces", "--user=root",
            "--dhcp-range=198.18.60.10,198.18.60.50,255.255.255.0,1h",
            f"--dhcp-option=option:dns-server,{facts['isp_v4']}", "--log-dhcp",
            f"--dhcp-leasefile={RUN}/leases", f"--pid-file={RUN}/dnsmasq.pid",
        ], stdout=log, stderr=log))  # fmt: skip
    try:
        systemctl("start", WPA)
        systemctl("start", DHCP)
        connected_here()
        facts["ap_if"] = ap_if
        yield facts
    finally:
        subprocess.run([sdutil.WGNS, "recover"], capture_output=True, check=False, timeout=180)
        subprocess.run(["systemctl", "stop", "wgns-physical@x", DHCP, WPA], check=False,
                       capture_output=True)  # fmt: skip
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _before_up() -> None:
    connected_here()
    assert iw_phys(None) == [phy_of(STATION)]  # only the station's phy is the machine's


def test_physical_up_relocates_wpa_supplicant_and_dhcpcd_and_down_gives_wifi_back(
    wifi: dict[str, Any],
) -> None:
    _before_up()
    t0 = time.monotonic()
    try:
        run_wgns("physical", "up", "--deadman", "120", PROFILE)
        connected_inside(wifi)
        print(f"physical up -> traffic through the tunnel over wifi: {time.monotonic() - t0:.1f} s")
        status = wgns("physical", "status").stdout
        assert PHYS in status
    finally:
        t0 = time.monotonic()
        physical_down()
    connected_here()
    print(f"physical down -> associated with a lease here: {time.monotonic() - t0:.1f} s")
    assert facts_curl_direct(wifi)


def facts_curl_direct(facts: dict[str, Any]) -> bool:
    """After down: the main namespace's traffic leaves through the access point (no tunnel)."""

    def direct() -> bool:
        p = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://{facts['web_v4']}/"],
                           capture_output=True, text=True, check=False)  # fmt: skip
        return p.stdout.strip() == facts["host_v4"]

    wait_for("curl from the main namespace leaving through the access point", direct)
    return True


def test_wgns_physical_unit_start_and_stop(wifi: dict[str, Any]) -> None:
    _before_up()
    unit = f"wgns-physical@{PROFILE}.service"
    try:
        systemctl("start", unit)
        assert active(unit) == "active"
        connected_inside(wifi)
    finally:
        systemctl("stop", unit, check=False)
    assert active(unit) in ("inactive", "failed")
    assert show(unit, "Result")["Result"] == "success"
    connected_here()


def test_deadman_gives_wifi_back_and_stops_its_unit_when_the_provider_is_unreachable(
    wifi: dict[str, Any],
) -> None:
    """The dead-man switch of `wgns-physical@x` (its --deadman set by a drop-in, as
    docs/physical.md says): wlan0 back, associated, with its lease and its units here, and the
    unit itself stopped (not left `active (exited)` with the network given back)."""
    _before_up()
    port = sdutil.facts()["server"]["port"]
    unit = f"wgns-physical@{PROFILE}.service"
    dropin = Path(f"/run/systemd/system/{unit}.d/wgvm-deadman.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text('[Service]\nEnvironment="WGNS_PHYSICAL_ARGS=--deadman 20"\n')
    systemctl("daemon-reload")
    block = f"add rule ip wgvm_ap ap_forward udp dport {port} drop\n"
    sh("nft", "-f", "-", ns=AP, input=block)
    try:
        t0 = time.monotonic()
        systemctl("start", unit)
        assert active(unit) == "active"
        wait_for(f"{STATION} associated inside {PHYS}", lambda: associated(PHYS))
        wait_for("the dead-man switch to fire", lambda: not os.path.exists(f"/run/netns/{PHYS}"))
        connected_here()
        print(f"dead-man switch: up -> associated here again {time.monotonic() - t0:.1f} s")
        wait_for(f"{unit} stopped", lambda: active(unit) == "inactive", timeout=30)
        assert show(unit, "Result")["Result"] == "success"
        # the watcher's words are in its log; the unit's stop found nothing left to give back
        assert "no handshake in 20s" in Path(f"/run/wgns/log/{PHYS}/deadman.log").read_text()
        assert "physical mode is not up: nothing to give back" in sdutil.journal(unit)
    finally:
        sh("nft", "flush", "chain", "ip", "wgvm_ap", "ap_forward", ns=AP)
        systemctl("stop", unit, check=False)
        dropin.unlink(missing_ok=True)
        dropin.parent.rmdir()
        systemctl("daemon-reload")
        if os.path.exists(f"/run/netns/{PHYS}"):
            physical_down()


def wpa_processes() -> list[tuple[int, str, list[str]]]:
    """The wpa_supplicant processes: (pid, "main" | "physical" | "other", argv)."""
    main, inside = (
        main_netns(),
        (sdutil.netns_inode(PHYS) if os.path.exists(f"/run/netns/{PHYS}") else -1),
    )
    out = []
    for pid in sh("pgrep", "-x", "wpa_supplicant", check=False).stdout.split():
        try:
            ino = sdutil.pid_netns_inode(int(pid))
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            continue
        where = "main" if ino == main else PHYS if ino == inside else "other"
        out.append((int(pid), where, argv))
    return out


def print_wpa() -> list[tuple[str, list[str]]]:
    """(where, argv) of each wpa_supplicant, also printed (a failure's output shows them)."""
    found = [w[1:] for w in wpa_processes()]
    if found != _seen[0]:
        print(f"[physical] wpa_supplicant processes: {found}", flush=True)
        _seen[0] = found
    return found


_seen: list[Any] = [None]


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().strip().rpartition(":")[2]


def test_a_wpa_supplicant_run_by_hand_runs_inside_and_survives_the_unit_stop(
    wifi: dict[str, Any],
) -> None:
    """wpa_supplicant started by hand (`wpa_supplicant -B ...` in a scope, as from a login
    shell; no unit runs it): `wgns-physical@x` stops it, runs it inside `physical` with the same
    command line without -B (wgns supervises it), before the dhcpcd@wlan0 unit; stopping the
    unit starts it here again as it was, in a scope of its own, so that the unit's own
    processes being killed at its stop does not take the wifi with them."""
    _before_up()
    unit = f"wgns-physical@{PROFILE}.service"
    conf = f"/etc/wpa_supplicant/wpa_supplicant-{STATION}.conf"
    # as /proc shows it: systemd-run runs the program by its path
    argv = [shutil.which("wpa_supplicant") or "", "-B", "-i", STATION, "-c", conf]
    systemctl("stop", WPA)
    try:
        sh("systemd-run", "--scope", "--quiet", "--collect", "--", "wpa_supplicant", *argv[1:])
        wait_for("the wpa_supplicant run by hand", lambda: print_wpa() == [("main", argv)], 30)
        connected_here(units=(DHCP,))
        t0 = time.monotonic()
        systemctl("start", unit)
        connected_inside(wifi, units=(DHCP,))
        took = time.monotonic() - t0
        print(f"[physical] loose wpa_supplicant: up -> through the tunnel {took:.1f} s")
        assert [w[1:] for w in wpa_processes()] == [(PHYS, [argv[0], *argv[2:]])]
        status = json.loads(wgns("physical", "status", "--json").stdout)
        assert status[0]["daemons"] == {"wpa_supplicant": True}
        t0 = time.monotonic()
        systemctl("stop", unit)
        connected_here(units=(DHCP,))
        print(f"[physical] loose wpa_supplicant: down -> here again {time.monotonic() - t0:.1f} s")
        time.sleep(2)  # the unit's remaining processes are gone by now: it is not one of them
        (again,) = wpa_processes()
        assert again[1:] == ("main", argv), again
        assert cgroup_of(again[0]).endswith(".scope") and unit not in cgroup_of(again[0])
        assert associated(None)
    finally:
        systemctl("stop", unit, check=False)
        for pid, _, _ in wpa_processes():
            os.kill(pid, signal.SIGTERM)
        wait_for("no wpa_supplicant left", lambda: not wpa_processes(), timeout=20)
        systemctl("start", WPA)
        systemctl("start", DHCP)
    connected_here()


@pytest.mark.parametrize(
    "point",
    [
        # mid-way, by hand: once wlan0 has left the main namespace (the units not yet inside)
        "wlan0 left",
        # later, at a step of the plan (the executor's fault injection, as in the sandbox's
        # crash tests): right after dhcpcd@wlan0 was started inside, the tunnel not yet here
        "after: systemctl start dhcpcd@wlan0.service (inside physical)",
    ],
)
def test_recover_after_sigkill_of_physical_up(wifi: dict[str, Any], point: str) -> None:
    _before_up()
    argv = [sdutil.WGNS, "physical", "up", "--deadman", "0", PROFILE]
    env = dict(os.environ)
    if point.startswith("after: "):
        plan = wgns("physical", "up", "--dry-run", PROFILE).stdout.splitlines()
        step = next(i for i, line in enumerate(plan) if point.removeprefix("after: ") in line)
        env["WGNS_FAULT_KILL_AT"] = f"{step}+"
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env)  # fmt: skip
    if point == "wlan0 left":
        wait_for(f"{STATION} to leave", lambda: not os.path.exists(f"/sys/class/net/{STATION}")
                 or p.poll() is not None)  # fmt: skip
        p.send_signal(signal.SIGKILL)  # the launcher execs python: this is `physical up` itself
    out = p.communicate(timeout=150)[0]
    assert p.returncode == -signal.SIGKILL, f"physical up was not killed at {point}: {out}"
    run_wgns("recover")
    connected_here()
    assert guestutil.link_names()[0] == "lo"
    assert not any(Path("/run/systemd/system.control").glob("*@*.service"))
