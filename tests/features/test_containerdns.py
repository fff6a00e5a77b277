"""A container's own resolv.conf (wgns.features.containerdns): found inside the container's root
whatever symlinks it holds, rewritten in place, restored only while it holds wgns's text."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from tests.features import standin
from tests.lifecycle.test_lifecycle import write_profile
from wgns.features import containerdns
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider


def _read(root: Path, path: str) -> str:
    fd = containerdns.open_in_root(str(root), path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def test_symlinks_resolve_inside_the_root_never_out_of_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "run" / "resolv.conf").write_text("inside\n")
    # absolute: the container's /run, not ours
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")
    assert _read(root, "/etc/resolv.conf") == "inside\n"
    # up and out: `..` stops at the container's root
    (root / "etc" / "hostname").symlink_to("../../../../../../run/resolv.conf")
    assert _read(root, "/etc/hostname") == "inside\n"
    # a directory of the path a symlink, too
    (root / "real").mkdir()
    (root / "real" / "f").write_text("real\n")
    (root / "lnk").symlink_to("/real")
    assert _read(root, "/lnk/f") == "real\n"
    # what the host has at that path is never reached
    (root / "etc" / "x").symlink_to("/etc/passwd")  # the root has none
    with pytest.raises(FileNotFoundError):
        _read(root, "/etc/x")


def test_loops_and_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("/a")
    with pytest.raises(OSError) as e:
        _read(tmp_path, "/a")
    assert e.value.errno == errno.ELOOP
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        containerdns.open_in_root(str(tmp_path), "/", os.O_RDONLY)


def test_the_engine_hint_names_the_dns_option() -> None:
    hint = containerdns.engine_hint("docker", ["10.64.0.1", "fd00::1"])
    assert (
        hint
        == "start the container with `docker run --network none --dns 10.64.0.1 --dns fd00::1 ...`"
    )
    assert containerdns.engine_hint(None, ["10.64.0.1"]) == (
        "start the container with `docker run --network none --dns 10.64.0.1 ...`"
    )
    # podman refuses --dns with --network none: a file of one's own
    podman = containerdns.engine_hint("podman", ["10.64.0.1"])
    assert "-v FILE:/etc/resolv.conf" in podman and "naming 10.64.0.1" in podman


def test_a_symlinked_resolv_conf_is_written_inside_the_container_and_edits_are_kept(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    # the container's /etc/resolv.conf: a symlink to /run/ctr/resolv.conf of its own /run
    setup = (
        "mount -t tmpfs ctr-run /run && mkdir /run/ctr && echo 'nameserver 192.0.2.7' > "
        "/run/ctr/resolv.conf && mount -t tmpfs ctr-etc /etc && ln -s /run/ctr/resolv.conf "
        "/etc/resolv.conf"
    )
    c = standin.start(sandbox, setup=setup)
    profile = write_profile(sandbox, provider.client_conf())
    wgns("up", profile, "--pid", str(c.pid), "--name", "app")
    assert f"nameserver {provider.dns_v4}" in c.run(["cat", "/run/ctr/resolv.conf"]).stdout
    assert not sandbox.path("/run/ctr").exists()  # the host's /run: untouched
    answer = c.run(["dig", "+short", "+time=2", "+tries=1", "whoami.test", "A"]).stdout.split()
    assert answer == [provider.web_v4]
    wgns("down", "app")
    assert c.run(["cat", "/run/ctr/resolv.conf"]).stdout == "nameserver 192.0.2.7\n"

    # edited by someone while up: `down` leaves the edit
    wgns("up", profile, "--pid", str(c.pid), "--name", "app")
    c.run(["sh", "-c", "echo 'nameserver 192.0.2.8' > /etc/resolv.conf"])
    wgns("down", "app")
    assert c.resolv() == "nameserver 192.0.2.8\n"
    c.stop()


def test_without_a_resolv_conf_up_says_so_and_names_the_dns_option(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    c = standin.start(sandbox, setup="mount -t tmpfs ctr-etc /etc")
    r = wgns(
        "up", write_profile(sandbox, provider.client_conf()), "--pid", str(c.pid), "--name", "app"
    )
    assert "the container's DNS is left as it is" in r.stderr
    assert f"--dns {provider.dns_v4}" in r.stderr
    assert c.run(["ls", "/etc"]).stdout == ""  # nothing created
    wgns("down", "app")
    c.stop()


def test_a_process_sharing_the_hosts_file_system_leaves_the_hosts_resolv_conf_alone(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    host_resolv = sandbox.read_text("/etc/resolv.conf")
    proc = sandbox.popen(["unshare", "-n", "--", "sleep", "600"])  # a network namespace only
    standin.wait_started(proc)
    profile = write_profile(sandbox, provider.client_conf())
    r = wgns("up", profile, "--pid", str(proc.pid), "--name", "app")
    assert "is this host's own" in r.stderr
    assert sandbox.read_text("/etc/resolv.conf") == host_resolv
    wgns("down", "app")
    proc.kill()
    proc.wait()
    sandbox.untrack(proc)
