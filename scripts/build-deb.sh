#!/usr/bin/env bash
# Builds the Debian package smpctl_<version>_<arch>.deb with Debian's own tools (`make deb`).
#
# Usage: scripts/build-deb.sh [OUTDIR]          (default: .build-deb; the package lands there)
#
# What goes in (packaging/deb/ holds the package's own files):
#   /usr/bin/smpctl                 release build, Swift runtime and Foundation linked statically
#                                   (scripts/install.sh bin: the clinic computer has no toolchain)
#   /usr/share/man/man1/smpctl*.1.gz, bash/zsh/fish completions  (scripts/install.sh bin)
#   /usr/lib/udev/rules.d/70-smp-applicator.rules                (scripts/install.sh udev)
#   /etc/smpctl/machine.toml        conffile that enables nothing (developer mode until edited)
#   /etc/security/limits.d/10-smpctl.conf  conffile: group smp may use SCHED_FIFO (rtprio 99). Not
#                                   smp.conf, which the docs have administrators write by hand (dpkg
#                                   would stop at a conffile question); read before it, so theirs wins
#   /usr/share/doc/smpctl/          copyright, changelog, the operator docs, examples/
#   DEBIAN/postinst, prerm, postrm  group smp, udev reload; records are never touched
# Depends: from the binary's real needs (dpkg-shlibdeps), plus passwd (groupadd in postinst).
#
# Variables: SWIFT, SCRATCH, SWIFTFLAGS as for scripts/install.sh;
#   DEB_VERSION     (default: what the built `smpctl --version` says)
#   DEB_MAINTAINER  (default: the project's address, as in its commits; a vendor sets its own)
#   SOURCE_DATE_EPOCH (default: the last commit's time) — dates and file times in the package
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
umask 022
OUT=${1:-.build-deb}
SCRATCH=${SCRATCH:-.build}
PKG=packaging/deb
STAGE=$OUT/stage
DOC=$STAGE/usr/share/doc/smpctl
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

say() { echo "build-deb: $*"; }

# /usr/share/doc/smpctl/copyright: smpctl, and what is linked statically into it (the Swift
# runtime and the packages SwiftPM resolved), each with its licence; Apache-2.0 by reference.
write_copyright() {
    cat "$PKG/copyright"
    local dir name license
    for dir in "$SCRATCH"/checkouts/*/; do
        name=$(basename "$dir")
        license=$(compgen -G "$dir/LICENSE*" | head -n1 || true)
        [[ -n "$license" ]] || { echo "build-deb: no licence file in $dir" >&2; return 1; }
        printf '\n%s\n%s\n' "$name" "${name//?/-}"
        if grep -q 'Apache License' "$license"; then
            echo "Apache License 2.0: /usr/share/common-licenses/Apache-2.0"
            cat "$dir"/NOTICE* 2>/dev/null || true
        else
            cat "$license"
        fi
    done
}

rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN"

# The binary, completions, man pages, the udev rule and the limits.d line for group smp: the same
# steps as `make install` / `make install-udev` (LIMITSDIR is /etc/security/limits.d under DESTDIR).
PREFIX=/usr DESTDIR=$STAGE ZSHCOMPDIR=/usr/share/zsh/vendor-completions scripts/install.sh bin udev
smpctl=$STAGE/usr/bin/smpctl
strip --remove-section=.comment "$smpctl"   # the compilers' version strings, as dh_strip does
gzip -9nf "$STAGE"/usr/share/man/man1/*.1

install -D -m 0644 "$PKG/machine.toml" "$STAGE/etc/smpctl/machine.toml"
test -f "$STAGE/etc/security/limits.d/10-smpctl.conf" || { echo "build-deb: install.sh staged no limits.d file" >&2; exit 1; }
install -D -m 0644 "$PKG/lintian-overrides" "$STAGE/usr/share/lintian/overrides/smpctl"

version=${DEB_VERSION:-$("$smpctl" --version)}
arch=$(dpkg --print-architecture)
# Not the last commit's author: whoever commits (a merge) would become the package's maintainer.
maintainer=${DEB_MAINTAINER:-smpctl maintainers <maintainers@users.noreply.r-seed-bdc9baf9.example>}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
date_r=$(date -u -R -d "@$SOURCE_DATE_EPOCH")

# Documentation: what an operator needs on a computer without the repository.
install -d "$DOC/examples"
install -m 0644 Examples/hairline.json Examples/machine.toml "$DOC/examples/"
for page in operator-guide machine-config records plan-format; do
    gzip -9nc "docs/$page.md" >"$DOC/$page.md.gz"
done
printf 'smpctl (%s) unstable; urgency=medium\n\n  * Built from commit %s; the history is the repository'"'"'s.\n\n -- %s  %s\n' \
    "$version" "$commit" "$maintainer" "$date_r" | gzip -9n >"$DOC/changelog.gz"
write_copyright >"$DOC/copyright"

# Maintainer scripts and conffiles.
install -m 0755 "$PKG/postinst" "$PKG/prerm" "$PKG/postrm" "$STAGE/DEBIAN/"
printf '/etc/smpctl/machine.toml\n/etc/security/limits.d/10-smpctl.conf\n' >"$STAGE/DEBIAN/conffiles"

# Depends from the libraries the binary really links: dpkg-shlibdeps wants a debian/control.
shlib_dir=$(mktemp -d)
trap 'rm -rf "$shlib_dir"' EXIT
mkdir "$shlib_dir/debian"
printf 'Source: smpctl\n\nPackage: smpctl\nArchitecture: any\n' >"$shlib_dir/debian/control"
binary=$(realpath "$smpctl")
depends=$(cd "$shlib_dir" && dpkg-shlibdeps -O "$binary" | sed -n 's/^shlibs:Depends=//p')
[[ -n "$depends" ]] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
say "Depends (dpkg-shlibdeps): $depends"

installed_size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
    "$PKG/control" >"$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$STAGE/DEBIAN/md5sums"

deb=$OUT/smpctl_${version}_${arch}.deb
rm -f "$OUT"/smpctl_*.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1))"
