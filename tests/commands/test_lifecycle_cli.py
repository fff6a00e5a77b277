"""`wgns up`'s container options (--pid, --container, --engine, --keep-interfaces): misuse is
a usage error before anything is asked or changed."""

from __future__ import annotations

import pytest

from wgns import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--engine", "docker"], "--engine goes with --pid or --container"),
        (["--keep-interfaces"], "--keep-interfaces goes with --pid or --container"),
        (["--pid", "1", "--engine", "docker"], "--engine goes with --container"),
        (["--pid", "1", "--foreground"], "--foreground does not go with --pid or --container"),
        (["--container", "web", "--name", "../x"], "invalid namespace name '../x'"),
    ],
)
def test_container_options_misused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["up", "/nonexistent/a.conf", *argv]) == 2
    assert message in capsys.readouterr().err


def test_pid_and_container_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["up", "a.conf", "--pid", "1", "--container", "web"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
