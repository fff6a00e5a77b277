"""The values a profile holds, parsed the way wg, wg-quick and ip parse them, with their errors.

Shared by the ``.conf`` parser (:mod:`wgns.profile.conf`) and the TOML one
(:mod:`wgns.profile.toml`). A parser here raises :class:`Invalid` (a message, and a hint where one
helps); the caller turns it into a ConfigError naming the file, line and key with
:func:`located`, because only the caller knows where the value came from. Secrets never reach a
message: values are only ever echoed through :func:`show`.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network
from os import PathLike
from typing import TypeVar

from wgns.errors import ConfigError
from wgns.profile.model import Endpoint, IPAddress, IPInterface, IPNetwork

T = TypeVar("T")
StrPath = str | PathLike[str]

# Below 576 IPv4 itself is not guaranteed to work; the kernel drops IPv6 from any link whose MTU
# is below 1280, which would silently turn an IPv6 tunnel into a blackhole.
MTU_MIN = 576
MTU_MIN_IPV6 = 1280
MTU_MAX = 65535

KEY_ERROR = "not a valid WireGuard key (must be 44 base64 characters)"

# [[:space:]] in the C locale (wg-quick trims keys and values with it) and wg's char_is_space().
SPACE = " \t\n\v\f\r"

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def lower(s: str) -> str:
    """ASCII-only lower case. Both bash (nocasematch, LC_ALL=C) and wg (strcasecmp) fold ASCII
    only; str.lower() would also fold e.g. the Kelvin sign into "k" and accept keys neither tool
    accepts."""
    return s.translate(_LOWER)


# --------------------------------------------------------------------------------------------
# Errors


class Invalid(Exception):
    """A bad value, before we know where it came from; :func:`located` adds file/line/key."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@contextmanager
def located(path: StrPath, line: int | None, key: str | None) -> Iterator[None]:
    """Turn an Invalid raised in the block into a ConfigError at PATH:LINE, KEY."""
    try:
        yield
    except Invalid as e:
        raise ConfigError(e.message, path=path, line=line, key=key, hint=e.hint) from None


# A run this long of base64 characters could be (part of) a key: never echo it.
_SECRETISH = re.compile(r"[A-Za-z0-9+/]{20,}=*")


def plain(value: str, limit: int = 48) -> str:
    """A user-supplied value, safe to put into a one-line message: no secrets, no newlines."""
    value = _SECRETISH.sub("<redacted>", value)
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)[1:-1]


def show(value: str, limit: int = 48) -> str:
    """:func:`plain`, quoted."""
    return f"'{plain(value, limit)}'"


def suggest(key: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt KEY, or None when nothing is close."""
    import difflib  # only on the way to an error message

    lowered = {lower(c): c for c in choices}
    close = difflib.get_close_matches(lower(key), list(lowered), n=1, cutoff=0.75)
    return f"did you mean {lowered[close[0]]}?" if close else None


# --------------------------------------------------------------------------------------------
# Numbers and keys

_DIGITS = re.compile(r"[0-9]+")  # not \d: that also matches non-ASCII digits
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def parse_uint(text: str, hi: int) -> int | None:
    """strtoul()-style decimal (leading zeros fine), or None when not a number in 0..hi."""
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > 20:
        return None
    n = int(text)
    return n if n <= hi else None


def parse_key(value: str) -> str:
    """A base64 key exactly as wg's key_from_base64() accepts it (canonical encoding only)."""
    if len(value) != 44 or not value.endswith("=") or value.endswith("=="):
        raise Invalid(KEY_ERROR)
    try:
        raw = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise Invalid(KEY_ERROR) from None
    # wg rejects keys whose last character carries stray low bits; re-encoding catches those.
    if len(raw) != 32 or binascii.b2a_base64(raw, newline=False).decode("ascii") != value:
        raise Invalid(KEY_ERROR)
    return value


def parse_port(text: str, *, lo: int = 0) -> int:
    n = parse_uint(text, 65535)
    if n is None or n < lo:
        raise Invalid(f"{show(text)} is not a port number ({lo}..65535)")
    return n


def parse_fwmark(text: str) -> int:
    """wg's FwMark: off, decimal or 0x hex, 32 bits; off is 0."""
    if lower(text) == "off":
        return 0
    n: int | None
    if _HEX.fullmatch(text):
        n = int(text, 16) if len(text[2:].lstrip("0")) <= 8 else None
    else:
        n = parse_uint(text, 0xFFFFFFFF)
    if n is None:
        raise Invalid(f"{show(text)} is neither off nor a number 0..0xffffffff")
    return n


def parse_keepalive(text: str) -> int:
    """wg's PersistentKeepalive: off or seconds; off is 0."""
    if lower(text) == "off":
        return 0
    n = parse_uint(text, 65535)
    if n is None:
        raise Invalid(f"{show(text)} is neither off nor a number of seconds 0..65535")
    return n


def parse_mtu(text: str) -> int:
    n = parse_uint(text, MTU_MAX)
    if n is None or n < MTU_MIN:
        raise Invalid(f"{show(text)} is not an MTU ({MTU_MIN}..{MTU_MAX})")
    return n


_TABLE_NAMES = {"main": "254", "local": "255", "default": "253"}


def parse_table(text: str) -> str | None:
    """wg-quick's Table: None for auto, "off", or a table number as text. wg-quick compares it
    case-sensitively (nocasematch is off by then): so do we."""
    if text in ("", "auto"):
        return None
    if text == "off":
        return "off"
    if text in _TABLE_NAMES:
        return _TABLE_NAMES[text]
    n = parse_uint(text, 0xFFFFFFFF)
    if n is None or n == 0:
        raise Invalid(
            f"{show(text)} is not a routing table",
            hint="use auto, off, main, or a table number 1..4294967295",
        )
    return str(n)


# --------------------------------------------------------------------------------------------
# Addresses, networks, endpoints, names

_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_IFACE_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,63}")
_WORD_SEPARATORS = re.compile(r"[ \t\n,]+")


def _no_scope(text: str) -> None:
    if "%" in text:
        raise Invalid(f"{show(text)}: scoped (%) addresses are not supported")


def parse_address(text: str) -> IPInterface:
    """An interface address as `ip address add` takes it; no prefix means a single host."""
    _no_scope(text)
    try:
        return ip_interface(text)
    except ValueError:
        raise Invalid(f"{show(text)} is not an IP address with an optional /prefix") from None


def parse_allowed_ip(text: str) -> IPNetwork:
    """One AllowedIPs entry as wg parses it: inet_pton() address, optional decimal /cidr."""
    ip_text, slash, cidr_text = text.partition("/")
    _no_scope(ip_text)
    try:
        ip: IPAddress = IPv6Address(ip_text) if ":" in ip_text else IPv4Address(ip_text)
    except ValueError:
        raise Invalid(f"{show(text)} is not an IP address with an optional /prefix") from None
    cidr = parse_uint(cidr_text, ip.max_prefixlen) if slash else ip.max_prefixlen
    if cidr is None:
        raise Invalid(f"{show(text)} has an invalid prefix length (0..{ip.max_prefixlen})")
    # wg accepts host bits and the kernel masks them off; store what the kernel will use.
    return ip_network(f"{ip}/{cidr}", strict=False)


def parse_source_net(text: str) -> IPNetwork:
    """A forward's `from` network: host bits set is a mistake worth naming, not masking."""
    _no_scope(text)
    try:
        return ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        fixed = ip_network(text, strict=False)
    except ValueError:
        raise Invalid(f"{show(text)} is not an IP network (ADDRESS/PREFIX)") from None
    raise Invalid(f"{show(text)} has host bits set", hint=f"did you mean {fixed}?")


def is_ip(text: str) -> bool:
    """Whether TEXT is an IP address literal (an endpoint's host needing no lookup)."""
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def is_hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(p) for p in name.split("."))


def parse_endpoint(text: str) -> Endpoint:
    """wg's parse_endpoint(): [host]:port, or host:port split at the *last* colon."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise Invalid(f"{show(text)} has no closing ']'")
        if not rest.startswith(":") or len(rest) == 1:
            raise Invalid(f"{show(text)} has no port", hint="write [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not port_text:
            raise Invalid(f"{show(text)} has no port", hint="write HOST:PORT")
    if not is_ip(host) and not is_hostname(host):
        raise Invalid(f"{show(host)} is neither an IP address nor a host name")
    return Endpoint(host=host, port=parse_port(port_text, lo=1))


def parse_dns_server(text: str) -> IPAddress:
    _no_scope(text)
    try:
        return ip_address(text)
    except ValueError:
        raise Invalid(f"{show(text)} is not a DNS server IP address") from None


def parse_search_domain(text: str) -> str:
    if not is_hostname(text):
        raise Invalid(f"{show(text)} is not a DNS search domain")
    return text


def parse_label(text: str) -> str:
    """An interface's label in a profile (the kernel ifname is chosen elsewhere)."""
    if not _IFACE_LABEL.fullmatch(text):
        raise Invalid(
            f"{show(text)} is not a valid interface label",
            hint="use letters, digits and _ . + = @ - (at most 64 characters)",
        )
    return text


def split_words(value: str) -> list[str]:
    """wg-quick's unquoted ${value//,/ }: commas become spaces, then IFS word splitting."""
    return [w for w in _WORD_SEPARATORS.split(value) if w]


def uniq(items: Iterable[T]) -> tuple[T, ...]:
    """ITEMS without repeats, in first-seen order."""
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# systemd units (the `units` key; `wgns confine`)

UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) less the NUL
_UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
)
_UNIT_PREFIX = re.compile(r"[A-Za-z0-9:_.\\-]+")
_UNIT_INSTANCE = re.compile(r"[A-Za-z0-9:_.\\@-]+")


def parse_unit_name(text: str) -> str:
    """A service unit to confine: NAME gets `.service` when it has no unit type suffix. Refused:
    another unit type, a template without instance, wgns@*.service and wgns-physical@*.service
    (wgns's own), a name
    systemd would refuse."""
    name = text.strip()
    if not name:
        raise Invalid("empty unit name")
    base, dot, suffix = name.rpartition(".")
    if not dot or suffix not in _UNIT_TYPES:
        name, base, suffix = f"{name}.service", name, "service"
    if suffix != "service":
        raise Invalid(
            f"{show(name)} is a {suffix} unit: only services can be confined",
            hint="confine the service it starts",
        )
    prefix, at, instance = base.partition("@")
    if len(name) > UNIT_NAME_MAX or not _UNIT_PREFIX.fullmatch(prefix):
        raise Invalid(f"{show(name)} is not a valid systemd unit name")
    if at and not instance:
        raise Invalid(
            f"{show(name)} is a template: name an instance",
            hint=f"e.g. {prefix}@NAME.service",
        )
    if at and not _UNIT_INSTANCE.fullmatch(instance):
        raise Invalid(f"{show(name)} is not a valid systemd unit name")
    if prefix == "wgns" and at:
        raise Invalid(f"{show(name)} is the unit of a wgns namespace itself: it cannot be confined")
    if prefix == "wgns-physical" and at:
        raise Invalid(f"{show(name)} is physical mode's own unit: it cannot be confined")
    return name
