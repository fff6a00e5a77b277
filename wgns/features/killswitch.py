"""The kill switch: one nft table per confined namespace, owned by wgns.

The table lets packets leave only through lo and the namespace's WireGuard interfaces, in IPv4
and IPv6, and refuses the rest: locally generated packets dropped in the output hook fail with
EPERM, and TCP is answered with a reset to the local socket (ECONNREFUSED), so programs get an
error at once instead of a path around the tunnel. The table is
replaced atomically (one `nft -f` transaction) and removed by `down`.

* A profile without an IPv6 address gets IPv6 dropped everywhere but on lo (also through wg).
* A later feature (a forward's veth, issue 5) opens a hole with an :class:`Opening`: its rules
  live in this table and nowhere else, and each one is pinned to the opening's interface.
* The table carries a *seal*: a comment with a hash of its own body. `wgns check` compares the
  live table with the one rendered from the state record (see :func:`canonical`), seal included,
  so that any edit (a rule deleted, a chain flushed, a table replaced) is seen.

Everything here but :func:`live` and :func:`canonical` is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from wgns.errors import WgnsError
from wgns.system import names, tools

if TYPE_CHECKING:
    from wgns.profile.model import Profile

FAMILY = "inet"
SEAL_PREFIX = "wgns kill switch"

_COUNTER_RE = re.compile(r"counter packets \d+ bytes \d+")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:+-]{1,15}$")


@dataclass(frozen=True)
class Opening:
    """A narrow hole for a declared forward veth (issue 5): only what it needs, nothing more.

    Rule bodies are nft rule statements. Each is pinned to IFNAME when rendered: a rule that does
    not begin with ``iifname "IFNAME"`` (input) or ``oifname "IFNAME"`` (output) gets that match
    prepended, so an opening can never open anything but its own interface.
    """

    ifname: str
    rules_in: tuple[str, ...] = ()  # nft rule bodies for the input chain
    rules_out: tuple[str, ...] = ()  # nft rule bodies for the output chain

    def pinned_in(self) -> list[str]:
        return [_pin("iifname", self.ifname, r) for r in self.rules_in]

    def pinned_out(self) -> list[str]:
        return [_pin("oifname", self.ifname, r) for r in self.rules_out]

    def to_json(self) -> dict[str, Any]:
        return {
            "ifname": self.ifname,
            "rules_in": list(self.rules_in),
            "rules_out": list(self.rules_out),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Opening:
        return Opening(
            ifname=str(d["ifname"]),
            rules_in=tuple(str(r) for r in d.get("rules_in", ())),
            rules_out=tuple(str(r) for r in d.get("rules_out", ())),
        )


@dataclass(frozen=True)
class Spec:
    """Everything the table is rendered from; stored in the state record (``extra.killswitch``)
    so that `wgns check` can render the expected table again."""

    table: str
    wg_ifnames: tuple[str, ...]
    ipv6: bool
    openings: tuple[Opening, ...] = ()

    def render(self) -> str:
        return ruleset(self.table, self.wg_ifnames, ipv6=self.ipv6, openings=self.openings)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "wg_ifnames": list(self.wg_ifnames),
            "ipv6": self.ipv6,
            "openings": [o.to_json() for o in self.openings],
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Spec:
        return Spec(
            table=str(d["table"]),
            wg_ifnames=tuple(str(n) for n in d.get("wg_ifnames", ())),
            ipv6=bool(d.get("ipv6", False)),
            openings=tuple(Opening.from_json(o) for o in d.get("openings", ())),
        )


def spec_for(profile: Profile, openings: Sequence[Opening] = ()) -> Spec:
    """The kill switch of PROFILE, as `wgns up` renders it (see plan.plan_up)."""
    return Spec(
        table=names.nft_table(profile.name),
        wg_ifnames=tuple(names.wg_ifname(profile.name, i.name) for i in profile.interfaces),
        ipv6=profile.has_ipv6,
        openings=tuple(openings),
    )


def _pin(key: str, ifname: str, rule: str) -> str:
    match = f'{key} "{ifname}"'
    stripped = rule.strip()
    if stripped.startswith(match + " ") or stripped == match:
        return stripped
    return f"{match} {stripped}"


def _check_ifname(name: str) -> str:
    if not _IFNAME_RE.match(name):
        raise WgnsError(f"invalid interface name for the kill switch: {name!r}")
    return name


def _set(names: Sequence[str]) -> str:
    quoted = ", ".join(f'"{_check_ifname(n)}"' for n in names)
    return "{ " + quoted + " }"


def seal_of(body: str) -> str:
    """The table comment: a hash of the table's body (chains and rules as rendered)."""
    digest = sha256(body.encode()).hexdigest()[:16]
    return f"{SEAL_PREFIX} sha256:{digest}; edits are detected by wgns check"


def body(
    wg_ifnames: Sequence[str],
    *,
    ipv6: bool,
    openings: Sequence[Opening] = (),
) -> str:
    """The chains of the table (without the table header and seal)."""
    wg = _set(wg_ifnames) if wg_ifnames else '{ "lo" }'
    v6_out = [] if ipv6 else ['meta nfproto ipv6 counter goto refuse comment "no IPv6 in profile"']
    v6_in = [] if ipv6 else ["meta nfproto ipv6 counter drop"]
    out_rules = ['oifname "lo" accept', *v6_out, f"oifname {wg} accept"]
    in_rules = ['iifname "lo" accept', *v6_in, f"iifname {wg} accept"]
    for o in openings:
        _check_ifname(o.ifname)
        out_rules.extend(o.pinned_out())
        in_rules.extend(o.pinned_in())
    out_rules.append('counter goto refuse comment "wgns kill switch: not through the tunnel"')
    in_rules.append("counter")

    def chain(name: str, hook: str | None, rules: list[str]) -> str:
        lines = "\n".join(f"\t\t{r}" for r in rules)
        head = f"\t\ttype filter hook {hook} priority filter; policy drop;\n" if hook else ""
        return f"\tchain {name} {{\n{head}{lines}\n\t}}\n"

    return (
        chain("output", "output", out_rules)
        + chain("input", "input", in_rules)
        + chain("forward", "forward", ['counter comment "a confined namespace routes nothing"'])
        # Refused output: TCP gets a reset (sent to the local socket over lo: connect() fails
        # at once with ECONNREFUSED instead of retrying SYNs for two minutes); anything else is
        # dropped, which fails the sending system call with EPERM.
        + chain("refuse", None, ["meta l4proto tcp reject with tcp reset", "drop"])
    )


def ruleset(
    table: str,
    wg_ifnames: Sequence[str],
    *,
    ipv6: bool,
    openings: Sequence[Opening] = (),
) -> str:
    """The nft script that creates or atomically replaces TABLE (one transaction)."""
    chains = body(wg_ifnames, ipv6=ipv6, openings=openings)
    return (
        f"table {FAMILY} {table} {{}}\n"
        f"delete table {FAMILY} {table}\n"
        f"table {FAMILY} {table} {{\n"
        f'\tcomment "{seal_of(chains)}"\n' + chains + "}\n"
    )


def normalize(listing: str) -> list[str]:
    """`nft list table` output in a form that compares equal when only counters moved."""
    out = []
    for line in listing.splitlines():
        line = _COUNTER_RE.sub("counter", line.strip())
        if line:
            out.append(line)
    return out


def refused(listing: str) -> int:
    """Packets the output chain refused (sent to `refuse`), from an `nft list table` listing."""
    total = 0
    for line in listing.splitlines():
        if "goto refuse" in line and (m := re.search(r"counter packets (\d+) ", line)):
            total += int(m.group(1))
    return total


def live(table: str, *, ns: str | None) -> str | None:
    """`nft list table inet TABLE` in namespace NS, or None when there is no such table."""
    proc = tools.run(["nft", "list", "table", FAMILY, table], ns=ns, check=False)
    if proc.returncode != 0:
        if "No such file" in proc.stderr or "does not exist" in proc.stderr:
            return None
        raise WgnsError(f"cannot list nft table {table}: {proc.stderr.strip()}")
    return proc.stdout


def canonical(script: str, table: str) -> str:
    """How the kernel lists TABLE once SCRIPT is loaded: SCRIPT is applied in a throwaway,
    empty network namespace (`unshare --net`), so the comparison with the live table is made by
    nft itself, not by a re-implementation of its syntax."""
    # tools.run says "unshare is not installed" when util-linux is missing
    argv = ["unshare", "--net", "--", "sh", "-c", 'nft -f - && exec nft list table "$1" "$2"']
    proc = tools.run([*argv, "sh", FAMILY, table], input=script, check=False)
    if proc.returncode != 0:
        raise WgnsError(f"cannot render the expected nft table {table}: {proc.stderr.strip()}")
    return proc.stdout


def diff(expected: Sequence[str], actual: Sequence[str]) -> list[str]:
    """Short, human-readable differences: '-' missing lines, '+' unexpected lines."""
    import difflib  # `wgns check` only

    out = []
    for line in difflib.unified_diff(list(expected), list(actual), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        out.append(line)
    return out
