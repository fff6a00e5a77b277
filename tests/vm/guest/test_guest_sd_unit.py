"""`systemctl start wgns@x` and `stop`, with systemd as PID 1 (wgns@.service as installed).

Start: active once READY=1 came (Type=notify: `systemctl start` returns only then), the kill
switch, the tunnel and the /etc view in place, traffic leaving at the provider; STATUS= tells the
handshake's age. Stop: the namespace, its nft table, its record and its view gone, the guest as
it was before (links, addresses, routes, rules, nft, mounts, /run/netns, /run/wgns, /etc/netns,
/run/wireguard).
"""

from __future__ import annotations

import os
from pathlib import Path

import sdutil
from guestutil import sh
from sdutil import active, show, systemctl

from wgns.system import names

pytestmark = sdutil.marks

NS = "x"
UNIT = f"wgns@{NS}.service"


def test_start_is_ready_with_a_status_and_stop_leaves_the_guest_as_it_was() -> None:
    facts = sdutil.facts()
    before = sdutil.snapshot()
    assert NS not in before["netns"]
    try:
        systemctl("start", UNIT)
        assert active(UNIT) == "active"
        props = show(UNIT, "Type", "ActiveEnterTimestampMonotonic", "MainPID", "NRestarts")
        assert props["Type"] == "notify"
        assert int(props["ActiveEnterTimestampMonotonic"]) > 0  # READY=1 arrived
        # ready means in place: the kill switch, the record, the /etc view, the tunnel
        assert NS in os.listdir("/run/netns")
        sh("nft", "list", "table", "inet", names.nft_table(NS), ns=NS)
        assert Path(f"/run/wgns/{NS}.json").exists()
        assert f"/run/wgns/view/{NS}/etc overlay" in sdutil.mount_points()
        assert sdutil.curl_in(NS, f"http://{facts['web_v4']}/") == facts["exit_v4"]
        # STATUS=: "handshake 3s ago via 198.18.1.2:51820"
        status = ""

        def has_handshake() -> bool:
            nonlocal status
            status = show(UNIT, "StatusText")["StatusText"]
            return "handshake" in status and "ago" in status

        sdutil.wait_for(f"a STATUS= with the handshake's age (last: {status!r})", has_handshake)
        assert status.endswith(f"via {facts['server']['uplink_v4']}:{facts['server']['port']}")
        pid = int(props["MainPID"])
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-3:-1] == [
            b"--foreground",
            NS.encode(),
        ]
    finally:
        systemctl("stop", UNIT, check=False)
    assert active(UNIT) in ("inactive", "unknown")
    assert NS not in os.listdir("/run/netns")
    assert not Path(f"/run/wgns/{NS}.json").exists()
    after = sdutil.snapshot()
    changes = sdutil.diff(before, after)
    assert not changes, "stopping wgns@x left changes:\n" + "\n".join(changes)
