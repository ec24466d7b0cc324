//! What the read commands show, as stable documents (`-o json|yaml`; documented in plugins/README.md):
//! gathered from the custom resources' spec and status, no computation the operator did not record
//! except ages.

use azora_api::chaos::{ChaosExperiment, DrDrill};
use azora_api::database::{Database, MemberRole};
use azora_api::failover::{FailoverPolicy, FailoverRecord};
use azora_api::region::Region;
use azora_api::tenant::{SecretPhase, Tenant};
use azora_api::{Condition, ConditionStatus, Time};
use serde::Serialize;

use crate::client::{self, Hub};

/// API version of the documents.
pub const DOC_VERSION: &str = "azora.io/v1alpha1";

/// `kubectl azora status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `azora.io/v1alpha1`.
    pub api_version: &'static str,
    /// `Status`.
    pub kind: &'static str,
    /// When it was read.
    pub time: Time,
    /// Regions by priority.
    pub regions: Vec<RegionView>,
    /// FailoverPolicies by name.
    pub policies: Vec<PolicyView>,
    /// Tenants by name.
    pub tenants: Vec<TenantView>,
    /// Databases by name.
    pub databases: Vec<DatabaseView>,
    /// Chaos experiments, summed.
    pub chaos: ChaosView,
    /// DR drills by name.
    pub drills: Vec<DrillView>,
}

/// One region.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionView {
    pub name: String,
    pub city: String,
    pub priority: i32,
    /// Healthy, Degraded, Down, Cordoned or Unknown.
    pub verdict: String,
    /// DNS sends traffic here.
    pub serving: bool,
    pub cordoned: bool,
    pub latency_ms: Option<u32>,
    /// Observers reporting, and how many of them call it Healthy or Degraded.
    pub observers: usize,
    pub observers_healthy: usize,
    /// The regional cluster answers (absent: no cluster configured or not checked yet).
    pub cluster_reachable: Option<bool>,
    /// Why, as a fixed word (`Reachable`, `Unreachable`, ...).
    pub cluster_reason: Option<String>,
    /// The region's Vault answers the operator (absent: no Vault configured).
    pub vault_reachable: Option<bool>,
    pub ready: Option<bool>,
    /// The Ready condition's message when not ready.
    pub message: Option<String>,
    pub since: Option<Time>,
}

/// One FailoverPolicy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub name: String,
    pub strategy: String,
    pub active_region: Option<String>,
    pub active_regions: Vec<String>,
    pub epoch: u64,
    /// The manual failover requested, and what became of it.
    pub manual: Option<ManualView>,
    /// The failover in progress or last completed.
    pub last_failover: Option<FailoverView>,
    /// Every candidate failed its probes together: the answers are held.
    pub held: bool,
    pub ready: Option<bool>,
    pub message: Option<String>,
}

/// A manual failover.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManualView {
    pub region: String,
    pub requested_by: Option<String>,
    pub requested_time: Option<Time>,
    pub reason: Option<String>,
    /// True: every answer is its region; false: it cannot be (see message); absent: not judged yet.
    pub honored: Option<bool>,
    pub message: Option<String>,
}

/// One failover of a timeline.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverView {
    pub epoch: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub requested_by: Option<String>,
    pub detected_time: Option<Time>,
    pub decided_time: Option<Time>,
    pub dns_updated_time: Option<Time>,
    pub verified_time: Option<Time>,
    /// Detection to verification, in milliseconds.
    pub total_ms: Option<u64>,
}

impl From<&FailoverRecord> for FailoverView {
    fn from(r: &FailoverRecord) -> Self {
        Self {
            epoch: r.epoch,
            from: r.from.clone(),
            to: r.to.clone(),
            reason: r.reason.clone(),
            requested_by: r.requested_by.clone(),
            detected_time: r.detected_time,
            decided_time: r.decided_time,
            dns_updated_time: r.dns_updated_time,
            verified_time: r.verified_time,
            total_ms: r.total_ms,
        }
    }
}

/// One tenant.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    pub home_region: String,
    pub placed_regions: Vec<String>,
    pub active_region: Option<String>,
    pub ready: Option<bool>,
    pub message: Option<String>,
    /// The newest good backup and the data age it stands for (RPO now).
    pub last_backup: Option<BackupView>,
    /// Rotation state of its secrets.
    pub secrets: SecretsView,
}

/// One replicated database.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseView {
    pub name: String,
    /// `PostgreSQL` or `Redis`.
    pub engine: String,
    /// The tenant it belongs to (absent: platform-wide).
    pub tenant: Option<String>,
    /// The FailoverPolicy its primary follows.
    pub follow_policy: Option<String>,
    pub primary_region: Option<String>,
    pub epoch: u64,
    /// Members by region: the role each reports, and whether it answered.
    pub members: Vec<DatabaseMemberView>,
    /// The largest standby lag, human readable.
    pub max_lag: Option<String>,
    /// Every standby streams as the spec asks (the `Replicating` condition).
    pub replicating: Option<bool>,
    pub ready: Option<bool>,
    pub message: Option<String>,
    /// The failover in progress or last done.
    pub last_failover: Option<DatabaseFailoverView>,
}

/// One member of a database.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMemberView {
    pub region: String,
    /// `Primary`, `Standby`, `Fenced`, `Unknown` ... as the operator observed it.
    pub role: String,
    pub reachable: bool,
    pub lag_bytes: Option<u64>,
    pub sync_state: Option<String>,
}

/// A database failover, in short.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseFailoverView {
    pub epoch: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Why (`PolicyMoved`, `RegionDown`, `Switchover`).
    pub reason: String,
    /// `Promoted` or `Abandoned`; `InProgress` while under way.
    pub outcome: String,
    /// Detection to verification, in milliseconds (once verified).
    pub total_ms: Option<u64>,
}

/// A tenant's newest good backup.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    pub name: String,
    pub data_time: Time,
    /// Seconds of data a restore of it would lose now.
    pub rpo_seconds: u64,
}

/// A tenant's secrets.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretsView {
    pub total: usize,
    /// Rotated and held by every region.
    pub done: usize,
    /// Failed or rolled back.
    pub failing: Vec<String>,
    /// The next scheduled rotation of any of them.
    pub next_rotation_time: Option<Time>,
}

/// Chaos experiments, summed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosView {
    pub experiments: usize,
    pub total_runs: u64,
    pub succeeded_runs: u64,
    /// Succeeded over total, in percent (absent before the first run).
    pub success_rate_percent: Option<f64>,
}

/// One DR drill.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillView {
    pub name: String,
    pub last_result: Option<String>,
    pub last_run_time: Option<Time>,
    pub measured_rto_seconds: Option<u64>,
    pub measured_rpo_seconds: Option<u64>,
    pub next_run_time: Option<Time>,
}

/// `kubectl azora timeline <policy>`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub api_version: &'static str,
    /// `Timeline`.
    pub kind: &'static str,
    pub policy: String,
    pub active_region: Option<String>,
    pub epoch: u64,
    /// Newest first: the last failover, then the history.
    pub failovers: Vec<FailoverView>,
}

fn condition<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

fn ready(conds: &[Condition]) -> (Option<bool>, Option<String>) {
    match condition(conds, "Ready") {
        None => (None, None),
        Some(c) => {
            let ok = c.status == ConditionStatus::True;
            (
                Some(ok),
                (!ok && !c.message.is_empty()).then(|| c.message.clone()),
            )
        }
    }
}

fn seconds_since(t: Time, now: Time) -> u64 {
    u64::try_from(now.0.as_second() - t.0.as_second()).unwrap_or(0)
}

/// Reads everything `status` shows.
pub async fn status(hub: &Hub) -> anyhow::Result<Status> {
    let (regions, policies, tenants, chaos, drills, databases) = tokio::try_join!(
        client::list::<Region>(hub),
        client::list::<FailoverPolicy>(hub),
        client::list::<Tenant>(hub),
        client::list::<ChaosExperiment>(hub),
        client::list::<DrDrill>(hub),
        client::list::<Database>(hub),
    )?;
    let mut dbv: Vec<DatabaseView> = databases.iter().map(database_view).collect();
    dbv.sort_by(|a, b| a.name.cmp(&b.name));
    let now = Time::now();
    let mut rv: Vec<RegionView> = regions.iter().map(region_view).collect();
    rv.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    let mut pv: Vec<PolicyView> = policies.iter().map(policy_view).collect();
    pv.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tv: Vec<TenantView> = tenants.iter().map(|t| tenant_view(t, now)).collect();
    tv.sort_by(|a, b| a.name.cmp(&b.name));
    let mut cv = ChaosView {
        experiments: chaos.len(),
        ..ChaosView::default()
    };
    for c in &chaos {
        if let Some(s) = &c.status {
            cv.total_runs += s.total_runs;
            cv.succeeded_runs += s.succeeded_runs;
        }
    }
    if cv.total_runs > 0 {
        cv.success_rate_percent = Some(cv.succeeded_runs as f64 * 100.0 / cv.total_runs as f64);
    }
    let mut dv: Vec<DrillView> = drills
        .iter()
        .map(|d| {
            let s = d.status.clone().unwrap_or_default();
            let last = s.last_run.as_ref();
            DrillView {
                name: d.metadata.name.clone().unwrap_or_default(),
                last_result: last.map(|r| format!("{:?}", r.result)),
                last_run_time: last.map(|r| r.start_time),
                measured_rto_seconds: last.and_then(|r| r.measured_rto_seconds),
                measured_rpo_seconds: last.and_then(|r| r.measured_rpo_seconds),
                next_run_time: s.next_run_time,
            }
        })
        .collect();
    dv.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Status {
        api_version: DOC_VERSION,
        kind: "Status",
        time: now,
        regions: rv,
        policies: pv,
        tenants: tv,
        databases: dbv,
        chaos: cv,
        drills: dv,
    })
}

fn database_view(d: &Database) -> DatabaseView {
    let s = d.status.clone().unwrap_or_default();
    let (ready, message) = ready(&s.conditions);
    let replicating = condition(&s.conditions, "Replicating").map(|c| c.status == ConditionStatus::True);
    let mut members: Vec<DatabaseMemberView> = s
        .members
        .iter()
        .map(|m| DatabaseMemberView {
            region: m.region.clone(),
            role: m.role.to_string(),
            reachable: m.reachable,
            lag_bytes: m.lag_bytes.filter(|_| m.role != MemberRole::Primary),
            sync_state: m.sync_state.clone(),
        })
        .collect();
    members.sort_by(|a, b| a.region.cmp(&b.region));
    DatabaseView {
        name: d.metadata.name.clone().unwrap_or_default(),
        engine: d.spec.engine.to_string(),
        tenant: d.spec.tenant.clone(),
        follow_policy: d.spec.follow_policy.clone(),
        primary_region: s.primary_region.clone(),
        epoch: s.epoch,
        members,
        max_lag: s.max_lag.clone(),
        replicating,
        ready,
        message,
        last_failover: s.last_failover.as_ref().map(|f| DatabaseFailoverView {
            epoch: f.epoch,
            from: f.from.clone(),
            to: f.to.clone(),
            reason: f.reason.clone(),
            outcome: f.outcome.clone().unwrap_or_else(|| "InProgress".into()),
            total_ms: f
                .detected_time
                .zip(f.verified_time)
                .map(|(d, v)| u64::try_from(v.0.duration_since(d.0).as_millis()).unwrap_or(0)),
        }),
    }
}

fn region_view(r: &Region) -> RegionView {
    let s = r.status.clone().unwrap_or_default();
    let (ready, message) = ready(&s.conditions);
    let vault = condition(&s.conditions, "VaultReachable").map(|c| c.status == ConditionStatus::True);
    let healthy = |v: &azora_api::region::Verdict| {
        matches!(
            v,
            azora_api::region::Verdict::Healthy | azora_api::region::Verdict::Degraded
        )
    };
    RegionView {
        name: r.metadata.name.clone().unwrap_or_default(),
        city: r.spec.location.city.clone(),
        priority: r.spec.priority,
        verdict: s
            .verdict
            .map_or_else(|| "Unknown".to_string(), |v| format!("{v:?}")),
        serving: s.serving.unwrap_or(false),
        cordoned: r.spec.cordoned,
        latency_ms: s.latency_ms,
        observers: s.observers.len(),
        observers_healthy: s.observers.iter().filter(|o| healthy(&o.verdict)).count(),
        cluster_reachable: s.cluster.as_ref().map(|c| c.reachable),
        cluster_reason: s.cluster.as_ref().and_then(|c| c.reason.clone()),
        vault_reachable: r.spec.vault.as_ref().and(vault),
        ready,
        message,
        since: s.last_transition_time,
    }
}

fn policy_view(p: &FailoverPolicy) -> PolicyView {
    let s = p.status.clone().unwrap_or_default();
    let (ready, message) = ready(&s.conditions);
    let manual_cond = condition(&s.conditions, "ManualFailover");
    let generation = p.metadata.generation;
    let manual = p.spec.manual.as_ref().map(|m| {
        // A condition written for an older generation speaks of an older request.
        let current =
            manual_cond.filter(|c| c.observed_generation >= generation && c.reason != "NotRequested");
        ManualView {
            region: m.region.clone(),
            requested_by: m.requested_by.clone(),
            requested_time: m.requested_time,
            reason: m.reason.clone(),
            honored: current.map(|c| c.status == ConditionStatus::True),
            message: current.map(|c| c.message.clone()),
        }
    });
    PolicyView {
        name: p.metadata.name.clone().unwrap_or_default(),
        strategy: p.spec.strategy.to_string(),
        active_region: s.active_region.clone(),
        active_regions: s.active_regions.clone(),
        epoch: s.epoch,
        manual,
        last_failover: s.last_failover.as_ref().map(FailoverView::from),
        held: condition(&s.conditions, "FailoverHeld").is_some_and(|c| c.status == ConditionStatus::True),
        ready,
        message,
    }
}

fn tenant_view(t: &Tenant, now: Time) -> TenantView {
    let s = t.status.clone().unwrap_or_default();
    let (ready, message) = ready(&s.conditions);
    let secrets = SecretsView {
        total: t.spec.secrets.len(),
        done: s
            .secrets
            .iter()
            .filter(|x| x.phase == Some(SecretPhase::Done))
            .count(),
        failing: s
            .secrets
            .iter()
            .filter(|x| matches!(x.phase, Some(SecretPhase::Failed | SecretPhase::RolledBack)))
            .map(|x| x.name.clone())
            .collect(),
        next_rotation_time: s.secrets.iter().filter_map(|x| x.next_rotation_time).min(),
    };
    TenantView {
        name: t.metadata.name.clone().unwrap_or_default(),
        home_region: t.spec.home_region.clone(),
        placed_regions: s.placed_regions.clone(),
        active_region: s.active_region.clone(),
        ready,
        message,
        last_backup: s.last_backup.as_ref().map(|b| BackupView {
            name: b.name.clone(),
            data_time: b.data_time,
            rpo_seconds: seconds_since(b.data_time, now),
        }),
        secrets,
    }
}

/// Reads a policy's timeline.
pub async fn timeline(hub: &Hub, policy: &str) -> anyhow::Result<Timeline> {
    let p: FailoverPolicy = client::get(hub, policy).await?;
    let s = p.status.unwrap_or_default();
    let failovers = s
        .last_failover
        .iter()
        .chain(s.history.iter())
        .map(FailoverView::from)
        .collect();
    Ok(Timeline {
        api_version: DOC_VERSION,
        kind: "Timeline",
        policy: policy.to_string(),
        active_region: s.active_region,
        epoch: s.epoch,
        failovers,
    })
}
