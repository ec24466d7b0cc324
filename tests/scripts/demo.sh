#!/usr/bin/env bash
# make demo: a local control plane (real etcd + kube-apiserver), four simulated regions on 127.0.0.11-14,
# two operator replicas (each probes every region and serves DNS), the regions and policies applied; then
# africa goes down for real (SIGSTOP), the failover is shown as it happens, africa comes back, and traffic
# fails back after the hold-down; a PostgreSQL database follows the failover (fenced, promoted before DNS moves,
# rebuilt and switched back); a chaos experiment drains Lagos and measures the failover. Everything stops on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/azora/target}
DEMO=$ROOT/.demo
DNS_A=127.0.0.1:15353
DNS_B=127.0.0.1:15354
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
say() { printf '\033[0;33m[%6.1fs]\033[0m %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }

step "Installing etcd, kube-apiserver (built from Debian's kubernetes source, cached), kubectl, helm, dig"
bash tests/scripts/install-kube.sh >/dev/null
TOOLS=$(bash tests/scripts/install-tools.sh)
bash tests/scripts/install-dns.sh
bash tests/scripts/install-s3.sh >/dev/null
bash tests/scripts/install-openbao.sh >/dev/null
bash tests/scripts/install-postgres.sh >/dev/null
command -v bc >/dev/null || { apt-get install -y -qq bc >/dev/null 2>&1 || true; }
export PATH="$TOOLS:$PATH"
step "Building the operator and the kubectl azora plugin"
cargo build --workspace --bins -q

rm -rf "$DEMO"; mkdir -p "$DEMO/bin"
# kubectl finds plugins on PATH: `kubectl azora` runs kubectl-azora (`make install` puts it in /usr/local/bin).
ln -sf "$TARGET/debug/kubectl-azora" "$DEMO/bin/kubectl-azora"
export PATH="$DEMO/bin:$PATH"
pids=()
PGBIN=/usr/lib/postgresql/15/bin
PGDIR=/tmp/azora-demo-pg
pg_pids() { local pm; pm=$(head -1 "$PGDIR/$1/postmaster.pid" 2>/dev/null) || return 0; echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"; }
pg_stop_all() { for r in africa europe; do [ -d "$PGDIR/$r" ] || continue; for p in $(pg_pids $r); do kill -CONT "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/$r" -m immediate -w -t 10 stop >/dev/null 2>&1 || true; done; }
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; pg_stop_all; wait 2>/dev/null || true; }
trap cleanup EXIT

step "Starting the local control plane (etcd + kube-apiserver 1.20, token auth, RBAC), per region a cluster and an S3 store, and OpenBao in africa and europe"
"$TARGET/debug/azora-testenv" up --dir "$DEMO" --regions africa,europe,asia,americas --vault-regions africa,europe \
  2>"$DEMO/testenv.log" &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$DEMO/kubeconfig" ] && break; sleep 1; done
[ -f "$DEMO/kubeconfig" ] || { cat "$DEMO/testenv.log"; exit 1; }
export KUBECONFIG=$DEMO/kubeconfig

step "Installing the nine azora.io CRDs (server-side apply; CEL rules left out for this 1.20 server)"
"$TARGET/debug/azora-operator" crd --strip-cel | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl get crd -o name | sed 's/^/    /'

step "Starting four simulated regions: africa 127.0.0.11, europe .12, asia .13, americas .14 (port 8080)"
declare -A SIM
for r in africa:11 europe:12 asia:13 americas:14; do
  name=${r%%:*}; ip=127.0.0.${r##*:}
  "$TARGET/debug/azora-region-sim" --listen "$ip:8080" --name "$name" 2>/dev/null &
  SIM[$name]=$!; pids+=($!)
done

step "Starting two operator replicas: both probe every region and serve DNS; one leads"
STARTED=$(date +%s)
"$TARGET/debug/azora-operator" run --identity replica-a --metrics-addr 127.0.0.1:19090 --dns-addr $DNS_A \
  --dns-verify-peer $DNS_B --log-format text 2>"$DEMO/operator-a.log" &
pids+=($!)
"$TARGET/debug/azora-operator" run --identity replica-b --metrics-addr 127.0.0.1:19091 --dns-addr $DNS_B \
  --dns-verify-peer $DNS_A --log-format text 2>"$DEMO/operator-b.log" &
pids+=($!)

step "Applying regions/, the demo overlay of policies/ (20 s failback hold-down) and chaos/"
kubectl apply --server-side -k regions/
# The regions/ manifests name no cluster or store (production overlays do): point them at the local ones.
for r in africa europe asia americas; do
  kubectl patch region "$r" --type merge -p "$(jq -c --arg r "$r" '.[$r] | {spec: {
    cluster: {kubeconfigSecret: {name: ("kubeconfig-" + $r), key: "kubeconfig"}},
    objectStore: {endpoint: .endpoint, bucket: .bucket, credentialsSecret: {name: ("s3-" + $r)}}}}' "$DEMO/regions.json")" >/dev/null
done
kubectl create secret generic demo-backup-key --from-literal=key="$(head -c 32 /dev/urandom | base64)" >/dev/null
kubectl apply --server-side -k tests/demo/
kubectl apply --server-side -k chaos/ >/dev/null

answer() { dig +short +time=1 +tries=1 @"${1%:*}" -p "${1##*:}" api.azora.example A 2>/dev/null | head -1; }
step "Waiting for all four regions to be Healthy and DNS to answer"
for _ in $(seq 1 90); do
  healthy=$(kubectl get regions -o jsonpath='{range .items[*]}{.status.verdict}{"\n"}{end}' | grep -c '^Healthy$' || true)
  [ "$healthy" = 4 ] && [ "$(answer $DNS_A)" = 127.0.0.11 ] && [ "$(answer $DNS_B)" = 127.0.0.11 ] && break
  sleep 1
done
kubectl get regions
kubectl get lease azora-operator -o custom-columns=LEADER:.spec.holderIdentity,EPOCH:.spec.leaseTransitions
echo "    dig @${DNS_A} api.azora.example -> $(answer $DNS_A)   dig @${DNS_B} -> $(answer $DNS_B)   (africa)"
# A new leader judges no region Down until it has seen every live observer report (15 s): the outage
# below is the steady-state case, so it waits that out.
wait_s=$(( STARTED + 20 - $(date +%s) ))
if [ "$wait_s" -gt 0 ]; then
  echo "    (the leader sees every observer report before judging a region down: ${wait_s}s of takeover warm-up left)"
  sleep "$wait_s"
fi

watch_until() { # watch_until <expected answer> <timeout s>: print every change as it happens
  local want=$1 deadline=$(( $(date +%s) + $2 )) last=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local obs verdict a b line
    verdict=$(kubectl get region africa -o jsonpath='{.status.verdict}' 2>/dev/null)
    obs=$(kubectl get region africa -o jsonpath='{range .status.observers[*]}{.name}={.verdict}({.consecutiveFailures}) {end}' 2>/dev/null)
    a=$(answer $DNS_A); b=$(answer $DNS_B)
    line="africa verdict=${verdict:-?}  observers: ${obs:-none}  DNS: a=${a:-none} b=${b:-none}"
    [ "$line" != "$last" ] && say "$line" && last=$line
    [ "$a" = "$want" ] && [ "$b" = "$want" ] && return 0
    sleep 0.3
  done
  return 1
}
timeline() {
  # DNS answers a moment before the verified step is recorded: wait (at most 10 s) for the record.
  for _ in $(seq 1 50); do
    [ -n "$(kubectl get failoverpolicy platform -o jsonpath='{.status.lastFailover.verifiedTime}')" ] && break
    sleep 0.2
  done
  kubectl get failoverpolicy platform -o json | jq -r '.status.lastFailover |
    "    epoch \(.epoch): \(.from) -> \(.to) (\(.reason))",
    "      detected    \(.detectedTime)", "      decided     \(.decidedTime)",
    "      DNS updated \(.dnsUpdatedTime)", "      verified    \(.verifiedTime)",
    "      total       \(.totalMs) ms from detection to verified answers"'
}

step "BACKUPS: tenant acme (Lagos home, Frankfurt failover, Africa/Europe only) is backed up every 30 s"
REG_AFRICA=$(jq -r '.africa.kubeconfig' "$DEMO/regions.json")
REG_EUROPE=$(jq -r '.europe.kubeconfig' "$DEMO/regions.json")
kubectl apply --server-side -f - >/dev/null <<'TENANT'
apiVersion: azora.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  homeRegion: africa
  failoverRegions: [europe]
  residency: {allowedContinents: [Africa, Europe]}
TENANT
kubectl wait --for=condition=Ready tenant/acme --timeout=90s >/dev/null
kubectl --kubeconfig "$REG_AFRICA" -n tenant-acme create configmap checkout --from-literal=currency=NGN >/dev/null
kubectl --kubeconfig "$REG_AFRICA" -n tenant-acme create secret generic db --from-literal=password=demo-secret-value >/dev/null
echo "    in africa's tenant-acme: configmap/checkout, secret/db (sealed with AES-256-GCM inside the backup)"
BACKUP=""
for _ in $(seq 1 90); do
  BACKUP=$(kubectl get backups -o json | jq -r '[.items[] | select(.status.phase=="Succeeded")] | sort_by(.metadata.creationTimestamp) | last | .metadata.name // empty')
  [ -n "$BACKUP" ] && break
  sleep 1
done
kubectl get backups
[ -n "$BACKUP" ] && kubectl get backup "$BACKUP" -o json | jq -r '.status.locations[] | "    copy in \(.region): \(.bucket)/\(.key) verified=\(.verified) (\(.sizeBytes) bytes)"'
for _ in $(seq 1 20); do [ -n "$(kubectl get bs platform -o jsonpath='{.status.rpoSeconds}')" ] && break; sleep 1; done
echo "    (never in asia or americas: residency)  RPO now: $(kubectl get bs platform -o jsonpath='{.status.rpoSeconds}')s"

step "SECRETS: acme's database password, generated in Lagos's OpenBao (check-and-set), replicated to Frankfurt's, synced into both clusters"
for r in africa europe; do
  kubectl patch region "$r" --type merge -p "$(jq -c --arg r "$r" '.[$r] | {spec: {vault: {address: .vault,
    kvMount: "secret", tokenSecret: {name: ("vault-" + $r), key: "token"}}}}' "$DEMO/regions.json")" >/dev/null
done
kubectl patch tenant acme --type merge -p '{"spec": {"secrets": [{"name": "db", "vaultPath": "tenants/acme/db",
  "targetSecret": "db-credentials", "gracePeriod": "1m", "generator": {"kind": "Characters", "length": 32, "key": "password"}}]}}' >/dev/null
secret_state() {
  kubectl get tenant acme -o json | jq -r '.status.secrets[0] // {} | "    db: version \(.version // 0) \(.phase // "-")" +
    (if .regions then "  " + ([.regions[] | "\(.region): vault v\(.vaultVersion // 0), Secret v\(.syncedVersion // 0)"] | join("  ")) else "" end)'
}
wait_secret() { # wait_secret <version>
  for _ in $(seq 1 60); do
    [ "$(kubectl get tenant acme -o jsonpath='{.status.secrets[0].version}/{.status.secrets[0].phase}')" = "$1/Done" ] && return 0
    sleep 1
  done
  return 1
}
wait_secret 1 || echo "    (version 1 not everywhere within 60s — see $DEMO/operator-*.log)"
secret_state
sec_json() { kubectl --kubeconfig "$REG_EUROPE" -n tenant-acme get secret db-credentials -o json 2>/dev/null; }
echo "    europe's tenant-acme/db-credentials: keys=$(sec_json | jq -r '.data | keys | join(",")') version=$(sec_json | jq -r '.metadata.annotations["azora.io/secret-version"]')  (values only in data, never in status)"
echo "    rotate now: kubectl azora rotate acme --wait   (sets the azora.io/rotate-now annotation, follows status)"
kubectl azora rotate acme --wait --timeout 90s 2>&1 | sed 's/^/    /' || true
wait_secret 2 || echo "    (version 2 not everywhere within 60s — see $DEMO/operator-*.log)"
secret_state
echo "    europe's db-credentials now: keys=$(sec_json | jq -r '.data | keys | join(",")') version=$(sec_json | jq -r '.metadata.annotations["azora.io/secret-version"]')  (previous-password until the 1m grace period ends)"
kubectl get regions africa europe -o json | jq -r '.items[] | "    region \(.metadata.name): " +
  ([.status.conditions[]? | select(.type=="VaultReachable") | "VaultReachable=\(.status) (\(.reason))"] | join(""))'
kubectl get events --field-selector reason=SecretRotated -o custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message 2>/dev/null \
  | tail -2 | sed 's/^/    /' || true

step "DATABASE: PostgreSQL 15 'orders' — primary in Lagos, synchronous standby in Frankfurt, a region agent next to each; its primary follows policy platform"
pg_stop_all; rm -rf "$PGDIR"; mkdir -p "$PGDIR"
PGPW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "$PGPW" > "$PGDIR/pw"; chown -R postgres:postgres "$PGDIR"
pg_conf() { cat >> "$PGDIR/$1/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$PGDIR'
wal_level = replica
hot_standby = on
wal_log_hints = on
cluster_name = '$1'
CONF
  chown -R postgres:postgres "$PGDIR/$1"; }
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/africa" -U postgres --pwfile="$PGDIR/pw" -A scram-sha-256 --no-sync >/dev/null
pg_conf africa 15432
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/africa" -l "$PGDIR/africa.log" -w start >/dev/null
runuser -u postgres -- "$PGBIN/pg_basebackup" -d "host=127.0.0.1 port=15432 user=postgres password=$PGPW" \
  -D "$PGDIR/europe" -R -X stream -c fast --no-sync
pg_conf europe 15433
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/europe" -l "$PGDIR/europe.log" -w start >/dev/null
kubectl create secret generic pg-credentials --from-literal=username=postgres --from-literal=password="$PGPW" >/dev/null
kubectl apply --server-side -f - >/dev/null <<DB
apiVersion: azora.io/v1alpha1
kind: Database
metadata: {name: orders}
spec:
  engine: PostgreSQL
  followPolicy: platform
  replication: {mode: Synchronous, syncStandbys: 1}
  members:
    - {region: africa, endpoint: "127.0.0.1:15432", credentials: {name: pg-credentials}}
    - {region: europe, endpoint: "127.0.0.1:15433", credentials: {name: pg-credentials}}
DB
for r in africa europe; do
  "$TARGET/debug/azora-operator" agent --region $r --database orders --pg-data "$PGDIR/$r" --pg-os-user postgres \
    --pg-log "$PGDIR/$r.log" --log-format text 2>"$DEMO/agent-$r.log" &
  pids+=($!)
done
for _ in $(seq 1 60); do
  [ "$(kubectl get db orders -o jsonpath='{.status.conditions[?(@.type=="Replicating")].status}')" = True ] && break
  sleep 1
done
kubectl get db orders
kubectl get db orders -o json | jq -r '.status.members[] | "    \(.region): \(.role) at \(.position // "?")\(if .syncState then " sync=" + .syncState + " lag=" + ((.lagBytes // 0)|tostring) + "B" else "" end)"'
echo "    africa's synchronous_standby_names (set by the operator): $(PGPASSWORD=$PGPW "$PGBIN/psql" -h 127.0.0.1 -p 15432 -U postgres -Atc 'show synchronous_standby_names')"
db_timeline() {
  kubectl get db orders -o json | jq -r '.status | "    database orders: primary \(.primaryRegion), epoch \(.epoch)",
    (.lastFailover // empty | "      \(.from) -> \(.to) (\(.reason)): detected \(.detectedTime)", "      fenced      \(.fencedTime)  (\(.fence))",
     "      promoted    \(.promotedTime)", "      repointed   \(.repointedTime // "-")", "      DNS updated \(.dnsUpdatedTime // "-")")'
}

step "OUTAGE: africa stops answering (SIGSTOP: connections hang) — its region endpoint and its PostgreSQL"
T0=$(date +%s.%N)
kill -STOP "${SIM[africa]}"
for p in $(pg_pids africa); do kill -STOP "$p" 2>/dev/null || true; done
say "africa SIGSTOPped"
watch_until 127.0.0.12 40 || echo "    (no failover within 40s — see $DEMO/operator-*.log)"
say "DNS now answers europe on both replicas"
timeline
echo "    Events:"
kubectl get events --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message 2>/dev/null \
  | grep -E "RegionDown|FailoverDecided|FailoverVerified" | tail -3 | sed 's/^/    /' || true
for _ in $(seq 1 20); do [ "$(kubectl get db orders -o jsonpath='{.status.lastFailover.dnsUpdatedTime}')" != "" ] && break; sleep 0.5; done
echo "    The database moved first — fence, promote, then DNS:"
db_timeline

if [ -n "$BACKUP" ]; then
  step "RESTORE: acme's backup into a scratch namespace in Frankfurt, from Frankfurt's own copy, verified"
  kubectl apply --server-side -f - >/dev/null <<RESTORE
apiVersion: azora.io/v1alpha1
kind: Restore
metadata: {name: acme-to-europe}
spec: {backup: $BACKUP, targetRegion: europe, targetNamespace: acme-restored}
RESTORE
  for _ in $(seq 1 60); do
    phase=$(kubectl get restore acme-to-europe -o jsonpath='{.status.phase}')
    { [ "$phase" = Succeeded ] || [ "$phase" = Failed ]; } && break
    sleep 1
  done
  kubectl get restore acme-to-europe -o json | jq -r '.status | "    \(.phase): \(.objectsRestored) objects read from the \(.sourceRegion) copy, verified=\(.verified)", (.timeline[] | "      \(.step): \(.message)")'
  echo "    europe acme-restored/checkout: currency=$(kubectl --kubeconfig "$REG_EUROPE" -n acme-restored get configmap checkout -o jsonpath='{.data.currency}')"
fi

step "RECOVERY: africa comes back (SIGCONT); its old primary is fenced and rebuilt as a standby by its agent; traffic and the primary return after 3 good rounds and the 20 s hold-down"
T0=$(date +%s.%N)
kill -CONT "${SIM[africa]}"
for p in $(pg_pids africa); do kill -CONT "$p" 2>/dev/null || true; done
say "africa resumed"
watch_until 127.0.0.11 90 || echo "    (no failback within 90s — see $DEMO/operator-*.log)"
say "DNS answers africa again"
timeline
for _ in $(seq 1 30); do [ "$(kubectl get db orders -o jsonpath='{.status.primaryRegion}')" = africa ] && break; sleep 1; done
kubectl get events --field-selector involvedObject.name=orders --sort-by=.lastTimestamp \
  -o custom-columns=REASON:.reason,MESSAGE:.message 2>/dev/null | grep -E "SecondPrimaryFenced|MemberRebuilt|DatabasePromoted" | tail -4 | sed 's/^/    /' || true
echo "    The planned switchover back (fence Frankfurt, wait for Lagos to catch up, promote):"
db_timeline

step "MANUAL FAILOVER: an on-call engineer moves traffic to Singapore and back with kubectl azora"
echo "    kubectl azora failover platform --to asia --reason 'demo: Lagos maintenance' --wait"
kubectl azora failover platform --to asia --reason 'demo: Lagos maintenance' --wait --timeout 60s 2>&1 | sed 's/^/    /' || true
echo "    dig @${DNS_A} api.azora.example -> $(answer $DNS_A)   (asia)"
echo "    kubectl azora failover platform --clear --wait"
kubectl azora failover platform --clear --wait --timeout 60s 2>&1 | sed 's/^/    /' || true
echo "    dig @${DNS_A} api.azora.example -> $(answer $DNS_A)   (africa)"

step "CHAOS: experiment lagos-drain run now — Lagos drained at the control plane for 20 s (mode Drain: nothing harmed), the failover measured, the drain ended"
kubectl apply --server-side -f - >/dev/null <<'YAML'
apiVersion: azora.io/v1alpha1
kind: ChaosExperiment
metadata: {name: lagos-drain}
spec:
  fault: {type: RegionOutage, region: africa, mode: Drain}
  duration: 20s
  schedule: "0 3 1 1 *"
  steadyState: {minHealthyRegions: 4, tenantsReady: false}
  expect: {failoverWithin: 15s}
YAML
sleep 2
T0=$(date +%s.%N)
echo "    kubectl azora chaos run lagos-drain --wait"
kubectl azora chaos run lagos-drain --wait --timeout 3m 2>&1 | sed 's/^/    /' || true
kubectl get chaosexperiment lagos-drain -o jsonpath='{range .status.lastRun.timeline[*]}{.time}  {.step}  {.message}{"\n"}{end}' 2>/dev/null | sed 's/^/    /' || true
watch_until 127.0.0.11 60 || echo "    (no failback within 60s — see $DEMO/operator-*.log)"
say "DNS answers africa again after the drain and the hold-down"

step "kubectl get azora"
kubectl get regions,failoverpolicies,tenants,backupschedules,databases,chaosexperiments,drdrills

step "kubectl azora status"
kubectl azora status
step "kubectl azora timeline platform"
kubectl azora timeline platform
printf '\nDemo done: logs in %s.\n' "$DEMO"
