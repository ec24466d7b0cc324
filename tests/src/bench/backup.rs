//! `azora-bench backup`: N tenants in four real regional clusters with four S3 servers, each tenant with a
//! few objects (a Secret included, sealed with a key).
//! 1. full round: one Backup per tenant created at once; time until every one is `Succeeded` (export,
//!    archive, upload to home, copy to every allowed region, every copy read back and compared);
//! 2. raw put: the same bytes (each archive to each of its regions) uploaded by a plain concurrent client to
//!    the same S3 servers, with the same concurrency as the operator's backups: the floor;
//! 3. RPO: a BackupSchedule `every: 1m`; the operator's `azora_backup_rpo_seconds{tenant}` sampled every 5 s
//!    over several rounds once every tenant has a good scheduled backup; p99 over all samples;
//! 4. memory: one tenant with 1 GiB of objects backed up and restored by a freshly started operator, its
//!    peak resident memory printed on a second line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azora_tests::fleet::{CONTINENTS, Fleet};
use azora_tests::scenario::{ar, create};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use super::percentile;

/// Every Backup, by name, once `done` says so, from one watch: the hub serves events as Backups change
/// instead of the whole list again every second while the operator works (listing hundreds of Backups with
/// their status each time costs the hub more than the writes being measured).
async fn backups_until(
    hub: &kube::Client,
    limit: Duration,
    what: &str,
    done: impl FnMut(&BTreeMap<String, Value>) -> bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    super::watch_until(hub, &ar("Backup", "backups"), limit, what, |_, _, _| {}, done).await
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or("")
}

/// Runs the benchmark and prints the one-line summary.
pub async fn run(count: usize, concurrency: usize, rounds: usize, large_mib: u64) -> anyhow::Result<()> {
    let regions: Vec<&str> = CONTINENTS.iter().map(|(n, _)| *n).collect();
    let mut fleet = Fleet::start(&regions).await?;
    let hub = fleet.hub().await?;
    let conc = concurrency.to_string();
    fleet.start_operator(&["--backup-concurrency", &conc, "--backup-verify-every", "1h"])?;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench-key"}, "stringData": {"key": key}}))?,
        )
        .await?;
    let mut clients = std::collections::BTreeMap::new();
    for r in &regions {
        clients.insert(r.to_string(), fleet.regional(r).await?);
    }
    if count == 0 {
        // Only the large tenant.
        if large_mib > 0 {
            large(&mut fleet, &hub, &clients, &conc, large_mib).await?;
        }
        fleet.kill_operator();
        return Ok(());
    }
    // Tenants: home round-robin, one failover region, no residency (every region holds a copy).
    let t = Instant::now();
    let names: Vec<(String, String)> = (0..count)
        .map(|i| (format!("b{i:04}"), regions[i % 4].to_string()))
        .collect();
    futures::stream::iter(names.iter().cloned().enumerate())
        .map(|(i, (name, home))| {
            let hub = hub.clone();
            let f1 = regions[(i + 1) % 4].to_string();
            async move {
                create(
                    &hub,
                    "tenants",
                    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                           "spec": {"homeRegion": home, "failoverRegions": [f1]}}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    // Wait for every tenant's namespace, then its objects.
    loop {
        let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Tenant", "tenants"));
        let ready = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|t| {
                t.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        if ready >= count {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(900),
            "tenants not Ready in 900s"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    futures::stream::iter(names.iter().cloned())
        .map(|(name, home)| {
            let c = clients.get(&home).cloned();
            async move {
                let c = c.ok_or_else(|| anyhow::anyhow!("no client"))?;
                let ns = format!("tenant-{name}");
                let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns);
                for k in 0..3 {
                    cms.create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": format!("cfg-{k}")},
                            "data": {"settings": "x".repeat(2048)}}))?,
                    )
                    .await?;
                }
                let s: Api<Secret> = Api::namespaced(c, &ns);
                s.create(
                    &PostParams::default(),
                    &serde_json::from_value(
                        json!({"metadata": {"name": "db"}, "stringData": {"password": "p"}}),
                    )?,
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "{count} tenants Ready with their objects in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // 1. A full round.
    let t = Instant::now();
    futures::stream::iter(names.iter().cloned())
        .map(|(name, _)| {
            let hub = hub.clone();
            async move {
                create(
                    &hub,
                    "backups",
                    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Backup", "metadata": {"name": format!("round-{name}")},
                           "spec": {"tenant": name, "encryptionKey": {"name": "bench-key", "key": "key"}}}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let is_round = |n: &String| n.starts_with("round-");
    let done = backups_until(&hub, Duration::from_secs(1800), "full round", |all| {
        all.iter()
            .filter(|(n, b)| is_round(n) && !matches!(phase(b), "" | "Running" | "Pending"))
            .count()
            >= count
    })
    .await?;
    let full_round = t.elapsed().as_secs_f64();
    let round: Vec<&Value> = done.iter().filter(|(n, _)| is_round(n)).map(|(_, b)| b).collect();
    let succeeded = round.iter().filter(|b| phase(b) == "Succeeded").count();
    let copies_verified: usize = round
        .iter()
        .map(|b| {
            b["status"]["locations"]
                .as_array()
                .map_or(0, |ls| ls.iter().filter(|l| l["verified"] == true).count())
        })
        .sum();
    let bytes: u64 = round
        .iter()
        .filter_map(|b| b["status"]["sizeBytes"].as_u64())
        .sum();
    eprintln!(
        "full round: {succeeded}/{count} Succeeded, {copies_verified} copies verified, {bytes} archive bytes, in {full_round:.1}s"
    );

    // 2. The same bytes by a plain client: each archive to each of its regions, same concurrency.
    let mut puts = Vec::new();
    for b in &round {
        let Some(sha) = b["status"]["sha256"].as_str() else {
            continue;
        };
        let Some(first) = b["status"]["locations"]
            .as_array()
            .and_then(|l| l.first())
            .cloned()
        else {
            continue;
        };
        let src = first["region"].as_str().unwrap_or_default().to_string();
        let key = first["key"].as_str().unwrap_or_default().to_string();
        let data = fleet
            .store(&src)?
            .get_bytes(&key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("archive {key} missing"))?;
        anyhow::ensure!(
            azora_adapters::archive::sha256_hex(&data) == sha,
            "archive {key} differs"
        );
        // What a backup stores in each region: its archive and the manifest beside it.
        let mkey = key
            .replace("/archive-", "/manifest-")
            .replace(".tar.zst", ".json");
        let manifest = fleet
            .store(&src)?
            .get_bytes(&mkey)
            .await?
            .ok_or_else(|| anyhow::anyhow!("manifest {mkey} missing"))?;
        for l in b["status"]["locations"].as_array().into_iter().flatten() {
            let region = l["region"].as_str().unwrap_or_default().to_string();
            puts.push((region.clone(), format!("raw/{key}"), data.clone()));
            puts.push((region, format!("raw/{mkey}"), manifest.clone()));
        }
    }
    let stores: std::collections::BTreeMap<String, _> = regions
        .iter()
        .map(|r| Ok((r.to_string(), fleet.store(r)?)))
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    futures::stream::iter(puts)
        .map(|(region, key, data)| {
            let store = stores.get(&region).cloned();
            async move {
                let store = store.ok_or_else(|| anyhow::anyhow!("no store"))?;
                store.put_bytes(&key, data).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let raw_put = t.elapsed().as_secs_f64();
    eprintln!("raw put of the same bytes: {raw_put:.1}s");

    // 3. RPO over scheduled rounds.
    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "bench"},
               "spec": {"every": "1m", "retention": {"keepFor": "1h", "keepLastGood": 2},
                        "encryptionKey": {"name": "bench-key", "key": "key"}}}),
    )
    .await?;
    let t = Instant::now();
    // Every tenant has a good scheduled backup: the first round is complete.
    backups_until(&hub, Duration::from_secs(1800), "first scheduled round", |all| {
        all.values()
            .filter(|b| {
                b["metadata"]["labels"]["azora.io/backup-schedule"] == "bench" && phase(b) == "Succeeded"
            })
            .filter_map(|b| b["spec"]["tenant"].as_str())
            .collect::<std::collections::BTreeSet<&str>>()
            .len()
            >= count
    })
    .await?;
    eprintln!(
        "first scheduled round complete after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    let sample_for = Duration::from_secs(60 * rounds as u64);
    let t = Instant::now();
    while t.elapsed() < sample_for {
        let text = fleet.metrics_text().await?;
        for l in text
            .lines()
            .filter(|l| l.starts_with("azora_backup_rpo_seconds{"))
        {
            if let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                samples.push(v);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    samples.sort_by(f64::total_cmp);
    let p50 = percentile(&samples, 50.0);
    let p99 = percentile(&samples, 99.0);
    eprintln!(
        "rpo over {rounds} rounds: {} samples, p50 {p50:.0}s p99 {p99:.0}s max {:.0}s",
        samples.len(),
        samples.last().copied().unwrap_or_default()
    );
    let peak_mib = peak_rss_mib(&fleet);
    eprintln!("operator peak RSS over the rounds: {peak_mib} MiB");
    println!(
        "backup_tenants={count} backup_objects={} full_round_s={full_round:.1} raw_put_s={raw_put:.1} copies_verified={copies_verified} rpo_p99_s={p99:.0}",
        count * 4
    );
    if large_mib > 0 {
        // The schedule stops, so the large tenant's figures are its own.
        let schedules: Api<DynamicObject> =
            Api::all_with(hub.clone(), &ar("BackupSchedule", "backupschedules"));
        schedules
            .patch(
                "bench",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await?;
        large(&mut fleet, &hub, &clients, &conc, large_mib).await?;
    }
    fleet.kill_operator();
    Ok(())
}

/// `name` once its phase is final (`Succeeded`, `PartiallyFailed`, `Failed`), read every 2 s; an error when
/// it is not within `limit` (a read that fails counts as not yet, never as done).
async fn finished(
    hub: &kube::Client,
    kind: &str,
    plural: &str,
    name: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar(kind, plural));
    let t = Instant::now();
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await {
            let v = serde_json::to_value(&o)?;
            if matches!(phase(&v), "Succeeded" | "PartiallyFailed" | "Failed") {
                return Ok(v);
            }
        }
        anyhow::ensure!(
            t.elapsed() < limit,
            "{kind} {name} not finished in {}s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The operator's peak resident memory since it started (`VmHWM`), MiB.
fn peak_rss_mib(fleet: &Fleet) -> u64 {
    fleet
        .operator
        .as_ref()
        .and_then(|o| o.pid())
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// One tenant holding `mib` MiB of objects (ConfigMaps of ~1 MiB of incompressible text each) backed up to
/// two regions and restored into a scratch namespace of the other, by a freshly started operator: its peak
/// resident memory covers exactly this (the archive is as large as the data, so holding it would show).
async fn large(
    fleet: &mut Fleet,
    hub: &kube::Client,
    clients: &std::collections::BTreeMap<String, kube::Client>,
    conc: &str,
    mib: u64,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    fleet.kill_operator();
    fleet.start_operator(&["--backup-concurrency", conc, "--backup-verify-every", "1h"])?;
    let t = Instant::now();
    create(
        hub,
        "tenants",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "large"},
               "spec": {"homeRegion": "africa", "failoverRegions": ["europe"],
                        "residency": {"allowedContinents": ["Africa", "Europe"]}}}),
    )
    .await?;
    let africa = clients
        .get("africa")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no africa client"))?;
    let ns = "tenant-large";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(africa.clone());
    while namespaces.get_opt(ns).await?.is_none() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(300), "{ns} not placed in 300s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(africa, ns);
    futures::stream::iter(0..mib)
        .map(|i| {
            let cms = cms.clone();
            async move {
                use base64::Engine as _;
                let raw: Vec<u8> = (0..760 * 1024).map(|_| rand::random::<u8>()).collect();
                let text = base64::engine::general_purpose::STANDARD.encode(raw);
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("blob-{i:05}")}, "data": {"blob": text}}),
                )?;
                cms.create(&PostParams::default(), &cm).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "large tenant: {mib} ConfigMaps of 1 MiB written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Past the occupancy snapshot's lifetime, so the backup's snapshot sees the ConfigMaps.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let t = Instant::now();
    create(
        hub,
        "backups",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Backup", "metadata": {"name": "large-1"},
               "spec": {"tenant": "large", "encryptionKey": {"name": "bench-key", "key": "key"}}}),
    )
    .await?;
    let backup = finished(hub, "Backup", "backups", "large-1", Duration::from_secs(1800)).await?;
    let backup_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        phase(&backup) == "Succeeded",
        "large backup: {}",
        backup["status"]
    );
    let objects = backup["status"]["objectCount"].as_u64().unwrap_or(0);
    let size_mib = backup["status"]["sizeBytes"].as_u64().unwrap_or(0) / 1024 / 1024;
    let after_backup = peak_rss_mib(fleet);
    eprintln!(
        "large backup: {objects} objects, archive {size_mib} MiB, {backup_s:.1}s, operator peak RSS {after_backup} MiB"
    );
    let t = Instant::now();
    create(
        hub,
        "restores",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Restore", "metadata": {"name": "large-1"},
               "spec": {"backup": "large-1", "targetRegion": "europe", "targetNamespace": "scratch-large"}}),
    )
    .await?;
    let restore = finished(hub, "Restore", "restores", "large-1", Duration::from_secs(1800)).await?;
    let restore_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        phase(&restore) == "Succeeded",
        "large restore: {}",
        restore["status"]
    );
    let peak = peak_rss_mib(fleet);
    println!(
        "backup_large_mib={mib} large_objects={objects} large_archive_mib={size_mib} large_backup_s={backup_s:.1} large_restore_s={restore_s:.1} operator_peak_rss_mib={peak}"
    );
    Ok(())
}
