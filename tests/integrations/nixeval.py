"""What the Nix tests share: Debian's nix-instantiate (nix-bin) and a nixpkgs lib to evaluate
nix/module.nix with.

nixpkgs lib is looked for in this order: $WGNS_NIXPKGS_LIB (a lib directory, or a checkout
holding lib/), ``<nixpkgs/lib>`` on NIX_PATH (a NixOS user's own nixpkgs), then the snapshot at
../shared/nixpkgs-lib beside the checkout. Without nix-instantiate or any lib the tests skip
and say which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "integrations" / "nix"
ENV_LIB = "WGNS_NIXPKGS_LIB"
SNAPSHOT = REPO.parent / "shared" / "nixpkgs-lib"


#: nix's state (its database, gc roots) for the tests: evaluating needs none, but nix makes
#: /nix/var/nix on the machine unless told to put it elsewhere
STATE_DIR = os.path.join(tempfile.gettempdir(), f"wgns-nix-state-{os.getuid()}")


def _env() -> dict[str, str]:
    # Debian's nix.conf names a build-users group the package does not create: evaluating
    # builds nothing, so none is needed (and the warning it prints is noise)
    return {
        **os.environ,
        "NIX_CONFIG": "build-users-group =",
        "LC_ALL": "C.UTF-8",
        "NIX_STATE_DIR": STATE_DIR,
    }


def _lib_dir(path: Path) -> Path | None:
    for candidate in (path, path / "lib"):
        if (candidate / "default.nix").is_file() and (candidate / "modules.nix").is_file():
            return candidate
    return None


@cache
def find_lib() -> tuple[Path | None, str]:
    """(nixpkgs lib directory, where it came from) or (None, why there is none)."""
    if shutil.which("nix-instantiate") is None:
        return None, "nix-instantiate is not installed (Debian: apt-get install nix-bin)"
    given = os.environ.get(ENV_LIB)
    if given:
        found = _lib_dir(Path(given))
        if found is None:
            # named explicitly: a wrong path is an error, not a reason to skip
            raise AssertionError(f"${ENV_LIB}={given} holds no nixpkgs lib (lib/default.nix)")
        return found, f"${ENV_LIB}"
    r = subprocess.run(
        ["nix-instantiate", "--find-file", "nixpkgs/lib"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    if r.returncode == 0 and (found := _lib_dir(Path(r.stdout.strip()))) is not None:
        return found, "<nixpkgs/lib> on NIX_PATH"
    if (found := _lib_dir(SNAPSHOT)) is not None:
        return found, str(SNAPSHOT)
    return None, (
        f"no nixpkgs lib: set ${ENV_LIB}, put nixpkgs on NIX_PATH, or place the snapshot at "
        f"{SNAPSHOT}"
    )


def require_lib() -> Path:
    lib, why = find_lib()
    if lib is None:
        pytest.skip(why)
    return lib


needs_nix = pytest.mark.skipif(
    shutil.which("nix-instantiate") is None,
    reason="nix-instantiate is not installed (Debian: apt-get install nix-bin)",
)


def instantiate(*args: str) -> subprocess.CompletedProcess[str]:
    """nix-instantiate ARGS, without writing to the Nix store."""
    return subprocess.run(
        ["nix-instantiate", "--readonly-mode", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


def evaluate(file: Path, **args: str) -> Any:
    """FILE evaluated strictly, with string ARGS and libPath, as JSON."""
    argv = ["--eval", "--strict", "--json", str(file), "--argstr", "libPath", str(require_lib())]
    for key, value in args.items():
        argv += ["--argstr", key, value]
    r = instantiate(*argv)
    if r.returncode != 0:
        raise EvalError(r.stderr)
    return json.loads(r.stdout)


class EvalError(Exception):
    """The evaluation failed; the message is nix's."""


def evaluate_configs(*configs: Path) -> dict[str, Any]:
    """What NixOS would make of each configuration file (tests/integrations/nix/eval.nix), by
    file name, in one evaluation."""
    out = evaluate(HARNESS / "eval.nix", configs=json.dumps([str(c) for c in configs]))
    return {Path(item["file"]).name: item["result"] for item in out}


def refusal(tmp_path: Path, body: str) -> str:
    """nix's message (blanks folded) for the configuration `{ BODY }`, which must not evaluate."""
    config = tmp_path / "bad.nix"
    config.write_text(f"{{ {body} }}")
    with pytest.raises(EvalError) as e:
        evaluate_configs(config)
    return re.sub(r"\s+", " ", str(e.value))


def doc_blocks() -> list[str]:
    """The ```nix blocks of docs/nixos.md."""
    return re.findall(r"^```nix\n(.*?)^```", (REPO / "docs" / "nixos.md").read_text(), re.M | re.S)
