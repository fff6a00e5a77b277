"""The project's own contract: the README's set-up commands, CI running them, lint and types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```[a-z]*\n(.*?)```", text, re.S)]


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    head = text[: text.index("## ")]  # before the first section
    blocks = _code_blocks(head)
    assert len(blocks) == 2, blocks
    demo, tests = blocks
    assert demo == "./scripts/install.sh && wgns demo"
    assert tests.startswith("./scripts/install.sh --test && ")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run takes the command from the README itself: the same grep must find the second block
    pattern = re.search(r"grep -m1 -A0 -E '([^']+)' README\.md", ci)
    assert pattern is not None, "CI no longer reads its command from the README"
    lines = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if re.search(pattern.group(1), line)
    ]
    assert lines and lines[0] == _code_blocks((ROOT / "README.md").read_text())[1]


def test_ruff_is_clean() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
