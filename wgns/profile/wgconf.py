"""What `wgns strip` prints: a wg-quick file without its wg-quick keys, as `wg-quick strip` does.

(The `wg setconf` input of a device is rendered by wgns.wireguard.setconf.)
"""

from __future__ import annotations

from wgns.errors import ConfigError
from wgns.profile.conf import wg_quick_pass
from wgns.profile.values import StrPath, lower, show


def strip_conf(text: str, *, path: StrPath | None = None) -> str:
    """Exactly what `wg-quick strip` prints for a file with this content.

    wg-quick dies (printing nothing) on a SaveConfig that is neither true nor false; so do we.
    PATH only goes into that error.
    """
    consumed, rest = wg_quick_pass(text)
    for q in consumed:
        if q.key == "SaveConfig" and lower(q.value) not in ("true", "false"):
            raise ConfigError(
                f"{show(q.value)} is neither true nor false", path=path, line=q.number, key=q.key
            )
    # wg-quick appends "$line\n" per line, then `echo "$WG_CONFIG"` adds one more newline.
    return "".join(line + "\n" for _, line in rest) + "\n"
