"""The operation: one change to the system, as plain data with ``apply`` and ``undo``.

An op's dataclass fields are what the journal records (``to_json``), except the ones marked
``metadata={"journal": False}`` (what must never reach the record, e.g. keys). The executor
journals an op *before* applying it, so ``undo`` must tolerate an op that was never applied or
was half applied, and anything that is already gone: it raises only for real failures, which
the executor collects and reports.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wgns.errors import WgnsError

# Op kinds defined outside wgns.engine.ops, imported only when a journal names them
KIND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        (
            "forward_port",
            "forward_veth",
            "forward_ingress",
            "forward_dnat",
            "forward_opening",
            "forward_relay",
        ),
        "wgns.features.forward.ops",
    ),
    **dict.fromkeys(("down_hook", "link_reconfig", "wg_sync", "nft_replace"), "wgns.lifecycle.ops"),
    **dict.fromkeys(("etc_view", "etc_view_update"), "wgns.features.etcview"),
    **dict.fromkeys(("netns_attach", "netns_keep_routes"), "wgns.features.container"),
    "container_resolv": "wgns.features.containerdns",
    **dict.fromkeys(
        (
            "physical_link",
            "physical_phy",
            "physical_tunnel_move",
            "physical_tunnel_config",
            "physical_resolv_conf",
        ),
        "wgns.features.physical_ops",
    ),
    "physical_daemon": "wgns.features.physical_daemons",
    "physical_host_daemon": "wgns.features.physical_hostdaemons",
    "physical_unit": "wgns.features.physical_units",
    "physical_unit_stop": "wgns.features.physical_units",
    "physical_deadman": "wgns.lifecycle.physical_deadman",
}

# Kinds that journals of older versions of wgns name, and this one cannot undo any more
RETIRED_KINDS: dict[str, str] = {
    "forwards": "journaled by an older wgns (all forwards of a namespace in one entry), not "
    "supported any more: take the namespace down with that wgns, or reboot (records live in /run)",
    "ip_batch": "journaled by an older wgns (an `ip -b` batch), not supported any more: "
    "delete the namespace by hand (`ip netns del NS`) and remove the record",
}


@dataclass
class Context:
    """What an op is given by the executor, instead of callbacks attached to it.

    ``doomed``: namespaces that this same teardown deletes later and that hold no processes, so
    whatever lives only inside them goes with them. ``remaining``: the journaled ops that stay
    in the journal once this undo call is done (for resources shared between ops)."""

    ns: str  # the record's namespace
    doomed: frozenset[str] = frozenset()
    remaining: tuple[Op, ...] = ()
    on_checkpoint: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def checkpoint(self) -> None:
        """Persist the current op's ``result`` now: for facts learnt mid-apply (a daemon's pid
        before it is ready). A no-op outside an executor."""
        if self.on_checkpoint is not None:
            self.on_checkpoint()


@dataclass(kw_only=True)
class Op:
    """Base class: subclasses are kw_only dataclasses, registered by their ``kind``."""

    kind: ClassVar[str] = ""  # registry key; journaled as "kind"
    # An op may start work in apply() that finish() completes: the executor goes on with the
    # next ops meanwhile as long as they are ones that cannot let a packet flow (this flag), and
    # calls finish() before any other op, and at the end.
    beside_background: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[Op]]] = {}

    result: dict[str, Any] = field(default_factory=dict)  # facts learnt while applying

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kind"):
            Op.registry[cls.kind] = cls

    def describe(self) -> str:
        """One line saying what apply does; never a secret (dry-run and --debug print it)."""
        raise NotImplementedError

    def prepare(self, ctx: Context) -> None:
        """Record, in ``result``, what undo needs to know of the system before apply."""

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError

    def finish(self, ctx: Context) -> None:
        """Complete what apply() started in the background; raise as apply would."""

    def undo(self, ctx: Context) -> None:
        """Reverse apply; tolerate "never applied", "half applied" and "already gone"."""

    def to_json(self) -> dict[str, Any]:
        d = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("journal", True)
        }
        d["kind"] = self.kind
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Op:
        """The op a journal entry records. A WgnsError for an entry this wgns cannot read."""
        d = dict(d)
        kind = d.pop("kind", None)
        if not isinstance(kind, str):
            raise WgnsError(f"journal entry without a kind: {sorted(d)}")
        if kind in RETIRED_KINDS:
            raise WgnsError(f"journal entry {kind!r}: {RETIRED_KINDS[kind]}")
        if kind not in Op.registry and kind in KIND_MODULES:
            importlib.import_module(KIND_MODULES[kind])
        cls = Op.registry.get(kind)
        if cls is None:
            raise WgnsError(f"unknown journal entry {kind!r}")
        journaled = {f.name for f in dataclasses.fields(cls) if f.metadata.get("journal", True)}
        unknown = set(d) - journaled
        if unknown:
            raise WgnsError(f"journal entry {kind!r} has unknown fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise WgnsError(f"journal entry {kind!r} is incomplete: {e}") from None
