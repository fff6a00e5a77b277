"""wgns.system.execview's constants: where the /etc view is, and the list of host name-service
paths shared with `wgns confine`. (The mounts themselves, and which mount counts as NS's view,
are tested through the real command: tests/commands/test_exec.py and test_exec_view.py.)"""

from __future__ import annotations

from wgns.features import etcview
from wgns.integrations.systemd import confine
from wgns.system import execview


def test_the_view_is_where_up_mounts_it() -> None:
    assert etcview.VIEW_ROOT == execview.VIEW_ROOT == "/run/wgns/view"
    assert etcview.etc_of("vpn") == execview.view_etc_of("vpn") == "/run/wgns/view/vpn/etc"
    assert etcview.top_of("vpn") == execview.view_top_of("vpn")


def test_exec_and_confine_hide_the_same_paths() -> None:
    """One list (execview.HIDDEN_PATHS): `wgns confine` makes each inaccessible; `wgns exec`
    covers each directory, and each socket's directory, with a tmpfs, and the /var/run twins."""
    assert confine.HIDDEN_PATHS is execview.HIDDEN_PATHS
    assert "/run/dbus" in execview.HIDDEN_PATHS  # the directory: see HIDDEN_PATHS
    covered = set(execview.BACKDOOR_DIRS)
    for d in execview.HIDDEN_PATHS:
        assert {d, "/var" + d} <= covered
    assert covered == {
        twin
        for d in ("/run/nscd", "/run/systemd/resolve", "/run/avahi-daemon", "/run/dbus")
        for twin in (d, "/var" + d)
    }
