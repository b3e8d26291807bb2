#!/usr/bin/env bash
# Installs promtool, prometheus (>= 2.53), amtool, alertmanager (>= 0.28, for msteamsv2_configs)
# and pushgateway, and links them into .tools/bin/. Idempotent: skips everything when
# .tools/bin already holds the right versions.
#
# Debian 13: apt-get install of the distribution packages.
# Debian 12: the Debian 13 packages are fetched with `apt-get download` through a private apt
# configuration under .tools/apt (own sources list, lists and cache; the machine's sources stay
# untouched) and unpacked with `dpkg -x` into .tools/debian13/. The binaries only need libc >= 2.34.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS=$PWD/.tools
BIN=$TOOLS/bin
PACKAGES=(prometheus promtool prometheus-alertmanager prometheus-pushgateway)
# .tools/bin name -> file name in the Debian packages
declare -A SOURCE=([promtool]=promtool [prometheus]=prometheus [amtool]=amtool
  [alertmanager]=prometheus-alertmanager [pushgateway]=prometheus-pushgateway)
declare -A MINIMUM=([promtool]=2.53 [prometheus]=2.53 [amtool]=0.28 [alertmanager]=0.28 [pushgateway]=1.0)
# Debian's alertmanager is built to read its default notification templates from this fixed
# path (patch 02-Do_not_embed_blobs) and refuses to load any configuration without them.
AM_TEMPLATES=/usr/share/prometheus/alertmanager

log() { echo "prometheus-tools: $*"; }
die() { echo "prometheus-tools: ERROR: $*" >&2; exit 1; }

version_of() {  # "prometheus, version 2.53.3+ds1 (branch ...)" -> 2.53.3
  "$1" --version 2>&1 | sed -n '1s/.*version \([0-9][0-9.]*\).*/\1/p'
}

at_least() {  # at_least HAVE WANT
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

tools_ok() {
  local name have
  for name in "${!SOURCE[@]}"; do
    [ -x "$BIN/$name" ] || return 1
    have=$(version_of "$BIN/$name") || return 1
    at_least "$have" "${MINIMUM[$name]}" || return 1
  done
}

templates_ok() {
  cmp -s "$1/default.tmpl" "$AM_TEMPLATES/default.tmpl" && cmp -s "$1/email.tmpl" "$AM_TEMPLATES/email.tmpl"
}

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
unpacked=$TOOLS/debian13
if [ "$codename" = bookworm ]; then
  template_source=$unpacked$AM_TEMPLATES
else
  template_source=$AM_TEMPLATES
fi

if tools_ok && [ -f "$template_source/default.tmpl" ] && templates_ok "$template_source"; then
  log "up to date ($(version_of "$BIN/prometheus") / alertmanager $(version_of "$BIN/alertmanager") / pushgateway $(version_of "$BIN/pushgateway"))"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (needs apt-get and $AM_TEMPLATES)"
mkdir -p "$BIN"

case "$codename" in
  bookworm)
    apt_dir=$TOOLS/apt
    rm -rf "$apt_dir"
    mkdir -p "$apt_dir/etc/sources.list.d" "$apt_dir/etc/preferences.d" "$apt_dir/lists/partial" \
      "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
      > "$apt_dir/etc/sources.list"
    # apt downloads as the unprivileged _apt user.
    if id _apt >/dev/null 2>&1; then
      chown _apt "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    fi
    apt_opts=(
      -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
      -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
      -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
      -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
      -o "Dir::State::Lists=$apt_dir/lists"
      -o "Dir::Cache=$apt_dir/cache"
      -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    )
    log "fetching Debian 13 package lists into $apt_dir"
    apt-get "${apt_opts[@]}" -qq update
    log "downloading ${PACKAGES[*]}"
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "${PACKAGES[@]}")
    rm -rf "$unpacked"
    mkdir -p "$unpacked"
    for deb in "$apt_dir"/debs/*.deb; do
      log "unpacking $(basename "$deb")"
      dpkg -x "$deb" "$unpacked"
    done
    rm -rf "$apt_dir"  # lists and .debs are only needed for this step (~60 MB)
    for name in "${!SOURCE[@]}"; do
      ln -sfn "../debian13/usr/bin/${SOURCE[$name]}" "$BIN/$name"
    done
    ;;
  trixie|forky|sid)
    fresh=()
    for pkg in "${PACKAGES[@]}"; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$pkg")
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    # The packages start network daemons on all interfaces; tests and the drill start their own
    # on loopback, so stop the ones this script brought in.
    if [ -d /run/systemd/system ]; then
      for pkg in "${fresh[@]}"; do
        [ "$pkg" = promtool ] || systemctl disable --now "$pkg" || true
      done
    fi
    for name in "${!SOURCE[@]}"; do
      ln -sfn "/usr/bin/${SOURCE[$name]}" "$BIN/$name"
    done
    ;;
  *)
    die "unsupported system '${codename:-unknown}': expected Debian 12 (bookworm) or 13 (trixie)"
    ;;
esac

# On Debian 12 nothing provides the fixed template path: install the two templates of the
# unpacked Debian 13 package there, unless a Debian package owns a different version of them.
if [ "$template_source" != "$AM_TEMPLATES" ] && ! templates_ok "$template_source"; then
  if owner=$(dpkg -S "$AM_TEMPLATES/default.tmpl" 2>/dev/null); then
    die "$AM_TEMPLATES/default.tmpl belongs to ${owner%%:*}, an older Alertmanager; remove that package"
  fi
  log "installing Alertmanager 0.28 default templates into $AM_TEMPLATES"
  install -D -m 0644 "$template_source/default.tmpl" "$AM_TEMPLATES/default.tmpl"
  install -D -m 0644 "$template_source/email.tmpl" "$AM_TEMPLATES/email.tmpl"
fi

for name in "${!SOURCE[@]}"; do
  [ -x "$BIN/$name" ] || die "$BIN/$name is missing after install"
  have=$(version_of "$BIN/$name")
  at_least "$have" "${MINIMUM[$name]}" || die "$name ${have:-(no version)} is older than ${MINIMUM[$name]}"
  if ldd "$BIN/$name" 2>&1 | grep -q 'not found'; then
    die "$name misses shared libraries: $(ldd "$BIN/$name" | grep 'not found' | tr '\n' ' ')"
  fi
  log "$name $have"
done
templates_ok "$template_source" || die "Alertmanager default templates are missing in $AM_TEMPLATES"
log "installed into $BIN"
