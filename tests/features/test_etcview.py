"""The /etc view (wgns.features.etcview), for real in the sandbox: every `wgns up` mounts
/run/wgns/view/NS/etc (the host's /etc with /etc/netns/NS on top, read-only), `down` leaves no
mount and no directory, `up --reload` shows new DNS files in it (also to a process that bound
it over its /etc before, as a confined unit does), and a host that replaces /etc/resolv.conf
changes nothing in it. The sandbox's /etc is itself an overlay, so these run one overlay deeper
than a plain host."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from wgns.testing.sandbox import SANDBOX_TMP, Sandbox, snapshot_diff
from wgns.testing.sim import Provider

NS = "vpn"
VIEW = f"/run/wgns/view/{NS}/etc"


def _profile(sandbox: Sandbox, text: str) -> str:
    path = f"{SANDBOX_TMP}/{NS}.conf"
    sandbox.write_file(path, text, mode=0o600)
    return path


def _mount_of(sandbox: Sandbox, target: str) -> str:
    """FSTYPE OPTIONS of what is mounted at TARGET in the sandbox ('' when nothing is)."""
    r = sandbox.run(["findmnt", "-rn", "-o", "FSTYPE,OPTIONS", target], check=False)
    return r.stdout.strip()


def _replace_by_rename(sandbox: Sandbox, path: str, text: str) -> None:
    """What NetworkManager and resolvconf do: write a new file, rename it over the old one."""
    sandbox.run(
        ["sh", "-c", f'printf "%s" "$1" > {path}.new && mv -f {path}.new {path}', "-", text]
    )


def test_up_mounts_the_view_and_down_removes_it(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    profile = _profile(sandbox, provider.client_conf())
    sandbox.write_file("/etc/resolv.conf", "nameserver 198.18.99.99\n")  # the "host's" resolver
    wgns("up", profile, "--name", NS)

    mount = _mount_of(sandbox, VIEW)
    assert mount.startswith("overlay ") and "ro" in mount.split()[1].split(",")
    resolv = sandbox.read_text(f"{VIEW}/resolv.conf")
    assert resolv == sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
    assert f"nameserver {provider.dns_v4}" in resolv and "198.18.99.99" not in resolv
    for name in ("hosts", "nsswitch.conf"):
        assert sandbox.read_text(f"{VIEW}/{name}") == sandbox.read_text(f"/etc/netns/{NS}/{name}")
    # everything else is the host's /etc
    assert sandbox.read_text(f"{VIEW}/passwd") == sandbox.read_text("/etc/passwd")
    assert "root:" in sandbox.read_text(f"{VIEW}/passwd")
    # read-only, for root too
    r = sandbox.run(["sh", "-c", f"echo x > {VIEW}/passwd"], check=False)
    assert r.returncode != 0 and "Read-only" in r.stderr

    # the host replaces its resolv.conf (rename), or makes it a symlink: the view does not care
    _replace_by_rename(sandbox, "/etc/resolv.conf", "nameserver 198.18.77.77\n")
    assert sandbox.read_text(f"{VIEW}/resolv.conf") == resolv
    sandbox.run(["ln", "-sfn", "/run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf"])
    assert sandbox.read_text(f"{VIEW}/resolv.conf") == resolv

    wgns("down", NS)
    assert _mount_of(sandbox, VIEW) == ""
    assert not sandbox.path("/run/wgns/view").exists()
    after = sandbox.settled_snapshot()
    assert not snapshot_diff(before, after), snapshot_diff(before, after)[:10]


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink", "missing"])
def test_the_view_shows_the_tunnels_resolv_conf_whatever_the_hosts_is(
    sandbox: Sandbox, provider: Provider, wgns: Any, kind: str
) -> None:
    sandbox.run(["rm", "-f", "/etc/resolv.conf"])
    if kind == "dangling symlink":
        sandbox.run(["ln", "-s", "/run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf"])
    elif kind == "symlink":
        sandbox.write_file("/run/host-resolv.conf", "nameserver 198.18.99.99\n")
        sandbox.run(["ln", "-s", "/run/host-resolv.conf", "/etc/resolv.conf"])
    wgns("up", _profile(sandbox, provider.client_conf()), "--name", NS)
    try:
        resolv = sandbox.read_text(f"{VIEW}/resolv.conf")
        assert f"nameserver {provider.dns_v4}" in resolv and "198.18.99.99" not in resolv
        # a process inside the namespace that reads /etc through the view resolves through
        # the tunnel's DNS (getent: glibc with the view's nsswitch.conf and resolv.conf)
        out = _in_view(sandbox, ["getent", "ahostsv4", "whoami.test"]).stdout
        assert provider.web_v4 in out
        assert ("whoami.test", "A") in provider.dns_queries()
        assert provider.isp_dns_queries() == []
    finally:
        wgns("down", NS)
    assert _mount_of(sandbox, VIEW) == ""


def _in_view(sandbox: Sandbox, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """ARGV in NS with the view bound over /etc, as a confined unit runs."""
    script = f'mount --bind {VIEW} /etc && exec "$@"'
    return sandbox.run(["unshare", "-m", "sh", "-c", script, "-", *argv], netns=NS)


def test_reload_shows_new_dns_files_also_to_a_process_holding_the_view(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    conf = provider.client_conf()
    profile = _profile(sandbox, conf)
    wgns("up", profile, "--name", NS)
    try:
        # a "unit" that bound the view over its /etc before the reload (as systemd does at start)
        holder = sandbox.popen(
            ["unshare", "-m", "sh", "-c", f"mount --bind {VIEW} /etc && exec sleep 60"],
            netns=NS,
        )
        deadline = time.monotonic() + 10
        while _mount_of_pid(sandbox, holder.pid) == "" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "search" not in _read_in(sandbox, holder.pid, "/etc/resolv.conf")
        seen = sandbox.read_text(f"{VIEW}/resolv.conf")  # looked up through the overlay
        assert "search" not in seen

        dns_line = next(line for line in conf.splitlines() if line.startswith("DNS = "))
        _profile(sandbox, conf.replace(dns_line, dns_line + ", corp.test"))
        out = wgns("up", profile, "--name", NS, "--reload")
        assert "resolv.conf" in out.stderr

        new = sandbox.read_text(f"/etc/netns/{NS}/resolv.conf")
        assert "search corp.test" in new
        assert sandbox.read_text(f"{VIEW}/resolv.conf") == new
        assert _read_in(sandbox, holder.pid, "/etc/resolv.conf") == new
        # the view is still the one mount, as before
        assert _mount_of(sandbox, VIEW).startswith("overlay ")
        holder.kill()
        holder.wait()
    finally:
        wgns("down", NS)
    assert _mount_of(sandbox, VIEW) == "" and not sandbox.path("/run/wgns/view").exists()


def _mount_of_pid(sandbox: Sandbox, pid: int) -> str:
    r = sandbox.run(
        ["nsenter", "-t", str(pid), "-m", "findmnt", "-rn", "-o", "FSTYPE", "/etc"], check=False
    )
    return r.stdout.strip() if r.returncode == 0 and "overlay" in r.stdout else ""


def _read_in(sandbox: Sandbox, pid: int, path: str) -> str:
    return sandbox.run(["nsenter", "-t", str(pid), "-m", "cat", path]).stdout


def test_a_failed_up_rolls_the_view_back(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    before = sandbox.settled_snapshot()
    conf = provider.client_conf().replace("[Peer]", "PostUp = false\n\n[Peer]")
    r = wgns("up", _profile(sandbox, conf), "--name", NS, check=False)
    assert r.returncode == 1
    assert _mount_of(sandbox, VIEW) == "" and not sandbox.path("/run/wgns/view").exists()
    assert not snapshot_diff(before, sandbox.settled_snapshot())


def test_too_deep_an_overlay_is_a_clear_error_and_changes_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """The sandbox's /etc is an overlay already; one more makes the view a third level, which
    overlayfs refuses (FILESYSTEM_MAX_STACK_DEPTH is 2)."""
    up, work = f"{SANDBOX_TMP}/etc2-up", f"{SANDBOX_TMP}/etc2-work"
    sandbox.run(["mkdir", "-p", up, work])
    opts = f"lowerdir=/etc,upperdir={up},workdir={work}"
    sandbox.run(["mount", "-t", "overlay", "overlay", "-o", opts, "/etc"])
    try:
        before = sandbox.settled_snapshot()
        r = wgns("up", _profile(sandbox, provider.client_conf()), "--name", NS, check=False)
        assert r.returncode == 1, r.stderr
        assert "overlayfs stacks at most 2 deep" in r.stderr
        assert r.stderr.count("\n") == 1  # one line
        assert _mount_of(sandbox, VIEW) == "" and not sandbox.path("/run/wgns/view").exists()
        assert not snapshot_diff(before, sandbox.settled_snapshot())
    finally:
        sandbox.run(["umount", "/etc"])


def test_dry_run_prints_the_view(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    out = wgns("up", _profile(sandbox, provider.client_conf()), "--name", NS, "--dry-run").stdout
    lines = [line for line in out.splitlines() if "overlay" in line]
    assert len(lines) == 1
    assert f"lowerdir=/run/wgns/view/{NS}/netns:/etc" in lines[0] and VIEW in lines[0]
    assert _mount_of(sandbox, VIEW) == ""


def test_up_repairs_a_view_unmounted_by_hand(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    profile = _profile(sandbox, provider.client_conf())
    wgns("up", profile, "--name", NS)
    try:
        pids = sandbox.pids()
        sandbox.run(["umount", VIEW])
        assert _mount_of(sandbox, VIEW) == ""
        dry = wgns("up", profile, "--name", NS, "--dry-run")
        assert "overlay" in dry.stdout and _mount_of(sandbox, VIEW) == ""
        out = wgns("up", profile, "--name", NS)
        assert "repaired" in out.stderr and f"{VIEW} is not mounted" in out.stderr
        assert _mount_of(sandbox, VIEW).startswith("overlay ")
        assert sandbox.read_text(f"{VIEW}/resolv.conf") == sandbox.read_text(
            f"/etc/netns/{NS}/resolv.conf"
        )
        assert sandbox.pids() == pids  # the tunnel was not touched: same wireguard-go
        assert "already up" in wgns("up", profile, "--name", NS).stderr
    finally:
        wgns("down", NS)
    assert _mount_of(sandbox, VIEW) == "" and not sandbox.path("/run/wgns/view").exists()
    assert not snapshot_diff(before, sandbox.settled_snapshot())
