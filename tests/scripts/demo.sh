#!/usr/bin/env bash
# make demo: a local control plane (real etcd + kube-apiserver), the Azora CRDs, the operator, the four
# regions and the default policies, then what `kubectl get azora` shows. Everything stops on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/azora/target}
DEMO=$ROOT/.demo
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

step "Installing etcd, kube-apiserver (built from Debian's kubernetes source, cached), kubectl and helm"
bash tests/scripts/install-kube.sh >/dev/null
TOOLS=$(bash tests/scripts/install-tools.sh)
export PATH="$TOOLS:$PATH"
step "Building the operator"
cargo build --workspace --bins -q

rm -rf "$DEMO"; mkdir -p "$DEMO"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "Starting the local control plane (etcd + kube-apiserver 1.20, token auth, RBAC)"
"$TARGET/debug/azora-testenv" up --dir "$DEMO" 2>"$DEMO/testenv.log" &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$DEMO/kubeconfig" ] && break; sleep 1; done
[ -f "$DEMO/kubeconfig" ] || { cat "$DEMO/testenv.log"; exit 1; }
export KUBECONFIG=$DEMO/kubeconfig
kubectl version 2>/dev/null | sed 's/^/    /'

step "Installing the eight azora.io CRDs (server-side apply; CEL rules left out for this 1.20 server)"
"$TARGET/debug/azora-operator" crd --strip-cel | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

step "Starting two operator replicas (only KUBECONFIG set); one takes the leader Lease"
"$TARGET/debug/azora-operator" run --identity replica-a --metrics-addr 127.0.0.1:19090 --log-format text 2>"$DEMO/operator-a.log" &
pids+=($!)
"$TARGET/debug/azora-operator" run --identity replica-b --metrics-addr 127.0.0.1:19091 --log-format text 2>"$DEMO/operator-b.log" &
pids+=($!)
for _ in $(seq 1 30); do kubectl get lease azora-operator >/dev/null 2>&1 && break; sleep 1; done
kubectl get lease azora-operator -o custom-columns=LEASE:.metadata.name,HOLDER:.spec.holderIdentity,EPOCH:.spec.leaseTransitions

step "Applying regions/ (kustomize), policies/ and chaos/"
kubectl apply --server-side -k regions/
kubectl apply --server-side -k policies/
kubectl apply --server-side -k chaos/

step "Waiting for every Region to be Ready"
kubectl wait --for=condition=Ready regions --all --timeout=90s

step "kubectl get regions"
kubectl get regions
step "kubectl get azora"
kubectl get azora
step "A bad Tenant: home region outside its residency is refused with a reason, and nothing is placed"
cat <<'YAML' | kubectl apply -f -
apiVersion: azora.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  homeRegion: asia
  failoverRegions: [europe]
  residency: {allowedContinents: [Europe]}
YAML
for _ in $(seq 1 30); do
  r=$(kubectl get tenant acme -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null)
  [ -n "$r" ] && break; sleep 1
done
kubectl get tenants -o wide
kubectl get tenant acme -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}Ready={.status} reason={.reason}: {.message}{"\n"}{end}'
step "Leader metrics"
curl -s 127.0.0.1:19090/metrics 2>/dev/null | grep -E '^azora_leader' || true
curl -s 127.0.0.1:19091/metrics 2>/dev/null | grep -E '^azora_leader' || true
printf '\nDemo done: logs in %s. Health probing and DNS failover arrive with their own capability.\n' "$DEMO"
