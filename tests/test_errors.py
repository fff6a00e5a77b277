"""wgns.errors: the user-facing error type."""

from __future__ import annotations

from wgns.errors import ConfigError, DamagedRecord, WgnsError


def test_config_error_names_file_line_and_key() -> None:
    e = ConfigError("bad value", path="/etc/wgns/vpn.conf", line=7, key="MTU", hint="use 1280..")
    assert str(e) == "/etc/wgns/vpn.conf:7: MTU: bad value (use 1280..)"
    assert e.exit_code == 2 and WgnsError("x").exit_code == 1


def test_damaged_record_is_one_line_with_the_file_and_the_fix() -> None:
    e = DamagedRecord("/run/wgns/vpn.json", "Expecting value: line 1 column 1 (char 0)")
    assert isinstance(e, WgnsError) and e.exit_code == 1 and e.path == "/run/wgns/vpn.json"
    assert str(e).startswith(
        "state record /run/wgns/vpn.json is damaged (Expecting value: line 1 column 1 (char 0)) ("
    )
    assert "\n" not in str(e) and "delete the file" in str(e)
