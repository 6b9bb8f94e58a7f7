#!/usr/bin/env bash
# Compiles the C shim (Sources/CSMPShim/smp_shim.c) against BOTH libgpiod APIs, so a change that
# breaks the path this machine does not build is caught here and not on the applicator's computer:
#   1. against the libgpiod 2.x headers of Debian's bookworm-backports (libgpiod-dev 2.1.3), fetched
#      once with `apt-get download` through a private, temporary apt configuration (the system's
#      sources, lists and caches are not touched; no root needed) and unpacked with `dpkg-deb -x`
#      into the git-ignored cache .build-gpiod-v2/;
#   2. against the system's own gpiod.h (libgpiod-dev 1.6.x on Debian 12: the v1 API).
# Each compile is `cc -fsyntax-only -Werror -Wall -Wextra`; the script prints which libgpiod API
# each one used (read back from the shim's SMP_GPIO_API_VERSION macro) and fails unless the first
# used v2 and the second the system's API.
#
# Usage: scripts/check-gpiod-v2.sh [--refresh]
#   --refresh   download the v2 headers again even if the cache has them
# Environment: CC (default cc), GPIOD_V2_SUITE (default bookworm-backports),
#   DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Run by `make check-gpiod` (part of `make test`).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
refresh=false
[[ "${1:-}" == "--refresh" ]] && refresh=true

root="$(cd "$(dirname "$0")/.." && pwd)"
cc="${CC:-cc}"
suite="${GPIOD_V2_SUITE:-bookworm-backports}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cache="$root/.build-gpiod-v2"
v2_include="$cache/root/usr/include"
shim="$root/Sources/CSMPShim/smp_shim.c"
shim_include="$root/Sources/CSMPShim/include"

say() { echo "check-gpiod: $*"; }
fail() { echo "check-gpiod: $*" >&2; exit 1; }

command -v "$cc" >/dev/null 2>&1 || fail "no C compiler '$cc' (set CC)"

fetch_v2_headers() {
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
        || fail "apt-get and dpkg-deb are needed to fetch the libgpiod v2 headers (Debian/Ubuntu only)"
    [[ -r "$keyring" ]] || fail "$keyring is missing (apt-get install debian-archive-keyring)"

    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/smp-gpiod-v2.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/sources.list.d"
    echo "deb [signed-by=$keyring] $mirror $suite main" >"$tmp/sources.list"

    # A private apt: only our sources list (SourceParts points at an empty directory, so
    # /etc/apt/sources.list.d is not read), our own lists and caches, no translations. As root,
    # apt would drop to the `_apt` user for downloads, which cannot enter our mode-0700 temp dir.
    local apt_options=(
        -o "Dir::Etc::SourceList=$tmp/sources.list"
        -o "Dir::Etc::SourceParts=$tmp/sources.list.d"
        -o "Dir::State::Lists=$tmp/lists"
        -o "Dir::Cache=$tmp/cache"
        -o "APT::Get::List-Cleanup=false"
        -o "Acquire::Languages=none"
    )
    if ((EUID == 0)); then apt_options+=(-o "APT::Sandbox::User=root"); fi

    say "fetching the libgpiod-dev package index of $suite from $mirror"
    apt-get "${apt_options[@]}" -qq update \
        || fail "apt-get update of $suite failed (no network, or $mirror unreachable?)"
    local version
    version="$(apt-cache "${apt_options[@]}" show "libgpiod-dev/$suite" 2>/dev/null \
        | sed -n 's/^Version: //p' | head -n1)"
    [[ "$version" == 2.* ]] || fail "$suite has libgpiod-dev '${version:-none}', not a 2.x version"
    say "downloading libgpiod-dev $version"
    (cd "$tmp" && apt-get "${apt_options[@]}" -qq download "libgpiod-dev/$suite") \
        || fail "apt-get download libgpiod-dev/$suite failed"

    local deb
    deb="$(ls "$tmp"/libgpiod-dev_*.deb)"
    rm -rf "$cache/root"
    mkdir -p "$cache/root"
    # Only the headers are needed; the archive also holds static libraries, which are kept out.
    dpkg-deb -x "$deb" "$tmp/unpacked"
    mkdir -p "$v2_include"
    cp -R "$tmp/unpacked/usr/include/." "$v2_include/"
    echo "$version" >"$cache/VERSION"
    rm -rf "$tmp"
    trap - EXIT
}

if $refresh || [[ ! -f "$v2_include/gpiod.h" ]]; then
    fetch_v2_headers
else
    say "using cached libgpiod-dev $(cat "$cache/VERSION" 2>/dev/null || echo '?') headers in ${cache#"$root"/}/"
fi

# compile LABEL EXPECTED-API [-I DIR...]: syntax-check the shim, then read back the API it chose.
compile() {
    local label="$1" expected="$2"
    shift 2
    local flags=(-std=gnu11 -Wall -Wextra -Werror -I "$shim_include" "$@")
    "$cc" -fsyntax-only "${flags[@]}" "$shim" || fail "$label: smp_shim.c does not compile"
    local api
    api="$("$cc" -E -dM "${flags[@]}" "$shim" | sed -n 's/^#define SMP_GPIO_API_VERSION \([0-9]\).*/\1/p')"
    [[ -n "$api" ]] || fail "$label: could not read SMP_GPIO_API_VERSION back from the shim"
    if [[ -n "$expected" && "$api" != "$expected" ]]; then
        fail "$label: the shim used the libgpiod v$api API, expected v$expected"
    fi
    say "$label: smp_shim.c compiles cleanly with the libgpiod v$api API"
}

compile "libgpiod-dev $(cat "$cache/VERSION" 2>/dev/null || echo 2.x) headers (${v2_include#"$root"/})" 2 \
    -I "$v2_include"

if [[ -f /usr/include/gpiod.h ]]; then
    system_version="$(dpkg-query -W -f '${Version}' libgpiod-dev 2>/dev/null || echo '?')"
    compile "system headers (libgpiod-dev $system_version, /usr/include/gpiod.h)" ""
else
    fail "no /usr/include/gpiod.h: install libgpiod-dev (scripts/install-deps.sh)"
fi
