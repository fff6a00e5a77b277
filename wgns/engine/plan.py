"""A plan (the ops a command would apply) as text: what `--dry-run` prints. No secrets: each
op's describe() never shows one."""

from __future__ import annotations

from collections.abc import Sequence

from wgns.engine.ops import Op


def render(ops: Sequence[Op]) -> list[str]:
    """One line per op, in the order the executor would apply them."""
    return [op.describe() for op in ops]
