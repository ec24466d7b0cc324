//! One drill's task: the schedule, and each run from the pre-checks to the report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::objstore::ObjectStore;
use azora_api::backup::{BackupSpec, BackupStatus, Phase, RestoreStatus};
use azora_api::chaos::{DrDrillSpec, DrDrillStatus, DrillResult, DrillRun, DrillTenant, TimelineEntry};
use azora_api::common::{ConditionStatus, Time, find_condition};
use azora_api::failover::{FailbackMode, FailoverPolicySpec, FailoverPolicyStatus};
use azora_api::region::{RegionSpec, Verdict};
use azora_api::tenant::TenantStatus;
use azora_core::chaos::{RUN_NOW_ANNOTATION, due, next_due};
use azora_core::drill::{
    Before, drill_tenants, judge, report_markdown, rpo_ms, sentinel_key, sentinel_prefix, sentinel_time,
    start_refusal,
};
use azora_core::duration::parse_duration;
use azora_runtime::Context;
use azora_runtime::events::publish;
use azora_runtime::interlock::Activity;
use azora_runtime::pipeline::resource_of;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

/// Label on the scratch Restores a drill makes.
const DRILL_LABEL: &str = "azora.io/drill";
/// How often sentinels are written, and how many before the drain.
const SENTINEL_EVERY: Duration = Duration::from_secs(2);
const SENTINELS_BEFORE: u32 = 3;

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn ms_between(from: jiff::Timestamp, to: jiff::Timestamp) -> u64 {
    u64::try_from(to.duration_since(from).as_millis()).unwrap_or(0)
}

fn step(run: &mut DrillRun, name: &str, message: impl Into<String>) {
    run.timeline.push(TimelineEntry {
        step: name.into(),
        time: Time(now()),
        message: message.into(),
    });
}

fn status_of<T: serde::de::DeserializeOwned + Default>(o: &DynamicObject) -> T {
    o.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn spec_of<T: serde::de::DeserializeOwned>(o: &DynamicObject) -> Option<T> {
    serde_json::from_value(o.data.get("spec")?.clone()).ok()
}

struct Task<'a> {
    ctx: &'a Context,
    name: String,
    writer: StatusWriter,
    restores: Api<DynamicObject>,
}

/// The drill's task for this term.
pub(super) async fn drill_loop(ctx: Context, name: String) {
    let task = Task {
        writer: StatusWriter::new(
            ctx.client.clone(),
            resource_of::<azora_api::DrDrill>(),
            "drill-runs",
            ctx.fence.clone(),
        ),
        restores: Api::all_with(ctx.client.clone(), &resource_of::<azora_api::Restore>()),
        ctx: &ctx,
        name,
    };
    let mut changes = ctx.caches.drills.changed();
    // This task is the only writer of these fields during its term: what it wrote last is newer than what
    // the cache may still show.
    let mut known: Option<(Option<String>, DrDrillStatus)> = None;
    loop {
        let Some(obj) = task.object() else { return };
        let mut status: DrDrillStatus = match &known {
            Some((uid, s)) if *uid == obj.metadata.uid => s.clone(),
            _ => status_of(&obj),
        };
        if let Some(spec) = spec_of::<DrDrillSpec>(&obj) {
            if status
                .last_run
                .as_ref()
                .is_some_and(|r| r.result == DrillResult::Running)
            {
                task.finish_interrupted(&obj, &spec, &mut status).await;
            } else {
                task.tick(&obj, &spec, &mut status).await;
            }
            known = Some((obj.metadata.uid.clone(), status.clone()));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

impl Task<'_> {
    fn object(&self) -> Option<DynamicObject> {
        self.ctx
            .caches
            .drills
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(self.name.as_str()))
            .map(|o| (*o).clone())
    }

    async fn write(&self, status: &DrDrillStatus) -> bool {
        let body = json!({
            "lastRun": status.last_run,
            "runs": status.runs,
            "nextRunTime": status.next_run_time,
            "runNowHandled": status.run_now_handled,
        });
        match self.writer.apply(&self.name, None, body).await {
            Ok(()) => true,
            Err(e) => {
                warn!(drill = %self.name, error = %e, "drill status not written");
                false
            }
        }
    }

    async fn write_hard(&self, status: &DrDrillStatus) {
        for _ in 0..30 {
            if self.write(status).await {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn tick(&self, obj: &DynamicObject, spec: &DrDrillSpec, status: &mut DrDrillStatus) {
        let asked = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RUN_NOW_ANNOTATION));
        let since = status
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
            status.run_now_handled.as_deref(),
            now(),
        );
        let (run_now, next, due) = (want.run_now.is_some(), want.next, want.now);
        let asked = want.run_now;
        let judged = azora_runtime::pipeline::judged(obj);
        if !due {
            let want = next.map(Time);
            if status.next_run_time != want && judged.as_ref().is_some_and(Result::is_ok) {
                status.next_run_time = want;
                self.write(status).await;
            }
            return;
        }
        let Some(judged) = judged else { return };
        if run_now {
            status.run_now_handled = asked;
        }
        let started = now();
        let mut run = self.new_run(spec, started);
        match judged {
            Err(why) => {
                if !run_now {
                    return;
                }
                self.finish(
                    obj,
                    spec,
                    status,
                    run,
                    DrillResult::Skipped,
                    format!("spec not valid: {why}"),
                )
                .await;
            }
            Ok(()) => {
                let (result, message) = self.run(obj, spec, status, &mut run).await;
                self.finish(obj, spec, status, run, result, message).await;
            }
        }
        status.next_run_time = if spec.suspend {
            None
        } else {
            next_due(&spec.schedule, started).map(Time)
        };
        self.write_hard(status).await;
    }

    fn new_run(&self, spec: &DrDrillSpec, started: jiff::Timestamp) -> DrillRun {
        DrillRun {
            id: format!(
                "{}-{}{:03}",
                self.name,
                started.strftime("%Y%m%d-%H%M%S"),
                started.subsec_millisecond()
            ),
            result: DrillResult::Running,
            start_time: Time(started),
            end_time: None,
            measured_rto_seconds: None,
            measured_rpo_seconds: None,
            rto_ms: None,
            backup_rpo_ms: None,
            sentinel_rpo_ms: None,
            failback_ms: None,
            lose_region: Some(spec.scenario.lose_region.clone()),
            dr_region: spec.scenario.dr_region.clone(),
            tenants: Vec::new(),
            timeline: vec![TimelineEntry {
                step: "Scheduled".into(),
                time: Time(started),
                message: String::new(),
            }],
            report: None,
            message: String::new(),
        }
    }

    fn region(&self, name: &str) -> Option<RegionSpec> {
        self.ctx
            .caches
            .regions
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name))
            .and_then(|o| spec_of(&o))
    }

    async fn store(&self, region: &str) -> Result<(ObjectStore, String), String> {
        let spec = self
            .region(region)
            .ok_or_else(|| format!("region {region} not found"))?;
        let cfg = self
            .ctx
            .store_config(&spec)
            .await?
            .ok_or_else(|| format!("region {region} names no object store"))?;
        Ok((ObjectStore::new(&cfg), cfg.bucket))
    }

    fn verdicts(&self) -> BTreeMap<String, Verdict> {
        let live: BTreeMap<String, Verdict> = self
            .ctx
            .handles
            .verdicts
            .all()
            .into_iter()
            .map(|(r, h)| (r, h.verdict))
            .collect();
        if live.is_empty() {
            self.ctx.recorded_verdicts()
        } else {
            live
        }
    }

    fn tenant_status(&self, name: &str) -> Option<TenantStatus> {
        self.ctx
            .caches
            .tenants
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name))
            .map(|o| status_of(&o))
    }

    fn policies(&self) -> Vec<(String, FailoverPolicySpec, FailoverPolicyStatus)> {
        self.ctx
            .caches
            .policies
            .state()
            .into_iter()
            .filter_map(|o| Some((o.metadata.name.clone()?, spec_of(&o)?, status_of(&o))))
            .collect()
    }

    /// Where each of `names` stands, for a run that did not see DNS move: active region, last failover and
    /// whether DNS verified it, and the policy's DnsPublished condition.
    fn policy_states(&self, names: &[String]) -> String {
        let policies = self.policies();
        names
            .iter()
            .map(|n| {
                let Some((_, _, st)) = policies.iter().find(|(p, _, _)| p == n) else {
                    return format!("{n}: gone");
                };
                let last = st.last_failover.as_ref().map_or("no failover".to_string(), |f| {
                    format!(
                        "epoch {} {} -> {} ({}), {}",
                        f.epoch,
                        f.from.as_deref().unwrap_or("none"),
                        f.to.as_deref().unwrap_or("none"),
                        f.reason,
                        f.verified_time
                            .as_ref()
                            .map_or("not verified".to_string(), |v| format!("verified {}", v.0))
                    )
                });
                let published = ["DnsPublished", "FailoverHeld"]
                    .iter()
                    .filter_map(|t| find_condition(&st.conditions, t))
                    .map(|c| format!("; {} {:?} {}: {}", c.type_, c.status, c.reason, c.message))
                    .collect::<String>();
                format!(
                    "{n}: active {}, {last}{published}",
                    st.active_region.as_deref().unwrap_or("none")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A real outage of a region other than the lost one (and the DR region's, any time).
    fn outage(&self, lose: &str) -> Option<String> {
        self.verdicts()
            .into_iter()
            .find(|(r, v)| *v == Verdict::Down && r != lose)
            .map(|(r, _)| format!("region {r} went Down during the drill: a real outage"))
    }

    /// One run; returns its result and why.
    async fn run(
        &self,
        obj: &DynamicObject,
        spec: &DrDrillSpec,
        status: &mut DrDrillStatus,
        run: &mut DrillRun,
    ) -> (DrillResult, String) {
        let lose = spec.scenario.lose_region.clone();
        let routed: BTreeMap<String, Option<String>> = self
            .ctx
            .caches
            .tenants
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .map(|t| {
                let r = self.ctx.routed_to(&t);
                (t, r)
            })
            .collect();
        let tenants = drill_tenants(spec, &routed);
        let mut before = Before {
            verdicts: self.verdicts(),
            halted: self.ctx.chaos_halt(true).await,
            ..Before::default()
        };
        for (a, what) in self.ctx.handles.interlock.active() {
            match a {
                Activity::Failover(p) => before.busy.push(format!("a real failover of {p} ({what})")),
                Activity::Experiment(e) => before.busy.push(format!("chaos experiment {e}")),
                Activity::Drill(d) if d != self.name => before.busy.push(format!("DR drill {d}")),
                Activity::Drill(_) => {}
            }
        }
        for (r, d) in self.ctx.handles.interlock.drained() {
            before.busy.push(format!("a drain of {r} by {}", d.by));
        }
        for t in &tenants {
            before
                .tenants
                .insert(t.clone(), self.tenant_status(t).map(|s| s.placed_regions));
        }
        before.routed = routed.clone();
        before.serving_lose = self.policies().iter().any(|(_, _, st)| {
            st.active_regions.contains(&lose) || st.active_region.as_deref() == Some(&lose)
        });
        if let Some(why) = start_refusal(spec, &tenants, &before) {
            step(run, "PreCheckFailed", why.clone());
            return (DrillResult::Skipped, why);
        }
        step(run, "PreChecksOk", format!("tenants: {}", tenants.join(", ")));
        // Claim the interlock, record Running, then act: a crash from here leaves a Running run that the
        // next term finishes (and the drain, held in memory, dies with the process or term).
        let me = Activity::Drill(self.name.clone());
        let claimed = self
            .ctx
            .handles
            .interlock
            .begin_unless(me.clone(), lose.clone(), |others, drains| {
                others
                    .keys()
                    .next()
                    .map(|a| format!("{a:?} is under way"))
                    .or_else(|| {
                        drains
                            .iter()
                            .next()
                            .map(|(r, d)| format!("{r} is drained by {}", d.by))
                    })
            });
        if let Err(why) = claimed {
            step(run, "PreCheckFailed", why.clone());
            return (DrillResult::Skipped, why);
        }
        let by = format!("DrDrill/{}", self.name);
        let _guard = Guard {
            ctx: self.ctx,
            activity: me,
            region: lose.clone(),
            by: by.clone(),
        };
        run.tenants = tenants
            .iter()
            .map(|t| DrillTenant {
                name: t.clone(),
                ..DrillTenant::default()
            })
            .collect();
        status.last_run = Some(run.clone());
        if !self.write(status).await {
            return (
                DrillResult::Aborted,
                "the run could not be recorded; nothing was drained".into(),
            );
        }
        // Sentinels in the lost region's store, every couple of seconds up to the drain.
        let (lose_store, _) = match self.store(&lose).await {
            Ok(s) => s,
            Err(e) => return (DrillResult::Aborted, format!("sentinels: {e}")),
        };
        for i in 0..SENTINELS_BEFORE {
            for t in &mut run.tenants {
                let at = now();
                if let Err(e) = self.ctx.fence.check().await {
                    return (DrillResult::Aborted, format!("leader fence: {e}"));
                }
                match lose_store
                    .put_bytes(&sentinel_key(&t.name, &run.id, at), at.to_string().into_bytes())
                    .await
                {
                    Ok(_) => t.last_sentinel_written = Some(Time(at)),
                    Err(e) => warn!(drill = %self.name, tenant = %t.name, error = %e, "sentinel not written"),
                }
            }
            if i + 1 < SENTINELS_BEFORE {
                tokio::time::sleep(SENTINEL_EVERY).await;
            }
        }
        step(
            run,
            "SentinelsWritten",
            format!("{SENTINELS_BEFORE} per tenant in {lose}"),
        );
        // The policies that answer the lost region now: they must move.
        let moving: Vec<String> = self
            .policies()
            .into_iter()
            .filter(|(_, _, st)| {
                st.active_regions.contains(&lose) || st.active_region.as_deref() == Some(&lose)
            })
            .map(|(n, _, _)| n)
            .collect();
        // The clock starts before the drain: nothing the drain causes can be dated before it.
        let drained = now();
        self.ctx.handles.interlock.drain(&lose, &by);
        step(run, "Drained", format!("{lose} taken out at the control plane"));
        if let Some(dr) = &spec.scenario.dr_region {
            self.sentinel_rpo(dr, run, true).await;
        }
        info!(drill = %self.name, region = %lose, "drill drained a region");
        status.last_run = Some(run.clone());
        self.write(status).await;
        publish(
            self.ctx,
            obj,
            EventType::Normal,
            "DrillStarted",
            &format!("run {}: {lose} drained", run.id),
            "Drill",
        )
        .await;
        let rto = parse_duration(&spec.objectives.rto).unwrap_or(Duration::from_secs(900));
        // RTO: DNS verified away from the lost region, and every tenant active and Ready elsewhere.
        let deadline = Instant::now() + (rto * 2).max(Duration::from_secs(60));
        let mut dns_at: Option<jiff::Timestamp> = None;
        let mut halt_checked = Instant::now();
        loop {
            if let Some(why) = self.outage(&lose) {
                step(run, "Aborted", why.clone());
                return (DrillResult::Aborted, why);
            }
            if halt_checked.elapsed() >= Duration::from_secs(2) {
                halt_checked = Instant::now();
                if let Some(why) = self.ctx.chaos_halt(false).await {
                    let why = format!("chaos and drills halted: {why}");
                    step(run, "Aborted", why.clone());
                    return (DrillResult::Aborted, why);
                }
            }
            if dns_at.is_none() {
                let policies = self.policies();
                // Each policy answers without the lost region, under an epoch decided since the drain and
                // verified. The move may have taken more than one step (a first target confirmed sooner than
                // a preferred one, then moved on), so the last record need not be the one from the lost region.
                let done = moving.iter().all(|p| {
                    policies.iter().any(|(n, _, st)| {
                        n == p
                            && st.active_region.as_deref() != Some(lose.as_str())
                            && !st.active_regions.contains(&lose)
                            && st.last_failover.as_ref().is_some_and(|f| {
                                f.epoch == st.epoch
                                    && f.decided_time.as_ref().is_some_and(|d| d.0 >= drained)
                                    && f.verified_time.is_some()
                            })
                    })
                });
                if done {
                    // RTO counts to the first verified answer away from the lost region.
                    let at = moving
                        .iter()
                        .filter_map(|p| {
                            let (_, _, st) = policies.iter().find(|(n, _, _)| n == p)?;
                            st.last_failover
                                .iter()
                                .chain(st.history.iter())
                                .filter(|f| {
                                    f.from.as_deref() == Some(lose.as_str())
                                        && f.decided_time.as_ref().is_some_and(|d| d.0 >= drained)
                                })
                                .filter_map(|f| f.verified_time.as_ref().map(|v| v.0))
                                .min()
                        })
                        .max()
                        .unwrap_or_else(now);
                    dns_at = Some(at);
                    step(
                        run,
                        "DnsMoved",
                        format!("{} answering elsewhere, verified", moving.join(", ")),
                    );
                }
            }
            let mut all = true;
            for t in &mut run.tenants {
                if t.recovered_time.is_some() {
                    continue;
                }
                let st = self.tenant_status(&t.name).unwrap_or_default();
                let active = st.active_region.clone();
                let ready = find_condition(&st.conditions, "Ready")
                    .is_some_and(|c| c.status == ConditionStatus::True);
                let placed = active.as_ref().is_some_and(|a| st.placed_regions.contains(a));
                let want_dr = spec
                    .scenario
                    .dr_region
                    .as_ref()
                    .is_none_or(|d| active.as_ref() == Some(d));
                if ready && placed && want_dr && active.as_deref().is_some_and(|a| a != lose) {
                    t.recovered_time = Some(Time(now()));
                } else {
                    all = false;
                }
            }
            if all && dns_at.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let why = format!(
                    "not recovered within {}s of the drain (DNS moved: {}{}; tenants recovered: {}/{})",
                    (rto * 2).max(Duration::from_secs(60)).as_secs(),
                    dns_at.is_some(),
                    if dns_at.is_some() {
                        String::new()
                    } else {
                        format!(" — {}", self.policy_states(&moving))
                    },
                    run.tenants.iter().filter(|t| t.recovered_time.is_some()).count(),
                    run.tenants.len()
                );
                step(run, "NotRecovered", why);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let recovered = run
            .tenants
            .iter()
            .map(|t| t.recovered_time.as_ref().map(|t| t.0))
            .chain(std::iter::once(dns_at))
            .try_fold(drained, |acc, t| t.map(|t| acc.max(t)));
        if let Some(at) = recovered {
            let ms = ms_between(drained, at);
            run.rto_ms = Some(ms);
            run.measured_rto_seconds = Some(ms.div_ceil(1000));
            step(run, "Recovered", format!("RTO {:.2}s", ms as f64 / 1000.0));
        }
        let dr = spec.scenario.dr_region.clone().or_else(|| {
            run.tenants
                .first()
                .and_then(|t| self.tenant_status(&t.name))
                .and_then(|s| s.active_region)
                .filter(|a| *a != lose)
        });
        run.dr_region.clone_from(&dr);
        status.last_run = Some(run.clone());
        self.write(status).await;
        if let Some(dr) = &dr {
            if spec.scenario.dr_region.is_none() {
                self.sentinel_rpo(dr, run, false).await;
            }
            if spec.verify_restore
                && let Some(why) = self.restore_all(dr, drained, run).await
            {
                step(run, "Aborted", why.clone());
                self.ctx.handles.interlock.undrain(&lose, &by);
                self.cleanup(run).await;
                return (DrillResult::Aborted, why);
            }
        }
        // Fail back.
        self.ctx.handles.interlock.undrain(&lose, &by);
        let undrained = now();
        step(run, "Undrained", format!("{lose} back at the control plane"));
        if spec.failback {
            self.failback(&lose, &moving, undrained, run).await;
        }
        self.cleanup(run).await;
        let (result, message) = judge(spec, run);
        if let Some(dr) = &dr {
            run.result = result;
            run.message.clone_from(&message);
            run.end_time = Some(Time(now()));
            self.report(spec, dr, run).await;
        }
        (result, message)
    }

    /// The sentinel RPO: for each tenant, the last sentinel written in the lost region minus the newest one
    /// present in the DR region. `at_drain`: read once, as the DR region holds them at the moment of the
    /// loss (what a real loss then would have lost); otherwise the newest that arrived within 20 s in all.
    async fn sentinel_rpo(&self, dr: &str, run: &mut DrillRun, at_drain: bool) {
        let Ok((store, _)) = self.store(dr).await else {
            step(
                run,
                "SentinelsNotChecked",
                format!("{dr} names no usable object store"),
            );
            return;
        };
        let lose = run.lose_region.clone().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut worst: Option<u64> = None;
        let start_time = run.start_time.0;
        let id = run.id.clone();
        for t in &mut run.tenants {
            let Some(written) = t.last_sentinel_written.as_ref().map(|w| w.0) else {
                continue;
            };
            let mut newest = None;
            loop {
                let listed =
                    tokio::time::timeout(Duration::from_secs(5), store.list(&sentinel_prefix(&t.name, &id)))
                        .await;
                newest = match listed {
                    Ok(Ok(l)) => l.iter().filter_map(|o| sentinel_time(&o.key)).max(),
                    _ => newest,
                };
                if at_drain
                    || newest == Some(written)
                    || Instant::now() >= deadline
                    || self.outage(&lose).is_some()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let lost = match newest {
                Some(n) => {
                    t.newest_sentinel_found = Some(Time(n));
                    ms_between(n, written)
                }
                // None had arrived: at least everything since the first sentinel.
                None => ms_between(start_time, written),
            };
            worst = Some(worst.unwrap_or(0).max(lost));
        }
        run.sentinel_rpo_ms = worst;
        if let Some(ms) = worst {
            let when = if at_drain {
                "at the drain"
            } else {
                "after recovery"
            };
            step(
                run,
                "SentinelsChecked",
                format!("sentinel RPO {:.2}s ({when})", ms as f64 / 1000.0),
            );
        }
    }

    /// Restores each tenant's newest verified backup from the DR region's own copy into a scratch namespace
    /// there. Returns an abort reason (a real outage); per-tenant failures are recorded on the tenant.
    async fn restore_all(&self, dr: &str, drained: jiff::Timestamp, run: &mut DrillRun) -> Option<String> {
        let lose = run.lose_region.clone().unwrap_or_default();
        let short = run.start_time.0.strftime("%m%d%H%M%S").to_string();
        let mut made = Vec::new();
        for t in &mut run.tenants {
            let newest = self
                .ctx
                .caches
                .backups
                .state()
                .into_iter()
                .filter_map(|o| {
                    let spec: BackupSpec = spec_of(&o)?;
                    let st: BackupStatus = status_of(&o);
                    (spec.tenant == t.name && st.phase == Some(Phase::Succeeded))
                        .then_some((o.metadata.name.clone()?, st))
                })
                .filter(|(_, st)| st.locations.iter().any(|l| l.region == dr && l.verified))
                // The data that existed when the region was lost: not a backup taken since, elsewhere.
                .filter(|(_, st)| st.data_time.as_ref().is_some_and(|d| d.0 <= drained))
                .max_by_key(|(_, st)| st.data_time.as_ref().map(|d| d.0));
            let Some((backup, st)) = newest else {
                t.message = format!("no verified backup copy in {dr} from before the drain");
                continue;
            };
            t.backup = Some(backup.clone());
            t.backup_data_time = st.data_time;
            let tenant_part: String = t.name.chars().take(40).collect();
            let ns = format!("drill-{tenant_part}-{short}");
            let name = format!("{ns}-{}", self.name.chars().take(60).collect::<String>());
            let body = json!({
                "apiVersion": "azora.io/v1alpha1", "kind": "Restore",
                "metadata": {"name": name, "labels": {DRILL_LABEL: self.label()}},
                "spec": {"backup": backup, "targetRegion": dr, "targetNamespace": ns, "verify": true}
            });
            if let Err(e) = self.ctx.fence.check().await {
                return Some(format!("leader fence: {e}"));
            }
            match serde_json::from_value::<DynamicObject>(body) {
                Ok(o) => match self.restores.create(&PostParams::default(), &o).await {
                    Ok(_) => {
                        t.restore = Some(name.clone());
                        made.push((t.name.clone(), name));
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        t.message =
                            format!("a Restore named {name} already exists: an earlier cleanup failed");
                    }
                    Err(e) => t.message = format!("restore not created: {e}"),
                },
                Err(e) => t.message = format!("restore not created: {e}"),
            }
        }
        step(
            run,
            "RestoresStarted",
            format!("{} scratch restore(s) in {dr}", made.len()),
        );
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut pending = made;
        while !pending.is_empty() && Instant::now() < deadline {
            if let Some(why) = self.outage(&lose) {
                return Some(why);
            }
            if let Some(why) = self.ctx.chaos_halt(false).await {
                return Some(format!("chaos and drills halted: {why}"));
            }
            let mut still = Vec::new();
            for (tenant, name) in pending {
                let st: Option<RestoreStatus> = self
                    .restores
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| status_of(&o));
                let Some(t) = run.tenants.iter_mut().find(|t| t.name == tenant) else {
                    continue;
                };
                let described = st.and_then(|s| {
                    let why = find_condition(&s.conditions, "Ready")
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                    Some((s.phase?, s.verified, why))
                });
                match described {
                    Some((Phase::Succeeded, verified, _)) => {
                        t.restore_verified = Some(verified == Some(true));
                        if verified != Some(true) {
                            t.message = "the restore did not verify".into();
                        }
                    }
                    Some((Phase::Failed | Phase::PartiallyFailed, _, msg)) => {
                        t.restore_verified = Some(false);
                        t.message = format!("restore failed: {msg}");
                    }
                    _ => still.push((tenant, name)),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        for (tenant, _) in &pending {
            if let Some(t) = run.tenants.iter_mut().find(|t| &t.name == tenant) {
                t.message = "restore did not finish within 10 minutes".into();
            }
        }
        let oldest = run
            .tenants
            .iter()
            .filter(|t| t.restore_verified == Some(true))
            .filter_map(|t| t.backup_data_time.as_ref().map(|d| d.0))
            .min();
        if let Some(data) = oldest {
            let ms = ms_between(data, drained);
            run.backup_rpo_ms = Some(ms);
            step(
                run,
                "RestoresVerified",
                format!("backup RPO {:.2}s", ms as f64 / 1000.0),
            );
        }
        if let Some(ms) = rpo_ms(run) {
            run.measured_rpo_seconds = Some(ms.div_ceil(1000));
        }
        None
    }

    fn label(&self) -> String {
        self.name.chars().take(63).collect()
    }

    async fn failback(&self, lose: &str, moving: &[String], undrained: jiff::Timestamp, run: &mut DrillRun) {
        let policies = self.policies();
        let manual: Vec<&String> = moving
            .iter()
            .filter(|p| {
                policies
                    .iter()
                    .any(|(n, s, _)| n == *p && s.failback.mode == FailbackMode::Manual)
            })
            .collect();
        if !manual.is_empty() {
            step(
                run,
                "FailbackAwaitsApproval",
                format!(
                    "{} fail back by approval only (kubectl azora approve-failback)",
                    manual.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            );
            return;
        }
        let hold = policies
            .iter()
            .filter(|(n, _, _)| moving.contains(n))
            .filter_map(|(_, s, _)| parse_duration(&s.failback.hold_down).ok())
            .max()
            .unwrap_or_default();
        let deadline = Instant::now() + hold + Duration::from_secs(120);
        while Instant::now() < deadline {
            let policies = self.policies();
            let back = moving.iter().all(|p| {
                policies.iter().any(|(n, _, st)| {
                    n == p
                        && st.active_region.as_deref() == Some(lose)
                        && st
                            .last_failover
                            .as_ref()
                            .is_some_and(|f| f.verified_time.as_ref().is_some_and(|v| v.0 >= undrained))
                })
            });
            if back {
                let ms = ms_between(undrained, now());
                run.failback_ms = Some(ms);
                step(
                    run,
                    "FailedBack",
                    format!("{lose} answering again after {:.2}s", ms as f64 / 1000.0),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        step(
            run,
            "FailbackNotSeen",
            format!(
                "{lose} not answering again within {}s",
                (hold + Duration::from_secs(120)).as_secs()
            ),
        );
    }

    /// Deletes this drill's scratch Restores (their namespaces go with them) and waits for them to go.
    async fn cleanup(&self, run: &mut DrillRun) {
        let lp = ListParams::default().labels(&format!("{DRILL_LABEL}={}", self.label()));
        let Ok(list) = self.restores.list(&lp).await else {
            step(run, "CleanupIncomplete", "scratch restores could not be listed");
            return;
        };
        if list.items.is_empty() {
            return;
        }
        if self.ctx.fence.check().await.is_err() {
            return;
        }
        for r in &list.items {
            if let Some(n) = &r.metadata.name {
                let _ = self.restores.delete(n, &DeleteParams::default()).await;
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            match self.restores.list(&lp).await {
                Ok(l) if l.items.is_empty() => {
                    step(
                        run,
                        "CleanedUp",
                        format!("{} scratch namespace(s) removed", list.items.len()),
                    );
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        step(
            run,
            "CleanupIncomplete",
            "scratch restores still present after 120s",
        );
    }

    /// Writes the Markdown and JSON report into the DR region's object store.
    async fn report(&self, spec: &DrDrillSpec, dr: &str, run: &mut DrillRun) {
        let (store, bucket) = match self.store(dr).await {
            Ok(s) => s,
            Err(e) => {
                step(run, "ReportNotWritten", e);
                return;
            }
        };
        let base = format!("drills/{}/{}", self.name, run.id);
        run.report = Some(format!("s3://{bucket}/{base}.md"));
        step(run, "Reported", format!("s3://{bucket}/{base}.md and .json"));
        let md = report_markdown(&self.name, spec, run);
        let js = serde_json::to_vec_pretty(&json!({"drill": self.name, "spec": spec, "run": run}))
            .unwrap_or_default();
        if self.ctx.fence.check().await.is_err() {
            return;
        }
        for (key, body) in [
            (format!("{base}.md"), md.into_bytes()),
            (format!("{base}.json"), js),
        ] {
            if let Err(e) = store.put_bytes(&key, body).await {
                warn!(drill = %self.name, error = %e, "drill report not written");
                run.report = None;
                step(run, "ReportNotWritten", format!("{key}: {e}"));
            }
        }
    }

    async fn finish(
        &self,
        obj: &DynamicObject,
        spec: &DrDrillSpec,
        status: &mut DrDrillStatus,
        mut run: DrillRun,
        result: DrillResult,
        message: String,
    ) {
        run.result = result;
        run.message.clone_from(&message);
        if run.end_time.is_none() {
            run.end_time = Some(Time(now()));
        }
        let label = result.to_string();
        let m = &self.ctx.metrics;
        m.drill_runs.with_label_values(&[&self.name, &label]).inc();
        if let Some(ms) = run.rto_ms {
            m.drill_rto_seconds
                .with_label_values(&[&self.name])
                .set(ms as f64 / 1000.0);
        }
        if let Some(ms) = rpo_ms(&run) {
            m.drill_rpo_seconds
                .with_label_values(&[&self.name])
                .set(ms as f64 / 1000.0);
        }
        if result == DrillResult::Passed {
            m.drill_last_success
                .with_label_values(&[&self.name])
                .set(now().as_second() as f64);
        }
        info!(drill = %self.name, run = %run.id, result = %label, rto_ms = ?run.rto_ms, rpo_ms = ?rpo_ms(&run),
              failback_ms = ?run.failback_ms, %message, "drill finished");
        let note = match result {
            DrillResult::Passed => format!(
                "run {}: RTO {}s, RPO {}s",
                run.id,
                run.measured_rto_seconds.unwrap_or(0),
                run.measured_rpo_seconds.unwrap_or(0)
            ),
            _ => format!("run {}: {message}", run.id),
        };
        let (type_, reason) = match result {
            DrillResult::Passed => (EventType::Normal, "DrillPassed"),
            DrillResult::Skipped => (EventType::Warning, "DrillSkipped"),
            DrillResult::Aborted => (EventType::Warning, "DrillAborted"),
            _ => (EventType::Warning, "DrillFailed"),
        };
        status.runs.retain(|r| r.id != run.id);
        status.runs.insert(0, run.clone());
        status.runs.truncate(spec.history_limit.max(1) as usize);
        status.last_run = Some(run);
        self.write_hard(status).await;
        publish(self.ctx, obj, type_, reason, &note, "Drill").await;
    }

    /// A run an earlier term left `Running`: its drain died with that term; clean up and record `Aborted`.
    async fn finish_interrupted(&self, obj: &DynamicObject, spec: &DrDrillSpec, status: &mut DrDrillStatus) {
        let Some(mut run) = status.last_run.clone() else {
            return;
        };
        if let Some(lose) = &run.lose_region {
            // Only a drain this drill made (in this process) is ended.
            self.ctx
                .handles
                .interlock
                .undrain(lose, &format!("DrDrill/{}", self.name));
        }
        step(
            &mut run,
            "Interrupted",
            "the operator that ran it stopped (restart or leader change)",
        );
        self.cleanup(&mut run).await;
        self.finish(
            obj,
            spec,
            status,
            run,
            DrillResult::Aborted,
            "interrupted: the operator running it stopped; the drain ended with it".into(),
        )
        .await;
    }
}

/// Ends the drain and the interlock entry however the run ends (a term abort drops it too).
struct Guard<'a> {
    ctx: &'a Context,
    activity: Activity,
    region: String,
    by: String,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.ctx.handles.interlock.undrain(&self.region, &self.by);
        self.ctx.handles.interlock.end(&self.activity);
    }
}
