"""nix/package.nix agrees with pyproject.toml (name, version, build system, dependencies, the
command) and puts on wgns's PATH every program Debian's scripts/packages/core.txt installs for
wgns; both files parsed, the package evaluated by nix-instantiate with stand-ins for nixpkgs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.nixeval import HARNESS, REPO, evaluate, require_lib
from wgns.integrations.systemd import units

# Debian packages of core.txt that are not programs wgns runs (the interpreter is nixpkgs')
NOT_RUNTIME = {"python3", "python3-venv"}


def _name(requirement: str) -> str:
    """A PEP 508 requirement's distribution name, normalized (PEP 503)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


@pytest.fixture(scope="module")
def package() -> dict[str, Any]:
    require_lib()
    result: dict[str, Any] = evaluate(HARNESS / "package.nix")
    return result


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_name_version_and_command_are_pyproject_s(
    package: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    project = pyproject["project"]
    assert (package["pname"], package["version"]) == (project["name"], project["version"])
    assert package["pyproject"] is True
    assert [package["mainProgram"]] == list(project["scripts"])


def test_build_inputs_match_pyproject(package: dict[str, Any], pyproject: dict[str, Any]) -> None:
    assert package["build-system"] == [_name(r) for r in pyproject["build-system"]["requires"]]
    assert package["dependencies"] == [_name(r) for r in pyproject["project"]["dependencies"]]


def test_every_program_of_core_txt_is_on_wgns_s_path(package: dict[str, Any]) -> None:
    text = (REPO / "scripts" / "packages" / "core.txt").read_text()
    debian = {w for line in text.splitlines() for w in line.partition("#")[0].split()}
    # the nixpkgs attributes have the Debian packages' names
    assert debian - NOT_RUNTIME == set(package["runtime"])
    assert all(arg.startswith("--prefix PATH : ") for arg in package["makeWrapperArgs"])


def test_the_units_are_rendered_by_wgns(package: dict[str, Any], tmp_path: Path) -> None:
    """The package's postInstall, run as the build runs it (in the source tree, $out set), writes
    the wgns@.service and wgns-physical@.service scripts/install.sh writes, for $out/bin/wgns."""
    interpreter = "/nix/store/00000000000000000000000000000000-python3/bin/python3"
    script = package["postInstall"].replace(interpreter, sys.executable)
    out = tmp_path / "out"
    subprocess.run(
        ["bash", "-euc", script], cwd=REPO, env={**os.environ, "out": str(out)}, check=True
    )
    unit = out / "lib" / "systemd" / "system" / "wgns@.service"
    expected = units.render(units.TEMPLATES / units.UNIT_TEMPLATE, f"{out}/bin/wgns")
    assert unit.read_text() == expected
    assert f"ExecStart={out}/bin/wgns up --foreground %i" in expected
    # and physical mode's, which services.wgns.physical enables
    physical = out / "lib" / "systemd" / "system" / "wgns-physical@.service"
    wanted = units.render(units.TEMPLATES / units.PHYSICAL_TEMPLATE, f"{out}/bin/wgns")
    assert physical.read_text() == wanted


def test_the_flake_exposes_the_package_the_module_and_the_overlay() -> None:
    """flake.nix's outputs with a stand-in nixpkgs: packages for each system built from
    nix/package.nix, an overlay adding pkgs.wgns, and nixosModules.default using the flake's
    package for the system's platform (tests/integrations/nix/flake-outputs.nix)."""
    require_lib()
    out = evaluate(HARNESS / "flake-outputs.nix")
    assert out["inputs"] == ["nixpkgs"]
    for system in ("x86_64-linux", "aarch64-linux"):
        assert out["packages"][system] == {
            "default": f"package.nix-for-{system}",
            "wgns": f"package.nix-for-{system}",
        }
    assert out["overlay"] == "package.nix-for-x86_64-linux"
    assert out["modulePackage"] == "package.nix-for-x86_64-linux"
    rendered = out["moduleRendered"]
    assert rendered["packages"] == ["package.nix-for-x86_64-linux"]
    assert "wgns@media.service.d/overrides.conf" in rendered["units"]


def test_the_source_holds_what_the_build_reads_and_nothing_else() -> None:
    """The package's src filter, applied as Nix applies it (a directory left out is not entered),
    to this checkout: pyproject.toml, README.md (pyproject's readme), wgns/ without bytecode,
    scripts/systemd/ (the unit templates postInstall renders); no tests, docs, .git."""
    require_lib()
    entries = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        rel = Path(dirpath).relative_to(REPO)
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv")]
        entries += [{"path": str(rel / d), "type": "directory"} for d in dirnames]
        entries += [{"path": str(rel / f), "type": "regular"} for f in filenames]
    out = evaluate(HARNESS / "package.nix", files=json.dumps(entries))
    accepted = set(out["source"])
    kept = {
        e["path"]
        for e in entries
        if e["type"] == "regular"
        and all(str(parent) in accepted for parent in Path(e["path"]).parents if str(parent) != ".")
        and e["path"] in accepted
    }
    package = {str(p.relative_to(REPO)) for p in (REPO / "wgns").rglob("*.py")}
    templates = {str(p.relative_to(REPO)) for p in (REPO / "scripts" / "systemd").iterdir()}
    assert kept == {"pyproject.toml", "README.md"} | package | templates
    assert out["sourcePath"].endswith("-wgns-source")
