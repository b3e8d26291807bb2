#!/usr/bin/env bash
# Installs checkov (the security scanner of tests/test_checkov.py) into its own venv, .tools/checkov,
# from the pins of security/checkov-requirements.txt. Its dependencies clash with the project's
# (checkov pins packaging<24, the Pulumi SDK needs packaging>=26), so it cannot share .venv.
# Idempotent: reinstalls only when the requirements file changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3.11}
VENV=.tools/checkov
REQUIREMENTS=security/checkov-requirements.txt
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ -x "$VENV/bin/checkov" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "checkov: up to date ($("$VENV/bin/checkov" --version))"
  exit 0
fi
command -v "$PY" >/dev/null || { echo "checkov: $PY not found" >&2; exit 1; }
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
echo "$want" > "$stamp"
echo "checkov: installed $("$VENV/bin/checkov" --version) into $VENV"
