#!/usr/bin/env bash
# Runs a command inside the backup image's userland (build/image-rootfs, `make image-rootfs`) as the
# image's user, through the image's entry point environment (backup_image/entrypoint.sh). The caller's
# environment is passed through and the network is shared, so services on loopback are reachable.
# Paths the command sees are inside the rootfs. The command keeps this script's PID (exec all the way),
# so a signal sent to that PID reaches the command itself.
#   scripts/in-image.sh ipa-backup --version
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)/build/image-rootfs
root=${IPA_IMAGE_ROOTFS:-$root}
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
[ -x "$root/opt/ipa-backup/bin/ipa-backup" ] || { echo "in-image: $root has no ipa-backup: run 'make image-rootfs'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "in-image: needs root (chroot)" >&2; exit 2; }
# A private mount namespace gives the command /proc without leaving a mount behind.
exec unshare --mount --propagation private /bin/sh -c '
  mount -t proc proc "$0/proc" && exec chroot --userspec=10001:10001 "$0" /usr/local/bin/ipa-backup-env "$@"
' "$root" "$@"
