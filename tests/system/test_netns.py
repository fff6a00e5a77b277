"""wgns.system.netns: namespace names, and entering / creating / deleting namespaces.

The kernel-facing tests run their code inside the test's private sandbox (`sandbox.python`),
where /run/netns is a private tmpfs: the host's namespaces are never touched."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgns.errors import ConfigError
from wgns.system import netns
from wgns.testing.sandbox import Sandbox

# The rule as it was once written with re (fullmatch: no newline may follow the name).
REFERENCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}")


@pytest.mark.parametrize(
    "name",
    ["a", "vpn", "0", "_x", "mullvad-se-sto.wg+1=@", "x" * 128, "a..", "A-b_C"],
)
def test_valid_names_are_accepted(name: str) -> None:
    assert netns.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../etc",
        "a/b",
        "-a",
        ".hidden",
        "x" * 129,
        "vpn\n",  # re's `$` once let a trailing newline through
        "vpn\x00",
        "v pn",
        "vpné",
        "vpn/",
    ],
)
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid namespace name") as info:
        netns.validate_name(name, path="/etc/wgns/x.toml", line=3)
    assert "/etc/wgns/x.toml:3" in str(info.value)
    assert "at most 128 characters" in str(info.value)


@given(st.text(alphabet=string.printable + "é\x00/", max_size=140))
def test_validate_name_agrees_with_the_reference_rule(name: str) -> None:
    expected = REFERENCE.fullmatch(name) is not None and name not in (".", "..")
    try:
        netns.validate_name(name)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == expected


ENTER_AND_LEAVE = r"""
import json, os
from wgns.system import netns
def here(): return os.stat("/proc/thread-self/ns/net").st_ino
home = here()
netns.add("t")
target = netns.inode_of("t")
seen = {"home": home, "target": target, "exists": netns.exists("t")}
with netns.entered("t"):
    seen["inside"] = here()
seen["after"] = here()
try:
    with netns.entered("t"):
        raise KeyError("boom")
except KeyError:
    seen["after_error"] = here()
with netns.entered(None):
    seen["none"] = here()
try:
    with netns.entered("missing"):
        pass
except FileNotFoundError:
    seen["missing_after"] = here()
seen["fds"] = sorted(os.listdir("/proc/self/fd"))
seen["deleted"] = netns.delete("t")
seen["deleted_again"] = netns.delete("t")
seen["exists_after_delete"] = netns.exists("t")
print(json.dumps(seen))
"""


def test_entered_switches_the_thread_and_always_returns(sandbox: Sandbox) -> None:
    seen = json.loads(sandbox.python(ENTER_AND_LEAVE).stdout)
    assert seen["exists"] is True
    assert seen["target"] != seen["home"]
    assert seen["inside"] == seen["target"]
    for key in ("after", "after_error", "none", "missing_after"):
        assert seen[key] == seen["home"], key
    assert len(seen["fds"]) <= 4, f"entered() leaked descriptors: {seen['fds']}"
    assert seen["deleted"] is True and seen["deleted_again"] is False
    assert seen["exists_after_delete"] is False
    assert "t" not in sandbox.netns_names()
