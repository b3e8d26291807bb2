#!/usr/bin/env bash
# Pins every image the prod stack's charts run by digest: renders the charts at the versions the
# prod stack pins (with the charts' own tags: the current pins are left out of that render),
# resolves each tag's digest in its registry, and writes `ipa-ops:chartImages` into
# Pulumi.prod.yaml. Needs registry access and `crane` (go-containerregistry) or `skopeo`; run it
# after every chart version change, review the diff, commit. docs/monitoring/image-pinning.md.
#
#   scripts/pin-chart-images.sh [STACK_FILE]     (default Pulumi.prod.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
STACK_FILE=${1:-Pulumi.prod.yaml}
PY=.venv/bin/python
log() { echo "pin-chart-images: $*"; }
die() { echo "pin-chart-images: ERROR: $*" >&2; exit 1; }

digest_of() {
  if command -v crane >/dev/null; then
    crane digest "$1"
  elif command -v skopeo >/dev/null; then
    skopeo inspect --format '{{.Digest}}' "docker://$1"
  else
    die "neither crane nor skopeo is installed"
  fi
}

[ -f "$STACK_FILE" ] || die "no stack file $STACK_FILE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The charts' own tags: render a copy without the pins, as a dev stack (the prod-only checks,
# which require the pins, don't apply to it; chart versions and values paths are the same).
sed -e '/^  ipa-ops:chartImages:/,/^  [^ ]/{/^  ipa-ops:chartImages:/d;/^    /d}' \
    -e 's/^  ipa-ops:environment: .*/  ipa-ops:environment: dev/' "$STACK_FILE" >"$work/stack.yaml"
$PY -m offline.render --stack pin --stack-file "$work/stack.yaml" --out "$work/build" >/dev/null
pins=()
while read -r name reference; do
  digest=$(digest_of "$reference")
  [[ "$digest" =~ ^sha256:[a-f0-9]{64}$ ]] || die "$reference: no digest (got '$digest')"
  log "$name $reference@$digest"
  pins+=("$name=${reference##*:}@$digest")
done < <($PY -m components.chart_images list "$work/build")
$PY -m components.chart_images write "$STACK_FILE" "${pins[@]}"
log "wrote ${#pins[@]} pins into $STACK_FILE"
