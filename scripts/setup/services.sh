#!/usr/bin/env bash
# Installs the real servers the backup tool's tests and the drill run on loopback:
# PostgreSQL (Debian's), Redis (Debian's) and Azurite (npm, pinned in scripts/setup/azurite/).
# Idempotent: a second run skips what is present; apt-get update runs only when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
have_pg_bin() { ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; }
have_pg_bin initdb && have_pg_bin postgres && have_pg_bin pg_dump && have_pg_bin pg_restore && have_pg_bin pgbench \
  || missing+=(postgresql postgresql-contrib)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: postgresql, redis and node present"
fi

# Azurite: reinstall only when the committed lock file changed.
dest=.tools/azurite
src=scripts/setup/azurite
want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -x "$dest/node_modules/.bin/azurite-blob" ] && [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: azurite up to date"
else
  mkdir -p "$dest"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$want" > "$dest/.stamp"
  echo "setup: azurite installed into $dest"
fi
