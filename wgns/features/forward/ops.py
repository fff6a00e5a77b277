"""The operations of a forward: one per resource, applied and undone by the one executor.

A forward is a handful of ops, each carrying the forward it serves (``forward``; None for the
profile's ``allow_host``): its port claim, the namespace's veth, forwarding on the interfaces
its remote sources arrive on, its DNAT table, its opening in the kill switch, its relay.
`wgns forward remove` undoes exactly the ops of one forward.

Some resources are shared by the forwards of a namespace; each op that needs one carries it,
and its undo lets go only when no op that stays journaled (``ctx.remaining``) needs it too:

* the veth (ForwardVeth): removed by the undo of the last ForwardVeth of the namespace;
* forwarding on an interface (ForwardIngress): released by the undo of the last op that
  holds that interface (across namespaces, wgns.system.sysctl restores the value once the last
  namespace lets go);
* the kill switch inside NS (ForwardOpening): rendered with the openings of every
  ForwardOpening journaled, on apply (this one included) and on undo (the remaining ones).

Everything else is owned whole by one op: a port claim, a DNAT table, a relay.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from wgns import log
from wgns.engine import state
from wgns.engine.ops import Context, Op
from wgns.errors import WgnsError
from wgns.features import killswitch
from wgns.features.forward import claims, ingress, spec
from wgns.profile.model import Forward
from wgns.system import names, netns, sysctl
from wgns.system.links import link_exists
from wgns.system.processes import Supervised, log_path, process_alive, remove_log, stop_process
from wgns.system.tools import checked, run

_PKG_PARENT = str(Path(__file__).resolve().parents[3])
_GONE = ("No such file", "does not exist", "Cannot find device", "Cannot open network namespace")


def run_gone_ok(argv: Sequence[str], *, ns: str | None = None) -> None:
    """Run a removal; "not there" is success."""
    proc = run(argv, ns=ns, check=False)
    if proc.returncode != 0 and not any(m in proc.stderr for m in _GONE):
        checked(proc)


def delete_table(table: str, *, ns: str | None = None) -> None:
    run_gone_ok(["nft", "delete", "table", "inet", table], ns=ns)


def _forward_of(op: Op) -> Forward | None:
    raw = getattr(op, "forward", None)
    return spec.from_json(raw) if isinstance(raw, dict) else None


def serves(op: Op, ns: str, key: str) -> bool:
    """OP is one of the ops of NS's forward KEY (``tcp/9091``)."""
    f = _forward_of(op) if isinstance(op, FORWARD_OPS) else None
    return f is not None and getattr(op, "ns", None) == ns and spec.key_of(f) == key


@dataclass(kw_only=True)
class ForwardPort(Op):
    """The claim of the host port (across namespaces). A claim whose owner has no record, or
    whose record does not list it, is stale (left by a crash or a record deleted by hand) and
    is taken over."""

    kind: ClassVar[str] = "forward_port"
    ns: str
    forward: dict[str, Any]

    def describe(self) -> str:
        f = spec.from_json(self.forward)
        return f"claim host port {spec.key_of(f)} for {self.ns}"

    def apply(self, ctx: Context) -> None:
        f = spec.from_json(self.forward)
        key = spec.key_of(f)
        owner = claims.claim_owner("port", key)
        if owner is not None and owner != self.ns:
            if _claim_listed(owner, key):
                raise WgnsError(
                    f"{f.proto.value} port {f.host_port} is already published by {owner}"
                )
            log.warning(
                "wgns: %s: the claim of %s port %s by %s is stale (not in its state record): "
                "taken over",
                self.ns, f.proto.value, f.host_port, owner,
            )  # fmt: skip
            if not claims.take_over("port", key, owner, self.ns):
                raise WgnsError(f"{f.proto.value} port {f.host_port} is already published")
        busy = claims.host_port_in_use(f)
        if busy is not None:
            raise WgnsError(
                f"{f.proto.value} port {f.host_port} is in use on the host ({busy})",
                hint="pick another HOST_PORT",
            )
        if not claims.claim("port", key, self.ns):
            raise WgnsError(f"{f.proto.value} port {f.host_port} is already published")
        self.result["claimed"] = True

    def undo(self, ctx: Context) -> None:
        claims.release("port", spec.key_of(spec.from_json(self.forward)), self.ns)


def _claim_listed(owner: str, key: str) -> bool:
    """OWNER's state record lists a claim of port KEY (an unreadable record counts as yes)."""
    try:
        rec = state.load(owner)
    except WgnsError:
        return True
    if rec is None:
        return False
    return any(serves(op, owner, key) for op in rec.find(ForwardPort))


def veth_addresses(ns: str) -> tuple[str, str] | None:
    """(host end, NS end) of NS's veth as it exists, None when it does not."""
    vh, _ = names.veth_ifnames(ns)
    for link in claims.ip_json_batch([f"addr show dev {vh}"], ["-4"]):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("prefixlen") == 31:
                host = str(a["local"])
                inner = str(ipaddress.IPv4Address(host) + 1)
                return host, inner
    return None


@dataclass(kw_only=True)
class ForwardVeth(Op):
    """NS's veth pair (one per namespace, shared), its /31 of the pool, the reply route inside
    NS, and the filter of what may cross its host end (with the profile's allow_host ports)."""

    kind: ClassVar[str] = "forward_veth"
    ns: str
    forward: dict[str, Any] | None = None
    allow_host: list[int] = field(default_factory=list)

    def describe(self) -> str:
        vh, vn = names.veth_ifnames(self.ns)
        extra = f", allow_host {self.allow_host}" if self.allow_host else ""
        return f"veth {vh} <-> {vn} in {self.ns} (shared by its forwards{extra})"

    def prepare(self, ctx: Context) -> None:
        # journaled before apply: undo removes only links this op or a sibling made, never a
        # link of the same name that was there for another reason
        vh, vn = names.veth_ifnames(self.ns)
        self.result["shared"] = veth_addresses(self.ns) is not None  # a sibling's veth
        self.result["vh_was_free"] = not link_exists(vh, ns=None)
        self.result["vn_was_free"] = not link_exists(vn, ns=self.ns)

    def apply(self, ctx: Context) -> None:
        ns = self.ns
        vh, vn = names.veth_ifnames(ns)
        found = veth_addresses(ns)
        if found is not None:  # made for another forward of NS
            self.result.update(host=found[0], inner=found[1])
        else:
            _, host, inner = claims.allocate(ns)
            self.result.update(host=host, inner=inner)
            ctx.checkpoint()  # the pool claim is ours: undo must know it even after a crash
            run(["ip", "link", "add", vh, "type", "veth", "peer", "name", vn, "netns", ns])
            for key, value in (
                (f"net/ipv6/conf/{vh}/disable_ipv6", "1"),
                (f"net/ipv4/conf/{vh}/route_localnet", "1"),  # 127.x sources may leave over it
                (sysctl.forwarding_key(vh), "1"),  # replies to remote sources
            ):
                sysctl.put(key, value)
            with netns.entered(ns):
                sysctl.put(f"net/ipv6/conf/{vn}/disable_ipv6", "1")
            run(["ip", "-b", "-"], input=f"address add {host}/31 dev {vh}\nlink set {vh} up\n")
            script = (
                f"address add {inner}/31 dev {vn}\nlink set {vn} up\n"
                f"route replace default via {host} dev {vn} table {spec.ROUTE_TABLE}\n"
                f"rule add pref {spec.RULE_PREF} from {inner} lookup {spec.ROUTE_TABLE}\n"
            )
            run(["ip", "-n", ns, "-b", "-"], input=script)
        run(["nft", "-f", "-"], input=spec.veth_ruleset(ns, self.allow_host, self.result["host"]))

    def undo(self, ctx: Context) -> None:
        if any(isinstance(op, ForwardVeth) and op.ns == self.ns for op in ctx.remaining):
            return  # another forward of NS still uses it
        ns = self.ns
        vh, vn = names.veth_ifnames(ns)
        shared = bool(self.result.get("shared"))
        delete_table(spec.veth_table_name(ns))
        if shared or self.result.get("vh_was_free", True):
            run_gone_ok(["ip", "link", "del", vh])  # takes its peer in NS with it
        inner = self.result.get("inner")
        if inner and ns not in ctx.doomed and netns.exists(ns):  # a doomed NS takes them along
            if shared or self.result.get("vn_was_free", True):
                run_gone_ok(["ip", "-n", ns, "link", "del", vn])
            with contextlib.suppress(WgnsError):  # gone with the route of its table
                run(["ip", "-n", ns, "rule", "del", "pref", str(spec.RULE_PREF), "from", inner,
                     "lookup", str(spec.ROUTE_TABLE)])  # fmt: skip
        if self.result.get("host"):
            claims.release("pool", self.result["host"], ns)


@dataclass(kw_only=True)
class ForwardIngress(Op):
    """IPv4 forwarding on every interface the forward's remote sources arrive on (found when
    applied, in ``result["held"]``: interface -> its value before wgns). Where it was off, a
    guard table lets only DNATed connections through."""

    kind: ClassVar[str] = "forward_ingress"
    ns: str
    forward: dict[str, Any]

    def describe(self) -> str:
        nets = ", ".join(str(n) for n in spec.remote_sources(spec.from_json(self.forward)))
        return f"IPv4 forwarding on the host's interfaces towards {nets}"

    def apply(self, ctx: Context) -> None:
        held: dict[str, str] = self.result.setdefault("held", {})
        devs = ingress.ingress_interfaces(spec.remote_sources(spec.from_json(self.forward)))
        if not devs:
            log.warning("wgns: %s: no interface of the host leads to %s", self.ns, self.describe())
        for dev in devs:
            if dev in held:
                continue
            key = sysctl.forwarding_key(dev)
            was_off = sysctl.get(key) == "0"
            held[dev] = ""
            ctx.checkpoint()
            if was_off:  # guarded before it is switched on
                run(["nft", "-f", "-"], input=spec.guard_ruleset(self.ns, dev))
            held[dev] = sysctl.hold(key, "1", self.ns)
            if held[dev] == "0" and not was_off:  # another namespace switched it on
                run(["nft", "-f", "-"], input=spec.guard_ruleset(self.ns, dev))
            ctx.checkpoint()

    def undo(self, ctx: Context) -> None:
        still = {
            dev
            for op in ctx.remaining
            if isinstance(op, ForwardIngress) and op.ns == self.ns
            for dev in op.result.get("held", {})
        }
        errors = []
        for dev in self.result.get("held", {}):
            if dev in still:
                continue  # a remaining forward of NS needs it
            try:
                delete_table(spec.guard_table_name(self.ns, dev))
                sysctl.release(sysctl.forwarding_key(dev), self.ns)
            except (OSError, WgnsError) as e:
                errors.append(f"forwarding on {dev}: {e}")
        if errors:
            raise WgnsError("; ".join(errors))


@dataclass(kw_only=True)
class ForwardDnat(Op):
    """The forward's own DNAT table in the main namespace, to NS's end of the veth."""

    kind: ClassVar[str] = "forward_dnat"
    ns: str
    forward: dict[str, Any]

    def describe(self) -> str:
        f = spec.from_json(self.forward)
        return f"nft table {spec.dnat_table_name(self.ns, f)}: DNAT of {spec.key_of(f)}"

    def apply(self, ctx: Context) -> None:
        found = veth_addresses(self.ns)
        if found is None:
            raise WgnsError(f"the forward veth of {self.ns} is missing")
        run(
            ["nft", "-f", "-"],
            input=spec.dnat_ruleset(self.ns, spec.from_json(self.forward), found[1]),
        )

    def undo(self, ctx: Context) -> None:
        delete_table(spec.dnat_table_name(self.ns, spec.from_json(self.forward)))


@dataclass(kw_only=True)
class ForwardOpening(Op):
    """The forward's opening in NS's kill switch: the table is rendered from ``killswitch``
    (the spec without openings) and the openings of every ForwardOpening of NS."""

    kind: ClassVar[str] = "forward_opening"
    ns: str
    forward: dict[str, Any] | None = None
    allow_host: list[int] = field(default_factory=list)
    killswitch: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        what = spec.key_of(spec.from_json(self.forward)) if self.forward else "allow_host"
        return f"kill switch of {self.ns}: open the veth for {what}"

    def _identity(self) -> tuple[str, str, list[int]]:
        return self.ns, spec.key_of(f) if (f := _forward_of(self)) else "", self.allow_host

    def apply(self, ctx: Context) -> None:
        # the executor journals (and saves) an op before applying it: the record lists this
        # one and every other opening of NS
        rec = state.load(ctx.ns)
        journaled = rec.find(ForwardOpening) if rec is not None else []
        others = [op for op in journaled if op._identity() != self._identity()]
        self._render([*others, self])

    def undo(self, ctx: Context) -> None:
        if self.ns in ctx.doomed or not netns.exists(self.ns):
            return
        self._render([op for op in ctx.remaining if isinstance(op, ForwardOpening)])

    def _render(self, ops: Sequence[ForwardOpening]) -> None:
        mine = [op for op in ops if op.ns == self.ns]
        fwds = [f for op in mine if (f := _forward_of(op)) is not None]
        allow = sorted({p for op in mine for p in op.allow_host})
        base = killswitch.Spec.from_json(self.killswitch)
        rendered = killswitch.Spec(
            table=base.table,
            wg_ifnames=base.wg_ifnames,
            ipv6=base.ipv6,
            openings=spec.openings(self.ns, fwds, allow),
        )
        run(["nft", "-f", "-"], input=rendered.render(), ns=self.ns)


def relay_log(ns: str, f: Forward) -> str:
    """Where the relay of NS's forward F writes its log (its supervisor's stderr)."""
    suffix = "" if f.proto.value == "tcp" else f"-{f.proto.value}"
    return log_path(ns, f"relay-{f.host_port}{suffix}")


class Relay(Supervised):
    """The relay of a forward: its supervisor (wgns.features.forward.supervise) runs in the
    host's namespace, where it listens, and reaches NS's end through ``--ns``. Ready when it
    says so on a pipe: the first line it writes there is "ready", or why it cannot listen."""

    def __init__(self, ns: str, f: Forward) -> None:
        super().__init__()
        self.ns = ns
        self.forward = f
        self.name = f"the relay of {spec.key_of(f)}"
        self._ready_r = self._ready_w = -1  # the pipe it answers on, while start() runs it
        self._said = b""
        self._heard = False  # a whole line, or the end of the pipe

    def is_supported(self) -> bool:
        return True

    def argv(self) -> list[str]:
        f = self.forward
        sources = spec.relay_sources(f)
        argv = [
            sys.executable, "-I", "-S", "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from wgns.features.forward.relayd import main; sys.exit(main(sys.argv[2:]))",
            _PKG_PARENT, "--supervise", "--ns", self.ns, "--proto", f.proto.value,
            "--port", str(f.host_port), "--target-port", str(f.ns_port),
            "--ready-fd", str(self._ready_w),
        ]  # fmt: skip
        for a in spec.relay_listen(sources):
            argv += ["--listen", a]
        for s in spec.relay_filters(sources):
            argv += ["--from", str(s)]
        return argv

    def pass_fds(self) -> tuple[int, ...]:
        return (self._ready_w,) if self._ready_w >= 0 else ()

    def start(self, ns: str | None, log_path: str) -> tuple[int, int | None]:
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        try:
            return super().start(ns, log_path)
        except BaseException:
            os.close(self._ready_r)
            self._ready_r, self._heard = -1, True
            raise
        finally:
            os.close(self._ready_w)  # the relay's copy is the only one left
            self._ready_w = -1

    def ready(self) -> bool:
        """It said "ready"; a WgnsError with its own words when it said why not. (Only its
        exit closes the pipe without a word: wait_ready then says how it exited.)"""
        while not self._heard:
            try:
                chunk = os.read(self._ready_r, 4096)
            except BlockingIOError:
                return False
            self._said += chunk
            if not chunk or b"\n" in self._said:
                self._heard = True
                os.close(self._ready_r)
                self._ready_r = -1
        said = self._said.decode(errors="replace").strip()
        if said and said != "ready":
            raise WgnsError(said)
        return said == "ready"


@dataclass(kw_only=True)
class ForwardRelay(Op):
    """The forward's relay process (``result``: pid, start time and log of its supervisor)."""

    kind: ClassVar[str] = "forward_relay"
    ns: str
    forward: dict[str, Any]

    def describe(self) -> str:
        f = spec.from_json(self.forward)
        listen = ", ".join(spec.relay_listen(spec.relay_sources(f)))
        return f"relay {spec.key_of(f)} ({listen}) -> {self.ns}:{f.ns_port}"

    def alive(self) -> bool:
        pid = int(self.result.get("pid", 0))
        return process_alive(pid, self.result.get("starttime"))

    def apply(self, ctx: Context) -> None:
        f = spec.from_json(self.forward)
        path = relay_log(self.ns, f)
        self.result["log"] = path
        relay = Relay(self.ns, f)
        pid, starttime = relay.start(None, path)  # it listens in the host's namespace
        self.result.update(pid=pid, starttime=starttime)
        ctx.checkpoint()  # before waiting: a SIGKILL of wgns now still leaves it journaled
        relay.wait_ready()

    def undo(self, ctx: Context) -> None:
        pid = int(self.result.get("pid", 0))
        if pid:
            stop_process(pid, self.result.get("starttime"))
        remove_log(relay_log(self.ns, spec.from_json(self.forward)))


FORWARD_OPS = (ForwardPort, ForwardVeth, ForwardIngress, ForwardDnat, ForwardOpening, ForwardRelay)
