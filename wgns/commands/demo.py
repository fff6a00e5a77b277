"""`wgns demo`: the whole product on any Linux machine, with no VPN account.

Inside a private sandbox (its own network and mount namespaces; nothing reaches the real
machine), build a simulated VPN provider, write a wg-quick config for it, and run the real
`wgns up`, `wgns exec`, `wgns status` and `wgns down` commands against it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wgns.errors import WgnsError

DEMO_NS = "wgns-demo"
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "demo",
        help="run wgns against a simulated VPN provider in a private sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.set_defaults(func=cmd_demo)


def self_argv() -> list[str]:
    """How to run this wgns as a command, the way the installed launcher does: isolated mode
    and no site-packages (wgns needs neither), so cached bytecode is used."""
    code = (
        f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); from wgns.cli import entry; entry()"
    )
    return [sys.executable, "-I", "-S", "-c", code]


def _wgns(args: Sequence[str], *, debug: bool) -> subprocess.CompletedProcess[str]:
    argv = [*self_argv(), *args, *(["--debug"] if debug else [])]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WgnsError(f"demo: `wgns {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def cmd_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise WgnsError("the demo creates namespaces: run it as root")
    from wgns.testing.sandbox import SANDBOX_TMP, Sandbox
    from wgns.testing.sim import build_provider

    t0 = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - t0:5.2f}s] {text}", flush=True)

    sandbox = Sandbox.enter_self()
    step("sandbox: private network + mount namespaces (tmpfs on /run, overlay on /etc)")
    provider = build_provider(sandbox)
    try:
        step(
            f"provider: WireGuard server {provider.endpoint_host} ({provider.endpoint_v4}), "
            f"DNS {provider.dns_v4} inside the tunnel, web server {provider.web_v4} "
            f"that answers with the caller's address"
        )
        profile = f"{SANDBOX_TMP}/{DEMO_NS}.conf"
        sandbox.write_file(
            profile,
            provider.client_conf(endpoint=f"{provider.endpoint_host}:51820"),
            mode=0o600,
        )
        step(f"profile: a wg-quick config from the provider, {profile} (mode 600):")
        for line in sandbox.read_text(profile).splitlines():
            if line.lower().startswith(("privatekey", "presharedkey")):
                line = line.split("=", 1)[0] + "= (hidden)"
            if line.strip():
                print(f"          {line}")
        t_up = time.monotonic()
        _wgns(["up", profile, "--name", DEMO_NS], debug=args.debug)
        step(f"wgns up {profile} --name {DEMO_NS}: up in {time.monotonic() - t_up:.2f}s")
        curl = ["curl", "-sS", "--max-time", "5", "http://whoami.test/"]
        inside4 = _wgns(["exec", DEMO_NS, "--", *curl, "-4"], debug=False).stdout.strip()
        inside6 = _wgns(["exec", DEMO_NS, "--", *curl, "-6"], debug=False).stdout.strip()
        outside = sandbox.run(
            ["curl", "-sS", "--max-time", "5", f"http://{provider.web_v4}/"]
        ).stdout.strip()
        step(
            f"inside {DEMO_NS}: `wgns exec {DEMO_NS} -- curl http://whoami.test/` is seen from "
            f"{inside4} and {inside6} (the provider's addresses); from the host itself: {outside}"
        )
        tunnel_dns = [q for q in provider.dns_queries() if q[0] == "whoami.test"]
        isp_dns = [q for q in provider.isp_dns_queries() if q[0] == "whoami.test"]
        step(
            f"DNS: whoami.test answered by the tunnel's resolver {provider.dns_v4} "
            f"({len(tunnel_dns)} queries there, {len(isp_dns)} at the ISP's resolver)"
        )
        if outside in (inside4, inside6) or not tunnel_dns or isp_dns:
            raise WgnsError("demo: traffic did not go through the tunnel as expected")
        print(_wgns(["status", DEMO_NS], debug=False).stdout.rstrip())
        _wgns(["down", DEMO_NS], debug=args.debug)
        left = [n for n in sandbox.netns_names() if n == DEMO_NS]
        step(f"wgns down {DEMO_NS}: {'nothing left' if not left else 'LEFT: ' + ', '.join(left)}")
    finally:
        provider.close()
        sandbox.close()
    step("sandbox closed: the machine is as it was")
    return 0
