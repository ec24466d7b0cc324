//! The region agent's fault duty (`azora-operator agent --region R --fault-target TYPE=PIDFILE …`): it renews
//! its own Lease `azora-agent-<region>` in the operator's namespace, reads the fault order the hub writes
//! there (annotation `azora.io/fault`: id, type, expiry), makes the fault for real and reports what it did
//! (annotation `azora.io/fault-report`).
//!
//! A fault is either a process of the region that stops serving (RegionOutage, DnsFailure, VaultOutage,
//! ObjectStoreOutage: the agent sends it SIGSTOP — connections hang, the way an overloaded or partitioned
//! service looks from outside — and SIGCONT to revert), or a network fault on the agent's link proxies from
//! a peer region (NetworkPartition, NetworkLatency: `link.rs`). The agent measures what it made and, after
//! a revert, that it is gone (the process runs; the link passes without the added latency), and says so in
//! its report. What it did is written to a state file before the fault is made, so:
//! - the fault is reverted when the hub withdraws the order, and **at its expiry by the agent alone**, even
//!   when the hub cannot be reached or the operator is gone;
//! - on start-up the agent reverts whatever its state file says is in place and has expired (a fault not yet
//!   expired is kept and judged against the hub's order as usual; a network fault is made again on the new
//!   process's links);
//! - a target process found stopped at start-up with no fault on record (a lost state file) is resumed;
//! - on SIGTERM it reverts at once;
//! - an order it already finished is never applied again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azora_api::chaos::FaultType;
use azora_core::chaos::{
    AGENT_LABEL, AgentStep, FAULT_ANNOTATION, FAULT_REPORT_ANNOTATION, FaultOrder, FaultReport, FaultState,
    Order, agent_lease, agent_step,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::link::{self, Links, Mode};

/// Settings of the agent's fault duty.
#[derive(Clone, Debug)]
pub struct FaultAgentConfig {
    /// The region the agent runs in.
    pub region: String,
    /// Namespace of the agent's Lease (the operator's).
    pub namespace: String,
    /// The process (by pid file) each fault type stops.
    pub targets: BTreeMap<FaultType, PathBuf>,
    /// Where the agent remembers what it did.
    pub state_file: PathBuf,
    /// How often it looks.
    pub interval: Duration,
    /// Who it is (Lease holder).
    pub identity: String,
}

/// What the agent remembers (the state file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The fault in place, with the process it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// Orders reverted or refused (newest last, bounded).
    #[serde(default)]
    pub finished: Vec<String>,
    /// The last report (written to the Lease until it is there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<FaultReport>,
    /// What the last revert undid (checked before the revert is reported confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
}

/// What a revert undid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reverted {
    /// A process resumed.
    Process(i32),
    /// The links from a peer opened.
    Link {
        /// The peer region.
        peer: String,
        /// The latency that was added, if any.
        latency_ms: Option<u64>,
    },
}

/// A fault in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The order.
    pub order: FaultOrder,
    /// The process stopped.
    pub pid: i32,
}

const FINISHED_KEPT: usize = 64;

/// Reads the state file (missing or unreadable: nothing in place; an unreadable file is logged).
pub fn load_state(path: &Path) -> AgentState {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            warn!(file = %path.display(), error = %e, "agent state file unreadable; starting empty");
            AgentState::default()
        }),
        Err(_) => AgentState::default(),
    }
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn save_state(path: &Path, state: &AgentState) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read_pid(file: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("pid file {}: {e}", file.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1 && i64::from(*p) != i64::from(std::process::id()))
        .ok_or_else(|| format!("pid file {} holds no usable process id", file.display()))
}

fn signal(pid: i32, stop: bool) -> Result<(), String> {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return Err(format!("bad process id {pid}"));
    };
    let sig = if stop {
        rustix::process::Signal::STOP
    } else {
        rustix::process::Signal::CONT
    };
    rustix::process::kill_process(p, sig).map_err(|e| format!("signal to process {pid}: {e}"))
}

/// Whether a fault type is made on the agent's links (rather than by a signal to a process).
fn on_links(fault: FaultType) -> bool {
    matches!(fault, FaultType::NetworkPartition | FaultType::NetworkLatency)
}

/// The agent's fault duty: runs until `shutdown` completes, then reverts what is in place.
pub async fn run(
    client: kube::Client,
    cfg: FaultAgentConfig,
    links: Arc<Links>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let name = agent_lease(&cfg.region);
    let mut state = load_state(&cfg.state_file);
    // A revert or an apply not measured yet (the first round measures it).
    let mut unmeasured = false;
    // Start-up: whatever is in place and expired goes now, before the hub is even asked.
    if state
        .applied
        .as_ref()
        .is_some_and(|a| a.order.expires <= jiff::Timestamp::now())
    {
        revert(&cfg, &links, &mut state, "expired (found at agent start-up)");
        unmeasured = true;
    }
    // A target left stopped with no fault in force on record (the state file lost or damaged with a fault
    // in place): nothing of ours may hold it, so it is resumed.
    // A live order for that fault on the hub (another instance of this agent made it, e.g. during a
    // rolling update) holds it too: it is adopted by the first round, and reverted at its end.
    let held = state.applied.as_ref().map(|a| a.pid);
    let mut live: Option<Option<FaultOrder>> = None;
    for (fault, file) in &cfg.targets {
        if let Ok(pid) = read_pid(file)
            && Some(pid) != held
            && stopped(pid)
        {
            if live.is_none() {
                let read = tokio::time::timeout(Duration::from_secs(5), leases.get_opt(&name)).await;
                let now = jiff::Timestamp::now();
                live = Some(match read {
                    Ok(Ok(l)) => l
                        .as_ref()
                        .and_then(order_of)
                        .filter(|o| o.expires > now && !state.finished.contains(&o.id)),
                    _ => None,
                });
            }
            let adopt = live
                .clone()
                .flatten()
                .filter(|o| o.fault == *fault && state.applied.is_none());
            if let Some(o) = adopt {
                // Adopted: on record as this agent's own, so expiry and withdrawal revert it as usual.
                state.applied = Some(Applied {
                    order: o.clone(),
                    pid,
                });
                state.report = Some(report(
                    o.id.clone(),
                    FaultState::Applied,
                    jiff::Timestamp::now(),
                    format!("process {pid} found stopped under this order at agent start-up: adopted"),
                ));
                match save_state(&cfg.state_file, &state) {
                    Ok(()) => {
                        info!(%fault, pid, order = %o.id, "target found stopped under a live order: adopted");
                        continue;
                    }
                    // Not on record, it could be left behind: resumed instead.
                    Err(e) => {
                        warn!(error = %e, "agent state file not writable: the target is resumed, not adopted");
                        state.applied = None;
                        state.report = None;
                    }
                }
            }
            match signal(pid, false) {
                Ok(()) => warn!(%fault, pid, "target found stopped with no fault on record: resumed"),
                Err(e) => warn!(%fault, pid, error = %e, "target found stopped; could not resume it"),
            }
        }
    }
    // A network fault still in force lived in the proxies of the last process: make it again.
    if let Some(a) = state.applied.clone().filter(|a| on_links(a.order.fault)) {
        match link_mode(&a.order)
            .ok()
            .filter(|(peer, mode)| links.set(peer, *mode))
        {
            Some(_) => info!(order = %a.order.id, "network fault in force again after the agent's restart"),
            None => {
                revert(
                    &cfg,
                    &links,
                    &mut state,
                    "its link is gone (found at agent start-up)",
                );
                unmeasured = true;
            }
        }
    }
    info!(region = %cfg.region, targets = ?cfg.targets.keys().collect::<Vec<_>>(), "fault agent started");
    tokio::pin!(shutdown);
    loop {
        // A shutdown is noticed even while the hub is slow to answer.
        let lease = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(5), leases.get_opt(&name)) => r,
            () = &mut shutdown => break,
        };
        let order = match &lease {
            Ok(Ok(Some(l))) => Order::Known(order_of(l)),
            Ok(Ok(None)) => {
                create_lease(&leases, &name, &cfg).await;
                Order::Known(None)
            }
            Ok(Err(e)) => {
                warn!(error = %e, "hub unreachable: faults in place are kept until they expire");
                Order::Unknown
            }
            Err(_) => {
                warn!("hub read timed out: faults in place are kept until they expire");
                Order::Unknown
            }
        };
        let finished: BTreeSet<String> = state.finished.iter().cloned().collect();
        match agent_step(
            &order,
            state.applied.as_ref().map(|a| &a.order),
            &finished,
            jiff::Timestamp::now(),
        ) {
            AgentStep::Keep => {}
            AgentStep::Apply(o) => {
                apply(&cfg, &links, &mut state, o);
                unmeasured = true;
            }
            AgentStep::Revert(why) => {
                revert(&cfg, &links, &mut state, why);
                unmeasured = true;
            }
            AgentStep::Stale(o)
                if lease_report(&lease).is_some_and(|r| r.id == o.id && r.state != FaultState::Applied) =>
            {
                // An earlier instance of this agent finished it (its state lost since): its word stands.
                finish(&mut state, &o.id);
                state.report = lease_report(&lease);
                if let Err(e) = save_state(&cfg.state_file, &state) {
                    warn!(error = %e, "agent state file not writable");
                }
            }
            AgentStep::Stale(o) => {
                let now = jiff::Timestamp::now();
                let why = format!(
                    "expired before it could be made (expires {}, this agent's clock says {now}): the order is \
                     stale, or this agent's clock runs ahead of the hub's",
                    o.expires
                );
                warn!(order = %o.id, reason = %why, "fault refused");
                refuse(&cfg, &mut state, &o, why, now);
            }
        }
        if std::mem::take(&mut unmeasured) {
            // The report goes out measured, or plain when measuring takes too long; a shutdown meanwhile
            // still reverts.
            tokio::select! {
                () = measure_within(&cfg, &links, &mut state) => {}
                () = &mut shutdown => break,
            }
        }
        if matches!(lease, Ok(Ok(Some(_)))) {
            renew(&leases, &name, &cfg, state.report.as_ref()).await;
        }
        // Wake at the interval, or at the expiry of what is in place when that is sooner.
        let mut wait = cfg.interval;
        if let Some(a) = &state.applied {
            let left = a.order.expires.duration_since(jiff::Timestamp::now());
            if let Ok(left) = Duration::try_from(left) {
                wait = wait.min(left + Duration::from_millis(5));
            } else {
                wait = Duration::ZERO;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => break,
        }
    }
    if state.applied.is_some() {
        revert(&cfg, &links, &mut state, "agent shutting down");
    }
    // The last word goes out (a revert made now, or one whose measurement the shutdown cut short).
    if state.report.is_some()
        && tokio::time::timeout(
            Duration::from_secs(3),
            renew(&leases, &name, &cfg, state.report.as_ref()),
        )
        .await
        .is_err()
    {
        warn!("could not report at shutdown");
    }
}

/// The report the Lease holds (what this agent, or an earlier instance of it, last said).
fn lease_report(
    lease: &Result<Result<Option<Lease>, kube::Error>, tokio::time::error::Elapsed>,
) -> Option<FaultReport> {
    let l = lease.as_ref().ok()?.as_ref().ok()?.as_ref()?;
    serde_json::from_str(l.metadata.annotations.as_ref()?.get(FAULT_REPORT_ANNOTATION)?).ok()
}

fn order_of(lease: &Lease) -> Option<FaultOrder> {
    let raw = lease.metadata.annotations.as_ref()?.get(FAULT_ANNOTATION)?;
    match serde_json::from_str(raw) {
        Ok(o) => Some(o),
        Err(e) => {
            warn!(error = %e, "unreadable fault order ignored");
            None
        }
    }
}

fn finish(state: &mut AgentState, id: &str) {
    state.finished.push(id.to_string());
    let excess = state.finished.len().saturating_sub(FINISHED_KEPT);
    state.finished.drain(..excess);
}

/// The peer and mode a network order asks for.
fn link_mode(order: &FaultOrder) -> Result<(String, Mode), String> {
    let peer = order
        .peer
        .clone()
        .ok_or_else(|| format!("{} names no peer region", order.fault))?;
    let mode = match order.fault {
        FaultType::NetworkPartition => Mode::Cut,
        FaultType::NetworkLatency => Mode::Delay(Duration::from_millis(
            order.latency_ms.ok_or("NetworkLatency names no latency")?,
        )),
        other => return Err(format!("{other} is not a network fault")),
    };
    Ok((peer, mode))
}

/// Longest a measurement may hold the report back (the hub waits 15 s for it).
const MEASURE_BUDGET: Duration = Duration::from_secs(8);

/// [`measure`] within [`MEASURE_BUDGET`]; past it the report is marked unmeasured and goes as it is.
async fn measure_within(cfg: &FaultAgentConfig, links: &Links, state: &mut AgentState) {
    if tokio::time::timeout(MEASURE_BUDGET, measure(cfg, links, state))
        .await
        .is_err()
        && let Some(r) = state.report.as_mut()
    {
        r.message
            .push_str("; not measured: the measurement took too long");
        if r.state == FaultState::Reverted {
            r.confirmed = Some(false);
        }
        if let Err(e) = save_state(&cfg.state_file, state) {
            warn!(error = %e, "agent state file not writable");
        }
    }
}

/// After an apply or a revert: what the fault really does (or no longer does), measured here and added to
/// the report. Network faults: a request through the link and straight to the service; process faults
/// after a revert: the process is running again.
async fn measure(cfg: &FaultAgentConfig, links: &Links, state: &mut AgentState) {
    let Some(report) = state.report.clone() else {
        return;
    };
    let order = match (&state.applied, report.state) {
        (Some(a), FaultState::Applied) if a.order.id == report.id => Some(a.order.clone()),
        _ => None,
    };
    let mut r = report;
    match (r.state, order) {
        (FaultState::Applied, Some(o)) if on_links(o.fault) => {
            let Some(peer) = o.peer.as_deref() else { return };
            for l in links.from(peer) {
                let direct = link::best_round_trip(l.upstream, 3, Duration::from_secs(2)).await;
                let budget = Duration::from_millis(o.latency_ms.unwrap_or(0)) + Duration::from_secs(2);
                // Long delays are timed once, to stay within the measurement's budget.
                let tries = if o.latency_ms.unwrap_or(0) >= 1000 { 1 } else { 3 };
                let through = if o.fault == FaultType::NetworkPartition {
                    link::round_trip(l.listen, Duration::from_secs(1)).await
                } else {
                    link::best_round_trip(l.listen, tries, budget).await
                };
                match (o.fault, direct, through) {
                    (FaultType::NetworkPartition, _, None) => {
                        r.message
                            .push_str(&format!("; no answer through {} within 1s", l.listen));
                    }
                    (FaultType::NetworkPartition, _, Some(_)) => {
                        r.message.push_str(&format!("; {} still answers", l.listen));
                    }
                    (_, Some(d), Some(t)) => {
                        let added = t.saturating_sub(d).as_millis() as u64;
                        r.measured_ms = Some(r.measured_ms.map_or(added, |m| m.min(added)));
                        r.message
                            .push_str(&format!("; measured +{added} ms through {}", l.listen));
                    }
                    _ => r.message.push_str(&format!("; {} not measurable", l.upstream)),
                }
            }
        }
        (FaultState::Reverted, _) => {
            let gone = match state.reverted.as_ref() {
                Some(Reverted::Link { peer, latency_ms }) => {
                    let mut ok = true;
                    for l in links.from(peer) {
                        let direct = link::best_round_trip(l.upstream, 2, Duration::from_secs(2)).await;
                        let through = link::best_round_trip(l.listen, 2, Duration::from_secs(2)).await;
                        ok &= match (direct, through) {
                            (_, None) => false,
                            // Gone: what is left of the added round trip is under half of it plus 20 ms
                            // of scheduling noise on a busy machine, and always under three quarters of
                            // it (latency faults are at least 50 ms).
                            (Some(d), Some(t)) => latency_ms.is_none_or(|ms| {
                                t.saturating_sub(d) < Duration::from_millis((ms / 2 + 20).min(ms * 3 / 4))
                            }),
                            (None, Some(_)) => true,
                        };
                    }
                    ok
                }
                Some(Reverted::Process(pid)) => !stopped(*pid),
                None => return,
            };
            r.confirmed = Some(gone);
            r.message.push_str(if gone {
                "; seen gone here"
            } else {
                "; still in effect as seen here"
            });
        }
        _ => return,
    }
    state.report = Some(r);
    if let Err(e) = save_state(&cfg.state_file, state) {
        warn!(error = %e, "agent state file not writable");
    }
}

/// Whether process `pid` is stopped (state `T`); a process that is gone is not.
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// What a fault is made on.
enum Target {
    /// A process, by pid.
    Process(i32),
    /// The links from a peer, in a mode.
    Link(String, Mode),
}

fn target_of(cfg: &FaultAgentConfig, links: &Links, order: &FaultOrder) -> Result<Target, String> {
    if on_links(order.fault) {
        let (peer, mode) = link_mode(order)?;
        return if links.has(&peer) {
            Ok(Target::Link(peer, mode))
        } else {
            Err(format!(
                "this agent has no link from {peer} (start it with --link {peer}=LISTEN->UPSTREAM)"
            ))
        };
    }
    cfg.targets
        .get(&order.fault)
        .ok_or_else(|| {
            format!(
                "this agent has no target for {} (start it with --fault-target {}=PIDFILE)",
                order.fault, order.fault
            )
        })
        .and_then(|f| read_pid(f))
        .map(Target::Process)
}

fn report(id: String, state: FaultState, time: jiff::Timestamp, message: String) -> FaultReport {
    FaultReport {
        id,
        state,
        time,
        message,
        measured_ms: None,
        confirmed: None,
    }
}

fn apply(cfg: &FaultAgentConfig, links: &Links, state: &mut AgentState, order: FaultOrder) {
    let now = jiff::Timestamp::now();
    let target = match target_of(cfg, links, &order) {
        Ok(t) => t,
        Err(why) => {
            warn!(order = %order.id, reason = %why, "fault refused");
            refuse(cfg, state, &order, why, now);
            return;
        }
    };
    // Remember first: a crash between the two leaves a revert to do, never a fault nobody knows of.
    state.applied = Some(Applied {
        order: order.clone(),
        pid: match target {
            Target::Process(pid) => pid,
            Target::Link(..) => 0,
        },
    });
    if let Err(e) = save_state(&cfg.state_file, state) {
        state.applied = None;
        refuse(cfg, state, &order, format!("state file not writable: {e}"), now);
        return;
    }
    let made = match target {
        Target::Process(pid) => signal(pid, true).map(|()| format!("process {pid} stopped")),
        Target::Link(peer, mode) => {
            links.set(&peer, mode);
            Ok(match mode {
                Mode::Delay(d) => format!("{} ms added to the round trip from {peer}", d.as_millis()),
                _ => format!("traffic from {peer} dropped"),
            })
        }
    };
    let message = match made {
        Ok(m) => m,
        Err(why) => {
            state.applied = None;
            refuse(cfg, state, &order, why, now);
            return;
        }
    };
    info!(order = %order.id, fault = %order.fault, %message, expires = %order.expires, "fault applied");
    state.report = Some(report(order.id, FaultState::Applied, now, message));
    if let Err(e) = save_state(&cfg.state_file, state) {
        warn!(error = %e, "agent state file not writable");
    }
}

fn refuse(
    cfg: &FaultAgentConfig,
    state: &mut AgentState,
    order: &FaultOrder,
    why: String,
    now: jiff::Timestamp,
) {
    finish(state, &order.id);
    state.report = Some(report(order.id.clone(), FaultState::Refused, now, why));
    if let Err(e) = save_state(&cfg.state_file, state) {
        warn!(error = %e, "agent state file not writable");
    }
}

fn revert(cfg: &FaultAgentConfig, links: &Links, state: &mut AgentState, why: &str) {
    let Some(a) = state.applied.take() else {
        return;
    };
    let message = if on_links(a.order.fault) {
        let peer = a.order.peer.clone().unwrap_or_default();
        links.set(&peer, Mode::Open);
        state.reverted = Some(Reverted::Link {
            peer: peer.clone(),
            latency_ms: a.order.latency_ms,
        });
        format!("{why}: links from {peer} pass traffic again")
    } else {
        state.reverted = Some(Reverted::Process(a.pid));
        match signal(a.pid, false) {
            Ok(()) => format!("{why}: process {} resumed", a.pid),
            // The process is gone: nothing of the fault is left in it.
            Err(e) => format!("{why}: {e}"),
        }
    };
    info!(order = %a.order.id, %message, "fault reverted");
    finish(state, &a.order.id);
    state.report = Some(report(
        a.order.id,
        FaultState::Reverted,
        jiff::Timestamp::now(),
        message,
    ));
    if let Err(e) = save_state(&cfg.state_file, state) {
        warn!(error = %e, "agent state file not writable");
    }
}

async fn create_lease(leases: &Api<Lease>, name: &str, cfg: &FaultAgentConfig) {
    let body: Lease = match serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {AGENT_LABEL: cfg.region}},
        "spec": {"holderIdentity": cfg.identity, "leaseDurationSeconds": 15,
                 "renewTime": MicroTime(jiff::Timestamp::now())}
    })) {
        Ok(b) => b,
        Err(_) => return,
    };
    match tokio::time::timeout(
        Duration::from_secs(5),
        leases.create(&PostParams::default(), &body),
    )
    .await
    {
        Ok(Ok(_)) => info!(lease = name, "agent Lease created"),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => {}
        Ok(Err(e)) => warn!(error = %e, "agent Lease not created"),
        Err(_) => warn!("agent Lease creation timed out"),
    }
}

async fn renew(leases: &Api<Lease>, name: &str, cfg: &FaultAgentConfig, report: Option<&FaultReport>) {
    let mut patch = serde_json::json!({
        "spec": {"holderIdentity": cfg.identity, "leaseDurationSeconds": 15,
                 "renewTime": MicroTime(jiff::Timestamp::now())}
    });
    if let Some(r) = report.and_then(|r| serde_json::to_string(r).ok()) {
        patch["metadata"] = serde_json::json!({"annotations": {FAULT_REPORT_ANNOTATION: r}});
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "agent Lease not renewed"),
        Err(_) => warn!("agent Lease renewal timed out"),
    }
}
