"""Operations: the only things that change the system (see wgns.engine.ops.base).

The core ops, by resource: namespaces (netns), WireGuard devices (wireguard), links (link), the
nft table (nft) and hooks (hook). Ops of features live with their feature and are named in
KIND_MODULES, so that a journal that names them can be read.
"""

from wgns.engine.ops.base import KIND_MODULES, Context, Op
from wgns.engine.ops.hook import RunHook
from wgns.engine.ops.link import ConfigureLink, LinkUp, MoveLink, ip_batch
from wgns.engine.ops.netns import AddNetns, WriteNetnsFiles
from wgns.engine.ops.nft import NftTable
from wgns.engine.ops.wireguard import ConfigureWireguard, CreateWireguard

__all__ = [
    "KIND_MODULES",
    "AddNetns",
    "ConfigureLink",
    "ConfigureWireguard",
    "Context",
    "CreateWireguard",
    "LinkUp",
    "MoveLink",
    "NftTable",
    "Op",
    "RunHook",
    "WriteNetnsFiles",
    "ip_batch",
]
