//! Chaos experiments, the pure part: when a run may start (interlocks, blast radius, blocked windows, steady
//! state), when a running one must abort, how its outcome is judged from measured numbers, and what the
//! region agent does with the fault order it is handed (apply, keep, revert at expiry). No IO.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use azora_api::chaos::{ChaosExperimentSpec, Expectation, FaultType, OutageMode, Outcome};
use azora_api::region::Verdict;
use serde::{Deserialize, Serialize};

use crate::duration::{next_run, parse_cron, parse_duration};

/// Annotation on an agent's Lease holding the fault order the hub hands it (JSON [`FaultOrder`]).
pub const FAULT_ANNOTATION: &str = "azora.io/fault";
/// Annotation on an agent's Lease where the agent reports what it did (JSON [`FaultReport`]).
pub const FAULT_REPORT_ANNOTATION: &str = "azora.io/fault-report";
/// Annotation that asks for a run now (any new value).
pub const RUN_NOW_ANNOTATION: &str = "azora.io/run-now";
/// ConfigMap in the operator's namespace whose presence halts chaos: every active fault is reverted and no
/// run starts (`data.reason` says why).
pub const HALT_CONFIGMAP: &str = "azora-chaos-halt";
/// Longest fault without `allowLongFault`.
pub const MAX_FAULT: Duration = Duration::from_secs(3600);
/// Largest round trip a NetworkLatency fault may add (beyond it a link is as good as partitioned, and the
/// agent's measurement would outlast the hub's wait).
pub const MAX_LATENCY: Duration = Duration::from_secs(5);
/// Smallest: below it the agent cannot tell the fault from scheduling noise when it checks the revert.
pub const MIN_LATENCY: Duration = Duration::from_millis(50);
/// Namespaces whose pods PodKill never deletes.
/// (`azora-system`: where the region agent runs, which must outlive the faults it holds.)
pub const SYSTEM_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "azora-system"];
/// Label of the agents' Leases.
pub const AGENT_LABEL: &str = "azora.io/agent";
/// How long after its planned end a fault expires by itself at the agent (the safety net when the operator
/// or the hub is gone).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(10);

/// The Lease an agent of `region` renews and reads its fault orders from.
pub fn agent_lease(region: &str) -> String {
    format!("azora-agent-{region}")
}

/// What the hub asks an agent to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultOrder {
    /// The run's id (unique).
    pub id: String,
    /// The experiment or drill asking.
    pub owner: String,
    /// The fault.
    #[serde(rename = "type")]
    pub fault: FaultType,
    /// When the agent reverts by itself, whatever happens to the hub.
    pub expires: jiff::Timestamp,
    /// The other region of a network fault (the traffic from it into the agent's region is affected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The round trip a NetworkLatency fault adds, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// What an agent did with an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
pub enum FaultState {
    /// The fault is in place.
    Applied,
    /// The fault was reverted (withdrawn or expired).
    Reverted,
    /// The agent cannot make this fault (no target configured, signal refused); nothing was changed.
    Refused,
}

/// An agent's report, written next to the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultReport {
    /// The order's id.
    pub id: String,
    /// What was done.
    pub state: FaultState,
    /// When.
    pub time: jiff::Timestamp,
    /// Why (reverts: `withdrawn`, `expired`, `agent start-up`; refusals: the reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the agent measured of its fault (NetworkLatency: the round trip added through the link, in ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_ms: Option<u64>,
    /// After a revert: whether the agent saw the effect gone (the process runs, the link passes traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
}

/// What the agent knows of the hub's order this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// The hub could not be read: keep what is applied until it expires.
    Unknown,
    /// The hub's current order (none: nothing is wanted).
    Known(Option<FaultOrder>),
}

/// The agent's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentStep {
    /// Nothing to do.
    Keep,
    /// Make the fault.
    Apply(FaultOrder),
    /// Undo the applied fault, and why.
    Revert(&'static str),
    /// Refuse an order that is new to this agent but already expired by its clock (the order is stale, or
    /// this agent's clock runs ahead of the hub's): made now, it would be reverted at once.
    Stale(FaultOrder),
}

/// The agent's decision: `applied` is the fault in place (from its state file), `finished` the ids it already
/// reverted or refused (never applied again).
pub fn agent_step(
    order: &Order,
    applied: Option<&FaultOrder>,
    finished: &BTreeSet<String>,
    now: jiff::Timestamp,
) -> AgentStep {
    if let Some(a) = applied {
        if a.expires <= now {
            return AgentStep::Revert("expired");
        }
        return match order {
            Order::Unknown => AgentStep::Keep,
            Order::Known(Some(o)) if o.id == a.id => AgentStep::Keep,
            Order::Known(_) => AgentStep::Revert("withdrawn"),
        };
    }
    match order {
        Order::Known(Some(o)) if !finished.contains(&o.id) => {
            if o.expires > now {
                AgentStep::Apply(o.clone())
            } else {
                AgentStep::Stale(o.clone())
            }
        }
        _ => AgentStep::Keep,
    }
}

/// Who makes a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maker {
    /// The region agent (signals, its link proxy), through its Lease.
    Agent,
    /// The control plane alone: a drain the failover path treats as down.
    Drain,
    /// The operator through a cluster's API (PodKill): nothing to revert.
    Api,
}

/// Who makes `fault` (with `mode` for RegionOutage).
pub fn maker(fault: FaultType, mode: Option<OutageMode>) -> Maker {
    match (fault, mode) {
        (FaultType::RegionOutage, Some(OutageMode::Drain)) => Maker::Drain,
        (FaultType::PodKill, _) => Maker::Api,
        _ => Maker::Agent,
    }
}

/// Whether a fault type is made by the region agent (rather than by the control plane).
pub fn made_by_agent(fault: FaultType, mode: Option<OutageMode>) -> bool {
    maker(fault, mode) == Maker::Agent
}

/// What else is going on, as the chaos room sees it when a run wants to start or is running.
#[derive(Clone, Debug, Default)]
pub struct Situation {
    /// Region verdicts.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Policies in the middle of a failover (decided, not verified), with a description.
    pub failovers: Vec<String>,
    /// Other experiments with an active fault: (experiment, region).
    pub experiments: Vec<(String, Option<String>)>,
    /// Drills under way.
    pub drills: Vec<String>,
    /// The kill switch, with its reason.
    pub halted: Option<String>,
    /// Tenants that are not Ready.
    pub tenants_not_ready: Vec<String>,
    /// Policies that answer no DNS query.
    pub policies_unanswered: Vec<String>,
    /// Whether the target region's agent is live (renewed its Lease recently).
    pub agent_live: Option<bool>,
}

/// Why a run may not start now; `None` when it may.
pub fn start_refusal(
    spec: &ChaosExperimentSpec,
    target: Option<&str>,
    s: &Situation,
    now: jiff::Timestamp,
) -> Option<String> {
    if let Some(why) = &s.halted {
        return Some(format!("chaos is halted ({HALT_CONFIGMAP}): {why}"));
    }
    if let Some((reason, until)) = blocked_window(spec, now) {
        return Some(format!("inside a blocked window until {until}: {reason}"));
    }
    if let Some(d) = s.drills.first() {
        return Some(format!("DR drill {d} is under way"));
    }
    if let Some(f) = s.failovers.first() {
        return Some(format!("a real failover is under way: {f}"));
    }
    let down: Vec<&String> = s
        .verdicts
        .iter()
        .filter(|(_, v)| **v == Verdict::Down)
        .map(|(r, _)| r)
        .collect();
    if let Some(r) = down.first() {
        return Some(format!("region {r} is Down: a real outage is under way"));
    }
    for (name, region) in &s.experiments {
        match (region, target) {
            (Some(r), Some(t)) if r == t => {
                return Some(format!("experiment {name} has a fault active in {t}"));
            }
            _ if !spec.allow_concurrent => {
                return Some(format!(
                    "experiment {name} has a fault active (one region at a time unless allowConcurrent)"
                ));
            }
            _ => {}
        }
    }
    let healthy: BTreeSet<&String> = s
        .verdicts
        .iter()
        .filter(|(_, v)| **v == Verdict::Healthy)
        .map(|(r, _)| r)
        .collect();
    let min = spec.steady_state.min_healthy_regions as usize;
    if healthy.len() < min {
        return Some(format!(
            "steady state not met: {} Healthy region(s), at least {min} needed",
            healthy.len()
        ));
    }
    if let Some(t) = target {
        match s.verdicts.get(t) {
            Some(Verdict::Healthy) => {}
            Some(v) => return Some(format!("steady state not met: target region {t} is {v}")),
            None => return Some(format!("target region {t} has no verdict yet")),
        }
        if takes_out_region(spec) && !healthy.iter().any(|r| r.as_str() != t) {
            return Some(format!(
                "{t} is the last Healthy region: chaos never takes it out"
            ));
        }
    }
    if spec.steady_state.tenants_ready
        && let Some(t) = s.tenants_not_ready.first()
    {
        return Some(format!("steady state not met: tenant {t} is not Ready"));
    }
    if spec.steady_state.dns_answering
        && let Some(p) = s.policies_unanswered.first()
    {
        return Some(format!("steady state not met: policy {p} answers no DNS query"));
    }
    if s.agent_live == Some(false) {
        return Some(format!(
            "the region agent of {} is not live (its Lease is missing or stale)",
            target.unwrap_or("the target")
        ));
    }
    None
}

/// Whether the fault takes a whole region out of serving.
pub fn takes_out_region(spec: &ChaosExperimentSpec) -> bool {
    spec.fault.type_ == FaultType::RegionOutage
}

/// Why a running experiment must stop at once; `None` while it may go on. `down_at_start` are the regions
/// that were Down when the fault was made (the target's own outage is expected).
pub fn abort_reason(
    spec: &ChaosExperimentSpec,
    target: Option<&str>,
    down_at_start: &BTreeSet<String>,
    s: &Situation,
    now: jiff::Timestamp,
) -> Option<String> {
    if let Some(why) = &s.halted {
        return Some(format!("chaos halted ({HALT_CONFIGMAP}): {why}"));
    }
    if let Some((reason, _)) = blocked_window(spec, now) {
        return Some(format!("a blocked window opened: {reason}"));
    }
    if let Some(d) = s.drills.first() {
        return Some(format!("DR drill {d} started"));
    }
    for (r, v) in &s.verdicts {
        if *v == Verdict::Down && Some(r.as_str()) != target && !down_at_start.contains(r) {
            return Some(format!(
                "region {r} went Down during the experiment: a real outage"
            ));
        }
    }
    let healthy_others = s
        .verdicts
        .iter()
        .filter(|(r, v)| **v == Verdict::Healthy && Some(r.as_str()) != target)
        .count();
    let floor = spec.abort_when.healthy_regions_below as usize;
    if healthy_others < floor {
        return Some(format!(
            "only {healthy_others} Healthy region(s) besides the target, abort below {floor}"
        ));
    }
    if spec.abort_when.dns_unanswered
        && let Some(p) = s.policies_unanswered.first()
    {
        return Some(format!("policy {p} stopped answering DNS"));
    }
    None
}

/// The blocked window `now` falls in, with its reason and when it closes.
pub fn blocked_window(spec: &ChaosExperimentSpec, now: jiff::Timestamp) -> Option<(String, jiff::Timestamp)> {
    for w in &spec.blocked_windows {
        let (Ok(cron), Ok(len)) = (parse_cron(&w.start), parse_duration(&w.duration)) else {
            continue;
        };
        let Ok(len) = jiff::SignedDuration::try_from(len) else {
            continue;
        };
        let Ok(from) = now.checked_sub(len) else {
            continue;
        };
        if let Some(opened) = next_run(&cron, from)
            && opened <= now
            && let Ok(until) = opened.checked_add(len)
        {
            let reason = if w.reason.is_empty() {
                format!("window {} for {}", w.start, w.duration)
            } else {
                w.reason.clone()
            };
            return Some((reason, until));
        }
    }
    None
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// Fault made → DNS answering elsewhere, verified (a failover away from the target).
    pub failover_ms: Option<u64>,
    /// Whether any policy failed over during the run.
    pub failover_happened: bool,
    /// Revert → steady state back.
    pub recovery_ms: Option<u64>,
    /// Whether the operator saw the fault gone after the revert.
    pub revert_confirmed: bool,
}

/// The outcome of a finished (not aborted) run, with the reason when it failed.
pub fn judge(expect: &Expectation, m: &Measured) -> (Outcome, String) {
    if !m.revert_confirmed {
        return (
            Outcome::Failed,
            "the revert could not be confirmed: the fault may still be in place".into(),
        );
    }
    if let Some(within) = expect
        .failover_within
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
    {
        match m.failover_ms {
            None => {
                return (
                    Outcome::Failed,
                    format!("no failover observed, expected within {}", show(within)),
                );
            }
            Some(ms) if u128::from(ms) > within.as_millis() => {
                return (
                    Outcome::Failed,
                    format!(
                        "failover took {}, expected within {}",
                        show(Duration::from_millis(ms)),
                        show(within)
                    ),
                );
            }
            Some(_) => {}
        }
    }
    if expect.no_failover && m.failover_happened {
        return (
            Outcome::Failed,
            "a failover happened; the experiment expects none".into(),
        );
    }
    match (
        m.recovery_ms,
        expect
            .recovery_within
            .as_deref()
            .and_then(|d| parse_duration(d).ok()),
    ) {
        (None, Some(within)) => {
            return (
                Outcome::Failed,
                format!("steady state did not return, expected within {}", show(within)),
            );
        }
        (None, None) => {
            return (
                Outcome::Failed,
                "steady state did not return after the revert".into(),
            );
        }
        (Some(ms), Some(within)) if u128::from(ms) > within.as_millis() => {
            return (
                Outcome::Failed,
                format!(
                    "recovery took {}, expected within {}",
                    show(Duration::from_millis(ms)),
                    show(within)
                ),
            );
        }
        _ => {}
    }
    (Outcome::Succeeded, String::new())
}

fn show(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// `99.7%` from counts (none when nothing finished).
pub fn success_rate(total: u64, succeeded: u64) -> Option<String> {
    if total == 0 {
        return None;
    }
    let pct = succeeded as f64 * 100.0 / total as f64;
    let s = format!("{pct:.1}");
    Some(format!("{}%", s.strip_suffix(".0").unwrap_or(&s)))
}

/// When the next scheduled run is due after `after`.
pub fn next_due(schedule: &str, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
    next_run(&parse_cron(schedule).ok()?, after)
}

/// What the schedule and the run-now annotation ask of a scheduled run (experiment or drill) now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// A new `azora.io/run-now` value not acted on yet (its value).
    pub run_now: Option<String>,
    /// The next scheduled start after the last one (none when suspended).
    pub next: Option<jiff::Timestamp>,
    /// Whether a run should start now.
    pub now: bool,
}

/// When a scheduled run is due: at `next` after the last start (or the object's creation), or at once on a
/// run-now value other than the one handled.
pub fn due(
    schedule: &str,
    suspend: bool,
    since: jiff::Timestamp,
    asked: Option<&str>,
    handled: Option<&str>,
    now: jiff::Timestamp,
) -> Due {
    let run_now = asked
        .filter(|a| !a.is_empty() && Some(*a) != handled)
        .map(ToString::to_string);
    let next = if suspend { None } else { next_due(schedule, since) };
    Due {
        now: run_now.is_some() || next.is_some_and(|n| n <= now),
        run_now,
        next,
    }
}

/// How long the fault lasts, capped (validation refuses longer faults without `allowLongFault`).
pub fn fault_duration(spec: &ChaosExperimentSpec) -> Duration {
    let d = parse_duration(&spec.duration).unwrap_or(Duration::from_secs(60));
    if spec.allow_long_fault {
        d
    } else {
        d.min(MAX_FAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azora_api::chaos::{BlockedWindow, Fault};

    fn spec() -> ChaosExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "fault": {"type": "RegionOutage", "region": "africa"}
        }))
        .unwrap()
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn healthy(regions: &[&str]) -> Situation {
        Situation {
            verdicts: regions
                .iter()
                .map(|r| (r.to_string(), Verdict::Healthy))
                .collect(),
            agent_live: Some(true),
            ..Situation::default()
        }
    }

    fn order(id: &str, expires: &str) -> FaultOrder {
        FaultOrder {
            id: id.into(),
            owner: "x".into(),
            fault: FaultType::RegionOutage,
            expires: ts(expires),
            peer: None,
            latency_ms: None,
        }
    }

    #[test]
    fn the_agent_applies_once_keeps_while_the_hub_is_gone_and_reverts_at_expiry_or_withdrawal() {
        let now = ts("2026-01-01T00:00:00Z");
        let o = order("r1", "2026-01-01T00:01:00Z");
        let none = BTreeSet::new();
        assert_eq!(
            agent_step(&Order::Known(Some(o.clone())), None, &none, now),
            AgentStep::Apply(o.clone())
        );
        assert_eq!(agent_step(&Order::Unknown, Some(&o), &none, now), AgentStep::Keep);
        assert_eq!(
            agent_step(&Order::Known(Some(o.clone())), Some(&o), &none, now),
            AgentStep::Keep
        );
        assert_eq!(
            agent_step(&Order::Known(None), Some(&o), &none, now),
            AgentStep::Revert("withdrawn")
        );
        let later = ts("2026-01-01T00:01:00Z");
        assert_eq!(
            agent_step(&Order::Unknown, Some(&o), &none, later),
            AgentStep::Revert("expired")
        );
        // an expired or finished order is never applied (again); an expired one new to the agent (its
        // clock ahead of the hub's, or a stale order) is refused, once
        assert_eq!(
            agent_step(&Order::Known(Some(o.clone())), None, &none, later),
            AgentStep::Stale(o.clone())
        );
        let done: BTreeSet<String> = ["r1".to_string()].into();
        assert_eq!(
            agent_step(&Order::Known(Some(o)), None, &done, now),
            AgentStep::Keep
        );
    }

    #[test]
    fn runs_do_not_start_during_failovers_drills_other_faults_or_without_steady_state() {
        let now = ts("2026-01-01T12:00:00Z");
        let s = spec();
        let ok = healthy(&["africa", "europe", "asia"]);
        assert_eq!(start_refusal(&s, Some("africa"), &ok, now), None);

        let mut x = ok.clone();
        x.failovers.push("platform: africa -> europe".into());
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("real failover")
        );

        let mut x = ok.clone();
        x.verdicts.insert("asia".into(), Verdict::Down);
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("asia is Down")
        );

        let mut x = ok.clone();
        x.experiments.push(("other".into(), Some("europe".into())));
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("one region at a time")
        );
        let mut c = spec();
        c.allow_concurrent = true;
        assert_eq!(start_refusal(&c, Some("africa"), &x, now), None);
        x.experiments.push(("third".into(), Some("africa".into())));
        assert!(
            start_refusal(&c, Some("africa"), &x, now)
                .unwrap()
                .contains("active in africa")
        );

        let mut x = ok.clone();
        x.drills.push("monthly".into());
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("drill")
        );

        let mut x = ok.clone();
        x.halted = Some("incident 42".into());
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("incident 42")
        );

        let mut x = ok.clone();
        x.agent_live = Some(false);
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("agent")
        );

        let mut x = ok.clone();
        x.tenants_not_ready.push("acme".into());
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("acme")
        );
    }

    #[test]
    fn the_last_healthy_region_is_never_taken_out() {
        let now = ts("2026-01-01T12:00:00Z");
        let mut s = spec();
        s.steady_state.min_healthy_regions = 1;
        let mut x = healthy(&["africa"]);
        x.verdicts.insert("europe".into(), Verdict::Degraded);
        assert!(
            start_refusal(&s, Some("africa"), &x, now)
                .unwrap()
                .contains("last Healthy")
        );
        s.fault = Fault {
            type_: FaultType::VaultOutage,
            ..s.fault.clone()
        };
        assert_eq!(start_refusal(&s, Some("africa"), &x, now), None);
    }

    #[test]
    fn blocked_windows_refuse_starts_and_abort_runs() {
        let mut s = spec();
        s.blocked_windows.push(BlockedWindow {
            start: "0 8 * * *".into(),
            duration: "10h".into(),
            reason: "business hours".into(),
        });
        let inside = ts("2026-01-01T12:00:00Z");
        let outside = ts("2026-01-01T19:00:00Z");
        let ok = healthy(&["africa", "europe"]);
        let why = start_refusal(&s, Some("africa"), &ok, inside).unwrap();
        assert!(why.contains("business hours") && why.contains("18:00"), "{why}");
        assert_eq!(start_refusal(&s, Some("africa"), &ok, outside), None);
        assert!(abort_reason(&s, Some("africa"), &BTreeSet::new(), &ok, inside).is_some());
    }

    #[test]
    fn another_region_going_down_aborts_the_target_going_down_does_not() {
        let now = ts("2026-01-01T19:00:00Z");
        let s = spec();
        let mut x = healthy(&["africa", "europe", "asia"]);
        x.verdicts.insert("africa".into(), Verdict::Down);
        assert_eq!(abort_reason(&s, Some("africa"), &BTreeSet::new(), &x, now), None);
        x.verdicts.insert("asia".into(), Verdict::Down);
        assert!(
            abort_reason(&s, Some("africa"), &BTreeSet::new(), &x, now)
                .unwrap()
                .contains("asia")
        );
        x.verdicts.insert("asia".into(), Verdict::Healthy);
        x.verdicts.insert("europe".into(), Verdict::Degraded);
        x.verdicts.insert("asia".into(), Verdict::Degraded);
        assert!(
            abort_reason(&s, Some("africa"), &BTreeSet::new(), &x, now)
                .unwrap()
                .contains("Healthy")
        );
        x.verdicts.insert("europe".into(), Verdict::Healthy);
        x.halted = Some("stop".into());
        assert!(
            abort_reason(&s, Some("africa"), &BTreeSet::new(), &x, now)
                .unwrap()
                .contains("halted")
        );
    }

    #[test]
    fn outcomes_follow_the_measured_numbers() {
        let m = Measured {
            failover_ms: Some(7200),
            failover_happened: true,
            recovery_ms: Some(9000),
            revert_confirmed: true,
        };
        assert_eq!(judge(&Expectation::default(), &m).0, Outcome::Succeeded);
        let fast = Expectation {
            failover_within: Some("1s".into()),
            ..Expectation::default()
        };
        let (o, why) = judge(&fast, &m);
        assert_eq!(o, Outcome::Failed);
        assert!(why.contains("7.20s") && why.contains("1.00s"), "{why}");
        let slow = Expectation {
            failover_within: Some("30s".into()),
            ..Expectation::default()
        };
        assert_eq!(judge(&slow, &m).0, Outcome::Succeeded);
        let none = Expectation {
            no_failover: true,
            ..Expectation::default()
        };
        assert_eq!(judge(&none, &m).0, Outcome::Failed);
        let unconfirmed = Measured {
            revert_confirmed: false,
            ..m.clone()
        };
        assert!(judge(&slow, &unconfirmed).1.contains("could not be confirmed"));
        let not_back = Measured {
            recovery_ms: None,
            ..m
        };
        assert_eq!(judge(&Expectation::default(), &not_back).0, Outcome::Failed);
    }

    #[test]
    fn runs_are_due_on_schedule_or_on_a_new_run_now_value_only() {
        let created = ts("2026-01-01T00:00:00Z");
        let d = due(
            "0 3 * * *",
            false,
            created,
            None,
            None,
            ts("2026-01-01T02:59:00Z"),
        );
        assert!(!d.now);
        assert_eq!(d.next, Some(ts("2026-01-01T03:00:00Z")));
        assert!(
            due(
                "0 3 * * *",
                false,
                created,
                None,
                None,
                ts("2026-01-01T03:00:00Z")
            )
            .now
        );
        assert!(!due("0 3 * * *", true, created, None, None, ts("2026-01-02T00:00:00Z")).now);
        let asked = due("0 3 * * *", true, created, Some("x"), None, created);
        assert!(asked.now && asked.run_now.as_deref() == Some("x"));
        assert!(!due("0 3 * * *", false, created, Some("x"), Some("x"), created).now);
    }

    #[test]
    fn success_rate_reads_well() {
        assert_eq!(success_rate(0, 0), None);
        assert_eq!(success_rate(4, 4).as_deref(), Some("100%"));
        assert_eq!(success_rate(3, 2).as_deref(), Some("66.7%"));
    }
}
