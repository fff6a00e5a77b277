"""`wgns confine` on this machine, where systemd is installed but is not PID 1: the drop-in as
systemd 252 itself parses it (`systemd-analyze verify`, for the unit shapes the issue names),
and every validation of the command, run for real (in the sandbox, whose /etc and /run are
private). The confined unit actually running in the tunnel is the VM's test (tests/vm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integrations import unitfiles
from tests.integrations.unitfiles import verify
from wgns.integrations.systemd.confine import HIDDEN_PATHS, confined_to, dropin_text
from wgns.testing.sandbox import REPO_ROOT, Sandbox

SERVICE = """\
[Unit]
Description=a service wgns confines
[Service]
ExecStart=/bin/sleep infinity
{extra}
"""
SHAPES = {
    "plain": "",
    "dynamic-user": "DynamicUser=yes",
    "protect-system-strict": "ProtectSystem=strict\nPrivateTmp=yes\nProtectHome=yes",
    "private-network": "PrivateNetwork=yes\nPrivateMounts=yes",
}
WGNS_TEMPLATE = "[Unit]\nDescription=wgns %i\n[Service]\nType=notify\nExecStart=/bin/true\n"


def test_the_dropin_says_what_the_contract_says() -> None:
    text = dropin_text("transmission.service", "media")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "[Unit]",
        "BindsTo=wgns@media.service",
        "After=wgns@media.service",
        "AssertPathIsMountPoint=/run/wgns/view/media/etc",
        "[Service]",
        "NetworkNamespacePath=/run/netns/media",
        "BindReadOnlyPaths=/run/wgns/view/media/etc:/etc",
        "InaccessiblePaths=-/run/nscd -/run/systemd/resolve -/run/avahi-daemon -/run/dbus",
    ]
    assert set(HIDDEN_PATHS) == {p.lstrip("-") for p in lines[-1].split("=", 1)[1].split()}
    assert confined_to(text) == "media"
    assert confined_to("[Service]\nNetworkNamespacePath=/run/netns/x\n") is None  # not ours


def test_docs_show_the_dropin_as_it_is_written() -> None:
    """docs/systemd.md explains the drop-in line by line: its example is the real text."""
    doc = Path(REPO_ROOT, "docs/systemd.md").read_text()
    assert "```ini\n" + dropin_text("transmission.service", "media") + "```" in doc


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("template", [False, True], ids=["unit", "template-instance"])
def test_systemd_analyze_verify_accepts_the_dropin(
    tmp_path: Path, shape: str, template: bool
) -> None:
    if not os.path.exists("/usr/bin/systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = "foo@bar.service" if template else "foo.service"
    (tmp_path / ("foo@.service" if template else unit)).write_text(
        SERVICE.format(extra=SHAPES[shape])
    )
    (tmp_path / "wgns@.service").write_text(WGNS_TEMPLATE)
    dropin = tmp_path / f"{unit}.d" / "wgns-confine.conf"
    dropin.parent.mkdir()
    dropin.write_text(dropin_text(unit, "media"))

    r = verify(tmp_path, unit)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr

    # the drop-in is read (the instance's own .d/ for a template): a bad line in it is seen
    dropin.write_text(dropin_text(unit, "media") + "BindReadOnlyPath=/x:/y\n")
    r = verify(tmp_path, unit)
    assert "BindReadOnlyPath" in r.stderr and str(dropin) in r.stderr


def _wgns(
    sandbox: Sandbox, *args: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path} if path else None
    return sandbox.run(
        [sys.executable, "-m", "wgns", *args],
        check=False,
        env=sandbox.python_env(env),
        cwd=REPO_ROOT,
    )


PROFILE = unitfiles.PROFILE.format(head="")


@pytest.mark.parametrize(
    ("args", "rc", "message"),
    [
        (
            ["foo.socket", "media"],
            2,
            "'foo.socket' is a socket unit: only services can be confined",
        ),
        (["wgns@media", "media"], 2, "is the unit of a wgns namespace itself"),
        (["wgns-physical@home", "media"], 2, "is physical mode's own unit: it cannot be"),
        (["foo@.service", "media"], 2, "'foo@.service' is a template: name an instance"),
        (["foo/bar", "media"], 2, "is not a valid systemd unit name"),
        (["foo", "a+b"], 1, "'+' and '=' are not allowed in a systemd unit name"),
        (["foo", "../x"], 2, "namespace"),
        (["foo", "nothere"], 2, "no profile 'nothere': neither /etc/wgns/nothere.toml nor"),
        (["foo", "other"], 2, "/etc/wgns/other.toml: name: brings up namespace 'elsewhere'"),
        (["foo", "media"], 1, "systemd is not running here (/run/systemd/system does not exist)"),
        (["foo"], 2, "which namespace?"),
        (["--remove", "foo", "media"], 2, "--remove takes only UNIT"),
        (["--remove", "foo"], 1, "systemd is not running here"),
    ],
)
def test_confine_refuses_clearly_and_touches_nothing(
    sandbox: Sandbox, args: list[str], rc: int, message: str
) -> None:
    sandbox.write_file("/etc/wgns/media.toml", PROFILE, mode=0o600)
    sandbox.write_file("/etc/wgns/other.toml", 'name = "elsewhere"\n' + PROFILE, mode=0o600)
    before = _listing(sandbox)
    r = _wgns(sandbox, "confine", *args)
    assert r.returncode == rc, r.stderr
    assert message in r.stderr
    assert r.stderr.startswith("wgns: ") and r.stderr.count("\n") == 1
    assert _listing(sandbox) == before


def _listing(sandbox: Sandbox) -> list[str]:
    root = sandbox.path("/etc/systemd/system")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# systemctl as a stand-in for PID 1, which this machine does not run: it answers `show` from
# files and logs every call, so that what `wgns confine` writes and says can be checked here.
FAKE_SYSTEMCTL = """\
#!/bin/sh
echo "$*" >> /run/fake-systemctl/calls
case "$1" in
show) unit=$(eval echo \\${$#})
      if [ -f "/run/fake-systemctl/$unit" ]; then cat "/run/fake-systemctl/$unit"
      else printf 'Id=%s\\nLoadState=not-found\\nActiveState=inactive\\n' "$unit"; fi;;
daemon-reload) ;;
*) exit 1;;
esac
"""


@pytest.fixture
def fake_systemd(sandbox: Sandbox) -> Any:
    sandbox.run(["mkdir", "-p", "/run/systemd/system", "/run/fake-systemctl/bin"])
    sandbox.write_file("/run/fake-systemctl/bin/systemctl", FAKE_SYSTEMCTL, mode=0o755)
    sandbox.write_file("/etc/wgns/media.toml", PROFILE, mode=0o600)
    sandbox.write_file("/etc/wgns/tv.toml", PROFILE, mode=0o600)

    def unit(name: str, active: str = "inactive", id: str | None = None) -> None:
        state = f"Id={id or name}\nLoadState=loaded\nActiveState={active}\n"
        sandbox.write_file(f"/run/fake-systemctl/{name}", state)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _wgns(sandbox, *args, path=f"/run/fake-systemctl/bin:{os.environ['PATH']}")

    def calls() -> list[str]:
        path = sandbox.path("/run/fake-systemctl/calls")
        return path.read_text().splitlines() if path.exists() else []

    return unit, run, calls


def test_confine_writes_the_dropin_reloads_and_remove_leaves_nothing(
    sandbox: Sandbox, fake_systemd: Any
) -> None:
    unit, run, calls = fake_systemd
    before = _listing(sandbox)
    r = run("confine", "nope", "media")
    assert r.returncode == 1 and "unit nope.service does not exist" in r.stderr
    assert calls() == ["show -p Id -p LoadState -p ActiveState -- nope.service"]

    unit("transmission.service")
    r = run("confine", "transmission", "media")
    assert r.returncode == 0, r.stderr
    path = "/etc/systemd/system/transmission.service.d/wgns-confine.conf"
    assert sandbox.read_text(path) == dropin_text("transmission.service", "media")
    assert r.stderr == (
        f"wgns: transmission.service confined to media ({path}); it starts "
        "wgns@media.service with it\n"
    )
    assert calls()[-1] == "daemon-reload"
    assert oct(sandbox.path(path).stat().st_mode & 0o777) == "0o644"

    # the same again: nothing to do, no reload
    n = len(calls())
    r = run("confine", "transmission.service", "media")
    assert r.returncode == 0 and "confined to media already" in r.stderr
    assert "daemon-reload" not in calls()[n:]

    # running, moved to another namespace: replaced, and it says so
    unit("transmission.service", active="active")
    r = run("confine", "transmission", "tv")
    assert r.returncode == 0, r.stderr
    assert "transmission.service was confined to media: now to tv" in r.stderr
    assert "is running in media until `systemctl restart transmission.service`" in r.stderr
    assert sandbox.read_text(path) == dropin_text("transmission.service", "tv")

    # the admin's own drop-in beside ours stays, and so does the .d dir
    sandbox.write_file("/etc/systemd/system/transmission.service.d/local.conf", "[Service]\n")
    r = run("confine", "--remove", "transmission")
    assert r.returncode == 0, r.stderr
    assert "is not confined to tv any more" in r.stderr
    assert "running in tv until `systemctl restart transmission.service`" in r.stderr
    assert not sandbox.path(path).exists()
    assert calls()[-1] == "daemon-reload"
    sandbox.run(["rm", "/etc/systemd/system/transmission.service.d/local.conf"])

    # a template instance gets its own .d/; --remove removes the dir it made
    unit("foo@bar.service")
    assert run("confine", "foo@bar", "media").returncode == 0
    assert sandbox.path("/etc/systemd/system/foo@bar.service.d/wgns-confine.conf").exists()
    r = run("confine", "--remove", "foo@bar.service")
    assert r.returncode == 0 and "is running" not in r.stderr
    sandbox.run(["rmdir", "/etc/systemd/system/transmission.service.d"])
    assert _listing(sandbox) == before

    # not confined by wgns: said, exit 0, nothing touched
    n = len(calls())
    r = run("confine", "--remove", "transmission")
    assert r.returncode == 0 and "is not confined by wgns: nothing to remove" in r.stderr
    assert "daemon-reload" not in calls()[n:]


def test_an_alias_is_confined_as_the_unit_it_names(sandbox: Sandbox, fake_systemd: Any) -> None:
    unit, run, _ = fake_systemd
    unit("sshd.service", id="ssh.service")
    r = run("confine", "sshd", "media")
    assert r.returncode == 0, r.stderr
    assert sandbox.path("/etc/systemd/system/ssh.service.d/wgns-confine.conf").exists()
    assert run("confine", "--remove", "sshd").returncode == 0
    assert not sandbox.path("/etc/systemd/system/ssh.service.d").exists()


def test_remove_of_a_unit_a_profile_confines_says_where(
    sandbox: Sandbox, fake_systemd: Any
) -> None:
    unit, run, calls = fake_systemd
    sandbox.write_file("/etc/wgns/tv.toml", 'units = ["kodi"]\n' + PROFILE, mode=0o600)
    unit("kodi.service")
    r = run("confine", "--remove", "kodi")
    assert r.returncode == 0
    assert "kodi.service is confined by the `units` key of /etc/wgns/tv.toml" in r.stderr
    assert "daemon-reload" not in calls()
