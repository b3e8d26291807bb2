# Sourced by scripts that fetch Debian packages: the archive and security mirrors this machine's apt
# already uses (so no host is written into the project), overridable with DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR.

_apt_uris() {
  { cat /etc/apt/sources.list 2>/dev/null; cat /etc/apt/sources.list.d/*.list 2>/dev/null; } \
    | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }'
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
}

debian_mirror() {
  [ -n "${DEBIAN_MIRROR:-}" ] && { echo "$DEBIAN_MIRROR"; return; }
  _apt_uris | grep -E '/debian/?$' | head -n1 | sed 's:/$::'
}

debian_security_mirror() {
  [ -n "${DEBIAN_SECURITY_MIRROR:-}" ] && { echo "$DEBIAN_SECURITY_MIRROR"; return; }
  _apt_uris | grep -E '/debian-security/?$' | head -n1 | sed 's:/$::'
}
