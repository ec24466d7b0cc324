#!/usr/bin/env bash
# Regenerates argocd-cm-patch.yaml from health/<Kind>.lua (tests/tests/gitops.rs checks they agree).
set -euo pipefail
cd "$(dirname "$0")"
{
  cat <<'HEAD'
# Patch for Argo CD's argocd-cm ConfigMap: health checks for every azora.io kind, read from the standard
# Ready condition and status.observedGeneration. Generated from health/<Kind>.lua by generate-cm-patch.sh.
# Apply with `kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-patch.yaml`,
# or list it under `patches:` of the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
HEAD
  for f in health/*.lua; do
    kind=$(basename "$f" .lua)
    echo "  resource.customizations.health.azora.io_${kind}: |"
    sed -e 's/^\(.\)/    \1/' "$f"
  done
} > argocd-cm-patch.yaml
