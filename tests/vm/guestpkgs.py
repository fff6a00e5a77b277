"""Debian packages the test VM's guest needs but this machine must not have installed.

nscd, systemd-resolved and libnss-resolve take over a machine's name resolution once installed
(their maintainer scripts enable and start them). The guest runs them to show that a confined
unit does not reach them; so, like the kernel (tests/vm/harness.py), they are fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` into a cache, never installed here::

    /var/cache/wgns-vm/packages/nscd_2.36-9+deb12u14/      the unpacked package (a root tree)
    /var/cache/wgns-vm/packages/.lock                      held while fetching

The trees are merged-/usr (a package's ``lib/``, ``sbin/`` and ``bin/`` moved under ``usr/``),
like the root file system they are laid over (:func:`tests.vm.harness.run`'s ``root_trees``:
copied into the guest's tmpfs overlay before it boots). Their dependencies (libc, libssl,
libsystemd-shared of the same systemd version, dbus) are the machine's own. Once cached, no apt
access is needed: without package lists, the newest cached version is used.

    python3 -m tests.vm.guestpkgs      fetch them now (and print the trees)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.vm import harness

PACKAGES = ("nscd", "systemd-resolved", "libnss-resolve")
# top-level directories that are symlinks into /usr on the guest's (merged-/usr) root
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# nothing the guest needs, and large: left out of the trees
DROPPED = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian",
           # ifupdown's and ifplugd's hooks (wpasupplicant): symlinks the guest's root may
           # have already, which the initramfs's cp cannot overwrite; the guest needs none
           "etc/network", "etc/ifplugd")  # fmt: skip


def packages_dir(cache: Path | None = None) -> Path:
    return (cache or harness.cache_dir()) / "packages"


def _cached(root: Path, package: str) -> list[Path]:
    """Complete unpacked trees of PACKAGE, newest (by name) last."""
    return sorted(p for p in root.glob(f"{package}_*") if (p / ".complete").exists())


def _merge_into(src: Path, dst: Path) -> None:
    """Move everything under SRC into DST (directories merged), then remove SRC."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge_into(entry, target)
        else:
            entry.rename(target)
    src.rmdir()


def merge_usr(tree: Path) -> None:
    """Make an unpacked package's tree merged-/usr: /lib/x -> /usr/lib/x, and so on."""
    for top in MERGED:
        d = tree / top
        if d.is_dir() and not d.is_symlink():
            _merge_into(d, tree / "usr" / top)
    for rel in DROPPED:
        shutil.rmtree(tree / rel, ignore_errors=True)
    # /run and /var/run are the guest's own tmpfs
    for rel in ("run", "var/run"):
        p = tree / rel
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


def _unpack(root: Path, package: str, version: str) -> Path:
    final = root / f"{package}_{version}".replace(":", "%3a")
    if (final / ".complete").exists():
        return final
    dl = root / "download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)
    try:
        harness._fetch_deb(dl, package, version)
        debs = sorted(dl.glob("*.deb"))
        if len(debs) != 1:
            raise harness.FetchError(f"apt-get download left {len(debs)} .deb files in {dl}")
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        harness._run_tool([harness._tool("dpkg-deb", "dpkg"), "-x", str(debs[0]), str(tmp)],
                          f"dpkg-deb -x {debs[0].name}")  # fmt: skip
        merge_usr(tmp)
        (tmp / ".complete").write_text(f"{package} {version}\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(dl, ignore_errors=True)
    return final


def fetch(
    packages: Sequence[str] = PACKAGES, cache: Path | None = None, *, refresh: bool = False
) -> list[Path]:
    """The unpacked trees of PACKAGES (downloaded and unpacked on first use), in that order.

    A cached tree is used as it is unless ``refresh`` (then the apt candidate is fetched when it
    is newer). Raises :class:`tests.vm.harness.FetchError` with apt's message on failure."""
    root = packages_dir(cache)
    trees = []
    with harness._locked(root):
        for package in packages:
            have = _cached(root, package)
            if have and not refresh:
                trees.append(have[-1])
                continue
            version = harness._apt_candidate(package)
            if version is None:
                harness._run_tool([harness._tool("apt-get", "apt"), "-q", "update"],
                                  "apt-get update")  # fmt: skip
                version = harness._apt_candidate(package)
            if version is None:
                if have:
                    trees.append(have[-1])
                    continue
                raise harness.FetchError(f"no candidate version of {package} in the apt lists")
            trees.append(_unpack(root, package, version))
    return trees


def main() -> int:
    try:
        trees = fetch(refresh="--refresh" in sys.argv[1:])
    except harness.VMError as e:
        print(str(e), file=sys.stderr)
        return 1
    for t in trees:
        print(t)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
