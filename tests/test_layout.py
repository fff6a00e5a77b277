"""The layout shows the architecture: subpackages by layer, imports only downwards, no cycles,
modules small enough to read in one sitting, and tests that mirror the package.

Pure: reads the source with `ast`, imports nothing of wgns. docs/architecture.md draws the same
layers; when a layer is added, both change together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wgns"
MAX_LINES = 500

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS: dict[str, int] = {
    "wgns.errors": 0,
    "wgns.log": 0,
    "wgns.system": 1,
    "wgns.profile": 2,
    "wgns.wireguard": 3,
    "wgns.engine": 4,
    "wgns.features": 5,
    "wgns.lifecycle": 6,
    "wgns.integrations": 7,  # systemd: units, confinement drop-ins, the watchdog's service
    "wgns.testing": 8,  # the sandbox and the simulated provider: for tests and `wgns demo`
    "wgns.commands": 9,
    "wgns.cli": 9,
    "wgns.__main__": 9,
    "wgns": 9,  # wgns/__init__.py: the version only
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(mod: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{mod} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return LAYERS[best]


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(mod: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The wgns modules MOD imports (at any depth: function-level imports count too, they are
    dependencies all the same), with their line. Imports only for type checking are left out."""
    tree = ast.parse(path.read_text(), str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    yield from visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("wgns"):
                        yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if not base.startswith("wgns"):
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    yield (sub if sub in known else base), child.lineno
            yield from visit(child)

    yield from visit(tree)


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        m: {dep for dep, _ in imports_of(m, p, known) if dep != m and dep in known}
        for m, p in mods.items()
    }


def test_every_module_belongs_to_a_layer() -> None:
    for mod in modules():
        layer_of(mod)


def test_imports_only_go_down_the_layers() -> None:
    mods = modules()
    known = set(mods)
    upward = []
    for mod, path in mods.items():
        for dep, line in imports_of(mod, path, known):
            if dep in known and layer_of(dep) > layer_of(mod):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {mod} imports {dep}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _cycle_from(start: str, deps: dict[str, set[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(deps.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles() -> None:
    deps = graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    for mod in deps:
        deps[mod] = {d for d in deps[mod] if not mod.startswith(d + ".")}
    cycles = {tuple(c) for m in deps if (c := _cycle_from(m, deps))}
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in sorted(cycles))


def test_modules_are_small_enough_to_read_in_one_sitting() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checks above must be able to fail."""
    assert _cycle_from("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle_from("a", {"a": {"b"}, "b": set()}) is None


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from wgns.lifecycle import up\n")
    found = list(imports_of("wgns.system.m", src, {"wgns.lifecycle.up"}))
    assert found == [("wgns.lifecycle.up", 2)]
    assert layer_of("wgns.lifecycle.up") > layer_of("wgns.system.m")


@pytest.mark.parametrize("tests_dir", sorted(p for p in (ROOT / "tests").iterdir() if p.is_dir()))
def test_test_folders_mirror_the_package(tests_dir: Path) -> None:
    """tests/X/ holds the tests of wgns/X/ (tests/vm/ is the VM harness, tests/data shared data)."""
    if tests_dir.name in ("vm", "data", "__pycache__"):
        return
    assert (PACKAGE / tests_dir.name).is_dir(), f"tests/{tests_dir.name}/ mirrors no wgns package"


def test_test_files_have_names_of_their_own() -> None:
    """The test folders are not packages: pytest imports each file by its base name, so two
    files of one name in two folders stop the whole run at collection."""
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        other = seen.setdefault(path.name, path)
        assert other == path, f"{path.relative_to(ROOT)} and {other.relative_to(ROOT)}"
