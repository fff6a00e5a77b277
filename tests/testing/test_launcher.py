"""wgns.testing.launcher: the launcher as scripts/install.sh renders it."""

from __future__ import annotations

import os

from wgns.testing import launcher


def test_render_fills_in_the_interpreter_and_the_checkout() -> None:
    text = launcher.render()
    assert "@" not in text
    assert text.startswith(f"#!{launcher.interpreter()} -IS\n")
    assert f'sys.path.insert(0, "{launcher.REPO_ROOT}")' in text
    assert os.path.isfile(os.path.join(launcher.REPO_ROOT, "wgns", "__init__.py"))
