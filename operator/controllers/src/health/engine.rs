//! The probe engine (IO), run by every replica and by probe-only agents: one task per Region probes every
//! endpoint each interval, folds rounds into this observer's view with hysteresis, and reports the views in
//! the observer's own Lease — written at once on a verdict change, on a first failure and on a suspicion,
//! otherwise as a heartbeat every 5 s, never per probe. Detection is event-driven: observers spread their
//! rounds of a region evenly over the interval (wall-clock aligned), a round unanswered after a fraction of
//! the timeout is *suspect* (reported at once, and re-checked by a hedged round that does not wait for the
//! first one's timeout), and an observer that sees another's suspicion or failure re-checks that region at
//! once; its own suspicion re-checks every other region too, so a failover target is confirmed by a probe
//! made after the failure. A single observer still never decides anything: the leader's quorum does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use azora_adapters::probe::Prober;
use azora_api::Time;
use azora_api::region::{RegionSpec, Verdict};
use azora_core::duration::parse_duration;
use azora_core::health::{
    ObserverView, Thresholds, needs_quick_recheck, observe_round, round_offset, suspect_after,
    until_next_round,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use azora_runtime::Metrics;
use azora_runtime::cache::{Cache, KindCache};

use super::observers::{OBSERVATIONS_ANNOTATION, OBSERVER_LABEL, Observed, observer_lease_name};

/// How often an observer rewrites its Lease when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Delay before the quick re-check after a failed round.
const RECHECK: Duration = Duration::from_millis(100);
/// Kicks arriving this soon after a round started are ignored (no back-to-back rounds).
const MIN_KICK_GAP: Duration = Duration::from_millis(300);

type Report = Arc<Mutex<BTreeMap<String, Observed>>>;
/// Per region, what makes its task probe at once.
type Kicks = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// This observer's place among the observers: (index, count), for spreading rounds.
type Roster = Arc<RwLock<(usize, usize)>>;

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

/// What the region tasks share.
#[derive(Clone)]
struct Shared {
    cfg: EngineConfig,
    report: Report,
    dirty: Arc<Notify>,
    kicks: Kicks,
    roster: Roster,
    metrics: Metrics,
}

impl Shared {
    /// Re-checks every region but `except` at once.
    fn kick_others(&self, except: &str) {
        if let Ok(k) = self.kicks.lock() {
            for (region, n) in k.iter() {
                if region != except {
                    n.notify_one();
                }
            }
        }
    }

    fn kick(&self, region: &str) {
        if let Some(n) = self.kicks.lock().ok().and_then(|k| k.get(region).cloned()) {
            n.notify_one();
        }
    }
}

/// Runs the engine until `shutdown` flips to true. `regions` is the shared Region cache, `observers` the
/// cache of observer Leases (other observers' reports trigger re-checks; the roster spreads rounds).
pub async fn run(
    client: kube::Client,
    cfg: EngineConfig,
    metrics: Metrics,
    regions: KindCache,
    observers: Cache<Lease>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Shared {
        cfg: cfg.clone(),
        report: Arc::default(),
        dirty: Arc::new(Notify::new()),
        kicks: Arc::default(),
        roster: Arc::new(RwLock::new((0, 1))),
        metrics,
    };
    let writer = tokio::spawn(write_lease_loop(
        client.clone(),
        cfg.clone(),
        shared.report.clone(),
        shared.dirty.clone(),
    ));
    let peers = tokio::spawn(watch_peers(shared.clone(), observers));
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
            let kick = Arc::new(Notify::new());
            if let Ok(mut k) = shared.kicks.lock() {
                k.insert(name.clone(), kick.clone());
            }
            let handle = tokio::spawn(probe_region(name.clone(), spec, shared.clone(), kick));
            tasks.insert(name, (key, handle));
        }
        let gone: Vec<String> = tasks.keys().filter(|k| !present.contains(k)).cloned().collect();
        for name in gone {
            if let Some((_, h)) = tasks.remove(&name) {
                h.abort();
            }
            if let Ok(mut k) = shared.kicks.lock() {
                k.remove(&name);
            }
            if let Ok(mut r) = shared.report.lock() {
                r.remove(&name);
            }
            shared.dirty.notify_one();
        }
        // The engine's own tasks must not die silently: a dead writer or peer watcher ends the engine (the
        // process supervisor fails /healthz); a dead region task is started again.
        if writer.is_finished() || peers.is_finished() {
            error!(observer = %cfg.observer, "probe engine task ended; stopping the engine");
            break;
        }
        let dead: Vec<String> = tasks
            .iter()
            .filter(|(_, (_, h))| h.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            error!(region = %name, "probe task ended; starting it again");
            tasks.remove(&name);
        }
        // React to Region changes (a new region, a changed probe spec), not on a poll; look at the tasks
        // every few seconds.
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    for (_, (_, h)) in tasks {
        h.abort();
    }
    peers.abort();
    writer.abort();
}

/// Watches the other observers' Leases: a region another observer newly suspects or sees failing is
/// re-checked here at once; the set of observers gives this one its share of the interval.
async fn watch_peers(shared: Shared, observers: Cache<Lease>) {
    let me = observer_lease_name(&shared.cfg.observer);
    let mut changed = observers.changed();
    let mut alarmed: HashMap<(String, String), bool> = HashMap::new();
    loop {
        let leases = observers.state();
        let mut names: Vec<String> = leases.iter().filter_map(|l| l.metadata.name.clone()).collect();
        if !names.contains(&me) {
            names.push(me.clone());
        }
        names.sort();
        let index = names.iter().position(|n| *n == me).unwrap_or(0);
        if let Ok(mut r) = shared.roster.write() {
            *r = (index, names.len());
        }
        for l in &leases {
            let Some(name) = l.metadata.name.clone() else {
                continue;
            };
            if name == me {
                continue;
            }
            let report: BTreeMap<String, Observed> = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OBSERVATIONS_ANNOTATION))
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            for (region, o) in report {
                let now = o.alarming() && o.verdict != Verdict::Down;
                let before = alarmed
                    .insert((name.clone(), region.clone()), now)
                    .unwrap_or(false);
                if now && !before {
                    debug!(observer = %name, %region, "another observer suspects the region: re-checking now");
                    shared.kick(&region);
                }
            }
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// One round over every endpoint: ok, the slowest latency, the first failure's reason.
async fn round(spec: &RegionSpec, prober: &Prober, timeout: Duration) -> (bool, Duration, String) {
    let results =
        futures::future::join_all(spec.probes.endpoints.iter().map(|e| prober.probe(e, timeout))).await;
    let ok = results.iter().all(|r| r.ok);
    let latency = results.iter().map(|r| r.latency).max().unwrap_or_default();
    let reason = results
        .iter()
        .find(|r| !r.ok)
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    (ok, latency, reason)
}

/// One region's running state in this observer.
struct RegionState {
    view: ObserverView,
    /// The last round was slow (suspect): a region that is slow round after round (a far, slow endpoint)
    /// is not an alarm each time — only the change is.
    slow: bool,
    /// When the last round started (kicks closer than `MIN_KICK_GAP` to it are deferred).
    last_start: Option<Instant>,
    failing_since: Option<Time>,
    last_ok: Option<Time>,
    last_failed: Option<Time>,
}

async fn probe_region(region: String, spec: RegionSpec, sh: Shared, kick: Arc<Notify>) {
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
    let suspect = suspect_after(timeout);
    let mut st = RegionState {
        view: ObserverView::default(),
        failing_since: None,
        last_ok: None,
        last_failed: None,
        slow: false,
        last_start: None,
    };
    // First round within a second (verdicts early); then rounds on this observer's share of the interval.
    let mut next = Instant::now() + Duration::from_millis(rand::rng().random_range(0..1000));
    let mut deferred_kick = false;
    loop {
        let kicked = tokio::select! {
            () = tokio::time::sleep_until(next.into()) => false,
            () = kick.notified() => true,
        };
        // A kick that lands right after a round started is not dropped (the evidence asked for must come from
        // a round started after the request) but deferred, so rounds never run back to back.
        if kicked && let Some(last) = st.last_start.filter(|t| t.elapsed() < MIN_KICK_GAP) {
            next = next.min(last + MIN_KICK_GAP);
            deferred_kick = true;
            continue;
        }
        let kicked = kicked || std::mem::take(&mut deferred_kick);
        st.last_start = Some(Instant::now());
        let started = Instant::now();
        sh.metrics
            .probe_schedule_lag
            .observe(started.saturating_duration_since(next).as_secs_f64());
        let first_start = Time::now();
        let first = round(&spec, &sh.cfg.prober, timeout);
        tokio::pin!(first);
        // A round unanswered after `suspect` is suspect: say so, re-check the other regions, and hedge with
        // a second round now rather than after this one's timeout (not while already down: nothing to
        // hurry).
        let hedge = st.view.verdict != Verdict::Down && !st.slow;
        let (r1, r2) = tokio::select! {
            r = &mut first => (r, None),
            () = tokio::time::sleep(suspect), if hedge => {
                mark_suspect(&sh, &region, true);
                sh.kick_others(&region);
                let second_start = Time::now();
                let (r1, r2) = tokio::join!(&mut first, round(&spec, &sh.cfg.prober, timeout));
                (r1, Some((second_start, r2)))
            }
        };
        // A re-check someone asked for (or a hedged one) is reported at once: the leader waits on it to
        // confirm a failover target.
        let r1_slow = r1.1 >= suspect;
        let hedged = r2.is_some();
        let urgent = kicked || hedged;
        fold(&sh, &region, &mut st, t, first_start, r1, urgent);
        if let Some((start, r)) = r2 {
            fold(&sh, &region, &mut st, t, start, r, urgent);
        }
        mark_suspect(&sh, &region, false);
        st.slow = hedged || r1_slow;
        next = if needs_quick_recheck(&st.view, t) {
            Instant::now() + RECHECK
        } else {
            let (index, count) = sh.roster.read().map(|r| *r).unwrap_or((0, 1));
            let offset = round_offset(&region, index, count, interval);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let mut wait = until_next_round(now, interval, offset);
            // Never twice within a fraction of the interval because a kick came just before the slot.
            if wait < interval / 5 && started.elapsed() < interval / 5 {
                wait += interval;
            }
            Instant::now() + wait
        };
    }
}

fn mark_suspect(sh: &Shared, region: &str, on: bool) {
    let changed = sh
        .report
        .lock()
        .ok()
        .and_then(|mut r| {
            let e = r.get_mut(region)?;
            let was = e.suspect;
            e.suspect = on;
            Some(was != on)
        })
        .unwrap_or(false);
    if changed && on {
        sh.dirty.notify_one();
    }
}

/// Folds one round (started at `start`) into the observer's view and report; `urgent` writes the report at
/// once.
fn fold(
    sh: &Shared,
    region: &str,
    st: &mut RegionState,
    t: Thresholds,
    start: Time,
    r: (bool, Duration, String),
    urgent: bool,
) {
    let (ok, latency, reason) = r;
    let observer = sh.cfg.observer.as_str();
    sh.metrics
        .probe_latency
        .with_label_values(&[region, observer])
        .observe(latency.as_secs_f64());
    sh.metrics
        .probe_rounds
        .with_label_values(&[region, observer, if ok { "ok" } else { "fail" }])
        .inc();
    let new = observe_round(st.view, ok, t);
    if ok {
        st.failing_since = None;
        st.last_ok = st.last_ok.max(Some(start));
    } else {
        st.failing_since.get_or_insert(start);
        st.last_failed = st.last_failed.max(Some(start));
        debug!(%region, %observer, %reason, failures = new.consecutive_failures, "probe round failed");
    }
    if new.verdict != st.view.verdict {
        debug!(%region, %observer, from = %st.view.verdict, to = %new.verdict, %reason, "observer verdict changed");
    }
    let first_failure = !ok && st.view.consecutive_failures == 0;
    let suspect = sh
        .report
        .lock()
        .ok()
        .and_then(|r| r.get(region).map(|e| e.suspect))
        .unwrap_or(false);
    let entry = Observed {
        verdict: new.verdict,
        failures: new.consecutive_failures,
        latency_ms: Some(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX)),
        failing_since: st.failing_since,
        reason,
        suspect,
        last_ok: st.last_ok,
        last_failed: st.last_failed,
    };
    if let Ok(mut r) = sh.report.lock() {
        r.insert(region.to_string(), entry);
    }
    // Tell the others at once on a verdict change and on a first failure (they re-check now).
    if new.verdict != st.view.verdict || first_failure || urgent {
        sh.dirty.notify_one();
    }
    if first_failure {
        sh.kick_others(region);
    }
    st.view = new;
}

async fn write_lease_loop(client: kube::Client, cfg: EngineConfig, report: Report, dirty: Arc<Notify>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let name = observer_lease_name(&cfg.observer);
    let params = PatchParams::apply("azora-operator/observer").force();
    // In a pod, the Lease belongs to the pod: Kubernetes removes it with the pod (a rollout leaves none).
    let owner = match (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
        (Ok(pod), Ok(uid)) if !pod.is_empty() && !uid.is_empty() => Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod,
            uid,
            ..OwnerReference::default()
        }]),
        _ => None,
    };
    loop {
        let snapshot = report.lock().map(|r| r.clone()).unwrap_or_default();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                owner_references: owner.clone(),
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
        match tokio::time::timeout(
            Duration::from_secs(10),
            api.patch(&name, &params, &Patch::Apply(&body)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(error = &e as &dyn std::error::Error, lease = %name, "could not write observer lease")
            }
            Err(_) => warn!(lease = %name, "writing the observer lease timed out"),
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
