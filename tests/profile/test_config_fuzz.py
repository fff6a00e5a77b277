"""Fuzzing the parsers: any input gives a result or a ConfigError, and secrets never leak."""

from __future__ import annotations

import atexit
import base64
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgns.errors import ConfigError
from wgns.profile import conf, toml
from wgns.profile.conf import parse_conf
from wgns.profile.model import Interface, Profile
from wgns.profile.toml import parse_toml

DATA = Path(__file__).parent / "data"
SAMPLE_TEXTS = [p.read_text() for p in sorted(DATA.glob("*.conf"))]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every secret-free directory the TOML parser may read from: nothing in it (files are made
# per example in their own temporary directory).
_EMPTY_DIR = Path(tempfile.mkdtemp(prefix="wgns-fuzz-"))
atexit.register(shutil.rmtree, _EMPTY_DIR, ignore_errors=True)  # not one left per run

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())

# Characters that matter to the parsers, plus anything at all.
_SPECIAL = "[]=#,:/.% \t\r\n\v\f\0'\"{}-+x0123456789"
chars = st.one_of(st.sampled_from(list(_SPECIAL)), st.characters())


@st.composite
def mutated(draw: st.DrawFn, base: str) -> str:
    """BASE with a few random insertions, deletions, replacements and line swaps."""
    text = base
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "swap", "dup"]))
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        if op == "insert":
            text = text[:pos] + draw(st.text(chars, min_size=1, max_size=4)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
        elif op == "replace":
            text = text[:pos] + draw(chars) + text[pos + 1 :]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(j, lines[i])
            text = "\n".join(lines)
    return text


def check_error(err: ConfigError, secrets: Sequence[str] = ()) -> None:
    text = str(err)
    assert "\n" not in text
    assert err.exit_code == 2
    for secret in secrets:
        for start in range(0, len(secret) - 20):
            assert secret[start : start + 20] not in text, (secret, text)


def conf_result(text: str, secrets: Sequence[str] = ()) -> Interface | None:
    try:
        return parse_conf(text, path=Path("/fuzz/x.conf"), label="x")
    except ConfigError as e:
        check_error(e, secrets)
        return None


# --------------------------------------------------------------------------------------------
# .conf


@FUZZ
@given(st.text(chars, max_size=300))
def test_conf_random_text(text: str) -> None:
    conf_result(text)


@FUZZ
@given(st.sampled_from(SAMPLE_TEXTS).flatmap(mutated))
def test_conf_mutated_samples(text: str) -> None:
    conf_result(text)


# the keys the parser knows (its own tables, so new keys are fuzzed too), a lower-case
# spelling, and one it must refuse
_CONF_KEYS = [
    *conf.INTERFACE_KEYS,
    *conf.PEER_KEYS,
    "privatekey",
    "Foo",
]
_VALUES = [
    "",
    "0",
    "1",
    "65535",
    "65536",
    "off",
    "0x10",
    "auto",
    "main",
    "true",
    "false",
    "10.0.0.1/24",
    "fd00::1/64",
    "0.0.0.0/0, ::/0",
    "1.1.1.1 example.test",
    "[::1]:51820",
    "host.example:1",
    "1.2.3.4:0",
    "1420",
    "1280",
    "-1",
    "echo %i",
]


@st.composite
def structured_conf(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Well-formed lines with plausible and implausible values; returns (text, secrets)."""
    secrets: list[str] = []
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["[Interface]", "[Peer]", "[peer]", "[X]", "#"])))
            continue
        key = draw(st.sampled_from(_CONF_KEYS))
        if key in ("PrivateKey", "PresharedKey", "privatekey") or kind == 1:
            value = draw(keys)
            secrets.append(value)
            if draw(st.booleans()):
                value = draw(mutated(value))
        elif draw(st.booleans()):
            value = draw(st.sampled_from(_VALUES))
        else:
            value = draw(st.text(chars, max_size=20))
        sep = draw(st.sampled_from([" = ", "=", " =", "\t=\t", " ", ""]))
        lines.append(f"{key}{sep}{value}")
    return "\n".join(lines), secrets


@FUZZ
@given(structured_conf())
def test_conf_structured(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    conf_result(text, secrets)


@st.composite
def conf_with_secrets(draw: st.DrawFn) -> tuple[str, list[str]]:
    private, psk, other = draw(st.lists(keys, min_size=3, max_size=3, unique=True))
    text = (
        f"[Interface]\nPrivateKey = {private}\nAddress = 10.0.0.2/32\n\n"
        f"[Peer]\nPublicKey = {other}\nPresharedKey = {psk}\nAllowedIPs = 0.0.0.0/0\n"
        "Endpoint = 192.0.2.1:51820\n"
    )
    return draw(mutated(text)), [private, psk]


@FUZZ
@given(conf_with_secrets())
def test_conf_secrets_never_in_errors(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    iface = conf_result(text, secrets)
    if iface is not None:
        for secret in secrets:
            assert secret not in repr(iface)


# --------------------------------------------------------------------------------------------
# TOML


def toml_result(text: str, secrets: Sequence[str] = ()) -> Profile | None:
    try:
        return parse_toml(text, path=_EMPTY_DIR / "fuzz.toml")
    except ConfigError as e:
        check_error(e, secrets)
        return None


@st.composite
def toml_with_secrets(draw: st.DrawFn) -> tuple[str, list[str]]:
    private, psk, public = draw(st.lists(keys, min_size=3, max_size=3, unique=True))
    text = f"""name = "media"
backend = "auto"
kill_switch = true
dns = ["198.19.0.1"]
dns_search = ["example.test"]
allow_host = [3128]

[[interface]]
name = "wg0"
private_key = "{private}"
address = ["198.19.0.2/32", "2001:db8:ff::2/128"]
listen_port = 51820
fwmark = 0x1234
mtu = 1420
table = "auto"
  [[interface.peer]]
  public_key = "{public}"
  preshared_key = "{psk}"
  allowed_ips = ["0.0.0.0/0", "::/0"]
  endpoint = "vpn.example.test:51820"
  persistent_keepalive = 25

[[hook]]
when = "post-up"
run = "logger wgns up"
netns = "inside"

[[forward]]
host_port = 9091
ns_port = 9091
proto = "tcp"
from = ["127.0.0.0/8", "::1/128"]
mode = "nat"
"""
    return draw(mutated(text)), [private, psk]


@FUZZ
@given(st.text(chars, max_size=300))
def test_toml_random_text(text: str) -> None:
    toml_result(text)


@FUZZ
@given(toml_with_secrets())
def test_toml_mutated(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    profile = toml_result(text, secrets)
    if profile is not None:
        for secret in secrets:
            assert secret not in repr(profile)


_TOML_KEYS = sorted(
    {
        *toml.ROOT_KEYS,
        *toml.INTERFACE_KEYS,
        *toml.PEER_KEYS,
        *toml.HOOK_KEYS,
        *toml.FORWARD_KEYS,
        "bogus",  # one it must refuse
    }
)
_scalar = st.one_of(
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.sampled_from([*_VALUES, "tcp", "udp", "relay", "pre-up", "inside", "kernel"]),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=10),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return (
            '"'
            + "".join(
                c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value
            )
            + '"'
        )
    assert isinstance(value, list)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


_toml_values = st.one_of(_scalar, st.lists(_scalar, max_size=3))
_table = st.dictionaries(st.sampled_from(_TOML_KEYS), _toml_values, max_size=6)


@st.composite
def structured_toml(draw: st.DrawFn) -> str:
    """Syntactically valid TOML with our table names and keys and values of any type."""
    out = [
        f"{k} = {_toml_value(v)}"
        for k, v in draw(_table).items()
        if k not in ("interface", "hook", "forward", "peer")
    ]
    for header in draw(
        st.lists(
            st.sampled_from(
                ["[[interface]]", "[[interface.peer]]", "[[hook]]", "[[forward]]", "[extra]"]
            ),
            max_size=5,
        )
    ):
        out.append(header)
        out += [
            f"{k} = {_toml_value(v)}"
            for k, v in draw(_table).items()
            if k not in ("interface", "peer")
        ]
    return "\n".join(out) + "\n"


@FUZZ
@given(structured_toml())
def test_toml_structured(text: str) -> None:
    toml_result(text)
