"""`up`/`down` under stress: a daemon still exiting, an adopted namespace, SIGKILL at every step,
concurrent runs, bad profiles, a failure midway, the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.lifecycle.test_lifecycle import NS, assert_same, curl, status, write_profile
from wgns.testing.sandbox import Sandbox
from wgns.testing.sim import Provider


def _running(pid: int) -> bool:
    """PID exists and is not a zombie (exited, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2] != "Z"


def test_down_does_not_wait_for_the_kernel_yet_the_daemon_ends_and_up_again_works(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    """`down` SIGKILLs the daemon of a namespace it deletes and returns without waiting for the
    kernel to unregister the TUN (~20 ms); the daemon must still be gone right after, and an
    `up` of the same name straight away must not trip over its remains (UAPI socket, TUN)."""
    before = sandbox.settled_snapshot()
    path = write_profile(sandbox, provider.client_conf())
    wgns("up", path, "--name", NS)
    first = status(wgns)["interfaces"][0]["daemon"]["pid"]
    assert _running(first)
    wgns("down", NS)
    wgns("up", path, "--name", NS)  # at once: the old daemon may still be exiting
    second = status(wgns)["interfaces"][0]["daemon"]["pid"]
    assert second != first
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    deadline = time.monotonic() + 5
    while _running(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(first), "the old daemon survived `down`"
    assert _running(second)
    wgns("down", NS)
    assert_same(before, sandbox.settled_snapshot())


def test_preexisting_namespace_is_adopted_and_left_in_place(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    sandbox.run(["ip", "netns", "add", NS])
    sandbox.run(["ip", "-n", NS, "link", "set", "lo", "up"])  # as people do by hand
    before = sandbox.settled_snapshot()
    wgns("up", write_profile(sandbox, provider.client_conf()), "--name", NS)
    assert status(wgns)["owner"] == "pre-existing"
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
    assert NS in sandbox.netns_names()
    assert_same(before, sandbox.snapshot())


def _count_ops(sandbox: Sandbox, wgns: Any, path: str) -> int:
    wgns("up", path, "--name", NS)
    n = len(json.loads(sandbox.read_text(f"/run/wgns/{NS}.json"))["journal"])
    wgns("down", NS)
    return n


def test_sigkill_at_every_step_of_up_then_down_restores_everything(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    path = write_profile(sandbox, provider.client_conf())
    before = sandbox.settled_snapshot()
    steps = _count_ops(sandbox, wgns, path)
    assert steps >= 6
    for step in range(steps):
        for when in ("", "+"):
            proc = wgns(
                "up", path, "--name", NS, check=False, env={"WGNS_FAULT_KILL_AT": f"{step}{when}"}
            )
            assert proc.returncode == -9, (step, when, proc.stderr)
            down = wgns("down", NS, check=False)
            assert down.returncode == 0, (step, when, down.stderr)
            assert_same(before, sandbox.snapshot())
    # and an `up` after a crash recovers by itself instead of "File exists"
    wgns("up", path, "--name", NS, check=False, env={"WGNS_FAULT_KILL_AT": f"{steps - 1}+"})
    wgns("up", path, "--name", NS)
    assert curl(sandbox, f"http://{provider.web_v4}/") == "198.18.1.2"
    wgns("down", NS)
    assert_same(before, sandbox.snapshot())


def test_concurrent_ups(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    path = write_profile(sandbox, provider.client_conf())
    results: list[subprocess.CompletedProcess[str]] = []

    def up(name: str) -> None:
        results.append(wgns("up", path, "--name", name, check=False))

    # the same namespace twice at once: one brings it up, the other sees it up
    threads = [threading.Thread(target=up, args=(NS,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sum("already up" in r.stderr for r in results) == 1
    # different namespaces in parallel
    results.clear()
    paths = [write_profile(sandbox, provider.client_conf(), f"p{i}.conf") for i in range(3)]
    threads = [
        threading.Thread(
            target=lambda p=p, i=i: results.append(wgns("up", p, "--name", f"par{i}", check=False))
        )
        for i, p in enumerate(paths)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    for i in range(3):
        assert curl(sandbox, f"http://{provider.web_v4}/", ns=f"par{i}") == "198.18.1.2"
    for name in (NS, "par0", "par1", "par2"):
        wgns("down", name)


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda c: c.replace("PrivateKey = ", "PrivateKey = x"), "PrivateKey"),
        (lambda c: c.replace("AllowedIPs = 0.0.0.0/0", "AllowedIPs = 0.0.0.0/33"), "AllowedIPs"),
        (lambda c: c.replace(":51820", ":70000"), "Endpoint"),
        (lambda c: c + "Bogus = 1\n", "Bogus"),
    ],
)
def test_bad_profile_changes_nothing(
    sandbox: Sandbox, provider: Provider, wgns: Any, mutate: Any, expect: str
) -> None:
    path = write_profile(sandbox, mutate(provider.client_conf()))
    before = sandbox.settled_snapshot()
    proc = wgns("up", path, "--name", NS, check=False)
    assert proc.returncode == 2
    assert expect in proc.stderr and path in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_world_readable_key_and_bad_names_are_refused(
    sandbox: Sandbox, provider: Provider, wgns: Any
) -> None:
    before = sandbox.settled_snapshot()
    loose = write_profile(sandbox, provider.client_conf(), "loose.conf", mode=0o644)
    proc = wgns("up", loose, "--name", NS, check=False)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    good = write_profile(sandbox, provider.client_conf())
    for bad in ("../etc", "a/b", ".."):
        proc = wgns("up", good, "--name", bad, check=False)
        assert proc.returncode == 2, bad
        assert "namespace name" in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_failure_midway_rolls_back_exactly(sandbox: Sandbox, provider: Provider, wgns: Any) -> None:
    # a PostUp hook that fails: everything done before it is undone, nothing else
    conf = provider.client_conf().replace("[Interface]\n", "[Interface]\nPostUp = false\n", 1)
    path = write_profile(sandbox, conf)
    before = sandbox.settled_snapshot()
    proc = wgns("up", path, "--name", NS, check=False)
    assert proc.returncode == 1 and "post-up hook failed" in proc.stderr
    assert_same(before, sandbox.snapshot())


def test_cli_contract_exit_codes(sandbox: Sandbox, wgns: Any) -> None:
    assert wgns("nonsense", check=False).returncode == 2
    assert wgns("up", check=False).returncode == 2
    missing = wgns("up", "/nonexistent/x.conf", check=False)
    assert missing.returncode == 2 and "x.conf" in missing.stderr
    st = wgns("status", "--json")
    assert json.loads(st.stdout) == {"format": 1, "namespaces": []}
    unknown = wgns("status", "nothere", check=False)
    assert unknown.returncode == 1 and "not managed" in unknown.stderr
