"""wgns.cli: argparse for every command, one line per error, exit codes 0/1/2/130."""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable

import pytest

from wgns import cli
from wgns.errors import ConfigError, WgnsError


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """A command `boom [--raise KIND] ARG` registered like the real ones; returns its calls."""
    calls: list[argparse.Namespace] = []
    failures: dict[str, Callable[[], Exception]] = {
        "wgns": lambda: WgnsError("it failed", hint="fix it"),
        "config": lambda: ConfigError("bad", path="/p.conf", line=3),
        "bug": lambda: RuntimeError("unexpected"),
        "ctrl-c": lambda: KeyboardInterrupt(),
    }

    def run(args: argparse.Namespace) -> int:
        calls.append(args)
        if args.fail:
            raise failures[args.fail]()
        return 0

    def register(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
        p = sub.add_parser("boom")
        common(p)
        p.add_argument("arg")
        p.add_argument("--fail", choices=sorted(failures))
        p.set_defaults(func=run)

    module = types.ModuleType("wgns_test_boom")
    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wgns_test_boom", module)
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "boom": "wgns_test_boom"})
    return calls


@pytest.mark.parametrize(
    "argv",
    [["boom", "x"], ["--debug", "boom", "x"], ["boom", "--debug", "x"], ["boom", "x", "--debug"]],
)
def test_debug_anywhere(boom: list[argparse.Namespace], argv: list[str]) -> None:
    assert cli.main(argv) == 0
    assert boom[-1].arg == "x" and boom[-1].debug == ("--debug" in argv)


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (["boom", "x", "--fail", "wgns"], 1, "wgns: it failed (fix it)"),
        (["boom", "x", "--fail", "config"], 2, "wgns: /p.conf:3: bad"),
        (
            ["boom", "x", "--fail", "bug"],
            1,
            "wgns: internal error: RuntimeError: unexpected (run with --debug for details)",
        ),
        (["boom", "x", "--fail", "ctrl-c"], 130, "wgns: interrupted"),
    ],
)
def test_one_line_per_error_and_its_exit_code(
    boom: list[argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    line: str,
) -> None:
    assert cli.main(argv) == code
    assert capsys.readouterr().err == line + "\n"
    # --debug: the traceback, then the same line (an internal error: the traceback is the line)
    assert cli.main([*argv, "--debug"]) == code
    err = capsys.readouterr().err
    if code == 130:
        assert err == line + "\n"
    elif "bug" in argv:
        assert err.startswith("Traceback (most recent call last):")
        assert err.endswith("RuntimeError: unexpected\n")
    else:
        assert err.startswith("Traceback (most recent call last):")
        assert err.endswith("\n" + line + "\n")


@pytest.mark.parametrize(
    "argv", [["boom"], ["boom", "x", "y"], ["boom", "x", "--fail", "nope"], ["nosuch"], []]
)
def test_usage_errors_exit_2_with_one_wgns_line(
    boom: list[argparse.Namespace], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and not boom
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("wgns: ") and lines[0].startswith("usage: wgns")


def test_up_and_down_go_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    """No hand-written parser any more: argparse's own errors and abbreviations."""
    with pytest.raises(SystemExit) as info:
        cli.main(["up", "a.conf", "--backend", "nope"])
    assert info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["down"])
    assert info.value.code == 2 and "required: NS" in capsys.readouterr().err
    parser = cli.build_parser()
    args = parser.parse_args(["up", "a.conf", "--rel", "--name=vpn"])  # argparse abbreviations
    assert (args.profile, args.reload, args.name, args.backend) == ("a.conf", True, "vpn", None)
    assert parser.parse_args(["down", "vpn", "--debug"]).ns == "vpn"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("wgns ")
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    shown = [name for name in cli.COMMANDS if name != "systemd-generator"]  # systemd runs it
    assert info.value.code == 0 and all(name in out for name in shown)
    assert "systemd-generator" not in out
