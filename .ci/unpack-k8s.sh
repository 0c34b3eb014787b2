#!/usr/bin/env bash
# Unpacks the Kubernetes binaries of ../shared/k8s (checked against its SHA256SUMS) into
# $PODPATTERNS_K8S_ASSETS (default /opt/podpatterns-k8s), where tests/node/ finds them, the way envtest
# reads KUBEBUILDER_ASSETS. Idempotent: a binary already unpacked from the same .xz is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${PODPATTERNS_K8S_SOURCE:-../shared/k8s}"
dest="${PODPATTERNS_K8S_ASSETS:-/opt/podpatterns-k8s}"
if [ ! -f "$src/SHA256SUMS" ]; then
  echo "unpack-k8s: no $src/SHA256SUMS; the node tests will skip (set PODPATTERNS_K8S_SOURCE)" >&2
  exit 0
fi
(cd "$src" && sha256sum --check --quiet SHA256SUMS)
mkdir -p "$dest"
pids=()
for xz in "$src"/*.xz; do
  name="$(basename "$xz" .xz)"
  stamp="$dest/.$name.sha256"
  sum="$(sha256sum "$xz" | cut -d' ' -f1)"
  if [ -x "$dest/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    continue
  fi
  (xz -dc "$xz" >"$dest/$name.tmp" && chmod 0755 "$dest/$name.tmp" && mv "$dest/$name.tmp" "$dest/$name" \
    && echo "$sum" >"$stamp") &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "unpack-k8s: Kubernetes binaries in $dest" >&2
