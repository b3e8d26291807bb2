#!/usr/bin/env bash
# Builds the backup image's userland into build/image-rootfs: Debian packages from
# backup_image/packages.txt (mmdebstrap), Debian's Python with the pinned wheels of
# backup_image/requirements.txt in a venv at /opt/ipa-backup, the tool itself, the image's user
# (uid 10001) and entry point. The Dockerfile ships exactly this tree; the tests run the tool in it
# with scripts/in-image.sh. Incremental: the Debian/Python layer is rebuilt only when its inputs
# change, the tool (a few seconds) only when its source changes. `--tar` also writes
# build/image-rootfs.tar, the Dockerfile's input. The server packages' maintainer scripts create a
# "main" cluster and a snake-oil TLS key: both are removed (the image only runs a server on a restored
# data directory).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/debian.sh

ROOT=build/image-rootfs
UID_GID=10001
PY=.venv/bin/python
log() { echo "image-rootfs: $*"; }
die() { echo "image-rootfs: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and chroot need it)"
[ -x "$PY" ] || die "$PY is missing: run 'make setup-python' first"
mkdir -p build
exec 9>build/.image-rootfs.lock
flock 9  # tests of several sessions may ask for it at once

packages() { grep -Ev '^\s*(#|$)' backup_image/packages.txt; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
base_want=$(hash_of backup_image/packages.txt backup_image/requirements.txt backup_image/entrypoint.sh \
  scripts/image-rootfs.sh scripts/lib/debian.sh)
tool_want=$(find backup_image/ipa_backup backup_image/pyproject.toml backup_image/README.md -type f -not -name '*.pyc' \
  -print0 | sort -z | xargs -0 cat | sha256sum | cut -d' ' -f1)

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

if [ "$(cat "$ROOT/.base-stamp" 2>/dev/null)" != "$base_want" ]; then
  mirror=$(debian_mirror); security=$(debian_security_mirror)
  [ -n "$mirror" ] || die "no Debian mirror in this machine's apt sources: set DEBIAN_MIRROR"
  [ -n "$security" ] || die "no Debian security mirror in this machine's apt sources: set DEBIAN_SECURITY_MIRROR"
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels" "$ROOT.new"' EXIT
  # Wheels for the image's Python (Debian 13: CPython 3.13), fetched with this machine's pip settings.
  pyver=$(packages | sed -n 's/^python3=\([0-9]*\)\.\([0-9]*\)\..*/\1\2/p')
  log "fetching wheels for CPython ${pyver}"
  "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version "$pyver" --implementation cp --abi "cp$pyver" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$wheels" -r backup_image/requirements.txt 2>&1 | sed '/Location .* is ignored/d'
  log "building the Debian 13 userland ($(packages | wc -l) pinned packages)"
  rm -rf "$ROOT.new"
  # bookworm only for pinned packages that trixie lacks: its priority keeps it from replacing anything.
  epoch=$(git log -1 --format=%ct -- backup_image/packages.txt 2>/dev/null); epoch=${epoch:-0}
  SOURCE_DATE_EPOCH=$epoch mmdebstrap --quiet --variant=minbase --mode=root --format=directory \
    --aptopt='Acquire::Languages "none"' \
    --setup-hook='printf "Package: *\nPin: release n=bookworm\nPin-Priority: 100\n" > "$1/etc/apt/preferences.d/bookworm"' \
    --include="$(packages | paste -sd,)" \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp $wheels/*.whl \"\$1/tmp/wheels/\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/ipa-backup' \
    --customize-hook="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot \"\$1\" /opt/ipa-backup/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /tmp/wheels --only-binary=:all: -r /dev/stdin < backup_image/requirements.txt" \
    --customize-hook='rm -rf "$1/tmp/wheels"' \
    --customize-hook="chroot \"\$1\" useradd --system --uid $UID_GID --user-group --home-dir /work --no-create-home --shell /usr/sbin/nologin ipa-backup" \
    --customize-hook="mkdir -m 0750 \"\$1/work\" && chown $UID_GID:$UID_GID \"\$1/work\"" \
    --customize-hook='install -m 0755 backup_image/entrypoint.sh "$1/usr/local/bin/ipa-backup-env"' \
    --customize-hook='rm -rf "$1/etc/postgresql"/* "$1/var/lib/postgresql"/* "$1/var/log/postgresql"/* "$1"/etc/ssl/*/ssl-cert-snakeoil.*' \
    --customize-hook='rm -rf "$1/var/lib/apt/lists"/* "$1/var/cache/apt"/*' \
    trixie "$ROOT.new" \
    "deb $mirror trixie main" "deb $mirror trixie-updates main" "deb $security trixie-security main" \
    "deb $mirror bookworm main"
  rm -rf "$ROOT"
  mv "$ROOT.new" "$ROOT"
  echo "$base_want" > "$ROOT/.base-stamp"
  rm -f "$ROOT/.tool-stamp"
  trap - EXIT
  rm -rf "$wheels"
fi

if [ "$(cat "$ROOT/.tool-stamp" 2>/dev/null)" != "$tool_want" ]; then
  # The same wheel pip would build from backup_image/ inside the image: pure Python.
  dist=$(mktemp -d)
  "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$dist" ./backup_image 2>&1 \
    | sed '/Location .* is ignored/d'
  wheel=$(basename "$dist"/*.whl)
  mkdir -p "$ROOT/tmp/dist" && cp "$dist/$wheel" "$ROOT/tmp/dist/" && rm -rf "$dist" backup_image/build
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$ROOT" /opt/ipa-backup/bin/pip install --quiet --disable-pip-version-check \
    --no-index --no-deps --force-reinstall "/tmp/dist/$wheel"
  rm -rf "$ROOT/tmp/dist"
  echo "$tool_want" > "$ROOT/.tool-stamp"
  log "installed $(chroot "$ROOT" /opt/ipa-backup/bin/ipa-backup --version)"
else
  log "up to date ($(chroot "$ROOT" /opt/ipa-backup/bin/ipa-backup --version))"
fi

if [ "${1:-}" = --tar ]; then
  tar --sort=name --numeric-owners --mtime=@0 --exclude=./.base-stamp --exclude=./.tool-stamp \
    -C "$ROOT" -cf build/image-rootfs.tar .
  log "wrote build/image-rootfs.tar ($(du -m build/image-rootfs.tar | cut -f1) MB)"
fi
