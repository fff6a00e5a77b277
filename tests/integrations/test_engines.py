"""`wgns up --container NAME`: the engine asked for the container's PID (wgns.integrations.
containers.engines), with a real Podman container where Podman can run, and against a stand-in
`docker` executable for what no engine here can show (no Docker daemon runs on this machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle.test_lifecycle import assert_same, write_profile
from wgns.errors import WgnsError
from wgns.integrations.containers import engines
from wgns.system import names
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider

# A stand-in for the docker client: NOT an engine (none can run here). It answers `inspect`
# the way docker does: the pid of a running container, 0 for a stopped one, an error otherwise.
STAND_IN_DOCKER = """#!/bin/sh
[ "$1 $2 $3 $4" = "inspect --type container -f" ] || { echo "stand-in: unexpected $*" >&2; exit 9; }
[ "$5" = "{{.State.Pid}}" ] || { echo "stand-in: unexpected format $5" >&2; exit 9; }
case "$6" in
  running) echo 4242 ;;
  stopped) echo 0 ;;
  *) echo "Error: No such container: $6" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def stand_in_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with only the stand-in docker (and no podman)."""
    exe = tmp_path / "docker"
    exe.write_text(STAND_IN_DOCKER)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # the script needs only sh's builtins
    return tmp_path


def test_the_engine_gives_the_pid_of_a_running_container(stand_in_path: Path) -> None:
    t = engines.find("running")
    assert (t.pid, t.engine, t.container) == (4242, "docker", "running")
    assert t.label == "docker container running (pid 4242)"


def test_a_stopped_or_unknown_container_is_refused_with_what_each_engine_said(
    stand_in_path: Path,
) -> None:
    with pytest.raises(WgnsError, match="docker container stopped is not running") as e:
        engines.find("stopped")
    assert "docker start stopped" in str(e.value.hint)
    with pytest.raises(WgnsError) as e:
        engines.find("nope")
    assert "docker: Error: No such container: nope" in str(e.value)
    assert "podman: not installed" in str(e.value)
    with pytest.raises(WgnsError, match=r"podman: not installed\)"):
        engines.find("running", engine="podman")


# A real container: Podman, rootful, `--network none`, an image imported from busybox-static (no
# registry), its state under the test's tmp_path and the sandbox's /run.
BUSYBOX = shutil.which("busybox")
CONTAINER = "wgnsctr"


def _podman_unavailable() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/packages/test.txt)"
    if BUSYBOX is None:
        return "busybox is not installed (the container's image is made from it)"
    return None


def _podman_env(tmp: Path) -> dict[str, str]:
    """Podman's configuration for the test: crun without cgroups (the sandbox has its own
    /sys), storage under TMP and the sandbox's /run, limits the machine allows."""
    (tmp / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        'cgroups = "disabled"\n[engine]\nruntime = "crun"\ncgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    (tmp / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "/run/wgns-test-podman"\ngraphroot = "{tmp}/graph"\n'
    )
    return {
        "CONTAINERS_CONF": str(tmp / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf"),
    }


def _image(tmp: Path) -> Path:
    """A root file system of busybox alone, with an empty /etc/resolv.conf, as a tarball."""
    assert BUSYBOX is not None
    tar = tmp / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(os.path.realpath(BUSYBOX), "bin/busybox")
        for d in ("etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        info = tarfile.TarInfo("etc/resolv.conf")
        info.mode = 0o644
        t.addfile(info)
    return tar


def test_podman_container_gets_the_tunnel(
    sandbox: Sandbox, provider: Provider, wgns: Any, tmp_path: Path
) -> None:
    why = _podman_unavailable()
    if why:
        pytest.skip(why)
    env = _podman_env(tmp_path)
    # crun needs a cgroup file system at /sys/fs/cgroup (read-only: it creates nothing there);
    # podman keeps a cache in /var/lib/containers whatever its storage says: a tmpfs here
    sandbox.run(["mount", "-t", "cgroup2", "-o", "ro", "none", "/sys/fs/cgroup"])
    sandbox.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "wgns-test", "/var/lib"])

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sandbox.run(["podman", *args], env=env, check=check, timeout=120)

    podman("import", str(_image(tmp_path)), "localhost/wgns-test-busybox")
    podman("run", "-d", "--network", "none", "--name", CONTAINER, "localhost/wgns-test-busybox",
           "/bin/busybox", "sleep", "600")  # fmt: skip
    try:
        pid = podman("inspect", "-f", "{{.State.Pid}}", CONTAINER).stdout.strip()
        inside = ["nsenter", "-t", pid, "-n"]
        profile = write_profile(sandbox, provider.client_conf())
        before = sandbox.settled_snapshot()

        # docker (a client without a daemon here) is asked first, then podman
        wgns("up", profile, "--container", CONTAINER, env=env)

        wg = names.wg_ifname(CONTAINER, "vpn")
        links = json.loads(sandbox.run([*inside, "ip", "-j", "link"]).stdout)
        assert sorted(link["ifname"] for link in links) == sorted(["lo", wg])
        web = sandbox.run([*inside, "curl", "-sS", "--max-time", "5", f"http://{provider.web_v4}/"])
        assert web.stdout.strip() == "198.18.1.2"
        # the container's own resolver, from its own /etc/resolv.conf, through the tunnel
        busybox = [*inside, "-m", "/bin/busybox"]
        assert (
            f"nameserver {provider.dns_v4}"
            in sandbox.run([*busybox, "cat", "/etc/resolv.conf"]).stdout
        )
        looked_up = sandbox.run([*busybox, "nslookup", "whoami.test"]).stdout
        assert provider.web_v4 in looked_up
        assert ("whoami.test", "A") in provider.dns_queries()
        assert provider.isp_dns_queries() == []
        (st,) = json.loads(wgns("status", CONTAINER, "--json").stdout)["namespaces"]
        assert st["broken"] == [] and int(pid) in [p["pid"] for p in st["processes"]]

        wgns("down", CONTAINER)
        assert_same(before, sandbox.snapshot())
        assert sandbox.run([*busybox, "cat", "/etc/resolv.conf"]).stdout == ""
    finally:
        podman("rm", "-f", "-t", "0", CONTAINER, check=False)
