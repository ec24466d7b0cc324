//! The probe engine (IO), run by every replica and by probe-only agents: one task per Region probes every
//! endpoint each interval (first tick at a random phase, so 10,000 endpoints spread out), re-checks at once
//! after a failure so an outage is confirmed fast, folds rounds into this observer's view with hysteresis,
//! and reports the views in the observer's own Lease — written at once on a verdict change and otherwise
//! as a heartbeat every 5 s, never per probe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azora_adapters::probe::Prober;
use azora_api::Time;
use azora_api::region::{RegionSpec, Verdict};
use azora_core::duration::parse_duration;
use azora_core::health::{ObserverView, Thresholds, needs_quick_recheck, observe_round};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use azora_runtime::Metrics;
use azora_runtime::cache::KindCache;

use super::observers::{OBSERVATIONS_ANNOTATION, OBSERVER_LABEL, Observed, observer_lease_name};

/// How often an observer rewrites its Lease when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Delay before the quick re-check after a failed round.
const RECHECK: Duration = Duration::from_millis(100);

type Report = Arc<Mutex<BTreeMap<String, Observed>>>;

/// Settings of the engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Observer name (the replica's identity, or the agent's `--observer`).
    pub observer: String,
    /// Namespace of the observer Lease.
    pub namespace: String,
    /// Prober (source address).
    pub prober: Prober,
}

/// Runs the engine until `shutdown` flips to true. `regions` is the shared Region cache.
pub async fn run(
    client: kube::Client,
    cfg: EngineConfig,
    metrics: Metrics,
    regions: KindCache,
    mut shutdown: watch::Receiver<bool>,
) {
    let report: Report = Arc::default();
    let dirty = Arc::new(Notify::new());
    let writer = tokio::spawn(write_lease_loop(
        client.clone(),
        cfg.clone(),
        report.clone(),
        dirty.clone(),
    ));

    let mut changed = regions.changed();

    let mut tasks: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    info!(observer = %cfg.observer, "probe engine started");
    loop {
        // Supervise: one task per Region, restarted when its probe spec changes.
        let mut present = Vec::new();
        for obj in regions.state() {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let Some(spec) = obj
                .data
                .get("spec")
                .and_then(|s| serde_json::from_value::<RegionSpec>(s.clone()).ok())
            else {
                continue;
            };
            present.push(name.clone());
            let key = serde_json::to_string(&spec.probes).unwrap_or_default();
            if tasks.get(&name).is_some_and(|(k, _)| k == &key) {
                continue;
            }
            if let Some((_, old)) = tasks.remove(&name) {
                old.abort();
            }
            let handle = tokio::spawn(probe_region(
                name.clone(),
                spec,
                cfg.clone(),
                report.clone(),
                dirty.clone(),
                metrics.clone(),
            ));
            tasks.insert(name, (key, handle));
        }
        let gone: Vec<String> = tasks.keys().filter(|k| !present.contains(k)).cloned().collect();
        for name in gone {
            if let Some((_, h)) = tasks.remove(&name) {
                h.abort();
            }
            if let Ok(mut r) = report.lock() {
                r.remove(&name);
            }
            dirty.notify_one();
        }
        // React to Region changes (a new region, a changed probe spec), not on a poll.
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    for (_, (_, h)) in tasks {
        h.abort();
    }
    writer.abort();
}

async fn probe_region(
    region: String,
    spec: RegionSpec,
    cfg: EngineConfig,
    report: Report,
    dirty: Arc<Notify>,
    metrics: Metrics,
) {
    let interval = parse_duration(&spec.probes.interval)
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_secs(1));
    let timeout = parse_duration(&spec.probes.timeout)
        .unwrap_or(Duration::from_secs(2))
        .min(interval);
    let t = Thresholds {
        failure: spec.probes.failure_threshold,
        success: spec.probes.success_threshold,
    };
    let mut view = ObserverView::default();
    let mut failing_since: Option<Time> = None;
    // First round within a second (verdicts early), then a random phase once, so that many regions and
    // endpoints do not probe in lockstep.
    let mut next = Instant::now() + Duration::from_millis(rand::rng().random_range(0..1000));
    let mut phase = Some(Duration::from_millis(
        rand::rng().random_range(0..interval.as_millis().max(1) as u64),
    ));
    loop {
        tokio::time::sleep_until(next.into()).await;
        let started = Instant::now();
        metrics
            .probe_schedule_lag
            .observe(started.saturating_duration_since(next).as_secs_f64());
        let round_start = Time::now();
        let results =
            futures::future::join_all(spec.probes.endpoints.iter().map(|e| cfg.prober.probe(e, timeout)))
                .await;
        let ok = results.iter().all(|r| r.ok);
        let latency = results.iter().map(|r| r.latency).max().unwrap_or_default();
        metrics
            .probe_latency
            .with_label_values(&[&region, &cfg.observer])
            .observe(latency.as_secs_f64());
        let result = if ok { "ok" } else { "fail" };
        metrics
            .probe_rounds
            .with_label_values(&[region.as_str(), cfg.observer.as_str(), result])
            .inc();
        let new = observe_round(view, ok, t);
        if ok {
            failing_since = None;
        } else if failing_since.is_none() {
            failing_since = Some(round_start);
        }
        let reason = results
            .iter()
            .find(|r| !r.ok)
            .map(|r| r.reason.clone())
            .unwrap_or_default();
        if !ok {
            debug!(%region, observer = %cfg.observer, %reason, failures = new.consecutive_failures, "probe round failed");
        }
        if new.verdict != view.verdict {
            debug!(%region, observer = %cfg.observer, from = %view.verdict, to = %new.verdict, %reason, "observer verdict changed");
        }
        let entry = Observed {
            verdict: new.verdict,
            failures: new.consecutive_failures,
            latency_ms: Some(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX)),
            failing_since,
            reason,
        };
        if let Ok(mut r) = report.lock() {
            r.insert(region.clone(), entry);
        }
        if new.verdict != view.verdict {
            dirty.notify_one();
        }
        view = new;
        next = if needs_quick_recheck(&view, t) {
            Instant::now() + RECHECK
        } else {
            started + phase.take().unwrap_or(interval)
        };
        if next < Instant::now() {
            next = Instant::now();
        }
    }
}

async fn write_lease_loop(client: kube::Client, cfg: EngineConfig, report: Report, dirty: Arc<Notify>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let name = observer_lease_name(&cfg.observer);
    let params = PatchParams::apply("azora-operator/observer").force();
    loop {
        let snapshot = report.lock().map(|r| r.clone()).unwrap_or_default();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(OBSERVER_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [(
                        OBSERVATIONS_ANNOTATION.to_string(),
                        serde_json::to_string(&snapshot).unwrap_or_default(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.observer.clone()),
                lease_duration_seconds: Some(i32::try_from(HEARTBEAT.as_secs() * 3).unwrap_or(15)),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let mut body = serde_json::to_value(&lease).unwrap_or_default();
        body["apiVersion"] = "coordination.k8s.io/v1".into();
        body["kind"] = "Lease".into();
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(&body)).await {
            warn!(error = &e as &dyn std::error::Error, lease = %name, "could not write observer lease");
        }
        tokio::select! {
            _ = dirty.notified() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Verdict helper for callers outside this module.
pub fn serves(v: Verdict) -> bool {
    matches!(v, Verdict::Healthy | Verdict::Degraded)
}
