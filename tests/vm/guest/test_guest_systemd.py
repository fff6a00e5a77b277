"""systemd (PID 1 in the guest) runs a unit inside a named network namespace.

A oneshot unit creates the namespace (``ip netns add``, RemainAfterExit); a second unit with
``NetworkNamespacePath=/run/netns/wgvm-sd`` records what it sees. It must see only that namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import guestutil
import pytest
from guestutil import sh

pytestmark = [
    guestutil.only_in_vm,
    pytest.mark.skipif(
        not Path("/proc/1/comm").exists() or Path("/proc/1/comm").read_text().strip() != "systemd",
        reason="needs systemd as PID 1 (the VM's init='systemd' boot)",
    ),
]

NS = "wgvm-sd"
UNITS = Path("/run/systemd/system")
OUT = Path("/run/wgvm-sd")
NS_UNIT = "wgvm-sd-netns.service"
PROBE_UNIT = "wgvm-sd-probe.service"

NS_UNIT_TEXT = f"""[Unit]
Description=wgns VM test: create the network namespace {NS}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ip netns add {NS}
ExecStop=/usr/bin/ip netns delete {NS}
"""

PROBE_UNIT_TEXT = f"""[Unit]
Description=wgns VM test: look around inside {NS}
Requires={NS_UNIT}
After={NS_UNIT}

[Service]
Type=oneshot
NetworkNamespacePath=/run/netns/{NS}
ExecStart=/bin/sh {OUT}/probe.sh
"""

PROBE = f"""set -e
ip -j link show > {OUT}/links.json.tmp
stat -L -c %i /proc/self/ns/net > {OUT}/inode.tmp
mv {OUT}/links.json.tmp {OUT}/links.json
mv {OUT}/inode.tmp {OUT}/inode
"""


@pytest.fixture
def units() -> Iterator[None]:
    OUT.mkdir(exist_ok=True)
    (OUT / "probe.sh").write_text(PROBE)
    (UNITS / NS_UNIT).write_text(NS_UNIT_TEXT)
    (UNITS / PROBE_UNIT).write_text(PROBE_UNIT_TEXT)
    sh("systemctl", "daemon-reload")
    try:
        yield
    finally:
        subprocess.run(["systemctl", "stop", PROBE_UNIT, NS_UNIT], capture_output=True, check=False)
        for u in (NS_UNIT, PROBE_UNIT):
            (UNITS / u).unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)


def test_unit_with_network_namespace_path_sees_only_that_namespace(units: None) -> None:
    assert os.readlink("/proc/1/exe").endswith("/systemd")
    sh("systemctl", "start", NS_UNIT, timeout=120)
    assert sh("systemctl", "is-active", NS_UNIT).stdout.strip() == "active"  # RemainAfterExit
    assert Path(f"/run/netns/{NS}").exists()
    ns_inode = guestutil.netns_inode(NS)

    sh("systemctl", "start", PROBE_UNIT, timeout=120)
    seen = json.loads((OUT / "links.json").read_text())
    inode = int((OUT / "inode").read_text())

    assert [link["ifname"] for link in seen] == ["lo"]
    assert inode == ns_inode
    assert inode != os.stat("/proc/self/ns/net").st_ino  # not the root namespace

    # stopping the namespace unit removes the namespace again
    sh("systemctl", "stop", NS_UNIT, timeout=120)
    assert not Path(f"/run/netns/{NS}").exists()
