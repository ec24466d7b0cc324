//! `Tenant`: a customer of the platform — home region, failover regions, residency, quotas, isolation,
//! secrets, backups and hostnames. Pure data, no IO.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Continent, Time};

/// A tenant of the platform and where it may live.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "Tenant",
    status = "TenantStatus",
    shortname = "tn",
    category = "azora",
    doc = "A tenant: home region, ordered failover regions, residency, quotas, isolation, secrets, backups.",
    printcolumn(name = "Home", type_ = "string", json_path = ".spec.homeRegion"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeRegion"),
    printcolumn(name = "Placed", type_ = "string", json_path = ".status.placedRegions"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.failoverRegions) || !(self.homeRegion in self.failoverRegions)",
     "message": "homeRegion must not also be listed in failoverRegions"},
    {"rule": "!has(self.failoverRegions) || self.failoverRegions.all(r, self.failoverRegions.exists_one(x, x == r))",
     "message": "failoverRegions must not repeat a region"},
    {"rule": "!has(self.residency) || !has(self.residency.allowedRegions) || size(self.residency.allowedRegions) == 0 || self.homeRegion in self.residency.allowedRegions",
     "message": "homeRegion must be one of residency.allowedRegions"},
    {"rule": "!has(self.secrets) || self.secrets.all(s, self.secrets.exists_one(x, x.name == s.name))",
     "message": "secret names must be unique"}
]))]
pub struct TenantSpec {
    /// Human-friendly name shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub display_name: Option<String>,
    /// The Region the tenant normally runs in.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub home_region: String,
    /// Regions to fail over to, in order of preference. Regions the residency forbids are skipped.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::name_list_schema")]
    pub failover_regions: Vec<String>,
    /// Where the tenant's data may live. Replicas, backup copies and failover targets never land elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    /// Resource quota of the tenant's namespace in each region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// Default requests and limits for the tenant's containers (a LimitRange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<DefaultLimits>,
    /// Network isolation of the tenant's namespaces.
    #[serde(default)]
    pub network: NetworkIsolation,
    /// Groups bound to the `admin` role in the tenant's namespaces.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub admin_groups: Vec<String>,
    /// Secrets kept in Vault, rotated on a cycle and synced into every region the tenant lives in.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub secrets: Vec<TenantSecret>,
    /// Backup settings.
    #[serde(default)]
    pub backup: TenantBackup,
    /// Hostnames the tenant is served under.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub hostnames: Vec<String>,
}

/// Residency: the regions and continents a tenant's data may live in. Both lists restrict; empty means no
/// restriction from that list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Residency {
    /// Regions allowed by name.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::name_list_schema")]
    pub allowed_regions: Vec<String>,
    /// Continents allowed.
    #[serde(default)]
    pub allowed_continents: Vec<Continent>,
}

/// Quota of the tenant's namespace (a ResourceQuota).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Total CPU requests, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::quantity_schema")]
    pub cpu: Option<String>,
    /// Total memory requests, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::quantity_schema")]
    pub memory: Option<String>,
    /// Total storage requests, e.g. `100Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::quantity_schema")]
    pub storage: Option<String>,
    /// Maximum number of pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub pods: Option<u32>,
}

/// Default container requests and limits (a LimitRange).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultLimits {
    /// Default CPU limit per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::quantity_schema")]
    pub cpu: Option<String>,
    /// Default memory limit per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::quantity_schema")]
    pub memory: Option<String>,
}

/// Network isolation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkIsolation {
    /// Deny all ingress except from the tenant's own namespace (a default-deny NetworkPolicy plus
    /// allow-within-tenant).
    #[serde(default = "default_true")]
    pub default_deny: bool,
    /// Extra namespaces allowed to reach the tenant (e.g. the ingress controller's).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub allow_from_namespaces: Vec<String>,
}

impl Default for NetworkIsolation {
    fn default() -> Self {
        Self {
            default_deny: true,
            allow_from_namespaces: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A tenant secret kept in Vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSecret {
    /// Name of this secret, unique within the tenant.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub name: String,
    /// Path in the region's Vault KV v2 engine, under `tenants/<tenant>/`, e.g. `tenants/acme/db`.
    #[schemars(length(min = 1, max = 512), regex(pattern = "^[A-Za-z0-9_./-]+$"))]
    pub vault_path: String,
    /// Name of the Kubernetes Secret written in the tenant's namespace in each region.
    #[schemars(length(min = 1, max = 253))]
    pub target_secret: String,
    /// How often the secret is rotated.
    #[serde(default = "default_rotation")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub rotate_every: String,
    /// How long the previous version stays valid after a rotation.
    #[serde(default = "default_grace")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub grace_period: String,
    /// Restart workloads annotated `azora.io/restart-on-rotation` after a rotation.
    #[serde(default)]
    pub restart_workloads: bool,
    /// How a new value is made.
    #[serde(default)]
    pub generator: SecretGenerator,
    /// A check that decides whether a rotation holds: run once every region has the new version (and its
    /// workloads restarted); if it keeps failing, the previous value is written back as a new version and
    /// synced everywhere (`RolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<SecretVerify>,
}

/// An HTTP check of a rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVerify {
    /// URL fetched with GET (e.g. a health endpoint of the service using the secret).
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://"))]
    pub url: String,
    /// Consecutive failed checks (non-2xx, or no answer within 5 s; a few seconds apart) after which the
    /// rotation is rolled back.
    #[serde(default = "default_verify_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub attempts: u32,
}

fn default_verify_attempts() -> u32 {
    3
}

/// How a secret's new value is made. The value is written under `key` in Vault and in the target Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretGenerator {
    /// `Characters` (random characters drawn from `characters`), `Bytes` (random bytes, base64-encoded) or
    /// `External` (people set the value in the home region's Vault; the operator only replicates and syncs it).
    #[serde(default)]
    pub kind: GeneratorKind,
    /// Characters, or bytes for `Bytes`.
    #[serde(default = "default_length")]
    #[schemars(range(min = 1, max = 4096))]
    pub length: u32,
    /// The characters to draw from (`Characters`); default letters and digits.
    #[serde(default = "default_characters")]
    #[schemars(length(min = 1, max = 256))]
    pub characters: String,
    /// Key of the value in Vault's data and in the target Secret.
    #[serde(default = "default_value_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl Default for SecretGenerator {
    fn default() -> Self {
        Self {
            kind: GeneratorKind::Characters,
            length: default_length(),
            characters: default_characters(),
            key: default_value_key(),
        }
    }
}

fn default_length() -> u32 {
    32
}
fn default_characters() -> String {
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".into()
}
fn default_value_key() -> String {
    "value".into()
}

/// Kind of secret generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum GeneratorKind {
    /// Random characters.
    #[default]
    Characters,
    /// Random bytes, base64-encoded.
    Bytes,
    /// Set by people in the home region's Vault; replicated and synced, never generated.
    External,
}

fn default_rotation() -> String {
    "30d".into()
}
fn default_grace() -> String {
    "24h".into()
}

/// Backup settings of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantBackup {
    /// Whether BackupSchedules include this tenant.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for TenantBackup {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Sync state of a tenant in one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum SyncState {
    /// Not yet placed.
    Pending,
    /// Everything the tenant needs exists in the region.
    Synced,
    /// The last sync failed; see `message`.
    Error,
    /// The region is listed but residency forbids it, or it does not exist.
    Excluded,
}

/// The tenant in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSync {
    /// Region name.
    pub region: String,
    /// Sync state.
    pub state: SyncState,
    /// The tenant generation last synced to this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the region was last brought in sync (a change applied, or the generation first confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Replication lag of the tenant's objects to this region, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_seconds: Option<u64>,
    /// Why the region is excluded or in error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Rotation state of one tenant secret. Values are never shown, only versions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    /// Secret name from the spec.
    pub name: String,
    /// Current version in the home region's Vault (KV v2 version number).
    #[serde(default)]
    pub version: u64,
    /// Where the secret is in its cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SecretPhase>,
    /// The rotation that made the current version (also in the version's Vault custom metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// A rotation recorded before it is written to Vault (intent): after a restart the operator finds out
    /// from Vault whether it was written, and never writes it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRotation>,
    /// When it was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When it will next be rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// Until when the previous version stays in the target Secrets (`previous-<key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<Time>,
    /// The newest version the `verify` check passed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_version: Option<u64>,
    /// Consecutive failed checks of the current version.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub verify_failures: u32,
    /// The rotate-now request last carried out: the Tenant's `azora.io/rotate-now` value, its
    /// `azora.io/rotate-now.<secret>` value, or both joined by `|`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_now_handled: Option<String>,
    /// Per region: the home version its Vault and its target Secret hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<SecretRegion>,
    /// Why the secret is not done, or what happened last.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable reason for `message`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The last rotation made because the value before it leaked (kept until the next rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<SecretRevocation>,
    /// The Vault path the copies in `regions` are at (so they can be found again once the spec moves the
    /// secret to another path, or drops it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vault_path: String,
    /// The target Secret the copies in `regions` are synced into (likewise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_secret: String,
    /// The home region the copies were made from (likewise: its Vault keeps its copy when they retire).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub home_region: String,
}

/// Copies of a secret the spec no longer wants where they are: the secret was removed from
/// `spec.secrets`, or moved to another `vaultPath` or `targetSecret`. The copy in each region's Vault
/// other than the home's is destroyed (only when it holds the home's current or previous value) and the
/// target Secret removed from every region (only when it is this secret's); the home region's Vault keeps
/// its copy (the source of truth; removing it is a person's decision). The entry goes once every region
/// is clean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringSecret {
    /// The secret's name (as it was in the spec).
    pub name: String,
    /// The Vault path whose replicas go (absent: the Vault copies stay where they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_path: Option<String>,
    /// The target Secret that goes (absent: the target Secrets stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secret: Option<String>,
    /// Regions still holding copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The home region the copies were made from: its Vault keeps its copy (as does the current home's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub home_region: String,
    /// The value at the path was reported leaked and not yet destroyed everywhere: the replicas go whatever
    /// they hold, and the home Vaults keep only their newest version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// Since when.
    pub since: Time,
    /// What holds the removal back, per region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where a secret is in its rotation cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum SecretPhase {
    /// A new version is being written to the home region's Vault.
    Rotating,
    /// The version is being written to the other regions' Vaults.
    Replicating,
    /// The target Secrets are being brought to the version.
    Syncing,
    /// The consumers' verification is running.
    Verifying,
    /// Every region holds the version.
    Done,
    /// The rotation failed verification; the previous value was written back.
    RolledBack,
    /// The secret cannot be rotated or synced; see `reason` and `message`.
    Failed,
}

/// A rotation recorded before its write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRotation {
    /// Rotation id (also written to Vault's custom metadata with the version).
    pub id: String,
    /// The home version the write is conditioned on (check-and-set).
    pub from_version: u64,
    /// When it was recorded.
    pub time: Time,
    /// A rollback: the version whose data is written back (instead of a new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<u64>,
    /// The value it replaces leaked (a rotate-now request starting with `leaked`): no grace period, every
    /// older version destroyed in every placed region's Vault, never rolled back to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revokes: bool,
    /// It replaces a value other than the one the target Secrets hand out (a home given up with its value,
    /// `azora.io/home-lost`): no previous value is kept beside it (the version before it was never handed out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_previous: bool,
}

/// The rotation made because the value before it leaked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRevocation {
    /// The home version written after the leak: every version before it is revoked (destroyed in every
    /// placed region's Vault; `previous-` keys gone from the target Secrets at once; never rolled back to).
    pub version: u64,
    /// When it was written.
    pub time: Time,
    /// Placed regions whose Vault may still hold an older version (emptied as they are destroyed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A secret in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRegion {
    /// Region name.
    pub region: String,
    /// The home version this region's Vault holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_version: Option<u64>,
    /// The home version this region's target Secret holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_version: Option<u64>,
    /// Why the region is behind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The tenant's newest good backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// Name of the Backup object.
    pub name: String,
    /// Time of the data it holds.
    pub data_time: Time,
}

/// Observed state of a Tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The region currently serving the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_region: Option<String>,
    /// The region object-storage replication copies from: where the tenant's traffic goes (its active
    /// region). Absent: the home region (nothing is recorded for a tenant that never moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_source: Option<String>,
    /// Regions whose own writes are brought to the replication source before anything is copied into them
    /// (a former source: written to while active, or holding writes that had not replicated when it failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication_catch_up: Vec<String>,
    /// Regions the tenant lives in: home and failover regions its residency allows, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placed_regions: Vec<String>,
    /// Per-region sync state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionSync>,
    /// Rotation state of the tenant's secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretStatus>,
    /// Copies of secrets being removed: dropped from `spec.secrets`, or moved to another path or target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_secrets: Vec<RetiringSecret>,
    /// The newest good backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Placed` (every placed region in sync),
    /// `Replicated` (object-storage replicas in sync; only when the tenant has replica regions).
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Annotation on a Tenant naming regions whose Vault is lost (comma-separated): a secret whose home moves
/// away from one of them (`spec.homeRegion` changed) no longer waits for the new home to hold the value
/// recorded there. Once the lost region's Vault holds no key, or has answered no request for a minute, the
/// new home takes over with what it holds; when that is not the recorded value (or a rotation was pending)
/// a new value is written there at once. What only the lost region held is given up, and so is the previous
/// value's grace period. A lost home that answers with a key is handed over as usual.
pub const HOME_LOST: &str = "azora.io/home-lost";

/// Whether `annotations` declare `region`'s Vault lost ([`HOME_LOST`]).
pub fn home_lost(annotations: &std::collections::BTreeMap<String, String>, region: &str) -> bool {
    annotations
        .get(HOME_LOST)
        .is_some_and(|v| v.split(',').any(|r| r.trim() == region))
}

/// Annotation on a Tenant asking for every one of its secrets to be rotated now, once per distinct value
/// (e.g. a timestamp `kubectl azora rotate` writes). `azora.io/rotate-now.<secret>` asks the same of one secret.
pub const ROTATE_NOW: &str = "azora.io/rotate-now";

/// The rotate-now request in force for one secret (what `SecretStatus.rotateNowHandled` names once it is
/// carried out): the tenant-wide value, the secret's own, or both joined (`<tenant-wide>|<secret's>`); a new
/// value of either is a new request, carried out once.
pub fn rotate_now_token(
    annotations: &std::collections::BTreeMap<String, String>,
    secret: &str,
) -> Option<String> {
    let all = annotations.get(ROTATE_NOW);
    let own = annotations.get(&format!("{ROTATE_NOW}.{secret}"));
    match (all, own) {
        (Some(a), Some(o)) => Some(format!("{a}|{o}")),
        (a, o) => a.or(o).cloned(),
    }
}

/// A rotate-now value starting with this says the secret's current value leaked (`kubectl azora rotate
/// --leaked`): the rotation skips the grace period and destroys every older version in every Vault.
pub const LEAKED: &str = "leaked";

/// Whether the part of `token` not carried out yet (see `rotate_now_pending`) reports a leak.
pub fn rotate_now_leaked(token: &str, handled: Option<&str>) -> bool {
    let done: Vec<&str> = handled.map(|h| h.split('|').collect()).unwrap_or_default();
    token
        .split('|')
        .any(|part| !done.contains(&part) && part.starts_with(LEAKED))
}

/// Whether a secret's rotate-now request asks for something not carried out yet: a part of `token` (split on
/// `|`) that `handled` does not hold. Removing an annotation (fewer parts) is no new request.
pub fn rotate_now_pending(token: &str, handled: Option<&str>) -> bool {
    let done: Vec<&str> = handled.map(|h| h.split('|').collect()).unwrap_or_default();
    token.split('|').any(|part| !done.contains(&part))
}

/// A `LabelSelector` matching a set of labels (absent: everything).
pub fn selects(
    selector: Option<&crate::common::LabelSelector>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
