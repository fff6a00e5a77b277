"""`wgns up` and `wgns down`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgns.errors import UsageError, WgnsError
from wgns.system import netns

if TYPE_CHECKING:
    from wgns.features.container import Target
    from wgns.lifecycle.up import UpResult
    from wgns.profile.model import Profile


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "up",
        help="bring a confined namespace up from a profile",
        description="Create a network namespace whose only way out is the profile's WireGuard "
        "tunnel. PROFILE is a wg-quick .conf or a wgns .toml path, or a NAME found as "
        "/etc/wgns/NAME.toml or /etc/wgns/NAME.conf. Of a namespace already up: nothing, "
        "unless it is broken (its wireguard-go died, its interface or the namespace was "
        "deleted), which is repaired.",
    )
    common(p)
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument(
        "--name",
        metavar="NS",
        help="namespace name (default: the profile's; with --container, the container's)",
    )
    p.add_argument("--backend", choices=["auto", "kernel", "userspace"], default=None)
    p.add_argument(
        "--reload",
        action="store_true",
        help="when already up, apply the profile's changes without dropping the tunnel "
        "(peers, keys, AllowedIPs routes, addresses, MTU, DNS, kill switch, down hooks); "
        "a change that cannot be applied in place (interfaces, birthplace, backend, forwards) "
        "is refused by name and nothing is changed",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (one line per operation, no secrets) and change nothing",
    )
    p.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground: bring it up (a namespace already up is adopted, a broken "
        "one repaired), tell systemd it is ready (READY=1 on $NOTIFY_SOCKET), then watch and "
        "repair the tunnel in place until SIGTERM or Ctrl-C, and take it down; what "
        "wgns@.service runs (docs/systemd.md)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="put the tunnel into the network namespace of process PID (a container's), which "
        "wgns names NS and never deletes (docs/containers.md)",
    )
    where.add_argument(
        "--container",
        metavar="NAME",
        help="the same for the running Docker or Podman container NAME (the engine is asked for "
        "its PID only)",
    )
    p.add_argument(
        "--engine",
        choices=["docker", "podman"],
        help="with --container: ask only this engine (default: docker, then podman)",
    )
    p.add_argument(
        "--keep-interfaces",
        action="store_true",
        help="with --pid/--container: accept a namespace that has interfaces besides lo; they "
        "stay, closed by the kill switch (default: refused)",
    )
    p.set_defaults(func=cmd_up)

    d = sub.add_parser(
        "down",
        help="remove everything wgns created for a namespace",
        description="Undo exactly what `wgns up` did: PreDown hooks, then the journal in "
        "reverse, then PostDown hooks. A failing hook is reported (exit 1) but the teardown "
        "completes and the hook is not run again. A namespace that is the birthplace of "
        "another wgns namespace is refused, naming it: take that one down first.",
    )
    common(d)
    d.add_argument("ns", metavar="NS")
    d.set_defaults(func=cmd_down)


def target_of(args: argparse.Namespace) -> Target | None:
    """The process --pid or --container names (the engine asked now), None without them."""
    if args.pid is None and args.container is None:
        for option in ("engine", "keep_interfaces"):
            if getattr(args, option):
                raise UsageError(
                    f"--{option.replace('_', '-')} goes with --pid or --container",
                    hint="wgns up PROFILE --container NAME",
                )
        return None
    if args.engine and args.container is None:
        raise UsageError("--engine goes with --container", hint="wgns up PROFILE --container NAME")
    from dataclasses import replace

    from wgns.features.container import Target

    if args.container is not None:
        from wgns.integrations.containers import engines

        netns.validate_name(args.name or args.container)
        target = engines.find(args.container, engine=args.engine)
        if args.name is None:
            args.name = args.container
    else:
        target = Target(pid=args.pid)
    return replace(target, keep_interfaces=args.keep_interfaces)


def cmd_up(args: argparse.Namespace) -> int:
    target = target_of(args)
    if args.foreground:
        if target is not None:
            raise UsageError(
                "--foreground does not go with --pid or --container yet",
                hint="wgns up PROFILE --container NAME",
            )
        for option in ("dry_run", "reload"):
            if getattr(args, option):
                raise UsageError(
                    f"--foreground and --{option.replace('_', '-')} do not go together",
                    hint="`wgns up --reload NS` reloads a namespace a --foreground wgns watches",
                )
        return foreground(args.profile, name=args.name, backend=args.backend)
    if args.dry_run:
        return dry_run(
            args.profile, name=args.name, backend=args.backend, reload=args.reload, target=target
        )
    return up(args.profile, name=args.name, backend=args.backend, reload=args.reload, target=target)


def cmd_down(args: argparse.Namespace) -> int:
    return down(args.ns)


def dry_run(
    ref: str, *, name: str | None, backend: str | None, reload: bool, target: Target | None = None
) -> int:
    from wgns.engine.plan import render
    from wgns.lifecycle import up as lifecycle

    profile = lifecycle.load(ref, name=name, backend=backend)
    outcome, ops = lifecycle.plan(profile, reload=reload, target=target)
    for line in render(ops):
        print(line)
    what = {
        "up": "would bring it up",
        "already up": "it is already up: nothing to do (--reload plans the profile's changes)",
        "repaired": "it is broken: would remake what is broken (see `wgns status`)",
        "reloaded": "would reload it",
    }[outcome]
    print(f"wgns: dry run for {profile.name}: {what}; nothing was changed", file=sys.stderr)
    return 0


def up(
    ref: str, *, name: str | None, backend: str | None, reload: bool, target: Target | None = None
) -> int:
    from wgns.lifecycle import up as lifecycle

    profile = lifecycle.load(ref, name=name, backend=backend)
    report_up(lifecycle.up(profile, reload=reload, target=target))
    return 0


def report_up(result: UpResult) -> None:
    """The line `wgns up` prints for RESULT."""
    ns = result.ns
    if result.outcome == "already up":
        print(
            f"wgns: {ns} is already up (nothing changed; --reload applies profile changes)",
            file=sys.stderr,
        )
    elif result.outcome == "reloaded":
        print(f"wgns: {ns} reloaded: {'; '.join(result.notes)}", file=sys.stderr)
    else:
        what = f"({result.backend}, {', '.join(result.ifnames)})"
        if result.outcome == "repaired":
            print(
                f"wgns: {ns} was broken ({'; '.join(result.notes)}): repaired, up {what}",
                file=sys.stderr,
            )
        else:
            print(f"wgns: {ns} is up {what}", file=sys.stderr)


def down(ns: str) -> int:
    from wgns.lifecycle import down as teardown

    result = teardown.down(ns)
    if not result.managed:
        if netns.exists(ns):
            print(f"wgns: {ns} is not managed by wgns; left alone", file=sys.stderr)
        else:
            print(f"wgns: {ns} is not up", file=sys.stderr)
        return 0
    for e in result.hook_errors:
        print(f"wgns: down {ns}: {e}", file=sys.stderr)
    if result.errors:
        for e in result.errors:
            print(f"wgns: down {ns}: {e}", file=sys.stderr)
        raise WgnsError(
            f"{ns} was only partly removed ({len(result.errors)} error(s) above)",
            hint=f"fix them and run `wgns down {ns}` again",
        )
    if result.left:
        print(
            f"wgns: note: {len(result.left)} process(es) still in {ns} have lost their network "
            f"(pids {' '.join(map(str, result.left[:10]))})",
            file=sys.stderr,
        )
    if result.hook_errors:
        raise WgnsError(
            f"{ns} is down, but {len(result.hook_errors)} hook(s) failed (above); "
            "they will not be run again",
            hint="fix the hook in the profile",
        )
    return 0


EXIT_GONE = 3  # wgns@.service's RestartPreventExitStatus: someone else took it down


class Gone(WgnsError):
    """The namespace a --foreground wgns watched was taken down or deleted by someone else."""

    exit_code = EXIT_GONE


def foreground(ref: str, *, name: str | None, backend: str | None) -> int:
    """`wgns up --foreground`: up (adopt, repair), READY=1, the health loop, then down."""
    from wgns.lifecycle import up as lifecycle
    from wgns.lifecycle import watch
    from wgns.system import sdnotify

    def load() -> Profile:
        return lifecycle.load(ref, name=name, backend=backend)

    with watch.signals() as stop:  # from before `up`: a SIGTERM now is a `down` after it
        profile = load()
        claim = watch.claim(profile.name)  # before `up`: one loop per namespace
        result = lifecycle.up(profile)
        report_up(result)
        ns = result.ns
        outcome = watch.STOPPED
        if stop.signum is None:
            watcher = watch.Watcher(profile, load)
            sdnotify.notify(ready=1, status=f"{ns} is up")
            print(
                f"wgns: {ns}: watching its tunnel (SIGTERM or Ctrl-C takes it down)",
                file=sys.stderr,
            )
            outcome = watcher.run(stop)
        if outcome == watch.TAKEN_DOWN:
            raise Gone(f"{ns} was taken down by someone else", hint=f"wgns up {ref}")
        sdnotify.notify(stopping=1, status=f"taking {ns} down")
        rc = down(ns)  # signals stay noted, not raised: the teardown is never cut short
        claim.close()
    if outcome == watch.DELETED:
        raise Gone(
            f"{ns} was deleted outside wgns (its remains are cleared)", hint=f"wgns up {ref}"
        )
    return rc
