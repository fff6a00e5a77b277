"""How long `wgns exec NS -- true` takes, next to what people use today (issue 3).

    sudo python3 bench/bench_exec.py [-n 40] [--pip-script PATH]

Everything runs inside a private sandbox (wgns.testing.sandbox) with the simulated provider and a
namespace brought up by the real `wgns up`; the host is not touched. Each round runs every
variant once, in turn, so that load from anything else on the machine hits them alike. Printed:
the median, 10th and 90th percentile wall time of each variant, and the ratios the issue asks
for, against the double-sudo helper `sudo -E ip netns exec NS sudo -E -u "#UID" -g "#GID" CMD`
of the same run:

    wgns exec (launcher) / double-sudo helper     (target: <= 1.0)
    wgns exec (pip console script) / double-sudo helper   (reported)
    wgns exec / bare `ip netns exec`

"launcher" is this checkout's launcher as scripts/install.sh writes it (scripts/wgns-launcher.in:
the distribution's python3 -I -S). "pip console script" is what a plain `pip install` of wgns
gives: the bin/wgns script pip generates in a virtualenv (site-packages, wgns.cli); this
checkout is installed into a throw-away virtualenv for it (pip fetches setuptools and wheel for
the build from its configured index), unless --pip-script names one.

plus rows that explain the difference: the launcher's interpreter starting (`python3 -I -S -c
pass`), and the same with the modules `wgns exec` imports.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wgns.testing import launcher  # noqa: E402
from wgns.testing.isolation import SANDBOX_TMP  # noqa: E402
from wgns.testing.sandbox import Sandbox  # noqa: E402
from wgns.testing.sim.provider import build_provider  # noqa: E402

NS = "bench"
UID = GID = 4000
#: What `wgns exec` imports before it starts working (see `python3 -X importtime`).
EXEC_IMPORTS = "import wgns.commands.exec, wgns.system.execview, wgns.system.runas, _json"


def write_launcher(directory: str) -> str:
    """This checkout's launcher (wgns.testing.launcher), written to DIRECTORY/wgns."""
    path = os.path.join(directory, "wgns")
    with open(path, "w") as f:
        f.write(launcher.render())
    os.chmod(path, 0o755)
    return path


def pip_install(directory: str) -> str:
    """A plain (not editable) `pip install` of this checkout into a new virtualenv in DIRECTORY;
    the console script pip generated."""
    src = os.path.join(directory, "src")  # a copy: the build leaves build/ and *.egg-info behind
    os.makedirs(src)
    shutil.copytree(REPO / "wgns", os.path.join(src, "wgns"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    venv = os.path.join(directory, "venv")  # from the python3 users have, as the launcher's
    subprocess.run([launcher.interpreter(), "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q"]
    pip += ["--disable-pip-version-check", "--no-deps", src]
    subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(venv, "bin", "wgns")


# Runs inside the sandbox: times each variant N times, round-robin; prints JSON.
INNER = r"""
import json, os, statistics, subprocess, sys, time
variants = json.loads(sys.argv[1])
n = int(sys.argv[2])
os.chdir(sys.argv[3])  # `python -m wgns` finds this checkout from here, even under sudo
times = {name: [] for name in variants}
for name, (argv, env) in variants.items():  # warm-up: caches, page cache, pyc
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
for _ in range(n):
    for name, (argv, env) in variants.items():
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times[name].append(time.perf_counter() - t)
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
print(json.dumps({k: {"median": statistics.median(v), "p10": q(v, 0.1), "p90": q(v, 0.9)}
                  for k, v in times.items()}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="rounds (default 40)")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    ap.add_argument("--pip-script", metavar="PATH", help="a pip-generated bin/wgns to time")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wgns-bench-")
    os.chmod(work, 0o755)
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: str) -> int:

    # an installed wgns has its bytecode compiled; this checkout may not (PYTHONDONTWRITEBYTECODE)
    compileall.compile_dir(str(REPO / "wgns"), quiet=1)
    py = sys.executable
    sb = Sandbox.spawn()
    try:
        provider = build_provider(sb)
        passwd = sb.read_text("/etc/passwd")
        sb.write_file("/etc/passwd", passwd + f"bench:x:{UID}:{GID}::/tmp:/bin/sh\n")
        sb.write_file("/etc/group", sb.read_text("/etc/group") + f"bench:x:{GID}:\n")
        profile = f"{SANDBOX_TMP}/{NS}.conf"
        sb.write_file(profile, provider.client_conf(provider.new_client()), mode=0o600)
        env = sb.python_env(dict(os.environ))
        sb.run([py, "-m", "wgns", "up", profile, "--name", NS], env=env)

        # wgns as run by `sudo wgns ...` typed by user UID: sudo's variables name the user
        as_user = dict(env, SUDO_UID=str(UID), SUDO_GID=str(GID), SUDO_USER="bench")
        # what users run: the launcher of scripts/install.sh, and a plain pip install
        wgns = [write_launcher(work)]
        pip_script = args.pip_script or pip_install(work)
        pip_env = {k: v for k, v in as_user.items() if k != "PYTHONPATH"}  # its own copy
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "wgns exec": ([*wgns, "exec", NS, "--", "true"], as_user),
            "wgns exec (pip console script)": ([pip_script, "exec", NS, "--", "true"], pip_env),
        }
        sudo = shutil.which("sudo")
        if sudo:
            inner = [sudo, "-E", "-u", f"#{UID}", "-g", f"#{GID}", "true"]
            variants["double-sudo helper"] = ([sudo, "-E", "ip", "netns", "exec", NS, *inner], env)
        variants["bare ip netns exec"] = (["ip", "netns", "exec", NS, "true"], env)
        if sudo:
            variants["sudo wgns exec"] = (
                [sudo, "-E", *wgns, "exec", NS, "--user", f"#{UID}", "--", "true"],
                env,
            )
        # the same code started the slow way: site hooks, no launcher
        variants["python3 -m wgns exec (no launcher)"] = (
            [py, "-m", "wgns", "exec", NS, "--", "true"],
            as_user,
        )
        # where wgns exec's time goes, with the launcher's own interpreter: starting it, then
        # importing what `wgns exec` imports (the rest is the work: checks, mounts, exec)
        interp = launcher.interpreter()
        variants["interpreter: python3 -I -S -c pass"] = ([interp, "-I", "-S", "-c", "pass"], env)
        imports = f"import sys; sys.path.insert(0, {str(REPO)!r}); " + EXEC_IMPORTS
        variants["interpreter + wgns exec's imports"] = ([interp, "-I", "-S", "-c", imports], env)

        out = sb.run(
            [py, "-I", "-S", "-c", INNER, json.dumps(variants), str(args.n), str(REPO)],
            timeout=3600,
        )
        res = json.loads(out.stdout)
        sb.run([py, "-m", "wgns", "down", NS], env=env)
        provider.close()
    finally:
        sb.close()

    print(f"`wgns exec {NS} -- true` and friends, {args.n} rounds, inside a sandbox (ms):")
    print(f"{'':46} {'median':>8} {'p10':>8} {'p90':>8}")
    for name, r in res.items():
        print(f"{name:46} {r['median'] * 1e3:8.2f} {r['p10'] * 1e3:8.2f} {r['p90'] * 1e3:8.2f}")
    ours = res["wgns exec"]["median"]
    pip = res["wgns exec (pip console script)"]["median"]
    if "double-sudo helper" in res:
        ratio = ours / res["double-sudo helper"]["median"]
        verdict = "meets" if ratio <= 1.0 else "misses"
        print(f"ratio wgns exec / double-sudo helper: {ratio:.2f}  ({verdict} the <= 1.0 target)")
        ratio = pip / res["double-sudo helper"]["median"]
        print(f"ratio wgns exec (pip console script) / double-sudo helper: {ratio:.2f}")
    else:
        print("ratio wgns exec / double-sudo helper: n/a (sudo is not installed)")
    print(
        f"ratio wgns exec / bare ip netns exec:  {ours / res['bare ip netns exec']['median']:.2f}"
    )
    floor = res["interpreter: python3 -I -S -c pass"]["median"]
    imported = res["interpreter + wgns exec's imports"]["median"]
    print(
        f"of wgns exec's {ours * 1e3:.1f} ms: {floor * 1e3:.1f} ms starting the interpreter, "
        f"{(imported - floor) * 1e3:.1f} ms imports, {(ours - imported) * 1e3:.1f} ms the work "
        "(checks, user and environment, namespace, mounts, privileges, exec of the command)"
    )
    if args.json:
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
