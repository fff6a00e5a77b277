"""The status files: what a status bar needs to know of each namespace, readable without root.

A status bar runs as the user; the state records (/run/wgns/NS.json, 0600) and the devices
(`wg show`, netlink inside the namespace) need root. So wgns publishes a summary per namespace,
/run/wgns/status/NS.json (directory 0755, files 0644, replaced whole: wgns.system.fsutil), and
keeps it current: `wgns up` publishes it, `wgns down` withdraws it, `up --foreground` (the
wgns@ unit's watcher) refreshes it every REFRESH seconds and so does `wgns status` run as root.

Nothing secret is published, and less than `wgns status --json` shows root: no keys (private,
preshared, public: a public key names the account at the provider), no endpoints (which server
the tunnel goes to is none of another local user's business and no bar needs it), no profile
path, no pids; no BSSID for a wifi link (wgns.features.linkinfo). :func:`publish` refuses a
document that holds a key, an endpoint or a BSSID, whoever calls it.

Times are unix times, so that a reader computes ages itself (a handshake's age stays right
between refreshes); counters come with rates (bytes per second since the previous publication,
at least RATE_WINDOW earlier). The schema is in docs/status.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from wgns import log
from wgns.engine import state
from wgns.errors import WgnsError
from wgns.system import fsutil, netns

STATUS_DIR = f"{state.STATE_DIR}/status"
FORMAT = 1
REFRESH = 5.0  # `up --foreground` republishes this often
STALE_AFTER = 30.0  # a file not refreshed for this long says nothing about now
RATE_WINDOW = 1.0  # rates are measured over at least this many seconds
#: keys a status file never holds (a preshared_key only as a boolean): keys, the server a
#: tunnel goes to, the access point a wifi link is associated with (a BSSID locates a machine)
FORBIDDEN = frozenset({"private_key", "public_key", "endpoint", "bssid"})


def path_of(ns: str) -> str:
    return f"{STATUS_DIR}/{ns}.json"


def publish(ns: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Replace NS's status file by DATA (a JSON object; "kind" defaults to "tunnel") with
    "name", "format" and "published_at" set, and the rates of every entry of
    ``data["interfaces"]`` that has "ifname", "rx_bytes" and "tx_bytes" (against the file it
    replaces). The document written is returned. ValueError when DATA holds a FORBIDDEN key."""
    netns.validate_name(ns)
    now = time.time()
    entry: dict[str, Any] = {"kind": "tunnel", **data, "name": ns, "format": FORMAT}
    entry["published_at"] = now
    _refuse_secrets(entry)
    previous = _read(path_of(ns))
    if isinstance(entry.get("interfaces"), list):
        entry["interfaces"] = with_rates(entry["interfaces"], previous, now)
    text = json.dumps(entry, indent=1, sort_keys=True) + "\n"
    for _ in range(3):  # a withdraw of the last file may remove the directory in between
        _ensure_dir()
        try:
            fsutil.write_atomically(path_of(ns), text, 0o644, fsync=False)
            break
        except FileNotFoundError:
            continue
    else:
        raise OSError(f"cannot write {path_of(ns)}: its directory keeps disappearing")
    return entry


def withdraw(ns: str) -> None:
    """Remove NS's status file, and the directory when it was the last one."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_of(ns))
    with contextlib.suppress(OSError):
        os.rmdir(STATUS_DIR)  # only when empty


def read_all() -> dict[str, dict[str, Any]]:
    """Every status file by namespace name (sorted). A tunnel's file whose record is gone (a
    `down` that raced a refresh) and a file that is not a status document are skipped."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(STATUS_DIR))
    except FileNotFoundError:
        return out
    for fname in names:
        if not fname.endswith(".json") or fname.startswith("."):
            continue
        ns = fname[: -len(".json")]
        doc = _read(f"{STATUS_DIR}/{fname}")
        if doc is None or doc.get("name") != ns or not isinstance(doc.get("published_at"), float):
            continue
        if doc.get("kind") == "tunnel" and not os.path.exists(state.path_of(ns)):
            continue
        out[ns] = doc
    return out


def signature() -> tuple[tuple[str, int, int], ...]:
    """What changes when a status file is published or withdrawn: (name, inode, mtime) of
    each (cheap enough to look at twice a second)."""
    out = []
    try:
        entries = list(os.scandir(STATUS_DIR))
    except FileNotFoundError:
        return ()
    for e in entries:
        if e.name.endswith(".json") and not e.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                st = e.stat()
                out.append((e.name, st.st_ino, st.st_mtime_ns))
    return tuple(sorted(out))


def age(doc: Mapping[str, Any], now: float) -> float:
    """How old DOC's figures are, in seconds."""
    return max(0.0, now - float(doc.get("published_at", 0.0)))


def is_stale(doc: Mapping[str, Any], now: float) -> bool:
    return age(doc, now) > STALE_AFTER


# ------------------------------------------------------------------ tunnels


def refresh(ns: str, rec: state.Record | None = None) -> dict[str, Any] | None:
    """Publish NS's tunnel status as it is now (REC: its record, read here when None); withdraw
    it when NS has no record. A file of another kind (physical mode's) is never overwritten
    by a tunnel's: a physical one is read again (:func:`refresh_physical`), another left as it
    is; a record of another kind (``extra["kind"]``, physical mode's) is left to the mode that
    made it, which publishes its file. Never raises: a status file is not worth failing `up`
    or the watcher for (the failure is one line on stderr). The document, or None."""
    try:
        existing = _read(path_of(ns))
        if existing is not None and existing.get("kind", "tunnel") != "tunnel":
            return refresh_physical(existing) if existing.get("kind") == "physical" else None
        if rec is None:
            rec = state.load(ns)
        if rec is None:
            withdraw(ns)
            return None
        if rec.extra.get("kind", "tunnel") != "tunnel":
            return None  # physical mode's record: its own publisher writes that file
        doc = publish(ns, collect(rec))
        if not os.path.exists(state.path_of(ns)):  # a `down` withdrew it meanwhile
            withdraw(ns)
            return None
        return doc
    except (WgnsError, OSError, ValueError) as e:
        log.info("wgns: %s: cannot publish its status for status bars: %s", ns, e)
        return None


def publish_described(described: Mapping[str, Any]) -> dict[str, Any] | None:
    """Publish a namespace of `wgns status --json` (root's `wgns status` refreshes what it
    shows); never raises, like :func:`refresh`."""
    ns = str(described.get("name"))
    try:
        existing = _read(path_of(ns))
        rec = state.load(ns)
        foreign = rec is not None and rec.extra.get("kind", "tunnel") != "tunnel"
        if foreign or (existing is not None and existing.get("kind", "tunnel") != "tunnel"):
            return refresh(ns)  # physical mode's file stays physical
        return publish(ns, from_status(described))
    except (WgnsError, OSError, ValueError) as e:
        log.info("wgns: %s: cannot publish its status for status bars: %s", ns, e)
        return None


def refresh_physical(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A physical namespace's document (kind "physical", published by physical mode) read again
    from its namespace: the same interfaces, their state now; the other keys kept. Left as it
    is (to go stale) when the namespace is gone. Never raises; the document, or None."""
    from wgns.features import linkinfo

    ns = str(doc.get("name"))
    if not netns.exists(ns):
        return None
    ifnames = [str(i["ifname"]) for i in doc.get("interfaces") or [] if "ifname" in i]
    kept = {k: v for k, v in doc.items() if k not in ("interfaces", "name", "format")}
    if isinstance(doc.get("tunnel"), list):  # the tunnel, in this (the main) namespace
        kept["latest_handshake"] = latest_handshake([str(i) for i in doc["tunnel"]])
    try:
        return publish(ns, {**kept, **linkinfo.physical_link(ns, ifnames or None)})
    except (WgnsError, OSError, ValueError) as e:
        log.info("wgns: %s: cannot publish its status for status bars: %s", ns, e)
        return None


def latest_handshake(ifnames: list[str]) -> int:
    """The most recent handshake (unix time, 0: none) of devices IFNAMES of this namespace."""
    from wgns.wireguard import dump

    latest = 0
    for ifname in ifnames:
        dev = dump.show(ifname, ns=None)
        if dev is not None:
            latest = max([latest, *(p.latest_handshake for p in dev.peers)])
    return latest


def collect(rec: state.Record) -> dict[str, Any]:
    """REC's namespace as its status file shows it (reads the devices and links: root)."""
    from wgns.features.check import health

    exists = netns.exists(rec.ns)
    links = links_of(rec.ns) if exists else {}
    backend = health.backend_of(rec)
    interfaces = []
    for entry in rec.interfaces:
        ifname = str(entry["ifname"])
        dev = backend.read(ifname, rec.ns) if backend is not None and exists else None
        link = links.get(ifname)
        interfaces.append(
            {
                "label": entry.get("label", ifname),
                "ifname": ifname,
                "present": link is not None,
                "up": bool(link and link["up"]),
                "addresses": link["addresses"] if link else [],
                "mtu": link["mtu"] if link else None,
                "peers": [
                    {
                        "latest_handshake": p.latest_handshake,
                        "rx_bytes": p.rx_bytes,
                        "tx_bytes": p.tx_bytes,
                        "persistent_keepalive": p.persistent_keepalive,
                        "preshared_key": p.has_preshared_key,
                    }
                    for p in (dev.peers if dev else ())
                ],
            }
        )
    described = {
        "phase": rec.phase,
        "broken": health.problems(rec, {n: link["up"] for n, link in links.items()}),
        "exists": exists,
        "backend": rec.backend,
        "birthplace": rec.birthplace,
        "kill_switch": rec.kill_switch,
        "ipv6": rec.ipv6,
        "started_at": rec.started_at,
        "interfaces": interfaces,
    }
    return from_status(described)


def from_status(described: Mapping[str, Any]) -> dict[str, Any]:
    """A namespace of `wgns status --json` (docs/status.md) reduced to its status file: the
    fields a bar shows, none of FORBIDDEN; per interface, the totals of its peers."""
    interfaces = []
    for i in described.get("interfaces", []):
        peers = [
            {
                "latest_handshake": int(p.get("latest_handshake") or 0),
                "rx_bytes": int(p.get("rx_bytes") or 0),
                "tx_bytes": int(p.get("tx_bytes") or 0),
                "persistent_keepalive": p.get("persistent_keepalive"),
                "preshared_key": bool(p.get("preshared_key")),
            }
            for p in i.get("peers", [])
        ]
        interfaces.append(
            {
                "label": i.get("label"),
                "ifname": i.get("ifname"),
                "present": bool(i.get("present")),
                "up": bool(i.get("up")),
                "addresses": list(i.get("addresses") or []),
                "mtu": i.get("mtu"),
                "latest_handshake": max((p["latest_handshake"] for p in peers), default=0),
                "rx_bytes": sum(p["rx_bytes"] for p in peers),
                "tx_bytes": sum(p["tx_bytes"] for p in peers),
                "peers": peers,
            }
        )
    return {
        "kind": "tunnel",
        "phase": described.get("phase"),
        "broken": list(described.get("broken") or []),
        "exists": bool(described.get("exists")),
        "backend": described.get("backend"),
        "birthplace": described.get("birthplace"),
        "kill_switch": bool(described.get("kill_switch")),
        "ipv6": described.get("ipv6"),
        "started_at": described.get("started_at"),
        "interfaces": interfaces,
    }


# ------------------------------------------------------------------ helpers


def _ensure_dir() -> None:
    for d in (state.STATE_DIR, STATUS_DIR):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        os.chmod(d, 0o755)  # whatever the umask: users read it


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _refuse_secrets(doc: Any, where: str = "") -> None:
    if isinstance(doc, Mapping):
        for key, value in doc.items():
            if key in FORBIDDEN or (key == "preshared_key" and not isinstance(value, bool)):
                raise ValueError(f"a status file never holds {where}{key}")
            _refuse_secrets(value, f"{where}{key}.")
    elif isinstance(doc, list):
        for item in doc:
            _refuse_secrets(item, where)


def with_rates(interfaces: list[Any], previous: Mapping[str, Any] | None, now: float) -> list[Any]:
    """INTERFACES with "rx_rate"/"tx_rate" (bytes/s, None until measured) and the baseline
    they are measured against ("rate_since": at, rx_bytes, tx_bytes). The baseline moves to now
    once it is RATE_WINDOW old; until then the previous rates are kept. Counters that went
    back (a device made again) start a new baseline."""
    before: dict[str, Mapping[str, Any]] = {}
    if previous is not None and isinstance(previous.get("interfaces"), list):
        for p in previous["interfaces"]:
            if isinstance(p, Mapping) and isinstance(p.get("ifname"), str):
                before[p["ifname"]] = p
    out = []
    for i in interfaces:
        if not (isinstance(i, Mapping) and _counters(i)):
            out.append(i)
            continue
        i = dict(i)
        rx, tx = i["rx_bytes"], i["tx_bytes"]
        old = before.get(str(i.get("ifname")), {})
        base = old.get("rate_since")
        i.update(rx_rate=None, tx_rate=None, rate_since={"at": now, "rx_bytes": rx, "tx_bytes": tx})
        if isinstance(base, Mapping) and _counters(base) and isinstance(base.get("at"), float):
            span = now - base["at"]
            if rx >= base["rx_bytes"] and tx >= base["tx_bytes"] and span >= 0:
                if span < RATE_WINDOW:
                    i.update(rx_rate=old.get("rx_rate"), tx_rate=old.get("tx_rate"))
                    i["rate_since"] = dict(base)
                else:
                    i["rx_rate"] = (rx - base["rx_bytes"]) / span
                    i["tx_rate"] = (tx - base["tx_bytes"]) / span
        out.append(i)
    return out


def _counters(d: Mapping[str, Any]) -> bool:
    values = [d.get("rx_bytes"), d.get("tx_bytes")]
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def links_of(ns: str) -> dict[str, dict[str, Any]]:
    """ifname -> up, mtu, addresses (no link-local) of namespace NS (`wgns status` shows them
    too); a WgnsError when `ip` cannot read NS."""
    from wgns.features.check.facts import ip_json

    out = {}
    for link in ip_json(ns, ["address", "show"]):
        out[str(link["ifname"])] = {
            "mtu": link.get("mtu"),
            "up": "UP" in link.get("flags", []),
            "addresses": [
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("scope") != "link"
            ],
        }
    return out
