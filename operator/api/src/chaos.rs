//! `ChaosExperiment` and `DrDrill`: scheduled faults with steady-state checks and measured outcomes, and
//! monthly disaster-recovery drills with measured RTO and RPO. Pure data, no IO.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time};

/// A chaos experiment: a fault injected on a schedule, with steady-state checks, abort conditions and an
/// expected outcome.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "ChaosExperiment",
    status = "ChaosExperimentStatus",
    shortname = "chaos",
    category = "azora",
    doc = "A scheduled fault with steady-state checks, abort conditions and an expected, measured outcome.",
    printcolumn(name = "Fault", type_ = "string", json_path = ".spec.fault.type"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.fault.region"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastRun.outcome"),
    printcolumn(name = "Success", type_ = "string", json_path = ".status.successRate"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentSpec {
    /// The fault to inject.
    pub fault: Fault,
    /// How long the fault lasts.
    #[serde(default = "default_duration")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub duration: String,
    /// Cron schedule (five fields, UTC). Default: daily at 03:00.
    #[serde(default = "default_chaos_schedule")]
    #[schemars(schema_with = "crate::common::cron_schema")]
    pub schedule: String,
    /// Do not start new runs.
    #[serde(default)]
    pub suspend: bool,
    /// Checks that must hold before the fault, during it and after it.
    #[serde(default)]
    pub steady_state: SteadyState,
    /// Stop the experiment early and revert when any of these happen.
    #[serde(default)]
    pub abort_when: AbortConditions,
    /// What must happen for the run to succeed.
    #[serde(default)]
    pub expect: Expectation,
    /// Runs kept in status.
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
    /// Times when no run may start (and a running one is reverted): each window opens at its cron times and
    /// lasts its duration, e.g. business hours `0 8 * * 1-5` for `10h`, or a change freeze.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub blocked_windows: Vec<BlockedWindow>,
    /// Allow a fault longer than one hour.
    #[serde(default)]
    pub allow_long_fault: bool,
    /// Allow this experiment to start while another experiment's fault is active on another region (by
    /// default chaos takes out at most one region at a time).
    #[serde(default)]
    pub allow_concurrent: bool,
}

/// A window in which no run starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockedWindow {
    /// When the window opens (cron, five fields, UTC).
    #[schemars(schema_with = "crate::common::cron_schema")]
    pub start: String,
    /// How long it stays open.
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub duration: String,
    /// Why (shown in the skipped run).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub reason: String,
}

fn default_duration() -> String {
    "60s".into()
}
fn default_chaos_schedule() -> String {
    "0 3 * * *".into()
}
fn default_history() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// Kind of fault.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::Display,
    strum::EnumString,
)]
pub enum FaultType {
    /// The region's endpoints stop answering.
    RegionOutage,
    /// Traffic from `peerRegion` into `region` is dropped (through the region agent's link proxy).
    NetworkPartition,
    /// `latency` is added to the round trip between `peerRegion` and `region` (the agent's link proxy).
    NetworkLatency,
    /// The region's authoritative DNS server stops answering (the region agent's `DnsFailure` target).
    DnsFailure,
    /// The region's Vault stops answering.
    VaultOutage,
    /// The region's object store stops answering.
    ObjectStoreOutage,
    /// Pods matching `pods` are deleted through the API of the region's cluster.
    PodKill,
}

/// The fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.region)",
     "message": "a fault needs region"},
    {"rule": "(self.type == 'PodKill') == has(self.pods)",
     "message": "pods is required for PodKill and applies to PodKill only"},
    {"rule": "!(self.type in ['NetworkPartition', 'NetworkLatency']) || has(self.peerRegion)",
     "message": "network faults need peerRegion"},
    {"rule": "!has(self.peerRegion) || !has(self.region) || self.peerRegion != self.region",
     "message": "peerRegion must differ from region"},
    {"rule": "self.type != 'NetworkLatency' || has(self.latency)",
     "message": "a NetworkLatency fault needs latency"},
    {"rule": "!has(self.mode) || self.type == 'RegionOutage'",
     "message": "mode applies to RegionOutage only"}
]))]
pub struct Fault {
    /// Kind of fault.
    #[serde(rename = "type")]
    pub type_: FaultType,
    /// Target region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub region: Option<String>,
    /// Other side of a network fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub peer_region: Option<String>,
    /// Added latency of a NetworkLatency fault (at least 50ms, at most 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::optional_duration_schema")]
    pub latency: Option<String>,
    /// How a RegionOutage is made: `Hang` (default: the region's serving really stops answering, through the
    /// region agent) or `Drain` (the control plane treats the region as down; nothing is harmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutageMode>,
    /// The pods a PodKill deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodTarget>,
}

/// Pods to delete (PodKill).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(self.namespace in ['kube-system', 'kube-public', 'kube-node-lease', 'azora-system'])",
     "message": "chaos never kills pods in a system namespace"}
]))]
pub struct PodTarget {
    /// Their namespace (never `kube-system`, `kube-public`, `kube-node-lease` or `azora-system`).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Label selector, kubectl syntax (`app=web,tier!=db`).
    #[schemars(length(min = 1, max = 1024))]
    pub selector: String,
    /// At most this many are deleted (the oldest first).
    #[serde(default = "default_max_pods")]
    #[schemars(range(min = 1, max = 100))]
    pub max_pods: u32,
    /// Grace period of the deletion in seconds (0: killed at once); default the pod's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: Option<u32>,
}

fn default_max_pods() -> u32 {
    1
}

/// How a region outage is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum OutageMode {
    /// The region agent stops the region's serving for real (its processes hang).
    Hang,
    /// The control plane takes the region out: the failover path treats it as down.
    Drain,
}

/// Steady-state checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SteadyState {
    /// At least this many regions must be Healthy (the target included, before the fault).
    #[serde(default = "default_min_healthy")]
    #[schemars(range(min = 1, max = 64))]
    pub min_healthy_regions: u32,
    /// Every FailoverPolicy must answer DNS queries.
    #[serde(default = "default_true")]
    pub dns_answering: bool,
    /// Every Tenant must be Ready.
    #[serde(default = "default_true")]
    pub tenants_ready: bool,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            min_healthy_regions: default_min_healthy(),
            dns_answering: true,
            tenants_ready: true,
        }
    }
}

fn default_min_healthy() -> u32 {
    2
}

/// Abort conditions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortConditions {
    /// Abort when fewer regions than this are Healthy (other than the target).
    #[serde(default = "default_abort_min")]
    #[schemars(range(min = 0, max = 64))]
    pub healthy_regions_below: u32,
    /// Abort when DNS stops answering for any policy.
    #[serde(default = "default_true")]
    pub dns_unanswered: bool,
}

impl Default for AbortConditions {
    fn default() -> Self {
        Self {
            healthy_regions_below: default_abort_min(),
            dns_unanswered: true,
        }
    }
}

fn default_abort_min() -> u32 {
    1
}

/// Expected outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expectation {
    /// DNS must move away from the target within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::optional_duration_schema")]
    pub failover_within: Option<String>,
    /// After the fault is reverted, the steady state must return within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::optional_duration_schema")]
    pub recovery_within: Option<String>,
    /// No failover may happen (for faults that must be absorbed).
    #[serde(default)]
    pub no_failover: bool,
}

/// Outcome of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum Outcome {
    /// Not started: a steady-state check, an interlock or a blocked window said no (see the message).
    Skipped,
    Running,
    Succeeded,
    Failed,
    Aborted,
}

/// One entry of a timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Step name, e.g. `FaultInjected`, `FailoverVerified`.
    pub step: String,
    /// When it happened.
    pub time: Time,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One run of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosRun {
    /// Run identifier.
    pub id: String,
    /// Outcome.
    pub outcome: Outcome,
    /// When the run started.
    pub start_time: Time,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Measured failover time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<u64>,
    /// Measured recovery time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<u64>,
    /// The region the fault was made in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When the fault expires by itself (the agent reverts then even without the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_time: Option<Time>,
    /// Whether the operator saw the fault gone after the revert (the endpoint answers again): `false` means
    /// the fault may still be in place, and is alerted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_confirmed: Option<bool>,
    /// What happened, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Why the run failed or aborted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a ChaosExperiment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The run in progress or last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ChaosRun>,
    /// Past runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ChaosRun>,
    /// Runs finished.
    #[serde(default)]
    pub total_runs: u64,
    /// Runs that succeeded.
    #[serde(default)]
    pub succeeded_runs: u64,
    /// Success rate over all runs, e.g. `99.7%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<String>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// The last `azora.io/run-now` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_handled: Option<String>,
    /// Runs skipped (not counted in the success rate).
    #[serde(default)]
    pub skipped_runs: u64,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Scheduled`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A disaster-recovery drill: lose a region (as a drain), measure RTO and RPO, restore and verify, fail back.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "DrDrill",
    status = "DrDrillStatus",
    shortname = "drill",
    category = "azora",
    doc = "A scheduled disaster-recovery drill with measured RTO and RPO.",
    printcolumn(name = "Lose", type_ = "string", json_path = ".spec.scenario.loseRegion"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastRun.result"),
    printcolumn(
        name = "RTO(s)",
        type_ = "integer",
        json_path = ".status.lastRun.measuredRtoSeconds"
    ),
    printcolumn(
        name = "RPO(s)",
        type_ = "integer",
        json_path = ".status.lastRun.measuredRpoSeconds"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DrDrillSpec {
    /// Cron schedule (five fields, UTC). Default: monthly, on the 1st at 04:00.
    #[serde(default = "default_drill_schedule")]
    #[schemars(schema_with = "crate::common::cron_schema")]
    pub schedule: String,
    /// Do not start new runs.
    #[serde(default)]
    pub suspend: bool,
    /// Which region is lost.
    pub scenario: Scenario,
    /// Tenants in the drill. Empty: every tenant whose active region is the lost one.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::name_list_schema")]
    pub tenants: Vec<String>,
    /// Recovery objectives the drill must meet.
    #[serde(default)]
    pub objectives: Objectives,
    /// Restore the newest backup into the DR region's scratch namespace and verify it.
    #[serde(default = "default_true")]
    pub verify_restore: bool,
    /// Return traffic to the lost region after the drill.
    #[serde(default = "default_true")]
    pub failback: bool,
    /// Runs kept in status.
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_drill_schedule() -> String {
    "0 4 1 * *".into()
}

/// The drill scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.drRegion) || self.drRegion != self.loseRegion",
     "message": "drRegion must differ from loseRegion"}
]))]
pub struct Scenario {
    /// The region taken out (drained, not harmed).
    #[schemars(schema_with = "crate::common::name_schema")]
    pub lose_region: String,
    /// Where tenants recover. Default: each tenant's next failover region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub dr_region: Option<String>,
}

/// Recovery objectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective.
    #[serde(default = "default_rto")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub rto: String,
    /// Recovery point objective.
    #[serde(default = "default_rpo")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub rpo: String,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            rto: default_rto(),
            rpo: default_rpo(),
        }
    }
}

fn default_rto() -> String {
    "15m".into()
}
fn default_rpo() -> String {
    "5m".into()
}

/// Result of a drill run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum DrillResult {
    /// Not started: an interlock or a pre-check said no (see the message); nothing was drained.
    Skipped,
    Running,
    Passed,
    Failed,
    Aborted,
}

/// One drill run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillRun {
    /// Run identifier.
    pub id: String,
    /// Result.
    pub result: DrillResult,
    /// When the run started.
    pub start_time: Time,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Measured recovery time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_rto_seconds: Option<u64>,
    /// Measured recovery point, seconds: the larger of the backup RPO and the sentinel RPO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_rpo_seconds: Option<u64>,
    /// Recovery time in milliseconds: drain → DNS answering the DR region (verified) and every drill
    /// tenant active and Ready there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    /// Drain time − data time of the restored backups (the oldest), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_rpo_ms: Option<u64>,
    /// Last sentinel written before the drain − newest sentinel found in the DR region after recovery (the
    /// worst tenant), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_rpo_ms: Option<u64>,
    /// Undrain → DNS answering the lost region again, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_ms: Option<u64>,
    /// The region drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lose_region: Option<String>,
    /// The region the drill tenants recovered in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dr_region: Option<String>,
    /// Per tenant: what was measured and restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<DrillTenant>,
    /// What happened, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Where the Markdown report is (`s3://<bucket>/<key>`, in the DR region's object store; the JSON
    /// report is next to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// Why the run failed or aborted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One tenant in a drill run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillTenant {
    /// Tenant name.
    pub name: String,
    /// When the tenant was active and Ready in the DR region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_time: Option<Time>,
    /// The backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Data time of that backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_data_time: Option<Time>,
    /// The scratch Restore made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Whether the restore verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_verified: Option<bool>,
    /// Last sentinel written before the drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sentinel_written: Option<Time>,
    /// Newest sentinel found in the DR region after recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_sentinel_found: Option<Time>,
    /// What went wrong for this tenant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a DrDrill.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrDrillStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The run in progress or last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRun>,
    /// Past runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<DrillRun>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// The last `azora.io/run-now` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_handled: Option<String>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Scheduled`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}
