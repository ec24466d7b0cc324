//! `FailoverPolicy`: which DNS names follow which regions, how (failover, geo, weighted), how fast and how
//! failback happens, and through which DNS provider. Pure data, no IO.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Continent, SecretKeyRef, Time};

/// A failover policy: DNS names, strategy, thresholds, TTL, failback and DNS provider.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "FailoverPolicy",
    status = "FailoverPolicyStatus",
    shortname = "fp",
    category = "azora",
    doc = "How DNS follows region health: zone and names, strategy, TTL, failback, DNS provider.",
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeRegion"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(
        name = "Last-Failover",
        type_ = "date",
        json_path = ".status.lastFailover.decidedTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.provider.type != 'RFC2136' || has(self.provider.rfc2136)",
     "message": "provider.type RFC2136 needs provider.rfc2136"},
    {"rule": "self.strategy != 'Weighted' || (has(self.regions) && self.regions.exists(r, r.weight > 0))",
     "message": "the Weighted strategy needs regions with a weight above 0"},
    {"rule": "!has(self.regions) || self.regions.all(r, self.regions.exists_one(x, x.name == r.name))",
     "message": "regions must not repeat a region"}
]))]
pub struct FailoverPolicySpec {
    /// The DNS zone answered for, fully qualified, e.g. `azora.example.`.
    #[schemars(
        length(min = 2, max = 253),
        regex(pattern = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+$")
    )]
    pub zone: String,
    /// Names inside the zone that follow the policy, e.g. `api` or `@` for the apex.
    #[schemars(length(min = 1, max = 64))]
    pub hostnames: Vec<String>,
    /// How answers are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// Candidate regions in order of preference (and their weights). Empty: every Region, by priority.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub regions: Vec<PolicyRegion>,
    /// Limit answers to the regions this Tenant may use (its residency and placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub tenant: Option<String>,
    /// TTL of the answers, in seconds. Short TTLs make failover visible to clients quickly.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl: u32,
    /// Upper bound from a region going down to the decision; the operator warns when it is exceeded.
    #[serde(default = "default_deadline")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub decision_deadline: String,
    /// How traffic returns to a preferred region that recovered.
    #[serde(default)]
    pub failback: Failback,
    /// Where the answers are published.
    #[serde(default)]
    pub provider: DnsProvider,
    /// A manual failover (`kubectl azora failover <policy> --to <region>`): while set, every client geography
    /// is answered with this region alone, as long as it is eligible (healthy or degraded, not cordoned,
    /// allowed for the tenant). When it is not, the policy's own rules apply and the `ManualFailover`
    /// condition says why. Removing it hands traffic back to the policy's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualFailover>,
    /// How many past failovers status keeps.
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

/// A manual failover request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualFailover {
    /// The region every answer goes to.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub region: String,
    /// Who asked (recorded in the failover timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub requested_by: Option<String>,
    /// When it was asked. A region that recovers from Down after the request waits for the failback hold-down
    /// (or an approval) like any other recovered region; the operator takes the time from the API server's
    /// record of the write (`metadata.managedFields`) and uses this one only where there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_time: Option<Time>,
    /// Why (free text, e.g. a ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

fn default_ttl() -> u32 {
    5
}
fn default_deadline() -> String {
    "10s".into()
}
fn default_history() -> u32 {
    10
}

/// How answers are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum Strategy {
    /// All clients get the first healthy region of the ordered list.
    #[default]
    Failover,
    /// Each client gets the nearest healthy region to its continent.
    Geo,
    /// Clients get every healthy region, in proportion to the weights.
    Weighted,
}

/// A candidate region of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRegion {
    /// Region name.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub name: String,
    /// Weight for the Weighted strategy.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Failback behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failback {
    /// `Automatic`: return after `holdDown` of continuous health (or earlier, when approved). `Manual`: only
    /// when `approvedRegion` names the recovered region (`kubectl azora approve-failback <policy> <region>`).
    #[serde(default)]
    pub mode: FailbackMode,
    /// Continuous health required before an automatic failback.
    #[serde(default = "default_hold_down")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub hold_down: String,
    /// Approval: the region traffic may return to (in `Automatic` mode: without waiting for the hold-down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_region: Option<String>,
    /// When the approval was given. An approval given before the region's latest recovery from Down does not
    /// count (it approved an earlier recovery). The operator takes the time from the API server's record of the
    /// write (`metadata.managedFields`) and uses this one only where there is none; an approval with no time at
    /// all counts in `Manual` mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_time: Option<Time>,
}

impl Default for Failback {
    fn default() -> Self {
        Self {
            mode: FailbackMode::Automatic,
            hold_down: default_hold_down(),
            approved_region: None,
            approved_time: None,
        }
    }
}

fn default_hold_down() -> String {
    "60s".into()
}

/// Failback mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum FailbackMode {
    /// After the hold-down.
    #[default]
    Automatic,
    /// Only on approval.
    Manual,
}

/// DNS provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsProvider {
    /// `Embedded`: every operator replica serves the zone itself. `RFC2136`: dynamic updates with TSIG to an
    /// external authoritative server.
    #[serde(rename = "type", default)]
    pub type_: DnsProviderType,
    /// Settings for RFC 2136 updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136>,
}

/// DNS provider type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
#[allow(clippy::upper_case_acronyms)]
pub enum DnsProviderType {
    /// The operator's embedded authoritative GeoDNS server.
    #[default]
    Embedded,
    /// RFC 2136 dynamic updates signed with TSIG.
    RFC2136,
}

/// RFC 2136 settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136 {
    /// Authoritative servers (`host:port`) receiving updates; the first is the primary.
    #[schemars(length(min = 1, max = 8))]
    pub servers: Vec<String>,
    /// TSIG key name.
    #[schemars(length(min = 1, max = 253))]
    pub tsig_key_name: String,
    /// TSIG algorithm.
    #[serde(default)]
    pub tsig_algorithm: TsigAlgorithm,
    /// Secret key holding the base64 TSIG secret.
    pub tsig_secret: SecretKeyRef,
}

/// TSIG algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum TsigAlgorithm {
    #[default]
    #[serde(rename = "hmac-sha256")]
    #[strum(serialize = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha512")]
    #[strum(serialize = "hmac-sha512")]
    HmacSha512,
}

/// Answers served to one client geography.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeoAnswer {
    /// Client continent, or `default`.
    pub geo: String,
    /// Regions answered with.
    pub regions: Vec<String>,
}

/// One failover, with its timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// Fencing epoch of this failover.
    pub epoch: u64,
    /// Region traffic moved away from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Region traffic moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why: `Initial`, `RegionDown`, `Cordoned`, `NotAllowed`, `Failback`, `Manual`, `ManualCleared`,
    /// `Rebalanced`.
    pub reason: String,
    /// Who asked, for a manual failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// When the region was first seen failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_time: Option<Time>,
    /// When the decision was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_time: Option<Time>,
    /// When the DNS provider accepted the new answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_updated_time: Option<Time>,
    /// When resolving against the authoritative servers returned the new answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// Milliseconds from detection to verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
}

/// Observed state of a FailoverPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicyStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The region answered by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_region: Option<String>,
    /// Every region currently answered (Geo and Weighted answer several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_regions: Vec<String>,
    /// Fencing epoch: increases with every failover; writes carrying an older epoch are refused.
    #[serde(default)]
    pub epoch: u64,
    /// Answers per client geography.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<GeoAnswer>,
    /// The failover in progress or last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Past failovers, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<FailoverRecord>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `DnsPublished`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Parses a client geography label back into a continent (`None` for `default`).
pub fn geo_continent(geo: &str) -> Option<Continent> {
    geo.parse().ok()
}
