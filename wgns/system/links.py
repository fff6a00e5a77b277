"""Links by name, for the ops and the backends: does one exist, delete one, and a netlink socket
(wgns.system.rtnl) whose failure to open is a WgnsError."""

from __future__ import annotations

import socket

from wgns.errors import WgnsError
from wgns.system import netns, rtnl


def reason(e: BaseException) -> str:
    """What a failed netlink request says (an OSError's strerror, which rtnl fills in)."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def connect(ns: str | None) -> rtnl.Rtnl:
    """A socket in NS (None: the calling thread's namespace), or a WgnsError saying why not."""
    try:
        return rtnl.Rtnl(ns)
    except OSError as e:
        where = f"namespace {ns}" if ns else "this namespace"
        raise WgnsError(f"cannot open a netlink socket in {where}: {reason(e)}") from None


def link_exists(ifname: str, *, ns: str | None) -> bool:
    """IFNAME exists in NS (None: the calling thread's namespace); False when NS does not."""
    if ns is not None and not netns.exists(ns):
        return False
    with netns.entered(ns):
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return False
    return True


def delete_link(ifname: str, *, ns: str | None) -> bool:
    """`ip link del IFNAME` in NS (None: the calling thread's namespace). False when IFNAME, or
    NS, is not there; a WgnsError for any other failure."""
    if ns is not None and not netns.exists(ns):
        return False
    with connect(ns) as nl:
        try:
            return nl.del_link(ifname)
        except (OSError, ValueError) as e:
            raise WgnsError(f"cannot delete {ifname}: {reason(e)}") from None
