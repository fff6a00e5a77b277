"""A qemu test VM running Debian 12's own kernel, for tests that need a real kernel.

The host machine's kernel may lack WireGuard, mac80211_hwsim or a usable systemd; the VM has all
three. It boots Debian 12's stock kernel (downloaded with ``apt-get download``, unpacked into a
cache, never installed on the host) with a tiny busybox initramfs that mounts the *host's* root
filesystem read-only over 9p, puts a tmpfs overlay on top for writes, and ``switch_root``s into it.
So the guest sees the same programs, Python and project checkout as the host, and nothing it
writes reaches the host.

    fetch_kernel()        download + unpack the kernel into the cache (idempotent)
    build_initramfs(k)    the busybox initramfs (cpio newc, gzip), cached by content
    run(cmd, init=...)    boot, run ``cmd`` as root with cwd = the project checkout, stream its
                          output line by line, return its exit status (VMResult); with
                          ``root_trees=[DIR, ...]`` those directories are laid over the guest's
                          root first (e.g. packages unpacked by tests/vm/guestpkgs.py)

Boot modes: ``init="plain"`` (a shell script is PID 1, runs the command, powers off) and
``init="systemd"`` (systemd is PID 1; a oneshot unit runs the command, then powers off).

Transport: the command's stdout+stderr go over a virtio serial port (``org.wgns.out``) to a unix
socket on the host, framed by ``WGNS-VM-STARTED-<nonce>`` and ``WGNS-VM-EXIT-<nonce>=<n>`` marker
lines (the nonce is random per run, so output cannot forge them). The serial console (kernel and
init messages) is captured separately; its last lines go into every error.

Guest layout: ``/run/wgns-vm/job`` (9p, rw) holds the per-run scripts; ``/run/wgns-vm/out`` (9p,
rw) is the caller's ``outdir`` if one was given (env ``WGNS_VM_OUT``); the kernel's modules are
mounted at ``/lib/modules/$(uname -r)``. The guest has no network device: its root namespace has
only ``lo``.

CLI::

    python3 -m tests.vm.harness [--init plain|systemd] [--timeout S] [--root-tree DIR] -- CMD...
    python3 -m tests.vm.harness --fetch-only

Environment: ``WGNS_VM_CACHE`` (cache dir, default /var/cache/wgns-vm), ``WGNS_VM_ACCEL``
(``auto``, the default: KVM only if /dev/kvm is usable and a probe boot of this kernel succeeds
within seconds, else TCG - and TCG again if the real KVM boot fails; ``tcg``; ``kvm``),
``WGNS_VM_KERNEL_PKG`` (a specific linux-image package), ``WGNS_VM_VERBOSE=1`` (echo the console
to stderr).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, TextIO

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("/var/cache/wgns-vm")
META_PACKAGE = "linux-image-amd64"
# Modules the initramfs needs; their dependencies are resolved with modprobe --show-depends.
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_console",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "overlay",
)
OUT_PORT = "org.wgns.out"
GUEST_JOB = "/run/wgns-vm/job"
GUEST_OUT = "/run/wgns-vm/out"
MSIZE = 262144
CONSOLE_TAIL = 60
# Units the systemd guest never needs and that only cost boot time (or would try the network).
SYSTEMD_MASK = (
    "apparmor.service",
    "timers.target",
    "systemd-timesyncd.service",
    "systemd-networkd-wait-online.service",
    "systemd-firstboot.service",
    # a tmpfs on /tmp would hide a checkout that lives there (CI may clone anywhere)
    "tmp.mount",
)

InitMode = Literal["plain", "systemd"]
Accel = Literal["tcg", "kvm", "auto"]


class VMError(Exception):
    """The VM could not be prepared, booted, or did not report the command's exit status."""

    qemu_pid: int | None = None  # the qemu that was run (and is gone by the time this is raised)


class FetchError(VMError):
    """The kernel could not be downloaded or unpacked."""


class VMBootError(VMError):
    """The guest never started the command (qemu, kernel or initramfs failed)."""


class VMTimeout(VMError):
    """The VM ran past its hard timeout (qemu was killed)."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # the Debian package version, e.g. 6.1.192-2
    release: str  # `uname -r` in the guest, e.g. 6.1.0-56-amd64
    root: Path  # the unpacked package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        for base in ("lib", "usr/lib"):
            d = self.root / base / "modules" / self.release
            if d.is_dir():
                return d
        raise VMError(f"no modules directory for {self.release} under {self.root}")


@dataclasses.dataclass(frozen=True)
class VMResult:
    returncode: int
    output: str  # the command's stdout+stderr (interleaved as written)
    console_tail: list[str]  # the last lines of the serial console
    boot_seconds: float  # qemu start -> command started in the guest
    total_seconds: float  # qemu start -> exit status received
    accel: str


# --------------------------------------------------------------------------------------------
# the kernel cache


def cache_dir() -> Path:
    return Path(os.environ.get("WGNS_VM_CACHE") or DEFAULT_CACHE)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise VMError(f"{name} not found; install the Debian package {package}")
    return path


def _run_tool(argv: Sequence[str], what: str, *, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"{what}: {e}") from e
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise FetchError(f"{what} failed (exit {p.returncode}):\n{tail}")
    return p.stdout


def _apt_kernel_package() -> str | None:
    """The linux-image-6.1.0-N-amd64 package the metapackage's candidate depends on."""
    apt_cache = _tool("apt-cache", "apt")
    p = subprocess.run(
        [apt_cache, "depends", META_PACKAGE], capture_output=True, text=True, check=False
    )
    for line in p.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-[0-9][^\s(]*-amd64)\s*$", line)
        if m:
            return m.group(1)
    return None


def _apt_candidate(package: str) -> str | None:
    p = subprocess.run(
        [_tool("apt-cache", "apt"), "policy", package],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"^\s*Candidate:\s*(\S+)", p.stdout, re.M)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _resolve_package() -> tuple[str, str]:
    want = os.environ.get("WGNS_VM_KERNEL_PKG")
    for attempt in range(2):
        pkg = want or _apt_kernel_package()
        version = _apt_candidate(pkg) if pkg else None
        if pkg and version:
            return pkg, version
        if attempt == 0:  # no package lists yet (fresh container): update once and retry
            _run_tool([_tool("apt-get", "apt"), "-q", "update"], "apt-get update")
    raise FetchError(
        f"cannot find a Debian kernel package ({want or 'dependency of ' + META_PACKAGE}) "
        "in the apt package lists; is this Debian 12 with the bookworm sources configured?"
    )


def _load_record(cache: Path) -> Kernel | None:
    try:
        rec = json.loads((cache / "kernel.json").read_text())
        k = Kernel(rec["package"], rec["version"], rec["release"], cache / rec["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (k.root / ".complete").exists() or not k.vmlinuz.exists():
        return None
    return k


def fetch_kernel(cache: Path | None = None, *, refresh: bool = False) -> Kernel:
    """Download and unpack Debian 12's kernel into ``cache`` (idempotent, offline once cached).

    With ``refresh`` the apt lists are consulted even if a kernel is cached, and a newer
    package is fetched. Raises :class:`FetchError` with apt's message when the download fails.
    """
    cache = cache or cache_dir()
    with _locked(cache):
        have = _load_record(cache)
        want_pkg = os.environ.get("WGNS_VM_KERNEL_PKG")
        if have and not refresh and (want_pkg is None or want_pkg == have.package):
            return have
        pkg, version = _resolve_package()
        if have and (have.package, have.version) == (pkg, version):
            return have
        name = f"{pkg}_{version}".replace(":", "%3a")
        final = cache / "kernels" / name
        if not (final / ".complete").exists():
            _download_and_unpack(cache, pkg, version, final)
        k = Kernel(pkg, version, _release_of(final), final)
        record = {
            "package": pkg,
            "version": version,
            "release": k.release,
            "dir": str(final.relative_to(cache)),
        }
        tmp = cache / "kernel.json.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(cache / "kernel.json")
        return k


def _release_of(root: Path) -> str:
    for base in ("lib", "usr/lib"):
        d = root / base / "modules"
        if d.is_dir():
            rels = sorted(p.name for p in d.iterdir() if p.is_dir())
            if len(rels) == 1:
                return rels[0]
    raise FetchError(f"cannot determine the kernel release in {root}")


def _fetch_deb(dl: Path, pkg: str, version: str) -> None:
    apt_get = _tool("apt-get", "apt")
    try:
        _run_tool(
            [apt_get, "-q", "-o", "APT::Sandbox::User=root", "download", f"{pkg}={version}"],
            f"apt-get download {pkg}={version} (no network access to the Debian mirror?)",
            cwd=dl,
        )
    except FetchError as first:
        # maybe stale package lists (the version moved on): update once, then retry
        try:
            _run_tool([apt_get, "-q", "update"], "apt-get update")
        except FetchError as e:
            raise FetchError(f"{first}\n(and then {e})") from first
        pkg_version = _apt_candidate(pkg) or version
        _run_tool(
            [apt_get, "-q", "-o", "APT::Sandbox::User=root", "download", f"{pkg}={pkg_version}"],
            f"apt-get download {pkg}={pkg_version} (no network access to the Debian mirror?)",
            cwd=dl,
        )


def _download_and_unpack(cache: Path, pkg: str, version: str, final: Path) -> None:
    dl = cache / "download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)
    try:
        _fetch_deb(dl, pkg, version)
    except FetchError:
        shutil.rmtree(dl, ignore_errors=True)
        raise
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError(f"apt-get download left {len(debs)} .deb files in {dl}")
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run_tool([_tool("dpkg-deb", "dpkg"), "-x", str(debs[0]), str(tmp)], "dpkg-deb -x")
    release = _release_of(tmp)
    _run_tool([_tool("depmod", "kmod"), "-b", str(tmp), release], "depmod")
    (tmp / ".complete").write_text(f"{pkg} {version}\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(dl, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the initramfs

_INIT_SCRIPT = r"""#!/bin/busybox sh
# wgns test VM initramfs (generated by tests/vm/harness.py): mount the host's rootfs (9p, ro)
# under a tmpfs overlay, mount the job dir and the kernel's modules, switch_root into it.
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
fail() {
    echo "WGNS-VM-INIT-FAILED: $*"
    echo 1 > /proc/sys/kernel/sysrq
    echo o > /proc/sysrq-trigger
    sleep 10
    exit 1
}
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in *" wgns.probe=1 "*)
    echo "WGNS-VM-PROBE-OK"; echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger
    sleep 10;;
esac
while read -r m; do
    insmod "/modules/$m" || fail "insmod $m"
done < /modules/order
mount9p() {  # TAG DIR [OPTS]: the virtio device may take a moment to show up
    for i in 1 2 3 4 5 6 7 8 9 10; do
        mount -t 9p -o "trans=virtio,version=9p2000.L,msize=@MSIZE@${3:+,$3}" "$1" "$2" \
            2>/dev/null && return 0
        sleep 0.2
    done
    mount -t 9p -o "trans=virtio,version=9p2000.L,msize=@MSIZE@${3:+,$3}" "$1" "$2"
}
mkdir -p /mnt/lower /mnt/rw /newroot
mount9p root /mnt/lower ro,cache=loose || fail "cannot mount the host rootfs (9p tag root)"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
    overlay /newroot || fail "cannot mount the overlay"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || fail "cannot mount /run"
mkdir -p /newroot@GUEST_JOB@
mount9p wgnsjob /newroot@GUEST_JOB@ || fail "cannot mount the job dir (9p tag wgnsjob)"
case "$cmdline" in *" wgns.out=1 "*)
    mkdir -p /newroot@GUEST_OUT@
    mount9p wgnsout /newroot@GUEST_OUT@ || fail "cannot mount the out dir (9p tag wgnsout)";;
esac
# the guest kernel's modules at /lib/modules/$(uname -r) (the host has another kernel's)
libdir=/newroot/lib
if [ -L "$libdir" ]; then
    t=$(readlink "$libdir")
    case "$t" in /*) libdir="/newroot$t";; *) libdir="/newroot/$t";; esac
fi
kver=$(uname -r)
mkdir -p "$libdir/modules/$kver"
mount9p wgnsmods "$libdir/modules/$kver" ro,cache=loose || fail "cannot mount the modules"
# the host may be a container image: this guest is not a container (systemd would otherwise
# ignore the kernel command line, e.g. systemd.unit=)
rm -f /newroot/.dockerenv /newroot/run/.containerenv
[ -f /newroot@GUEST_JOB@/prepare ] || fail "no prepare script in the job dir"
. /newroot@GUEST_JOB@/prepare
[ -n "$INIT" ] || fail "the prepare script did not set INIT"
for d in dev proc sys; do
    mkdir -p "/newroot/$d"
    mount --move "/$d" "/newroot/$d" || fail "cannot move /$d"
done
exec switch_root /newroot $INIT
"""


def _resolve_modules(kernel: Kernel) -> list[Path]:
    modprobe = _tool("modprobe", "kmod")
    seen: dict[str, Path] = {}
    for mod in INITRAMFS_MODULES:
        p = subprocess.run(
            [modprobe, "-d", str(kernel.root), "-S", kernel.release, "--show-depends", mod],
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode != 0:
            raise VMError(
                f"modprobe --show-depends {mod} for {kernel.release} failed: {p.stderr.strip()}"
            )
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                seen.setdefault(path.name, path)
    return list(seen.values())


def _is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a PT_INTERP (i.e. statically linked)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    (e_phoff,) = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        (p_type,) = struct.unpack_from("<I", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if cand and os.access(cand, os.X_OK):
            path = Path(cand).resolve()
            if not _is_static_elf(path):
                raise VMError(f"{path} is dynamically linked; install busybox-static")
            return path
    raise VMError("busybox not found; install the Debian package busybox-static")


class _Cpio:
    """A cpio archive in the kernel's "newc" format, built in memory."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self._ino += 1
        namebytes = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(namebytes),
            0,
        )
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts.append(hdr + namebytes + b"\0" * (-(len(hdr) + len(namebytes)) % 4))
        self._parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _init_script() -> str:
    return (
        _INIT_SCRIPT.replace("@MSIZE@", str(MSIZE))
        .replace("@GUEST_JOB@", GUEST_JOB)
        .replace("@GUEST_OUT@", GUEST_OUT)
    )


def build_initramfs(kernel: Kernel, cache: Path | None = None) -> Path:
    """The busybox initramfs for ``kernel`` (cached under the kernel's dir, keyed by content)."""
    cache = cache or cache_dir()
    busybox = _busybox()
    modules = _resolve_modules(kernel)
    init = _init_script()
    h = hashlib.sha256(init.encode())
    for p in [busybox, *modules]:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    out = kernel.root / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
    if out.exists():
        return out
    with _locked(cache):
        if out.exists():
            return out
        cpio = _Cpio()
        for d in ("bin", "dev", "proc", "sys", "mnt", "modules", "newroot"):
            cpio.dir(d)
        cpio.chardev("dev/console", 5, 1)
        cpio.chardev("dev/null", 1, 3)
        cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
        cpio.file("init", init.encode(), 0o755)
        for m in modules:
            cpio.file(f"modules/{m.name}", m.read_bytes())
        cpio.file("modules/order", "".join(f"{m.name}\n" for m in modules).encode())
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
        tmp.replace(out)
        for old in kernel.root.glob("initramfs-*.cpio.gz"):
            if old != out:
                old.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# per-run guest scripts

_RUNNER = r"""#!/bin/sh
# Runs the job with its output on the virtio port, framed by marker lines.
port=""
for i in $(seq 1 100); do
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat "$d/name" 2>/dev/null)" = "@PORT@" ] && [ -c "/dev/${d##*/}" ] \
            && port="/dev/${d##*/}"
    done
    [ -n "$port" ] && break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "WGNS-VM-INIT-FAILED: virtio port @PORT@ not found" > /dev/console
    exit 1
fi
exec 3>"$port"
echo "WGNS-VM-STARTED-@NONCE@" >&3
/bin/sh @GUEST_JOB@/cmd.sh </dev/null >&3 2>&3
rc=$?
printf '\nWGNS-VM-EXIT-@NONCE@=%d\n' "$rc" >&3
exec 3>&-
"""

_PLAIN_INIT = r"""#!/bin/sh
# PID 1 of the plain guest: mount the API filesystems, run the job, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /dev/shm /dev/net
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# static device nodes that load their module when opened (e.g. /dev/net/tun for wireguard-go)
while read -r mod name dev; do
    case "$mod" in \#*|"") continue;; esac
    case "$name" in */*) mkdir -p "/dev/${name%/*}";; esac
    t=${dev%%[0-9]*}; mm=${dev#?}
    [ -e "/dev/$name" ] || mknod "/dev/$name" "$t" "${mm%%:*}" "${mm#*:}"
done < "/lib/modules/$(uname -r)/modules.devname"
hostname wgns-vm
ip link set lo up
/bin/sh @GUEST_JOB@/runner
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
sleep 30
"""

_PREPARE_PLAIN = """# sourced by the initramfs /init
@ROOT_TREES@INIT="/bin/sh @GUEST_JOB@/plain-init"
"""

# Lays each root tree (9p tag wgnstreeN) over the guest's root: copied into the tmpfs overlay,
# so that the guest sees those files as if installed (top-level dot files are left out).
_COPY_TREE = """mkdir -p /mnt/tree@N@
mount9p wgnstree@N@ /mnt/tree@N@ ro || fail "cannot mount root tree @N@ (9p tag wgnstree@N@)"
for e in /mnt/tree@N@/*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    cp -a "$e" /newroot/ || fail "cannot copy root tree @N@ ($e) into the guest"
done
umount /mnt/tree@N@
"""

_PREPARE_SYSTEMD = """# sourced by the initramfs /init
@ROOT_TREES@[ -x /newroot/lib/systemd/systemd ] || \
    fail "systemd is not installed on the host rootfs (apt-get install systemd)"
units=/newroot/etc/systemd/system
mkdir -p "$units"
cp /newroot@GUEST_JOB@/units/* "$units/" || fail "cannot install the job units"
for u in @MASK@; do ln -sf /dev/null "$units/$u"; done
# generators cost seconds under emulation (and rerun on every daemon-reload); none is needed
mkdir -p /newroot/etc/systemd/system-generators
for g in /newroot/lib/systemd/system-generators/*; do
    [ -e "$g" ] && ln -sf /dev/null "/newroot/etc/systemd/system-generators/${g##*/}"
done
# the host's fstab is not this machine's; an empty one keeps systemd from waiting for devices
: > /newroot/etc/fstab
# tmpfiles' tmp.conf ("D /tmp") empties /tmp at boot, which would hide a checkout living there
mkdir -p /newroot/etc/tmpfiles.d
: > /newroot/etc/tmpfiles.d/tmp.conf
INIT=/lib/systemd/systemd
"""

_UNIT_TARGET = """[Unit]
Description=wgns test VM
Wants=basic.target wgns-vm-job.service
After=basic.target
AllowIsolate=yes
"""

_UNIT_JOB = f"""[Unit]
Description=wgns test VM job
Wants=basic.target
After=basic.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=exec
ExecStart=/bin/sh {GUEST_JOB}/runner
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
"""


def _guest_env(env: Mapping[str, str] | None, outdir: bool) -> dict[str, str]:
    host_path = os.environ.get("PATH", "")
    exe_dir = str(Path(sys.executable).parent)
    parts = [exe_dir, *host_path.split(":")]
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        parts.append(d)
    path = ":".join(dict.fromkeys(p for p in parts if p))
    out: dict[str, str] = {
        "PATH": path,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "WGNS_IN_VM": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for k in ("PYENV_ROOT", "PYENV_VERSION"):
        if k in os.environ:
            out[k] = os.environ[k]
    if outdir:
        out["WGNS_VM_OUT"] = GUEST_OUT
    out.update(env or {})
    return out


def _write_job(
    job: Path,
    cmd: Sequence[str],
    init: InitMode,
    cwd: Path,
    env: Mapping[str, str],
    nonce: str,
    root_trees: int = 0,
) -> None:
    trees = "".join(_COPY_TREE.replace("@N@", str(i)) for i in range(root_trees))

    def sub(s: str) -> str:
        return (
            s.replace("@ROOT_TREES@", trees)
            .replace("@GUEST_JOB@", GUEST_JOB)
            .replace("@NONCE@", nonce)
            .replace("@PORT@", OUT_PORT)
            .replace("@MASK@", " ".join(SYSTEMD_MASK))
        )

    lines = ["# the job (generated by tests/vm/harness.py)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    q = shlex.quote(str(cwd))
    lines.append(f'cd {q} || {{ echo "wgns-vm: cannot cd to "{q} >&2; exit 125; }}')
    lines.append("exec " + " ".join(shlex.quote(a) for a in cmd))
    (job / "cmd.sh").write_text("\n".join(lines) + "\n")
    (job / "runner").write_text(sub(_RUNNER))
    (job / "plain-init").write_text(sub(_PLAIN_INIT))
    if init == "plain":
        (job / "prepare").write_text(sub(_PREPARE_PLAIN))
    else:
        units = job / "units"
        units.mkdir()
        (units / "wgns-vm.target").write_text(_UNIT_TARGET)
        (units / "wgns-vm-job.service").write_text(_UNIT_JOB)
        (job / "prepare").write_text(sub(_PREPARE_SYSTEMD))
    for f in job.rglob("*"):
        if f.is_file():
            f.chmod(0o755)


# --------------------------------------------------------------------------------------------
# running qemu


class _OutputStream:
    """Parses the job's output stream: markers out, lines to the sink as they complete."""

    def __init__(self, nonce: str, sink: TextIO | None) -> None:
        self._sink = sink
        self._buf = b""
        self._start = f"WGNS-VM-STARTED-{nonce}\n".encode()
        self._exit = re.compile(rb"WGNS-VM-EXIT-" + nonce.encode() + rb"=(-?[0-9]+)\n")
        self._pending_blank = 0
        self._chunks: list[str] = []
        self.preamble = b""  # anything before the start marker (should be nothing)
        self.started = False
        self.exit_status: int | None = None

    def feed(self, data: bytes) -> None:
        if self.exit_status is not None:
            return
        self._buf += data
        if not self.started:
            i = self._buf.find(self._start)
            if i < 0:
                return
            self.preamble, self._buf = self._buf[:i], self._buf[i + len(self._start) :]
            self.started = True
        while self.exit_status is None:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[: nl + 1], self._buf[nl + 1 :]
            m = self._exit.fullmatch(line)
            if m:
                self._finish(int(m.group(1)))
            elif line == b"\n":
                self._pending_blank += 1
            else:
                self._emit("\n" * self._pending_blank + line.decode("utf-8", "replace"))
                self._pending_blank = 0

    def _finish(self, status: int) -> None:
        # the runner prints "\n" before the exit marker: drop that one blank line, or (output
        # without a final newline) the newline it added to the last line
        if self._pending_blank:
            self._pending_blank -= 1
            if self._pending_blank:
                self._emit("\n" * self._pending_blank)
        elif self._chunks and self._chunks[-1].endswith("\n"):
            self._chunks[-1] = self._chunks[-1][:-1]
        self.exit_status = status

    def flush_partial(self) -> None:
        """At EOF without an exit marker: pass on what is left, for the error message."""
        if self.started and self.exit_status is None:
            rest = "\n" * self._pending_blank + self._buf.decode("utf-8", "replace")
            if rest:
                self._emit(rest if rest.endswith("\n") else rest + "\n")
            self._buf = b""
            self._pending_blank = 0

    def _emit(self, text: str) -> None:
        self._chunks.append(text)
        if self._sink is not None:
            self._sink.write(text)
            self._sink.flush()

    @property
    def text(self) -> str:
        return "".join(self._chunks)


class _Console:
    def __init__(self, echo: TextIO | None) -> None:
        self._echo = echo
        self._buf = b""
        self.lines: collections.deque[str] = collections.deque(maxlen=CONSOLE_TAIL)
        self.failed: str | None = None

    def feed(self, data: bytes) -> None:
        if self._echo is not None:
            self._echo.write(data.decode("utf-8", "replace"))
            self._echo.flush()
        self._buf += data
        *done, self._buf = self._buf.split(b"\n")
        for raw in done:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self.lines.append(line)
            if "WGNS-VM-INIT-FAILED:" in line and self.failed is None:
                self.failed = line.split("WGNS-VM-INIT-FAILED:", 1)[1].strip()

    def tail(self) -> list[str]:
        rest = self._buf.decode("utf-8", "replace").rstrip("\r")
        return [*self.lines, rest] if rest else list(self.lines)


def _qemu_binary() -> str:
    q = shutil.which("qemu-system-x86_64")
    if q is None:
        raise VMError("qemu-system-x86_64 not found; install the Debian package qemu-system-x86")
    return q


_kvm_ok: bool | None = None


def _kvm_usable(kernel: Kernel, initrd: Path) -> bool:
    """Whether KVM really boots this kernel here: a probe boot that must finish in seconds."""
    global _kvm_ok
    if _kvm_ok is None:
        _kvm_ok = False
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            argv = [
                _qemu_binary(), "-accel", "kvm", "-cpu", "host", "-m", "512M", "-nodefaults",
                "-display", "none", "-no-reboot", "-serial", "stdio",
                "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1 quiet wgns.probe=1",
            ]  # fmt: skip
            try:
                p = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False
                )
                _kvm_ok = b"WGNS-VM-PROBE-OK" in p.stdout
            except (OSError, subprocess.TimeoutExpired):
                _kvm_ok = False
    return _kvm_ok


def _choose_accel(a: str, kernel: Kernel, initrd: Path) -> str:
    if a not in ("tcg", "kvm", "auto"):
        raise VMError(f"WGNS_VM_ACCEL must be tcg, kvm or auto, not {a!r}")
    if a == "auto":
        return "kvm" if _kvm_usable(kernel, initrd) else "tcg"
    return a


def _qemu_argv(
    kernel: Kernel,
    initrd: Path,
    job: Path,
    sock: Path,
    *,
    init: InitMode,
    accel: str,
    memory: str,
    smp: int,
    outdir: Path | None,
    verbose: bool,
    append_extra: Sequence[str] = (),
    root_trees: Sequence[Path] = (),
) -> list[str]:
    append = [
        "console=ttyS0",
        "panic=-1",
        "mitigations=off",
        "8250.nr_uarts=1",
        "random.trust_cpu=on",
        "loglevel=" + ("7" if verbose else "4"),
        f"wgns.init={init}",
    ]
    if outdir is not None:
        append.append("wgns.out=1")
    if init == "systemd":
        append += ["systemd.unit=wgns-vm.target", "systemd.show_status=auto", "SYSTEMD_COLORS=0"]
    append += list(append_extra)
    argv = [
        _qemu_binary(),
        "-name", "wgns-vm",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(smp),
        "-m", memory,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initrd),
        "-append", " ".join(append),
        "-device", "virtio-rng-pci",
        "-virtfs",
        "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={kernel.modules_dir},mount_tag=wgnsmods,security_model=none,readonly=on",
        "-virtfs", f"local,path={job},mount_tag=wgnsjob,security_model=none,multidevs=remap",
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"socket,id=wgnsout,path={sock}",
        "-device", f"virtserialport,bus=vser.0,chardev=wgnsout,name={OUT_PORT}",
    ]  # fmt: skip
    if outdir is not None:
        argv += [
            "-virtfs",
            f"local,path={outdir},mount_tag=wgnsout,security_model=none,multidevs=remap",
        ]
    for i, tree in enumerate(root_trees):
        argv += [
            "-virtfs",
            f"local,path={tree},mount_tag=wgnstree{i},security_model=none,readonly=on,"
            "multidevs=remap",
        ]
    return argv


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL qemu if the harness dies (even by SIGKILL)."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run(
    cmd: Sequence[str],
    *,
    init: InitMode = "plain",
    timeout: float = 600.0,
    cwd: Path | str = PROJECT_ROOT,
    env: Mapping[str, str] | None = None,
    output: TextIO | None = None,
    outdir: Path | str | None = None,
    memory: str = "2G",
    smp: int = 2,
    accel: Accel | None = None,
    verbose: bool | None = None,
    cache: Path | None = None,
    kernel_args: Sequence[str] = (),
    root_trees: Sequence[Path | str] = (),
) -> VMResult:
    """Boot the VM, run ``cmd`` in it as root (cwd ``cwd``), return its exit status.

    The command's output is streamed line by line to ``output`` (default: ``sys.stdout``; pass
    ``io.StringIO()`` or similar to capture it elsewhere). ``VMResult.output`` has it exactly;
    the stream gets whole lines only (a last line without a newline gets one there).
    ``outdir`` (a host directory) is shared read-write at ``$WGNS_VM_OUT`` in the guest.
    ``root_trees`` (host directories, e.g. unpacked packages from :mod:`tests.vm.guestpkgs`) are
    laid over the guest's root in that order before it boots: their files are copied into the
    tmpfs overlay (a later tree wins; top-level dot files are left out).
    ``timeout`` covers everything from qemu's start to its exit; qemu is killed when it runs out
    (:class:`VMTimeout`). Raises :class:`VMError` with the console's last lines when the VM
    cannot boot or the command's exit status never arrives.
    """
    if not cmd:
        raise ValueError("run() needs a command")
    if init not in ("plain", "systemd"):
        raise ValueError(f"init must be 'plain' or 'systemd', not {init!r}")
    if verbose is None:
        verbose = os.environ.get("WGNS_VM_VERBOSE", "") not in ("", "0")
    sink = sys.stdout if output is None else output
    kernel = fetch_kernel(cache)
    initrd = build_initramfs(kernel, cache)
    requested = accel or os.environ.get("WGNS_VM_ACCEL") or "auto"
    acc = _choose_accel(requested, kernel, initrd)
    outpath = Path(outdir).resolve() if outdir is not None else None
    trees = tuple(Path(t).resolve() for t in root_trees)
    for t in trees:
        if not t.is_dir():
            raise VMError(f"root tree {t} is not a directory")
    t0 = time.monotonic()
    try:
        return _run_once(cmd, init, kernel, initrd, acc, timeout, cwd, env, sink, outpath,
                         memory, smp, verbose, kernel_args, trees)  # fmt: skip
    except VMBootError:
        if not (requested == "auto" and acc == "kvm"):
            raise
    # KVM passed the probe but not the real boot: never again in this process, and use TCG
    global _kvm_ok
    _kvm_ok = False
    print("wgns-vm: KVM boot failed; retrying with TCG", file=sys.stderr)
    rest = max(1.0, timeout - (time.monotonic() - t0))
    try:
        return _run_once(cmd, init, kernel, initrd, "tcg", rest, cwd, env, sink, outpath,
                         memory, smp, verbose, kernel_args, trees)  # fmt: skip
    except VMBootError:
        _kvm_ok = True  # TCG cannot boot it either: not KVM's fault
        raise


def _run_once(
    cmd: Sequence[str],
    init: InitMode,
    kernel: Kernel,
    initrd: Path,
    acc: str,
    timeout: float,
    cwd: Path | str,
    env: Mapping[str, str] | None,
    sink: TextIO,
    outpath: Path | None,
    memory: str,
    smp: int,
    verbose: bool,
    kernel_args: Sequence[str],
    root_trees: Sequence[Path] = (),
) -> VMResult:
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="wgns-vm-") as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        _write_job(job, cmd, init, Path(cwd).resolve(), _guest_env(env, outpath is not None), nonce,
                   len(root_trees))  # fmt: skip
        sock = Path(tmp) / "out.sock"
        argv = _qemu_argv(
            kernel, initrd, job, sock, init=init, accel=acc, memory=memory, smp=smp,
            outdir=outpath, verbose=verbose, append_extra=kernel_args, root_trees=root_trees,
        )  # fmt: skip
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(sock))
            listener.listen(1)
            listener.setblocking(False)
            return _supervise(argv, listener, nonce, sink, timeout, acc, verbose)


def _supervise(
    argv: list[str],
    listener: socket.socket,
    nonce: str,
    sink: TextIO,
    timeout: float,
    accel: str,
    verbose: bool,
) -> VMResult:
    console = _Console(sys.stderr if verbose else None)
    stream = _OutputStream(nonce, sink)
    t0 = time.monotonic()
    deadline = t0 + timeout
    boot_seconds = total_seconds = -1.0
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as e:
        raise VMError(f"cannot start qemu: {e}") from e
    assert proc.stdout is not None
    conn: socket.socket | None = None
    sel = selectors.DefaultSelector()
    try:
        sel.register(proc.stdout, selectors.EVENT_READ, "console")
        sel.register(listener, selectors.EVENT_READ, "listen")
        console_open = True
        conn_done = False
        while True:
            if stream.exit_status is not None:
                break
            if not console_open and (conn is None or conn_done) and proc.poll() is not None:
                break  # qemu is gone and everything it said has been read
            now = time.monotonic()
            if now >= deadline:
                stream.flush_partial()
                raise VMTimeout(
                    _describe(f"the VM did not finish within {timeout:.0f} s; qemu was killed",
                              console, stream, argv)
                )  # fmt: skip
            for key, _ in sel.select(timeout=min(0.5, deadline - now)):
                if key.data == "console":
                    data = os.read(proc.stdout.fileno(), 65536)
                    if data:
                        console.feed(data)
                    else:
                        sel.unregister(proc.stdout)
                        console_open = False
                elif key.data == "listen":
                    conn, _addr = listener.accept()
                    conn.setblocking(False)
                    sel.unregister(listener)
                    sel.register(conn, selectors.EVENT_READ, "out")
                elif conn is not None:
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        continue
                    was_started = stream.started
                    stream.feed(data)
                    if stream.started and not was_started:
                        boot_seconds = time.monotonic() - t0
                    if not data:
                        sel.unregister(conn)
                        conn_done = True
        if stream.exit_status is None:
            stream.flush_partial()
            cls = VMError if stream.started else VMBootError
            if not stream.started:
                why = "the VM did not boot (the guest command never started)"
            else:
                why = "the guest command did not report an exit status"
            if console.failed:
                why += f": {console.failed}"
            raise cls(_describe(f"{why}; qemu exit status {proc.poll()}", console, stream,
                                argv))  # fmt: skip
        total_seconds = time.monotonic() - t0
        # the guest powers itself off right after the marker; give it a moment, then kill
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, min(15.0, deadline - time.monotonic())))
        return VMResult(
            returncode=stream.exit_status,
            output=stream.text,
            console_tail=console.tail(),
            boot_seconds=boot_seconds,
            total_seconds=total_seconds,
            accel=accel,
        )
    except VMError as e:
        e.qemu_pid = proc.pid
        raise
    finally:
        _kill(proc)
        sel.close()
        if conn is not None:
            conn.close()
        proc.stdout.close()


def _describe(why: str, console: _Console, stream: _OutputStream, argv: list[str]) -> str:
    parts = [f"wgns test VM: {why}"]
    out = stream.text.splitlines()[-20:]
    if out:
        parts.append("--- last lines of the guest command's output ---")
        parts += out
    parts.append("--- last lines of qemu's console ---")
    parts += console.tail() or ["(nothing)"]
    parts.append("--- qemu command ---")
    parts.append(shlex.join(argv))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m tests.vm.harness",
        description="Run a command as root in the wgns test VM (Debian 12 kernel under qemu), "
        "with cwd = the project checkout; exits with the command's status.",
    )
    ap.add_argument("--init", choices=("plain", "systemd"), default="plain",
                    help="PID 1 in the guest: a shell script (default) or systemd")  # fmt: skip
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="hard timeout in seconds for boot + command (default 600)")  # fmt: skip
    ap.add_argument("--fetch-only", action="store_true",
                    help="only download/unpack the kernel and build the initramfs")  # fmt: skip
    ap.add_argument("--refresh", action="store_true",
                    help="check apt for a newer kernel package even if one is cached")  # fmt: skip
    ap.add_argument("--accel", choices=("tcg", "kvm", "auto"), default=None,
                    help="qemu accelerator (default $WGNS_VM_ACCEL or auto)")  # fmt: skip
    ap.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    ap.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    ap.add_argument("--cwd", default=str(PROJECT_ROOT), help="cwd in the guest")
    ap.add_argument("--outdir", default=None,
                    help="host dir shared read-write at $WGNS_VM_OUT in the guest")  # fmt: skip
    ap.add_argument("--root-tree", action="append", default=[], metavar="DIR",
                    help="lay DIR over the guest's root before it boots (repeatable)")  # fmt: skip
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the console to stderr")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = ap.parse_args(argv)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    try:
        kernel = fetch_kernel(refresh=args.refresh)
        initrd = build_initramfs(kernel)
        if args.fetch_only:
            print(f"kernel {kernel.package} {kernel.version} ({kernel.release}) in {kernel.root}")
            print(f"initramfs {initrd}")
            return 0
        if not cmd:
            ap.error("no command given (use -- CMD...)")
        res = run(
            cmd,
            init=args.init,
            timeout=args.timeout,
            cwd=args.cwd,
            outdir=args.outdir,
            memory=args.memory,
            smp=args.smp,
            accel=args.accel,
            verbose=args.verbose or None,
            root_trees=args.root_tree,
        )
    except VMError as e:
        print(str(e), file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
    print(
        f"wgns-vm: exit status {res.returncode} (boot {res.boot_seconds:.1f} s, "
        f"total {res.total_seconds:.1f} s, {res.accel})",
        file=sys.stderr,
    )
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
