"""wg-quick ``.conf`` files into an :class:`Interface`.

A ``.conf`` is read the way wg-quick reads it, in two passes, because that is where its quirks
come from. wg-quick's own loop (bash ``read -r``: NUL bytes dropped, spaces and tabs trimmed; keys
matched case-insensitively) takes the keys *it* consumes out of ``[Interface]``; every other line
goes on to ``wg setconf``, which deletes *all* whitespace from a line before matching it.
Mirroring both passes keeps ``wgns strip`` byte-exact and makes wgns accept (and reject) what
wg-quick would, while every error names the file, the line and the key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from wgns.errors import ConfigError
from wgns.profile import files
from wgns.profile.model import (
    Endpoint,
    Hook,
    HookWhen,
    HookWhere,
    Interface,
    IPAddress,
    IPInterface,
    IPNetwork,
    Peer,
    Secret,
)
from wgns.profile.values import (
    MTU_MIN_IPV6,
    SPACE,
    Invalid,
    StrPath,
    located,
    lower,
    parse_address,
    parse_allowed_ip,
    parse_dns_server,
    parse_endpoint,
    parse_fwmark,
    parse_keepalive,
    parse_key,
    parse_mtu,
    parse_port,
    parse_search_domain,
    parse_table,
    plain,
    show,
    split_words,
    suggest,
    uniq,
)

# The keys wg-quick itself consumes from [Interface] (lower case -> canonical spelling).
QUICK_KEYS = {
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
HOOK_KEYS = {
    "PreUp": HookWhen.PRE_UP,
    "PostUp": HookWhen.POST_UP,
    "PreDown": HookWhen.PRE_DOWN,
    "PostDown": HookWhen.POST_DOWN,
}
# The keys `wg setconf` reads.
WG_INTERFACE_KEYS = {"privatekey": "PrivateKey", "listenport": "ListenPort", "fwmark": "FwMark"}
WG_PEER_KEYS = {
    "publickey": "PublicKey",
    "presharedkey": "PresharedKey",
    "allowedips": "AllowedIPs",
    "endpoint": "Endpoint",
    "persistentkeepalive": "PersistentKeepalive",
}
INTERFACE_KEYS = [*WG_INTERFACE_KEYS.values(), *QUICK_KEYS.values()]
PEER_KEYS = list(WG_PEER_KEYS.values())

# What bash `read` trims from a whole line with the default IFS.
_IFS = " \t"
_DNS_SERVER_SHAPE = re.compile(r"[0-9.]+|.*:.*", re.DOTALL)  # wg-quick's own test, verbatim


# --------------------------------------------------------------------------------------------
# Pass 1: wg-quick's parse_options


@dataclass
class QuickLine:
    """A line wg-quick consumes itself."""

    number: int
    key: str  # canonical spelling
    value: str
    has_equals: bool


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
    return key.strip(SPACE), (value if eq else stripped).strip(SPACE), bool(eq)


def wg_quick_pass(text: str) -> tuple[list[QuickLine], list[tuple[int, str]]]:
    """Split into the lines wg-quick consumes and the (numbered) lines it passes on to
    `wg setconf`."""
    consumed: list[QuickLine] = []
    rest: list[tuple[int, str]] = []
    in_interface = False
    for number, line in _read_lines(text):
        key, value, has_equals = _quick_split(line)
        lowered = lower(key)
        if key.startswith("["):
            in_interface = False
        if lowered == "[interface]":
            in_interface = True
        canonical = QUICK_KEYS.get(lowered)
        if in_interface and canonical is not None:
            consumed.append(QuickLine(number, canonical, value, has_equals))
            continue
        rest.append((number, line))
    return consumed, rest


# --------------------------------------------------------------------------------------------
# Pass 2: wg's config_read_line


@dataclass
class _PeerDraft:
    line: int
    public_key: str | None = None
    preshared_key: Secret | None = None
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    endpoint: Endpoint | None = None
    keepalive: int | None = None


@dataclass
class _InterfaceDraft:
    line: int | None = None  # of the first [Interface] header
    private_key: Secret | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    peers: list[_PeerDraft] = field(default_factory=list)


def _wg_line(
    draft: _InterfaceDraft, section: str | None, number: int, line: str, path: StrPath
) -> str | None:
    """Apply one line the way `wg setconf` would; returns the section now in force."""
    content = "".join(c for c in line.split("#", 1)[0] if c not in SPACE)
    if not content:
        return section
    lowered = lower(content)
    if lowered == "[interface]":
        if draft.line is None:
            draft.line = number
        return "interface"
    if lowered == "[peer]":
        draft.peers.append(_PeerDraft(line=number))
        return "peer"
    if content.startswith("["):
        raise ConfigError(
            f"unknown section {show(content)}",
            path=path,
            line=number,
            hint="a .conf has only [Interface] and [Peer] sections",
        )
    key, eq, value = content.partition("=")
    if not eq:
        raise ConfigError("not a section header or KEY = VALUE line", path=path, line=number)
    lowered = lower(key)
    if section == "interface":
        known = WG_INTERFACE_KEYS
    elif section == "peer":
        known = WG_PEER_KEYS
    else:
        raise ConfigError(
            "key outside of any section",
            path=path,
            line=number,
            key=plain(key),
            hint="put it under [Interface] or [Peer]",
        )
    canonical = known.get(lowered)
    if canonical is None:
        raise _unknown_wg_key(key, line, section, path, number)
    if not value:
        raise ConfigError("has no value", path=path, line=number, key=canonical)
    with located(path, number, canonical):
        if section == "interface":
            if canonical == "PrivateKey":
                draft.private_key = Secret(parse_key(value))
            elif canonical == "ListenPort":
                draft.listen_port = parse_port(value)
            else:
                draft.fwmark = parse_fwmark(value)
        else:
            peer = draft.peers[-1]
            if canonical == "PublicKey":
                peer.public_key = parse_key(value)
            elif canonical == "PresharedKey":
                peer.preshared_key = Secret(parse_key(value))
            elif canonical == "AllowedIPs":
                peer.allowed_ips.extend(parse_allowed_ip(v) for v in value.split(","))
            elif canonical == "Endpoint":
                peer.endpoint = parse_endpoint(value)
            else:
                peer.keepalive = parse_keepalive(value)
    return section


def _unknown_wg_key(key: str, line: str, section: str, path: StrPath, number: int) -> ConfigError:
    lowered = lower(key)
    if section == "interface" and lowered in QUICK_KEYS:
        # wg-quick skipped it: either its key had inner spaces or the header did.
        quick_key, _, _ = _quick_split(line)
        hint = (
            "write the section header exactly as [Interface]"
            if lower(quick_key) == lowered
            else "write the key without spaces inside it"
        )
        return ConfigError(
            "wg-quick would not read this line",
            path=path,
            line=number,
            key=QUICK_KEYS[lowered],
            hint=hint,
        )
    if section == "peer" and lowered in QUICK_KEYS:
        return ConfigError(
            "belongs in [Interface], not [Peer]", path=path, line=number, key=QUICK_KEYS[lowered]
        )
    choices = INTERFACE_KEYS if section == "interface" else PEER_KEYS
    section_name = "[Interface]" if section == "interface" else "[Peer]"
    return ConfigError(
        f"unknown key in {section_name}",
        path=path,
        line=number,
        key=plain(key),
        hint=suggest(key, choices),
    )


# --------------------------------------------------------------------------------------------
# Assembly


def parse_conf(text: str, *, path: StrPath, label: str) -> Interface:
    """A wg-quick .conf as one :class:`Interface` labelled LABEL; raises ConfigError."""
    consumed, rest = wg_quick_pass(text)
    draft = _InterfaceDraft()
    section: str | None = None
    for number, line in rest:
        section = _wg_line(draft, section, number, line, path)

    addresses: list[IPInterface] = []
    dns: list[IPAddress] = []
    dns_lines: dict[IPAddress, int] = {}
    search: list[str] = []
    hooks: list[Hook] = []
    mtu: int | None = None
    mtu_line: int | None = None
    table: str | None = None
    save_config = False
    for q in consumed:
        if not q.has_equals:
            raise ConfigError(f"expected {q.key} = VALUE", path=path, line=q.number, key=q.key)
        with located(path, q.number, q.key):
            if q.key == "Address":
                for word in split_words(q.value):
                    addr = parse_address(word)
                    if addr in addresses:
                        raise Invalid(f"duplicate address {addr}")
                    addresses.append(addr)
            elif q.key == "DNS":
                for word in split_words(q.value):
                    if _DNS_SERVER_SHAPE.fullmatch(word):
                        server = parse_dns_server(word)
                        dns.append(server)
                        dns_lines.setdefault(server, q.number)
                    else:
                        search.append(parse_search_domain(word))
            elif q.key == "MTU":
                mtu, mtu_line = (parse_mtu(q.value), q.number) if q.value else (None, None)
            elif q.key == "Table":
                table = parse_table(q.value)
            elif q.key == "SaveConfig":
                if lower(q.value) not in ("true", "false"):
                    raise Invalid(f"{show(q.value)} is neither true nor false")
                save_config = lower(q.value) == "true"
            elif q.value:  # an empty hook is a no-op for wg-quick too
                hooks.append(Hook(HOOK_KEYS[q.key], q.value, HookWhere.BIRTHPLACE, q.number))

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
        dns=uniq(dns),
        dns_search=uniq(search),
        dns_lines=tuple(dns_lines.get(server) for server in uniq(dns)),
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
                allowed_ips=uniq(d.allowed_ips),
                endpoint=d.endpoint,
                persistent_keepalive=d.keepalive,
                line=d.line,
            )
        )
    return tuple(peers)


def load_conf_file(path: StrPath, *, label: str) -> Interface:
    """Read and parse a .conf that holds a private key: it must not be readable by others."""
    data, mode = files.read_file(path)
    iface = parse_conf(files.decode(data, path), path=path, label=label)
    files.check_private(path, mode)
    return iface
