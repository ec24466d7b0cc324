//! One experiment's task: the schedule, and each run from the interlock check to the judged outcome.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::objstore::ObjectStore;
use azora_adapters::probe::Prober;
use azora_api::chaos::{
    ChaosExperimentSpec, ChaosExperimentStatus, ChaosRun, FaultType, OutageMode, Outcome, TimelineEntry,
};
use azora_api::common::{ConditionStatus, Time, find_condition};
use azora_api::failover::FailoverPolicyStatus;
use azora_api::region::{ProbeEndpoint, ProbeType, RegionSpec, Verdict};
use azora_core::chaos::{
    EXPIRY_GRACE, FAULT_ANNOTATION, FAULT_REPORT_ANNOTATION, FaultOrder, FaultReport, FaultState, Maker,
    Measured, RUN_NOW_ANNOTATION, Situation, abort_reason, agent_lease, due, fault_duration, judge,
    made_by_agent, maker, next_due, start_refusal, success_rate,
};
use azora_runtime::Context;
use azora_runtime::events::publish;
use azora_runtime::interlock::Activity;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use super::ChaosConfig;

/// The order the agent gets for a run of `spec`.
fn order_for(name: &str, spec: &ChaosExperimentSpec, id: &str, expires: jiff::Timestamp) -> FaultOrder {
    FaultOrder {
        id: id.to_string(),
        owner: format!("ChaosExperiment/{name}"),
        fault: spec.fault.type_,
        expires,
        peer: spec.fault.peer_region.clone(),
        latency_ms: spec
            .fault
            .latency
            .as_deref()
            .and_then(|l| azora_core::duration::parse_duration(l).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The experiment's run book: every status field this task owns.
struct Book {
    status: ChaosExperimentStatus,
}

impl Book {
    fn from(obj: &DynamicObject) -> Self {
        Self {
            status: obj
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        }
    }

    fn body(&self) -> serde_json::Value {
        let s = &self.status;
        json!({
            "lastRun": s.last_run,
            "runs": s.runs,
            "totalRuns": s.total_runs,
            "succeededRuns": s.succeeded_runs,
            "skippedRuns": s.skipped_runs,
            "successRate": s.success_rate,
            "nextRunTime": s.next_run_time,
            "runNowHandled": s.run_now_handled,
        })
    }

    /// Records a finished run: newest first, bounded, counted.
    fn finish(&mut self, run: ChaosRun, limit: u32) {
        match run.outcome {
            Outcome::Skipped => self.status.skipped_runs += 1,
            Outcome::Running => {}
            o => {
                self.status.total_runs += 1;
                if o == Outcome::Succeeded {
                    self.status.succeeded_runs += 1;
                }
            }
        }
        self.status.success_rate = success_rate(self.status.total_runs, self.status.succeeded_runs);
        self.status.runs.retain(|r| r.id != run.id);
        self.status.runs.insert(0, run.clone());
        self.status.runs.truncate(limit.max(1) as usize);
        self.status.last_run = Some(run);
    }
}

struct Task<'a> {
    ctx: &'a Context,
    cfg: &'a ChaosConfig,
    writer: StatusWriter,
    name: String,
    leases: Api<Lease>,
}

impl Task<'_> {
    async fn write(&self, book: &Book) -> bool {
        match self.writer.apply(&self.name, None, book.body()).await {
            Ok(()) => true,
            Err(e) => {
                warn!(experiment = %self.name, error = %e, "experiment status not written");
                false
            }
        }
    }

    /// Writes until it lands (a finished run must be recorded), for at most a minute.
    async fn write_hard(&self, book: &Book) {
        for _ in 0..30 {
            if self.write(book).await {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    fn object(&self) -> Option<DynamicObject> {
        self.ctx
            .caches
            .experiments
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(self.name.as_str()))
            .map(|o| (*o).clone())
    }

    async fn event(&self, obj: &DynamicObject, type_: EventType, reason: &str, note: &str) {
        publish(self.ctx, obj, type_, reason, note, "Run").await;
    }

    async fn lease(&self, region: &str) -> Option<Lease> {
        tokio::time::timeout(Duration::from_secs(3), self.leases.get_opt(&agent_lease(region)))
            .await
            .ok()?
            .ok()?
    }

    async fn situation(&self, spec: &ChaosExperimentSpec, target: Option<&str>, strict: bool) -> Situation {
        let ctx = self.ctx;
        let mut verdicts: std::collections::BTreeMap<String, Verdict> = ctx
            .handles
            .verdicts
            .all()
            .into_iter()
            .map(|(r, h)| (r, h.verdict))
            .collect();
        if verdicts.is_empty() {
            verdicts = ctx.recorded_verdicts();
        }
        let mut s = Situation {
            verdicts,
            ..Situation::default()
        };
        for (a, what) in ctx.handles.interlock.active() {
            match a {
                Activity::Failover(p) => s.failovers.push(format!("{p}: {what}")),
                Activity::Drill(d) => s.drills.push(d),
                Activity::Experiment(e) if e != self.name => {
                    s.experiments.push((e, Some(what).filter(|w| !w.is_empty())));
                }
                Activity::Experiment(_) => {}
            }
        }
        let recent = now() - jiff::SignedDuration::from_secs(120);
        for p in ctx.caches.policies.state() {
            let name = p.metadata.name.clone().unwrap_or_default();
            let Some(st) = p
                .data
                .get("status")
                .and_then(|v| serde_json::from_value::<FailoverPolicyStatus>(v.clone()).ok())
            else {
                continue;
            };
            if let Some(f) = &st.last_failover
                && f.verified_time.is_none()
                && f.decided_time.as_ref().is_some_and(|t| t.0 > recent)
            {
                s.failovers.push(format!(
                    "{name}: {} -> {} not verified yet",
                    f.from.as_deref().unwrap_or("-"),
                    f.to.as_deref().unwrap_or("-")
                ));
            }
            if st.active_regions.is_empty() && st.observed_generation.is_some() {
                s.policies_unanswered.push(name);
            }
        }
        for t in ctx.caches.tenants.state() {
            let ready = t
                .data
                .get("status")
                .and_then(|st| st.get("conditions"))
                .and_then(|c| serde_json::from_value::<Vec<azora_api::Condition>>(c.clone()).ok())
                .and_then(|c| find_condition(&c, "Ready").map(|c| c.status == ConditionStatus::True))
                .unwrap_or(false);
            if !ready {
                s.tenants_not_ready
                    .push(t.metadata.name.clone().unwrap_or_default());
            }
        }
        s.halted = self.ctx.chaos_halt(strict).await;
        if let Some(t) = target
            && made_by_agent(spec.fault.type_, spec.fault.mode)
        {
            s.agent_live = Some(self.lease(t).await.is_some_and(|l| agent_live(&l)));
        }
        s
    }

    /// Writes (or withdraws, with `None`) the fault order on the region agent's Lease, behind the fence.
    async fn order(&self, region: &str, order: Option<&FaultOrder>) -> Result<(), String> {
        self.ctx
            .fence
            .check()
            .await
            .map_err(|e| format!("leader fence: {e}"))?;
        let value = match order {
            Some(o) => json!(serde_json::to_string(o).map_err(|e| e.to_string())?),
            None => serde_json::Value::Null,
        };
        let patch = json!({"metadata": {"annotations": {FAULT_ANNOTATION: value}}});
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.leases.patch(
                &agent_lease(region),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("agent Lease of {region}: {e}")),
            Err(_) => Err(format!("agent Lease of {region}: timed out")),
        }
    }

    /// Waits for the agent's report on `id` in one of `states`.
    async fn report(
        &self,
        region: &str,
        id: &str,
        states: &[FaultState],
        wait: Duration,
    ) -> Option<FaultReport> {
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Some(r) = self.lease(region).await.as_ref().and_then(report_of)
                && r.id == id
                && states.contains(&r.state)
            {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Every authoritative server of the RFC 2136 policies answers (its `_azora-epoch` record, or that
    /// there is none) — DNS resolves again, seen from here.
    async fn dns_answers(&self) -> Result<(), String> {
        for p in self.ctx.caches.policies.state() {
            let Some(rfc) = p
                .data
                .get("spec")
                .and_then(|s| {
                    serde_json::from_value::<azora_api::failover::FailoverPolicySpec>(s.clone()).ok()
                })
                .filter(|s| s.provider.type_ == azora_api::failover::DnsProviderType::RFC2136)
                .map(|s| (s.zone.clone(), s.provider.rfc2136))
            else {
                continue;
            };
            let (zone, Some(rfc)) = rfc else { continue };
            for server in &rfc.servers {
                let addr =
                    tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(server.as_str()))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| format!("DNS server {server} cannot be resolved"))?;
                azora_adapters::dns::verify::epoch_of(addr, &zone, Duration::from_secs(2))
                    .await
                    .map_err(|e| format!("DNS server {server} does not answer: {e}"))?;
            }
        }
        Ok(())
    }

    /// Whether the fault is really gone, seen from here: the endpoint that stopped answers again.
    async fn confirm_gone(
        &self,
        fault: FaultType,
        region: &str,
        agent: Option<&FaultReport>,
    ) -> Result<(), String> {
        let spec: RegionSpec = self
            .ctx
            .caches
            .regions
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(region))
            .and_then(|o| serde_json::from_value(o.data.get("spec")?.clone()).ok())
            .ok_or_else(|| format!("region {region} not found"))?;
        let prober = Prober::new(None);
        match fault {
            FaultType::RegionOutage => {
                for e in &spec.probes.endpoints {
                    let r = prober.probe(e, Duration::from_secs(2)).await;
                    if !r.ok {
                        return Err(format!("endpoint {} still fails: {}", e.name, r.reason));
                    }
                }
                Ok(())
            }
            FaultType::VaultOutage => {
                let vault = spec.vault.ok_or("the region names no Vault")?;
                let e = ProbeEndpoint {
                    name: "vault".into(),
                    type_: if vault.address.starts_with("https://") {
                        ProbeType::HTTPS
                    } else {
                        ProbeType::HTTP
                    },
                    url: Some(format!("{}/v1/sys/health", vault.address.trim_end_matches('/'))),
                    address: None,
                    query: None,
                    expected_status: 200,
                };
                let r = prober.probe(&e, Duration::from_secs(2)).await;
                if r.ok {
                    Ok(())
                } else {
                    Err(format!("Vault still fails: {}", r.reason))
                }
            }
            FaultType::ObjectStoreOutage => {
                let cfg = self
                    .ctx
                    .store_config(&spec)
                    .await?
                    .ok_or("the region names no object store")?;
                let store = ObjectStore::new(&cfg);
                match tokio::time::timeout(Duration::from_secs(3), store.list("azora-chaos-probe/")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("object store still fails: {e}")),
                    Err(_) => Err("object store still does not answer".into()),
                }
            }
            FaultType::NetworkPartition | FaultType::NetworkLatency => match agent {
                Some(r) if r.confirmed == Some(true) => Ok(()),
                Some(r) => Err(format!(
                    "the agent does not see its links pass again: {}",
                    r.message
                )),
                None => Err("the agent did not report the revert".into()),
            },
            FaultType::DnsFailure => {
                match agent {
                    Some(r) if r.confirmed == Some(true) => {}
                    Some(r) => return Err(format!("the DNS server is not running again: {}", r.message)),
                    None => return Err("the agent did not report the revert".into()),
                }
                // The region's own DNS probes, then every RFC 2136 server the policies publish to.
                for e in spec.probes.endpoints.iter().filter(|e| e.type_ == ProbeType::DNS) {
                    let r = prober.probe(e, Duration::from_secs(2)).await;
                    if !r.ok {
                        return Err(format!("DNS endpoint {} still fails: {}", e.name, r.reason));
                    }
                }
                self.dns_answers().await
            }
            FaultType::PodKill => Ok(()),
        }
    }
}

fn agent_live(l: &Lease) -> bool {
    l.spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .is_some_and(|t| now().duration_since(t.0) < jiff::SignedDuration::from_secs(20))
}

fn report_of(l: &Lease) -> Option<FaultReport> {
    serde_json::from_str(l.metadata.annotations.as_ref()?.get(FAULT_REPORT_ANNOTATION)?).ok()
}

fn order_of(l: &Lease) -> Option<FaultOrder> {
    serde_json::from_str(l.metadata.annotations.as_ref()?.get(FAULT_ANNOTATION)?).ok()
}

/// Asks `check` every half second until the fault is gone (step `RevertConfirmed` with `gone`) or `wait`
/// passes (step `RevertUnconfirmed` with the last reason).
async fn confirm_by<F, Fut>(run: &mut ChaosRun, wait: Duration, gone: String, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < wait {
        match check().await {
            Ok(()) => {
                step(run, "RevertConfirmed", now(), gone);
                return true;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    step(run, "RevertUnconfirmed", now(), last);
    false
}

fn step(run: &mut ChaosRun, name: &str, at: jiff::Timestamp, message: impl Into<String>) {
    run.timeline.push(TimelineEntry {
        step: name.into(),
        time: Time(at),
        message: message.into(),
    });
}

fn ms_between(from: jiff::Timestamp, to: jiff::Timestamp) -> u64 {
    u64::try_from(to.duration_since(from).as_millis()).unwrap_or(0)
}

/// The experiment's task for this term.
pub(super) async fn experiment_loop(ctx: Context, cfg: ChaosConfig, name: String) {
    let resource = azora_runtime::pipeline::resource_of::<azora_api::ChaosExperiment>();
    let task = Task {
        writer: StatusWriter::new(ctx.client.clone(), resource, "chaos-runs", ctx.fence.clone()),
        leases: Api::namespaced(ctx.client.clone(), &ctx.namespace),
        ctx: &ctx,
        cfg: &cfg,
        name,
    };
    let mut changes = ctx.caches.experiments.changed();
    // This term's view of the fault gauges starts from the record: a fault whose revert was never confirmed
    // stays counted; a finished, confirmed one is not (a deposed replica's stale 1 is not carried over).
    if let Some(obj) = task.object() {
        let book = Book::from(&obj);
        let unconfirmed = book
            .status
            .last_run
            .as_ref()
            .is_some_and(|r| r.revert_confirmed == Some(false) || r.outcome == Outcome::Running);
        ctx.metrics
            .chaos_fault_active
            .with_label_values(&[&task.name])
            .set(if unconfirmed { 1.0 } else { 0.0 });
        if let Some(t) = book
            .status
            .last_run
            .as_ref()
            .and_then(|r| r.expires_time.as_ref())
        {
            ctx.metrics
                .chaos_fault_expires
                .with_label_values(&[&task.name])
                .set(t.0.as_second() as f64);
        }
    }
    // This task is the only writer of these fields during its term: what it wrote last is newer than what
    // the cache may still show (a stale Running run is never "interrupted", a handled run-now never rerun).
    let mut known: Option<(Option<String>, ChaosExperimentStatus)> = None;
    loop {
        let Some(obj) = task.object() else { return };
        let mut book = match &known {
            Some((uid, status)) if *uid == obj.metadata.uid => Book {
                status: status.clone(),
            },
            _ => Book::from(&obj),
        };
        let spec: Option<ChaosExperimentSpec> = obj
            .data
            .get("spec")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        if let Some(spec) = spec {
            if book
                .status
                .last_run
                .as_ref()
                .is_some_and(|r| r.outcome == Outcome::Running)
            {
                task.finish_interrupted(&obj, &spec, &mut book).await;
            } else {
                task.tick(&obj, &spec, &mut book).await;
            }
            known = Some((obj.metadata.uid.clone(), book.status.clone()));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

impl Task<'_> {
    /// Starts a run when one is due, and keeps `nextRunTime` right.
    async fn tick(&self, obj: &DynamicObject, spec: &ChaosExperimentSpec, book: &mut Book) {
        let asked = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RUN_NOW_ANNOTATION));
        let since = book
            .status
            .last_run
            .as_ref()
            .map(|r| r.start_time.0)
            .or_else(|| obj.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or_else(now);
        let want = due(
            &spec.schedule,
            spec.suspend,
            since,
            asked.map(String::as_str),
            book.status.run_now_handled.as_deref(),
            now(),
        );
        let (run_now, next, due) = (want.run_now.is_some(), want.next, want.now);
        let asked = want.run_now;
        let judged = azora_runtime::pipeline::judged(obj);
        if !due {
            let want = next.map(Time);
            if book.status.next_run_time != want && judged.as_ref().is_some_and(Result::is_ok) {
                book.status.next_run_time = want;
                self.write(book).await;
            }
            return;
        }
        // Wait for the pipeline to judge this generation of the spec.
        let Some(judged) = judged else { return };
        if run_now {
            book.status.run_now_handled = asked;
        }
        let started = now();
        if let Err(why) = judged {
            if run_now {
                // Asked for explicitly: say why nothing happens.
                self.skip(obj, spec, book, started, format!("spec not valid: {why}"))
                    .await;
            }
            return;
        }
        self.run(obj, spec, book, started).await;
        book.status.next_run_time = if spec.suspend {
            None
        } else {
            next_due(&spec.schedule, started).map(Time)
        };
        self.write_hard(book).await;
    }

    fn new_run(&self, spec: &ChaosExperimentSpec, started: jiff::Timestamp) -> ChaosRun {
        let mut run = ChaosRun {
            id: format!(
                "{}-{}{:03}",
                self.name,
                started.strftime("%Y%m%d-%H%M%S"),
                started.subsec_millisecond()
            ),
            outcome: Outcome::Running,
            start_time: Time(started),
            end_time: None,
            failover_ms: None,
            recovery_ms: None,
            region: spec.fault.region.clone(),
            expires_time: None,
            revert_confirmed: None,
            timeline: Vec::new(),
            message: String::new(),
        };
        step(&mut run, "Scheduled", started, "");
        run
    }

    async fn skip(
        &self,
        obj: &DynamicObject,
        spec: &ChaosExperimentSpec,
        book: &mut Book,
        started: jiff::Timestamp,
        why: String,
    ) {
        let mut run = self.new_run(spec, started);
        run.outcome = Outcome::Skipped;
        step(&mut run, "SteadyStateNotMet", now(), why.clone());
        run.end_time = Some(Time(now()));
        run.message.clone_from(&why);
        info!(experiment = %self.name, reason = %why, "chaos run skipped");
        book.finish(run, spec.history_limit);
        self.write_hard(book).await;
        self.ctx
            .metrics
            .chaos_runs
            .with_label_values(&[&self.name, "Skipped"])
            .inc();
        self.event(obj, EventType::Warning, "ChaosSkipped", &why).await;
    }

    /// One run, from the checks to the recorded outcome.
    async fn run(
        &self,
        obj: &DynamicObject,
        spec: &ChaosExperimentSpec,
        book: &mut Book,
        started: jiff::Timestamp,
    ) {
        let target = spec.fault.region.clone();
        let Some(region) = target else {
            self.skip(obj, spec, book, started, "the fault names no region".into())
                .await;
            return;
        };
        let maker = maker(spec.fault.type_, spec.fault.mode);
        // PodKill: the pods must be there before anything is claimed.
        let pod_target = if maker == Maker::Api {
            match self.pod_target(spec, &region).await {
                Ok(t) => Some(t),
                Err(why) => {
                    self.skip(obj, spec, book, started, why).await;
                    return;
                }
            }
        } else {
            None
        };
        let situation = self.situation(spec, Some(&region), true).await;
        if let Some(why) = start_refusal(spec, Some(&region), &situation, now()) {
            self.skip(obj, spec, book, started, why).await;
            return;
        }
        // Claim the interlock before anything is made, then record the run as Running: a crash from here on
        // leaves a Running run that the next term finishes (withdraws and confirms).
        let me = Activity::Experiment(self.name.clone());
        let concurrent = spec.allow_concurrent;
        let target = region.clone();
        let claimed = self.ctx.handles.interlock.begin_unless(me.clone(), region.clone(), |others, drains| {
            for (a, what) in others {
                match a {
                    Activity::Failover(p) => return Some(format!("a real failover of {p} is under way")),
                    Activity::Drill(d) => return Some(format!("DR drill {d} is under way")),
                    Activity::Experiment(e) if *what == target => {
                        return Some(format!("experiment {e} has a fault active in {target}"));
                    }
                    Activity::Experiment(e) if !concurrent => {
                        return Some(format!(
                            "experiment {e} has a fault active (one region at a time unless allowConcurrent)"
                        ));
                    }
                    Activity::Experiment(_) => {}
                }
            }
            drains
                .iter()
                .find(|(_, d)| !d.by.starts_with("ChaosExperiment/") || !concurrent)
                .map(|(r, d)| format!("{r} is drained by {}", d.by))
        });
        if let Err(why) = claimed {
            self.skip(obj, spec, book, started, why).await;
            return;
        }
        let _release = Release(self.ctx, me);
        let duration = fault_duration(spec);
        let mut run = self.new_run(spec, started);
        step(&mut run, "SteadyStateOk", now(), "");
        let expires = now()
            .checked_add(duration + EXPIRY_GRACE)
            .unwrap_or_else(|_| now());
        run.expires_time = Some(Time(expires));
        book.status.last_run = Some(run.clone());
        if !self.write(book).await {
            warn!(experiment = %self.name, "run not recorded: nothing injected");
            book.status.last_run = book.status.runs.first().cloned();
            return;
        }
        let down_at_start: BTreeSet<String> = situation
            .verdicts
            .iter()
            .filter(|(_, v)| **v == Verdict::Down)
            .map(|(r, _)| r.clone())
            .collect();
        let order = order_for(&self.name, spec, &run.id, expires);
        let ordered = now();
        self.ctx
            .metrics
            .chaos_fault_expires
            .with_label_values(&[&self.name])
            .set(expires.as_second() as f64);
        self.ctx
            .metrics
            .chaos_fault_active
            .with_label_values(&[&self.name])
            .set(1.0);
        let drain = maker == Maker::Drain;
        let by = format!("ChaosExperiment/{}", self.name);
        // A drain lives in this process's memory and ends with the run however it ends.
        let _undrain = drain.then(|| Undrain(self.ctx, region.clone(), by.clone()));
        let mut killed = None;
        let (outcome_override, injected) = if let Some((client, target)) = &pod_target {
            match super::pods::kill(client, target).await {
                Ok(k) => {
                    let at = now();
                    step(
                        &mut run,
                        "FaultInjected",
                        at,
                        format!(
                            "{} of {} pod(s) matching {} in {}/{} deleted: {}",
                            k.pods.len(),
                            k.before,
                            target.selector,
                            region,
                            target.namespace,
                            k.pods
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    killed = Some(k);
                    (None, Some(at))
                }
                Err(e) => (Some(format!("no pod deleted: {e}")), None),
            }
        } else if drain {
            self.ctx.handles.interlock.drain(&region, &by);
            let at = now();
            step(
                &mut run,
                "FaultInjected",
                at,
                format!("RegionOutage (Drain) of {region}: the control plane treats it as down"),
            );
            (None, Some(at))
        } else {
            match self.order(&region, Some(&order)).await {
                Err(e) => (Some(format!("fault not handed to the agent: {e}")), None),
                Ok(()) => match self
                    .report(
                        &region,
                        &order.id,
                        &[FaultState::Applied, FaultState::Refused],
                        self.cfg.agent_wait,
                    )
                    .await
                {
                    Some(r) if r.state == FaultState::Applied => {
                        let at = r.time.max(ordered);
                        step(
                            &mut run,
                            "FaultInjected",
                            at,
                            format!("{} in {region}: {}", order.fault, r.message),
                        );
                        (None, Some(at))
                    }
                    Some(r) => (Some(format!("the agent refused the fault: {}", r.message)), None),
                    None => (
                        Some(format!(
                            "the agent of {region} did not report the fault applied within {}s",
                            self.cfg.agent_wait.as_secs()
                        )),
                        None,
                    ),
                },
            }
        };
        let mut measured = Measured::default();
        let mut aborted = outcome_override;
        if let Some(at) = injected {
            book.status.last_run = Some(run.clone());
            self.write(book).await;
            self.event(
                obj,
                EventType::Normal,
                "FaultInjected",
                &format!("{} in {region} for {}", order.fault, spec.duration),
            )
            .await;
            aborted = self
                .observe(
                    spec,
                    &region,
                    at,
                    duration,
                    &down_at_start,
                    &mut run,
                    &mut measured,
                )
                .await;
        }
        // Revert: withdraw the order, wait for the agent, confirm from here (a drain: end it).
        let (reverted_at, report) = match maker {
            Maker::Drain => {
                self.ctx.handles.interlock.undrain(&region, &by);
                let at = now();
                step(&mut run, "FaultReverted", at, format!("{region} undrained"));
                (at, None)
            }
            Maker::Api => {
                let at = now();
                if killed.is_some() {
                    step(
                        &mut run,
                        "FaultReverted",
                        at,
                        "nothing to revert: deleted pods are recreated by their controllers",
                    );
                }
                (at, None)
            }
            Maker::Agent => self.revert(&region, &order, &mut run).await,
        };
        let confirmed = match (&pod_target, &killed) {
            (Some((client, target)), Some(k)) => self.confirm_pods(client, target, k, &mut run).await,
            (Some(_), None) => true,
            _ => {
                self.confirm(
                    spec.fault.type_,
                    spec.fault.mode,
                    &region,
                    &order.id,
                    report.as_ref(),
                    &mut run,
                )
                .await
            }
        };
        measured.revert_confirmed = confirmed;
        run.revert_confirmed = Some(confirmed);
        // The revert is on record before the (possibly long) wait for recovery.
        book.status.last_run = Some(run.clone());
        self.write(book).await;
        if confirmed {
            self.ctx
                .metrics
                .chaos_fault_active
                .with_label_values(&[&self.name])
                .set(0.0);
        }
        if let (Some(at), None) = (injected, &aborted) {
            measured.recovery_ms = match (&pod_target, &killed) {
                (Some((client, target)), Some(k)) => self.pods_back(client, target, k, at, &mut run).await,
                _ => self.recovery(spec, &region, reverted_at, &mut run).await,
            };
        }
        let (outcome, message) = match aborted {
            Some(why) if confirmed => (Outcome::Aborted, why),
            Some(why) => (
                Outcome::Aborted,
                format!("{why}; the revert could not be confirmed: the fault may still be in place"),
            ),
            None => judge(&spec.expect, &measured),
        };
        self.record(obj, spec, book, run, outcome, message, &measured)
            .await;
    }

    /// Watches the fault for its duration: abort conditions, and the failover it causes.
    #[allow(clippy::too_many_arguments)]
    async fn observe(
        &self,
        spec: &ChaosExperimentSpec,
        region: &str,
        injected: jiff::Timestamp,
        duration: Duration,
        down_at_start: &BTreeSet<String>,
        run: &mut ChaosRun,
        measured: &mut Measured,
    ) -> Option<String> {
        let end = Instant::now() + duration;
        let mut last_check = Instant::now() - Duration::from_secs(10);
        let mut situation = Situation::default();
        while Instant::now() < end {
            self.failovers(region, injected, run, measured);
            if last_check.elapsed() >= Duration::from_secs(1) {
                situation = self.situation(spec, Some(region), false).await;
                last_check = Instant::now();
            }
            // The failovers the fault itself causes are not a reason to abort.
            let mut s = situation.clone();
            s.failovers.clear();
            if let Some(why) = abort_reason(spec, Some(region), down_at_start, &s, now()) {
                step(run, "Aborted", now(), why.clone());
                return Some(why);
            }
            // The agent reverted on its own (expiry): nothing more to watch.
            if let Some(l) = self.lease(region).await
                && let Some(r) = report_of(&l)
                && r.id == run.id
                && r.state == FaultState::Reverted
            {
                step(run, "FaultExpired", r.time, r.message.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.failovers(region, injected, run, measured);
        None
    }

    /// Notes failovers decided since the fault was made; the one away from the target, once verified, is the
    /// measured failover time.
    fn failovers(
        &self,
        region: &str,
        injected: jiff::Timestamp,
        run: &mut ChaosRun,
        measured: &mut Measured,
    ) {
        for p in self.ctx.caches.policies.state() {
            let Some(st) = p
                .data
                .get("status")
                .and_then(|v| serde_json::from_value::<FailoverPolicyStatus>(v.clone()).ok())
            else {
                continue;
            };
            let records = st.last_failover.iter().chain(st.history.iter());
            for f in records {
                let Some(decided) = f.decided_time.as_ref().map(|t| t.0) else {
                    continue;
                };
                if decided < injected {
                    continue;
                }
                measured.failover_happened = true;
                let policy = p.metadata.name.clone().unwrap_or_default();
                let seen = run.timeline.iter().any(|e| {
                    e.step == "FailoverObserved" && e.message.starts_with(&format!("policy {policy}:"))
                });
                if !seen
                    && f.from.as_deref() == Some(region)
                    && let Some(verified) = f.verified_time.as_ref().map(|t| t.0)
                {
                    // Every policy that moved off the target counts; the slowest is the measured time.
                    let ms = ms_between(injected, verified);
                    measured.failover_ms = Some(measured.failover_ms.unwrap_or(0).max(ms));
                    run.failover_ms = measured.failover_ms;
                    step(
                        run,
                        "FailoverObserved",
                        verified,
                        format!(
                            "policy {}: {region} -> {} ({}), verified {:.2}s after the fault",
                            p.metadata.name.clone().unwrap_or_default(),
                            f.to.as_deref().unwrap_or("-"),
                            f.reason,
                            ms as f64 / 1000.0
                        ),
                    );
                }
            }
        }
    }

    async fn revert(
        &self,
        region: &str,
        order: &FaultOrder,
        run: &mut ChaosRun,
    ) -> (jiff::Timestamp, Option<FaultReport>) {
        let mut withdrawn = false;
        for _ in 0..5 {
            match self.order(region, None).await {
                Ok(()) => {
                    withdrawn = true;
                    break;
                }
                Err(e) => {
                    warn!(experiment = %self.name, error = %e, "fault order not withdrawn; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        match self
            .report(
                region,
                &order.id,
                &[FaultState::Reverted, FaultState::Refused],
                self.cfg.agent_wait,
            )
            .await
        {
            Some(r) => {
                step(run, "FaultReverted", r.time, r.message.clone());
                (r.time, Some(r))
            }
            None => {
                let why = if withdrawn {
                    "the agent did not report the revert"
                } else {
                    "the order could not be withdrawn; the agent reverts at expiry"
                };
                step(run, "FaultRevertUnreported", now(), why);
                (now(), None)
            }
        }
    }

    /// The PodKill target in `region`'s cluster, with at least one matching pod.
    async fn pod_target(
        &self,
        spec: &ChaosExperimentSpec,
        region: &str,
    ) -> Result<(kube::Client, azora_api::chaos::PodTarget), String> {
        let target = spec.fault.pods.clone().ok_or("PodKill names no pods")?;
        let cluster = self.ctx.handles.clusters.get(region).map_err(|why| {
            format!(
                "the cluster of {region} is not connected{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )
        })?;
        let client = cluster.client();
        if super::pods::matching(&client, &target).await?.is_empty() {
            return Err(format!(
                "no pod in {region}/{} matches {}",
                target.namespace, target.selector
            ));
        }
        Ok((client, target))
    }

    /// The deleted pods' UIDs are gone.
    async fn confirm_pods(
        &self,
        client: &kube::Client,
        target: &azora_api::chaos::PodTarget,
        killed: &super::pods::Killed,
        run: &mut ChaosRun,
    ) -> bool {
        // A pod stopping gracefully is still there for its grace period.
        let wait = self.cfg.confirm_wait.max(killed.grace + Duration::from_secs(15));
        let gone = format!("{} deleted pod(s) gone", killed.pods.len());
        confirm_by(run, wait, gone, || super::pods::gone(client, target, killed)).await
    }

    /// As many matching pods as before the kill: the time from the kill to the newest replacement's
    /// creation.
    async fn pods_back(
        &self,
        client: &kube::Client,
        target: &azora_api::chaos::PodTarget,
        killed: &super::pods::Killed,
        injected: jiff::Timestamp,
        run: &mut ChaosRun,
    ) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < self.cfg.recovery_wait {
            if let Ok(pods) = super::pods::matching(client, target).await
                && pods.len() >= killed.before
                && pods.iter().filter(|p| super::pods::ready(p)).count() >= killed.ready_before
            {
                // The last replacement created, or (when Ready pods were lost) the last one to turn Ready.
                let newest = pods
                    .iter()
                    .filter_map(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .chain(
                        pods.iter()
                            .filter(|_| killed.ready_before > 0)
                            .filter_map(|p| p.status.as_ref()?.conditions.as_ref())
                            .flatten()
                            .filter(|c| c.type_ == "Ready" && c.status == "True")
                            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0)),
                    )
                    .max()
                    .unwrap_or(injected)
                    .max(injected);
                let ms = ms_between(injected, newest);
                run.recovery_ms = Some(ms);
                step(
                    run,
                    "Recovered",
                    now(),
                    format!(
                        "{} matching pod(s) again, {} Ready; the last replacement came {:.0}s after the kill",
                        pods.len(),
                        pods.iter().filter(|p| super::pods::ready(p)).count(),
                        ms as f64 / 1000.0
                    ),
                );
                return Some(ms);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        step(
            run,
            "NotRecovered",
            now(),
            format!(
                "fewer than {} pods match {} ({} of them Ready) after {}s",
                killed.before,
                target.selector,
                killed.ready_before,
                self.cfg.recovery_wait.as_secs()
            ),
        );
        None
    }

    async fn confirm(
        &self,
        fault: FaultType,
        mode: Option<OutageMode>,
        region: &str,
        id: &str,
        agent: Option<&FaultReport>,
        run: &mut ChaosRun,
    ) -> bool {
        if !made_by_agent(fault, mode) {
            let gone = !self.ctx.handles.interlock.drained().contains_key(region);
            if gone {
                step(
                    run,
                    "RevertConfirmed",
                    now(),
                    format!("{region} is no longer drained"),
                );
            } else {
                step(
                    run,
                    "RevertUnconfirmed",
                    now(),
                    format!("{region} is still drained by another owner"),
                );
            }
            return gone;
        }
        let gone = format!("{fault} in {region} is gone");
        confirm_by(run, self.cfg.confirm_wait, gone, || async move {
            // The agent's latest word on this order: its measurement of the revert may come after the
            // revert's first report.
            let fresh = self
                .lease(region)
                .await
                .as_ref()
                .and_then(report_of)
                .filter(|r| r.id == id && r.state != FaultState::Applied);
            self.confirm_gone(fault, region, fresh.as_ref().or(agent)).await
        })
        .await
    }

    /// Waits for the steady state to return after the revert; the time it took.
    async fn recovery(
        &self,
        spec: &ChaosExperimentSpec,
        region: &str,
        reverted: jiff::Timestamp,
        run: &mut ChaosRun,
    ) -> Option<u64> {
        let wait = spec
            .expect
            .recovery_within
            .as_deref()
            .and_then(|d| azora_core::duration::parse_duration(d).ok())
            .map_or(self.cfg.recovery_wait, |d| (d * 2).max(Duration::from_secs(10)));
        let start = Instant::now();
        while start.elapsed() < wait {
            let s = self.situation(spec, Some(region), false).await;
            let healthy = s.verdicts.values().filter(|v| **v == Verdict::Healthy).count();
            let target_ok = s.verdicts.get(region) == Some(&Verdict::Healthy);
            if target_ok && healthy >= spec.steady_state.min_healthy_regions as usize {
                let ms = ms_between(reverted, now());
                run.recovery_ms = Some(ms);
                step(
                    run,
                    "Recovered",
                    now(),
                    format!(
                        "{region} Healthy again {:.2}s after the revert",
                        ms as f64 / 1000.0
                    ),
                );
                return Some(ms);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        step(
            run,
            "NotRecovered",
            now(),
            format!("{region} not Healthy after {}s", wait.as_secs()),
        );
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        obj: &DynamicObject,
        spec: &ChaosExperimentSpec,
        book: &mut Book,
        mut run: ChaosRun,
        outcome: Outcome,
        message: String,
        measured: &Measured,
    ) {
        run.outcome = outcome;
        run.message.clone_from(&message);
        run.end_time = Some(Time(now()));
        if let Some(ms) = measured.failover_ms {
            self.ctx
                .metrics
                .chaos_failover_seconds
                .with_label_values(&[&self.name])
                .set(ms as f64 / 1000.0);
        }
        let label = outcome.to_string();
        info!(experiment = %self.name, run = %run.id, outcome = %label, failover_ms = ?run.failover_ms,
              recovery_ms = ?run.recovery_ms, %message, "chaos run finished");
        let note = match (outcome, run.failover_ms) {
            (Outcome::Succeeded, Some(ms)) => format!("run {}: failover {:.2}s", run.id, ms as f64 / 1000.0),
            (Outcome::Succeeded, None) => format!("run {}", run.id),
            _ => format!("run {}: {message}", run.id),
        };
        let (type_, reason) = match outcome {
            Outcome::Succeeded => (EventType::Normal, "ChaosSucceeded"),
            Outcome::Aborted => (EventType::Warning, "ChaosAborted"),
            _ => (EventType::Warning, "ChaosFailed"),
        };
        let unconfirmed = run.revert_confirmed == Some(false);
        book.finish(run, spec.history_limit);
        self.write_hard(book).await;
        self.ctx
            .metrics
            .chaos_runs
            .with_label_values(&[&self.name, &label])
            .inc();
        self.event(obj, type_, reason, &note).await;
        if unconfirmed {
            self.event(
                obj,
                EventType::Warning,
                "ChaosRevertUnconfirmed",
                "the fault's revert could not be confirmed: it may still be in place",
            )
            .await;
        }
    }

    /// A run an earlier term left `Running`: withdraw its fault (if the order is still ours), confirm it gone
    /// and record the run `Aborted`.
    async fn finish_interrupted(&self, obj: &DynamicObject, spec: &ChaosExperimentSpec, book: &mut Book) {
        let Some(mut run) = book.status.last_run.clone() else {
            return;
        };
        let me = Activity::Experiment(self.name.clone());
        let region = run.region.clone().or_else(|| spec.fault.region.clone());
        self.ctx
            .handles
            .interlock
            .begin(me.clone(), region.clone().unwrap_or_default());
        let _release = Release(self.ctx, me);
        step(
            &mut run,
            "Interrupted",
            now(),
            "the operator that ran it stopped (restart or leader change)",
        );
        let mut confirmed = true;
        if let Some(region) = &region
            && made_by_agent(spec.fault.type_, spec.fault.mode)
        {
            // The order must be read to know whether it is still ours: a failed read is retried next round.
            let lease = match tokio::time::timeout(
                Duration::from_secs(5),
                self.leases.get_opt(&agent_lease(region)),
            )
            .await
            {
                Ok(Ok(l)) => l,
                _ => {
                    warn!(experiment = %self.name, "agent Lease unreadable; the interrupted run is finished later");
                    return;
                }
            };
            let ours = lease.as_ref().and_then(order_of).is_some_and(|o| o.id == run.id);
            let mut report = None;
            if ours {
                let expires = run.expires_time.as_ref().map_or_else(now, |t| t.0);
                let order = order_for(&self.name, spec, &run.id, expires);
                report = self.revert(region, &order, &mut run).await.1;
            } else if let Some(r) = lease.as_ref().and_then(report_of).filter(|r| r.id == run.id) {
                step(
                    &mut run,
                    "FaultReverted",
                    r.time,
                    format!("{} ({})", r.message, r.state),
                );
                report = Some(r);
            }
            let id = run.id.clone();
            confirmed = self
                .confirm(
                    spec.fault.type_,
                    spec.fault.mode,
                    region,
                    &id,
                    report.as_ref(),
                    &mut run,
                )
                .await;
            run.revert_confirmed = Some(confirmed);
        } else if let Some(region) = &region {
            // A drain ended with the term that made it; one this process still holds is ended now.
            self.ctx
                .handles
                .interlock
                .undrain(region, &format!("ChaosExperiment/{}", self.name));
            if maker(spec.fault.type_, spec.fault.mode) == Maker::Drain {
                let id = run.id.clone();
                confirmed = self
                    .confirm(spec.fault.type_, spec.fault.mode, region, &id, None, &mut run)
                    .await;
            } else {
                // PodKill: nothing stays in place to revert.
                step(&mut run, "RevertConfirmed", now(), "nothing to revert");
            }
            run.revert_confirmed = Some(confirmed);
        }
        if let Some(t) = &run.expires_time {
            self.ctx
                .metrics
                .chaos_fault_expires
                .with_label_values(&[&self.name])
                .set(t.0.as_second() as f64);
        }
        self.ctx
            .metrics
            .chaos_fault_active
            .with_label_values(&[&self.name])
            .set(if confirmed { 0.0 } else { 1.0 });
        let mut message = "interrupted: the operator running it stopped; the fault was withdrawn".to_string();
        if !confirmed {
            message.push_str("; the revert could not be confirmed: the fault may still be in place");
        }
        self.record(
            obj,
            spec,
            book,
            run,
            Outcome::Aborted,
            message,
            &Measured::default(),
        )
        .await;
    }
}

/// Ends a chaos drain when the run ends, however it ends (a term abort drops it too).
struct Undrain<'a>(&'a Context, String, String);
impl Drop for Undrain<'_> {
    fn drop(&mut self) {
        self.0.handles.interlock.undrain(&self.1, &self.2);
    }
}

/// Ends the interlock entry when the run ends, however it ends.
struct Release<'a>(&'a Context, Activity);
impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.handles.interlock.end(&self.1);
    }
}
