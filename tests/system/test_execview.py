"""wgns.system.execview's pure parts: which mount is NS's /etc view, and the list of host
name-service paths shared with `wgns confine`. (The mounts themselves are tested through the
real command: tests/commands/test_exec.py, tests/commands/test_exec_view.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from wgns.features import etcview
from wgns.integrations.systemd import confine
from wgns.system import execview

ROOT = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw"
TMPFS = "24 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755"


def overlay(point: str, top: str, mid: int = 40) -> str:
    return (
        f"{mid} 24 0:{mid} / {point} ro,nosuid,nodev,relatime shared:{mid} - overlay overlay "
        f"ro,lowerdir={top}:/etc,redirect_dir=nofollow,uuid=null"
    )


@pytest.mark.parametrize(
    ("lines", "mounted"),
    [
        ([ROOT, TMPFS, overlay("/run/wgns/view/vpn/etc", "/run/wgns/view/vpn/netns")], True),
        ([ROOT, TMPFS], False),
        # another namespace's view, or an overlay of other layers, at NS's place: not NS's
        ([ROOT, TMPFS, overlay("/run/wgns/view/vpn/etc", "/run/wgns/view/vpn2/netns")], False),
        ([ROOT, overlay("/run/wgns/view/vpn2/etc", "/run/wgns/view/vpn2/netns")], False),
        ([ROOT, overlay("/run/wgns/view/vpn/etc/x", "/run/wgns/view/vpn/netns")], False),
        # the topmost mount counts: a tmpfs over the view hides it
        (
            [
                ROOT,
                overlay("/run/wgns/view/vpn/etc", "/run/wgns/view/vpn/netns"),
                "50 40 0:50 / /run/wgns/view/vpn/etc rw - tmpfs none rw",
            ],
            False,
        ),
        # the kernel may write ':' '=' ',' of option values as octal escapes
        (
            [
                ROOT,
                overlay("/run/wgns/view/vpn/etc", "/run/wgns/view/vpn/netns").replace(
                    "lowerdir=/run/wgns/view/vpn/netns:/etc",
                    r"lowerdir=/run/wgns/view/vpn/netns\072/etc",
                ),
            ],
            True,
        ),
    ],
)
def test_view_mounted_reads_mountinfo(tmp_path: Path, lines: list[str], mounted: bool) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("\n".join(lines) + "\n")
    assert execview.view_mounted("vpn", str(info)) is mounted


def test_view_mounted_with_escaped_names(tmp_path: Path) -> None:
    """'=' is allowed in namespace names; the kernel may escape it in the options."""
    line = (
        "40 24 0:40 / /run/wgns/view/a=b/etc ro,relatime shared:40 - overlay overlay "
        r"ro,lowerdir=/run/wgns/view/a\075b/netns:/etc"
    )
    (tmp_path / "mountinfo").write_text(ROOT + "\n" + line + "\n")
    assert execview.view_mounted("a=b", str(tmp_path / "mountinfo"))
    assert not execview.view_mounted("a=b", str(tmp_path / "missing"))


def test_the_view_is_where_up_mounts_it() -> None:
    assert etcview.VIEW_ROOT == execview.VIEW_ROOT == "/run/wgns/view"
    assert etcview.etc_of("vpn") == execview.view_etc_of("vpn") == "/run/wgns/view/vpn/etc"
    assert etcview.top_of("vpn") == execview.view_top_of("vpn")


def test_exec_and_confine_hide_the_same_paths() -> None:
    """One list (execview.HIDDEN_PATHS): `wgns confine` makes each inaccessible; `wgns exec`
    covers each directory, and each socket's directory, with a tmpfs, and the /var/run twins."""
    assert confine.HIDDEN_PATHS is execview.HIDDEN_PATHS
    assert "/run/dbus/system_bus_socket" in execview.HIDDEN_PATHS
    covered = set(execview.BACKDOOR_DIRS)
    for path in execview.HIDDEN_PATHS:
        d = path if path in execview.HIDDEN_DIRS else path.rpartition("/")[0]
        assert {d, "/var" + d} <= covered
    assert covered == {
        twin
        for d in ("/run/nscd", "/run/systemd/resolve", "/run/avahi-daemon", "/run/dbus")
        for twin in (d, "/var" + d)
    }
