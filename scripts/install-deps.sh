#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that building and testing smpctl needs, on top of the
# Swift toolchain (Debian 12, Ubuntu 24.04):
#   libudev-dev     device discovery and hotplug (CUdev)
#   libgpiod-dev    interlock inputs on GPIO lines (e-stop, foot pedal) (CGPIOD; v1 and v2 both work)
#   pkg-config      how SwiftPM finds the two libraries above
#   libsqlite3-dev  durable session records
#   python3         helper scripts (scripts/)
#
# Usage: scripts/install-deps.sh [EXTRA-PACKAGE...]
#
# Checks each package with `dpkg -s`. If all are installed it prints nothing and exits 0.
# Otherwise it says what is missing, runs `apt-get update` once and `apt-get install` for the
# missing ones only, through sudo when not run as root. Safe to run again and again.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

packages=(libudev-dev libgpiod-dev pkg-config libsqlite3-dev python3 "$@")

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: this is not a Debian/Ubuntu system (no dpkg/apt-get)." >&2
    echo "install-deps: install these (or your distribution's equivalents) yourself: ${packages[*]}" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    # `dpkg -s` also succeeds for removed packages whose config files remain: check the status.
    if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps: missing packages: ${missing[*]}" >&2
        echo "install-deps: not root and no sudo; as root run: apt-get update && apt-get install ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-deps: missing packages: ${missing[*]}"
echo "install-deps: running ${sudo[*]:+${sudo[*]} }apt-get update, then apt-get install -y --no-install-recommends ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
