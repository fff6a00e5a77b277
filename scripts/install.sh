#!/usr/bin/env bash
# Installs everything wgns needs on Debian 12, as root, from a checkout:
#   - the Debian packages listed in scripts/packages/*.txt (core.txt always; the others with --test)
#   - a virtualenv in .venv with wgns (editable) and, with --test, the test tools
#   - /usr/local/bin/wgns: a launcher running this checkout's wgns with python3 -I -S
#   - wgns@.service, wgns-physical@.service (and the wgns generator) under /usr/local/lib/systemd
# Usage: scripts/install.sh [--test]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
with_tests=0
for arg in "$@"; do
	case "$arg" in
	--test) with_tests=1 ;;
	-h|--help) sed -n '2,8p' "$0"; exit 0 ;;
	*) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
	esac
done
[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root (it installs Debian packages)" >&2; exit 1; }

lists=("$root/scripts/packages/core.txt")
if ((with_tests)); then
	for f in "$root"/scripts/packages/*.txt; do [[ $f == */core.txt ]] || lists+=("$f"); done
fi
mapfile -t pkgs < <(cat "${lists[@]}" | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "[install] apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# no Recommends: wireguard-tools would otherwise pull in a whole kernel image
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x $root/.venv/bin/python ]]; then
	echo "[install] $python -m venv $root/.venv"
	"$python" -m venv "$root/.venv"
fi
extra=""
((with_tests)) && extra="[test]"
echo "[install] pip install -e $root$extra"
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root$extra"
# wgns needs nothing outside the standard library, so its launcher skips site-packages
# (-I -S): that saves ~20 ms of interpreter start-up on every command. For the same reason it
# can run the distribution's python3 (3.11 or newer) rather than the one the venv was made
# from: Debian's is built with PGO and LTO and starts ~1.5 ms sooner than a self-built one,
# which is a tenth of what `wgns exec` may cost (docs/exec.md).
interp=$(readlink -f "$root/.venv/bin/python")
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
	interp=$(readlink -f /usr/bin/python3)
fi
tmp=$(mktemp /usr/local/bin/.wgns.XXXXXX)
# the launcher: scripts/wgns-launcher.in with this interpreter and checkout (the tests and
# benchmarks render the same file: wgns/testing/launcher.py)
sed -e "s|@INTERP@|$interp|" -e "s|@ROOT@|$root|" "$root/scripts/wgns-launcher.in" > "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" /usr/local/bin/wgns
# the systemd units for that launcher: wgns@.service, wgns-physical@.service (docs/physical.md)
# and the generator for profiles' `units`, under /usr/local/lib/systemd (docs/systemd.md);
# systemd re-reads them only where it runs
(cd "$root" && "$root/.venv/bin/python" -m wgns.integrations.systemd.units \
	--wgns /usr/local/bin/wgns \
	--unit-dir /usr/local/lib/systemd/system \
	--generator-dir /usr/local/lib/systemd/system-generators) | sed 's/^/[install] wrote /'
if [[ -d /run/systemd/system ]]; then
	echo "[install] systemctl daemon-reload"
	systemctl daemon-reload
fi
echo "[install] done: $(/usr/local/bin/wgns --version)"
