"""What the checks look at, read once: the state record and the namespace's links and routes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wgns.engine import state
from wgns.engine.ops import NftTable, WriteNetnsFiles
from wgns.errors import WgnsError
from wgns.features import killswitch
from wgns.system import netns
from wgns.wireguard import backends
from wgns.wireguard.dump import DeviceState


def ip_json(ns: str, args: Sequence[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise WgnsError(f"`ip -n {ns} {' '.join(args)}` failed: {proc.stderr.strip()}")
    text = proc.stdout.strip()
    data: list[dict[str, Any]] = json.loads(text) if text else []
    return data


@dataclass
class Facts:
    """What the checks look at, read once."""

    ns: str
    rec: state.Record
    spec: killswitch.Spec | None
    links: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wg_ifnames(self) -> list[str]:
        return [str(i["ifname"]) for i in self.rec.interfaces]

    def read_device(self, ifname: str) -> DeviceState | None:
        """The WireGuard device IFNAME of the namespace, read by the recorded backend (None:
        gone, or a backend this wgns does not know)."""
        try:
            backend = backends.get(self.rec.backend)
        except WgnsError:
            return None
        return backend.read(ifname, self.ns)

    @property
    def veths(self) -> list[str]:
        """Interfaces declared by forwards (kill switch openings)."""
        return [o.ifname for o in self.spec.openings] if self.spec else []


def spec_of(rec: state.Record) -> killswitch.Spec | None:
    """The kill switch as recorded: ``extra.killswitch``, else from the journal and record."""
    raw = rec.extra.get("killswitch")
    if isinstance(raw, dict):
        return killswitch.Spec.from_json(raw)
    if not rec.kill_switch:
        return None
    table = rec.extra.get("nft_table")
    if not isinstance(table, str):
        return None
    return killswitch.Spec(
        table=table,
        wg_ifnames=tuple(str(i["ifname"]) for i in rec.interfaces),
        ipv6=rec.ipv6 == "tunnelled",
    )


def journal_ruleset(rec: state.Record, table: str) -> str | None:
    """The last kill switch script wgns applied for TABLE in the namespace, as journaled."""
    applied = [op for op in rec.find(NftTable) if op.table == table and op.ns == rec.ns]
    return applied[-1].ruleset if applied else None


def journal_files(rec: state.Record) -> dict[str, str] | None:
    """The /etc/netns/NS files wgns last wrote (name -> content), as journaled."""
    written = [op for op in rec.find(WriteNetnsFiles) if op.ns == rec.ns]
    return dict(written[-1].files) if written else None


def gather(ns: str) -> Facts:
    netns.validate_name(ns)
    rec = state.load(ns)
    if rec is None:
        raise WgnsError(f"{ns} is not managed by wgns", hint="see `wgns status` for the list")
    facts = Facts(ns=ns, rec=rec, spec=spec_of(rec))
    if netns.exists(ns):
        facts.links = ip_json(ns, ["-d", "address", "show"])
        facts.routes = [
            *ip_json(ns, ["-4", "route", "show", "table", "all"]),
            *ip_json(ns, ["-6", "route", "show", "table", "all"]),
        ]
    return facts


def link_kind(link: dict[str, Any]) -> str | None:
    info = link.get("linkinfo") or {}
    kind = info.get("info_kind")
    return str(kind) if kind else None


def route_text(r: dict[str, Any]) -> str:
    parts = [] if r.get("type", "unicast") == "unicast" else [str(r["type"])]
    parts.append(str(r.get("dst", "?")))
    if r.get("gateway"):
        parts.append(f"via {r['gateway']}")
    devs = route_devs(r)
    if devs:
        parts.append("dev " + ",".join(devs))
    table = r.get("table")
    if table and table != "main":
        parts.append(f"table {table}")
    return " ".join(parts)


def route_devs(r: dict[str, Any]) -> list[str]:
    devs = [str(r["dev"])] if r.get("dev") else []
    for nh in r.get("nexthops") or []:
        if isinstance(nh, dict) and nh.get("dev"):
            devs.append(str(nh["dev"]))
    return devs
