//! The health aggregator (IO), run by the leader: reads every observer Lease, ages reports by this
//! replica's own clock (time since the Lease last changed), combines fresh views by quorum into each
//! Region's verdict, and writes Region status on transitions plus a low-frequency heartbeat — with
//! Events, transition counters and up gauges. State is seeded from Region status, so a new leader resumes
//! with the verdicts, transition times and recovery times its predecessor recorded.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_api::region::{ObserverResult, RegionSpec, RegionStatus, Verdict};
use azora_api::{Condition, Time};
use azora_core::conditions::{self, Desired};
use azora_core::health::{Report, combine};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tracing::{info, warn};

use crate::context::Context;
use crate::engine::{HEARTBEAT, serves};
use crate::kinds::{Kind, RegionKind};
use crate::state::{HealthState, OBSERVATIONS_ANNOTATION, OBSERVER_LABEL, Observed, RegionHealth};

/// Reports older than this (by local clock) no longer count.
pub const STALE_AFTER: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 3);
/// Region status is rewritten at least this often, so observers' last-seen times stay current.
const STATUS_HEARTBEAT: Duration = Duration::from_secs(60);

/// One observer's report: region → what it observed.
type ObserverReport = BTreeMap<String, Observed>;

struct Written {
    at: Instant,
    key: String,
}

/// Runs until `stop` resolves.
pub async fn run(ctx: Context, health: HealthState, stop: impl std::future::Future<Output = ()>) {
    let leases_api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let w = reflector::store::Writer::default();
    let leases: Store<Lease> = w.as_reader();
    let cfg = watcher::Config::default().labels(&format!("{OBSERVER_LABEL}=true"));
    let reflect = tokio::spawn(
        watcher(leases_api, cfg)
            .default_backoff()
            .reflect(w)
            .applied_objects()
            .for_each(|_| async {}),
    );
    let writer = StatusWriter::new(
        ctx.client.clone(),
        RegionKind::resource(),
        "health",
        ctx.fence.clone(),
    );
    let mut seen: HashMap<String, (String, Instant)> = HashMap::new();
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut seeded = false;
    tokio::pin!(stop);
    loop {
        if !seeded && ctx.stores.regions.wait_until_ready().await.is_ok() {
            seed(&ctx, &health);
            seeded = true;
        }
        let now_i = Instant::now();
        for l in leases.state() {
            let name = l.metadata.name.clone().unwrap_or_default();
            let rv = l.metadata.resource_version.clone().unwrap_or_default();
            match seen.get(&name) {
                Some((old, _)) if *old == rv => {}
                _ => {
                    seen.insert(name, (rv, now_i));
                }
            }
        }
        // Each observer Lease: who, how old (by our clock), and its report.
        let observers: Vec<(String, Duration, Option<ObserverReport>)> = leases
            .state()
            .iter()
            .map(|l| {
                let name = l.metadata.name.clone().unwrap_or_default();
                let observer = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or(name.clone());
                let age = seen
                    .get(&name)
                    .map_or(Duration::MAX, |(_, t)| now_i.duration_since(*t));
                let report = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(OBSERVATIONS_ANNOTATION))
                    .and_then(|r| serde_json::from_str(r).ok());
                (observer, age, report)
            })
            .collect();
        let mut by_region: BTreeMap<String, Vec<(String, Observed, Duration)>> = BTreeMap::new();
        for (observer, age, report) in &observers {
            for (region, obs) in report.iter().flatten() {
                by_region
                    .entry(region.clone())
                    .or_default()
                    .push((observer.clone(), obs.clone(), *age));
            }
        }
        for obj in ctx.stores.regions.state() {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let entry = by_region.entry(name.clone()).or_default();
            for (observer, age, _) in &observers {
                if !entry.iter().any(|(o, _, _)| o == observer) {
                    let unknown = Observed {
                        verdict: Verdict::Unknown,
                        failures: 0,
                        latency_ms: None,
                        failing_since: None,
                        reason: String::new(),
                    };
                    entry.push((observer.clone(), unknown, *age));
                }
            }
            let Some(spec) = obj
                .data
                .get("spec")
                .and_then(|s| serde_json::from_value::<RegionSpec>(s.clone()).ok())
            else {
                continue;
            };
            let reports = by_region.remove(&name).unwrap_or_default();
            judge(&ctx, &health, &writer, &obj, &name, &spec, &reports, &mut written).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut stop => break,
        }
    }
    reflect.abort();
}

fn seed(ctx: &Context, health: &HealthState) {
    for obj in ctx.stores.regions.state() {
        let Some(name) = obj.metadata.name.clone() else {
            continue;
        };
        let status: Option<RegionStatus> = obj
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        if let Some(s) = status
            && let (Some(v), Some(since)) = (s.verdict, s.last_transition_time)
        {
            health.set(
                &name,
                RegionHealth {
                    verdict: v,
                    since,
                    recovered: s.recovered_time,
                    failing_since: None,
                },
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn judge(
    ctx: &Context,
    health: &HealthState,
    writer: &StatusWriter,
    obj: &DynamicObject,
    name: &str,
    spec: &RegionSpec,
    reports: &[(String, Observed, Duration)],
    written: &mut HashMap<String, Written>,
) {
    let as_reports: Vec<Report> = reports
        .iter()
        .map(|(o, r, age)| Report {
            observer: o.clone(),
            verdict: r.verdict,
            age: *age,
        })
        .collect();
    let combined = combine(&as_reports, STALE_AFTER, spec.probes.quorum, spec.cordoned);
    let now = Time::now();
    let prev = health.get(name);
    let failing_since = reports
        .iter()
        .filter(|(_, r, age)| *age <= STALE_AFTER && r.verdict == Verdict::Down)
        .filter_map(|(_, r, _)| r.failing_since)
        .min();
    let current = match &prev {
        Some(p) if p.verdict == combined.verdict => RegionHealth {
            failing_since,
            ..p.clone()
        },
        _ => {
            let recovered = match &prev {
                Some(p) if p.verdict == Verdict::Down && serves(combined.verdict) => Some(now),
                Some(p) => p.recovered,
                None => None,
            };
            RegionHealth {
                verdict: combined.verdict,
                since: now,
                recovered,
                failing_since,
            }
        }
    };
    if prev.as_ref().map(|p| p.verdict) != Some(current.verdict) {
        let from = prev
            .as_ref()
            .map_or("none".to_string(), |p| p.verdict.to_string());
        info!(region = %name, %from, to = %current.verdict, down = combined.down, fresh = combined.fresh,
              quorum = combined.quorum, "region verdict changed");
        ctx.metrics
            .region_transitions
            .with_label_values(&[name, &current.verdict.to_string()])
            .inc();
        let (type_, reason) = match current.verdict {
            Verdict::Down => (EventType::Warning, "RegionDown"),
            Verdict::Degraded => (EventType::Warning, "RegionDegraded"),
            Verdict::Healthy if prev.is_some() => (EventType::Normal, "RegionRecovered"),
            Verdict::Healthy => (EventType::Normal, "RegionHealthy"),
            Verdict::Cordoned => (EventType::Normal, "RegionCordoned"),
            Verdict::Unknown => (EventType::Warning, "RegionUnknown"),
        };
        let note = format!(
            "{from} -> {}: {} of {} fresh observers see it down (quorum {})",
            current.verdict, combined.down, combined.fresh, combined.quorum
        );
        crate::events::publish(ctx, obj, type_, reason, &note, "Probe").await;
    }
    ctx.metrics
        .region_up
        .with_label_values(&[name])
        .set(i64::from(serves(current.verdict)));
    health.set(name, current.clone());

    // Status: on any material change, or every STATUS_HEARTBEAT.
    let mut observers: Vec<ObserverResult> = reports
        .iter()
        .filter(|(_, _, age)| *age <= STALE_AFTER)
        .map(|(o, r, age)| ObserverResult {
            name: o.clone(),
            verdict: r.verdict,
            consecutive_failures: r.failures,
            latency_ms: r.latency_ms,
            last_seen_time: Time::from_timestamp(
                now.0
                    .checked_sub(jiff::SignedDuration::try_from(*age).unwrap_or_default())
                    .unwrap_or(now.0),
            ),
        })
        .collect();
    observers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lat: Vec<u32> = observers.iter().filter_map(|o| o.latency_ms).collect();
    lat.sort_unstable();
    let median = lat.get(lat.len() / 2).copied();
    let failures = observers
        .iter()
        .map(|o| o.consecutive_failures)
        .min()
        .unwrap_or(0);
    let serving = health.serving().contains(name);
    let key = format!(
        "{}|{}|{:?}|{}|{}",
        current.verdict,
        current.since,
        current.recovered,
        serving,
        observers
            .iter()
            .map(|o| format!("{}:{}", o.name, o.verdict))
            .collect::<Vec<_>>()
            .join(",")
    );
    let due = written
        .get(name)
        .is_none_or(|w| w.key != key || w.at.elapsed() >= STATUS_HEARTBEAT);
    if !due {
        return;
    }
    let current_conds: Vec<Condition> = obj
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let probed = if combined.fresh > 0 {
        Desired::ok(
            "Probed",
            "Probing",
            format!("{} fresh observers; quorum {}", combined.fresh, combined.quorum),
        )
    } else {
        Desired::unknown("Probed", "NoFreshObservations", "no observer reported within 15s")
    };
    let merged = conditions::merge(&current_conds, &[probed], obj.metadata.generation, now);
    let owned: Vec<&Condition> = merged.iter().filter(|c| c.type_ == "Probed").collect();
    let status = json!({
        "verdict": current.verdict,
        "lastTransitionTime": current.since,
        "recoveredTime": current.recovered,
        "serving": serving,
        "latencyMs": median,
        "consecutiveFailures": failures,
        "observers": observers,
        "conditions": owned,
    });
    let status = strip_nulls(status);
    match writer.apply(name, None, status).await {
        Ok(()) => {
            written.insert(
                name.to_string(),
                Written {
                    at: Instant::now(),
                    key,
                },
            );
        }
        Err(e) => {
            warn!(region = %name, error = &e as &dyn std::error::Error, "could not write region health")
        }
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
