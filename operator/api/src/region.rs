//! `Region`: one of the platform's regions — where it is, how to probe it, what DNS hands out for it, its
//! cluster, object store and Vault. Pure data, no IO.

use std::net::{Ipv4Addr, Ipv6Addr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Continent, SecretKeyRef, SecretRef, Time};

/// A region of the platform: its location, failover priority, health probes, DNS answer addresses,
/// regional cluster, object store and Vault.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "Region",
    status = "RegionStatus",
    shortname = "rg",
    category = "azora",
    doc = "A region of the platform: location, failover priority, probes, DNS targets, cluster, object store, Vault.",
    printcolumn(name = "City", type_ = "string", json_path = ".spec.location.city"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Serving", type_ = "boolean", json_path = ".status.serving"),
    printcolumn(name = "Since", type_ = "date", json_path = ".status.lastTransitionTime"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Continent",
        type_ = "string",
        json_path = ".spec.location.continent",
        priority = 1
    ),
    printcolumn(
        name = "Latency(ms)",
        type_ = "integer",
        json_path = ".status.latencyMs",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RegionSpec {
    /// Where the region is; used for geographic DNS answers and residency rules.
    pub location: Location,
    /// Failover priority: the lower the number, the earlier the region is chosen. Ties break by name.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// Take the region out of rotation (maintenance). A cordoned region receives no DNS answers and is never
    /// chosen as a failover target; it keeps being probed.
    #[serde(default)]
    pub cordoned: bool,
    /// Health probes run against the region from every observer.
    pub probes: ProbeSpec,
    /// The addresses DNS hands out when this region serves traffic.
    pub dns: DnsTargets,
    /// The region's Kubernetes cluster. Without it the region is managed only through probes, DNS and object
    /// storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRef>,
    /// The region's S3-compatible object store (tenant data replicas and backup copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStore>,
    /// The region's Vault, for tenant secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultRef>,
}

fn default_priority() -> i32 {
    100
}

/// Geographic location of a region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// City the region is served from, e.g. `Lagos`.
    #[schemars(length(min = 1, max = 100))]
    pub city: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `NG`.
    #[schemars(regex(pattern = "^[A-Z]{2}$"))]
    pub country: String,
    /// Continent, for residency rules and geographic DNS.
    pub continent: Continent,
    /// Latitude in degrees, -90 to 90.
    #[schemars(range(min = -90.0, max = 90.0))]
    pub latitude: f64,
    /// Longitude in degrees, -180 to 180.
    #[schemars(range(min = -180.0, max = 180.0))]
    pub longitude: f64,
}

/// How the region is probed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Time between two probes of an endpoint (jittered by up to 10%). Must exceed `timeout`.
    #[serde(default = "default_interval")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub interval: String,
    /// How long one probe may take before it counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub timeout: String,
    /// Consecutive failed rounds before an observer judges the region down.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub failure_threshold: u32,
    /// Consecutive good rounds before an observer judges a down region healthy again (hysteresis).
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 20))]
    pub success_threshold: u32,
    /// Observers that must agree before the region is declared down. Default: a majority of fresh observers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub quorum: Option<u32>,
    /// Endpoints probed every interval. The region is healthy when all of them answer.
    #[schemars(length(min = 1, max = 16))]
    pub endpoints: Vec<ProbeEndpoint>,
}

fn default_interval() -> String {
    "5s".into()
}
fn default_timeout() -> String {
    "2s".into()
}
fn default_failure_threshold() -> u32 {
    2
}
fn default_success_threshold() -> u32 {
    3
}

/// Kind of probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, strum::Display)]
#[allow(clippy::upper_case_acronyms)]
pub enum ProbeType {
    /// HTTP GET of `url`; healthy when the status equals `expectedStatus`.
    HTTP,
    /// HTTPS GET of `url`; healthy when the status equals `expectedStatus`.
    HTTPS,
    /// TCP connect to `address`.
    TCP,
    /// DNS query for `query` sent to `address`; healthy on any answer without server failure.
    DNS,
}

/// One probed endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type in ['HTTP', 'HTTPS'] ? has(self.url) : has(self.address)",
     "message": "HTTP and HTTPS probes need url; TCP and DNS probes need address"},
    {"rule": "self.type != 'HTTPS' || (has(self.url) && self.url.startsWith('https://'))",
     "message": "an HTTPS probe needs an https:// url"},
    {"rule": "self.type != 'HTTP' || (has(self.url) && self.url.startsWith('http://'))",
     "message": "an HTTP probe needs an http:// url"},
    {"rule": "self.type != 'DNS' || has(self.query)", "message": "a DNS probe needs query"}
]))]
pub struct ProbeEndpoint {
    /// Name of the endpoint, unique within the region (used in metrics and status).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Kind of probe.
    #[serde(rename = "type")]
    pub type_: ProbeType,
    /// URL for HTTP and HTTPS probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// `host:port` for TCP and DNS probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 261))]
    pub address: Option<String>,
    /// Name queried by a DNS probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub query: Option<String>,
    /// HTTP status an HTTP/HTTPS probe expects.
    #[serde(default = "default_expected_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: u16,
}

fn default_expected_status() -> u16 {
    200
}

/// The addresses DNS answers with while this region serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.ipv4) ? size(self.ipv4) : 0) + (has(self.ipv6) ? size(self.ipv6) : 0) > 0", "message": "dns needs at least one ipv4 or ipv6 address"}
]))]
pub struct DnsTargets {
    /// IPv4 addresses for A records.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses for AAAA records.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ipv6: Vec<Ipv6Addr>,
}

/// Reference to the regional Kubernetes cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Secret key holding a kubeconfig for the regional cluster.
    pub kubeconfig_secret: SecretKeyRef,
}

/// An S3-compatible object store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStore {
    /// Endpoint URL, e.g. `https://s3.af-south-1.amazonaws.com`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Signing region of the store.
    #[serde(default = "default_s3_region")]
    pub signing_region: String,
    /// Use path-style addressing (most S3-compatible servers need it).
    #[serde(default = "default_true")]
    pub force_path_style: bool,
    /// Secret with keys `accessKeyId` and `secretAccessKey`. Without it, the operator's own environment
    /// credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}

/// The region's Vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.kubernetesAuth) != has(self.tokenSecret)",
     "message": "set exactly one of kubernetesAuth and tokenSecret"}
]))]
pub struct VaultRef {
    /// Vault address, e.g. `https://vault.lagos.azora.io:8200`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://"))]
    pub address: String,
    /// Mount path of the KV version 2 engine.
    #[serde(default = "default_kv_mount")]
    pub kv_mount: String,
    /// Log in with Vault's Kubernetes auth method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_auth: Option<VaultKubernetesAuth>,
    /// Log in with a static token read from this Secret key (development).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
}

fn default_kv_mount() -> String {
    "secret".into()
}

/// Vault Kubernetes auth settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Vault role to log in as.
    #[schemars(length(min = 1))]
    pub role: String,
    /// Mount path of the Kubernetes auth method.
    #[serde(default = "default_k8s_auth_mount")]
    pub mount_path: String,
}

fn default_k8s_auth_mount() -> String {
    "kubernetes".into()
}

/// The health verdict on a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum Verdict {
    /// Every endpoint answers, per a quorum of observers.
    Healthy,
    /// Some endpoints or some observers fail, but not a quorum.
    Degraded,
    /// A quorum of observers sees the region down.
    Down,
    /// Taken out of rotation by `spec.cordoned`.
    Cordoned,
    /// Not enough fresh observations to judge.
    Unknown,
}

/// What one observer last saw of the region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObserverResult {
    /// Observer name (an operator replica or a probe agent).
    pub name: String,
    /// This observer's verdict.
    pub verdict: Verdict,
    /// Consecutive failed rounds seen by this observer.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Median probe latency in milliseconds over the last rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// When this observer last reported.
    pub last_seen_time: Time,
}

/// Reachability of the regional cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Whether the cluster's API server answered the last check.
    pub reachable: bool,
    /// The cluster's Kubernetes version, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When this status was last written: on every change, and at least every 5 minutes while the cluster
    /// is checked (every 10 s).
    pub last_check_time: Time,
    /// Why, as a fixed word: `Reachable`, `Unreachable`, `UnsafeKubeconfig` (the kubeconfig asks for more
    /// than inline credentials: exec plugins, files, proxies), `InvalidKubeconfig`, `SecretMissing`,
    /// `SecretUnreadable`, `NoCluster`, `WatchNotSynced` (the cluster answers but refuses a watch the
    /// operator needs, e.g. 403 on one kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Error from the last check, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a Region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Health verdict: Healthy, Degraded, Down, Cordoned or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Whether DNS currently sends traffic to this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// When the verdict last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the region last came back from Down; traffic returns only after the failback hold-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_time: Option<Time>,
    /// Median probe latency across observers, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Consecutive failed rounds, as agreed by the quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Per-observer results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observers: Vec<ObserverResult>,
    /// Reachability of the regional cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Probed`, and `VaultReachable` (regions with a
    /// `vault`: whether the operator can log in and is answered; reason `Answering`, `VaultLoginDenied`,
    /// `VaultSealed`, `VaultUnreachable` or the incomplete setting).
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}
