//! `azora-bench`: benchmarks that print numbers (never pass/fail on timing).
//! - `failover`: N induced outages (SIGSTOP or SIGKILL, at random moments) of the serving region, each
//!   measured from onset to the embedded DNS server's answer changing, polled with a resolver.
//! - `dns`: dnsperf against the embedded server and against Knot serving the same zone, same query file.
//! - `probes`: the probe engine with many endpoints at 5 s: CPU used and scheduling lag p99.
//! - `tenants`: N tenants in four regional clusters: cold start, writes of a no-op resync, replication lag.
//! - `backup`: a full backup round beside a raw upload of the same bytes; RPO; a large tenant's memory.
//! - `drill`: one DR drill (RTO, RPO, failback); `chaos-soak`: N mixed chaos experiments, faults left.
//! - `rotation`: N secrets over four OpenBao servers and regional clusters rotated at once, beside raw puts.
//! - `db-failover`: N outages of a PostgreSQL primary's region under writes: outage → new primary writable
//!   and in DNS; acknowledged commits lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use azora_adapters::dns::embedded::{self, Zones};
use azora_adapters::dns::{Target, ZoneData};
use azora_tests::knot::Knot;
use azora_tests::scenario::Scenario;
use clap::Parser;
use rand::Rng;

#[path = "../bench/backup.rs"]
mod backup;
#[path = "../bench/chaos_soak.rs"]
mod chaos_soak;
#[path = "../bench/db_failover.rs"]
mod db_failover;
#[path = "../bench/drill.rs"]
mod drill;
#[path = "../bench/rotation.rs"]
mod rotation;
#[path = "../bench/tenants.rs"]
mod tenants;

#[derive(Parser)]
enum Cli {
    /// One DR drill (africa lost, europe recovers two tenants from its own backup copies): RTO, RPO,
    /// failback.
    Drill,
    /// N short chaos experiments of mixed types back to back; faults left active afterwards.
    ChaosSoak {
        /// Experiments to run.
        #[arg(long, default_value_t = 60)]
        runs: usize,
    },
    /// Database failover time and lost commits over induced outages of the primary's region.
    DbFailover {
        /// Outages to induce.
        #[arg(long, default_value_t = 20)]
        outages: usize,
    },
    /// Failover time over induced outages.
    Failover {
        /// Outages to induce.
        #[arg(long, default_value_t = 30)]
        outages: usize,
        /// Operator replicas (each one an observer; the chart runs two).
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// Queries per second: embedded server vs Knot, alternating, medians.
    Dns {
        /// Seconds per dnsperf run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Runs of each server, alternating (a single pair is noise on a shared machine).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Tenants across four regional clusters: cold start, no-op resync, replication lag.
    Tenants {
        /// Tenants to create.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Objects written per tenant for the replication measurement.
        #[arg(long, default_value_t = 3)]
        objects: usize,
        /// Extra operator arguments (repeatable), e.g. `--operator-arg=--replication-concurrency=32`.
        #[arg(long = "operator-arg", allow_hyphen_values = true)]
        operator_args: Vec<String>,
    },
    /// Backups of N tenants in four regional clusters: a full round beside a raw upload of the same bytes,
    /// every copy verified, and the RPO over scheduled rounds.
    Backup {
        /// Tenants (0: only the large tenant, `--large-mib`).
        #[arg(long, default_value_t = 500)]
        count: usize,
        /// Backups at once (`--backup-concurrency`), and the raw upload's concurrency.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Scheduled rounds (`every: 1m`) over which the RPO is sampled.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// MiB of objects in the one large tenant backed up and restored at the end (0: skip).
        #[arg(long, default_value_t = 1024)]
        large_mib: u64,
    },
    /// Secret rotation: N secrets over four regions (OpenBao + regional cluster each) rotated at once,
    /// beside a raw vaultrs put of the same number of versions.
    Rotation {
        /// Secrets in all.
        #[arg(long, default_value_t = 5000)]
        secrets: usize,
        /// Secrets per tenant.
        #[arg(long, default_value_t = 10)]
        per_tenant: usize,
        /// Tenants worked on at once (`--secret-concurrency`), and the raw client's concurrency.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Probe engine scale.
    Probes {
        /// Endpoints to probe.
        #[arg(long, default_value_t = 10_000)]
        endpoints: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// Watches the objects of `ar` until `done` accepts them all (after the initial listing), calling `seen`
/// with every update as it arrives; returns them by name. One watch, never repeated listings: the hub's CPU
/// is part of what the benchmarks measure.
async fn watch_until(
    hub: &kube::Client,
    ar: &kube::api::ApiResource,
    limit: std::time::Duration,
    what: &str,
    mut seen: impl FnMut(&str, &serde_json::Value, std::time::Instant),
    mut done: impl FnMut(&std::collections::BTreeMap<String, serde_json::Value>) -> bool,
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    use futures::StreamExt as _;
    use kube::ResourceExt as _;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(hub.clone(), ar);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut all = std::collections::BTreeMap::new();
    let mut listed = false;
    let t = std::time::Instant::now();
    loop {
        if listed && done(&all) {
            return Ok(all);
        }
        let left = limit.saturating_sub(t.elapsed());
        anyhow::ensure!(!left.is_zero(), "{what}: not within {}s", limit.as_secs());
        let Ok(Some(ev)) = tokio::time::timeout(left, events.next()).await else {
            continue;
        };
        match ev {
            Ok(watcher::Event::Init) => all.clear(),
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let v = serde_json::to_value(&o)?;
                seen(&o.name_any(), &v, std::time::Instant::now());
                all.insert(o.name_any(), v);
            }
            Ok(watcher::Event::Delete(o)) => {
                all.remove(&o.name_any());
            }
            // Retried by the watcher (with backoff); the deadline above still holds.
            Err(_) => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn failover(outages: usize, replicas: usize) -> anyhow::Result<()> {
    let mut s = Scenario::start(4).await?;
    // A long hold-down: traffic moves on to the next region instead of failing back, so outages hit
    // every region in turn.
    s.policy("1h", serde_json::json!({})).await?;
    for _ in 0..replicas.max(1) {
        s.add_operator(&[])?;
    }
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
    anyhow::ensure!(
        s.wait_answer(0, ips[0], Duration::from_secs(60)).await.is_some(),
        "no initial answer"
    );
    anyhow::ensure!(
        s.wait_all_healthy(Duration::from_secs(60)).await,
        "regions not healthy"
    );
    // Steady state includes the leader's takeover warm-up (15 s in which no region is newly judged Down,
    // until every live observer has been seen): outages at takeover are another scenario.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut samples = Vec::new();
    let mut rng = rand::rng();
    while samples.len() < outages {
        let current = s.answer(0).await;
        let Some(active) = ips
            .iter()
            .position(|ip| current.first().map(ToString::to_string).as_deref() == Some(*ip))
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // A random moment relative to the probe schedule.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5000))).await;
        let hang = rng.random_bool(0.5);
        let onset = Instant::now();
        if hang {
            s.regions[active].stop()
        } else {
            s.regions[active].kill()
        }
        let mut moved = None;
        while onset.elapsed() < Duration::from_secs(60) {
            let a = s.answer(0).await;
            if !a.is_empty() && a != current {
                moved = Some(onset.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some(took) = moved else {
            anyhow::bail!("outage {} never moved DNS:\n{}", samples.len(), s.log_tail(0, 30))
        };
        samples.push(took.as_secs_f64());
        eprintln!(
            "outage {:>2}: {} {} -> DNS moved after {:.2}s",
            samples.len(),
            s.regions[active].name,
            if hang { "SIGSTOP" } else { "SIGKILL" },
            took.as_secs_f64()
        );
        // Bring the victim back and wait for steady state (every region Healthy) before the next outage,
        // so each sample measures one failover with healthy targets available.
        s.regions[active].resume();
        if s.regions[active].restart().is_err() {
            eprintln!("could not restart {}", s.regions[active].name);
        }
        if !s.wait_all_healthy(Duration::from_secs(60)).await {
            eprintln!("regions did not all recover within 60s");
        }
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "failover_p50_s={:.2} failover_p99_s={:.2} n={}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.len()
    );
    Ok(())
}

fn dnsperf(server: SocketAddr, queries: &std::path::Path, seconds: u32) -> anyhow::Result<f64> {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
            "-d",
        ])
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-T", "1", "-q", "200"])
        .output()
        .context("dnsperf (make test-env installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = text
        .lines()
        .find(|l| l.trim_start().starts_with("Queries per second"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no qps in dnsperf output:\n{text}"))?;
    let lost = text
        .lines()
        .find(|l| l.contains("Queries lost"))
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!("  {server}: {qps:.0} qps ({lost})");
    Ok(qps)
}

async fn dns(seconds: u32, rounds: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let queries = dir.path().join("queries.txt");
    let mut q = String::new();
    for i in 0..1000 {
        q.push_str(match i % 10 {
            0 => "test.azora. SOA\n",
            1 => "test.azora. NS\n",
            2 => "nope.test.azora. A\n",
            _ => "api.test.azora. A\n",
        });
    }
    std::fs::write(&queries, q)?;
    // The same zone, served by the embedded server and (through an RFC 2136 update) by Knot.
    let mut answers = BTreeMap::new();
    answers.insert(
        "default".to_string(),
        vec![Target {
            region: "africa".into(),
            ipv4: vec!["127.0.0.11".parse()?],
            ipv6: vec![],
            weight: 1,
        }],
    );
    let data = ZoneData {
        zone: "test.azora.".into(),
        hostnames: vec!["api".into()],
        ttl: 5,
        epoch: 1,
        answers,
    };
    let zones = Zones::new(azora_adapters::geoip::GeoIp::Empty);
    zones.publish(data.clone())?;
    let addr: SocketAddr = format!("127.0.0.1:{}", azora_tests::free_port()?).parse()?;
    let _server = embedded::serve(addr, zones).await?;
    let knot = Knot::start("test.azora.")?;
    azora_adapters::dns::rfc2136::send_update(
        knot.addr,
        &knot.tsig_key()?,
        &data,
        None,
        Duration::from_secs(3),
    )
    .await?;
    eprintln!(
        "dnsperf, {seconds}s each, {rounds} rounds alternating, same query file (70% A hits, 10% SOA, 10% NS, 10% NXDOMAIN):"
    );
    let (mut embedded_runs, mut knot_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        for (target, runs) in [(addr, &mut embedded_runs), (knot.addr, &mut knot_runs)] {
            let q = queries.clone();
            runs.push(tokio::task::spawn_blocking(move || dnsperf(target, &q, seconds)).await??);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, k) = (median(&mut embedded_runs), median(&mut knot_runs));
    println!(
        "dns_qps_embedded_median={e:.0} dns_qps_knot_median={k:.0} ratio={:.2} runs={} embedded={:?} knot={:?}",
        e / k,
        embedded_runs.len(),
        embedded_runs.iter().map(|q| q.round() as u64).collect::<Vec<_>>(),
        knot_runs.iter().map(|q| q.round() as u64).collect::<Vec<_>>()
    );
    Ok(())
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn probes(endpoints: usize, seconds: u64) -> anyhow::Result<()> {
    let env = azora_tests::TestEnv::start().await?;
    let client = env.hub().client().await?;
    // Four listeners to probe (TCP connects), spread across many Regions of 10 endpoints each.
    let mut sims = Vec::new();
    for (i, ip) in ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]
        .iter()
        .enumerate()
    {
        sims.push(azora_tests::SimRegion::start(&format!("sim{i}"), ip, &[])?);
    }
    let per_region = 10;
    let regions = endpoints.div_ceil(per_region);
    for r in 0..regions {
        let eps: Vec<serde_json::Value> = (0..per_region)
            .map(|e| serde_json::json!({"name": format!("e{e}"), "type": "TCP", "address": sims[(r + e) % 4].addr.to_string()}))
            .collect();
        let body = serde_json::json!({"apiVersion": "azora.io/v1alpha1", "kind": "Region", "metadata": {"name": format!("r{r:05}")},
            "spec": {"location": {"city": "x", "country": "ZZ", "continent": "Europe", "latitude": 0.0, "longitude": 0.0},
                     "probes": {"interval": "5s", "timeout": "2s", "endpoints": eps}, "dns": {"ipv4": ["127.0.0.11"]}}});
        azora_tests::scenario::create(&client, "regions", body).await?;
    }
    eprintln!("{regions} regions x {per_region} endpoints created; warming up 10s");
    let metrics = azora_runtime::Metrics::new()?;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let cfg = azora_controllers::health::engine::EngineConfig {
        observer: "bench".into(),
        namespace: "default".into(),
        prober: azora_adapters::probe::Prober::new(None),
    };
    let supervisor = azora_runtime::supervise::Supervisor::default();
    let ar = {
        use azora_runtime::pipeline::Kind as _;
        azora_controllers::health::RegionKind::resource()
    };
    let region_cache = azora_runtime::cache::Cache::start(
        &supervisor,
        "cache/regions",
        kube::Api::all_with(client.clone(), &ar),
        kube::runtime::watcher::Config::default(),
        ar,
    );
    let observers = azora_runtime::cache::Cache::start(
        &supervisor,
        "cache/observers",
        kube::Api::namespaced(client.clone(), "default"),
        kube::runtime::watcher::Config::default().labels(&azora_controllers::health::observer_selector()),
        (),
    );
    tokio::spawn(azora_controllers::health::engine::run(
        client,
        cfg,
        metrics.clone(),
        region_cache,
        observers,
        rx,
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lag0 = metrics.probe_schedule_lag.get_sample_count();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let rounds = metrics.probe_schedule_lag.get_sample_count() - lag0;
    // p99 from the histogram buckets (upper bound of the bucket holding the 99th percentile).
    let h = metrics.probe_schedule_lag.clone();
    let mf = prometheus::core::Collector::collect(&h);
    let hist = mf
        .first()
        .and_then(|m| m.get_metric().first())
        .map(|m| m.get_histogram().clone());
    let mut p99 = f64::NAN;
    if let Some(hist) = hist {
        let total = hist.get_sample_count() as f64;
        for b in hist.get_bucket() {
            if b.cumulative_count() as f64 >= 0.99 * total {
                p99 = b.upper_bound();
                break;
            }
        }
    }
    let probes_per_s = rounds as f64 * per_region as f64 / wall;
    println!(
        "probe_endpoints={} probes_per_s={:.0} cpu_cores_used={:.2} schedule_lag_p99_s<={}",
        regions * per_region,
        probes_per_s,
        cpu / wall,
        p99
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Drill => drill::run().await,
        Cli::ChaosSoak { runs } => chaos_soak::run(runs).await,
        Cli::Failover { outages, replicas } => failover(outages, replicas).await,
        Cli::DbFailover { outages } => db_failover::run(outages).await,
        Cli::Dns { seconds, rounds } => dns(seconds, rounds).await,
        Cli::Probes { endpoints, seconds } => probes(endpoints, seconds).await,
        Cli::Backup {
            count,
            concurrency,
            rounds,
            large_mib,
        } => backup::run(count, concurrency, rounds, large_mib).await,
        Cli::Rotation {
            secrets,
            per_tenant,
            concurrency,
        } => rotation::run(secrets, per_tenant.max(1), concurrency).await,
        Cli::Tenants {
            count,
            objects,
            operator_args,
        } => tenants::run(count, objects, &operator_args).await,
    }
}
