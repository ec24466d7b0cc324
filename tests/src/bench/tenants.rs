//! `azora-bench tenants`: N tenants across four real regional clusters and four S3 servers.
//! 1. cold start: tenants exist, the operator starts; time until every tenant is Ready (placed and in sync
//!    in every region it may live in);
//! 2. full resync: the operator restarts and re-reads everything; write requests counted by the regional
//!    API servers themselves (`apiserver_request_total`) plus Tenant status writes on the hub;
//! 3. replication: objects written to every tenant's home bucket; lag measured from the end of each upload
//!    to the replica first appearing in a listing of each replica bucket (polled every 2 s, so the lag is
//!    overstated by up to that much).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use azora_tests::fleet::{CONTINENTS, Fleet};
use azora_tests::scenario::ar;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;

use super::percentile;

fn spec(i: usize) -> (String, serde_json::Value, Vec<String>) {
    let names: Vec<&str> = CONTINENTS.iter().map(|(n, _)| *n).collect();
    let home = names[i % 4];
    let f1 = names[(i + 1) % 4];
    let f2 = names[(i + 2) % 4];
    let mut spec = json!({
        "homeRegion": home, "failoverRegions": [f1, f2],
        "quotas": {"cpu": "4", "memory": "8Gi", "pods": 40},
        "limits": {"cpu": "250m", "memory": "256Mi"},
        "adminGroups": [format!("t{i}:admins")]
    });
    // every third tenant may only live in its home region's continent
    let placed = if i.is_multiple_of(3) {
        let continent = CONTINENTS[i % 4].1;
        spec["residency"] = json!({"allowedContinents": [continent]});
        vec![home.to_string()]
    } else {
        vec![home.to_string(), f1.to_string(), f2.to_string()]
    };
    (format!("t{i:05}"), spec, placed)
}

async fn ready_count(hub: &kube::Client) -> usize {
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Tenant", "tenants"));
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|t| {
            t.data["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .count()
}

/// The operator's noop syncs over every region: `None` while it has counted none (the labelled series
/// appears with the first). A failed scrape is an error, never 0.
async fn noop_syncs(fleet: &Fleet) -> anyhow::Result<Option<f64>> {
    let text = fleet.metrics_text().await?;
    let mut sum = None;
    for l in text
        .lines()
        .filter(|l| l.starts_with("azora_tenant_syncs_total{") && l.contains("result=\"noop\""))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unparsable sample line {l:?}"))?;
        *sum.get_or_insert(0.0) += v;
    }
    Ok(sum)
}

/// Runs the benchmark and prints the one-line summary.
pub async fn run(count: usize, objects: usize, operator_args: &[String]) -> anyhow::Result<()> {
    let extra: Vec<&str> = operator_args.iter().map(String::as_str).collect();
    let regions: Vec<&str> = CONTINENTS.iter().map(|(n, _)| *n).collect();
    let mut fleet = Fleet::start(&regions).await?;
    let hub = fleet.hub().await?;
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let t = Instant::now();
    let creates = futures::stream::iter((0..count).map(spec))
        .map(|(name, s, p)| {
            let hub = hub.clone();
            async move {
                let body = json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": s});
                azora_tests::scenario::create(&hub, "tenants", body).await.map(|()| (name, p))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for c in creates {
        let (name, p) = c?;
        placed.insert(name, p);
    }
    let pairs: usize = placed.values().map(Vec::len).sum();
    eprintln!(
        "created {count} tenants ({pairs} tenant-region placements) in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // 1. cold start
    let t = Instant::now();
    fleet.start_operator(&extra)?;
    let mut last = 0;
    loop {
        let n = ready_count(&hub).await;
        if n != last {
            eprintln!("  {:>5.1}s ready {n}/{count}", t.elapsed().as_secs_f64());
            last = n;
        }
        if n >= count {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(900),
            "cold start did not finish in 900s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cold_start = t.elapsed().as_secs_f64();
    let applied = fleet.metric("azora_regional_writes_total").await?;
    eprintln!("cold start: {cold_start:.1}s, {applied} regional writes");

    // 2. full resync: restart, wait until every placement was re-read, count writes. Ready says placed;
    //    replication still records its first `Replicated` and lags after that, and those first writes are
    //    not the restart's. So the restart waits until the hub has seen no Tenant write for 10 s (a status
    //    that never stops changing fails here, with the count).
    let t = Instant::now();
    let mut last = fleet.env.hub().write_requests(Some(&["tenants"])).await?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fleet.env.hub().write_requests(Some(&["tenants"])).await?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "Tenant status writes never stopped after the cold start (still writing after 300s: {now} so far)"
        );
    }
    eprintln!(
        "settled: no Tenant write for 10s after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    fleet.kill_operator();
    let regional_before = fleet.regional_writes().await?;
    let hub_before = fleet.env.hub().write_requests(Some(&["tenants"])).await?;
    let t = Instant::now();
    fleet.start_operator(&extra)?;
    loop {
        // Just restarted: until its /metrics answers, a failed scrape means "not yet" (and is reported if
        // it never answers); no noop series yet means no placement re-read yet.
        let scrape = noop_syncs(&fleet).await;
        if matches!(scrape, Ok(Some(n)) if n as usize >= pairs) {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "resync did not finish in 600s (last scrape: {scrape:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resync = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let regional_after = fleet.regional_writes().await?;
    let hub_after = fleet.env.hub().write_requests(Some(&["tenants"])).await?;
    let noop_writes = (regional_after - regional_before) + (hub_after - hub_before);
    let syncs_noop = noop_syncs(&fleet)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no noop syncs counted after the resync"))?;
    eprintln!(
        "resync: {pairs} placements re-read in {resync:.1}s (incl. leader election), {syncs_noop} syncs; writes: regional {} + hub tenants {}",
        regional_after - regional_before,
        hub_after - hub_before
    );
    if hub_after > hub_before
        && let Some(op) = &fleet.operator
    {
        // The operator logs why it writes a status (debug): show a few, so a regression names itself.
        let text = op.log_text();
        let why: Vec<&str> = text.lines().filter(|l| l.contains("\"status write\"")).collect();
        eprintln!("status writes after the restart ({} logged), e.g.:", why.len());
        for l in why.iter().take(8) {
            eprintln!("  {l}");
        }
    }

    // 3. replication lag
    let t = Instant::now();
    let mut uploaded: BTreeMap<String, (Instant, Vec<String>)> = BTreeMap::new();
    let jobs: Vec<(String, String, Vec<String>)> = placed
        .iter()
        .flat_map(|(name, p)| {
            (0..objects).map(move |k| {
                (
                    format!("tenants/{name}/obj-{k}.json"),
                    p[0].clone(),
                    p[1..].to_vec(),
                )
            })
        })
        .collect();
    let stores: BTreeMap<String, _> = regions
        .iter()
        .map(|r| Ok((r.to_string(), fleet.store(r)?)))
        .collect::<anyhow::Result<_>>()?;
    let puts = futures::stream::iter(jobs)
        .map(|(key, home, targets)| {
            let store = stores.get(&home).cloned();
            async move {
                let body = format!("{{\"key\":\"{key}\",\"pad\":\"{}\"}}", "x".repeat(2048)).into_bytes();
                let store = store.ok_or_else(|| anyhow::anyhow!("no store"))?;
                store.put_bytes(&key, body).await?;
                anyhow::Ok((key, Instant::now(), targets))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for p in puts {
        let (key, at, targets) = p?;
        uploaded.insert(key, (at, targets));
    }
    let expected: usize = uploaded.values().map(|(_, t)| t.len()).sum();
    eprintln!(
        "uploaded {} objects in {:.1}s; {expected} replicas expected",
        uploaded.len(),
        t.elapsed().as_secs_f64()
    );
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.len() < expected && Instant::now() < deadline {
        for r in &regions {
            let Some(store) = stores.get(*r) else { continue };
            let Ok(list) = store.list("tenants/").await else {
                continue;
            };
            let now = Instant::now();
            for o in list {
                let Some((at, targets)) = uploaded.get(&o.key) else {
                    continue;
                };
                if targets.iter().any(|t| t == r) && seen.insert((o.key.clone(), r.to_string())) {
                    lags.push(now.duration_since(*at).as_secs_f64());
                }
            }
        }
        // Listing thousands of keys costs the S3 servers (and the shared CPU) real work: poll every 2 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    anyhow::ensure!(
        seen.len() == expected,
        "only {}/{expected} replicas appeared in 600s",
        seen.len()
    );
    lags.sort_by(f64::total_cmp);
    let p50 = percentile(&lags, 50.0);
    let p99 = percentile(&lags, 99.0);
    eprintln!(
        "replication: {expected} replicas, lag p50 {p50:.1}s p99 {p99:.1}s max {:.1}s",
        lags.last().copied().unwrap_or_default()
    );
    // 4. the same objects applied by a plain concurrent server-side-apply client to the same API servers
    //    (under other names, so they are created as at the operator's cold start): the floor the operator's
    //    own overhead is measured against.
    fleet.kill_operator();
    let raw_apply = raw_apply(&fleet, count, extra_concurrency(operator_args)).await?;
    println!(
        "tenants={count} regions={} cold_start_s={cold_start:.1} raw_apply_s={raw_apply:.1} overhead={:.2} noop_writes={noop_writes} replication_lag_p99_s={p99:.1}",
        regions.len(),
        cold_start / raw_apply
    );
    Ok(())
}

/// Requests in flight per regional cluster the operator was given (`--cluster-concurrency`, default 16).
fn extra_concurrency(args: &[String]) -> usize {
    args.iter()
        .find_map(|a| a.strip_prefix("--cluster-concurrency=")?.parse().ok())
        .unwrap_or(16)
}

/// Applies every tenant's objects (namespace first, then the rest of the region's objects) with plain
/// server-side apply, `per_cluster` requests in flight per regional cluster; returns the seconds it took.
async fn raw_apply(fleet: &Fleet, count: usize, per_cluster: usize) -> anyhow::Result<f64> {
    use azora_api::tenant::TenantSpec;
    use kube::api::{Patch, PatchParams};
    let mut by_region: BTreeMap<String, Vec<(String, TenantSpec)>> = BTreeMap::new();
    for i in 0..count {
        let (name, spec, placed) = spec(i);
        let spec: TenantSpec = serde_json::from_value(spec)?;
        for r in placed {
            by_region
                .entry(r)
                .or_default()
                .push((format!("raw-{name}"), spec.clone()));
        }
    }
    let mut clients = BTreeMap::new();
    for r in by_region.keys() {
        clients.insert(r.clone(), fleet.regional(r).await?);
    }
    let params = PatchParams::apply("raw-bench").force();
    let t = Instant::now();
    let per_region = by_region.into_iter().map(|(region, tenants)| {
        let client = clients.get(&region).cloned();
        let params = params.clone();
        async move {
            let client = client.ok_or_else(|| anyhow::anyhow!("no client for {region}"))?;
            let results = futures::stream::iter(tenants)
                .map(|(name, spec)| {
                    let client = client.clone();
                    let params = params.clone();
                    let region = region.clone();
                    async move {
                        let objects = azora_core::tenancy::desired_objects(
                            &name,
                            &spec,
                            &region,
                            !spec.secrets.is_empty(),
                        );
                        // the namespace first, then the rest: one request at a time per slot, `per_cluster`
                        // slots per cluster — as many requests in flight as the operator is allowed
                        for o in &objects {
                            let ar = azora_runtime::clusters::resource(o.key.kind);
                            let api: Api<DynamicObject> = match &o.key.namespace {
                                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                                None => Api::all_with(client.clone(), &ar),
                            };
                            api.patch(&o.key.name, &params, &Patch::Apply(&o.body)).await?;
                        }
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(per_cluster.max(1))
                .collect::<Vec<_>>()
                .await;
            results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(per_region).await {
        r?;
    }
    let took = t.elapsed().as_secs_f64();
    eprintln!("raw apply: the same objects by a plain SSA client in {took:.1}s");
    Ok(took)
}
