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
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use azora_core::health::Freshness;
use azora_runtime::Context;
use azora_runtime::pipeline::Kind as _;
use azora_runtime::verdicts::{RegionHealth, Verdicts};

use super::RegionKind;
use super::engine::{HEARTBEAT, serves};
use super::observers::{OBSERVATIONS_ANNOTATION, Observed};

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

/// Settings of the aggregator.
#[derive(Clone, Copy, Debug)]
pub struct AggregateConfig {
    /// An observer Lease not seen to change for this long (by this leader's clock) is deleted: its
    /// observer is gone (a pod of an earlier rollout, a removed agent).
    pub gc_after: Duration,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            gc_after: Duration::from_secs(600),
        }
    }
}

/// Runs until `stop` resolves: re-judges on every observer Lease change (the watch, not a poll), and at
/// least every second so reports age out.
pub async fn run(ctx: Context, cfg: AggregateConfig, stop: impl std::future::Future<Output = ()>) {
    let health = ctx.handles.verdicts.clone();
    let leases = ctx.caches.observers.clone();
    let mut changed = leases.changed();
    let mut serving_changed = health.subscribe_serving();
    let writer = StatusWriter::new(
        ctx.client.clone(),
        RegionKind::resource(),
        "health",
        ctx.fence.clone(),
    );
    let leases_api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Freshness is seen, not assumed: a Lease counts only once it has changed under this leader.
    let mut fresh = Freshness::default();
    let mut written: HashMap<String, Written> = HashMap::new();
    let term_start = Instant::now();
    let mut gc_task: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(stop);
    tokio::select! {
        () = ctx.caches.regions.ready() => {}
        () = &mut stop => return,
    }
    seed(&ctx, &health);
    loop {
        let now_i = Instant::now();
        let state = leases.state();
        for l in &state {
            let name = l.metadata.name.clone().unwrap_or_default();
            let rv = l.metadata.resource_version.clone().unwrap_or_default();
            fresh.observe(&name, &rv, now_i);
        }
        fresh.retain(|n| state.iter().any(|l| l.metadata.name.as_deref() == Some(n)));
        // Garbage collection runs beside the judging, never in its way.
        if gc_task.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            let stale: Vec<(String, String, Option<String>)> =
                stale_leases(&state, &fresh, cfg.gc_after, now_i);
            if !stale.is_empty() {
                gc_task = Some(tokio::spawn(gc(ctx.clone(), leases_api.clone(), stale)));
            }
        }
        // Each observer Lease: who, how old (by our clock), and its report.
        let observers: Vec<(String, Duration, Option<ObserverReport>)> = state
            .iter()
            .map(|l| {
                let name = l.metadata.name.clone().unwrap_or_default();
                let observer = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or(name.clone());
                let age = fresh.age(&name, now_i).unwrap_or(Duration::MAX);
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
        // Right after taking over, no observer has been seen to change yet: hold the recorded verdicts
        // until fresh reports arrive instead of judging every region Unknown.
        let warming_up = term_start.elapsed() < STALE_AFTER;
        let mut outputs = Vec::new();
        for obj in ctx.caches.regions.state() {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let entry = by_region.entry(name.clone()).or_default();
            for (observer, age, _) in &observers {
                if !entry.iter().any(|(o, _, _)| o == observer) {
                    entry.push((observer.clone(), Observed::unknown(), *age));
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
            if warming_up && !reports.iter().any(|(_, _, age)| *age <= STALE_AFTER) {
                continue;
            }
            outputs.extend(judge(
                &ctx, &health, &obj, &name, &spec, &reports, &written, warming_up,
            ));
        }
        write_all(&ctx, &writer, outputs, &mut written).await;
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            r = serving_changed.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut stop => break,
        }
    }
}

/// Observer Leases not seen to change for `gc_after` under this leader: (name, resourceVersion, uid).
fn stale_leases(
    leases: &[std::sync::Arc<Lease>],
    fresh: &Freshness,
    gc_after: Duration,
    now: Instant,
) -> Vec<(String, String, Option<String>)> {
    leases
        .iter()
        .filter_map(|l| {
            let name = l.metadata.name.clone()?;
            let rv = l.metadata.resource_version.clone()?;
            fresh
                .unchanged_for(&name, now)
                .is_some_and(|d| d >= gc_after)
                .then(|| (name, rv, l.metadata.uid.clone()))
        })
        .collect()
}

/// Deletes stale observer Leases (fenced, and only if each is still the version judged stale, so a Lease
/// renewed meanwhile is kept).
async fn gc(ctx: Context, api: Api<Lease>, stale: Vec<(String, String, Option<String>)>) {
    for (name, rv, uid) in stale {
        if ctx.fence.check().await.is_err() {
            return;
        }
        let dp = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(rv),
                uid,
            }),
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(10), api.delete(&name, &dp)).await {
            Ok(Ok(_)) => info!(lease = %name, "observer Lease removed: its observer stopped reporting"),
            Ok(Err(e)) => {
                warn!(lease = %name, error = &e as &dyn std::error::Error, "removing a stale observer Lease failed")
            }
            Err(_) => warn!(lease = %name, "removing a stale observer Lease timed out"),
        }
    }
}

fn seed(ctx: &Context, health: &Verdicts) {
    for obj in ctx.caches.regions.state() {
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
                    detected_at: None,
                    last_ok: None,
                    last_failed: None,
                    seeded: true,
                },
            );
        }
    }
}

/// The IO one judgement asks for: an Event on a verdict change, and a status write when due.
struct Output {
    obj: std::sync::Arc<DynamicObject>,
    name: String,
    event: Option<(EventType, &'static str, String)>,
    status: Option<(serde_json::Value, String)>,
}

/// Judges one region (no IO): combines fresh reports by quorum, publishes the verdict to the runtime's
/// `Verdicts` at once (the failover loops act on it), and returns the Event and status write to make.
/// While warming up after a takeover, a region is never newly judged Down (not every live observer has
/// been seen yet, so a quorum of the few seen is no quorum).
#[allow(clippy::too_many_arguments)]
fn judge(
    ctx: &Context,
    health: &Verdicts,
    obj: &std::sync::Arc<DynamicObject>,
    name: &str,
    spec: &RegionSpec,
    reports: &[(String, Observed, Duration)],
    written: &HashMap<String, Written>,
    warming_up: bool,
) -> Option<Output> {
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
    if warming_up
        && combined.verdict == Verdict::Down
        && prev.as_ref().is_none_or(|p| p.verdict != Verdict::Down)
    {
        return None;
    }
    let down_since = || {
        reports
            .iter()
            .filter(|(_, r, age)| *age <= STALE_AFTER && r.verdict == Verdict::Down)
            .filter_map(|(_, r, _)| r.failing_since)
    };
    // The earliest start of a failure streak dates the outage for the timeline; the latest one is what
    // failover targets must have been probed after (an old streak of one observer proves nothing new).
    let failing_since = down_since().min();
    let detected_at = down_since().max();
    // The newest evidence either way, from fresh observers (the failover planner confirms targets by it).
    let fresh_reports = || reports.iter().filter(|(_, _, age)| *age <= STALE_AFTER);
    let last_ok = fresh_reports().filter_map(|(_, r, _)| r.last_ok).max();
    let last_failed = fresh_reports().filter_map(|(_, r, _)| r.last_failed).max();
    // A verdict seeded from the recorded status stays marked (the planner sends it no traffic) until the
    // warm-up ends: one early report is no quorum.
    let seeded = warming_up && prev.as_ref().is_some_and(|p| p.seeded);
    let current = match &prev {
        Some(p) if p.verdict == combined.verdict => RegionHealth {
            failing_since,
            detected_at,
            last_ok,
            last_failed,
            seeded,
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
                detected_at,
                last_ok,
                last_failed,
                seeded,
            }
        }
    };
    let mut event = None;
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
        event = Some((type_, reason, note));
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
        return event.map(|e| Output {
            obj: obj.clone(),
            name: name.to_string(),
            event: Some(e),
            status: None,
        });
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
    Some(Output {
        obj: obj.clone(),
        name: name.to_string(),
        event,
        status: Some((strip_nulls(status), key)),
    })
}

/// Publishes the Events and writes the statuses of one pass, all regions at once (a slow hub delays
/// none of the verdicts, which are already published).
async fn write_all(
    ctx: &Context,
    writer: &StatusWriter,
    outputs: Vec<Output>,
    written: &mut HashMap<String, Written>,
) {
    let done = futures::future::join_all(outputs.into_iter().map(|o| async move {
        if let Some((type_, reason, note)) = &o.event {
            azora_runtime::events::publish(ctx, &o.obj, *type_, reason, note, "Probe").await;
        }
        let (status, key) = o.status?;
        match writer.apply(&o.name, None, status).await {
            Ok(()) => Some((o.name, key)),
            Err(e) => {
                warn!(region = %o.name, error = &e as &dyn std::error::Error, "could not write region health");
                None
            }
        }
    }))
    .await;
    for (name, key) in done.into_iter().flatten() {
        written.insert(
            name,
            Written {
                at: Instant::now(),
                key,
            },
        );
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
