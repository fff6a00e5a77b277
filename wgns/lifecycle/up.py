"""`up`, `down` and `--reload`: validate, plan, execute, record."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]

from wgns import log
from wgns.engine import state
from wgns.engine.executor import Executor, undo_journal
from wgns.engine.ops import run
from wgns.errors import ConfigError, WgnsError
from wgns.features import killswitch
from wgns.lifecycle import probe
from wgns.lifecycle.plan import Facts, down_hooks, plan_up
from wgns.profile import load as profile_load
from wgns.profile.model import Profile
from wgns.system import names, netns
from wgns.wireguard import backends, setconf

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from types import FrameType


class UpResult:
    """What `up` did. A plain class: a dataclass costs ~0.5 ms of start-up to create."""

    __slots__ = ("already_up", "backend", "ifnames", "ns")

    def __init__(self, ns: str, already_up: bool, backend: str, ifnames: tuple[str, ...]) -> None:
        self.ns = ns
        self.already_up = already_up
        self.backend = backend
        self.ifnames = ifnames


class Terminated(BaseException):
    """SIGTERM/SIGHUP during `up`: roll back like Ctrl-C does."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


class _rollback_on_signals:
    """SIGTERM and SIGHUP raise Terminated in the block. _signal, not signal: the latter builds
    its enums at import, and contextlib is not needed for two handlers."""

    def __enter__(self) -> None:
        self.old = {
            s: _signal.signal(s, _raise_terminated) for s in (_signal.SIGTERM, _signal.SIGHUP)
        }

    def __exit__(self, *exc_info: object) -> None:
        for s, h in self.old.items():
            _signal.signal(s, h)


def netns_files(profile: Profile) -> dict[str, str]:
    from wgns.features.dns import dns_files

    return dns_files(profile.dns, profile.dns_search, profile.name)


def gather_facts(profile: Profile) -> Facts:
    """Everything `up` needs to know, read-only: a profile that cannot work fails here."""
    if profile.birthplace is not None and not netns.exists(profile.birthplace):
        raise ConfigError(
            f"birthplace namespace {profile.birthplace!r} does not exist",
            path=profile.source,
            key="birthplace",
        )
    chosen = backends.select(profile.backend).name
    resolved = [probe.resolve_endpoints(i, where=profile.birthplace) for i in profile.interfaces]
    openings: tuple[killswitch.Opening, ...] = ()
    # else wgns.features.forward need not even be imported
    if profile.forwards or profile.allow_host:
        from wgns.features.forward import spec as forward

        openings = forward.openings(profile.name, profile.forwards, profile.allow_host)
    return Facts(
        ns_exists=netns.exists(profile.name),
        backend=chosen,
        mtus=probe.mtus_for(resolved, where=profile.birthplace),
        resolved={i.name: i for i in resolved},
        netns_files=netns_files(profile),
        openings=openings,
    )


def _forwards_json(profile: Profile) -> list[dict[str, object]]:
    if not profile.forwards:
        return []
    from wgns.features.forward import spec as forward

    return [forward.to_json(f) for f in profile.forwards]


def _new_record(profile: Profile, facts: Facts) -> state.Record:
    return state.Record(
        ns=profile.name,
        created_ns=not facts.ns_exists,
        profile=str(profile.source),
        backend=facts.backend,
        phase="starting",
        birthplace=profile.birthplace,
        birthplace_inode=netns.inode_of(profile.birthplace),
        interfaces=[
            {
                "label": i.name,
                "ifname": names.wg_ifname(profile.name, i.name),
                "addresses": [a.with_prefixlen for a in i.addresses],
                "mtu": facts.mtus[i.name],
            }
            for i in profile.interfaces
        ],
        ipv6="tunnelled" if profile.has_ipv6 else ("blocked" if profile.kill_switch else "open"),
        kill_switch=profile.kill_switch,
        extra={
            "down_hooks": down_hooks(profile),
            "nft_table": names.nft_table(profile.name),
            "forwards": _forwards_json(profile),
            # what `wgns check` renders the expected kill switch table from
            **(
                {"killswitch": killswitch.spec_for(profile, facts.openings).to_json()}
                if profile.kill_switch
                else {}
            ),
        },
    )


def up(profile: Profile, *, reload: bool = False) -> UpResult:
    ns = profile.name
    ifnames = tuple(names.wg_ifname(ns, i.name) for i in profile.interfaces)
    if not profile.kill_switch:
        log.warning(
            "wgns: WARNING: kill switch disabled for %s: if the tunnel fails, traffic leaves "
            "without it",
            ns,
        )
    for iface in profile.interfaces:
        if iface.save_config:  # wg-quick would rewrite the file at `down`: say that we will not
            log.warning(
                "wgns: %s: SaveConfig = true is ignored: wgns never writes the profile back "
                "(`wg showconf` inside the namespace shows the running configuration)",
                iface.name,
            )
    with state.locked(ns) as lock:
        rec = state.load(ns)
        if rec is not None and rec.phase == "up":
            if reload:
                _reload(profile, rec)
            return UpResult(ns, True, rec.backend, tuple(i["ifname"] for i in rec.interfaces))
        if rec is not None:
            log.info("wgns: %s: cleaning up after an interrupted run", ns)
            errors = undo_journal(rec)
            if errors:
                raise WgnsError(f"cannot clean up the interrupted run of {ns}: {'; '.join(errors)}")
            state.remove(ns)
        try:
            facts = gather_facts(profile)
        except BaseException:
            lock.release_files = True
            raise
        record = _new_record(profile, facts)
        ops = plan_up(profile, facts)
        with _rollback_on_signals():
            try:
                Executor(record).apply_all(ops)
            except BaseException:
                state.remove(ns)
                lock.release_files = True  # leave /run/wgns as it was before this `up`
                raise
            record.phase = "up"
            state.save(record)
    return UpResult(ns, False, facts.backend, ifnames)


def _reload(profile: Profile, rec: state.Record) -> None:
    """Apply key and peer changes without dropping the tunnel (`wg syncconf`)."""
    known = {i["label"]: i for i in rec.interfaces}
    if set(known) != {i.name for i in profile.interfaces}:
        raise WgnsError(
            f"{rec.ns}: the profile's interfaces changed; --reload applies peer changes only",
            hint=f"wgns down {rec.ns} && wgns up ...",
        )
    for iface in profile.interfaces:
        entry = known[iface.name]
        if [a.with_prefixlen for a in iface.addresses] != entry["addresses"]:
            log.warning("wgns: %s: addresses changed; they apply at the next up", iface.name)
        resolved = probe.resolve_endpoints(iface, where=rec.birthplace)
        where = rec.ns if rec.backend == "kernel" else None
        log.debug("[#] wg syncconf %s /dev/stdin", entry["ifname"])
        run(
            ["wg", "syncconf", entry["ifname"], "/dev/stdin"],
            input=setconf.setconf_text(resolved),
            ns=where,
        )


def load(ref: str, *, name: str | None, backend: str | None) -> Profile:
    return profile_load.load_profile(ref, name=name, backend=backend)
