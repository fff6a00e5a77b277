"""Profile parsing: wg-quick ``.conf`` files and wgns TOML profiles into :class:`Profile`.

A ``.conf`` is read the way wg-quick reads it, in two passes, because that is where its quirks
come from. wg-quick's own loop (bash ``read -r``: NUL bytes dropped, spaces and tabs trimmed; keys
matched case-insensitively) takes the keys *it* consumes out of ``[Interface]``; every other line
goes on to ``wg setconf``, which deletes *all* whitespace from a line before matching it.
Mirroring both passes keeps ``wgns strip`` byte-exact and makes wgns accept (and reject) what
wg-quick would, while every error names the file, the line and the key.

Nothing here touches the system except reading the profile and the ``.conf`` and key files it
names. Secrets never reach a message: values are only ever echoed through :func:`_show`.
"""

from __future__ import annotations

import binascii  # not base64, a wrapper that imports struct too
import os
import re
import stat
from dataclasses import replace
from ipaddress import (
    IPv4Address,
    IPv6Address,
    ip_address,
    ip_interface,
    ip_network,
)

from wgns.errors import ConfigError
from wgns.profile.model import (
    Backend,
    Endpoint,
    Forward,
    ForwardMode,
    Hook,
    HookWhen,
    HookWhere,
    Interface,
    IPAddress,
    IPInterface,
    IPNetwork,
    Peer,
    Profile,
    Proto,
    Secret,
)
from wgns.system import netns, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]
    from collections.abc import Iterable
    from typing import Any

ETC_DIR = "/etc/wgns"  # paths are strings here: pathlib costs `wgns up` ~2 ms to import

MAX_PROFILE_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 4096

# Below 576 IPv4 itself is not guaranteed to work; the kernel drops IPv6 from any link whose MTU
# is below 1280, which would silently turn an IPv6 tunnel into a blackhole.
MTU_MIN = 576
MTU_MIN_IPV6 = 1280
MTU_MAX = 65535

KEY_ERROR = "not a valid WireGuard key (must be 44 base64 characters)"

# [[:space:]] in the C locale (wg-quick trims keys and values with it) and wg's char_is_space().
_SPACE = " \t\n\v\f\r"
# What bash `read` trims from a whole line with the default IFS.
_IFS = " \t"

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# Both bash (nocasematch, LC_ALL=C) and wg (strcasecmp) fold ASCII only; str.lower() would also
# fold e.g. the Kelvin sign into "k" and accept keys neither tool accepts.
def _lower(s: str) -> str:
    return s.translate(_LOWER)


# --------------------------------------------------------------------------------------------
# Errors


class _Invalid(Exception):
    """A bad value, before we know where it came from; :func:`_located` adds file/line/key."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _located:
    """Turn an _Invalid raised in the block into a ConfigError at PATH:LINE, KEY. A class, not
    a contextlib.contextmanager: contextlib is an import `wgns up` need not pay for."""

    def __init__(self, path: StrPath, line: int | None, key: str | None) -> None:
        self.path, self.line, self.key = path, line, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, e: BaseException | None, tb: object) -> None:
        if isinstance(e, _Invalid):
            raise ConfigError(
                e.message, path=self.path, line=self.line, key=self.key, hint=e.hint
            ) from None


# A run this long of base64 characters could be (part of) a key: never echo it.
# Patterns that a valid .conf never needs (errors, hex fwmarks, host names, TOML) are plain
# strings, compiled by re's own cache on first use: each compile costs 0.1 ms of start-up.
_SECRETISH = r"[A-Za-z0-9+/]{20,}=*"


def _plain(value: str, limit: int = 48) -> str:
    """A user-supplied value, safe to put into a one-line message: no secrets, no newlines."""
    value = re.sub(_SECRETISH, "<redacted>", value)
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)[1:-1]


def _show(value: str, limit: int = 48) -> str:
    return f"'{_plain(value, limit)}'"


def _suggest(key: str, choices: Iterable[str]) -> str | None:
    lowered = {_lower(c): c for c in choices}
    import difflib  # only for the error message

    close = difflib.get_close_matches(_lower(key), list(lowered), n=1, cutoff=0.75)
    return f"did you mean {lowered[close[0]]}?" if close else None


# --------------------------------------------------------------------------------------------
# Values shared by .conf and TOML

_DIGITS = re.compile(r"[0-9]+")  # not \d: that also matches non-ASCII digits
_HEX = r"0x[0-9a-fA-F]+"
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,63}")
_DNS_SERVER_SHAPE = re.compile(r"[0-9.]+|.*:.*", re.DOTALL)  # wg-quick's own test, verbatim
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"


def _uint(text: str, hi: int) -> int | None:
    """strtoul()-style decimal (leading zeros fine), or None when not a number in 0..hi."""
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > 20:
        return None
    n = int(text)
    return n if n <= hi else None


def _parse_key(value: str) -> str:
    """A base64 key exactly as wg's key_from_base64() accepts it (canonical encoding only)."""
    if len(value) != 44 or not value.endswith("=") or value.endswith("=="):
        raise _Invalid(KEY_ERROR)
    try:
        raw = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise _Invalid(KEY_ERROR) from None
    # wg rejects keys whose last character carries stray low bits; re-encoding catches those.
    if len(raw) != 32 or binascii.b2a_base64(raw, newline=False).decode("ascii") != value:
        raise _Invalid(KEY_ERROR)
    return value


def _port(text: str, *, lo: int = 0) -> int:
    n = _uint(text, 65535)
    if n is None or n < lo:
        raise _Invalid(f"{_show(text)} is not a port number ({lo}..65535)")
    return n


def _fwmark(text: str) -> int:
    if _lower(text) == "off":
        return 0
    n: int | None
    if re.fullmatch(_HEX, text):
        n = int(text, 16) if len(text[2:].lstrip("0")) <= 8 else None
    else:
        n = _uint(text, 0xFFFFFFFF)
    if n is None:
        raise _Invalid(f"{_show(text)} is neither off nor a number 0..0xffffffff")
    return n


def _keepalive(text: str) -> int:
    if _lower(text) == "off":
        return 0
    n = _uint(text, 65535)
    if n is None:
        raise _Invalid(f"{_show(text)} is neither off nor a number of seconds 0..65535")
    return n


def _mtu(text: str) -> int:
    n = _uint(text, MTU_MAX)
    if n is None or n < MTU_MIN:
        raise _Invalid(f"{_show(text)} is not an MTU ({MTU_MIN}..{MTU_MAX})")
    return n


_TABLE_NAMES = {"main": "254", "local": "255", "default": "253"}


def _table(text: str) -> str | None:
    """wg-quick compares Table case-sensitively (nocasematch is off by then): mirror that."""
    if text in ("", "auto"):
        return None
    if text == "off":
        return "off"
    if text in _TABLE_NAMES:
        return _TABLE_NAMES[text]
    n = _uint(text, 0xFFFFFFFF)
    if n is None or n == 0:
        raise _Invalid(
            f"{_show(text)} is not a routing table",
            hint="use auto, off, main, or a table number 1..4294967295",
        )
    return str(n)


def _no_scope(text: str) -> None:
    if "%" in text:
        raise _Invalid(f"{_show(text)}: scoped (%) addresses are not supported")


def _address(text: str) -> IPInterface:
    """An interface address as `ip address add` takes it; no prefix means a single host."""
    _no_scope(text)
    try:
        return ip_interface(text)
    except ValueError:
        raise _Invalid(f"{_show(text)} is not an IP address with an optional /prefix") from None


def _allowed_ip(text: str) -> IPNetwork:
    """One AllowedIPs entry as wg parses it: inet_pton() address, optional decimal /cidr."""
    ip_text, slash, cidr_text = text.partition("/")
    _no_scope(ip_text)
    try:
        ip: IPAddress = IPv6Address(ip_text) if ":" in ip_text else IPv4Address(ip_text)
    except ValueError:
        raise _Invalid(f"{_show(text)} is not an IP address with an optional /prefix") from None
    cidr = _uint(cidr_text, ip.max_prefixlen) if slash else ip.max_prefixlen
    if cidr is None:
        raise _Invalid(f"{_show(text)} has an invalid prefix length (0..{ip.max_prefixlen})")
    # wg accepts host bits and the kernel masks them off; store what the kernel will use.
    return ip_network(f"{ip}/{cidr}", strict=False)


def _hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(re.fullmatch(_HOST_LABEL, p) for p in name.split("."))


def _endpoint(text: str) -> Endpoint:
    """wg's parse_endpoint(): [host]:port, or host:port split at the *last* colon."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _Invalid(f"{_show(text)} has no closing ']'")
        if not rest.startswith(":") or len(rest) == 1:
            raise _Invalid(f"{_show(text)} has no port", hint="write [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not port_text:
            raise _Invalid(f"{_show(text)} has no port", hint="write HOST:PORT")
    is_ip = True
    try:
        ip_address(host)
    except ValueError:
        is_ip = False
    if not is_ip and not _hostname(host):
        raise _Invalid(f"{_show(host)} is neither an IP address nor a host name")
    return Endpoint(host=host, port=_port(port_text, lo=1))


def _dns_server(text: str) -> IPAddress:
    _no_scope(text)
    try:
        return ip_address(text)
    except ValueError:
        raise _Invalid(f"{_show(text)} is not a DNS server IP address") from None


def _search_domain(text: str) -> str:
    if not _hostname(text):
        raise _Invalid(f"{_show(text)} is not a DNS search domain")
    return text


def _label(text: str) -> str:
    if not _LABEL.fullmatch(text):
        raise _Invalid(
            f"{_show(text)} is not a valid interface label",
            hint="use letters, digits and _ . + = @ - (at most 64 characters)",
        )
    return text


def _uniq(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# wg-quick .conf: pass 1 (wg-quick's parse_options) and `wg-quick strip`

_QUICK_KEYS = {
    "address": "Address",
    "mtu": "MTU",
    "dns": "DNS",
    "table": "Table",
    "preup": "PreUp",
    "predown": "PreDown",
    "postup": "PostUp",
    "postdown": "PostDown",
    "saveconfig": "SaveConfig",
}
_HOOK_KEYS = {
    "PreUp": HookWhen.PRE_UP,
    "PostUp": HookWhen.POST_UP,
    "PreDown": HookWhen.PRE_DOWN,
    "PostDown": HookWhen.POST_DOWN,
}


# The parser's scratch records are plain classes: every dataclass costs ~0.5 ms of each
# `wgns up` to create (its methods are exec()'d), and these never leave this module.
class _QuickLine:
    __slots__ = ("has_equals", "key", "number", "value")

    def __init__(self, number: int, key: str, value: str, has_equals: bool) -> None:
        self.number = number
        self.key = key  # canonical spelling
        self.value = value
        self.has_equals = has_equals


def _read_lines(text: str) -> list[tuple[int, str]]:
    """The numbered lines `while read -r line || [[ -n $line ]]` hands wg-quick's loop."""
    parts = text.replace("\0", "").split("\n")  # bash drops NUL bytes while reading
    tail = parts.pop().strip(_IFS)
    lines = [(n, p.strip(_IFS)) for n, p in enumerate(parts, 1)]
    if tail:  # a last line without a newline only counts when something is left of it
        lines.append((len(parts) + 1, tail))
    return lines


def _quick_split(line: str) -> tuple[str, str, bool]:
    """wg-quick's key/value split: comment cut, split at the first '=', [[:space:]] trimmed."""
    stripped = line.split("#", 1)[0]
    key, eq, value = stripped.partition("=")
    # Without '=' wg-quick's "${stripped#*=}" is the whole line: the value equals the key.
    return key.strip(_SPACE), (value if eq else stripped).strip(_SPACE), bool(eq)


def _wg_quick_pass(text: str) -> tuple[list[_QuickLine], list[tuple[int, str]]]:
    """Split into the lines wg-quick consumes and the lines it passes on to `wg setconf`."""
    consumed: list[_QuickLine] = []
    rest: list[tuple[int, str]] = []
    in_interface = False
    for number, line in _read_lines(text):
        key, value, has_equals = _quick_split(line)
        lowered = _lower(key)
        if key.startswith("["):
            in_interface = False
        if lowered == "[interface]":
            in_interface = True
        canonical = _QUICK_KEYS.get(lowered)
        if in_interface and canonical is not None:
            consumed.append(_QuickLine(number, canonical, value, has_equals))
            continue
        rest.append((number, line))
    return consumed, rest


def strip_conf(text: str, *, path: StrPath | None = None) -> str:
    """Exactly what `wg-quick strip` prints for a file with this content.

    wg-quick dies (printing nothing) on a SaveConfig that is neither true nor false; so do we.
    PATH only goes into that error.
    """
    consumed, rest = _wg_quick_pass(text)
    for q in consumed:
        if q.key == "SaveConfig" and _lower(q.value) not in ("true", "false"):
            raise ConfigError(
                f"{_show(q.value)} is neither true nor false", path=path, line=q.number, key=q.key
            )
    # wg-quick appends "$line\n" per line, then `echo "$WG_CONFIG"` adds one more newline.
    return "".join(line + "\n" for _, line in rest) + "\n"


# --------------------------------------------------------------------------------------------
# wg-quick .conf: pass 2 (wg's config_read_line) and assembly

_WG_INTERFACE_KEYS = {"privatekey": "PrivateKey", "listenport": "ListenPort", "fwmark": "FwMark"}
_WG_PEER_KEYS = {
    "publickey": "PublicKey",
    "presharedkey": "PresharedKey",
    "allowedips": "AllowedIPs",
    "endpoint": "Endpoint",
    "persistentkeepalive": "PersistentKeepalive",
}
_ALL_INTERFACE_KEYS = [*_WG_INTERFACE_KEYS.values(), *_QUICK_KEYS.values()]


class _PeerDraft:
    __slots__ = ("allowed_ips", "endpoint", "keepalive", "line", "preshared_key", "public_key")

    def __init__(self, line: int) -> None:
        self.line = line
        self.public_key: str | None = None
        self.preshared_key: Secret | None = None
        self.allowed_ips: list[IPNetwork] = []
        self.endpoint: Endpoint | None = None
        self.keepalive: int | None = None


class _InterfaceDraft:
    __slots__ = ("fwmark", "line", "listen_port", "peers", "private_key")

    def __init__(self) -> None:
        self.line: int | None = None  # of the first [Interface] header
        self.private_key: Secret | None = None
        self.listen_port: int | None = None
        self.fwmark: int | None = None
        self.peers: list[_PeerDraft] = []


def _wg_line(
    draft: _InterfaceDraft,
    section: str | None,
    number: int,
    line: str,
    path: StrPath,
) -> str | None:
    """Apply one line the way `wg setconf` would; returns the section now in force."""
    content = "".join(c for c in line.split("#", 1)[0] if c not in _SPACE)
    if not content:
        return section
    lowered = _lower(content)
    if lowered == "[interface]":
        if draft.line is None:
            draft.line = number
        return "interface"
    if lowered == "[peer]":
        draft.peers.append(_PeerDraft(line=number))
        return "peer"
    if content.startswith("["):
        raise ConfigError(
            f"unknown section {_show(content)}",
            path=path,
            line=number,
            hint="a .conf has only [Interface] and [Peer] sections",
        )
    key, eq, value = content.partition("=")
    if not eq:
        raise ConfigError("not a section header or KEY = VALUE line", path=path, line=number)
    lowered = _lower(key)
    if section == "interface":
        known = _WG_INTERFACE_KEYS
    elif section == "peer":
        known = _WG_PEER_KEYS
    else:
        raise ConfigError(
            "key outside of any section",
            path=path,
            line=number,
            key=_plain(key),
            hint="put it under [Interface] or [Peer]",
        )
    canonical = known.get(lowered)
    if canonical is None:
        raise _unknown_wg_key(key, line, section, path, number)
    if not value:
        raise ConfigError("has no value", path=path, line=number, key=canonical)
    with _located(path, number, canonical):
        if section == "interface":
            if canonical == "PrivateKey":
                draft.private_key = Secret(_parse_key(value))
            elif canonical == "ListenPort":
                draft.listen_port = _port(value)
            else:
                draft.fwmark = _fwmark(value)
        else:
            peer = draft.peers[-1]
            if canonical == "PublicKey":
                peer.public_key = _parse_key(value)
            elif canonical == "PresharedKey":
                peer.preshared_key = Secret(_parse_key(value))
            elif canonical == "AllowedIPs":
                peer.allowed_ips.extend(_allowed_ip(v) for v in value.split(","))
            elif canonical == "Endpoint":
                peer.endpoint = _endpoint(value)
            else:
                peer.keepalive = _keepalive(value)
    return section


def _unknown_wg_key(key: str, line: str, section: str, path: StrPath, number: int) -> ConfigError:
    lowered = _lower(key)
    if section == "interface" and lowered in _QUICK_KEYS:
        # wg-quick skipped it: either its key had inner spaces or the header did.
        quick_key, _, _ = _quick_split(line)
        hint = (
            "write the section header exactly as [Interface]"
            if _lower(quick_key) == lowered
            else "write the key without spaces inside it"
        )
        return ConfigError(
            "wg-quick would not read this line",
            path=path,
            line=number,
            key=_QUICK_KEYS[lowered],
            hint=hint,
        )
    if section == "peer" and lowered in _QUICK_KEYS:
        return ConfigError(
            "belongs in [Interface], not [Peer]",
            path=path,
            line=number,
            key=_QUICK_KEYS[lowered],
        )
    choices = _ALL_INTERFACE_KEYS if section == "interface" else list(_WG_PEER_KEYS.values())
    section_name = "[Interface]" if section == "interface" else "[Peer]"
    return ConfigError(
        f"unknown key in {section_name}",
        path=path,
        line=number,
        key=_plain(key),
        hint=_suggest(key, choices),
    )


def _split_words(value: str) -> list[str]:
    """wg-quick's unquoted ${value//,/ }: commas become spaces, then IFS word splitting."""
    return [w for w in re.split(r"[ \t\n,]+", value) if w]


def parse_conf(text: str, *, path: StrPath, label: str) -> Interface:
    """A wg-quick .conf as one :class:`Interface` labelled LABEL; raises ConfigError."""
    consumed, rest = _wg_quick_pass(text)
    draft = _InterfaceDraft()
    section: str | None = None
    for number, line in rest:
        section = _wg_line(draft, section, number, line, path)

    addresses: list[IPInterface] = []
    dns: list[IPAddress] = []
    search: list[str] = []
    hooks: list[Hook] = []
    mtu: int | None = None
    mtu_line: int | None = None
    table: str | None = None
    save_config = False
    for q in consumed:
        if not q.has_equals:
            raise ConfigError(f"expected {q.key} = VALUE", path=path, line=q.number, key=q.key)
        with _located(path, q.number, q.key):
            if q.key == "Address":
                for word in _split_words(q.value):
                    addr = _address(word)
                    if addr in addresses:
                        raise _Invalid(f"duplicate address {addr}")
                    addresses.append(addr)
            elif q.key == "DNS":
                for word in _split_words(q.value):
                    if _DNS_SERVER_SHAPE.fullmatch(word):
                        dns.append(_dns_server(word))
                    else:
                        search.append(_search_domain(word))
            elif q.key == "MTU":
                mtu, mtu_line = (_mtu(q.value), q.number) if q.value else (None, None)
            elif q.key == "Table":
                table = _table(q.value)
            elif q.key == "SaveConfig":
                if _lower(q.value) not in ("true", "false"):
                    raise _Invalid(f"{_show(q.value)} is neither true nor false")
                save_config = _lower(q.value) == "true"
            elif q.value:  # an empty hook is a no-op for wg-quick too
                hooks.append(Hook(_HOOK_KEYS[q.key], q.value, HookWhere.BIRTHPLACE, q.number))

    if draft.line is None:
        raise ConfigError("no [Interface] section", path=path)
    if draft.private_key is None:
        raise ConfigError(
            "missing in [Interface]",
            path=path,
            line=draft.line,
            key="PrivateKey",
            hint="generate one with: wg genkey",
        )
    if mtu is not None and mtu < MTU_MIN_IPV6 and any(a.version == 6 for a in addresses):
        raise ConfigError(
            f"{mtu} is below {MTU_MIN_IPV6}, the minimum for IPv6",
            path=path,
            line=mtu_line,
            key="MTU",
        )
    return Interface(
        name=label,
        private_key=draft.private_key,
        addresses=tuple(addresses),
        listen_port=draft.listen_port,
        fwmark=draft.fwmark,
        mtu=mtu,
        table=table,
        dns=_uniq(dns),
        dns_search=_uniq(search),
        hooks=tuple(hooks),
        save_config=save_config,
        peers=_finish_peers(draft.peers, path),
        source=os.fspath(path),
    )


def _finish_peers(drafts: list[_PeerDraft], path: StrPath) -> tuple[Peer, ...]:
    seen: dict[str, int] = {}
    peers: list[Peer] = []
    for d in drafts:
        if d.public_key is None:
            raise ConfigError("missing in [Peer]", path=path, line=d.line, key="PublicKey")
        if d.public_key in seen:
            raise ConfigError(
                f"duplicate peer: same public key as the peer at line {seen[d.public_key]}",
                path=path,
                line=d.line,
                key="PublicKey",
            )
        seen[d.public_key] = d.line
        peers.append(
            Peer(
                public_key=d.public_key,
                preshared_key=d.preshared_key,
                allowed_ips=_uniq(d.allowed_ips),
                endpoint=d.endpoint,
                persistent_keepalive=d.keepalive,
                line=d.line,
            )
        )
    return tuple(peers)


def wg_setconf_text(iface: Interface) -> str:
    """The `wg setconf` input for IFACE's device (no wg-quick keys). Holds the private key."""
    out = ["[Interface]", f"PrivateKey = {iface.private_key.reveal()}"]
    if iface.listen_port is not None:
        out.append(f"ListenPort = {iface.listen_port}")
    if iface.fwmark is not None:
        out.append(f"FwMark = {iface.fwmark:#x}" if iface.fwmark else "FwMark = off")
    for peer in iface.peers:
        out += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key is not None:
            out.append(f"PresharedKey = {peer.preshared_key.reveal()}")
        if peer.allowed_ips:  # wg rejects an empty AllowedIPs line
            out.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.endpoint is not None:
            out.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive is not None:
            out.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Files


class _Unreadable(ConfigError):
    """A file that could not be read; a TOML profile re-points it at the line naming the file."""

    def __init__(self, reason: str, path: StrPath) -> None:
        super().__init__(f"cannot read: {reason}", path=path)
        self.reason = reason


def _read_file(path: StrPath, *, limit: int = MAX_PROFILE_BYTES) -> tuple[bytes, int]:
    """The bytes and st_mode of a regular file, or a ConfigError saying why not."""
    try:
        # O_NONBLOCK: a FIFO named as a key file must not hang `wgns up`.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise _Unreadable(str(e.strerror), path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unreadable("not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _Unreadable(f"larger than {limit} bytes", path)
        return b"".join(chunks), st.st_mode
    except OSError as e:
        raise _Unreadable(str(e.strerror), path) from None
    finally:
        os.close(fd)


def _decode(data: bytes, path: StrPath) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", path=path, line=line) from None


def _check_private(path: StrPath, mode: int) -> None:
    if mode & 0o004:
        import shlex

        raise ConfigError(
            "holds a private key but every user can read it",
            path=path,
            hint=f"chmod 600 {shlex.quote(str(path))}",
        )


def _read_key_file(path: StrPath, key: str) -> Secret:
    data, mode = _read_file(path, limit=MAX_KEY_FILE_BYTES)
    _check_private(path, mode)
    try:
        text = data.decode("ascii").strip(_SPACE)
    except UnicodeDecodeError:
        text = ""
    with _located(path, None, key):
        return Secret(_parse_key(text))


def load_conf_file(path: StrPath, *, label: str) -> Interface:
    """Read and parse a .conf that holds a private key: it must not be readable by others."""
    data, mode = _read_file(path)
    iface = parse_conf(_decode(data, path), path=path, label=label)
    _check_private(path, mode)
    return iface


# --------------------------------------------------------------------------------------------
# TOML profiles

# Unambiguous pieces (no two adjacent parts can match the same characters) keep the scan linear.
_HEADER_RE = r"\s*(\[\[?)([^\[\]#]*)(\]\]?)\s*(#.*)?"
_KEY_RE = r"""\s*("[^"\n]*"|'[^'\n]*'|[A-Za-z0-9_-]+)\s*[=.]"""

Loc = tuple[str | int, ...]


class _TomlLines:
    """Where tables and keys are in the raw text: tomllib reports no positions.

    A location is the path into the parsed data, e.g. ("interface", 1, "peer", 0). Scanning
    lines is not a TOML parser (multi-line strings can fool it); it only picks line numbers.
    """

    def __init__(self, text: str) -> None:
        self.headers: dict[Loc, int] = {}
        self.keys: dict[Loc, dict[str, int]] = {}
        counts: dict[Loc, int] = {}
        loc: Loc = ()
        for number, line in enumerate(text.split("\n"), 1):
            m = re.fullmatch(_HEADER_RE, line)
            if m and len(m.group(1)) == len(m.group(3)):
                parts = [p.strip().strip("\"'") for p in m.group(2).split(".")]
                loc = self._locate(parts, len(m.group(1)) == 2, counts)
                self.headers.setdefault(loc, number)
                continue
            k = re.match(_KEY_RE, line)
            if k:
                self.keys.setdefault(loc, {}).setdefault(k.group(1).strip("\"'"), number)

    @staticmethod
    def _locate(parts: list[str], is_array: bool, counts: dict[Loc, int]) -> Loc:
        loc: Loc = ()
        for i, part in enumerate(parts):
            here = (*loc, part)
            if is_array and i == len(parts) - 1:
                counts[here] = counts.get(here, 0) + 1
                loc = (*here, counts[here] - 1)
            elif here in counts:  # a parent array of tables means its latest element
                loc = (*here, counts[here] - 1)
            else:
                loc = here
        return loc

    def line(self, loc: Loc, key: str | None = None) -> int | None:
        while True:
            if key is not None:
                if key in self.keys.get(loc, {}):
                    return self.keys[loc][key]
                for sub in ((*loc, key), (*loc, key, 0)):  # the key is a table of its own
                    if sub in self.headers:
                        return self.headers[sub]
            if loc in self.headers:
                return self.headers[loc]
            if not loc:
                return None
            # An inline table has no header: fall back to the key holding it in its parent.
            up = loc[:-1] if isinstance(loc[-1], int) else loc
            if not up:
                return None
            key, loc = str(up[-1]), up[:-1]


_ROOT_KEYS = (
    "name",
    "backend",
    "birthplace",
    "kill_switch",
    "dns",
    "dns_search",
    "allow_host",
    "interface",
    "hook",
    "forward",
)
_IFACE_KEYS = (
    "name",
    "config",
    "private_key",
    "private_key_file",
    "address",
    "listen_port",
    "fwmark",
    "mtu",
    "table",
    "peer",
)
_PEER_KEYS = (
    "public_key",
    "preshared_key",
    "preshared_key_file",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
)
_HOOK_TOML_KEYS = ("when", "run", "netns")
_FORWARD_KEYS = ("host_port", "ns_port", "proto", "from", "mode")

_MISSING = object()


class _Toml:
    """Typed access to one parsed TOML profile, with errors that carry the line."""

    def __init__(self, text: str, path: StrPath) -> None:
        self.path = os.fspath(path)
        self.lines = _TomlLines(text)
        self.inline_secret = False

    def error(
        self, loc: Loc, key: str | None, message: str, hint: str | None = None
    ) -> ConfigError:
        return ConfigError(
            message, path=self.path, line=self.lines.line(loc, key), key=key, hint=hint
        )

    def at(self, loc: Loc, key: str) -> _located:
        return _located(self.path, self.lines.line(loc, key), key)

    def check_keys(self, table: dict[str, Any], loc: Loc, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                what = "unknown key" if loc == () else f"unknown key in [{_table_name(loc)}]"
                raise self.error(loc, key, what, hint=_suggest(key, allowed))

    def get(self, table: dict[str, Any], loc: Loc, key: str, kind: type, what: str) -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return None
        # bool is an int in Python, never in TOML.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(loc, key, f"must be {what}")
        return value

    def string(self, table: dict[str, Any], loc: Loc, key: str) -> str | None:
        value: str | None = self.get(table, loc, key, str, "a string")
        return value

    def integer(self, table: dict[str, Any], loc: Loc, key: str) -> int | None:
        value: int | None = self.get(table, loc, key, int, "an integer")
        return value

    def boolean(self, table: dict[str, Any], loc: Loc, key: str) -> bool | None:
        value: bool | None = self.get(table, loc, key, bool, "true or false")
        return value

    def strings(self, table: dict[str, Any], loc: Loc, key: str) -> list[str]:
        """A list of strings; a single string is taken as a list of one."""
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(loc, key, "must be a list of strings")
        return list(value)

    def tables(self, table: dict[str, Any], loc: Loc, key: str) -> list[dict[str, Any]]:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            name = _table_name((*loc, key))
            raise self.error(loc, key, "must be an array of tables", hint=f"write [[{name}]]")
        return list(value)

    def port(self, table: dict[str, Any], loc: Loc, key: str, *, lo: int) -> int | None:
        n = self.integer(table, loc, key)
        if n is not None and not lo <= n <= 65535:
            raise self.error(loc, key, f"{n} is not a port number ({lo}..65535)")
        return n

    def text_or_int(self, table: dict[str, Any], loc: Loc, key: str) -> str | None:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(loc, key, "must be a string or an integer")
        return str(value)

    def choice(
        self, table: dict[str, Any], loc: Loc, key: str, choices: tuple[str, ...]
    ) -> str | None:
        value = self.string(table, loc, key)
        if value is not None and value not in choices:
            raise self.error(loc, key, f"{_show(value)} is not one of {' | '.join(choices)}")
        return value

    def resolve(self, name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(os.path.dirname(self.path), name)


def _table_name(loc: Loc) -> str:
    return ".".join(p for p in loc if isinstance(p, str))


def parse_toml(text: str, *, path: StrPath) -> Profile:
    """A TOML profile (reads the .conf and key files it names); raises ConfigError."""
    profile, _ = _parse_toml(text, path)
    return profile


def _parse_toml(text: str, path: StrPath, name: str | None = None) -> tuple[Profile, bool]:
    """The profile, and whether the TOML text itself holds a secret."""
    import tomllib  # ~18 ms of start-up (it pulls in datetime): only TOML profiles pay it

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        line: int | None = None
        if m := re.search(r" \(at line (\d+), column \d+\)$", msg):
            line, msg = int(m.group(1)), msg[: m.start()]
        elif m := re.search(r" \(at end of document\)$", msg):
            line, msg = len(text.rstrip().split("\n")), msg[: m.start()]
        raise ConfigError(f"not valid TOML: {_plain(msg, 120)}", path=path, line=line) from None
    except (ValueError, RecursionError):  # e.g. an integer beyond int_max_str_digits
        raise ConfigError("not valid TOML", path=path) from None

    t = _Toml(text, path)
    root: Loc = ()
    t.check_keys(data, root, _ROOT_KEYS)

    ns_name = t.string(data, root, "name")
    if name is None:
        name = _ns_name(t, ns_name, "name") if ns_name is not None else _name_from_stem(path)

    backend_text = t.choice(data, root, "backend", tuple(b.value for b in Backend))
    birthplace = t.string(data, root, "birthplace")
    if birthplace is not None:
        _ns_name(t, birthplace, "birthplace")
        if birthplace == name:
            raise t.error(root, "birthplace", "must differ from the namespace itself")
    kill_switch = t.boolean(data, root, "kill_switch")

    dns: list[IPAddress] = []
    for item in t.strings(data, root, "dns"):
        with t.at(root, "dns"):
            dns.append(_dns_server(item))
    search: list[str] = []
    for item in t.strings(data, root, "dns_search"):
        with t.at(root, "dns_search"):
            search.append(_search_domain(item))

    allow_host = _allow_host(t, data)

    raw_ifaces = t.tables(data, root, "interface")
    if not raw_ifaces:
        raise ConfigError(
            "no [[interface]] table", path=path, hint="a profile needs at least one interface"
        )
    interfaces: list[Interface] = []
    labels: dict[str, int | None] = {}
    ports: dict[int, str] = {}
    for i, raw in enumerate(raw_ifaces):
        loc: Loc = ("interface", i)
        iface = _toml_interface(t, raw, loc, f"wg{i}")
        if iface.name in labels:
            raise t.error(
                loc,
                "name",
                f"{_show(iface.name)} is used by another interface",
                hint="interface names must be unique",
            )
        labels[iface.name] = t.lines.line(loc)
        if iface.listen_port:
            if iface.listen_port in ports:
                raise t.error(
                    loc,
                    "listen_port" if "listen_port" in raw else "config",
                    f"port {iface.listen_port} is also used by interface "
                    f"{_show(ports[iface.listen_port])}",
                )
            ports[iface.listen_port] = iface.name
        interfaces.append(iface)

    hooks = tuple(
        _toml_hook(t, raw, ("hook", i)) for i, raw in enumerate(t.tables(data, root, "hook"))
    )
    forwards: list[Forward] = []
    seen: dict[tuple[int, Proto], int | None] = {}
    for i, raw in enumerate(t.tables(data, root, "forward")):
        fwd = _toml_forward(t, raw, ("forward", i))
        ident = (fwd.host_port, fwd.proto)
        if ident in seen:
            raise t.error(
                ("forward", i),
                "host_port",
                f"duplicate forward of {fwd.proto.value} port {fwd.host_port} "
                f"(also at line {seen[ident]})",
            )
        seen[ident] = fwd.line
        forwards.append(fwd)

    profile = Profile(
        name=name,
        source=os.fspath(path),
        interfaces=tuple(interfaces),
        dns=_uniq([*(a for i in interfaces for a in i.dns), *dns]),
        dns_search=_uniq([*(s for i in interfaces for s in i.dns_search), *search]),
        birthplace=birthplace,
        kill_switch=True if kill_switch is None else kill_switch,
        backend=Backend(backend_text) if backend_text is not None else Backend.AUTO,
        hooks=hooks,
        forwards=tuple(forwards),
        allow_host=allow_host,
    )
    return profile, t.inline_secret


def _ns_name(t: _Toml, name: str, key: str) -> str:
    try:
        return netns.validate_name(name)
    except ConfigError as e:
        # netns echoes the whole name; ours goes through _show like every other value.
        raise t.error(
            (), key, f"{_show(name)} is not a valid namespace name", hint=e.hint
        ) from None


def _allow_host(t: _Toml, data: dict[str, Any]) -> tuple[int, ...]:
    value = data.get("allow_host", [])
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise t.error((), "allow_host", "must be a list of port numbers")
    for port in value:
        if not 1 <= port <= 65535:
            raise t.error((), "allow_host", f"{port} is not a port number (1..65535)")
    if len(set(value)) != len(value):
        raise t.error((), "allow_host", "lists a port twice")
    return tuple(value)


def _name_from_stem(path: StrPath) -> str:
    try:
        return netns.validate_name(paths.stem(path), path=str(path))
    except ConfigError:
        raise ConfigError(
            f"the file name {_show(paths.stem(path))} is not a valid namespace name",
            path=path,
            hint='rename the file, set name = "..." in a TOML profile, or pass --name',
        ) from None


def _toml_interface(t: _Toml, raw: dict[str, Any], loc: Loc, default_label: str) -> Interface:
    t.check_keys(raw, loc, _IFACE_KEYS)
    label_text = t.string(raw, loc, "name")
    label = default_label
    if label_text is not None:
        with t.at(loc, "name"):
            label = _label(label_text)

    config = t.string(raw, loc, "config")
    if config is not None:
        extra = sorted(set(raw) - {"name", "config"})
        if extra:
            raise t.error(
                loc,
                extra[0],
                "cannot be combined with config",
                hint="put it in the .conf file, or drop config and set every key here",
            )
        conf_path = t.resolve(config)
        try:
            return load_conf_file(conf_path, label=label)
        except _Unreadable as e:
            # Point at the TOML line naming the file, not only at the missing file.
            raise t.error(loc, "config", f"cannot read {conf_path}: {e.reason}") from None

    private_key = _toml_secret(t, raw, loc, "private_key")
    if private_key is None:
        raise t.error(loc, None, "needs config, private_key or private_key_file")

    addresses: list[IPInterface] = []
    for item in t.strings(raw, loc, "address"):
        with t.at(loc, "address"):
            for word in _split_words(item):
                addr = _address(word)
                if addr in addresses:
                    raise _Invalid(f"duplicate address {addr}")
                addresses.append(addr)

    listen_port = t.port(raw, loc, "listen_port", lo=0)
    fwmark_text = t.text_or_int(raw, loc, "fwmark")
    fwmark = None
    if fwmark_text is not None:
        with t.at(loc, "fwmark"):
            fwmark = _fwmark(fwmark_text)
    mtu = t.integer(raw, loc, "mtu")
    if mtu is not None:
        low = MTU_MIN_IPV6 if any(a.version == 6 for a in addresses) else MTU_MIN
        if not low <= mtu <= MTU_MAX:
            why = " (the minimum for IPv6)" if low == MTU_MIN_IPV6 else ""
            raise t.error(loc, "mtu", f"{mtu} is not an MTU ({low}..{MTU_MAX}){why}")
    table_text = t.text_or_int(raw, loc, "table")
    table = None
    if table_text is not None:
        with t.at(loc, "table"):
            table = _table(table_text)

    peers: list[Peer] = []
    seen: dict[str, int | None] = {}
    for j, raw_peer in enumerate(t.tables(raw, loc, "peer")):
        peer = _toml_peer(t, raw_peer, (*loc, "peer", j))
        if peer.public_key in seen:
            raise t.error(
                (*loc, "peer", j),
                "public_key",
                f"duplicate peer: same public key as the peer at line {seen[peer.public_key]}",
            )
        seen[peer.public_key] = peer.line
        peers.append(peer)

    return Interface(
        name=label,
        private_key=private_key,
        addresses=tuple(addresses),
        listen_port=listen_port,
        fwmark=fwmark,
        mtu=mtu,
        table=table,
        peers=tuple(peers),
        source=t.path,
    )


def _toml_secret(t: _Toml, raw: dict[str, Any], loc: Loc, key: str) -> Secret | None:
    inline = t.string(raw, loc, key)
    file = t.string(raw, loc, f"{key}_file")
    if inline is not None and file is not None:
        raise t.error(loc, f"{key}_file", f"set either {key} or {key}_file, not both")
    if inline is not None:
        t.inline_secret = True
        with t.at(loc, key):
            return Secret(_parse_key(inline))
    if file is not None:
        key_path = t.resolve(file)
        try:
            return _read_key_file(key_path, key)
        except _Unreadable as e:
            raise t.error(loc, f"{key}_file", f"cannot read {key_path}: {e.reason}") from None
    return None


def _toml_peer(t: _Toml, raw: dict[str, Any], loc: Loc) -> Peer:
    t.check_keys(raw, loc, _PEER_KEYS)
    public = t.string(raw, loc, "public_key")
    if public is None:
        raise t.error(loc, None, "missing public_key in [[interface.peer]]")
    with t.at(loc, "public_key"):
        _parse_key(public)
    allowed: list[IPNetwork] = []
    for item in t.strings(raw, loc, "allowed_ips"):
        with t.at(loc, "allowed_ips"):
            allowed.extend(_allowed_ip(w) for w in _split_words(item))
    endpoint_text = t.string(raw, loc, "endpoint")
    endpoint = None
    if endpoint_text is not None:
        with t.at(loc, "endpoint"):
            endpoint = _endpoint(endpoint_text)
    keepalive_text = t.text_or_int(raw, loc, "persistent_keepalive")
    keepalive = None
    if keepalive_text is not None:
        with t.at(loc, "persistent_keepalive"):
            keepalive = _keepalive(keepalive_text)
    return Peer(
        public_key=public,
        preshared_key=_toml_secret(t, raw, loc, "preshared_key"),
        allowed_ips=_uniq(allowed),
        endpoint=endpoint,
        persistent_keepalive=keepalive,
        line=t.lines.line(loc),
    )


def _toml_hook(t: _Toml, raw: dict[str, Any], loc: Loc) -> Hook:
    t.check_keys(raw, loc, _HOOK_TOML_KEYS)
    when = t.choice(raw, loc, "when", tuple(w.value for w in HookWhen))
    if when is None:
        raise t.error(loc, "when", "missing (pre-up | post-up | pre-down | post-down)")
    run = t.string(raw, loc, "run")
    if run is None or not run.strip():
        raise t.error(loc, "run", "missing or empty: the command to run")
    where = t.choice(raw, loc, "netns", tuple(w.value for w in HookWhere))
    return Hook(
        when=HookWhen(when),
        command=run,
        where=HookWhere(where) if where is not None else HookWhere.BIRTHPLACE,
        line=t.lines.line(loc),
    )


def _toml_forward(t: _Toml, raw: dict[str, Any], loc: Loc) -> Forward:
    t.check_keys(raw, loc, _FORWARD_KEYS)
    host_port = t.port(raw, loc, "host_port", lo=1)
    if host_port is None:
        raise t.error(loc, "host_port", "missing: the port to listen on in the host namespace")
    ns_port = t.port(raw, loc, "ns_port", lo=1)
    proto = t.choice(raw, loc, "proto", tuple(p.value for p in Proto))
    mode = t.choice(raw, loc, "mode", tuple(m.value for m in ForwardMode))
    sources: list[IPNetwork] = []
    if "from" in raw:
        items = t.strings(raw, loc, "from")
        if not items:
            raise t.error(loc, "from", "is empty: nobody could use this forward")
        for item in items:
            with t.at(loc, "from"):
                sources.append(_source_net(item))
    fwd = Forward(
        host_port=host_port,
        ns_port=host_port if ns_port is None else ns_port,
        proto=Proto(proto) if proto is not None else Proto.TCP,
        mode=ForwardMode(mode) if mode is not None else ForwardMode.NAT,
        line=t.lines.line(loc),
    )
    return replace(fwd, sources=_uniq(sources)) if sources else fwd


def _source_net(text: str) -> IPNetwork:
    _no_scope(text)
    try:
        return ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        fixed = ip_network(text, strict=False)
    except ValueError:
        raise _Invalid(f"{_show(text)} is not an IP network (ADDRESS/PREFIX)") from None
    raise _Invalid(f"{_show(text)} has host bits set", hint=f"did you mean {fixed}?")


# --------------------------------------------------------------------------------------------
# Entry points


def resolve_profile_path(ref: str) -> str:
    """NAME -> /etc/wgns/NAME.toml or NAME.conf; anything with '/' or a suffix is a path."""
    if not ref:
        raise ConfigError("empty profile name")
    if "/" in ref or ref.endswith((".conf", ".toml")):
        if not os.path.exists(ref):
            raise ConfigError("no such file", path=ref)
        return ref
    toml, conf = f"{ETC_DIR}/{ref}.toml", f"{ETC_DIR}/{ref}.conf"
    found = [p for p in (toml, conf) if os.path.exists(p)]
    if len(found) == 2:
        raise ConfigError(
            f"profile {_show(ref)} is ambiguous: both {toml} and {conf} exist",
            hint="remove one, or name the file you mean",
        )
    if not found:
        raise ConfigError(
            f"no profile {_show(ref)}: neither {toml} nor {conf} exists",
            hint="name a file (with a '/' or a .conf/.toml suffix) to use one elsewhere",
        )
    return found[0]


def load_profile(ref: str, *, name: str | None = None, backend: str | None = None) -> Profile:
    """Read and validate the profile REF names; never touches anything but the files read."""
    path = resolve_profile_path(ref)
    if name is not None:
        netns.validate_name(name)
    data, mode = _read_file(path)
    text = _decode(data, path)
    if paths.suffix(path) == ".toml":
        profile, inline_secret = _parse_toml(text, path, name)
        if inline_secret:
            _check_private(path, mode)
    else:
        iface = parse_conf(text, path=path, label=paths.stem(path))
        _check_private(path, mode)
        profile = Profile(
            name=name if name is not None else _name_from_stem(path),
            source=os.fspath(path),
            interfaces=(iface,),
            dns=iface.dns,
            dns_search=iface.dns_search,
        )
    if backend is not None:
        try:
            profile = replace(profile, backend=Backend(backend))
        except ValueError:
            raise ConfigError(
                f"unknown backend {_show(backend)}",
                key="backend",
                hint="use auto, kernel or userspace",
            ) from None
    return profile
