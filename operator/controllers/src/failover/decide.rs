//! The failover loop (IO), run by the leader: for every FailoverPolicy, plan answers from the current
//! verdicts (pure planner), and when they change: record the intent with the next epoch in status
//! (compare-and-swap on the epoch, behind the leader fence) → publish to the DNS provider → verify by
//! resolving against the authoritative servers → record the timeline. An interrupted failover (recorded
//! but not verified) is resumed under the same epoch after a restart.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use azora_adapters::dns::embedded::Zones;
use azora_adapters::dns::rfc2136::TsigKey;
use azora_adapters::kube_status::StatusWriter;
use azora_api::failover::{DnsProviderType, FailoverPolicySpec, FailoverPolicyStatus, FailoverRecord};
use azora_api::region::{RegionSpec, Verdict};
use azora_api::{Condition, Time};
use azora_core::conditions::{self, Desired};
use azora_core::duration::parse_duration;
use azora_core::failover::{
    Candidate, FailbackRule, Held, Input, Manual, ManualOutcome, Reason, Vetting, plan, serving,
};
use azora_core::placement::place;
use azora_core::validate::{self, ProblemKind};
use base64::Engine;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use azora_core::failover::freshest;
use azora_runtime::pipeline::Kind as _;
use azora_runtime::{Context, Needs};

use super::FailoverPolicyKind;
use super::publish::{publish_and_verify, published_condition, write};
use super::zone::{answers_list, answers_map, zone_data};

/// How long a policy's first answers may wait for every candidate region's first verdict.
const INITIAL_GRACE: Duration = Duration::from_secs(15);

/// Settings of the failover loop.
#[derive(Clone)]
pub struct FailoverConfig {
    /// The local embedded server's zones (published at once, before other replicas see the status).
    pub zones: Zones,
    /// Embedded servers to verify against (this replica's, plus configured peers).
    pub verify_servers: Vec<SocketAddr>,
    /// How long the DNS step of a failover waits for the Databases following the policy to promote their
    /// member in the new active region (`Database.status.policyEpoch`) before it moves DNS anyway.
    pub database_wait: Duration,
}

/// Errors of one policy's failover step.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error("reading the policy failed")]
    Kube(#[from] kube::Error),
    #[error("status write refused")]
    Status(#[from] azora_adapters::kube_status::StatusError),
    #[error("epoch moved from {expected} to {found}: another writer decided")]
    EpochMoved { expected: u64, found: u64 },
    #[error("the API server did not answer in time")]
    Deadline,
}

/// Deadline of one API call of the failover loop.
pub(super) const API_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of resolving an RFC 2136 server's name.
pub(super) const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// What the failover manager owns in a policy's status; always written whole (server-side apply).
pub(super) struct Owned {
    pub(super) status: FailoverPolicyStatus,
    pub(super) published: Desired,
}

struct Checked {
    generation: Option<i64>,
    valid: bool,
    tsig: Option<TsigKey>,
    at: Instant,
}

/// Runs until `stop` resolves: one task per FailoverPolicy, so a slow or broken DNS provider of one
/// policy never delays another policy's failover.
pub async fn run(ctx: Context, cfg: FailoverConfig, stop: impl std::future::Future<Output = ()>) {
    let policies = ctx.caches.policies.clone();
    let mut changed = policies.changed();
    let mut tasks: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let term_start = Instant::now();
    tokio::pin!(stop);
    // A term starts with no account of unverified failovers: a replica that led before must not export its
    // last term's numbers while it leads again.
    ctx.metrics.failover_unverified.reset();
    ctx.metrics.failover_last_decision.reset();
    ctx.metrics.failover_last_decided.reset();
    ctx.metrics.failover_deadline.reset();
    tokio::select! {
        () = policies.ready() => {}
        () = &mut stop => return,
    }
    info!("failover loop started");
    loop {
        let names: Vec<String> = policies
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        for name in &names {
            if tasks.get(name).is_none_or(|t| t.is_finished()) {
                let task = policy_loop(ctx.clone(), cfg.clone(), name.clone(), term_start);
                tasks.insert(name.clone(), ctx.supervisor.spawn_term("failover/policy", task));
            }
        }
        tasks.retain(|name, t| {
            let keep = names.contains(name);
            if !keep {
                t.abort();
                ctx.handles.verdicts.set_serving(name, Default::default());
                let _ = ctx.metrics.failover_unverified.remove_label_values(&[name]);
                let _ = ctx.metrics.failover_last_decision.remove_label_values(&[name]);
                let _ = ctx.metrics.failover_last_decided.remove_label_values(&[name]);
                let _ = ctx.metrics.failover_deadline.remove_label_values(&[name]);
            }
            keep
        });
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            () = &mut stop => break,
        }
    }
    for t in tasks.values() {
        t.abort();
    }
    ctx.metrics.failover_unverified.reset();
    ctx.metrics.failover_last_decision.reset();
    ctx.metrics.failover_last_decided.reset();
    ctx.metrics.failover_deadline.reset();
}

/// What one policy's task remembers between steps.
#[derive(Default)]
struct PolicyMemory {
    /// The policy object this memory is about.
    uid: Option<String>,
    checked: Option<Checked>,
    last_sync: Option<Instant>,
    /// The newest status this task wrote or read from the API server: a lagging watch never makes it
    /// decide the same change twice.
    known: Option<FailoverPolicyStatus>,
    /// Why the last plan held the answers, if it did.
    held: Option<Held>,
    /// The `FailoverHeld` status this task last wrote (the cache may not show it yet).
    held_written: Option<bool>,
    /// What the last plan made of the manual failover, if one is requested.
    manual: Option<ManualOutcome>,
    /// The `ManualFailover` condition this task last wrote (status, reason, message, generation).
    manual_written: Option<(bool, String, String, Option<i64>)>,
    /// Whether a manual failover was requested at the last plan (a change right after it is withdrawn is
    /// `ManualCleared`).
    pinned_before: bool,
}

/// One policy: re-plans on every verdict change, policy change, and every second (hold-down timers,
/// resyncs); ends when the policy is gone.
async fn policy_loop(ctx: Context, cfg: FailoverConfig, name: String, term_start: Instant) {
    let ar = FailoverPolicyKind::resource();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    let writer = StatusWriter::new(ctx.client.clone(), ar.clone(), "failover", ctx.fence.clone());
    let hold_writer = StatusWriter::new(ctx.client.clone(), ar.clone(), "failover-hold", ctx.fence.clone());
    let manual_writer = StatusWriter::new(ctx.client.clone(), ar, "failover-manual", ctx.fence.clone());
    let mut verdicts = ctx.handles.verdicts.subscribe();
    let mut drains = ctx.handles.interlock.subscribe_drains();
    let mut policies = ctx.caches.policies.changed();
    let mut memory = PolicyMemory::default();
    loop {
        let Some(obj) = ctx
            .caches
            .policies
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
        else {
            ctx.handles.verdicts.set_serving(&name, Default::default());
            return;
        };
        // A policy deleted and created again under the same name starts from nothing.
        if memory.uid != obj.metadata.uid {
            memory = PolicyMemory {
                uid: obj.metadata.uid.clone(),
                ..PolicyMemory::default()
            };
        }
        // Whatever else happens to the policy (a spec that stopped validating, a step failing), how long its
        // last failover has waited for verification is exported every second.
        let recorded: FailoverPolicyStatus = obj
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let last = freshest(recorded, memory.known.as_ref()).last_failover;
        let unverified = last
            .as_ref()
            .filter(|r| r.verified_time.is_none())
            .and_then(|r| r.decided_time)
            .map_or(0, |d| Time::now().0.duration_since(d.0).as_secs().max(0));
        ctx.metrics
            .failover_unverified
            .with_label_values(&[&name])
            .set(unverified);
        if let Some((detected, decided)) = last
            .as_ref()
            .and_then(|r| Some((r.detected_time?, r.decided_time?)))
        {
            let took = decided.0.duration_since(detected.0).as_secs_f64().max(0.0);
            ctx.metrics
                .failover_last_decision
                .with_label_values(&[&name])
                .set(took);
            ctx.metrics
                .failover_last_decided
                .with_label_values(&[&name])
                .set(decided.0.as_millisecond() as f64 / 1000.0);
        }
        if let Some(spec) = obj
            .data
            .get("spec")
            .and_then(|s| serde_json::from_value::<FailoverPolicySpec>(s.clone()).ok())
        {
            if let Ok(d) = parse_duration(&spec.decision_deadline) {
                ctx.metrics
                    .failover_deadline
                    .with_label_values(&[&name])
                    .set(d.as_secs_f64());
            }
            // A valid policy is re-checked every minute (references may go); an invalid one every 2 s: it
            // is often only early (a policy applied together with its Regions, checked before the Region
            // cache had them), and must not wait a minute to be served.
            let fresh_check = memory.checked.as_ref().is_none_or(|c| {
                let again = if c.valid {
                    Duration::from_secs(60)
                } else {
                    Duration::from_secs(2)
                };
                c.generation != obj.metadata.generation || c.at.elapsed() >= again
            });
            if fresh_check {
                memory.checked = Some(check(&ctx, &spec, obj.metadata.generation).await);
            }
            if let Some(c) = memory.checked.as_ref().filter(|c| c.valid) {
                let tsig = c.tsig.clone();
                let regions: BTreeMap<String, RegionSpec> = ctx.caches.regions.specs();
                let step = step(
                    &ctx,
                    &cfg,
                    &writer,
                    &api,
                    &obj,
                    &name,
                    &spec,
                    &regions,
                    tsig.as_ref(),
                    &mut memory,
                    term_start,
                );
                match step.await {
                    Ok(answers) => {
                        memory.pinned_before = spec.manual.is_some();
                        ctx.handles
                            .verdicts
                            .set_serving(&name, serving(&answers).into_iter().collect());
                        let held = memory.held.clone();
                        report_hold(
                            &ctx,
                            &hold_writer,
                            &obj,
                            &name,
                            held.as_ref(),
                            &mut memory.held_written,
                        )
                        .await;
                        let outcome = memory.manual.clone();
                        report_manual(
                            &ctx,
                            &manual_writer,
                            &obj,
                            &name,
                            spec.manual.as_ref(),
                            outcome.as_ref(),
                            &mut memory.manual_written,
                        )
                        .await;
                    }
                    Err(e) => {
                        warn!(policy = %name, error = &e as &dyn std::error::Error, "failover step failed");
                        // Whatever the cache says, read the stored status before deciding again.
                        if let Ok(fresh) = tokio::time::timeout(Duration::from_secs(10), api.get(&name)).await
                            && let Ok(fresh) = fresh
                        {
                            memory.known = fresh
                                .data
                                .get("status")
                                .and_then(|s| serde_json::from_value(s.clone()).ok());
                        }
                    }
                }
            }
        }
        tokio::select! {
            r = verdicts.changed() => if r.is_err() { return },
            r = drains.changed() => if r.is_err() { return },
            r = policies.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The `FailoverHeld` condition (manager `azora-operator/failover-hold`): True while every candidate failed
/// its probes after the serving region failed (answers held: the observers may be the ones cut off), False
/// once that clears; written on transitions only, with an Event.
async fn report_hold(
    ctx: &Context,
    writer: &StatusWriter,
    obj: &DynamicObject,
    name: &str,
    held: Option<&Held>,
    written: &mut Option<bool>,
) {
    let current = recorded_conditions(obj);
    let now_true = written.unwrap_or_else(|| {
        current
            .iter()
            .any(|c| c.type_ == HELD && c.status == azora_api::ConditionStatus::True)
    });
    let desired = match held {
        Some(Held::AllFailing { failed, detected }) if !now_true => Desired {
            type_: HELD,
            status: azora_api::ConditionStatus::True,
            reason: "AllRegionsFailing".into(),
            message: format!(
                "{} failed at {} and every other candidate failed its probes since: holding the current answers \
                 (the observers may be cut off rather than every region down)",
                failed.join(", "),
                detected
            ),
        },
        // Confirming targets takes a few seconds: no write for that.
        Some(Held::Confirming(_)) | Some(Held::AllFailing { .. }) => return,
        None if now_true => Desired::fail(
            HELD,
            "Resumed",
            "candidates answer again; failover decisions resumed",
        ),
        None => return,
    };
    match apply_condition(writer, obj, name, &current, &desired).await {
        Ok(()) => {
            *written = Some(desired.status == azora_api::ConditionStatus::True);
            let (kind, reason) = if desired.status == azora_api::ConditionStatus::True {
                warn!(policy = %name, message = %desired.message, "failover held: every region failing together");
                (EventType::Warning, "FailoverHeld")
            } else {
                (EventType::Normal, "FailoverResumed")
            };
            azora_runtime::events::publish(ctx, obj, kind, reason, &desired.message, "Failover").await;
        }
        Err(e) => warn!(policy = %name, error = &e as &dyn std::error::Error, "writing FailoverHeld failed"),
    }
}

/// Condition type of a manual failover's outcome.
const MANUAL: &str = "ManualFailover";

/// The `ManualFailover` condition (manager `azora-operator/failover-manual`): True while every answer is the
/// requested region, False with `TargetNotEligible` and the reason while it cannot be (the policy's own rules
/// answer), False `NotRequested` once a request that was reported is withdrawn. Written on changes only.
async fn report_manual(
    ctx: &Context,
    writer: &StatusWriter,
    obj: &DynamicObject,
    name: &str,
    request: Option<&azora_api::failover::ManualFailover>,
    outcome: Option<&ManualOutcome>,
    written: &mut Option<(bool, String, String, Option<i64>)>,
) {
    let current = recorded_conditions(obj);
    let existing = current.iter().find(|c| c.type_ == MANUAL);
    let desired = match (request, outcome) {
        (Some(m), Some(ManualOutcome::Honored)) => Desired {
            type_: MANUAL,
            status: azora_api::ConditionStatus::True,
            reason: "Honored".into(),
            message: format!(
                "every answer is {}{}",
                m.region,
                m.requested_by
                    .as_deref()
                    .map(|b| format!(" (requested by {b})"))
                    .unwrap_or_default()
            ),
        },
        (Some(_), Some(ManualOutcome::NotEligible(why))) => {
            Desired::fail(MANUAL, "TargetNotEligible", why.clone())
        }
        (Some(_), Some(ManualOutcome::Waiting(why))) => Desired::fail(MANUAL, "TargetWaiting", why.clone()),
        // Not planned yet in this term.
        (Some(_), None) => return,
        (None, _) if existing.is_none() => return,
        (None, _) => Desired::fail(
            MANUAL,
            "NotRequested",
            "no manual failover is requested: the policy's rules answer",
        ),
    };
    let is_true = desired.status == azora_api::ConditionStatus::True;
    let key = (
        is_true,
        desired.reason.clone(),
        desired.message.clone(),
        obj.metadata.generation,
    );
    let stored = existing.map(|c| {
        (
            c.status == azora_api::ConditionStatus::True,
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    });
    if written.as_ref() == Some(&key) || stored.as_ref() == Some(&key) {
        return;
    }
    // A new generation with the same outcome only moves observedGeneration: no Event for that.
    // Only a new generation with the same outcome (status, reason, message) is no transition.
    let same = |k: &(bool, String, String, Option<i64>)| {
        k.0 == is_true && k.1 == desired.reason && k.2 == desired.message
    };
    let transition = !stored.as_ref().is_some_and(same) && !written.as_ref().is_some_and(same);
    match apply_condition(writer, obj, name, &current, &desired).await {
        Ok(()) => {
            if transition {
                let kind = if desired.reason == "TargetNotEligible" {
                    warn!(policy = %name, message = %desired.message, "manual failover cannot be honoured");
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                let reason = format!("Manual{}", desired.reason);
                azora_runtime::events::publish(ctx, obj, kind, &reason, &desired.message, "Failover").await;
            }
            *written = Some(key);
        }
        Err(e) => {
            warn!(policy = %name, error = &e as &dyn std::error::Error, "writing ManualFailover failed")
        }
    }
}

/// The conditions recorded in a policy's status (the cache's view).
fn recorded_conditions(obj: &DynamicObject) -> Vec<Condition> {
    obj.data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value::<Vec<Condition>>(c.clone()).ok())
        .unwrap_or_default()
}

/// Writes one condition this task owns (its own field manager), merged with what is recorded so its
/// `lastTransitionTime` moves only on a status change.
async fn apply_condition(
    writer: &StatusWriter,
    obj: &DynamicObject,
    name: &str,
    current: &[Condition],
    desired: &Desired,
) -> Result<(), azora_adapters::kube_status::StatusError> {
    let merged = conditions::merge(
        current,
        std::slice::from_ref(desired),
        obj.metadata.generation,
        Time::now(),
    );
    let cond: Vec<&Condition> = merged.iter().filter(|c| c.type_ == desired.type_).collect();
    writer.apply(name, None, json!({ "conditions": cond })).await
}

/// Ends an interlock activity when dropped (also on an early return or error).
struct InterlockGuard<'a>(
    &'a azora_runtime::interlock::Interlock,
    azora_runtime::interlock::Activity,
);

impl Drop for InterlockGuard<'_> {
    fn drop(&mut self) {
        self.0.end(&self.1);
    }
}

/// Condition type of a held failover.
const HELD: &str = "FailoverHeld";

async fn check(ctx: &Context, spec: &FailoverPolicySpec, generation: Option<i64>) -> Checked {
    let refs = FailoverPolicyKind::secret_refs(spec);
    let invalid = Checked {
        generation,
        valid: false,
        tsig: None,
        at: Instant::now(),
    };
    let Ok(world) = ctx
        .world(
            Needs {
                tenants: true,
                backups: false,
            },
            &refs,
        )
        .await
    else {
        return invalid;
    };
    if !validate::failover_policy(spec, &world).is_empty() {
        return invalid;
    }
    let mut tsig = None;
    if let Some(r) = &spec.provider.rfc2136 {
        let Ok(Some(raw)) = ctx.secrets.value(&r.tsig_secret.name, &r.tsig_secret.key).await else {
            return invalid;
        };
        let text = String::from_utf8_lossy(&raw).trim().to_string();
        let Ok(secret) = base64::engine::general_purpose::STANDARD.decode(text) else {
            return invalid;
        };
        tsig = Some(TsigKey {
            name: r.tsig_key_name.clone(),
            algorithm: r.tsig_algorithm.to_string(),
            secret,
        });
    }
    Checked {
        generation,
        valid: true,
        tsig,
        at: Instant::now(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn step(
    ctx: &Context,
    cfg: &FailoverConfig,
    writer: &StatusWriter,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    spec: &FailoverPolicySpec,
    regions: &BTreeMap<String, RegionSpec>,
    tsig: Option<&TsigKey>,
    memory: &mut PolicyMemory,
    term_start: Instant,
) -> Result<BTreeMap<String, Vec<String>>, StepError> {
    let health = &ctx.handles.verdicts;
    let cached: FailoverPolicyStatus = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    // Plan from the newest status known: the cache may not show our own last write yet.
    let status = freshest(cached, memory.known.as_ref());
    let current = answers_map(&status.answers);
    let allowed: Option<Vec<String>> = spec.tenant.as_ref().map(|t| {
        let world = azora_core::world::World {
            regions: regions.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            ..Default::default()
        };
        let tenants: BTreeMap<String, azora_api::tenant::TenantSpec> = ctx.caches.tenants.specs();
        tenants
            .get(t)
            .map(|ts| place(ts, &world).placed)
            .unwrap_or_default()
    });
    let mut order: Vec<String> = spec.regions.iter().map(|r| r.name.clone()).collect();
    if order.is_empty() {
        let mut all: Vec<(&String, &RegionSpec)> = regions.iter().collect();
        all.sort_by_key(|(n, s)| (s.priority, (*n).clone()));
        order = all.into_iter().map(|(n, _)| n.clone()).collect();
    }
    // A drained region (a drill's control-plane drain) is down for this path, whatever its probes say.
    let drained = ctx.handles.interlock.drained();
    let undrained = ctx.handles.interlock.undrained();
    let candidates: Vec<Candidate> = order
        .iter()
        .filter_map(|n| {
            let r = regions.get(n)?;
            let h = health.get(n);
            if let Some(d) = drained.get(n) {
                return Some(Candidate {
                    name: n.clone(),
                    verdict: Verdict::Down,
                    unjudged: false,
                    cordoned: r.cordoned,
                    allowed: allowed.as_ref().is_none_or(|a| a.contains(n)),
                    location: (r.location.latitude, r.location.longitude),
                    weight: spec.regions.iter().find(|p| &p.name == n).map_or(1, |p| p.weight),
                    recovered: None,
                    failing_since: Some(Time(d.since)),
                    last_ok: None,
                    last_failed: Some(Time(d.since)),
                });
            }
            Some(Candidate {
                name: n.clone(),
                // A verdict seeded from the recorded status at a takeover never draws traffic to a
                // region (the last leader may have died before recording it down): until this term's
                // observers judge it, a serving verdict counts as not yet judged.
                verdict: h.as_ref().map_or(Verdict::Unknown, |h| {
                    if unjudged(h) { Verdict::Unknown } else { h.verdict }
                }),
                unjudged: h.as_ref().is_some_and(unjudged),
                cordoned: r.cordoned,
                allowed: allowed.as_ref().is_none_or(|a| a.contains(n)),
                location: (r.location.latitude, r.location.longitude),
                weight: spec.regions.iter().find(|p| &p.name == n).map_or(1, |p| p.weight),
                // The end of a drain is a recovery: failback waits for the hold-down or an approval from then.
                recovered: h
                    .as_ref()
                    .and_then(|h| h.recovered)
                    .max(undrained.get(n).map(|t| Time(*t))),
                // Targets must be probed after this region's latest failure began (after a takeover,
                // when no observer reported yet, after the recorded transition to Down).
                failing_since: h.as_ref().and_then(|h| {
                    h.detected_at
                        .or_else(|| (h.verdict == Verdict::Down).then_some(h.since))
                }),
                last_ok: h.as_ref().and_then(|h| h.last_ok),
                last_failed: h.as_ref().and_then(|h| h.last_failed),
            })
        })
        .collect();
    // Targets are confirmed by probes made after the failure; wait at most two probe timeouts and a
    // second for them.
    let confirm_wait = order
        .iter()
        .filter_map(|n| regions.get(n))
        .map(|r| parse_duration(&r.probes.timeout).unwrap_or(Duration::from_secs(2)))
        .max()
        .unwrap_or(Duration::from_secs(2))
        * 2
        + Duration::from_secs(1);
    let rule = FailbackRule {
        mode: spec.failback.mode,
        hold_down: parse_duration(&spec.failback.hold_down).unwrap_or(Duration::from_secs(60)),
        approved: spec.failback.approved_region.clone(),
        // The earlier of the time the writer gave and the API server's record of the write: the server's
        // record is a whole manager entry's (any later write by the same manager moves it), so it can only
        // make an approval older, never revive one given before a later recovery.
        approved_time: earliest(
            written_at(obj, &["spec", "failback", "approvedRegion"]),
            spec.failback.approved_time,
        ),
    };
    let manual = spec.manual.as_ref().map(|m| Manual {
        region: m.region.clone(),
        requested: earliest(written_at(obj, &["spec", "manual"]), m.requested_time),
    });
    // A policy's first answers wait (at most INITIAL_GRACE into the term) until every candidate has a
    // verdict, so DNS does not start on whichever region happened to be probed first.
    if status.answers.is_empty()
        && candidates
            .iter()
            .any(|c| c.verdict == Verdict::Unknown && !c.cordoned)
        && term_start.elapsed() < INITIAL_GRACE
    {
        return Ok(BTreeMap::new());
    }
    let now = Time::now();
    let p = plan(&Input {
        strategy: spec.strategy,
        candidates: &candidates,
        failback: &rule,
        current: &current,
        now,
        vetting: Some(Vetting { confirm_wait }),
        manual: manual.as_ref(),
    });
    memory.held = p.held.clone();
    // Updated by the caller once this step succeeded: a decision whose write is refused and planned again
    // keeps its reason.
    let pinned_before = memory.pinned_before;
    memory.manual = p.manual.clone();
    for (region, on) in candidates
        .iter()
        .map(|c| (c.name.clone(), p.active.as_deref() == Some(c.name.as_str())))
    {
        ctx.metrics
            .active_region
            .with_label_values(&[name, &region])
            .set(i64::from(on));
    }
    let mut owned = Owned {
        status: status.clone(),
        published: published_condition(&status),
    };

    if let Some(change) = p.change {
        // 1. Decide and record the intent under the next epoch, before touching DNS.
        let epoch = status.epoch + 1;
        // Traffic returning to the policy's rules right after a manual failover was withdrawn.
        let reason = if matches!(change.reason, Reason::Failback | Reason::Rebalanced)
            && pinned_before
            && spec.manual.is_none()
        {
            "ManualCleared".to_string()
        } else {
            change.reason.to_string()
        };
        let from_health = change.from.as_deref().and_then(|f| health.get(f));
        let detected = match change.reason {
            // A drained region failed when the drain began (its probes never did).
            Reason::RegionDown => change
                .from
                .as_deref()
                .and_then(|f| drained.get(f))
                .map(|d| Time(d.since))
                .or_else(|| from_health.and_then(|h| h.failing_since.or(Some(h.since)))),
            _ => None,
        }
        .or(Some(now));
        let record = FailoverRecord {
            epoch,
            from: change.from.clone(),
            to: change.to.clone(),
            reason: reason.clone(),
            // Whenever the new answers are the manual failover's, whatever moved them.
            requested_by: spec
                .manual
                .as_ref()
                .filter(|_| p.manual == Some(ManualOutcome::Honored))
                .and_then(|m| m.requested_by.clone().or_else(|| Some("unknown".into()))),
            detected_time: detected,
            decided_time: Some(now),
            dns_updated_time: None,
            verified_time: None,
            total_ms: None,
        };
        if let Some(prev) = status.last_failover.clone() {
            owned.status.history.insert(0, prev);
        }
        owned.status.history.truncate(spec.history_limit as usize);
        owned.status.epoch = epoch;
        owned.status.answers = answers_list(&p.answers);
        owned.status.active_region = p.active.clone();
        owned.status.active_regions = serving(&p.answers).into_iter().collect();
        owned.status.last_failover = Some(record);
        owned.published = Desired::unknown("DnsPublished", "Publishing", format!("publishing epoch {epoch}"));
        // Compare-and-swap: only if the stored epoch is still the one this decision was planned from.
        write(writer, api, obj, name, status.epoch, &owned).await?;
        memory.known = Some(owned.status.clone());
        ctx.metrics.failovers.with_label_values(&[name, &reason]).inc();
        let kind = if change.reason == Reason::RegionDown {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!(
            "{} -> {} ({}), epoch {epoch}",
            change.from.as_deref().unwrap_or("none"),
            change.to.as_deref().unwrap_or("none"),
            reason
        );
        info!(policy = %name, %note, "failover decided");
        // Chaos experiments must not start during a real failover, and running ones abort.
        let activity = azora_runtime::interlock::Activity::Failover(name.to_string());
        ctx.handles.interlock.begin(activity.clone(), note.clone());
        let _end = InterlockGuard(&ctx.handles.interlock, activity);
        azora_runtime::events::publish(ctx, obj, kind, "FailoverDecided", &note, "Failover").await;
        // Databases first: DNS sends writes to the new region once its database takes them.
        if let Some(to) = change.to.as_deref() {
            wait_for_databases(ctx, cfg, obj, name, epoch, to).await;
        }
        publish_and_verify(
            ctx,
            cfg,
            writer,
            api,
            obj,
            name,
            spec,
            regions,
            tsig,
            &mut owned,
            Some(status.epoch),
        )
        .await?;
        memory.known = Some(owned.status.clone());
        memory.last_sync = Some(Instant::now());
        return Ok(p.answers);
    }

    let incomplete = status
        .last_failover
        .as_ref()
        .is_some_and(|r| r.verified_time.is_none());
    let resync_due = spec.provider.type_ == DnsProviderType::RFC2136
        && memory
            .last_sync
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
    if (incomplete || resync_due) && !status.answers.is_empty() {
        if incomplete {
            info!(policy = %name, epoch = status.epoch, "resuming an interrupted failover");
            // The databases' wait is part of the interrupted step too.
            if let Some(to) = status.last_failover.as_ref().and_then(|r| r.to.clone()) {
                wait_for_databases(ctx, cfg, obj, name, status.epoch, &to).await;
            }
        }
        let prev = status.epoch.checked_sub(1).filter(|e| *e > 0);
        // On a resync the server already holds this epoch: re-assert it with the epoch as prerequisite.
        let prerequisite = if incomplete { prev } else { Some(status.epoch) };
        publish_and_verify(
            ctx,
            cfg,
            writer,
            api,
            obj,
            name,
            spec,
            regions,
            tsig,
            &mut owned,
            prerequisite,
        )
        .await?;
        memory.known = Some(owned.status.clone());
        memory.last_sync = Some(Instant::now());
    } else if spec.provider.type_ == DnsProviderType::Embedded && !status.answers.is_empty() {
        // Keep this replica's server current even when the watch of our own write is not back yet.
        let _ = cfg
            .zones
            .publish(zone_data(spec, &status.answers, regions, status.epoch));
    }
    Ok(answers_map(&owned.status.answers))
}

/// The earlier of two optional times.
/// Waits (at most `cfg.database_wait`) until every Database that follows `policy` and has a member in `to`
/// reports its primary placed for `epoch` (`status.policyEpoch`); a Database that reports it cannot follow
/// this epoch (`status.blockedPolicyEpoch`) ends the wait for itself (DNS then moves without it, and an
/// Event says so).
async fn wait_for_databases(
    ctx: &Context,
    cfg: &FailoverConfig,
    obj: &DynamicObject,
    policy: &str,
    epoch: u64,
    to: &str,
) {
    let start = Instant::now();
    let mut changed = ctx.caches.databases.changed();
    loop {
        let mut waiting = Vec::new();
        let mut refused = Vec::new();
        for db in ctx.caches.databases.state() {
            let Some(spec) = db
                .data
                .get("spec")
                .and_then(|s| serde_json::from_value::<azora_api::database::DatabaseSpec>(s.clone()).ok())
            else {
                continue;
            };
            if spec.follow_policy.as_deref() != Some(policy) || !spec.members.iter().any(|m| m.region == to) {
                continue;
            }
            let st: azora_api::database::DatabaseStatus = db
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            // A database the operator has not taken charge of (invalid, unmanaged) is not waited for.
            if st.primary_region.is_none() || st.policy_epoch.unwrap_or(0) >= epoch {
                continue;
            }
            let name = db.metadata.name.clone().unwrap_or_default();
            if st.blocked_policy_epoch.unwrap_or(0) >= epoch {
                refused.push(name);
            } else {
                waiting.push(name);
            }
        }
        if waiting.is_empty() && refused.is_empty() {
            if start.elapsed() > Duration::from_millis(50) {
                info!(
                    policy,
                    epoch,
                    waited_ms = start.elapsed().as_millis() as u64,
                    "databases promoted before DNS"
                );
            }
            return;
        }
        if waiting.is_empty() || start.elapsed() >= cfg.database_wait {
            let mut names = waiting;
            names.extend(refused);
            let note = format!(
                "epoch {epoch}: DNS moves to {to} while database(s) {} have not promoted there",
                names.join(", ")
            );
            warn!(policy, %note, "not waiting longer for databases");
            azora_runtime::events::publish(
                ctx,
                obj,
                EventType::Warning,
                "DatabaseNotPromoted",
                &note,
                "Failover",
            )
            .await;
            return;
        }
        tokio::select! {
            _ = changed.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn earliest(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the API server last recorded a write of the field at `path` (from `metadata.managedFields`: the
/// newest entry of any manager that owns it or something under it).
fn written_at(obj: &DynamicObject, path: &[&str]) -> Option<Time> {
    obj.metadata
        .managed_fields
        .as_ref()?
        .iter()
        .filter(|m| {
            let mut node = m.fields_v1.as_ref().map(|f| &f.0);
            for key in path {
                node = node.and_then(|n| n.get(format!("f:{key}")));
            }
            node.is_some()
        })
        .filter_map(|m| m.time.as_ref())
        .filter_map(|t| jiff::Timestamp::from_second(t.0.as_second()).ok())
        .map(Time::from_timestamp)
        .max()
}

/// A serving verdict seeded from the recorded status at a takeover and not yet judged in this term.
fn unjudged(h: &azora_runtime::verdicts::RegionHealth) -> bool {
    h.seeded && matches!(h.verdict, Verdict::Healthy | Verdict::Degraded)
}

/// Whether a verdict counts as serving (re-exported for callers).
pub fn is_problem(kind: ProblemKind) -> bool {
    kind == ProblemKind::Invalid
}
