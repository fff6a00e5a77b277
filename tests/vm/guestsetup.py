"""The systemd guest's set-up: a root tree laid over the guest's root before it boots.

With the packages of :mod:`tests.vm.guestpkgs` (nscd, systemd-resolved, libnss-resolve) the guest
is a Debian system whose name resolution is what a confined unit must *not* use:

* ``/etc/nsswitch.conf``: ``hosts: resolve [!UNAVAIL=return] files dns`` (nss-resolve first,
  as Debian's libnss-resolve sets it), the rest as on this machine; nscd (caching) and
  systemd-resolved (enabled in sysinit.target, its user made by ``wgvm-sysusers.service`` as the
  package's postinst would) run;
* ``/etc/hosts`` gives ``whoami.test`` a WRONG address, :data:`WRONG_V4`, which nscd and resolved
  hand out, while the tunnel's DNS (the simulated provider's) answers the right one (198.18.2.2):
  a lookup that leaks to the host's resolvers shows; ``vpn.provider.test``, the endpoint of the
  ``heal`` profile, is also answered from this file (the health check moves it);
* ``wgvm-provider.service`` (Type=notify, before network-online.target): the simulated provider
  (wgns.testing.sim) in its own namespaces, built on the guest's root namespace as "the
  machine" (tests/vm/guest/guestprovider.py); it writes the profiles /etc/wgns/{x,boot,heal,
  broken} and /run/wgvm/provider.json (addresses, logs, the clients' keys' public halves);
* ``/usr/local/bin/wgns`` (scripts/wgns-launcher.in for this checkout) and
  ``/usr/local/lib/systemd/system/wgns@.service`` rendered as scripts/install.sh does;
* enabled before boot (linked into ``wgns-vm.target.wants``, the target the systemd guest boots
  instead of multi-user.target, which on this machine would start its own services): nscd,
  ``wgns@boot.service`` and ``wgvm-bootapp.service``, confined to ``boot`` by the very drop-in
  ``wgns confine`` writes (wgns.integrations.systemd.confine.dropin_text).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tests.vm import harness
from wgns.integrations.systemd import confine, units

PROJECT = harness.PROJECT_ROOT
WRONG_V4 = "198.18.99.99"
TEST_NAME = "whoami.test"
NSSWITCH_HOSTS = "hosts:          resolve [!UNAVAIL=return] files dns"
BOOT_NS = "boot"
BOOT_APP = "wgvm-bootapp.service"
PROVIDER_UNIT = "wgvm-provider.service"
TARGET_WANTS = "etc/systemd/system/wgns-vm.target.wants"
LAUNCHER = "/usr/local/bin/wgns"
UNIT_DIR = "/usr/local/lib/systemd/system"

HOSTS = f"""127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
127.0.1.1\twgns-vm
{WRONG_V4}\t{TEST_NAME}
198.18.1.2\tvpn.provider.test
"""

SYSUSERS_UNIT = """[Unit]
Description=wgns VM: the users of the unpacked packages (what their postinst would make)
DefaultDependencies=no
Before=systemd-resolved.service nscd.service sysinit.target
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=systemd-sysusers /usr/lib/sysusers.d/systemd-resolve.conf
"""

PROVIDER = f"""[Unit]
Description=wgns VM: the simulated VPN provider, the guest's network
Before=network-online.target wgns@boot.service
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
WorkingDirectory={PROJECT}
Environment=PYTHONPATH={PROJECT} PYTHONDONTWRITEBYTECODE=1
ExecStart={sys.executable} -I tests/vm/guest/guestprovider.py
TimeoutStartSec=300
"""

# records where it runs, then stays (its MainPID is what the boot check looks at)
BOOTAPP = f"""[Unit]
Description=wgns VM: a service confined to {BOOT_NS}, enabled before boot

[Service]
Type=exec
ExecStart=/bin/sleep infinity
"""


def nsswitch(host_text: str) -> str:
    """The machine's nsswitch.conf with nss-resolve first for hosts."""
    lines = [ln for ln in host_text.splitlines() if not re.match(r"\s*hosts\s*:", ln)]
    return "\n".join([*lines, NSSWITCH_HOSTS]) + "\n"


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)


def _link(root: Path, rel: str, target: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink():
        p.unlink()
    p.symlink_to(target)


def build(root: Path) -> Path:
    """Write the set-up tree under ROOT (an empty directory); ROOT."""
    try:
        host_nss = Path("/etc/nsswitch.conf").read_text()
    except OSError:
        host_nss = "passwd: files systemd\ngroup: files systemd\nshadow: files\n"
    _write(root, "etc/nsswitch.conf", nsswitch(host_nss))
    _write(root, "etc/hosts", HOSTS)
    launcher = (PROJECT / "scripts" / "wgns-launcher.in").read_text()
    launcher = launcher.replace("@INTERP@", sys.executable).replace("@ROOT@", str(PROJECT))
    _write(root, LAUNCHER.lstrip("/"), launcher, 0o755)
    unit = units.render(PROJECT / "scripts" / "systemd" / units.UNIT_TEMPLATE, LAUNCHER)
    _write(root, f"{UNIT_DIR.lstrip('/')}/wgns@.service", unit)
    sd = "etc/systemd/system"
    _write(root, f"{sd}/wgvm-sysusers.service", SYSUSERS_UNIT)
    _write(root, f"{sd}/{PROVIDER_UNIT}", PROVIDER)
    _write(root, f"{sd}/{BOOT_APP}", BOOTAPP)
    _write(root, f"{sd}/{BOOT_APP}.d/{confine.DROPIN_NAME}", confine.dropin_text(BOOT_APP, BOOT_NS))
    _link(root, f"{sd}/sysinit.target.wants/wgvm-sysusers.service", f"/{sd}/wgvm-sysusers.service")
    _link(root, f"{sd}/sysinit.target.wants/systemd-resolved.service",
          "/lib/systemd/system/systemd-resolved.service")  # fmt: skip
    _link(root, f"{TARGET_WANTS}/nscd.service", "/lib/systemd/system/nscd.service")
    _link(root, f"{TARGET_WANTS}/{PROVIDER_UNIT}", f"/{sd}/{PROVIDER_UNIT}")
    _link(root, f"{TARGET_WANTS}/wgns@{BOOT_NS}.service", f"{UNIT_DIR}/wgns@.service")
    _link(root, f"{TARGET_WANTS}/{BOOT_APP}", f"/{sd}/{BOOT_APP}")
    os.chmod(root, 0o755)
    return root


# ---------------------------------------------------------------------------------------------
# the physical boot (tests/vm/guest/test_guest_sd_physical.py): its own root tree, without the
# issue-13 set-up (no nscd/resolved, no wgns@boot: physical mode takes the main namespace's
# network), with hostapd, wpasupplicant and dhcpcd's Debian units unpacked beside it
# (PHYSICAL_PACKAGES, tests/vm/guestpkgs.py)

PHYSICAL_PACKAGES = ("hostapd", "wpasupplicant", "dhcpcd")
WIFI_SSID = "wgvm-wifi"
WIFI_PSK = "wgvm-passphrase-0123"
STATION = "wlan0"

WPA_CONF = f"""ctrl_interface=DIR=/run/wpa_supplicant GROUP=root
update_config=0
network={{
\tssid="{WIFI_SSID}"
\tpsk="{WIFI_PSK}"
\tkey_mgmt=WPA-PSK
\tproto=RSN
\tpairwise=CCMP
\tscan_freq=2437
}}
"""


def build_physical(root: Path) -> Path:
    """The physical boot's set-up tree under ROOT: the launcher and wgns's units, the
    provider (enabled), the station's wpa_supplicant configuration (Debian's
    wpa_supplicant@.service reads /etc/wpa_supplicant/wpa_supplicant-IF.conf)."""
    _write(root, "etc/hosts", HOSTS)
    launcher = (PROJECT / "scripts" / "wgns-launcher.in").read_text()
    launcher = launcher.replace("@INTERP@", sys.executable).replace("@ROOT@", str(PROJECT))
    _write(root, LAUNCHER.lstrip("/"), launcher, 0o755)
    templates = PROJECT / "scripts" / "systemd"
    for name in (units.UNIT_TEMPLATE, units.PHYSICAL_TEMPLATE):
        unit = units.render(templates / name, LAUNCHER)
        _write(root, f"{UNIT_DIR.lstrip('/')}/{name.removesuffix('.in')}", unit)
    sd = "etc/systemd/system"
    _write(root, f"{sd}/{PROVIDER_UNIT}", PROVIDER)
    _link(root, f"{TARGET_WANTS}/{PROVIDER_UNIT}", f"/{sd}/{PROVIDER_UNIT}")
    _write(root, f"etc/wpa_supplicant/wpa_supplicant-{STATION}.conf", WPA_CONF, 0o600)
    os.chmod(root, 0o755)
    return root
