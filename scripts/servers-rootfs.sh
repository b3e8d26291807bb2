#!/usr/bin/env bash
# Builds build/servers-rootfs: Debian 13's PostgreSQL 17 and Redis 8 servers, for the tests that pair
# the image's clients with every server major they support (this machine's own Debian 12 packages
# give PostgreSQL 15 and Redis 7). devservices/ starts them with chroot on loopback. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/debian.sh

ROOT=build/servers-rootfs
PACKAGES=(postgresql-17 redis-server)
log() { echo "servers-rootfs: $*"; }
die() { echo "servers-rootfs: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and chroot need it)"
mkdir -p build
exec 9>build/.servers-rootfs.lock
flock 9
want=$( (echo "${PACKAGES[*]}"; cat scripts/servers-rootfs.sh) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$ROOT/.stamp" 2>/dev/null)" = "$want" ]; then
  log "up to date"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run scripts/image-rootfs.sh first (it installs it)"
mirror=$(debian_mirror); security=$(debian_security_mirror)
[ -n "$mirror" ] && [ -n "$security" ] || die "no Debian mirrors in this machine's apt sources: set DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR"
rm -rf "$ROOT.new"
trap 'rm -rf "$ROOT.new"' EXIT
log "building Debian 13 with ${PACKAGES[*]}"
# policy-rc.d: the packages' maintainer scripts must not start servers inside the build.
mmdebstrap --quiet --variant=minbase --mode=root --format=directory --aptopt='Acquire::Languages "none"' \
  --essential-hook='printf "#!/bin/sh\nexit 101\n" > "$1/usr/sbin/policy-rc.d" && chmod 755 "$1/usr/sbin/policy-rc.d"' \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='rm -rf "$1/var/lib/apt/lists"/* "$1/var/cache/apt"/*' \
  trixie "$ROOT.new" "deb $mirror trixie main" "deb $mirror trixie-updates main" "deb $security trixie-security main"
rm -rf "$ROOT"
mv "$ROOT.new" "$ROOT"
trap - EXIT
echo "$want" > "$ROOT/.stamp"
log "PostgreSQL $(chroot "$ROOT" /usr/lib/postgresql/17/bin/postgres --version | awk '{print $3}'), $(chroot "$ROOT" redis-server --version | awk '{print $3}')"
