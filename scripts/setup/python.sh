#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs the pinned dependencies. Idempotent:
# reinstalls only when a requirements file changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "setup: $PY not found; install Python 3.11 (apt-get install python3.11 python3.11-venv)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.requirements.sha256
want=$(for f in requirements.txt backup_image/requirements.txt backup_image/pyproject.toml; do [ ! -f "$f" ] || cat "$f"; done | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: python dependencies up to date"
  exit 0
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
if [ -f backup_image/pyproject.toml ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r backup_image/requirements.txt
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e backup_image
fi
echo "$want" > "$stamp"
echo "setup: python dependencies installed"
