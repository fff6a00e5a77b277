"""Finding, reading and validating a profile: what `wgns up PROFILE` starts with.

:func:`load_profile` is the entry point: it finds the file (:func:`resolve_profile_path`), reads
it (a ``.conf`` with :mod:`wgns.profile.conf`, a TOML profile with :mod:`wgns.profile.toml`),
applies the command line's overrides and checks what spans several keys. Nothing is touched but
the files read.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import PurePath

from wgns import log
from wgns.errors import ConfigError
from wgns.profile import conf, files
from wgns.profile.model import Backend, IPAddress, Profile
from wgns.profile.values import show
from wgns.system import netns

ETC_DIR = "/etc/wgns"


def resolve_profile_path(ref: str) -> str:
    """NAME -> /etc/wgns/NAME.toml or NAME.conf; anything with '/' or a suffix is a path."""
    if not ref:
        raise ConfigError("empty profile name")
    if "/" in ref or ref.endswith((".conf", ".toml")):
        if not os.path.exists(ref):
            raise ConfigError("no such file", path=ref)
        return ref
    toml_path, conf_path = f"{ETC_DIR}/{ref}.toml", f"{ETC_DIR}/{ref}.conf"
    found = [p for p in (toml_path, conf_path) if os.path.exists(p)]
    if len(found) == 2:
        raise ConfigError(
            f"profile {show(ref)} is ambiguous: both {toml_path} and {conf_path} exist",
            hint="remove one, or name the file you mean",
        )
    if not found:
        raise ConfigError(
            f"no profile {show(ref)}: neither {toml_path} nor {conf_path} exists",
            hint="name a file (with a '/' or a .conf/.toml suffix) to use one elsewhere",
        )
    return found[0]


def load_profile(ref: str, *, name: str | None = None, backend: str | None = None) -> Profile:
    """Read and validate the profile REF names. NAME (--name) and BACKEND (--backend) override
    the profile's own; never touches anything but the files read."""
    path = resolve_profile_path(ref)
    if name is not None:
        netns.validate_name(name)
    data, mode = files.read_file(path)
    text = files.decode(data, path)
    if PurePath(path).suffix == ".toml":
        from wgns.profile import toml  # tomllib and the TOML schema: for TOML profiles only

        parsed = toml.parse(text, path, name)
        if parsed.holds_secret:
            files.check_private(path, mode)
        profile = parsed.profile
    else:
        iface = conf.parse_conf(text, path=path, label=PurePath(path).stem)
        files.check_private(path, mode)
        profile = Profile(
            name=name if name is not None else files.name_from_file(path),
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
                f"unknown backend {show(backend)}",
                key="backend",
                hint="use auto, kernel or userspace",
            ) from None
    check_dns_routed(profile)
    return profile


def check_dns_routed(profile: Profile) -> None:
    """Every DNS server must be reachable through the tunnel: inside some peer's AllowedIPs
    (WireGuard drops anything else), on loopback, or one of the namespace's own addresses.

    With the kill switch on, queries to any other server go nowhere: a ConfigError at the line
    naming the server. With it off they do not go through the tunnel either (they fail, or leak
    if a hook routes them elsewhere): a warning, and the profile is used as it is.
    """
    for server in profile.dns:
        if _routed(profile, server):
            continue
        path, line, key = _dns_origin(profile, server)
        message = f"{server} is not inside any peer's AllowedIPs"
        if profile.kill_switch:
            raise ConfigError(
                f"{message}: with the kill switch on, queries to it go nowhere",
                path=path,
                line=line,
                key=key,
                hint="add it to AllowedIPs or use a server inside the tunnel",
            )
        # Not refused: the user turned the kill switch off, and a hook may route the server.
        # Said in the form of an error all the same (file:line: key: ...), as a warning.
        warning = ConfigError(
            f"{message}: its queries do not go through the tunnel (kill_switch = false)",
            path=path,
            line=line,
            key=key,
        )
        log.warning("wgns: %s", warning)


def _routed(profile: Profile, server: IPAddress) -> bool:
    if server.is_loopback:
        return True
    for iface in profile.interfaces:
        if any(server == a.ip for a in iface.addresses):
            return True
        if any(server in net for peer in iface.peers for net in peer.allowed_ips):
            return True
    return False


def _dns_origin(profile: Profile, server: IPAddress) -> tuple[str, int | None, str]:
    """The file, line and key that name SERVER: an interface's .conf, else the profile's dns."""
    for iface in profile.interfaces:
        if server in iface.dns and iface.source is not None:
            index = iface.dns.index(server)
            line = iface.dns_lines[index] if index < len(iface.dns_lines) else None
            return iface.source, line, "DNS"
    return profile.source, profile.dns_line, "dns"
