"""wgns TOML profiles into a :class:`Profile`: the schema (keys, defaults, checks across tables).

An interface is either a wg-quick ``.conf`` named by ``config`` (read with
:mod:`wgns.profile.conf`) or written out here; keys may sit inline or in key files. Reading the
document and locating lines is :mod:`wgns.profile.tomldoc`; the values are parsed by
:mod:`wgns.profile.values`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from wgns.errors import ConfigError
from wgns.profile import files, tomldoc
from wgns.profile.conf import load_conf_file
from wgns.profile.model import (
    Backend,
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
from wgns.profile.tomldoc import Loc, TomlDoc
from wgns.profile.values import (
    MTU_MAX,
    MTU_MIN,
    MTU_MIN_IPV6,
    Invalid,
    StrPath,
    parse_address,
    parse_allowed_ip,
    parse_dns_server,
    parse_endpoint,
    parse_fwmark,
    parse_keepalive,
    parse_key,
    parse_label,
    parse_search_domain,
    parse_source_net,
    parse_table,
    parse_unit_name,
    show,
    split_words,
    uniq,
)
from wgns.system import netns

ROOT_KEYS = (
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
    "units",
)
INTERFACE_KEYS = (
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
PEER_KEYS = (
    "public_key",
    "preshared_key",
    "preshared_key_file",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
)
HOOK_KEYS = ("when", "run", "netns")
FORWARD_KEYS = ("host_port", "ns_port", "proto", "from", "mode")


@dataclass(frozen=True)
class ParsedToml:
    profile: Profile
    holds_secret: bool  # the TOML text itself holds a key: its file must be private


def parse_toml(text: str, *, path: StrPath) -> Profile:
    """A TOML profile (reads the .conf and key files it names); raises ConfigError."""
    return parse(text, path).profile


def parse(text: str, path: StrPath, name: str | None = None) -> ParsedToml:
    """The profile at PATH with content TEXT; NAME (--name) overrides its namespace name."""
    data = tomldoc.load(text, path)
    t = TomlDoc(text, path)
    root: Loc = ()
    t.check_keys(data, root, ROOT_KEYS)

    ns_name = t.string(data, root, "name")
    if name is None:
        name = _ns_name(t, ns_name, "name") if ns_name is not None else files.name_from_file(path)

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
            dns.append(parse_dns_server(item))
    search: list[str] = []
    for item in t.strings(data, root, "dns_search"):
        with t.at(root, "dns_search"):
            search.append(parse_search_domain(item))

    allow_host = _allow_host(t, data)
    units: list[str] = []
    for item in t.strings(data, root, "units"):
        with t.at(root, "units"):
            unit = parse_unit_name(item)
        if unit in units:
            raise t.error(root, "units", f"lists {show(unit)} twice")
        units.append(unit)
    if units and not _unit_instance_ok(name):
        raise t.error(
            root,
            "units",
            f"namespace name {show(name)} cannot be part of a systemd unit name "
            "(wgns@NAME.service): '+' and '=' are not allowed there",
            hint="name the profile without them",
        )
    interfaces = _interfaces(t, data)

    hooks = tuple(_hook(t, raw, ("hook", i)) for i, raw in enumerate(t.tables(data, root, "hook")))
    forwards: list[Forward] = []
    seen: dict[tuple[int, Proto], int | None] = {}
    for i, raw in enumerate(t.tables(data, root, "forward")):
        fwd = _forward(t, raw, ("forward", i))
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
        interfaces=interfaces,
        dns=uniq([*(a for i in interfaces for a in i.dns), *dns]),
        dns_search=uniq([*(s for i in interfaces for s in i.dns_search), *search]),
        birthplace=birthplace,
        kill_switch=True if kill_switch is None else kill_switch,
        backend=Backend(backend_text) if backend_text is not None else Backend.AUTO,
        hooks=hooks,
        forwards=tuple(forwards),
        allow_host=allow_host,
        units=tuple(units),
        dns_line=t.lines.line(root, "dns") if dns else None,
    )
    return ParsedToml(profile, t.inline_secret)


def _unit_instance_ok(ns: str) -> bool:
    """NS can be the instance of wgns@.service as it is (no systemd-escape needed)."""
    return "+" not in ns and "=" not in ns


def _ns_name(t: TomlDoc, name: str, key: str) -> str:
    try:
        return netns.validate_name(name)
    except ConfigError as e:
        # netns echoes the whole name; ours goes through show() like every other value.
        raise t.error((), key, f"{show(name)} is not a valid namespace name", hint=e.hint) from None


def _allow_host(t: TomlDoc, data: dict[str, Any]) -> tuple[int, ...]:
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


def _interfaces(t: TomlDoc, data: dict[str, Any]) -> tuple[Interface, ...]:
    """The [[interface]] tables: at least one, labels and listen ports unique."""
    raw_ifaces = t.tables(data, (), "interface")
    if not raw_ifaces:
        raise ConfigError(
            "no [[interface]] table", path=t.path, hint="a profile needs at least one interface"
        )
    interfaces: list[Interface] = []
    labels: set[str] = set()
    ports: dict[int, str] = {}
    for i, raw in enumerate(raw_ifaces):
        loc: Loc = ("interface", i)
        iface = _interface(t, raw, loc, f"wg{i}")
        if iface.name in labels:
            raise t.error(
                loc,
                "name",
                f"{show(iface.name)} is used by another interface",
                hint="interface names must be unique",
            )
        labels.add(iface.name)
        if iface.listen_port:
            if iface.listen_port in ports:
                raise t.error(
                    loc,
                    "listen_port" if "listen_port" in raw else "config",
                    f"port {iface.listen_port} is also used by interface "
                    f"{show(ports[iface.listen_port])}",
                )
            ports[iface.listen_port] = iface.name
        interfaces.append(iface)
    return tuple(interfaces)


def _interface(t: TomlDoc, raw: dict[str, Any], loc: Loc, default_label: str) -> Interface:
    t.check_keys(raw, loc, INTERFACE_KEYS)
    label_text = t.string(raw, loc, "name")
    label = default_label
    if label_text is not None:
        with t.at(loc, "name"):
            label = parse_label(label_text)

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
        except files.Unreadable as e:
            # Point at the TOML line naming the file, not only at the missing file.
            raise t.error(loc, "config", f"cannot read {conf_path}: {e.reason}") from None

    private_key = _secret(t, raw, loc, "private_key")
    if private_key is None:
        raise t.error(loc, None, "needs config, private_key or private_key_file")

    addresses: list[IPInterface] = []
    for item in t.strings(raw, loc, "address"):
        with t.at(loc, "address"):
            for word in split_words(item):
                addr = parse_address(word)
                if addr in addresses:
                    raise Invalid(f"duplicate address {addr}")
                addresses.append(addr)

    listen_port = t.port(raw, loc, "listen_port", lo=0)
    fwmark_text = t.text_or_int(raw, loc, "fwmark")
    fwmark = None
    if fwmark_text is not None:
        with t.at(loc, "fwmark"):
            fwmark = parse_fwmark(fwmark_text)
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
            table = parse_table(table_text)

    peers: list[Peer] = []
    seen: dict[str, int | None] = {}
    for j, raw_peer in enumerate(t.tables(raw, loc, "peer")):
        peer = _peer(t, raw_peer, (*loc, "peer", j))
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


def _secret(t: TomlDoc, raw: dict[str, Any], loc: Loc, key: str) -> Secret | None:
    """KEY inline, or KEY_file naming a key file; never both."""
    inline = t.string(raw, loc, key)
    file = t.string(raw, loc, f"{key}_file")
    if inline is not None and file is not None:
        raise t.error(loc, f"{key}_file", f"set either {key} or {key}_file, not both")
    if inline is not None:
        t.inline_secret = True
        with t.at(loc, key):
            return Secret(parse_key(inline))
    if file is not None:
        key_path = t.resolve(file)
        try:
            return files.read_key_file(key_path, key)
        except files.Unreadable as e:
            raise t.error(loc, f"{key}_file", f"cannot read {key_path}: {e.reason}") from None
    return None


def _peer(t: TomlDoc, raw: dict[str, Any], loc: Loc) -> Peer:
    t.check_keys(raw, loc, PEER_KEYS)
    public = t.string(raw, loc, "public_key")
    if public is None:
        raise t.error(loc, None, "missing public_key in [[interface.peer]]")
    with t.at(loc, "public_key"):
        parse_key(public)
    allowed: list[IPNetwork] = []
    for item in t.strings(raw, loc, "allowed_ips"):
        with t.at(loc, "allowed_ips"):
            allowed.extend(parse_allowed_ip(w) for w in split_words(item))
    endpoint_text = t.string(raw, loc, "endpoint")
    endpoint = None
    if endpoint_text is not None:
        with t.at(loc, "endpoint"):
            endpoint = parse_endpoint(endpoint_text)
    keepalive_text = t.text_or_int(raw, loc, "persistent_keepalive")
    keepalive = None
    if keepalive_text is not None:
        with t.at(loc, "persistent_keepalive"):
            keepalive = parse_keepalive(keepalive_text)
    return Peer(
        public_key=public,
        preshared_key=_secret(t, raw, loc, "preshared_key"),
        allowed_ips=uniq(allowed),
        endpoint=endpoint,
        persistent_keepalive=keepalive,
        line=t.lines.line(loc),
    )


def _hook(t: TomlDoc, raw: dict[str, Any], loc: Loc) -> Hook:
    t.check_keys(raw, loc, HOOK_KEYS)
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


def _forward(t: TomlDoc, raw: dict[str, Any], loc: Loc) -> Forward:
    t.check_keys(raw, loc, FORWARD_KEYS)
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
                sources.append(parse_source_net(item))
    fwd = Forward(
        host_port=host_port,
        ns_port=host_port if ns_port is None else ns_port,
        proto=Proto(proto) if proto is not None else Proto.TCP,
        mode=ForwardMode(mode) if mode is not None else ForwardMode.NAT,
        line=t.lines.line(loc),
    )
    return replace(fwd, sources=uniq(sources)) if sources else fwd
