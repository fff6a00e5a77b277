"""`wgns check --pid PID` / `--unit UNIT`: the leak self-test of a running process, from inside its
own namespaces. Real processes, each confined another way, in the sandbox with the simulated
provider (tests/conftest.py): `wgns exec`'s view (bind mounts), a view built like a systemd unit's
(an overlay on /etc, InaccessiblePaths-style mounts), a plain `nsenter --net` (the host's files),
and no namespace at all; fake name-service daemons are real listening unix sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from wgns.errors import WgnsError
from wgns.features.check import process, unit
from wgns.system import names
from wgns.testing.sandbox import REPO_ROOT, SANDBOX_TMP, Sandbox
from wgns.testing.sim import Provider

NS = "vpn"
WG = names.wg_ifname(NS, "vpn")
NSCD = "/run/nscd/socket"
DBUS = "/run/dbus/system_bus_socket"

# real daemons' sockets, as far as a client can tell: bound, listening, accepting (and closing)
FAKE_DAEMON = """\
import os, select, socket, sys
socks = []
for path in sys.argv[1:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        s.accept()[0].close()
"""

# A mount namespace built the way a confined unit's is (not the way `wgns exec` builds its own):
# NS's files in an overlay on top of /etc, bound over /etc, and what systemd's InaccessiblePaths=
# mounts over the back doors: an empty mode-000 directory, a mode-000 socket inode nobody listens
# on. (overlayfs refuses lowerdir=/etc/netns/NS:/etc itself, a layer inside another: the top
# layer is a copy, as wgns.system.execview.overlay_etc makes it.)
UNIT_VIEW = """\
set -e
mount -t tmpfs tmpfs /mnt
mkdir /mnt/top /mnt/etc /mnt/empty
cp -a /etc/netns/{ns}/. /mnt/top/
mount -t overlay overlay -o ro,lowerdir=/mnt/top:/etc /mnt/etc
mount --bind /mnt/etc /etc
chmod 000 /mnt/empty
mount --bind /mnt/empty /run/nscd
python3 -c 'import os, stat; os.mknod("/mnt/sock", stat.S_IFSOCK)'
mount --bind /mnt/sock {dbus}
exec {run_as} sleep 600
"""


def up(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    path = f"{SANDBOX_TMP}/vpn.conf"
    sandbox.write_file(path, provider.client_conf(ipv6=False), mode=0o600)
    wgns("up", path, "--name", NS)


def fake_daemons(sandbox: Sandbox, *paths: str) -> None:
    proc = sandbox.popen(
        [sys.executable, "-I", "-S", "-c", FAKE_DAEMON, *paths], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"


def started(sandbox: Sandbox, argv: list[str], **kw: Any) -> int:
    """The pid of ARGV started in the background, once it has become `sleep` (exec'd)."""
    proc = sandbox.popen(argv, **kw)
    deadline = time.monotonic() + 20
    while True:
        try:
            with open(f"/proc/{proc.pid}/comm") as f:
                if f.read().strip() == "sleep":
                    return proc.pid
        except FileNotFoundError:
            pass
        assert proc.poll() is None, f"{argv} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{argv} never became sleep"
        time.sleep(0.02)


def exec_sleep(sandbox: Sandbox) -> int:
    argv = [sys.executable, "-m", "wgns", "exec", NS, "--", "sleep", "600"]
    return started(sandbox, argv, env=sandbox.python_env(), cwd=REPO_ROOT)


def check_pid(wgns: Any, pid: int, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = wgns("check", "--pid", str(pid), "--json", *extra, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == 1 and doc["pid"] == pid and doc["unit"] is None
    assert [c["name"] for c in doc["checks"]] == list(process.ORDER)
    assert doc["ok"] is (proc.returncode == 0)
    return proc.returncode, doc


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}


def evidence(doc: dict[str, Any], name: str) -> str:
    return next(str(c["evidence"]) for c in doc["checks"] if c["name"] == name)


def probe_of(doc: dict[str, Any]) -> str:
    text = evidence(doc, "lookup")
    return text.split("getaddrinfo(", 1)[1].split(")", 1)[0]


def all_pass(doc: dict[str, Any]) -> None:
    assert statuses(doc) == dict.fromkeys(process.ORDER, "pass"), doc
    assert doc["ns"] == NS and doc["ok"] is True


# ------------------------------------------------------------------------------ pure parts


def test_hosts_lines() -> None:
    text = "passwd: files\n# hosts: dns\nhosts:  files  mdns4 # mdns\n\nhosts: dns\n"
    assert process.hosts_lines(text) == ["hosts: files mdns4", "hosts: dns"]
    assert process.hosts_lines("passwd: files\n") == []


def test_probe_names_are_fresh_and_reserved() -> None:
    a, b = process.probe_name(), process.probe_name()
    assert a != b and a.endswith(".invalid") and b.startswith("wgns-check-")


def test_unit_pid_from_systemctl_show() -> None:
    props = unit.parse_show(
        "Id=media.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
        "MainPID=4242\nControlGroup=/system.slice/media.service\n"
    )
    assert props["ControlGroup"] == "/system.slice/media.service"
    assert unit.pick_pid("media", props) == 4242
    # no main process (a oneshot that stays active): the first process of its control group
    groups = {"/system.slice/media.service": [77, 78]}
    assert unit.pick_pid("media", {**props, "MainPID": "0"}, groups.__getitem__) == 77

    def error(props: dict[str, str]) -> str:
        with pytest.raises(WgnsError) as e:
            unit.pick_pid("media", props, lambda g: [])
        return str(e.value)

    assert error({"Id": "media.service", "LoadState": "not-found", "MainPID": "0"}) == (
        "unit media does not exist (`systemctl list-units --all` lists the units systemd knows)"
    )
    stopped = {**props, "MainPID": "0", "ActiveState": "inactive", "SubState": "dead"}
    assert error(stopped) == (
        "unit media.service is not running (inactive/dead): no process to check "
        "(start it (`systemctl start media.service`) and check again)"
    )
    running_no_pid = error({**props, "MainPID": "0"})
    assert running_no_pid.startswith("unit media.service is not running (active/running)")
    assert "is masked, not loaded" in error({**props, "LoadState": "masked"})


# ------------------------------------------------------------------------------ real


def test_unit_needs_a_running_systemd(sandbox: Sandbox, wgns: Any) -> None:
    assert not os.path.isdir(sandbox.path(unit.SYSTEMD_RUNTIME))  # systemd is not PID 1 here
    proc = wgns("check", "--unit", "media.service", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "wgns: systemd is not running here (/run/systemd/system is missing): cannot find the "
        "process of unit media.service (for a process started another way, "
        "`wgns check --pid PID`)\n"
    )
    for argv in ([], [NS, "--pid", "1"], ["--pid", "1", "--unit", "x.service"], ["--pid", "0"]):
        proc = wgns("check", *argv, check=False)
        assert proc.returncode == 2, (argv, proc.stderr)
    proc = wgns("check", "--pid", "999999999", check=False)
    assert proc.returncode == 1 and proc.stderr == "wgns: no process 999999999\n"


def test_exec_view_passes_every_check(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    up(sandbox, provider, wgns)
    fake_daemons(sandbox, NSCD)  # the host runs nscd: `wgns exec` hides it
    pid = exec_sleep(sandbox)
    url = f"http://{provider.web_v4}/"
    rc, doc = check_pid(wgns, pid, "--echo-url", url)
    assert rc == 0, doc
    all_pass(doc)
    assert evidence(doc, "netns").startswith(f"pid {pid} (sleep) is in {NS}: net:[")
    assert evidence(doc, "resolver") == (
        f"its /etc is /etc/netns/{NS}'s: resolv.conf: nameservers {provider.dns_v4}; "
        f"nsswitch.conf hosts: files dns; hosts as /etc/netns/{NS}/hosts"
    )
    assert f"nscd {NSCD}: ENOENT" in evidence(doc, "backdoors")
    assert "resolved stub 127.0.0.53:53: ECONNREFUSED" in evidence(doc, "backdoors")
    assert "answered (no such name)" in evidence(doc, "lookup")
    assert f"asking {provider.dns_v4} via {WG}" in evidence(doc, "lookup")
    assert f"sees 198.18.1.2 through the tunnel, {provider.host_v4} without" in evidence(
        doc, "exit"
    )
    # the probe name reached the tunnel's DNS (A and AAAA, as glibc asks), and no other server
    probe = probe_of(doc)
    assert {q for q in provider.dns_queries() if q[0] == probe} == {(probe, "A"), (probe, "AAAA")}
    assert not [q for q in provider.isp_dns_queries() if q[0] == probe]

    # the text form: the same lines, and the summary
    lines = wgns("check", "--pid", str(pid)).stdout.splitlines()
    assert [ln.split(":", 1)[0] for ln in lines[:-1]] == [
        "PASS netns", "PASS resolver", "PASS backdoors", "PASS lookup", "SKIP exit"
    ]  # fmt: skip
    assert lines[-1] == f"pid {pid} (sleep) in {NS}: no way out but the tunnel (4 passed, 0 failed)"


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_unit_like_view_passes(user: str, sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    """The check does not depend on how the view was built: an overlay, not bind mounts."""
    up(sandbox, provider, wgns)
    fake_daemons(sandbox, NSCD, DBUS)  # both covered by InaccessiblePaths-style mounts
    run_as = "" if user == "root" else "setpriv --reuid=65534 --regid=65534 --clear-groups"
    script = UNIT_VIEW.format(ns=NS, dbus=DBUS, run_as=run_as)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    pid = started(sandbox, argv, netns=NS)
    rc, doc = check_pid(wgns, pid, "--echo-url", f"http://{provider.web_v4}/")
    assert rc == 0, doc
    all_pass(doc)
    backdoors = evidence(doc, "backdoors")
    if user == "root":
        assert backdoors.startswith("no name-service daemon reachable (as root): ")
        assert f"nscd {NSCD}: ENOENT" in backdoors  # root passes mode 000, but the dir is empty
        assert f"D-Bus system bus {DBUS}: ECONNREFUSED" in backdoors  # an inode, no listener
    else:  # the probes took the process's credentials: mode 000 stops them
        assert backdoors.startswith("no name-service daemon reachable (as uid 65534, the ")
        assert f"nscd {NSCD}: EACCES" in backdoors
        assert f"D-Bus system bus {DBUS}: EACCES" in backdoors
    probe = probe_of(doc)
    assert (probe, "A") in provider.dns_queries()


def test_host_files_in_the_namespace_fail(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    """`nsenter --net`/`ip netns exec`-less confinement: NS's network, the host's /etc."""
    up(sandbox, provider, wgns)
    pid = started(sandbox, ["sleep", "600"], netns=NS)
    rc, doc = check_pid(wgns, pid)
    assert rc == 1
    assert statuses(doc) == {
        "netns": "pass", "resolver": "fail", "backdoors": "pass", "lookup": "fail", "exit": "skip"
    }  # fmt: skip
    isp = provider.isp_dns
    assert (
        f"its /etc/resolv.conf is not /etc/netns/{NS}/resolv.conf "
        f"(nameservers {isp}, expected {provider.dns_v4})"
    ) in evidence(doc, "resolver")
    assert f"it asks {isp}, not only the tunnel's DNS ({provider.dns_v4})" in evidence(
        doc, "lookup"
    )
    # a host nscd (a real listening socket) is reachable from it
    fake_daemons(sandbox, NSCD, DBUS)
    rc, doc = check_pid(wgns, pid)
    assert {k for k, v in statuses(doc).items() if v == "fail"} == {
        "resolver", "backdoors", "lookup"
    }  # fmt: skip
    assert evidence(doc, "backdoors").startswith(
        f"reachable from the process (as root): nscd {NSCD}, D-Bus system bus {DBUS}"
    )
    # the text form says FAIL on the same lines
    text = wgns("check", "--pid", str(pid), check=False).stdout.splitlines()
    fails = {ln.split(":", 1)[0].split()[1] for ln in text if ln.startswith("FAIL ")}
    assert fails == {"resolver", "backdoors", "lookup"}
    assert text[-1] == f"pid {pid} (sleep) in {NS}: NOT SAFE (1 passed, 3 failed)"


def test_process_outside_any_wgns_namespace_fails(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    up(sandbox, provider, wgns)
    url = f"http://{provider.web_v4}/"
    docs = {}
    for where, words in [
        (None, "the one `wgns check` runs in (the host's)"),
        ("isp", "is in isp (/run/netns/isp), which wgns does not manage"),
    ]:
        pid = started(sandbox, ["sleep", "600"], netns=where)
        rc, doc = check_pid(wgns, pid, "--echo-url", url, "--timeout", "2")
        assert rc == 1 and doc["ns"] is None
        assert statuses(doc)["netns"] == "fail"
        assert evidence(doc, "netns").startswith("not in any wgns namespace: ")
        assert words in evidence(doc, "netns")
        assert statuses(doc)["resolver"] == statuses(doc)["lookup"] == "skip"
        assert statuses(doc)["backdoors"] == "pass"
        docs[where] = doc
    # from where wgns check runs, the echo server sees the same address: no tunnel
    assert statuses(docs[None])["exit"] == "fail"
    assert f"sees {provider.host_v4} with and without the tunnel" in evidence(docs[None], "exit")


def test_unanswered_or_misrouted_lookups_fail(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    # the ISP drops everything to the endpoint: no handshake, no answer through the tunnel
    provider.cut_endpoint()
    up(sandbox, provider, wgns)
    pid = exec_sleep(sandbox)
    rc, doc = check_pid(wgns, pid, "--timeout", "2")
    assert rc == 1
    assert {k for k, v in statuses(doc).items() if v == "fail"} == {"lookup"}, doc
    assert " NOT answered (no answer yet) after 2000 ms, asking " in evidence(doc, "lookup")
    # the tunnel's DNS routed elsewhere than wg
    sandbox.run(["ip", "route", "add", f"{provider.dns_v4}/32", "dev", "lo"], netns=NS)
    rc, doc = check_pid(wgns, pid, "--timeout", "2")
    assert {k for k, v in statuses(doc).items() if v == "fail"} == {"lookup"}, doc
    assert evidence(doc, "lookup").startswith(
        f"{provider.dns_v4} is routed via lo, not the tunnel; getaddrinfo("
    )
