"""wgns.system.libc: the libc calls made through _ctypes, each checked against the kernel's view.

Everything that changes the system runs inside the test's private sandbox (`sandbox.python`)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from wgns.system import libc
from wgns.testing.sandbox import Sandbox

CALLS = r"""
import json, os
from wgns.system import libc
out = {}
home = os.stat("/proc/self/ns/mnt").st_ino
libc.unshare(0x00020000)  # CLONE_NEWNS
out["new_mount_ns"] = os.stat("/proc/self/ns/mnt").st_ino != home
libc.mount(None, "/", None, 0x4000 | (1 << 19))  # MS_REC | MS_SLAVE
os.makedirs("/run/libc-test", exist_ok=True)
libc.mount("tmpfs", "/run/libc-test", "tmpfs", 2 | 4 | 8, "mode=0711,size=8k")
line = [l for l in open("/proc/self/mountinfo") if " /run/libc-test " in l][-1]
out["mount_line"] = line
with open("/run/libc-test/src", "w") as f:
    f.write("source\n")
os.symlink("/nowhere", "/run/libc-test/link")
fd = libc.open_tree("/run/libc-test/src", 1 | os.O_CLOEXEC)  # OPEN_TREE_CLONE
libc.move_mount_fd(fd, "/run/libc-test/link", 4)  # MOVE_MOUNT_F_EMPTY_PATH
os.close(fd)
out["through_link"] = open("/run/libc-test/link").read()
libc.umount2("/run/libc-test", 2)  # MNT_DETACH
out["unmounted"] = not any(" /run/libc-test " in l for l in open("/proc/self/mountinfo"))
try:
    libc.setns(os.open("/proc/self/ns/mnt", os.O_RDONLY), 0x40000000)  # wrong type
except OSError as e:
    out["setns_errno"] = e.errno
try:
    libc.mount("none", "/run/does/not/exist", "tmpfs")
except OSError as e:
    out["mount_error"] = [e.errno, str(e)]
libc.prctl(47, 4)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
pid = os.fork()
if pid == 0:
    libc.capset_empty()
    caps = {l.split(":")[0]: int(l.split(":")[1], 16) for l in open("/proc/self/status")
            if l.startswith("Cap")}
    os.write(1, (json.dumps(caps) + "\n").encode())
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def test_calls_do_what_the_kernel_reports(sandbox: Sandbox) -> None:
    lines = sandbox.python(CALLS).stdout.splitlines()
    caps, out = json.loads(lines[0]), json.loads(lines[1])
    assert out["new_mount_ns"] is True
    assert " - tmpfs tmpfs " in out["mount_line"] and "nosuid,nodev,noexec" in out["mount_line"]
    assert "mode=711" in out["mount_line"] and "size=8k" in out["mount_line"]
    assert out["through_link"] == "source\n"  # mounted on the symlink itself, not its target
    assert out["unmounted"] is True
    assert out["setns_errno"] == errno.EINVAL
    assert out["mount_error"][0] == errno.ENOENT
    assert "mount /run/does/not/exist: No such file or directory" in out["mount_error"][1]
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == 0
    assert caps["CapBnd"] != 0  # capset leaves the bounding set alone


def test_imports_no_ctypes_module() -> None:
    """wgns.system.libc exists to keep ctypes' pure-Python half off `wgns exec`'s start-up path."""
    import subprocess
    import sys

    code = "import sys; import wgns.system.libc; print('ctypes' in sys.modules)"
    root = str(Path(__file__).resolve().parent.parent.parent)
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {root!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_calls_match_ctypes_cdll() -> None:
    """The _ctypes binding passes what ctypes.CDLL would: the same results and errno, call by
    call (calls that fail without changing anything)."""
    import ctypes

    cdll = ctypes.CDLL(None, use_errno=True)
    cases = [
        (lambda: libc.umount2("/no/such/mount", 0), lambda: cdll.umount2(b"/no/such/mount", 0)),
        (
            lambda: libc.mount("none", "/no/such/dir", "tmpfs"),
            lambda: cdll.mount(b"none", b"/no/such/dir", b"tmpfs", ctypes.c_ulong(0), None),
        ),
        (lambda: libc.setns(-1, 0), lambda: cdll.setns(-1, 0)),
        (lambda: libc.prctl(-1), lambda: cdll.prctl(-1, *[ctypes.c_ulong(0)] * 4)),
        (lambda: libc.open_tree("/no/such", 1), lambda: cdll.syscall(428, -100, b"/no/such", 1)),
    ]
    for ours, theirs in cases:
        with pytest.raises(OSError) as info:
            ours()
        ctypes.set_errno(0)
        assert theirs() == -1
        assert info.value.errno == ctypes.get_errno() != 0


def test_errors_carry_errno_and_the_call() -> None:
    with pytest.raises(OSError) as info:
        libc.umount2("/definitely/not/a/mount/point", 0)
    assert info.value.errno in (errno.EINVAL, errno.ENOENT, errno.EPERM)
    assert str(info.value).startswith("[Errno") and "umount /definitely/not/a/mount/point" in str(
        info.value
    )
