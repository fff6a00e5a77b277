"""`wgns check --pid PID` and `--unit UNIT`: the leak self-test of a running process, from inside
its own network and mount namespaces (wgns.features.check.procview).

Each check yields one :class:`Result`, in ORDER:

* ``netns``: the process's network namespace is a wgns namespace NS (the inode of
  /proc/PID/ns/net is that of /run/netns/NS), and NS is whole (wgns.features.check.health);
* ``resolver``: the /etc/resolv.conf, the ``hosts:`` line of /etc/nsswitch.conf and the
  /etc/hosts the process sees are NS's (/etc/netns/NS/*), however its view was built;
* ``backdoors``: no name-service daemon of the host can be reached from where the process is:
  nscd's, systemd-resolved's, the D-Bus system bus's and avahi's sockets, and resolved's stub
  listeners 127.0.0.53/54 (a network namespace does not isolate filesystem sockets);
* ``lookup``: getaddrinfo of a fresh name, made as the process would make it, is answered, by the
  servers of NS's resolv.conf, routed through wg, while the tunnel's byte counters move;
* ``exit`` (with an echo URL): the address the URL sees from the process differs from the one it
  sees from NS's birthplace, where the tunnel's UDP sockets live.

A process in no wgns namespace fails ``netns``; what needs NS to compare with is skipped, the rest
is still looked at.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wgns.engine import state
from wgns.errors import WgnsError
from wgns.features.check import health, procview
from wgns.features.check.facts import Facts, gather
from wgns.features.check.probes import exit_verdict, fetch_in, nameservers, route_get, tunnel_bytes
from wgns.features.check.result import Result, verdict
from wgns.system import netns

ORDER = ("netns", "resolver", "backdoors", "lookup", "exit")
#: The probe names' domain: reserved (RFC 6761), so that no answer can be a real one.
PROBE_DOMAIN = "invalid"
_VIEW_TIMEOUT = 15.0  # reading three files and a few connects: seconds, when nothing hangs


@dataclass
class Target:
    """The process under test, and the unit it was found by (None: given by --pid)."""

    pid: int
    unit: str | None = None

    @property
    def label(self) -> str:
        who = procview.describe(self.pid)
        return f"{self.unit} ({who})" if self.unit else who


@dataclass
class Context:
    target: Target
    timeout: float
    ns: str | None = None
    facts: Facts | None = None
    seen: dict[str, Any] = field(default_factory=dict)  # what the process sees (files, sockets)


def _skip_without_ns(name: str) -> Result:
    return Result(name, "skip", "not in a wgns namespace: nothing to compare with")


def check_netns(c: Context) -> Result:
    name = "netns"
    who = procview.describe(c.target.pid)
    ident = procview.proc_ns(c.target.pid)
    shown = f"net:[{ident[1]}]"
    found = procview.netns_named(ident)
    if found is None:
        own = os.stat("/proc/self/ns/net")
        where = (
            "the one `wgns check` runs in (the host's)"
            if (own.st_dev, own.st_ino) == ident
            else "which has no name under /run/netns"
        )
        return verdict(name, False, f"not in any wgns namespace: {who} is in {shown}, {where}")
    rec = state.load(found)
    if rec is None:
        return verdict(
            name,
            False,
            f"not in any wgns namespace: {who} is in {found} (/run/netns/{found}), "
            "which wgns does not manage",
        )
    c.ns = found
    c.facts = gather(found)
    problems = health.problems(rec)
    if rec.phase != "up":
        problems.insert(0, f"its state record's phase is {rec.phase!r}, not 'up'")
    if problems:
        return verdict(
            name, False, f"{who} is in {found} ({shown}), but {found} is broken: "
            + "; ".join(problems) + f" ({health.fix_hint(found)})"
        )  # fmt: skip
    return verdict(name, True, f"{who} is in {found}: {shown} is /run/netns/{found}")


def hosts_lines(nsswitch: str) -> list[str]:
    """The ``hosts:`` lines of an nsswitch.conf text, each as "hosts: src ..." (comments out)."""
    out = []
    for line in nsswitch.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "hosts:":
            out.append(" ".join(words))
    return out


def _seen_text(c: Context, name: str) -> tuple[str | None, str]:
    entry = c.seen["files"].get(name, {"error": "not read"})
    if "text" in entry:
        return str(entry["text"]), ""
    return None, f"its /etc/{name}: {entry['error']}"


def check_resolver(c: Context) -> Result:
    name = "resolver"
    if c.ns is None:
        return _skip_without_ns(name)
    etc = netns.etc_dir_of(c.ns)
    problems: list[str] = []
    shown: list[str] = []
    for fname in procview.RESOLVER_FILES:
        want_path = f"{etc}/{fname}"
        try:
            with open(want_path, encoding="utf-8", errors="replace") as fh:
                want = fh.read()
        except OSError as e:
            problems.append(f"{want_path}: {e.strerror} (nothing to compare with)")
            continue
        have, err = _seen_text(c, fname)
        if have is None:
            problems.append(err)
        elif fname == "resolv.conf":
            servers = ", ".join(nameservers(have)) or "none"
            if have != want:
                expected = ", ".join(nameservers(want)) or "none"
                problems.append(
                    f"its /etc/resolv.conf is not {want_path} "
                    f"(nameservers {servers}, expected {expected})"
                )
            else:
                shown.append(f"resolv.conf: nameservers {servers}")
        elif fname == "nsswitch.conf":
            have_h, want_h = hosts_lines(have), hosts_lines(want)
            if have_h != want_h:
                problems.append(
                    f"its /etc/nsswitch.conf has {' | '.join(have_h) or 'no hosts: line'}, "
                    f"{want_path} {' | '.join(want_h) or 'no hosts: line'}"
                )
            else:
                shown.append(f"nsswitch.conf {' | '.join(have_h) or '(no hosts: line)'}")
        elif have != want:
            problems.append(f"its /etc/{fname} is not {want_path}")
        else:
            shown.append(f"{fname} as {want_path}")
    if problems:
        return verdict(name, False, "; ".join(problems))
    return verdict(name, True, f"its /etc is {etc}'s: " + "; ".join(shown))


def check_backdoors(c: Context) -> Result:
    name = "backdoors"
    found: Sequence[dict[str, str]] = c.seen["sockets"]
    open_ = [s for s in found if s["got"] == "connected"]
    closed = ", ".join(f"{s['what']} {s['where']}: {s['got']}" for s in found if s not in open_)
    uid = int(c.seen.get("uid", 0))
    tried = "as root" if uid == 0 else f"as uid {uid}, the process's"
    if open_:
        return verdict(
            name,
            False,
            f"reachable from the process ({tried}): "
            + ", ".join(f"{s['what']} {s['where']}" for s in open_)
            + (f" (unreachable: {closed})" if closed else ""),
        )
    return verdict(name, True, f"no name-service daemon reachable ({tried}): {closed}")


def probe_name() -> str:
    return f"wgns-check-{secrets.token_hex(4)}.{PROBE_DOMAIN}"


def check_lookup(c: Context) -> Result:
    name = "lookup"
    if c.ns is None or c.facts is None:
        return _skip_without_ns(name)
    f = c.facts
    with open(f"{netns.etc_dir_of(c.ns)}/resolv.conf") as fh:
        tunnel_dns = nameservers(fh.read())
    have, _ = _seen_text(c, "resolv.conf")
    asks = nameservers(have) if have is not None else []
    problems = []
    foreign = [s for s in asks if s not in tunnel_dns]
    if foreign or not asks:
        problems.append(
            f"it asks {', '.join(asks) or '127.0.0.1 (no resolv.conf: glibc default)'}, "
            f"not only the tunnel's DNS ({', '.join(tunnel_dns) or 'none'})"
        )
    routes = []
    for server in asks[:3]:  # glibc asks at most three
        dev = route_get(c.ns, server)
        if dev not in f.wg_ifnames:
            problems.append(f"{server} is routed via {dev or 'nothing'}, not the tunnel")
        else:
            routes.append(f"{server} via {dev}")
    qname = probe_name()
    tx0, rx0 = tunnel_bytes(f)
    try:
        got = procview.call_in_process(c.target.pid, lambda: procview.lookup(qname), c.timeout)
    except procview.TimedOut:
        got = {"answered": False, "result": "no answer yet", "seconds": c.timeout}
    tx1, rx1 = tunnel_bytes(f)
    took = f"{float(got['seconds']) * 1000:.0f} ms"
    if got["answered"]:
        said = f"getaddrinfo({qname}) answered ({got['result']}) in {took}"
        if tx1 <= tx0 or rx1 <= rx0:
            problems.append("the tunnel's counters did not move: not answered through it")
    else:
        said = f"getaddrinfo({qname}) NOT answered ({got['result']}) after {took}"
    if routes:
        said += f", asking {', '.join(routes)}"
    moved = f"tunnel counters tx +{tx1 - tx0} B, rx +{rx1 - rx0} B"
    ok = bool(got["answered"]) and not problems
    return verdict(name, ok, "; ".join([*problems, said, moved]))


def check_exit(c: Context, url: str | None) -> Result:
    if url is None:
        return Result("exit", "skip", "no --echo-url given")
    procview.prepare_fetch()
    got = procview.call_in_process(
        c.target.pid, lambda: procview.fetch(url, c.timeout), c.timeout + 5
    )
    inside = got.get("body")
    birthplace = c.facts.rec.birthplace if c.facts is not None else None
    outside, err_out = fetch_in(url, c.timeout, birthplace)
    return exit_verdict(url, inside, str(got.get("error", "")), outside, err_out)


def _view(c: Context) -> dict[str, Any]:
    seen: dict[str, Any] = procview.call_in_process(
        c.target.pid,
        lambda: {
            "files": procview.read_resolver_files(),
            "sockets": procview.probe_sockets(),
            "uid": os.geteuid(),
        },
        _VIEW_TIMEOUT,
    )
    return seen


def run_process_checks(
    target: Target, *, echo_url: str | None = None, timeout: float = 5.0
) -> tuple[str | None, list[Result]]:
    """(the wgns namespace the process is in, or None; every check in ORDER)."""
    procview.proc_ns(target.pid)  # no such process: an error, not a list of failures
    c = Context(target, timeout)
    results: dict[str, Result] = {}

    def step(key: str, fn: Callable[[], Result], needs_view: bool = False) -> None:
        if needs_view and "error" in c.seen:
            results[key] = verdict(key, False, f"could not check: {c.seen['error']}")
            return
        try:
            results[key] = fn()
        except (WgnsError, OSError, ValueError) as e:
            results[key] = verdict(key, False, f"could not check: {e}")

    step("netns", lambda: check_netns(c))
    try:
        c.seen = _view(c)
    except (WgnsError, OSError, ValueError) as e:
        c.seen = {"error": str(e)}
    step("resolver", lambda: check_resolver(c), needs_view=True)
    step("backdoors", lambda: check_backdoors(c), needs_view=True)
    step("lookup", lambda: check_lookup(c), needs_view=True)
    step("exit", lambda: check_exit(c, echo_url))
    return c.ns, [results[k] for k in ORDER]


def process_report(target: Target, ns: str | None, results: Sequence[Result]) -> dict[str, Any]:
    return {
        "format": 1,
        "pid": target.pid,
        "unit": target.unit,
        "ns": ns,
        "ok": all(r.ok for r in results),
        "checks": [r.to_json() for r in results],
    }
