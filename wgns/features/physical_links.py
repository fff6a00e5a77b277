"""Physical mode's interfaces: which ones move, whether they can, their state before the move
(to give it back exactly), and who else manages them (NetworkManager).

Read-only, except :func:`restore`, which the link ops (wgns.features.physical_ops) call when an
interface comes back into the main namespace: a link moved to another namespace arrives down,
without addresses or routes, so what it had is put back from the snapshot taken before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from wgns.errors import WgnsError
from wgns.system.tools import run

SYS = "/sys"
NM_RUN_DIR = "/run/NetworkManager"  # NetworkManager's NMRUNDIR

# Link kinds the kernel refuses to move to another namespace (their driver sets netns_local:
# `ip link set X netns NS` fails with "Invalid argument"). Since Linux 6.12 this is no longer a
# feature bit (`ethtool -k` showed "netns-local: on [fixed]" before), so it is known by kind.
NETNS_LOCAL_KINDS = frozenset({"bridge", "vrf", "ppp", "openvswitch", "batadv"})


@dataclass(frozen=True)
class Chosen:
    """What physical mode moves: ethernet-like links by name, wireless phys (with their
    netdevs) by phy."""

    links: tuple[str, ...]
    phys: dict[str, tuple[str, ...]]  # phy -> its netdevs

    @property
    def ifnames(self) -> tuple[str, ...]:
        return (*self.links, *(n for devs in self.phys.values() for n in devs))


def _ip_json(argv: list[str], ns: str | None = None) -> list[dict[str, Any]]:
    proc = run(["ip", "-j", *argv], ns=ns, check=False)
    if proc.returncode != 0:
        raise WgnsError(f"`ip {' '.join(argv)}` failed: {proc.stderr.strip()}")
    data = json.loads(proc.stdout or "[]")
    return data if isinstance(data, list) else []


def default_route_links(ns: str | None = None) -> list[str]:
    """The links the IPv4 and IPv6 default routes (of any table) leave through."""
    found: list[str] = []
    for family in ("-4", "-6"):
        for r in _ip_json([family, "route", "show", "default", "table", "all"], ns):
            dev = r.get("dev")
            if isinstance(dev, str) and dev not in found and dev != "lo":
                found.append(dev)
    return found


def wireless_phys(sys_root: str = SYS) -> dict[str, tuple[str, ...]]:
    """Every wireless phy (SYS_ROOT/class/ieee80211/*) and its netdevs (the links whose
    phy80211 points at it), by name."""
    phys: dict[str, list[str]] = {}
    base = f"{sys_root}/class/ieee80211"
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return {}
    for phy in names:
        phys[phy] = []
    net = f"{sys_root}/class/net"
    try:
        links = sorted(os.listdir(net))
    except FileNotFoundError:
        links = []
    for link in links:
        try:
            phy = os.path.basename(os.readlink(f"{net}/{link}/phy80211"))
        except OSError:
            continue
        if phy in phys:
            phys[phy].append(link)
    return {p: tuple(d) for p, d in phys.items()}


def phy_index(phy: str, sys_root: str = SYS) -> int | None:
    """PHY's wiphy index (kept when it changes namespace: `iw phy#N` finds it anywhere)."""
    try:
        with open(f"{sys_root}/class/ieee80211/{phy}/index") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def phy_of(ifname: str, sys_root: str = SYS) -> str | None:
    try:
        return os.path.basename(os.readlink(f"{sys_root}/class/net/{ifname}/phy80211"))
    except OSError:
        return None


def parse_iw_phys(text: str) -> set[str]:
    """The phys named by `iw phy` output ("Wiphy phy0" lines)."""
    return {
        ln.split()[1] for ln in text.splitlines() if ln.startswith("Wiphy ") and len(ln.split()) > 1
    }


def phys_here() -> set[str] | None:
    """The wireless phys of this network namespace, as nl80211 lists them (None: `iw` cannot
    say). /sys/class/ieee80211 shows the phys of the namespace that mounted /sys, which need
    not be this one (a process that entered it with setns(2) sees another's)."""
    proc = run(["iw", "phy"], check=False)
    if proc.returncode != 0:
        return None
    return parse_iw_phys(proc.stdout)


def choose(listed: tuple[str, ...], sys_root: str = SYS) -> Chosen:
    """LISTED interfaces (empty: the default routes' links and every wireless phy of this
    namespace), split into links moved by name and phys moved whole."""
    phys = wireless_phys(sys_root)
    if phys and sys_root == SYS and (here := phys_here()) is not None:
        phys = {p: d for p, d in phys.items() if p in here}
    names = list(listed) if listed else default_route_links()
    chosen_phys: dict[str, tuple[str, ...]] = {} if listed else dict(phys)
    links: list[str] = []
    for name in names:
        phy = phy_of(name, sys_root)
        if phy is not None:
            chosen_phys[phy] = phys.get(phy, (name,))
        elif name not in links:
            links.append(name)
    if not links and not chosen_phys:
        raise WgnsError(
            "no interface to move: no default route and no wireless device",
            hint="name them with --iface IF (the links your network comes through)",
        )
    return Chosen(tuple(links), chosen_phys)


def check_movable(ifname: str) -> None:
    """IFNAME exists here and its driver lets it change namespace (a WgnsError saying why not)."""
    try:
        info = _ip_json(["-d", "link", "show", "dev", ifname])
    except WgnsError:
        raise WgnsError(
            f"no interface {ifname} in this namespace", hint="see `ip link` for the names"
        ) from None
    if not info:
        raise WgnsError(f"no interface {ifname} in this namespace")
    link = info[0]
    kind = (link.get("linkinfo") or {}).get("info_kind", "")
    if ifname == "lo" or link.get("link_type") == "loopback":
        raise WgnsError("the loopback interface never moves", hint="leave lo out of --iface")
    if kind in NETNS_LOCAL_KINDS:
        raise WgnsError(
            f"{ifname} is a {kind}, which the kernel cannot move to another namespace; "
            f"nothing was changed",
            hint="move the links under it instead (--iface)",
        )


def check_phy_movable(phy: str) -> None:
    """PHY's driver supports moving it to another namespace (nl80211's set_wiphy_netns)."""
    proc = run(["iw", "phy", phy, "info"], check=False)
    if proc.returncode != 0:
        raise WgnsError(f"cannot read wireless device {phy}: {proc.stderr.strip()}")
    if "set_wiphy_netns" not in proc.stdout:
        raise WgnsError(
            f"the driver of {phy} cannot move it to another namespace; nothing was changed",
            hint="physical mode needs a wireless driver supporting set_wiphy_netns",
        )


def networkmanager_running() -> bool:
    """A NetworkManager process runs in this network namespace (its state files stay behind
    when it stops; one in a container's namespace manages that namespace's links)."""
    here = os.stat("/proc/self/ns/net").st_ino
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().strip() != "NetworkManager":
                    continue
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == here:
                return True
        except OSError:
            continue
    return False


def managed_by_networkmanager(ifname: str, run_dir: str = NM_RUN_DIR) -> bool:
    """NetworkManager manages IFNAME: its device state file (RUN_DIR/devices/IFINDEX, a
    keyfile written by nm_config_device_state_write) says managed=true."""
    try:
        index = socket_index(ifname)
        with open(f"{run_dir}/devices/{index}") as f:
            text = f.read()
    except OSError:
        return False
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[device]" and line.replace(" ", "") in ("managed=true", "managed=1"):
            return True
    return False


def socket_index(ifname: str) -> int:
    import socket

    return socket.if_nametoindex(ifname)


def refuse_networkmanager(ifnames: tuple[str, ...]) -> None:
    if not networkmanager_running():
        return
    owned = [i for i in ifnames if managed_by_networkmanager(i)]
    if owned:
        raise WgnsError(
            f"NetworkManager manages {', '.join(owned)}: it would fight wgns over "
            f"{'them' if len(owned) > 1 else 'it'}; nothing was changed",
            hint="`nmcli device set IF managed no` for each (or stop NetworkManager), then "
            "`wgns physical up` again; `managed yes` gives it back after `wgns physical down`",
        )


# ---------------------------------------------------------------- snapshot and restore

_ADDR_FLAGS = ("nodad", "noprefixroute", "home", "mngtmpaddr")


def snapshot(ifname: str, ns: str | None = None) -> dict[str, Any]:
    """IFNAME's state as it is now (in NS): up or down, MTU, addresses, routes."""
    link = _ip_json(["link", "show", "dev", ifname], ns)[0]
    addrs = []
    for a in _ip_json(["addr", "show", "dev", ifname], ns)[0].get("addr_info", []):
        if a.get("family") == "inet6" and a.get("scope") == "link":
            continue  # the kernel makes the link-local address itself when the link comes up
        entry: dict[str, Any] = {"local": a["local"], "prefixlen": a["prefixlen"]}
        if a.get("broadcast"):
            entry["broadcast"] = a["broadcast"]
        if a.get("label") and a["label"] != ifname:
            entry["label"] = a["label"]
        entry["flags"] = [f for f in _ADDR_FLAGS if a.get(f)]
        addrs.append(entry)
    routes = []
    for family in ("-4", "-6"):
        for r in _ip_json([family, "route", "show", "dev", ifname, "table", "all"], ns):
            if r.get("protocol") == "kernel" or r.get("table") == "local":
                continue  # made by the kernel from the addresses
            if r.get("type") in ("multicast", "local", "broadcast"):
                continue
            routes.append({"family": family, **{k: r[k] for k in _ROUTE_KEYS if k in r}})
    return {
        "sysctl": sysctls(ifname, ns),
        "up": "UP" in link.get("flags", []),
        "mtu": link.get("mtu"),
        "addresses": addrs,
        "routes": routes,
    }


def _sysctl_dirs(ifname: str) -> list[str]:
    return [f"/proc/sys/net/{family}/conf/{ifname}" for family in ("ipv4", "ipv6")]


def sysctls(ifname: str, ns: str | None = None) -> dict[str, str]:
    """IFNAME's own writable sysctls (net.ipv4.conf.IF.*, net.ipv6.conf.IF.*): a link moved
    to another namespace gets that namespace's defaults for them (accept_dad, forwarding...)."""
    from wgns.system import netns

    out: dict[str, str] = {}
    with netns.entered(ns):
        for d in _sysctl_dirs(ifname):
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                continue
            for name in names:
                path = f"{d}/{name}"
                if not os.stat(path).st_mode & 0o200:
                    continue
                try:
                    with open(path) as f:
                        out[path.removeprefix("/proc/sys/net/")] = f.read().strip()
                except OSError:  # stable_secret unset: EIO
                    continue
    return out


def restore_sysctls(ifname: str, values: dict[str, str]) -> list[str]:
    """Write back VALUES (of sysctls()) that differ now; the errors."""
    errors = []
    now = sysctls(ifname)
    for key, value in values.items():
        if now.get(key, value) == value:
            continue
        try:
            with open(f"/proc/sys/net/{key}", "w") as f:
                f.write(value)
        except OSError as e:
            errors.append(f"net.{key.replace('/', '.')} = {value}: {e.strerror}")
    return errors


_ROUTE_KEYS = ("type", "dst", "gateway", "protocol", "scope", "metric", "table", "prefsrc")


def restore_lines(ifname: str, snap: dict[str, Any]) -> list[str]:
    """The `ip -b` lines giving IFNAME (back in the main namespace) the state SNAP."""
    lines = []
    if snap.get("mtu"):
        lines.append(f"link set dev {ifname} mtu {int(snap['mtu'])}")
    if snap.get("up"):
        lines.append(f"link set dev {ifname} up")
    for a in snap.get("addresses", []):
        line = f"address add {a['local']}/{int(a['prefixlen'])} dev {ifname}"
        if a.get("broadcast"):
            line += f" broadcast {a['broadcast']}"
        if a.get("label"):
            line += f" label {a['label']}"
        line += "".join(f" {f}" for f in a.get("flags", []) if f in _ADDR_FLAGS)
        lines.append(line)
    if snap.get("up"):
        # the routes to the link's own subnets first: a gateway must be reachable
        routes = sorted(snap.get("routes", []), key=lambda r: bool(r.get("gateway")))
        lines.extend(_route_line(ifname, r) for r in routes)
    return lines


def _route_line(ifname: str, r: dict[str, Any]) -> str:
    line = "route replace"  # (no -4/-6 in a batch: the prefix says the family)
    if r.get("type") and r["type"] != "unicast":
        line += f" {r['type']}"
    dst = r.get("dst", "default")
    if dst == "default":
        dst = "::/0" if r["family"] == "-6" else "0.0.0.0/0"
    line += f" {dst}"
    if r.get("gateway"):
        line += f" via {r['gateway']}"
    line += f" dev {ifname}"
    for key, word in (("protocol", "proto"), ("scope", "scope"), ("metric", "metric")):
        if r.get(key) not in (None, ""):
            line += f" {word} {r[key]}"
    if r.get("table") not in (None, "main"):
        line += f" table {r['table']}"
    if r.get("prefsrc"):
        line += f" src {r['prefsrc']}"
    return line


def restore(ifname: str, snap: dict[str, Any]) -> None:
    """Give IFNAME (in this namespace, just moved back) the state SNAP; every error reported."""
    from wgns.engine.ops.link import ip_batch

    errors = restore_sysctls(ifname, snap.get("sysctl", {}))
    for line in restore_lines(ifname, snap):  # one by one: a failing line does not stop others
        try:
            ip_batch([line])
        except WgnsError as e:
            if "File exists" not in str(e):
                errors.append(f"{line}: {e}")
    if errors:
        raise WgnsError(f"{ifname} is back but not all of its state: {'; '.join(errors)}")
