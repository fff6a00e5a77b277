"""Enabled before boot, started by the boot itself in the right order.

tests/vm/guestsetup.py enabled wgns@boot.service and wgvm-bootapp.service (confined to ``boot``
by the drop-in `wgns confine` writes) before the guest booted; nothing here starts them. The boot
must have started the provider (the guest's network, before network-online.target), then
wgns@boot (after network-online.target), then, once wgns@boot was READY, the confined unit,
inside the namespace and with its /etc view.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sdutil
from sdutil import active, show

pytestmark = sdutil.marks

NS = "boot"
WGNS_UNIT = f"wgns@{NS}.service"
APP = "wgvm-bootapp.service"


def stamps(unit: str) -> dict[str, int]:
    props = show(unit, "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic",
                 "ExecMainStartTimestampMonotonic")  # fmt: skip
    return {k.removesuffix("TimestampMonotonic"): int(v) for k, v in props.items()}


def settled(unit: str) -> bool:
    """Active (it got there at least once) or failed: the boot is done with it."""
    state = active(unit)
    return state == "failed" or (state == "active" and stamps(unit)["ActiveEnter"] > 0)


def test_enabled_namespace_and_confined_unit_start_at_boot_in_order() -> None:
    facts = sdutil.facts()
    for unit in (WGNS_UNIT, APP):
        sdutil.wait_for(f"{unit} to be started by the boot", functools.partial(settled, unit))
        assert active(unit) == "active", sdutil.journal(unit)[-3000:]
        assert sdutil.systemctl("is-enabled", unit).stdout.strip() == "enabled"
    provider, wg, app = stamps(sdutil.PROVIDER_UNIT), stamps(WGNS_UNIT), stamps(APP)
    # the provider (the network) was up before wgns@boot began, and wgns@boot was READY
    # (Type=notify: active) before the confined unit's process was started
    assert provider["ActiveEnter"] <= wg["ExecMainStart"], (provider, wg)
    assert wg["ActiveEnter"] <= app["ExecMainStart"], (wg, app)
    assert wg["ActiveEnter"] <= app["InactiveExit"], (wg, app)
    props = show(WGNS_UNIT, "NRestarts")
    assert props["NRestarts"] == "0"

    pid = sdutil.main_pid(APP)
    assert sdutil.pid_netns_inode(pid) == sdutil.netns_inode(NS)
    assert sdutil.pid_netns_inode(pid) != sdutil.pid_netns_inode(1)
    # its /etc is the namespace's view: the tunnel's DNS, not the ISP's
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert "nameserver 198.19.0.1" in resolv, resolv
    assert f"nameserver {facts['isp_v4']}" not in resolv, resolv
    assert sdutil.curl_in(NS, f"http://{facts['web_v4']}/") == facts["exit_v4"]
