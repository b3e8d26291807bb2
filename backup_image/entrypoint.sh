#!/bin/sh
# The image's environment, for anything the caller did not set; then the command. The container runs
# `tini -- ipa-backup-env ipa-backup ...`, and scripts/in-image.sh runs every command through it too.
export PATH=/opt/ipa-backup/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/work
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
: "${BACKUP_WORK_DIR:=/work}"
: "${TMPDIR:=/work}"
export BACKUP_WORK_DIR TMPDIR
exec "$@"
