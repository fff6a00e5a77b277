"""wgns.system.sysctl: holds shared by namespaces restore the value found by the first holder
once the last one lets go (on files standing in for /proc/sys)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from wgns.system import sysctl


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proc-sys"
    monkeypatch.setattr(sysctl, "path_of", lambda key: root / key)
    monkeypatch.setattr(sysctl, "HOLDS_DIR", tmp_path / "claims")
    monkeypatch.setattr(sysctl, "LOCK_FILE", tmp_path / "claims.lock")
    key = root / sysctl.forwarding_key("eth0.5")
    key.parent.mkdir(parents=True)
    key.write_text("0\n")
    return tmp_path


def test_the_last_holder_restores_the_first_value(fake_proc: Path) -> None:
    key = sysctl.forwarding_key("eth0.5")
    assert key == "net/ipv4/conf/eth0.5/forwarding"  # slash form: the dot is the interface's
    assert sysctl.hold(key, "1", "vpn") == "0"
    assert sysctl.hold(key, "1", "vpn2") == "0"  # what it was before wgns, not "1"
    assert sysctl.get(key) == "1" and sysctl.holders(key) == ["vpn", "vpn2"]
    sysctl.release(key, "vpn")
    assert sysctl.get(key) == "1" and sysctl.holders(key) == ["vpn2"]
    sysctl.release(key, "vpn")  # twice: nothing more happens
    assert sysctl.get(key) == "1"
    sysctl.release(key, "vpn2")
    assert sysctl.get(key) == "0" and sysctl.holders(key) == []
    assert not (fake_proc / "claims").exists() and not (fake_proc / "claims.lock").exists()


def test_a_key_whose_interface_is_gone_is_forgotten(fake_proc: Path) -> None:
    key = sysctl.forwarding_key("eth0.5")
    sysctl.hold(key, "1", "vpn")
    sysctl.path_of(key).unlink()
    sysctl.path_of(key).parent.rmdir()  # the interface went away
    sysctl.release(key, "vpn")
    assert sysctl.holders(key) == [] and not (fake_proc / "claims").exists()


def _blocked_waiters() -> int:
    """Blocked flock waiters on the machine (/proc/locks marks them with "->")."""
    with open("/proc/locks") as f:
        return sum("->" in line for line in f)


def test_a_waiter_on_the_removed_lock_file_does_not_join_a_newcomer(fake_proc: Path) -> None:
    # The lock file is removed on release. A waiter blocked on it used to get the lock on the
    # unlinked file while a newcomer locked a fresh file: two holders at once.
    inside = 0
    most = 0
    guard = threading.Lock()

    def hold(seconds: float) -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(seconds)
        with guard:
            inside -= 1

    def waiter() -> None:
        with sysctl._locked():
            hold(0.3)

    before = _blocked_waiters()
    t = threading.Thread(target=waiter)
    with sysctl._locked():
        t.start()
        deadline = time.monotonic() + 10
        while _blocked_waiters() <= before:  # the thread waits on the file about to go
            assert time.monotonic() < deadline, "the waiter never blocked on the lock"
            time.sleep(0.005)
    with sysctl._locked():  # the newcomer, right after the release
        hold(0.3)
    t.join(10)
    assert not t.is_alive()
    assert most == 1
    assert not (fake_proc / "claims.lock").exists()
