//! `azora-bench rotation`: N tenant secrets over four real regions (regional kube-apiservers and one real
//! OpenBao server each); every tenant lists all four regions, so every secret lives in four Vaults and four
//! target Secrets.
//! 1. first versions: every secret created and synced everywhere (not timed against anything);
//! 2. rotate all: `azora.io/rotate-now` on every tenant at once; time until every secret is at version 2
//!    in every region's Vault and target Secret (`rotate_all_s`); per secret, the time from its rotation
//!    (`lastRotationTime`) to the moment the status first showed it synced everywhere (`sync_p99_s`, seen
//!    through a watch);
//! 3. raw: the same number of KV versions (one per secret per region) put by a plain vaultrs client into the
//!    same servers, same concurrency (`raw_kv_put_s`): the floor;
//! 4. double rotations: secrets whose home OpenBao holds more than version 2 (from OpenBao's own version
//!    numbers).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use azora_tests::fleet::{CONTINENTS, Fleet};
use azora_tests::openbao::{KV_MOUNT, OpenBao};
use azora_tests::scenario::ar;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::percentile;

fn secrets_of(t: &Value) -> Vec<Value> {
    t["status"]["secrets"].as_array().cloned().unwrap_or_default()
}

fn everywhere(s: &Value, v: u64, regions: usize) -> bool {
    s["version"] == v
        && s["phase"] == "Done"
        && s["regions"].as_array().is_some_and(|rs| {
            rs.len() == regions
                && rs
                    .iter()
                    .all(|r| r["vaultVersion"] == v && r["syncedVersion"] == v)
        })
}

/// Watches Tenants until `done` says so; calls `seen` on every update (with the time it arrived).
async fn watch_tenants(
    hub: &kube::Client,
    limit: Duration,
    what: &str,
    seen: impl FnMut(&str, &Value, Instant),
    done: impl FnMut(&BTreeMap<String, Value>) -> bool,
) -> anyhow::Result<()> {
    super::watch_until(hub, &ar("Tenant", "tenants"), limit, what, seen, done)
        .await
        .map(|_| ())
}

/// Runs the benchmark and prints the one-line summary.
pub async fn run(secrets: usize, per_tenant: usize, concurrency: usize) -> anyhow::Result<()> {
    let regions: Vec<&str> = CONTINENTS.iter().map(|(n, _)| *n).collect();
    let mut fleet = Fleet::start(&regions).await?;
    let hub = fleet.hub().await?;
    let mut baos = BTreeMap::new();
    let region_api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Region", "regions"));
    let hub_secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
    for r in &regions {
        let bao = OpenBao::start(fleet.env.dir.path(), r).await?;
        hub_secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": format!("vault-{r}")},
                                               "stringData": {"token": bao.root_token}}))?,
            )
            .await?;
        region_api
            .patch(
                r,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"vault": {"address": bao.address, "kvMount": KV_MOUNT,
                    "tokenSecret": {"name": format!("vault-{r}"), "key": "token"}}}}),
                ),
            )
            .await?;
        baos.insert(r.to_string(), bao);
    }
    let conc = concurrency.to_string();
    fleet.start_operator(&["--secret-concurrency", &conc, "--tenant-concurrency", "32"])?;
    let tenants = secrets.div_ceil(per_tenant);
    let t0 = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let hub = hub.clone();
            let home = regions[i % 4];
            let others: Vec<&str> = regions.iter().copied().filter(|r| *r != home).collect();
            let n = per_tenant.min(secrets - i * per_tenant);
            async move {
                let list: Vec<Value> = (0..n)
                    .map(|k| json!({"name": format!("s{k}"), "vaultPath": format!("tenants/r{i:04}/s{k}"),
                                    "targetSecret": format!("s{k}"), "gracePeriod": "1h"}))
                    .collect();
                azora_tests::scenario::create(
                    &hub,
                    "tenants",
                    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": format!("r{i:04}")},
                           "spec": {"homeRegion": home, "failoverRegions": others, "secrets": list}}),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    // (Counted as updates arrive, not by scanning every tenant on each: the benchmark's own CPU comes out of
    // the same two cores as what it measures.)
    let mut first: std::collections::HashSet<String> = Default::default();
    let done = std::cell::Cell::new(0usize);
    watch_tenants(
        &hub,
        Duration::from_secs(3600),
        "first versions",
        |name, t, _| {
            for s in secrets_of(t) {
                if everywhere(&s, 1, 4)
                    && first.insert(format!("{name}/{}", s["name"].as_str().unwrap_or_default()))
                {
                    done.set(done.get() + 1);
                }
            }
        },
        |_| done.get() >= secrets,
    )
    .await?;
    eprintln!(
        "{secrets} secrets in {tenants} tenants at version 1 in 4 regions after {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // 2. Rotate all at once.
    let tenant_api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Tenant", "tenants"));
    let t = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let api = tenant_api.clone();
            async move {
                api.patch(
                    &format!("r{i:04}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"azora.io/rotate-now": "bench"}}})),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let wall0 = jiff::Timestamp::now();
    let started = Instant::now();
    let mut synced_at: HashMap<String, f64> = HashMap::new();
    let done = std::cell::Cell::new(0usize);
    watch_tenants(
        &hub,
        Duration::from_secs(3600),
        "rotate all",
        |name, t, at| {
            for s in secrets_of(t) {
                let key = format!("{name}/{}", s["name"].as_str().unwrap_or_default());
                if everywhere(&s, 2, 4) && !synced_at.contains_key(&key) {
                    // Seconds from the rotation's own record to the status showing it everywhere.
                    let rotated = s["lastRotationTime"]
                        .as_str()
                        .and_then(|x| x.parse::<jiff::Timestamp>().ok())
                        .unwrap_or(wall0);
                    let seen = wall0
                        + jiff::SignedDuration::try_from(at.saturating_duration_since(started))
                            .unwrap_or_default();
                    synced_at.insert(key, seen.duration_since(rotated).as_secs_f64().max(0.0));
                    done.set(done.get() + 1);
                }
            }
        },
        |_| done.get() >= secrets,
    )
    .await?;
    let rotate_all = t.elapsed().as_secs_f64();
    let mut sync: Vec<f64> = synced_at.values().copied().collect();
    sync.sort_by(f64::total_cmp);
    let sync_p99 = percentile(&sync, 99.0);
    eprintln!(
        "rotate all: {secrets} secrets at version 2 in 4 Vaults and 4 clusters in {rotate_all:.1}s (sync p50 {:.1}s p99 {sync_p99:.1}s)",
        percentile(&sync, 50.0)
    );

    // 4. Double rotations, from OpenBao's own version numbers (home region of each tenant).
    let mut doubles = 0usize;
    let mut checked = 0usize;
    for i in 0..tenants {
        let home = regions[i % 4];
        let n = per_tenant.min(secrets - i * per_tenant);
        for k in 0..n {
            let (v, _) = baos[home].meta(&format!("tenants/r{i:04}/s{k}")).await?;
            checked += 1;
            if v > 2 {
                doubles += 1;
            }
        }
    }
    eprintln!("{checked} home keys read: {doubles} with more than 2 versions");
    fleet.kill_operator();

    // 3. Raw: the same number of versions (one per secret per region) by a plain vaultrs client.
    let clients: BTreeMap<String, vaultrs::client::VaultClient> = baos
        .iter()
        .map(|(r, b)| Ok((r.clone(), b.root()?)))
        .collect::<anyhow::Result<_>>()?;
    let value = "x".repeat(32);
    let mut puts: Vec<(String, String)> = Vec::new();
    for i in 0..tenants {
        let n = per_tenant.min(secrets - i * per_tenant);
        for k in 0..n {
            for r in &regions {
                puts.push((r.to_string(), format!("raw/r{i:04}/s{k}")));
            }
        }
    }
    let total = puts.len();
    let t = Instant::now();
    futures::stream::iter(puts)
        .map(|(r, path)| {
            let c = &clients[&r];
            let data = HashMap::from([("value".to_string(), value.clone())]);
            async move { vaultrs::kv2::set(c, KV_MOUNT, &path, &data).await.map(|_| ()) }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let raw = t.elapsed().as_secs_f64();
    eprintln!("raw: {total} KV puts in {raw:.1}s");
    println!(
        "secrets={secrets} regions=4 rotate_all_s={rotate_all:.1} raw_kv_put_s={raw:.1} sync_p99_s={sync_p99:.1} double_rotations={doubles}"
    );
    Ok(())
}
